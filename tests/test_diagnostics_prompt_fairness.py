"""Prompt-level fairness (issue 20): each method on its own on a tiny pipeline, the pairing of methods, the
quality figures against brute force, and the independence of the judges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from critwin.diagnostics.prompt_fairness import (
    METHODS,
    augmented_samples,
    interval_guided_samples,
    plain_samples,
    prompt_fairness,
)
from critwin.diagnostics.prompt_quality import caption_adherence, kernel_distance
from critwin.diagnostics.prompt_sampling import PromptModel
from critwin.experiments.features import CallableFeature
from tiny_models import tiny_stable_diffusion_with_text

pytestmark = pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")
L = 6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pipe = tiny_stable_diffusion_with_text(tmp_path_factory.mktemp("tok"))
    return PromptModel(pipe, num_inference_steps=L, guidance_scale=3.0)


def _redness(x):
    return x[:, 0].mean((1, 2)) - x[:, 1].mean((1, 2))


def test_interval_guidance_costs_and_limits(model):
    prompt, n = "a circle", 5
    plain = plain_samples(model, prompt, n, seed=2)
    with model.counting() as counter:
        everywhere, guided = interval_guided_samples(model, prompt, n, (0.0, 50.0), seed=2)
    # Guided at every step: the plain sampler itself, draw for draw (same seed, same noises).
    assert guided.all() and torch.equal(everywhere, plain) and counter.rows == n * L * 2
    times = model.process(prompt).times[:-1].numpy()
    low, high = float(times[3]), float(times[1])  # steps 1 and 2 start inside (low, high]
    with model.counting() as counter:
        partial, guided = interval_guided_samples(model, prompt, n, (low, high), seed=2)
    assert guided.tolist() == [False, True, True, False, False, False]
    assert counter.rows == n * (2 * 2 + 1 * (L - 2))
    assert not torch.equal(partial, plain)
    with pytest.raises(ValueError, match="low < high"):
        interval_guided_samples(model, prompt, n, (1.0, 0.5))


def test_prompt_augmentation_draws_values_uniformly_at_the_plain_cost(model):
    with model.counting() as counter:
        _, prompts = augmented_samples(model, "ab", 150, lambda p, v: f"{p} {'xyz'[v]}", 3, seed=0)
    assert counter.rows == 150 * L * 2
    counts = np.array([sum(p.endswith(c) for p in prompts) for c in "xyz"])
    # Uniform over 3 values: each count is Binomial(150, 1/3), sd 5.8; 4 sd either side.
    assert np.all(np.abs(counts - 150 / 3) < 4 * 5.77)


def test_kernel_distance_against_brute_force_and_its_jackknife():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)) + 0.3, rng.normal(size=(9, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    def mmd(xs):
        n, m = len(xs), len(y)
        xx = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        return xx + yy - 2 * sum(k(a, b) for a in xs for b in y) / (n * m)

    kid, (low, high) = kernel_distance(x, y, level=0.95)
    assert kid == pytest.approx(mmd(x), rel=1e-10)
    loo = np.array([mmd(np.delete(x, i, 0)) for i in range(len(x))])
    se = np.sqrt((len(x) - 1) / len(x) * ((loo - loo.mean()) ** 2).sum())
    assert (high - low) / 2 == pytest.approx(1.959964 * se, rel=1e-5) and low <= kid <= high


def test_caption_adherence_counts_the_judged_matches():
    images = torch.zeros(4, 3, 2, 2)
    images[:3, 0] = 1.0  # three red images
    judges = {
        "red": lambda x: (x[:, 0].mean((1, 2)) > 0.5).long(),
        "any": lambda x: torch.zeros(len(x)).long(),
    }
    rate, (low, high) = caption_adherence(images, {"red": 1, "any": 0}, judges)
    assert rate == 0.75 and low < 0.75 < high
    assert caption_adherence(images, {}, judges)[0] == 1.0
    with pytest.raises(ValueError, match="no judge reads"):
        caption_adherence(images, {"blue": 1}, judges)


def test_prompt_fairness_table_is_graded_by_the_judges_and_paired_with_plain(model):
    probe = plain_samples(model, "a circle", 64, seed=0)
    cut = float(_redness(probe).median())  # a selector that splits this prompt's images in two halves
    selector = CallableFeature(lambda x: (_redness(x) > cut).long(), name="selector-red", n_classes=2)
    judge = CallableFeature(lambda x: (_redness(x) > cut + 1e-4).long(), name="judge-red", n_classes=2)
    other = CallableFeature(lambda x: (x.mean((1, 2, 3)) > 0).long(), name="judge-bright", n_classes=2)
    result = prompt_fairness(
        model,
        "a circle",
        "red",
        selector=selector,
        judges={"red": judge, "bright": other},
        n_classes=2,
        augment=lambda p, v: f"{p} {'xy'[v]}",
        target=[0.9, 0.1],
        n=32,
        window_trajectories=6,
        n_boot=50,
        seed=0,
    )
    assert [row["method"] for row in result.rows] == list(METHODS)
    plain, rebalanced = result.row("plain"), result.row("window rebalancing")
    for row in result.rows:
        assert row["graded_by"] == {"red": "judge-red", "bright": "judge-bright"}
        assert row["tv_ci"][0] <= row["tv"] <= row["tv_ci"][1]
        assert row["adherence"] == 1.0  # nothing specified
        assert set(row["others"]) == {"bright"}
    # Same draws: plain sampling compared with itself leaves every attribute exactly in place.
    assert plain["others"]["bright"]["tv"] == 0 and plain["others"]["bright"]["unchanged"]
    # The rebalancing forks at the selector's window and moves the judged attribute toward the target.
    assert rebalanced["tv"] < plain["tv"] and rebalanced["extra_nfe"] > 0
    assert result.row("interval guidance")["extra_nfe"] < 0 and result.row("augmentation")["extra_nfe"] == 0
    assert result.metadata["selector"] == "selector-red"
    with pytest.raises(ValueError, match="independent of the selecting feature"):
        prompt_fairness(model, "a circle", "red", selector=selector, judges={"red": selector}, n_classes=2)
