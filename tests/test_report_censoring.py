"""Censored t½ in the paired comparison (THEORY §9): replicates whose t½ lies beyond the measured times are
kept in the statistic as the bounds the censoring allows, never dropped.

The deterministic cases have an exact reference: a source either never forgets its label ("stubborn") or
forgets it (its output takes the other label) from one grid time on, and the second arm forgets every
source at once, so the bootstrap distribution of the first arm's t½ is a function of the resampled share
of stubborn sources, a sum of two binomials (one per class, resampled within its class).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

from critwin._stats import (
    bounded_percentile_interval,
    censored_interval,
    difference_bounds,
    interval_order,
    order_text,
)
from critwin.experiments.forward_reverse import ForwardReverseResult
from critwin.report.invariance import InvarianceSection, Pair
from critwin.report.paired import paired_t_half_difference

TIMES = np.array([0.3, 0.6, 0.9, 1.2, 1.5, 1.8])
STEP = 0.3
PER_CLASS = 50


def _result(labels, source):
    labels = torch.as_tensor(np.asarray(labels))
    T, M = labels.shape
    times = torch.tensor(TIMES[:T], dtype=torch.float64)
    return ForwardReverseResult(
        requested_times=times,
        times=times,
        indices=torch.arange(T),
        steps=None,
        labels=labels,
        source_labels=torch.as_tensor(source).expand(T, M).clone(),
        source_ids=torch.arange(M),
        n_per_time=1,
    )


def _stubborn_arms(stubborn_per_class: int):
    """Arm 1: ``stubborn_per_class`` sources of each class keep their label at every time, the others flip
    it from the last time on; arm 2: every source flips from grid index 2 on. The base rate is 1/2 in
    every replicate (balanced classes, resampled within class; the flipped outputs keep the label
    frequencies balanced), so arm 1's r is 1 up to the last time and ``2 f - 1`` there (``f``: the
    share of stubborn sources): t½ = ``t[-2] + STEP / (4 (1 - f))`` for ``f <= 3/4``, censored above (+inf)
    for ``f > 3/4``; arm 2's t½ is ``t[1] + STEP / 4`` in every replicate."""
    source = np.repeat([0, 1], PER_CLASS)
    stubborn = np.zeros(source.size, dtype=bool)
    for k in (0, 1):
        stubborn[np.nonzero(source == k)[0][:stubborn_per_class]] = True
    first = np.tile(source, (len(TIMES), 1))
    first[-1, ~stubborn] = 1 - source[~stubborn]
    second = np.tile(source, (len(TIMES), 1))
    second[2:] = 1 - source
    return _result(first, source), _result(second, source)


def _censored_probability(stubborn_per_class: int) -> float:
    """P(resampled stubborn share > 3/4): the pooled count is Binomial(50, p) + Binomial(50, p), p the
    class's stubborn share, i.e. Binomial(100, p)."""
    p = stubborn_per_class / PER_CLASS
    return float(binom.sf(0.75 * 2 * PER_CLASS, 2 * PER_CLASS, p))


def test_censored_replicates_are_kept_as_a_one_sided_bound():
    # f = 0.74: the population's t½ is inside the grid, but a third of the replicates censor it.
    first, second = _stubborn_arms(37)
    out = paired_t_half_difference(first, second, 400, torch.Generator().manual_seed(0), pooled=True)
    pooled = out["all"]
    expected = _censored_probability(37)
    assert 0.3 < expected < 0.4
    # 400 replicates: the share's binomial standard error is <= 0.025; 3 of them.
    assert pooled["censored_share"] == pytest.approx(expected, abs=0.075)
    assert pooled["unestimated_share"] == 0.0
    t_second = TIMES[1] + STEP / 4
    truth = TIMES[-2] + STEP / (4 * (1 - 0.74)) - t_second
    assert pooled["difference"] == pytest.approx(truth, abs=1e-9)
    # More than 2.5% of the replicates are censored above: the upper end is a one-sided bound (today's
    # code dropped them and reported a finite upper end below TIMES[-1] - t_second).
    lo, hi = pooled["ci"]
    assert hi == math.inf and lo <= truth
    # the lower end is the 2.5% order statistic of the replicates' differences, each a function of the
    # resampled stubborn share: at least the difference at the 2.5% binomial quantile of that share
    f_low = binom.ppf(0.005, 2 * PER_CLASS, 0.74) / (2 * PER_CLASS)
    assert lo >= TIMES[-2] + STEP / (4 * (1 - f_low)) - t_second - 1e-9


def test_a_t_half_beyond_the_grid_is_never_placed_inside_it():
    # f = 0.77: the population's r stays above 1/2 at the last time, so its t½ lies beyond the grid
    # (censored, like ~55% of the replicates). Dropping those replicates gave an interval entirely
    # below TIMES[-1] - t½(second): one that excludes every difference the truth allows.
    first, second = _stubborn_arms(38)
    out = paired_t_half_difference(first, second, 200, torch.Generator().manual_seed(1), pooled=True)
    pooled = out["all"]
    t_second = TIMES[1] + STEP / 4
    assert pooled["difference"] is None and pooled["model"] is None
    assert pooled["difference_bounds"] == pytest.approx([TIMES[-1] - t_second, math.inf])
    lo, hi = pooled["ci"]
    assert hi == math.inf and lo <= TIMES[-1] - t_second
    assert pooled["censored_share"] == pytest.approx(_censored_probability(38), abs=0.1)


def test_the_verdict_follows_the_one_sided_bound():
    def diff(lo, hi):
        return {"all": {"ci": [lo, hi], "difference": None}}

    pairs = [Pair("a", "r", "x"), Pair("b", "r", "y"), Pair("c", "r", "z"), Pair("d", "r", "w")]
    section = InvarianceSection(
        {}, pairs, [diff(0.2, math.inf), diff(-0.1, math.inf), diff(-math.inf, -0.3), diff(-0.1, 0.2)]
    )
    # an interval that excludes 0 differs even with one end unbounded; one that contains 0 and is
    # unbounded says nothing
    assert section.verdicts() == ["differ", "undetermined", "differ", "agree"]


def test_interval_helpers():
    assert censored_interval(math.inf, 0.1, 2.0) == (2.0, math.inf)
    assert censored_interval(-math.inf, 0.1, 2.0) == (0.0, 0.1)
    assert censored_interval(0.7, 0.1, 2.0) == (0.7, 0.7)
    assert all(math.isnan(v) for v in censored_interval(math.nan, 0.1, 2.0))
    # both censored above: nothing is known about the difference
    assert difference_bounds((2.0, math.inf), (1.5, math.inf)) == (-math.inf, math.inf)
    # With equal bounds the interval is the plain percentile one (order statistics, 95%: the 3rd and
    # 98th of 100 sorted values under inverted_cdf), and NaN draws are left out.
    draws = np.arange(100.0)
    assert bounded_percentile_interval(draws, draws, 0.95) == (2.0, 97.0)
    with_nan = np.concatenate([draws, [math.nan]])
    assert bounded_percentile_interval(with_nan, with_nan, 0.95) == (2.0, 97.0)
    highs = draws.copy()
    highs[-3:] = math.inf  # 3% of the draws unbounded above reach the upper tail
    assert bounded_percentile_interval(draws, highs, 0.95) == (2.0, math.inf)
    assert interval_order((1.0, 2.0), (2.0, 3.0)) == 0  # touching intervals tie
    assert interval_order((2.5, math.inf), (1.0, 2.0)) == 1
    assert interval_order((math.nan, 1.0), (2.0, 3.0)) == 0
    assert order_text(["x"], {"x": (0.0, 1.0)}) == "x" and order_text([], {}) == ""


def _random_arm(rho, source, rng):
    keep = rng.random((len(rho), source.size)) < rho[:, None]
    return _result(np.where(keep, source[None, :], rng.integers(0, 2, keep.shape)), source)


def _grid_crossing(rho) -> float:
    k = int(np.nonzero(rho <= 0.5)[0][0])
    return TIMES[k - 1] + (rho[k - 1] - 0.5) / (rho[k - 1] - rho[k]) * STEP


@pytest.mark.slow
def test_paired_interval_covers_the_truth_when_a_third_of_the_replicates_are_censored():
    """Coverage by simulation against the known truth. Each source keeps its label with probability
    rho(t), else its output is a fair coin, so r(t) = rho(t) and the base rate is 1/2; arm 1's rho
    crosses 1/2 just before the last time (truth t½ = 1.77), so ~38% of the bootstrap replicates
    censor it above. 100 data sets of 100 sources, 100 replicates each. Measured: today's rule
    (censored replicates dropped) covered 82% (49/60 in a first run), this one 97%; at 95% nominal
    the binomial standard error of 100 data sets is 2.2%, so >= 90% is 2.3 of them below."""
    rho_first = np.array([1.0, 1.0, 0.95, 0.9, 0.8, 0.46])
    rho_second = np.array([1.0, 0.9, 0.7, 0.4, 0.1, 0.0])
    truth = _grid_crossing(rho_first) - _grid_crossing(rho_second)
    rng = np.random.default_rng(0)
    source = np.arange(100) % 2
    covered, shares = [], []
    for rep in range(100):
        first, second = _random_arm(rho_first, source, rng), _random_arm(rho_second, source, rng)
        pooled = paired_t_half_difference(
            first, second, 100, torch.Generator().manual_seed(rep), pooled=True
        )["all"]
        lo, hi = pooled["ci"]
        covered.append(lo <= truth <= hi)
        shares.append(pooled["censored_share"])
    assert 0.25 < np.mean(shares) < 0.5
    assert np.mean(covered) >= 0.9, np.mean(covered)
