"""Interval helpers shared by the theory, the engine, the diagnostics and the report.

- The one Wilson score interval, shared by the theory (Monte Carlo TV, possibly with a fractional
  effective sample size) and the engine (binomial agreement counts). scipy's
  ``binomtest(k, n).proportion_ci(method="wilson")`` gives the same numbers for integer counts
  (``tests/test_core_package.py`` checks it) but takes one integer pair per call; here ``n`` may be an
  effective sample size and every argument broadcasts.
- The one exact binomial interval (:func:`clopper_pearson_bounds`), whose coverage is at least its level
  for every proportion and sample size (Wilson's dips below it near 0 and 1 at small ``n``): the
  building block of intervals that must hold at a family level, as Bonferroni boxes of proportions.
- The one tie rule (:func:`interval_order`): two times are ordered only where their intervals are
  disjoint, "tied" otherwise — for measured t½ intervals and theory brackets alike.
- Censored crossing times (docs/theory.md §9): a t½ outside the measured times is ``±inf``; it is kept in
  every statistic as the interval of values it can take (:func:`censored_interval`), and a bootstrap interval
  over such draws is :func:`bounded_percentile_interval` — never computed from the uncensored draws
  alone, which would condition it on non-censoring.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "wilson_bounds",
    "clopper_pearson_bounds",
    "TIED",
    "interval_order",
    "order_verdict",
    "order_text",
    "censored_interval",
    "difference_bounds",
    "bounded_percentile_interval",
]


def wilson_bounds(p, n, z):
    """Wilson score interval ``(lower, upper)`` for a proportion ``p`` estimated from ``n`` draws.

    The numbers of scipy's ``binomtest(k, n).proportion_ci(method="wilson")`` for integer counts
    (``tests`` check it); written out because scipy takes one integer count per call, while curves need
    it broadcast over arrays and at fractional (effective) sample sizes.

    Parameters
    ----------
    p : float or array, the observed proportion (clipped to [0, 1]; for a [0, 1]-valued variable that
        is not Bernoulli the interval uses ``Var <= p (1 - p)``, so it is conservative).
    n : float or array, the number of draws (> 0; an effective sample size may be fractional).
    z : float, the two-sided normal quantile of the level (1.96 for 95%).

    Returns
    -------
    (lower, upper) : floats when every argument is a scalar, else arrays of the broadcast shape,
    both inside [0, 1].
    """
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    n = np.asarray(n, dtype=float)
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    lower, upper = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def clopper_pearson_bounds(k, n, level: float):
    """Clopper–Pearson (exact) interval ``(lower, upper)`` of a binomial proportion: ``k`` successes in
    ``n`` trials.

    ``lower`` is the ``(1 - level) / 2`` quantile of ``Beta(k, n - k + 1)`` (0 when ``k = 0``), ``upper``
    the ``(1 + level) / 2`` quantile of ``Beta(k + 1, n - k)`` (1 when ``k = n``): the proportions a
    two-sided binomial tail test at ``1 - level`` does not reject. Its coverage is at least ``level`` for
    every proportion and ``n``, so a Bonferroni box of such intervals covers a vector of proportions at
    least at its family level. scipy's ``binomtest(k, n).proportion_ci(method="exact")`` gives the same
    numbers (``tests/test_core_package.py``) one pair per call; here the arguments broadcast.

    Parameters
    ----------
    k : int or array, successes (``0 <= k <= n``).
    n : int or array, trials (>= 1).
    level : float in (0, 1).

    Returns
    -------
    (lower, upper) : floats when every argument is a scalar, else arrays of the broadcast shape.

    Examples
    --------
    >>> low, high = clopper_pearson_bounds(0, 20, 0.95)
    >>> low, round(high, 4)
    (0.0, 0.1684)
    """
    from scipy.special import betaincinv

    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("k and n must satisfy 0 <= k <= n and n >= 1")
    alpha = 1.0 - level
    # betaincinv needs positive shape parameters: the ends at k = 0 and k = n are set apart.
    lower = np.where(k > 0, betaincinv(np.maximum(k, 1.0), n - k + 1, alpha / 2), 0.0)
    upper = np.where(k < n, betaincinv(k + 1, np.maximum(n - k, 1.0), 1 - alpha / 2), 1.0)
    if lower.ndim == 0:
        return float(lower), float(upper)
    return lower, upper


def interval_order(first, second) -> int:
    """The one tie rule: ``1`` when the interval ``first`` lies entirely above ``second``, ``-1`` when
    entirely below, ``0`` ("tied") when they overlap or touch, or when an end is missing (None or NaN).

    Infinite (censored) ends compare as they are: ``(2.0, inf)`` lies above ``(0.5, 1.5)``.

    Examples
    --------
    >>> interval_order((2.0, 3.0), (0.5, 1.5)), interval_order((1.0, 2.0), (1.5, 3.0))
    (1, 0)
    """
    ends = [first[0], first[1], second[0], second[1]]
    if any(end is None or math.isnan(end) for end in ends):
        return 0
    if first[0] > second[1]:
        return 1
    if first[1] < second[0]:
        return -1
    return 0


TIED = "tied"
"""Verdict on two times whose intervals overlap: no order is claimed between them."""


def order_verdict(a: str, b: str, interval_a, interval_b) -> str:
    """Which of ``a`` and ``b`` comes first in an order by decreasing time (the one whose interval lies
    entirely above the other's), or :data:`TIED` (:func:`interval_order`).

    Examples
    --------
    >>> order_verdict("shape", "mark", (3.1, 3.2), (2.6, 2.7)), order_verdict("a", "b", (1, 2), (1.5, 3))
    ('shape', 'tied')
    """
    return {1: a, -1: b, 0: TIED}[interval_order(interval_a, interval_b)]


def order_text(order, intervals) -> str:
    """``order`` (names by decreasing time) as text: ``a > b`` where the intervals (``intervals[name]``)
    of adjacent names are disjoint, ``a ~ b`` where they are tied (no order claimed).

    Examples
    --------
    >>> order_text(["a", "b", "c"], {"a": (3.0, 3.2), "b": (2.0, 2.5), "c": (2.4, 2.6)})
    'a > b ~ c'
    """
    parts = list(order[:1])
    for first, second in zip(order, order[1:], strict=False):
        tied = interval_order(intervals[first], intervals[second]) == 0
        parts.append(("~ " if tied else "> ") + second)
    return " ".join(parts)


def censored_interval(value: float, lowest: float, highest: float) -> tuple[float, float]:
    """The values a crossing time can take when it was read on measured times spanning
    ``[lowest, highest]``: ``(value, value)`` when finite, ``(highest, inf)`` when censored above
    (``+inf``: not crossed by the largest time), ``(0, lowest)`` when censored below (``-inf``: crossed
    before the smallest time; OU time is >= 0, and at t = 0 nothing is forgotten), ``(nan, nan)`` for NaN.

    Examples
    --------
    >>> censored_interval(float("inf"), 0.1, 2.0), censored_interval(float("-inf"), 0.1, 2.0)
    ((2.0, inf), (0.0, 0.1))
    """
    if math.isnan(value):
        return math.nan, math.nan
    if value == math.inf:
        return float(highest), math.inf
    if value == -math.inf:
        return 0.0, float(lowest)
    return float(value), float(value)


def difference_bounds(first: tuple[float, float], second: tuple[float, float]) -> tuple[float, float]:
    """``[lo, hi]`` of ``a - b`` for ``a`` in the interval ``first`` and ``b`` in ``second``.

    Examples
    --------
    >>> difference_bounds((2.0, float("inf")), (0.5, 0.5))
    (1.5, inf)
    """
    return first[0] - second[1], first[1] - second[0]


def bounded_percentile_interval(lows, highs, level: float) -> tuple[float, float]:
    """Bootstrap percentile interval of a statistic known in each draw only within ``[lows, highs]``.

    The lower end is the lower ``(1 - level) / 2`` order statistic of ``lows``, the upper end the upper
    one of ``highs`` (no interpolation, so infinite draws never meet ``inf - inf``). As every draw's
    value lies in its bounds, the interval contains the percentile interval the values themselves would
    give: censored draws widen it (to a one-sided bound when they reach a tail) instead of being dropped.
    With ``lows == highs`` it is the plain percentile interval. Draws with a NaN bound (no estimate at
    all) are left out; ``(nan, nan)`` when none is left.

    Parameters
    ----------
    lows, highs : (B,) bounds of the statistic in each draw (``lows <= highs``; ``±inf`` allowed).
    level : in (0, 1).

    Examples
    --------
    >>> bounded_percentile_interval([1.0, 2.0, 3.0], [1.0, 2.0, float("inf")], 0.5)
    (1.0, inf)
    """
    lows, highs = np.asarray(lows, dtype=float), np.asarray(highs, dtype=float)
    valid = ~(np.isnan(lows) | np.isnan(highs))
    if not valid.any():
        return math.nan, math.nan
    tail = (1 - level) / 2
    low = np.quantile(lows[valid], tail, method="inverted_cdf")
    high = np.quantile(highs[valid], 1 - tail, method="inverted_cdf")
    return float(low), float(high)
