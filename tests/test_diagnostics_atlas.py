"""critwin.atlas on a product mixture whose every number has an independent value: the forward–reverse and
cloning curves of each attribute are the two-Gaussian quadrature truths along its axis, and the fitted
mixture's ε-tree merge times are the closed form of two isotropic Gaussians."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from critwin import atlas
from critwin.diagnostics.feature_atlas import MIXED, fit_attribute_mixture, theory_prediction, tree_levels
from critwin.experiments.process import MixtureProcess
from critwin.mixtures import GaussianMixture
from critwin.theory.tree import Node, Tree
from critwin.theory.windows import merge_time
from two_gaussian_oracle import clone_truth, fr_truth

# Attribute "a" splits the means by 2 * M_A along axis 0, "b" by 2 * M_B along axis 1 (unit variance):
# the mixture is a product, so the posterior of "a" depends on the axis-0 coordinate only and each
# attribute's commitment curve is that of N(+-M, 1) in one dimension (two_gaussian_oracle).
M_A, M_B, D = 5.0, 2.0, 3
EPS = 0.1
TIMES = [0.05, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.3, 2.6, 3.0, 3.5]


def _product_mixture():
    means, combos = [], []
    for a in (0, 1):
        for b in (0, 1):
            mu = torch.zeros(D, dtype=torch.float64)
            mu[0], mu[1] = M_A * (1 - 2 * a), M_B * (1 - 2 * b)
            means.append(mu)
            combos.append((a, b))
    return GaussianMixture(torch.stack(means), 1.0), torch.tensor(combos)


def _reader(axis):
    return lambda x: (x[:, axis] < 0).long()


def _data():
    gmm, combos = _product_mixture()
    x, component = gmm.sample(4000, generator=torch.Generator().manual_seed(0))
    return x, {"a": combos[component, 0], "b": combos[component, 1]}


@pytest.fixture(scope="module")
def result():
    gmm, _ = _product_mixture()
    data = _data()
    process = MixtureProcess(gmm, "exact", times=torch.linspace(4.0, 0.0, 81).tolist())
    features = {"b": _reader(1), "a": _reader(0)}
    sizes = dict(n_sources=300, n_per_time=3, n_trajectories=300, n_clones=3, n_boot=200)
    return atlas(process, features, data=data, times=TIMES, eps=EPS, seed=0, **sizes)


def _half_time(curve, m):
    # c(t) = 3/4 is r = 1/2 for the base rate 1/2 (two equally likely values).
    return brentq(lambda t: curve(t, m) - 0.75, 1e-3, 6.0)


@pytest.mark.parametrize("name, m", [("a", M_A), ("b", M_B)])
def test_measured_half_times_match_quadrature(result, name, m):
    est = result.estimates[name]
    truth = _half_time(fr_truth, m)
    # The truth lies in the cluster-bootstrap 95% interval, widened by 0.05 for the linear interpolation
    # between grid points spaced <= 0.3 apart on a smooth curve (and the 5% chance of a miss).
    lo, hi = est.t_half_ci
    assert lo - 0.05 <= truth <= hi + 0.05, (truth, est.t_half_ci)
    clone_est = result.clone_estimates[name]
    clone_half = _half_time(clone_truth, m)
    lo, hi = clone_est.t_half_ci
    assert lo - 0.05 <= clone_half <= hi + 0.05, (clone_half, clone_est.t_half_ci)
    # The susceptibility peaks inside the window.
    assert est.t_after - 0.3 <= clone_est.t_peak <= est.t_before + 0.3


def _merge_of_halves(m, variance):
    """``T_end`` of one half of a product grid's attribute into the whole: the halves differ only along the
    attribute's axis, means ``+-m``, so ``TV(p_t^half, p_t) = TV/2 = Phi(e^-t m / sqrt(v_t)) - 1/2`` with
    ``v_t = e^-2t variance + 1 - e^-2t``; it equals eps at ``t = 1/2 ln((m^2 - z^2 (variance - 1)) / z^2)``,
    ``z = Phi^-1(1/2 + eps)``."""
    z = norm.ppf(0.5 + EPS)
    return 0.5 * math.log((m * m - z * z * (variance - 1.0)) / (z * z))


def test_order_and_theory(result):
    assert result.order == ["a", "b"]  # a (the larger separation) is decided first
    attributes, variance = result.theory["attributes"], result.theory["variance"]
    # The tree's node times are bounds: the largest merge time of two components, e^-t Delta / sigma = 2z
    # for means Delta apart, with TV(N(0,1), N(D,1)) = 2 Phi(D/2) - 1 = eps at D = 2z.
    z, sigma = norm.ppf((1 + EPS) / 2), math.sqrt(variance)
    assert attributes["a"]["t_bound"] == pytest.approx(math.log(math.hypot(M_A, M_B) / sigma / z), abs=0.05)
    assert attributes["b"]["t_bound"] == pytest.approx(math.log(M_B / sigma / z), abs=0.05)
    # The reported time is the merge time of the sub-mixtures themselves, checked with merge_time on the
    # refitted mixture (quadrature / its own Monte Carlo: no code shared with the tree's span engine)...
    gmm, combos = fit_attribute_mixture(*_data())
    assert combos.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    truth = {
        "a": max(merge_time(gmm, half, [0, 1, 2, 3], EPS)[0] for half in ([0, 1], [2, 3])),
        "b": max(merge_time(gmm, [k], pair, EPS)[0] for pair in ([0, 1], [2, 3]) for k in pair),
    }
    for name, value in truth.items():
        low, high = attributes[name]["t_merge_bracket"]
        # inside the atlas's bracket (a 95% Monte Carlo or sure bracket), give or take the 1e-2 of the
        # reference's own Monte Carlo / bisection error
        assert low - 1e-2 <= value <= high + 1e-2, (name, value, low, high)
        assert low <= attributes[name]["t_merge"] <= high
        # ...and the closed form of the population's product grid, within the ~2% fitting error of 4000
        # samples (t moves by as much); well below the bound (0.7 OU units here)
        m = M_A if name == "a" else M_B
        assert attributes[name]["t_merge"] == pytest.approx(_merge_of_halves(m, variance), abs=0.05)
        assert attributes[name]["t_merge"] < attributes[name]["t_bound"] - 0.5
    assert attributes["b"]["levels"] == 2 and attributes["a"]["levels"] == 1
    assert variance == pytest.approx(1.0, rel=0.05)
    assert result.theory["order"] == ["a", "b"] and result.theory["ties"] == []
    assert result.theory["order_text"] == "a > b"
    comparison = result.comparison()
    assert comparison["agree"] and comparison["differences"] == []
    assert comparison["pairs"] == [{"pair": ["a", "b"], "measured": "a", "predicted": "a", "status": "agree"}]
    assert result.overlaps() == []  # 1.76 vs 0.83: the order is resolved
    assert result.order_text() == "a > b" and comparison["predicted_text"] == "a > b"


def _tied_grid(m=3.0, per_combination=400):
    """Data whose fitted mixture is exactly a product grid with the same separation ``2m`` for both
    attributes: every combination gets the same noise vectors, so the fitted means are ``(+-m, +-m, 0)``
    plus one common shift and the pooled variance is the noise's."""
    noise = torch.randn(per_combination, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    images, a, b = [], [], []
    for va in (0, 1):
        for vb in (0, 1):
            centre = torch.tensor([m * (1 - 2 * va), m * (1 - 2 * vb), 0.0], dtype=torch.float64)
            images.append(centre + noise)
            a += [va] * per_combination
            b += [vb] * per_combination
    return torch.cat(images), {"a": torch.tensor(a), "b": torch.tensor(b)}


def test_attributes_with_overlapping_merge_brackets_are_tied():
    images, labels = _tied_grid()
    theory, gmm = theory_prediction(images, labels, EPS)
    attributes = theory["attributes"]
    # Both attributes' sub-mixtures merge at the same time (the closed form of the product grid)...
    for name in ("a", "b"):
        truth = _merge_of_halves(3.0, theory["variance"])
        low, high = attributes[name]["t_merge_bracket"]
        assert low - 1e-3 <= truth <= high + 1e-3, (name, truth, low, high)
    # ...while their bounds differ (the root's farthest pair is a diagonal, 2 sqrt(2) m apart; the lower
    # level's 2 m): the bound alone would have claimed an order. Two components D apart merge where
    # e^-t D / sqrt(v_t) = 2 z, z = Phi^-1((1 + eps) / 2): t = 1/2 ln(D^2 / (4 z^2) - (variance - 1)).
    z, variance = norm.ppf((1 + EPS) / 2), theory["variance"]
    bounds = sorted(attributes[name]["t_bound"] for name in ("a", "b"))
    expected = [0.5 * math.log(d * d / (4 * z * z) - (variance - 1)) for d in (6.0, 6.0 * math.sqrt(2.0))]
    assert bounds == pytest.approx(expected, abs=1e-4)
    assert theory["ties"] == [theory["order"]] and theory["order_text"] in ("a ~ b", "b ~ a")


def test_tied_atlas_compares_ties_and_labels_every_row(tmp_path):
    images, labels = _tied_grid()
    gmm, _ = fit_attribute_mixture(images, labels)
    process = MixtureProcess(gmm, "exact", times=torch.linspace(4.0, 0.0, 41).tolist())
    x0 = images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[:120]]
    features = {"a": _reader(0), "b": _reader(1)}
    result = atlas(
        process,
        features,
        data=(images, labels),
        x0=x0,
        times=TIMES[::2],
        n_per_time=2,
        cloning=False,
        n_boot=100,
        eps=EPS,
        seed=0,
    )
    # Same separation: the measured t1/2 intervals overlap as well, so both sides say "tied" and agree.
    comparison = result.comparison()
    assert [p["measured"] for p in comparison["pairs"]] == ["tied"]
    assert [p["predicted"] for p in comparison["pairs"]] == ["tied"]
    assert comparison["agree"] and "~" in comparison["measured_text"] and "~" in comparison["predicted_text"]
    out = json.loads(result.to_json())
    assert out["theory"]["ties"] and out["features"]["a"]["theory"]["t_merge_bracket"][0] is not None
    table = result.table()
    assert all(
        lo <= t <= hi
        for t, lo, hi in zip(
            table["theory_t_merge"], table["theory_t_merge_lo"], table["theory_t_merge_hi"], strict=True
        )
    )
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot()
    ax.figure.savefig(tmp_path / "atlas.png")  # lays the figure out
    renderer = ax.figure.canvas.get_renderer()
    names = [text for text in ax.texts if text.get_text() in features]
    assert sorted(text.get_text() for text in names) == ["a", "b"]
    boxes = [text.get_window_extent(renderer) for text in names]
    # the two labels share one merge time, yet sit in their own rows: they must not overlap
    assert not boxes[0].overlaps(boxes[1])


@pytest.mark.parametrize("name", ["a", "b"])
def test_like_for_like_matches_the_measurement(result, name):
    # The fitted mixture is the sampled one up to fitting error: the same estimator on it gives the same
    # t1/2 within the two bootstrap intervals (independent draws).
    measured, exact = result.estimates[name], result.like_for_like[name]
    half_widths = sum((ci[1] - ci[0]) / 2 for ci in (measured.t_half_ci, exact.t_half_ci))
    assert abs(measured.t_half - exact.t_half) <= half_widths


def test_outputs(result):
    out = json.loads(result.to_json())
    assert set(out["features"]) == {"a", "b"}
    for name, row in out["features"].items():
        assert {"t_half", "t_half_ci", "t_after", "t_before", "order"} <= set(row)
        assert row["t_half"] == result.estimates[name].t_half
    assert out["features"]["a"]["order"] == 1 and out["order"] == ["a", "b"]
    assert out["theory"]["levels"][0]["attribute"] == "a"
    assert [lv["attribute"] for lv in out["theory"]["levels"][1:]] == ["b", "b"]
    table = result.table()
    assert table["feature"] == ["a", "b"] and table["t_half"] == [result.estimates[n].t_half for n in "ab"]
    assert list(result.to_pandas().columns) == list(table)
    assert "order=a > b" in repr(result)
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot()
    assert len(ax.lines) >= 2
    # Identical seeds, identical atlas: the sweeps are seeded from ``seed``.
    assert result.metadata["nfe"]["forward_reverse"] == 300 * 3 * len(TIMES)


def _node(components, time, children=()):
    return Node(list(components), time, list(children))


def test_tree_levels_name_the_splitting_attribute():
    combos = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    leaves = [_node([k], 0.0) for k in range(4)]
    by_a = _node([0, 1, 2, 3], 3.0, [_node([0, 1], 1.0, leaves[:2]), _node([2, 3], 1.0, leaves[2:])])
    levels = tree_levels(Tree(by_a, 0.1), combos, ["a", "b"])
    assert [lv["attribute"] for lv in levels] == ["a", "b", "b"]
    # Children {0, 3} and {1, 2} share values of both attributes: no single attribute splits them.
    mixed = _node([0, 1, 2, 3], 2.0, [_node([0, 3], 1.0), _node([1, 2], 1.0)])
    assert tree_levels(Tree(mixed, 0.1), combos, ["a", "b"])[0]["attribute"] == MIXED
    # Leaves {0} and {3} differ in both: the joint name.
    both = _node([0, 3], 2.0, [leaves[0], leaves[3]])
    assert tree_levels(Tree(both, 0.1), combos, ["a", "b"])[0]["attribute"] == "a+b"


def test_fit_attribute_mixture_pools_the_variance():
    images = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]])
    labels = {"a": torch.tensor([0, 0, 1, 1])}
    gmm, combos = fit_attribute_mixture(images, labels)
    torch.testing.assert_close(gmm.means, torch.tensor([[1.0, 0.0], [10.0, 2.0]], dtype=torch.float64))
    # Squared residuals 1 + 1 + 4 + 4 = 10 over (n - K) d = 2 * 2 degrees of freedom.
    assert float(gmm.covs[0]) == pytest.approx(2.5)
    assert combos.tolist() == [[0], [1]] and gmm.weights.tolist() == [0.5, 0.5]


def test_bad_inputs():
    gmm, combos = _product_mixture()
    x, component = gmm.sample(50, generator=torch.Generator().manual_seed(0))
    data = (x, {"a": combos[component, 0]})
    with pytest.raises(ValueError, match="features must be a non-empty mapping"):
        atlas(gmm, {}, data=data)
    with pytest.raises(ValueError, match="x0: give the sources"):
        atlas(gmm, {"a": _reader(0)})
    with pytest.raises(ValueError, match="data: none of the features"):
        atlas(gmm, {"z": _reader(0)}, data=data, times=[0.5, 1.0], n_boot=0, cloning=False)
    with pytest.raises(ValueError, match="data: attribute 'a' must hold"):
        atlas(gmm, {"a": _reader(0)}, data=(x, {"a": torch.zeros(3)}), times=[0.5], n_boot=0, cloning=False)
    assert np.isfinite(
        atlas(gmm, {"a": _reader(0)}, x0=x, times=[0.5, 3.0], theory=False, n_boot=0).estimates["a"].c
    ).all()
