"""The exact discrete engine: TV by enumeration against brute force, Monte Carlo against enumeration,
transition levels, windows and the eps-tree on the kappa and hidden clocks (THEORY §3, §6, §10)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from categorical_oracle import codes, joint, tv_brute
from critwin import (
    CategoricalMixture,
    GaussianMixture,
    critical_window,
    hierarchy,
    sample_exact,
    transition_times,
)
from critwin.theory import discrete
from critwin.theory.discrete import CategoricalTVCurve, categorical_tv
from critwin.theory.discrete_times import merge_level, separation_level
from test_core_categorical import five_se, random_mixture

PAIRS = [([0], [1]), ([0], [0, 1, 2, 3]), ([0, 1], [2, 3]), ([1, 2], [0, 1, 2])]
GRID = {"mask": [0.0, 0.2, 0.7, 1.0], "uniform": [0.0, 0.3, 0.9, 1.0], "autoregressive": [0, 1, 2, 3]}


@pytest.mark.parametrize("noise", list(GRID))
def test_enumeration_equals_brute_force(noise):
    worst = 0.0
    for seed in range(3):
        m = random_mixture(noise, seed, K=4, L=3, V=3)
        for A, B in PAIRS:
            curve = CategoricalTVCurve(m.subset(A), m.subset(B))
            assert curve.method == "enumeration"
            for t in GRID[noise]:
                worst = max(worst, abs(curve(t).value - tv_brute(m.subset(A), m.subset(B), t)))
    assert worst < 1e-12


@pytest.mark.parametrize("noise", list(GRID))
def test_enumeration_of_dirac_strings_equals_brute_force(noise):
    m = CategoricalMixture.from_strings(
        [[0, 1, 2, 0], [0, 2, 2, 1], [1, 1, 1, 1]], [0.2, 0.3, 0.5], vocab_size=3, noise=noise
    )
    levels = [0, 1, 2, 3, 4] if noise == "autoregressive" else [0.0, 0.4, 0.95]
    for A, B in [([0], [1]), ([0], [0, 1, 2]), ([0, 1], [2])]:
        for t in levels:
            got = categorical_tv(m.subset(A), m.subset(B), t).value
            assert abs(got - tv_brute(m.subset(A), m.subset(B), t)) < 1e-12


def test_two_strings_stay_polynomial_and_exact():
    """Two strings at Hamming distance 300 (of 400 positions): TV(p^1, p^2) = 1 - kappa^300 exactly, from
    O(d) count states (2^300 masking patterns)."""
    s = torch.zeros(2, 400, dtype=torch.long)
    s[1, :300] = 3
    m = CategoricalMixture.from_strings(s, vocab_size=5)
    curve = CategoricalTVCurve(m.subset([0]), m.subset([1]))
    assert curve.states <= 3 * 301
    for kappa in (0.5, 0.99, 0.999):
        assert abs(curve(kappa).value - (1 - kappa**300)) < 1e-13


def test_hash_collisions_fall_back_to_exact_grouping():
    counts = torch.tensor([[1, 0], [0, 1], [1, 0]], dtype=torch.int32)
    log_mult = torch.zeros(3, dtype=torch.float64)
    # weights (1, 1) give both distinct states the code 1: the merge must notice
    merged, mult = discrete._merge(counts, log_mult, torch.tensor([1, 1]))
    assert sorted(map(tuple, merged.tolist())) == [(0, 1), (1, 0)]
    assert sorted(mult.exp().tolist()) == pytest.approx([1.0, 2.0])
    # rows hash -inf like a finite sentinel: a row holding the sentinel collides and must be told apart
    rows = torch.tensor([[-math.inf, 0.0], [-7.25e5, 0.0], [-math.inf, 0.0]], dtype=torch.float64)
    first, inverse, n = discrete._group_rows(rows)
    assert n == 2 and inverse[0] == inverse[2] != inverse[1]


@pytest.mark.parametrize("noise,t", [("mask", 0.5), ("uniform", 0.5), ("autoregressive", 1)])
def test_monte_carlo_agrees_with_enumeration(noise, t):
    m = random_mixture(noise, 1, K=4, L=3, V=3)
    exact = categorical_tv(m.subset([0, 1]), m.subset([2, 3]), t).value
    est = categorical_tv(m.subset([0, 1]), m.subset([2, 3]), t, method="monte-carlo")
    assert est.method == "monte-carlo"
    # 4 standard errors: a chance failure has probability 6e-5
    assert abs(est.value - exact) <= 4 * est.stderr
    assert est.low <= exact <= est.high
    # full noise: every law is the same
    top = m.level_range[1]
    assert categorical_tv(m.subset([0]), m.subset([1]), top, method="monte-carlo").value == 0.0


def test_auto_falls_back_to_monte_carlo(monkeypatch):
    m = random_mixture("mask", 2, K=3, L=6, V=3)
    monkeypatch.setattr(discrete, "MAX_STATES", 20)
    assert CategoricalTVCurve(m.subset([0]), m.subset([1, 2])).method == "monte-carlo"
    with pytest.raises(ValueError, match="method='enumeration' needs more than MAX_STATES"):
        CategoricalTVCurve(m.subset([0]), m.subset([1, 2]), method="enumeration")


@pytest.mark.parametrize("d,eps", [(10, 0.1), (3, 0.2), (25, 0.05)])
def test_critical_window_of_two_strings_is_example_3(d, eps):
    """THEORY §10 Ex. 3: TV(p^1, p^2) = 1 - kappa^d, TV(p^1, p^{1,2}) = (1 - kappa^d) / 2, so exactly
    T_after = (eps^2)^{1/d}, T_before = (1 - 2 eps)^{1/d} (d = 10, eps = 0.1: 0.6310, 0.9779)."""
    L = d + 4
    s = torch.tensor([[2] * L, [1] * d + [2] * 4])
    w = critical_window(CategoricalMixture.from_strings(s, vocab_size=4), [0], eps=eps)
    assert w.clock == "kappa" and w.status == "non-empty"
    assert abs(w.t_after - eps ** (2 / d)) < 1e-12
    assert abs(w.t_before - (1 - 2 * eps) ** (1 / d)) < 1e-12
    assert w.t_after_low == w.t_after_high == w.t_after  # exact: the interval is the point
    if (d, eps) == (10, 0.1):
        assert round(w.t_after, 4) == 0.6310 and round(w.t_before, 4) == 0.9779
    assert json.loads(json.dumps(w.to_dict()))["clock"] == "kappa"


@pytest.mark.parametrize("noise", ["mask", "uniform"])
def test_levels_are_the_brute_force_crossings(noise):
    """Each level found is where the brute-force TV crosses: on the right side just beyond, wrong side
    just before (1e-7 away; the exact curve is solved to float precision)."""
    m = random_mixture(noise, 5, K=3, L=3, V=2)
    eps = 0.15
    t, low, high, method = merge_level(m, [0], [0, 1], eps)
    assert method == "enumeration" and low == t == high
    assert tv_brute(m.subset([0]), m.subset([0, 1]), min(1.0, t + 1e-7)) <= eps
    assert t == 0.0 or tv_brute(m.subset([0]), m.subset([0, 1]), t - 1e-7) > eps
    t, _, _, _ = separation_level(m, [0], eps)
    if math.isfinite(t):
        assert tv_brute(m.subset([0]), m.subset([1, 2]), t - 1e-7) >= 1 - eps**2
        assert tv_brute(m.subset([0]), m.subset([1, 2]), t + 1e-7) < 1 - eps**2


def test_autoregressive_levels_are_exact_integers():
    m = random_mixture("autoregressive", 6, K=3, L=3, V=3)
    eps = 0.2
    tvs = [tv_brute(m.subset([0]), m.subset([1, 2]), i) for i in range(4)]
    merged = min(i for i in range(4) if tv_brute(m.subset([0]), m.subset([0, 1, 2]), i) <= eps)
    separated = [i for i in range(4) if tvs[i] >= 1 - eps**2]
    times = transition_times(m, [0], [0, 1, 2], eps)
    assert times.clock == "hidden" and times.t_end == merged
    sep = separation_level(m, [0], eps)[0]
    assert sep == (max(separated) if separated else -math.inf)


@pytest.mark.parametrize("noise", ["mask", "uniform", "autoregressive"])
def test_monte_carlo_levels_bracket_the_exact_ones(noise):
    """Three noisy strings 0^8, 0^4 1^4, 1^8 (each token right with probability 0.975)."""
    s = torch.tensor([[0] * 8, [0] * 4 + [1] * 4, [1] * 8])
    m = CategoricalMixture(0.95 * torch.nn.functional.one_hot(s, 2).double() + 0.025, noise=noise)
    for find, args in ((merge_level, ([0], [0, 1])), (separation_level, ([0],))):
        exact = find(m, *args, 0.2)
        mc = find(m, *args, 0.2, method="monte-carlo", tol=1e-3)
        assert exact[3] == "enumeration" and mc[3] == "monte-carlo"
        assert math.isfinite(exact[0]) and mc[1] <= exact[0] <= mc[2]
        assert mc[2] - mc[1] < (0.05 if noise != "autoregressive" else 1.0)


def test_hierarchy_of_an_autoregressive_grammar_is_deep():
    """Four strings: a first token splits {0,1} from {2,3}, the fifth token splits within each pair. With
    positions written left to right, the tree has two levels at exact integer levels."""
    s = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    tree = hierarchy(CategoricalMixture.from_strings(s, vocab_size=2, noise="autoregressive"))
    assert tree.clock == "hidden" and tree.depth == 2
    pair = tree.find([0, 1])
    assert pair.time == 2.0 and (pair.window.t_after, pair.window.t_before) == (5.0, 6.0)
    leaf = tree.find([0])
    assert (leaf.window.t_after, leaf.window.t_before) == (1.0, 2.0) and leaf.window.clock == "hidden"
    out = json.loads(tree.to_json())
    assert out["clock"] == "hidden" and out["root"]["children"][0]["window"]["clock"] == "hidden"
    ax = tree.plot()
    assert ax.get_ylabel() == "hidden positions"
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
    # masking hides positions independently: the pairs are not separated when they merge, one level only
    flat = hierarchy(CategoricalMixture.from_strings(s, vocab_size=2))
    assert flat.clock == "kappa" and flat.depth == 1


def test_gaussian_results_say_ou():
    m = GaussianMixture(torch.tensor([[3.0], [-3.0]], dtype=torch.float64))
    assert critical_window(m, [0]).clock == "ou"
    assert transition_times(m, [0], [0, 1]).to_dict()["clock"] == "ou"
    assert hierarchy(m).to_dict()["clock"] == "ou"


@pytest.mark.parametrize("noise,times", [("mask", [1.0, 0.6, 0.25, 0.0]), ("autoregressive", [3, 2, 0])])
def test_sample_exact_from_full_noise_gives_the_mixture(noise, times):
    m = random_mixture(noise, 8, K=2, L=3, V=3)
    n = 20000
    y = torch.full((n, 3), m.mask_id)
    seen = []
    x = sample_exact(
        m, y, times, generator=torch.Generator().manual_seed(9), callback=lambda i, t, y, p: seen.append(t)
    )
    assert seen == times[:-1]
    xs, _, P = joint(m, 0.0)
    exact = P.sum((0, 2))  # the clean law
    freq = np.bincount(codes(x.numpy(), 3), minlength=27) / n
    assert (np.abs(freq - exact) <= five_se(exact, n)).all()


def test_bad_inputs_name_the_argument():
    m = CategoricalMixture.from_strings([[0, 1], [1, 0]], vocab_size=2)
    other = CategoricalMixture.from_strings([[0, 1], [1, 0]], vocab_size=3)
    with pytest.raises(ValueError, match="P and Q must have the same vocab_size \\(vocabulary mismatch\\)"):
        categorical_tv(m, other, 0.5)
    with pytest.raises(ValueError, match="P and Q must have the same noise"):
        categorical_tv(m, m.with_noise("uniform"), 0.5)
    with pytest.raises(
        ValueError, match=r"t \(kappa, the per-token masking probability\) must lie in \[0, 1\]"
    ):
        categorical_tv(m.subset([0]), m, 1.2)
    with pytest.raises(ValueError, match="method must be one of"):
        critical_window(m, [0], method="quadrature")
    with pytest.raises(ValueError, match="method='fast' is for Gaussian mixtures"):
        hierarchy(m, method="fast")
    with pytest.raises(ValueError, match="times must be at least 2 strictly decreasing levels"):
        sample_exact(m, torch.tensor([[2, 2]]), [0.5, 0.5])
    with pytest.raises(ValueError, match="mixture must be a GaussianMixture or a CategoricalMixture"):
        critical_window("not a mixture", [0])
