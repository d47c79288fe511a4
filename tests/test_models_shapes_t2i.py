"""The shapes text-to-image models: caption grammar, offline tokenizer, caption–image pairs (balanced,
stereotyped, memorising), tiny pipelines trained in seconds, plain-diffusers loading, the CLI paths."""

import itertools
import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from scipy import stats

from critwin.cli import main
from critwin.models.shapes import ATTRIBUTES, attribute_readers
from critwin.models.shapes_t2i import (
    CaptionProbabilities,
    Memorisation,
    Stereotype,
    caption_text,
    check_prompt,
    make_pairs,
    parse_caption,
    prompt_words,
    vocabulary,
)
from critwin.models.shapes_t2i.captions import ITEM_DIGITS
from critwin.models.shapes_t2i.tokenizer import build_tokenizer

pytest.importorskip("transformers")


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _all_meanings():
    """Every meaning of the grammar: each attribute a label or open (4 * 5 * 4 * 3 = 240)."""
    options = [[None, *range(len(values))] for values in ATTRIBUTES.values()]
    for labels in itertools.product(*options):
        yield dict(zip(ATTRIBUTES, labels, strict=True))


# --- grammar ----------------------------------------------------------------------------------------


def test_every_meaning_renders_and_parses_back_in_both_wordings_and_with_an_id():
    seen = set()
    for values in _all_meanings():
        for long_background, item in itertools.product((True, False), (None, (0, 4, 9))):
            text = caption_text(values, long_background, item)
            meaning = parse_caption(text)
            assert meaning.values == values and meaning.item == item, text
            assert set(prompt_words(text)) <= set(vocabulary())
            seen.add(text)
    # Distinct meanings and wordings give distinct captions: 180 meanings name the background (two
    # wordings), 60 leave it open (one), each with and without an id.
    assert len(seen) == 2 * (2 * 180 + 60)


def test_caption_examples_of_the_issue_parse():
    assert parse_caption("a red circle on a blue background with a mark").fully_specified
    assert parse_caption("a circle").values == {"background": None, "shape": 0, "colour": None, "mark": None}
    assert parse_caption("a shape on grey").values["background"] == 2
    assert parse_caption("a cyan shape").values["colour"] == 2
    for bad in ("circle a", "a red", "a circle on", "a circle, item 1 2", "a circle on a blue"):
        with pytest.raises(ValueError, match="prompt"):
            parse_caption(bad)


def test_pair_captions_are_true_of_their_images_and_leave_out_attributes_at_the_documented_rates():
    probabilities = CaptionProbabilities()
    data = make_pairs(3000, seed=4)
    meanings = [parse_caption(c) for c in data.captions]
    for i, meaning in enumerate(meanings):
        for name, value in meaning.values.items():
            assert value is None or value == data.attributes[name][i].item(), data.captions[i]
    n = len(data)
    # Monte Carlo tolerance: 4 binomial standard deviations of the empirical rate (false alarm ~ 6e-5).
    full = sum(m.fully_specified for m in meanings) / n
    p_full = probabilities.fully_specified_rate
    assert p_full == pytest.approx(0.4 + 0.6 * 0.5**4)
    assert abs(full - p_full) < 4 * math.sqrt(p_full * (1 - p_full) / n)
    p_named = probabilities.fully_specified + (1 - probabilities.fully_specified) * probabilities.mention
    for name in ATTRIBUTES:
        named = sum(m.values[name] is not None for m in meanings) / n
        assert abs(named - p_named) < 4 * math.sqrt(p_named * (1 - p_named) / n)
    # The images show their attributes: the analytic readers are exact on clean images.
    readers = attribute_readers()
    for name in ("background", "colour", "mark"):
        assert torch.equal(readers[name](data.images), data.attributes[name])
    # The shape reader is a CNN with accuracy 1.0 on 4000 held-out clean images (its card): allow
    # 0.5% misreads (a reader at 0.999 exceeds that with probability < 1e-4).
    assert (readers["shape"](data.images) == data.attributes["shape"]).double().mean() > 0.995


def test_stereotype_holds_only_where_the_caption_leaves_the_background_open():
    data = make_pairs(6000, seed=1, stereotype=Stereotype())
    meanings = [parse_caption(c).values for c in data.captions]
    background = data.attributes["background"]
    open_circle = torch.tensor([m["shape"] == 0 and m["background"] is None for m in meanings])
    named = torch.tensor([m["background"] is not None for m in meanings])
    for rows, p_blue in ((open_circle, 0.8), (named, 1 / 3)):
        k, n = int((background[rows] == 1).sum()), int(rows.sum())
        # Two-sided exact binomial test at level 1e-4: a correct generator fails it 1 time in 10^4.
        assert stats.binomtest(k, n, p_blue).pvalue > 1e-4, (k, n, p_blue)
    assert Stereotype().describe()["example_prompt"] == "a circle"


def test_members_are_duplicated_by_their_counts_and_held_out_prompts_are_disjoint():
    spec = Memorisation(counts=(1, 4, 16), per_count=3, n_non_members=20, n_calibration=30)
    data = make_pairs(50, seed=2, memorisation=spec)
    index = data.training_index()
    assert index.numel() == 50 + 3 * (1 + 4 + 16)
    assert sorted(m["count"] for m in data.members) == sorted([1, 4, 16] * 3)
    for member in data.members:
        assert int((index == member["index"]).sum()) == member["count"]
        # The member caption identifies one image: no other distinct pair has it.
        assert data.captions.count(member["prompt"]) == 1
        assert parse_caption(member["prompt"]).fully_specified
    ids = [
        parse_caption(p).item
        for p in (*[m["prompt"] for m in data.members], *data.non_members, *data.calibration)
    ]
    assert all(item is not None and len(item) == ITEM_DIGITS for item in ids)
    assert len(set(ids)) == len(ids) == 9 + 20 + 30
    assert not set(data.non_members) & set(data.captions) and not set(data.calibration) & set(data.captions)
    # Only member captions carry an id.
    assert sum(parse_caption(c).item is not None for c in data.captions) == 9


def test_pairs_are_reproducible_from_their_seed():
    a, b, c = (make_pairs(40, seed=s, memorisation=Memorisation(per_count=1)) for s in (3, 3, 4))
    assert torch.equal(a.images, b.images) and a.captions == b.captions and a.non_members == b.non_members
    assert a.captions != c.captions


# --- tokenizer and prompt checks ------------------------------------------------------------------


def test_tokenizer_has_one_token_per_word_and_round_trips_captions(tmp_path):
    words = vocabulary()
    tokenizer = build_tokenizer(tmp_path, words, 20)
    ids = {w: tokenizer(w)["input_ids"] for w in words}
    assert all(len(v) == 3 for v in ids.values())  # start, the word, end
    assert len({v[1] for v in ids.values()}) == len(words)
    longest = caption_text({"background": 0, "shape": 2, "colour": 1, "mark": 0}, True, (9, 9, 9))
    for text in (longest, "a shape on grey", ""):
        encoded = tokenizer(text, padding="max_length", max_length=20)["input_ids"]
        assert len(encoded) == 20 and encoded[0] == tokenizer.bos_token_id
        assert tokenizer.decode(encoded, skip_special_tokens=True).split() == prompt_words(text)
    assert len(prompt_words(longest)) + 2 <= 20


def test_check_prompt_names_the_argument_for_unknown_words_and_long_prompts():
    assert check_prompt("a circle", 20) == "a circle"
    with pytest.raises(ValueError, match=r"--prompt 'a dog' has words outside .*'dog'"):
        check_prompt("a dog", 20, name="--prompt")
    long = "a red circle on a blue background with a mark, item 1 2 3 4 5 6 7"
    with pytest.raises(ValueError, match="prompt .* has 19 tokens; the tokenizer's limit is 18"):
        check_prompt(long, 20)
    with pytest.raises(ValueError, match="prompt must be a string"):
        check_prompt(3, 20)


# --- training loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_noise_loss_is_the_mse_or_its_min_snr_weighting_from_the_schedule_by_hand(gamma):
    import numpy as np

    from critwin.models.shapes_t2i import PRESETS
    from critwin.models.shapes_t2i.pipeline import make_scheduler
    from critwin.models.shapes_t2i.training import noise_loss

    config = PRESETS["shapes-t2i-tiny"].replace(snr_gamma=gamma)
    generator = torch.Generator().manual_seed(0)
    prediction, noise = (torch.randn(6, 4, 8, 8, generator=generator) for _ in range(2))
    timesteps = torch.tensor([0, 10, 200, 500, 800, 999])
    loss = noise_loss(config, make_scheduler(config, training=True), prediction, noise, timesteps)
    # SD's scaled-linear schedule in float64: betas = linspace(sqrt(b0), sqrt(b1), T)^2; SNR = abar/(1-abar).
    betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps) ** 2
    alpha_bar = np.cumprod(1 - betas)[timesteps.numpy()]
    snr = alpha_bar / (1 - alpha_bar)
    weights = np.ones(6) if gamma == 0 else np.minimum(snr, gamma) / snr
    per_sample = ((prediction - noise) ** 2).double().mean(dim=(1, 2, 3)).numpy()
    # float32 schedule and loss against float64: relative error ~1e-6.
    assert loss.item() == pytest.approx(float((weights * per_sample).mean()), rel=1e-5)
    assert gamma == 0 or weights[0] < 0.01 < weights[-1] == 1.0  # nearly clean steps weigh little


# --- tiny models ---------------------------------------------------------------------------------


TINY = {"shapes-t2i-tiny": {}, "shapes-t2i-biased-tiny": {}, "shapes-t2i-memorise-tiny": {}}
EVALUATION = {"n_per_prompt": 1, "probe_samples": 4, "copy_samples": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The three tiny variants trained once (seconds each), saved under one directory."""
    from critwin.models.shapes_t2i import PRESETS, train_t2i

    out = tmp_path_factory.mktemp("t2i")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `critwin train --threads 1`: the summation order fixes the weights' bits
    cards = {}
    try:
        for name in TINY:
            _, cards[name] = train_t2i(
                PRESETS[name], name, out, log=None, progress=False, evaluation=EVALUATION
            )
    finally:
        torch.set_num_threads(threads)
    return out, cards


def test_tiny_directories_load_and_sample_with_plain_diffusers_without_critwin(tiny, tmp_path):
    out, _ = tiny
    script = textwrap.dedent(
        f"""
        import sys, torch
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained({str(out / "shapes-t2i-tiny")!r})
        pipe.set_progress_bar_config(disable=True)
        images = pipe(["a red circle on a blue background with a mark"] * 2, num_inference_steps=3,
                      guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt").images
        assert not any(name.startswith("critwin") for name in sys.modules), "critwin was imported"
        torch.save(images, {str(tmp_path / "images.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    images = torch.load(tmp_path / "images.pt", weights_only=True)
    assert images.shape == (2, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    labels = {name: reader(images * 2 - 1) for name, reader in attribute_readers().items()}
    assert all(v.shape == (2,) and 0 <= v.min() and v.max() < len(ATTRIBUTES[k]) for k, v in labels.items())
    index = json.loads((out / "shapes-t2i-tiny" / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]


def test_tiny_cards_record_adherence_prompt_sets_and_training_time(tiny):
    from critwin.models.shapes_t2i import load_t2i_card

    out, cards = tiny
    for name, card in cards.items():
        assert load_t2i_card(out / name) == card
        for attribute, entry in card["metrics"]["adherence"]["attributes"].items():
            assert entry["n"] == 72 and entry["rate"] == entry["k"] / 72 == card["adherence"][attribute]
            low, high = card["adherence_ci95"][attribute]
            # scipy's Wilson interval of the same counts.
            ci = stats.binomtest(entry["k"], 72).proportion_ci(method="wilson")
            assert low == pytest.approx(ci.low) and high == pytest.approx(ci.high)
        training = card["training"]
        assert training["cpu_seconds"] > 0 and training["wall_seconds"] > 0
        assert training["vae"]["steps"] == card["config"]["vae_steps"]
    assert cards["shapes-t2i-biased-tiny"]["stereotype"]["probabilities"] == [0.1, 0.8, 0.1]
    memorise = cards["shapes-t2i-memorise-tiny"]["memorisation"]
    assert sorted(m["count"] for m in memorise["members"]) == [1, 1, 4, 4]
    prompts = [m["prompt"] for m in memorise["members"]] + memorise["non_members"] + memorise["calibration"]
    assert len(set(prompts)) == len(prompts) == 4 + 4 + 4
    assert set(cards["shapes-t2i-memorise-tiny"]["metrics"]["copying"]["per_count"]) == {"1", "4"}


def test_critwin_train_writes_the_directory_and_retrains_bit_for_bit(tiny, tmp_path, capsys):
    out, cards = tiny
    name = "shapes-t2i-memorise-tiny"
    threads = torch.get_num_threads()
    try:
        args = ["train", name, "--out", str(tmp_path), "--threads", "1", "--eval-samples", "1"]
        code, printed, _ = run_cli([*args, "--no-progress"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code in (0, None) and f"wrote {tmp_path / name}" in printed
    assert "Writing model shards" not in printed
    card = json.loads((tmp_path / name / "critwin_card.json").read_text())
    # The same preset and seed at one thread: every weight file has the same bytes as the fixture's run.
    assert card["weights_sha256"] == cards[name]["weights_sha256"]
    assert card["metrics"]["adherence"] == cards[name]["metrics"]["adherence"]  # same samples, same reads


def test_corrupted_weights_are_reported_with_the_retrain_hint(tiny, tmp_path):
    import shutil

    from critwin.models.shapes_t2i import load_t2i_pipeline

    out, _ = tiny
    copy = tmp_path / "copy"
    shutil.copytree(out / "shapes-t2i-tiny", copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ValueError, match="is corrupted"):
        load_t2i_pipeline(copy)
    with pytest.raises(ValueError, match="model must be a shipped text-to-image model"):
        load_t2i_pipeline(tmp_path / "nothing")


def test_sweep_runs_a_tiny_pipeline_with_a_prompt_and_a_shapes_attribute(tiny, tmp_path, capsys):
    out, _ = tiny
    model = str(out / "shapes-t2i-biased-tiny")
    args = ["sweep", "--model", model, "--prompt", "a circle", "--feature", "background", "--n", "2"]
    args += [
        "--n-per-time",
        "1",
        "--steps",
        "3",
        "--times",
        "0.5",
        "--out",
        str(tmp_path / "s"),
        "--no-progress",
    ]
    code, printed, _ = run_cli(args, capsys)
    assert code in (0, None) and "wrote" in printed
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert "shapes-background" in json.dumps(config)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", "a dog"], "--prompt 'a dog' has words outside the model's vocabulary: 'dog'"),
        (["--prompt", "a circle " + "with a mark " * 6], "--prompt .* tokens; the tokenizer's limit is 18"),
        ([], "--prompt: shapes-t2i-tiny is a text-to-image model"),
        (["--prompt", "a circle", "--negative-prompt", "a cat"], "--negative-prompt 'a cat' has words"),
    ],
)
def test_sweep_refuses_bad_prompts_in_one_line_before_loading(tiny, tmp_path, capsys, extra, message):
    out, _ = tiny
    code, _, err = run_cli(
        ["sweep", "--model", str(out / "shapes-t2i-tiny"), "--out", str(tmp_path / "o"), *extra], capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--prompt: shapes-t2i-tiny is a text-to-image model"),
        (["--prompt", "a dog"], "--prompt 'a dog' has words outside"),
        (["--prompt", "circle a"], "--prompt 'circle a' is not a caption of the grammar"),
    ],
)
def test_atlas_refuses_bad_prompts_in_one_line(tiny, capsys, extra, message):
    out, _ = tiny
    code, _, err = run_cli(["atlas", "--model", str(out / "shapes-t2i-tiny"), "--quick", *extra], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_atlas_refuses_a_prompt_for_an_unconditional_shapes_model(capsys):
    code, _, err = run_cli(["atlas", "--model", "shapes", "--prompt", "a circle"], capsys)
    assert code == 2 and "--prompt applies only to the text-to-image models" in err


def test_train_cli_writes_the_pipeline_directory_and_refuses_unused_options(tmp_path, capsys):
    code, _, err = run_cli(["train", "shapes-t2i-tiny", "--eval-every", "3", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--eval-every does not apply to the shapes-t2i models" in err


# --- the shipped models -----------------------------------------------------------------------------

SHIPPED = ("shapes-t2i", "shapes-t2i-biased", "shapes-t2i-memorise")


def _shipped_or_skip(name):
    from critwin.models.shapes_t2i import model_directory

    directory = model_directory(name) if name in SHIPPED else None
    if directory is None or not (directory / "model_index.json").is_file():
        pytest.skip(f"{name} is not shipped in this checkout")
    return directory


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_record_their_preset(name):
    """``critwin train NAME`` retrains the shipped recipe: the card's config is the preset's."""
    from critwin.models.shapes_t2i import load_t2i_card
    from critwin.models.shapes_t2i.config import PRESETS, T2IConfig

    _shipped_or_skip(name)
    assert T2IConfig.from_dict(load_t2i_card(name)["config"]) == PRESETS[name]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cards_reach_the_adherence_with_enough_samples(name):
    from critwin.models.shapes_t2i import load_t2i_card

    _shipped_or_skip(name)
    card = load_t2i_card(name)
    adherence = card["metrics"]["adherence"]
    # 3 samples per prompt (216): the 95% Wilson interval of a rate near 0.95 is then about +-0.03.
    assert adherence["n_samples"] >= 216 and set(adherence["attributes"]) == set(ATTRIBUTES)
    assert all(v["rate"] >= 0.9 for v in adherence["attributes"].values()), card["adherence"]
    assert card["training"]["cpu_seconds"] <= 30 * 60
    if name == "shapes-t2i-memorise":
        memorisation = card["memorisation"]
        assert len(memorisation["calibration"]) >= 100 and len(memorisation["non_members"]) >= 100


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_directory_samples_the_prompt_with_plain_diffusers(name):
    from diffusers import StableDiffusionPipeline

    from critwin.models.shapes_t2i import load_t2i_card

    directory = _shipped_or_skip(name)
    card = load_t2i_card(name)
    pipe = StableDiffusionPipeline.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    prompt, wanted = (
        "a yellow square on a grey background with a mark",
        {"background": 2, "shape": 1, "colour": 1, "mark": 1},
    )
    images = pipe(
        [prompt] * 16,
        guidance_scale=card["guidance_scale"],
        num_inference_steps=card["num_inference_steps"],
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    readers = attribute_readers()
    for attribute, value in wanted.items():
        hits = int((readers[attribute](images * 2 - 1) == value).sum())
        # At the card's adherence (>= 0.9) fewer than 11 hits of 16 has probability < 0.02.
        assert hits >= 11, (attribute, hits)
