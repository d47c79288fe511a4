"""Prompt-level memorisation (issue 20): each peer detector against a hand computation on a tiny pipeline,
the window signal's bookkeeping, and the comparison table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from critwin.diagnostics.prompt_privacy import PromptSets, memorisation_audit, score_table
from critwin.diagnostics.prompt_sampling import NULL_PROMPT, PromptModel, check_prompts
from critwin.diagnostics.prompt_scores import (
    commitment_scores,
    copy_distances,
    denoising_loss_scores,
    generate,
    wen_scores,
)
from tiny_models import tiny_stable_diffusion_with_text

pytestmark = pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")
PROMPTS = ["a circle", "a square", "red", "blue cross"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pipe = tiny_stable_diffusion_with_text(tmp_path_factory.mktemp("tok"))
    return PromptModel(pipe, num_inference_steps=5, guidance_scale=3.0)


@torch.no_grad()
def _embedding(pipe, prompt):
    return pipe.encode_prompt([prompt], "cpu", 1, False)[0]


@torch.no_grad()
def test_wen_score_is_the_mean_norm_of_the_difference_by_an_explicit_loop(model):
    scores, nfe = wen_scores(model, PROMPTS, n_generations=3, seed=4)
    pipe = model.pipe
    process = model.process(PROMPTS[0])
    noise = process.prior(3, generator=torch.Generator().manual_seed(4))
    t0 = process.timesteps[0]
    null = _embedding(pipe, NULL_PROMPT)
    for prompt, score in zip(PROMPTS, scores, strict=True):
        cond = _embedding(pipe, prompt)
        norms, norm_differences = [], []
        for x in noise:  # one generation, one pair of UNet calls at a time
            eps_c = pipe.unet(x[None], t0, encoder_hidden_states=cond).sample
            eps_u = pipe.unet(x[None], t0, encoder_hidden_states=null).sample
            norms.append(torch.linalg.vector_norm(eps_c - eps_u).item())
            norm_differences.append(
                abs(torch.linalg.vector_norm(eps_c) - torch.linalg.vector_norm(eps_u)).item()
            )
        # Batched vs one-by-one float32 convolutions agree to ~1e-6 relative.
        assert score == pytest.approx(np.mean(norms), rel=1e-4)
        assert abs(score - np.mean(norm_differences)) > 1e-3  # not the difference of the norms
    assert nfe == 6
    with model.counting() as counter:
        wen_scores(model, PROMPTS, n_generations=3)
    assert counter.rows == len(PROMPTS) * 6


@torch.no_grad()
def test_denoising_loss_by_hand_with_the_schedulers_own_add_noise(model):
    images = torch.rand(len(PROMPTS), 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores, nfe = denoising_loss_scores(model, PROMPTS, images, timestep=100, n_noise=2, seed=3)
    pipe = model.pipe
    eps = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    for i, prompt in enumerate(PROMPTS):
        z0 = pipe.vae.encode(images[i : i + 1]).latent_dist.mean * pipe.vae.config.scaling_factor
        losses = []
        for e in eps:
            noised = pipe.scheduler.add_noise(z0, e[None], torch.tensor([100]))
            predicted = pipe.unet(noised, 100, encoder_hidden_states=_embedding(pipe, prompt)).sample
            losses.append(((predicted - e) ** 2).mean().item())
        assert scores[i] == pytest.approx(-np.mean(losses), rel=1e-4)
    assert nfe == 2
    with pytest.raises(ValueError, match="one image per prompt"):
        denoising_loss_scores(model, PROMPTS, images[:2])


def test_copy_distance_by_brute_force():
    gen = torch.randn(3, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    train = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    train[2] = gen[1, 0]  # prompt 1's first generation is a copy
    got = copy_distances(gen, train)
    for p in range(3):
        nearest = [min(((g - t) ** 2).mean().sqrt().item() for t in train) for g in gen[p]]
        assert got[p] == pytest.approx(-np.mean(nearest), rel=1e-6)  # float32 brute force vs float64
    assert got.argmax() == 1


def test_commitment_curves_and_costs(model):
    L = model.num_inference_steps
    kept_all = commitment_scores(model, PROMPTS[:2], n_trajectories=2, n_clones=2, threshold=np.inf)
    assert (kept_all.curves == 1).all() and np.isinf(kept_all.scores).all() and (kept_all.scores > 0).all()
    none = commitment_scores(model, PROMPTS[:2], n_trajectories=2, n_clones=2, threshold=0.0)
    assert (none.curves == 0).all() and (none.scores == -np.inf).all()
    # Costs: by default the conditional law (guidance 1): each trunk L unguided steps (1 row each), each
    # continuation the steps after its fork; at the model's guidance (3: guided) two rows per step.
    process = model.process(PROMPTS[0])
    indices = [process.locate(t)[0] for t in kept_all.times]
    trunks = 2 * L
    forks = sum(2 * 2 * (L - i) for i in indices)
    assert kept_all.metadata["guidance_scale"] == 1.0
    assert kept_all.nfe_trunks_per_prompt == trunks and kept_all.nfe_per_prompt == trunks + forks
    guided = commitment_scores(model, PROMPTS[:2], n_clones=2, threshold=np.inf, guidance_scale=None)
    assert guided.metadata["guidance_scale"] == model.guidance_scale == 3.0
    assert guided.nfe_trunks_per_prompt == 2 * trunks and guided.nfe_per_prompt == 2 * (trunks + forks)
    assert not torch.equal(guided.generations, kept_all.generations)
    assert np.all(np.diff(kept_all.times) > 0)
    assert torch.equal(kept_all.generations, none.generations)  # same seed, same generations
    images, nfe = generate(model, PROMPTS[:2], 2)  # at the model's guidance
    assert images.shape == (2, 2, 3, 16, 16) and nfe == 2 * trunks
    with pytest.raises(ValueError, match="guidance_scale"):
        commitment_scores(model, PROMPTS[:2], guidance_scale=-1.0)


def test_score_table_against_mann_whitney_and_a_hand_threshold():
    rng = np.random.default_rng(0)
    members = list(rng.normal(1.0, 1.0, 12))
    negatives = list(rng.normal(0.0, 1.0, 20))
    calibration = list(rng.normal(0.0, 1.0, 30))
    sets = PromptSets(
        [f"m{i}" for i in range(12)],
        [1] * 6 + [4] * 6,
        [f"n{i}" for i in range(20)],
        [f"c{i}" for i in range(30)],
    )
    rows = score_table(members + negatives + calibration, sets, fpr=0.1)
    for row, part in zip(rows, (members[:6], members[6:], members), strict=True):
        u = mannwhitneyu(part, negatives).statistic
        assert row["auc"] == pytest.approx(u / (len(part) * len(negatives)))
        # The threshold: the smallest calibration score that at most 10% (3 of 30) exceed.
        threshold = sorted(calibration)[26]
        assert row["threshold"] == threshold and row["tpr"] == np.mean(np.array(part) > threshold)
        for key in ("auc", "tpr"):
            assert row[key + "_ci"][0] <= row[key] <= row[key + "_ci"][1]
    assert [r["count"] for r in rows] == [1, 4, None]


def test_prompt_sets_and_prompt_checks_refuse_bad_input(model):
    with pytest.raises(ValueError, match="disjoint"):
        PromptSets(["a"], [1], ["a"], ["b"])
    with pytest.raises(ValueError, match="one count per member"):
        PromptSets(["a"], [1, 2], ["b"], ["c"])
    with pytest.raises(ValueError, match="repeats prompt 1"):
        check_prompts(["a circle", "a circle"])
    with pytest.raises(ValueError, match="is empty"):
        check_prompts(["a circle", " "])
    with pytest.raises(ValueError, match="tokenizer's limit is 16"):
        model.check(["a circle on a very long prompt"])


def test_memorisation_audit_on_a_tiny_pipeline(model):
    members, non_members, calibration = ["aa", "bb", "cc", "dd"], ["ee", "ff", "gg"], ["hh", "ii", "jj"]
    images = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sets = PromptSets(members, [1, 1, 4, 4], non_members, calibration, images, training_images=images[:4])
    audit = memorisation_audit(model, sets, n_generations=2, n_noise=2, fpr=0.2)
    assert list(audit.rows) == ["commitment", "wen", "loss", "copying"]
    assert audit.nfe_per_prompt["wen"] == 4 and audit.nfe_per_prompt["loss"] == 2
    # The commitment signal samples at guidance 1, so copying generates its own images at the model's
    # guidance (2 trajectories x 5 guided steps x 2 rows) rather than reuse the signal's.
    assert audit.commitment.metadata["guidance_scale"] == 1.0 and audit.nfe_per_prompt["copying"] == 20
    out = audit.to_dict()
    assert out["graded_by"].startswith("membership ground truth")
    for rows in audit.rows.values():
        for row in rows:
            assert row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]
            assert row["tpr_ci"][0] <= row["tpr"] <= row["tpr_ci"][1]
    assert len(audit.to_pandas()) == 4 * 3
    # Three calibration prompts resolve FPRs down to 1/3: the requested 0.2 is raised to that, and the
    # threshold is the second-largest calibration score (one of three exceeds it).
    assert audit.fpr == pytest.approx(1 / 3) and audit.metadata["fpr_requested"] == 0.2
    assert not audit.metadata["calibration_resolves_fpr"]
    wen_calibration = audit.sets.split(audit.scores["wen"])[2]
    assert audit.rows["wen"][-1]["threshold"] == sorted(wen_calibration)[1]
    with pytest.raises(ValueError, match="'loss' needs the image"):
        memorisation_audit(model, PromptSets(members, [1] * 4, non_members, calibration), scores=["loss"])


def test_one_calibration_prompt_is_refused_before_any_score():
    """A threshold needs two calibration scores (an FPR below 1): refused up front, not after the scores."""
    from critwin.diagnostics.prompt_privacy import PromptSets, memorisation_audit, supported_fpr

    sets = PromptSets(["a circle"], [1], ["a square"], ["a triangle"])
    with pytest.raises(ValueError, match="sets.calibration must hold at least 2 prompts, got 1"):
        memorisation_audit(object(), sets, scores=("wen",))
    with pytest.raises(ValueError, match="n_calibration must be >= 2"):
        supported_fpr(0.01, 1)
