"""Blink Examples 3-5 (THEORY §10) against the exact discrete engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from critwin import (
    CategoricalMixture,
    critical_window,
    random_walk_modes,
    window_prefix_split,
    window_random_walk,
    window_two_strings,
)


@pytest.mark.parametrize("d", [1, 10, 37])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3, 0.6])
def test_window_two_strings_is_the_exact_window(d, eps):
    w = window_two_strings(d, eps)
    # the TV definitions solved by hand: 1 - kappa^d = 1 - eps^2 and (1 - kappa^d) / 2 = eps
    assert abs(w.t_after - math.exp(2 * math.log(eps) / d)) < 1e-12
    assert abs(w.t_before - (math.exp(math.log(1 - 2 * eps) / d) if eps < 0.5 else 0.0)) < 1e-12
    assert w.clock == "kappa" and w.after == [0] and w.before == [0, 1]
    # the engine on two strings at Hamming distance d (plus agreeing positions, a larger vocabulary)
    s = torch.tensor([[0] * d + [2, 1], [3] * d + [2, 1]])
    exact = critical_window(CategoricalMixture.from_strings(s, vocab_size=5), [0], eps=eps)
    assert abs(exact.t_after - w.t_after) < 1e-12 and abs(exact.t_before - w.t_before) < 1e-12
    assert exact.status == w.status
    paper = window_two_strings(d, eps, form="paper")
    assert paper.t_after == w.t_after and paper.t_before >= exact.t_before  # looser, still sufficient


def test_example_3_numbers():
    w = window_two_strings(10, 0.1)
    assert (round(w.t_after, 4), round(w.t_before, 4)) == (0.6310, 0.9779)
    assert round(window_two_strings(10, 0.1, form="paper").t_before, 4) == 0.9895


# eps / delta never a ratio of small integers: at an exact tie (e.g. eps = delta = 0.05, where
# TV(strong, whole) = eps at one visible step) float rounding decides the side, not the bound
GRID = [
    (60, eps, delta, weight) for eps in (0.06, 0.21) for delta in (0.05, 0.2, 0.35) for weight in (0.5, 0.3)
]
WIDE = [
    pytest.param(L, eps, delta, weight, marks=pytest.mark.slow)
    for L in (40, 120)
    for eps in (0.06, 0.13, 0.21)
    for delta in (0.05, 0.1, 0.2, 0.35)
    for weight in (0.5, 0.3)
]


@pytest.mark.parametrize("L,eps,delta,weight", GRID + WIDE)
def test_random_walk_exact_window_lies_inside_the_theory_form(L, eps, delta, weight):
    exact = critical_window(random_walk_modes(L, delta, weight), [0], eps=eps)
    form = window_random_walk(L, delta, eps, weight=weight)
    assert exact.clock == form.clock == "hidden"
    assert exact.t_after >= form.t_after
    assert exact.t_before <= form.t_before


def binomial_tv(m: int, delta: float) -> float:
    """TV of the two walks after m steps: the number of up-steps is sufficient, Bin(m, 1/2 +- delta)."""
    k = np.arange(m + 1)
    return 0.5 * float(np.abs(binom.pmf(k, m, 0.5 + delta) - binom.pmf(k, m, 0.5 - delta)).sum())


@pytest.mark.parametrize("L,eps,delta", [(40, 0.1, 0.2), (60, 0.21, 0.1), (40, 0.01, 0.36)])
def test_random_walk_engine_matches_binomials(L, eps, delta):
    """Equal weights: T_after = L - min{m : TV_m >= 1 - eps^2}, T_before = L - max{m : TV_m / 2 <= eps}."""
    tvs = [binomial_tv(m, delta) for m in range(L + 1)]
    exact = critical_window(random_walk_modes(L, delta), [0], eps=eps)
    separated = [m for m in range(L + 1) if tvs[m] >= 1 - eps**2]
    assert exact.t_after == (L - min(separated) if separated else -math.inf)
    assert exact.t_before == L - max(m for m in range(L + 1) if tvs[m] / 2 <= eps)


def test_random_walk_paper_form_where_its_conditions_hold():
    """eps = 0.01, delta = 0.36, L = 40: ln(2/eps^2)/(2 delta^2) = 38.2 < 40 and
    eps^2 = 1e-4 < 1e-3 (1/4 - delta^2) = 1.2e-4. The paper's T_before (41.99) is beyond the sequence."""
    paper = window_random_walk(40, 0.36, 0.01, form="paper")
    exact = critical_window(random_walk_modes(40, 0.36), [0], eps=0.01)
    assert abs(paper.t_after - (40 - math.log(2e4) / (2 * 0.36**2))) < 1e-12
    assert abs(paper.t_before - (42 - 1e-4 / 0.36**2)) < 1e-12
    assert exact.t_after >= paper.t_after and exact.t_before <= paper.t_before
    with pytest.raises(ValueError, match=r"eps\^2 < 1e-3"):
        window_random_walk(40, 0.36, 0.1, form="paper")
    with pytest.raises(ValueError, match=r"ln\(2/eps\^2\)/\(2 delta\^2\) < L"):
        window_random_walk(40, 0.2, 0.01, form="paper")


def test_random_walk_window_does_not_depend_on_the_length():
    """The TV of two i.i.d. walks depends only on the number of visible steps, so the window measured
    from the end, L - T, is the same for every length that contains it (width Theta(1/delta^2))."""
    ends = {L: critical_window(random_walk_modes(L, 0.12), [0], eps=0.21) for L in (80, 100, 120)}
    gaps = {(L - w.t_after, L - w.t_before) for L, w in ends.items()}
    tvs = [binomial_tv(m, 0.12) for m in range(81)]
    separated = min(m for m in range(81) if tvs[m] >= 1 - 0.21**2)
    merged = max(m for m in range(81) if tvs[m] / 2 <= 0.21)
    assert gaps == {(separated, merged)} and 0 < merged < separated < 80


def _split_modes(shared: int, k: int, tail: int, V: int = 3) -> CategoricalMixture:
    """Two modes: the same random law on ``shared`` tokens, then ``k`` tokens where each puts 0.998 on its
    own token, then ``tail`` tokens of different random laws."""
    rng = np.random.default_rng(0)
    common = rng.dirichlet(np.ones(V), size=shared)
    split = np.full((2, k, V), 0.001)
    split[0, :, 0] = split[1, :, 1] = 0.998
    ends = rng.dirichlet(np.ones(V), size=(2, tail))
    probs = np.concatenate([np.stack([common, common]), split, ends], axis=1)
    return CategoricalMixture(torch.tensor(probs), noise="autoregressive")


def test_prefix_split_contains_the_exact_window():
    m = _split_modes(8, 2, 2)
    form = window_prefix_split(12, 8, 2, 0.1, mixture=m)
    exact = critical_window(m, [0], eps=0.1)
    assert (form.t_after, form.t_before) == (2.0, 4.0)
    assert exact.t_before == 4.0  # TV = 0 while 8 tokens are visible, 0.997 / 2 > eps with the 9th
    assert exact.t_after >= form.t_after and exact.t_before <= form.t_before
    with pytest.raises(ValueError, match="same law on their first 9 tokens"):
        window_prefix_split(12, 9, 1, 0.1, mixture=m)
    with pytest.raises(ValueError, match="eps-separated after 9 tokens"):
        window_prefix_split(12, 8, 1, 0.01, mixture=m)
    with pytest.raises(ValueError, match="shared \\+ k must be at most length"):
        window_prefix_split(12, 8, 5)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="d_hamming must be"):
        window_two_strings(0, 0.1)
    with pytest.raises(ValueError, match="eps must lie in"):
        window_two_strings(3, 1.5)
    with pytest.raises(ValueError, match="form must be one of"):
        window_two_strings(3, 0.1, form="tight")
    with pytest.raises(ValueError, match="delta must lie in"):
        random_walk_modes(10, 0.5)
