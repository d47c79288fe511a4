"""Several features in one sweep (feature={name: f}): the same labels as single-feature runs with the same
seed, tables and files, resume, estimation per feature, the joint search, bad mappings."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from diffusers import DDPMScheduler

from critwin.adapters.diffusers import DiffusersProcess
from critwin.experiments.cloning import CloneResult, clone
from critwin.experiments.estimation import commitment_curve, estimate_window, susceptibility
from critwin.experiments.features import SourceSimilarity
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.search import search_window
from critwin.mixtures import GaussianMixture
from critwin.models.shapes import PRESETS, ShapesModel, attribute_readers, training_steps
from tiny_models import tiny_unet

TIMES = [0.0, 0.3, 0.8, 1.5, 3.0]


def _up(x):
    return (x[:, 1] > 1.5).long()


def _right(x):
    # Probabilities, to check that (n, C) features keep their probabilities per feature.
    p = torch.sigmoid(4 * x[:, 0]).float()
    return torch.stack([1 - p, p], 1)


@pytest.fixture(scope="module")
def mixture():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    return GaussianMixture(means, 0.3)


@pytest.fixture(scope="module")
def x0(mixture):
    return mixture.sample(12, generator=torch.Generator().manual_seed(0))[0]


FEATURES = {"bayes": "bayes", "up": _up, "right": _right}


@pytest.mark.parametrize("sampler", ["exact", "sde"])
def test_forward_reverse_labels_equal_single_feature_runs(mixture, x0, sampler):
    kwargs = dict(n_per_time=3, sampler=sampler, seed=5, progress=False, chunk_size=7, n_steps=12)
    both = forward_reverse(mixture, x0, TIMES, feature=FEATURES, **kwargs)
    assert both.feature_names == ("bayes", "up", "right")
    for name, feature in FEATURES.items():
        one = forward_reverse(mixture, x0, TIMES, feature=feature, **kwargs)
        part = both.select(name)
        assert torch.equal(part.labels, one.labels)
        assert torch.equal(part.source_labels, one.source_labels)
        assert torch.equal(part.agreement, one.agreement)
        if name == "right":
            assert torch.equal(part.probabilities, one.probabilities)
        else:
            assert part.probabilities is None
    # One sweep: the outputs are drawn once, whatever the number of features.
    assert both.nfe == one.nfe


def test_multi_feature_table_and_files(mixture, x0, tmp_path):
    result = forward_reverse(mixture, x0, TIMES[:3], 2, feature=FEATURES, seed=1, progress=False)
    columns = list(result.table())
    assert columns[:6] == ["t", "requested_t", "step", "index", "source_id", "replicate"]
    assert columns[6:] == [f"{c}[{n}]" for n in FEATURES for c in ("label", "source_label")]
    assert list(result.to_pandas().columns) == columns
    result.save(tmp_path / "r")
    back = ForwardReverseResult.load(tmp_path / "r")
    assert back.feature_names == result.feature_names
    for name in FEATURES:
        assert torch.equal(back.labels[name], result.labels[name])
        assert torch.equal(back.source_labels[name], result.source_labels[name])
    assert back.metadata["feature"]["up"].endswith("_up")
    assert "features=bayes, up, right" in repr(result)
    with pytest.raises(ValueError, match="use result.select"):
        result.agreement  # noqa: B018


def test_clone_labels_equal_single_feature_runs(mixture, tmp_path):
    kwargs = dict(seed=2, progress=False, chunk_size=5)
    both = clone(mixture, 11, [0.2, 1.0, 2.5], 3, feature=FEATURES, out=tmp_path / "c", **kwargs)
    for name, feature in FEATURES.items():
        one = clone(mixture, 11, [0.2, 1.0, 2.5], 3, feature=feature, **kwargs)
        assert torch.equal(both.select(name).clone_labels, one.clone_labels)
        assert torch.equal(both.select(name).own_labels, one.own_labels)
    assert both.nfe == one.nfe
    back = CloneResult.load(tmp_path / "c")
    assert torch.equal(back.clone_labels["up"], both.clone_labels["up"])
    assert torch.equal(back.own_labels["bayes"], both.own_labels["bayes"])


def test_resume_of_a_multi_feature_sweep(mixture, x0, tmp_path):
    kwargs = dict(n_per_time=4, seed=7, progress=False, chunk_size=8, sampler="sde", n_steps=8)
    full = forward_reverse(mixture, x0, TIMES, feature=FEATURES, out=tmp_path / "a", **kwargs)
    units = sorted((tmp_path / "a" / "units").glob("*.npz"))
    for path in units[::2]:
        path.unlink()
    (tmp_path / "a" / "table.csv").unlink()
    again = forward_reverse(mixture, x0, TIMES, feature=FEATURES, out=tmp_path / "a", **kwargs)
    for name in FEATURES:
        assert torch.equal(full.labels[name], again.labels[name])
    # The checkpoint is bound to the feature names: another set of features is refused by name.
    other = {"bayes": "bayes", "down": _up}
    with pytest.raises(ValueError, match="'feature.up' differs"):
        forward_reverse(mixture, x0, TIMES, feature=other, out=tmp_path / "a", **kwargs)


def test_estimates_per_feature_equal_single_feature_estimates(mixture, x0):
    kwargs = dict(n_per_time=4, seed=3, progress=False)
    both = forward_reverse(mixture, x0, TIMES, feature=FEATURES, **kwargs)
    one = forward_reverse(mixture, x0, TIMES, feature=_up, **kwargs)
    joint, alone = estimate_window(both, feature="up", n_boot=30), estimate_window(one, n_boot=30)
    assert joint.t_half == alone.t_half and joint.t_half_ci == alone.t_half_ci
    assert (joint.b, joint.t_after, joint.t_before) == (alone.b, alone.t_after, alone.t_before)
    assert (commitment_curve(both, feature="up").c == commitment_curve(one).c).all()
    assert (susceptibility(both, feature="up").chi == susceptibility(one).chi).all()
    with pytest.raises(ValueError, match="feature: the result has several features"):
        estimate_window(both)
    with pytest.raises(ValueError, match="feature='up' given, but the result has a single feature"):
        estimate_window(one, feature="up")
    with pytest.raises(ValueError, match="feature must be one of bayes, up, right"):
        estimate_window(both, feature="colour")


@pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")
def test_diffusers_model_labels_equal_single_feature_runs():
    process = DiffusersProcess(tiny_unet(seed=0), DDPMScheduler(clip_sample=False), 6)
    x0 = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = {
        "nearest": SourceSimilarity(x0),
        "red": lambda x: (x[:, 0].mean((1, 2)) > 0).long(),
        "bright": lambda x: (x.mean((1, 2, 3)) > 0).long(),
    }
    kwargs = dict(n_per_time=2, seed=4, progress=False)
    both = forward_reverse(process, x0, [0.0, 0.5, 2.0], feature=features, **kwargs)
    forks = clone(process, 3, [0.5, 2.0], 2, feature=features, seed=4, progress=False)
    for name, feature in features.items():
        one = forward_reverse(process, x0, [0.0, 0.5, 2.0], feature=feature, **kwargs)
        assert torch.equal(both.select(name).labels, one.labels)
        single = clone(process, 3, [0.5, 2.0], 2, feature=feature, seed=4, progress=False)
        assert torch.equal(forks.select(name).clone_labels, single.clone_labels)
    assert both.select("nearest").agreement[0] == 1.0  # t = 0: every source is its own nearest


def test_joint_search_shares_probes(mixture, x0):
    kwargs = dict(seed=1, progress=False, resolution=0.1, batch=32, max_per_probe=256)
    joint = search_window(mixture, x0, feature={"bayes": "bayes", "up": _up}, **kwargs)
    first = search_window(mixture, x0, feature="bayes", **kwargs)
    second = search_window(mixture, x0, feature=_up, **kwargs)
    # The first feature searches on a fresh cache: its bisection takes the single search's decisions.
    assert joint["bayes"].t_after_bracket == first.t_after_bracket
    assert joint["bayes"].t_before_bracket == first.t_before_bracket
    # The base rates come from one set of model samples read by both features: the singles' values.
    assert joint["bayes"].b == first.b and joint["up"].b == second.b
    # Shared probes: the joint search costs less than the two searches run apart.
    assert joint["up"].nfe == joint["bayes"].nfe < first.nfe + second.nfe
    # Every probed time carries the second feature's counts too (read from the same outputs).
    assert [p["t"] for p in joint["up"].probes] == [p["t"] for p in joint["bayes"].probes]
    assert all(math.isfinite(r.t_after) for r in joint.values())


@pytest.mark.parametrize(
    "feature, match",
    [
        ({}, "feature must name at least one feature"),
        ({1: "bayes"}, "feature names must be non-empty strings"),
        ({"a b": "bayes"}, "feature names must be non-empty strings"),
        ({"": "bayes"}, "feature names must be non-empty strings"),
        ({"c": "component", "b": "bayes"}, "feature 'c': the latent 'component' cannot be read"),
        ({"x": 3}, "feature must be a callable"),
        ({"x": "nearest"}, "feature must be a callable, 'bayes' or 'component'"),
    ],
)
def test_bad_feature_mappings(mixture, x0, feature, match):
    with pytest.raises(ValueError, match=match):
        forward_reverse(mixture, x0, [0.5], feature=feature, seed=0, progress=False)
    with pytest.raises(ValueError, match=match):
        clone(mixture, 2, [0.5], 2, feature=feature, seed=0, progress=False)


def test_feature_label_and_base_rate_with_several_features(mixture, x0):
    with pytest.raises(ValueError, match="feature_label names a single feature"):
        forward_reverse(mixture, x0, [0.5], feature=FEATURES, feature_label="x", seed=0, progress=False)
    with pytest.raises(ValueError, match="base_rate must be None or a mapping"):
        search_window(mixture, x0, feature={"a": "bayes", "b": _up}, base_rate=0.3, seed=0, progress=False)
    with pytest.raises(ValueError, match="feature 'c': the latent 'component'"):
        search_window(mixture, x0, feature={"c": "component"}, seed=0, progress=False)


@pytest.fixture(scope="module")
def tiny_shapes():
    """A shapes DDPM retrained from scratch in a few steps (seconds): what matters here is that the engine
    reads every attribute from the same outputs, not the model's quality."""
    config = dataclasses.replace(PRESETS["tiny"], steps=6, n_train=64)
    *_, state = training_steps(config)
    return ShapesModel(state.ema_model, config, name="tiny"), config.load_data()


@pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")
def test_retrained_shapes_model_labels_equal_single_feature_runs(tiny_shapes):
    model, data = tiny_shapes
    process = model.process(num_inference_steps=8)
    readers = attribute_readers()
    x0 = data.images[:5]
    kwargs = dict(n_per_time=2, seed=11, progress=False, chunk_size=4)
    both = forward_reverse(process, x0, [0.0, 0.4, 1.5], feature=readers, **kwargs)
    for name, reader in readers.items():
        one = forward_reverse(process, x0, [0.0, 0.4, 1.5], feature=reader, **kwargs)
        assert torch.equal(both.select(name).labels, one.labels), name
        # At t = 0 the outputs are the sources: every reader reads the generating attribute back.
        assert torch.equal(both.labels[name][0], data.attributes[name][:5].repeat_interleave(2))
