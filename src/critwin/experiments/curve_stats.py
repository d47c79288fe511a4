"""The statistics of a commitment curve that estimates and searches share: Wilson intervals of the kept
shares, the non-increasing isotonic fit, the crossing time of a level, and the percentile interval of
bootstrap draws (which may hold censored ``+-inf`` crossings).

:mod:`critwin.experiments.estimation` re-exports them, where they are documented with the estimates.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.stats import norm

from critwin._stats import bounded_percentile_interval, wilson_bounds
from critwin._validation import check_eps

__all__ = ["wilson_interval", "percentile_interval", "isotonic_decreasing", "crossing_time"]


def wilson_interval(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for binomial proportions.

    Parameters
    ----------
    successes, trials : arrays (broadcastable) of counts, ``0 <= successes <= trials``, ``trials >= 1``.
    level : confidence level in (0, 1).

    Returns
    -------
    (lower, upper) arrays of the same shape.
    """
    level = check_eps(level, "level")
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("successes/trials must satisfy 0 <= successes <= trials and trials >= 1")
    lower, upper = wilson_bounds(k / n, n, _two_sided_quantile(level))
    return np.asarray(lower), np.asarray(upper)


@functools.lru_cache(maxsize=64)
def _two_sided_quantile(level: float) -> float:
    """The normal quantile of a two-sided ``level`` (cached: scipy's ppf costs ~0.2 ms a call, and a
    paired bootstrap computes thousands of intervals at one level)."""
    return float(norm.ppf(0.5 + level / 2))


def isotonic_decreasing(values, weights=None) -> np.ndarray:
    """Weighted least-squares non-increasing fit (pool adjacent violators), in the given order.

    The same numbers as scikit-learn's ``isotonic_regression(values, sample_weight=weights,
    increasing=False)`` (``tests`` check it) in a tenth of its time on a 16-point curve: the bootstrap
    of :func:`estimate_window` fits ``n_boot`` curves per class.
    """
    y = np.asarray(values, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if y.ndim != 1 or w.shape != y.shape:
        raise ValueError("values and weights must be 1-D arrays of the same length")
    if np.any(w <= 0):
        raise ValueError("weights must be positive")
    # Blocks of (mean, weight, length); merge while the non-increasing order is violated.
    means, mass, length = [], [], []
    for value, weight in zip(y, w, strict=True):
        means.append(value)
        mass.append(weight)
        length.append(1)
        while len(means) > 1 and means[-2] < means[-1]:
            total = mass[-2] + mass[-1]
            means[-2] = (means[-2] * mass[-2] + means[-1] * mass[-1]) / total
            mass[-2] = total
            length[-2] += length[-1]
            del means[-1], mass[-1], length[-1]
    return np.repeat(means, length)


def crossing_time(times, fitted, level: float) -> float:
    """OU time where a non-increasing curve on increasing ``times`` first falls to ``level``.

    Linear interpolation between grid points. Returns ``-inf`` if the curve is already below
    ``level`` at the smallest time and ``+inf`` if it stays above it at the largest.
    """
    t = np.asarray(times, dtype=float)
    f = np.asarray(fitted, dtype=float)
    below = np.nonzero(f <= level)[0]
    if below.size == 0:
        return math.inf
    k = int(below[0])
    if k == 0:
        return float(t[0]) if f[0] == level else -math.inf
    return float(t[k - 1] + (f[k - 1] - level) / (f[k - 1] - f[k]) * (t[k] - t[k - 1]))


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """Bootstrap percentile interval of ``draws`` (NaN draws left out; all NaN: ``(nan, nan)``).

    Order statistics (``inverted_cdf``), so censored (±inf) draws stay infinite instead of turning
    into NaN.

    Parameters
    ----------
    draws : (B,) bootstrap replicates of one statistic.
    level : central coverage in (0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> percentile_interval(np.array([1.0, 2.0, 3.0, np.inf]), 0.5)
    (1.0, 3.0)
    """
    return bounded_percentile_interval(draws, draws, level)
