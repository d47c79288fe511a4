"""The one Wilson score interval, shared by the theory (Monte Carlo TV, possibly with a fractional
effective sample size) and the engine (binomial agreement counts).

scipy's ``binomtest(k, n).proportion_ci(method="wilson")`` gives the same numbers for integer
counts (``tests/test_core_package.py`` checks it) but takes one integer pair per call; here ``n`` may
be an effective sample size and every argument broadcasts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["wilson_bounds"]


def wilson_bounds(p, n, z):
    """Wilson score interval ``(lower, upper)`` for a proportion ``p`` estimated from ``n`` draws.

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
