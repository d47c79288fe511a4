"""The procedural shapes dataset, its attribute readers, and a tiny shapes DDPM trained in seconds."""

import json
import math

import pytest
import torch
from scipy import stats

from critwin.cli import main
from critwin.experiments.features import CallableFeature
from critwin.models.data import memorisation_metrics
from critwin.models.shapes import (
    ATTRIBUTES,
    attribute_readers,
    evaluate_readers,
    make_shapes,
    read_background,
    read_colour,
    read_mark,
)
from critwin.models.shapes.data import BACKGROUND_COLOURS, MARK_COLOUR, SHAPE_COLOURS


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


# --- data --------------------------------------------------------------------------------------


def test_make_shapes_is_deterministic_with_the_documented_shapes_and_range():
    a, b, c = make_shapes(64, seed=3), make_shapes(64, seed=3), make_shapes(64, seed=4)
    assert a.images.shape == (64, 3, 16, 16) and a.images.dtype == torch.float32
    assert torch.equal(a.images, b.images)
    assert all(torch.equal(a.attributes[k], b.attributes[k]) for k in ATTRIBUTES)
    assert not torch.equal(a.images, c.images)
    assert a.images.min() >= -1 and a.images.max() <= 1
    assert list(a.attributes) == ["background", "shape", "colour", "mark"] == list(ATTRIBUTES)
    for name, labels in a.attributes.items():
        assert labels.dtype == torch.int64 and labels.shape == (64,)
        assert 0 <= labels.min() and labels.max() < len(ATTRIBUTES[name])


def test_pixels_follow_the_geometry_the_readers_rely_on():
    data = make_shapes(300, seed=5)
    background = torch.tensor(list(BACKGROUND_COLOURS.values()))[data.attributes["background"]]
    colour = torch.tensor(list(SHAPE_COLOURS.values()))[data.attributes["colour"]]
    images = data.images
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[2:14, 2:14] = False
    outside[:2, :2] = False  # the mark corner
    # Everything outside the shape's box (rows/columns 2..13) is the background colour exactly.
    assert torch.equal(images[:, :, outside], background.view(-1, 3, 1).expand(-1, -1, int(outside.sum())))
    corner = images[:, :, :2, :2].flatten(2)
    expected = torch.where(
        data.attributes["mark"].bool().view(-1, 1), torch.tensor(MARK_COLOUR).expand(300, 3), background
    )
    assert torch.equal(corner, expected.view(-1, 3, 1).expand(-1, -1, 4))
    # Every inner pixel mixes the background and shape colours; the shape's interior is pure colour.
    inner = images[:, :, 2:14, 2:14].flatten(2)
    share = (inner - background.view(-1, 3, 1)) / (colour - background).view(-1, 3, 1)
    assert torch.allclose(share, share[:, :1].expand_as(share), atol=1e-5)
    assert ((share[:, 0] > 1 - 1e-6).sum(1) >= 4).all()


def test_attributes_are_independent_and_uniform_by_default():
    n = 12000
    data = make_shapes(n, seed=11)
    names = list(ATTRIBUTES)
    # Fixed seed, so these statistics are fixed numbers; the 0.1% quantiles are what an independent,
    # uniform generator exceeds once in a thousand seeds.
    for name in names:
        counts = torch.bincount(data.attributes[name], minlength=len(ATTRIBUTES[name])).numpy()
        assert stats.chisquare(counts).pvalue > 1e-3
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ka, kb = len(ATTRIBUTES[a]), len(ATTRIBUTES[b])
            joint = torch.bincount(data.attributes[a] * kb + data.attributes[b], minlength=ka * kb)
            assert stats.chi2_contingency(joint.view(ka, kb).numpy()).pvalue > 1e-3


def test_bias_sets_the_marginal_within_binomial_tolerance():
    n, probs = 10000, (0.8, 0.1, 0.1)
    data = make_shapes(n, seed=2, bias={"background": probs})
    counts = torch.bincount(data.attributes["background"], minlength=3)
    for count, p in zip(counts.tolist(), probs, strict=True):
        # 4 binomial standard deviations: exceeded with probability < 1e-4 per value.
        assert abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    shape_counts = torch.bincount(data.attributes["shape"], minlength=4)
    assert (shape_counts - n / 4).abs().max() <= 4 * math.sqrt(n * 0.25 * 0.75)
    assert data.bias["background"] == probs and data.bias["shape"] == (0.25,) * 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0), "n must be >= 1"),
        (dict(n=4, seed=-1), r"seed must be an integer in \[0, 2\*\*63\)"),
        (dict(n=4, bias={"size": (1.0,)}), "bias names unknown attributes"),
        (dict(n=4, bias={"mark": (1.0,)}), r"bias\['mark'\] must give 2 probabilities"),
        (dict(n=4, bias={"mark": (1.5, -0.5)}), "non-negative probabilities summing to 1"),
        (dict(n=4, bias={"mark": (0.5, 0.4)}), "summing to 1"),
        (dict(n=4, bias={"mark": "ab"}), "sequence of numbers"),
        (dict(n=4, bias=[0.5, 0.5]), "bias must be a dict"),
    ],
)
def test_bad_make_shapes_input_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_shapes(**kwargs)


# --- readers -------------------------------------------------------------------------------------


def test_analytic_readers_read_hand_drawn_images():
    # Built here pixel by pixel, independently of make_shapes: background k, a block of colour c, mark m.
    images, truth = [], []
    for k, bg in enumerate(BACKGROUND_COLOURS.values()):
        for c, fg in enumerate(SHAPE_COLOURS.values()):
            for m in (0, 1):
                x = torch.tensor(bg).view(3, 1, 1).repeat(1, 16, 16)
                x[:, 5:10, 6:9] = torch.tensor(fg).view(3, 1, 1)
                if m:
                    x[:, :2, :2] = torch.tensor(MARK_COLOUR).view(3, 1, 1)
                images.append(x)
                truth.append((k, c, m))
    x, truth = torch.stack(images), torch.tensor(truth)
    assert torch.equal(read_background(x), truth[:, 0])
    assert torch.equal(read_colour(x), truth[:, 1])
    assert torch.equal(read_mark(x), truth[:, 2])


def test_readers_are_exact_on_clean_images_and_robust_to_small_noise():
    analytic = {"background": read_background, "colour": read_colour, "mark": read_mark}
    # Palettes are >= 0.8 apart; noise of std 0.1 per channel moves a pixel (or a median / mean of
    # several) across a half-way boundary with probability < 1e-4, so every label is read back.
    assert evaluate_readers(analytic, n=2000, seed=21) == {k: 1.0 for k in analytic}
    assert evaluate_readers(analytic, n=2000, seed=22, noise=0.1) == {k: 1.0 for k in analytic}


def test_shipped_shape_classifier_reads_held_out_shapes():
    readers = attribute_readers()
    assert list(readers) == list(ATTRIBUTES)
    assert all(isinstance(r, CallableFeature) for r in readers.values())
    accuracy = evaluate_readers({"shape": readers["shape"]}, n=2000, seed=31)["shape"]
    # Target of the issue: >= 0.98 on clean held-out images (the card records 1.0 on 4000).
    assert accuracy >= 0.98
    noisy = evaluate_readers({"shape": readers["shape"]}, n=2000, seed=32, noise=0.1)["shape"]
    assert noisy >= 0.98


def test_readers_refuse_images_of_another_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3, 16, 16\)"):
        read_background(torch.zeros(2, 1, 8, 8))


# --- evaluation pieces ----------------------------------------------------------------------------


def test_attribute_histograms_and_validity():
    from critwin.models.shapes.evaluation import attribute_histograms, validity

    data = make_shapes(400, seed=41)
    readers = attribute_readers()
    half = {k: v[:200] for k, v in data.attributes.items()}
    hist = attribute_histograms(half, data.attributes, n_bootstrap=200)
    for name, h in hist.items():
        p = torch.bincount(half[name], minlength=len(ATTRIBUTES[name])).double() / 200
        q = torch.bincount(data.attributes[name], minlength=len(ATTRIBUTES[name])).double() / 400
        assert h["tv"] == pytest.approx(0.5 * (p - q).abs().sum().item(), abs=1e-12)
        assert 0.0 <= h["tv_ci"][0] <= h["tv_ci"][1] <= 1.0
    labels = {name: readers[name](data.images) for name in ATTRIBUTES}
    probability = readers["shape"].classifier.predict_proba(data.images).max(1).values
    assert validity(data.images, labels, probability).all()
    noise = torch.rand(data.images.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert not validity(noise, labels, probability).any()


def test_memorisation_metrics_of_copies_and_of_held_out_images():
    train = make_shapes(24, seed=51).images
    held_out = make_shapes(100, seed=52).images
    copies = memorisation_metrics(train[torch.arange(50) % 24], train, held_out)
    assert copies["nn_distance_samples_median"] == 0.0 and copies["copy_fraction"] == 1.0
    fresh = memorisation_metrics(make_shapes(100, seed=53).images, train, held_out)
    assert fresh["copy_fraction"] < 0.1 < fresh["nn_distance_ratio_median"]


# --- a tiny model, trained in seconds ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from critwin.models.shapes import PRESETS, train_shapes

    out = tmp_path_factory.mktemp("shapes-weights")
    config = PRESETS["tiny"].replace(steps=6, n_train=64)
    model, card = train_shapes(
        config,
        name="shapes-tiny",
        out_dir=out,
        log_every=3,
        eval_every=6,
        eval_samples=8,
        final_samples=16,
        num_inference_steps=5,
        progress=False,
        log=None,
    )
    return out, model, card


def test_tiny_model_loads_and_samples_through_the_adapter(tiny):
    from critwin.adapters.diffusers import DiffusersProcess
    from critwin.models.shapes import load_shapes_model, shipped_process

    out, model, card = tiny
    loaded = load_shapes_model("shapes-tiny", out)
    for a, b in zip(loaded.unet.parameters(), model.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    process = shipped_process("shapes-tiny", num_inference_steps=4, directory=out)
    assert isinstance(process, DiffusersProcess) and tuple(process.sample_shape) == (3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    x = process.run(process.prior(3, generator=generator), generator=generator)
    assert x.shape == (3, 3, 16, 16) and torch.isfinite(x).all()
    again = torch.Generator().manual_seed(0)
    assert torch.equal(x, process.run(process.prior(3, generator=again), generator=again))


def test_tiny_model_card_fields(tiny):
    out, _, card = tiny
    on_disk = json.loads((out / "shapes-tiny.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert card["kind"] == "shapes-ddpm" and card["config"]["steps"] == 6 and card["config"]["n_train"] == 64
    assert card["training"]["steps"] == 6 and card["training"]["seconds"] > 0
    assert [e["step"] for e in card["training"]["history"]] == [3, 6]
    assert "max_tv_quick" in card["training"]["history"][-1]
    assert "max_tv_quick" not in card["training"]["history"][0]
    metrics = card["metrics"]
    assert list(metrics["attributes"]) == list(ATTRIBUTES) and metrics["n_samples"] == 16
    assert card["max_tv"] == max(h["tv"] for h in metrics["attributes"].values())
    assert set(card["reader_accuracy"]) == set(ATTRIBUTES)
    assert card["data"]["n"] == 64 and sum(card["data"]["counts"]["shape"]) == 64
    assert len(card["weights_sha256"]) == 64


def test_training_is_reproducible_and_starts_from_the_seed():
    from critwin.models.shapes import PRESETS, training_steps

    config = PRESETS["tiny"].replace(steps=2, n_train=32)
    runs = [list(training_steps(config)) for _ in range(2)]
    assert [s.loss for s in runs[0]] == [s.loss for s in runs[1]]
    for a, b in zip(runs[0][-1].ema_model.parameters(), runs[1][-1].ema_model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = list(training_steps(config.replace(seed=1)))
    assert other[0].loss != runs[0][0].loss


def test_config_round_trips_and_refuses_bad_fields():
    from critwin.models.shapes import PRESETS, ShapesConfig

    config = PRESETS["shapes-biased"]
    assert ShapesConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.load_held_out(10).attributes["background"].shape == (10,)
    with pytest.raises(ValueError, match="bias"):
        ShapesConfig(bias={"background": (0.5, 0.5)})
    with pytest.raises(ValueError, match="n_train"):
        ShapesConfig(n_train=0)
    with pytest.raises(ValueError, match="unknown keys"):
        ShapesConfig.from_dict({"colour_jitter": 1})


def test_shipped_process_refuses_conditioning_and_unknown_names():
    from critwin.models import shipped_process

    with pytest.raises(ValueError, match="class_label does not apply to 'shapes'"):
        shipped_process("shapes", class_label=1)
    with pytest.raises(ValueError, match="name must be one of the shipped models"):
        shipped_process("squares")


# --- CLI -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "shapes", "--eval-samples", "3"],
            "--eval-samples applies only to the digits and shapes-t2i models",
        ),
        (["train", "shapes", "--epochs", "2"], "--epochs applies only to the classifiers"),
        (["train", "shapes-classifier", "--steps", "3"], "--steps does not apply"),
        (["train", "shapes", "--steps", "0"], "--steps must be >= 1"),
        (["sweep", "--model", "shapes", "--class-label", "1"], "--class-label does not apply"),
        (["sweep", "--model", "shapes", "--guidance", "2"], "--guidance does not apply"),
        (["sweep", "--model", "digits", "--feature", "shape"], "--feature shape reads a shapes attribute"),
    ],
)
def test_bad_cli_input_exits_2_with_one_line(args, message, capsys, tmp_path):
    code, _, err = run_cli(args + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_trains_a_tiny_shapes_model(capsys, tmp_path):
    from critwin.models.shapes import load_shapes_model

    out = tmp_path / "weights"
    args = ["train", "shapes-tiny", "--out", str(out), "--steps", "4", "--eval-every", "0"]
    args += ["--unconditional-samples", "8", "--inference-steps", "4", "--seed", "2", "--no-progress"]
    code, printed, _ = run_cli(args, capsys)
    assert code in (0, None)
    assert "max attribute TV" in printed
    assert sorted(p.name for p in out.iterdir()) == ["shapes-tiny.json", "shapes-tiny.safetensors"]
    model = load_shapes_model("shapes-tiny", out)
    assert model.config.steps == 4 and model.config.seed == 2 and model.card["metrics"]["n_samples"] == 8


# --- the shipped models ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shapes", "shapes-biased", "shapes-memorise"])
def test_shipped_models_load_and_sample_through_the_adapter(name):
    from critwin.models import SHIPPED_MODELS, shipped_process

    assert name in SHIPPED_MODELS
    process = shipped_process(name, num_inference_steps=5)
    assert tuple(process.sample_shape) == (3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    x = process.run(process.prior(2, generator=generator), generator=generator)
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()


def test_privacy_on_shapes_memorise_checks_sizes_against_its_training_set(capsys):
    code, _, err = run_cli(["privacy", "--model", "shapes-memorise", "--members", "25"], capsys)
    assert code == 2 and "--members must be <= 24" in err


def test_atlas_refuses_more_sources_than_the_training_set_has(capsys):
    code, _, err = run_cli(["atlas", "--model", "shapes-memorise", "--sources", "25", "--quick"], capsys)
    assert code == 2 and "--sources 25 exceeds the 24 images shapes-memorise draws sources from" in err


def test_sweep_on_shipped_shapes_reads_an_attribute(capsys, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--model", "shapes", "--feature", "shape", "--n", "2", "--times", "0.5"]
    args += ["--n-per-time", "1", "--steps", "4", "--no-progress", "--out", str(out)]
    code, printed, err = run_cli(args, capsys)
    assert code in (0, None), err
    assert (out / "table.csv").is_file()
    assert json.loads((out / "metadata.json").read_text())["feature"] == "shapes-shape"


def test_shipped_processes_load_without_a_warning_on_the_default_path(capfd):
    """No dtype asked, none passed on: diffusers warns about float32 modules on any dtype argument."""
    from critwin.models import shipped_process

    capfd.readouterr()
    shipped_process("shapes", 10)
    shipped_process("digits", 10)
    assert "kept in float32" not in capfd.readouterr().err
