"""Reference TVs that share no code with what :mod:`critwin.theory.validate` checks: numpy and scipy only,
never :mod:`critwin.theory.divergence`, :mod:`critwin.theory.span` or the core's densities
(``tests/test_theory_validate.py`` checks the imports).

For isotropic components ``N(mu_i, var I)`` the noised components at OU time ``t`` are, after whitening,
``N(lam mu_i, I)`` with ``lam = e^-t / sqrt(e^-2t var + 1 - e^-2t)``, and every TV between such mixtures
equals the TV of their projections on the span of the means (docs/theory.md §3). Two references:

- **rank 1** (means on a line): exact. The overlap ``int min(p, q) = 1 - TV`` is integrated piecewise:
  ``p - q`` changes sign only at roots of ``log p - log q`` (found on a grid of step 0.01 and refined by
  ``scipy.optimize.brentq``), and between two roots ``min(p, q)`` is one of the two mixtures, whose
  mass there is a sum of normal CDF differences (taken on the smaller tails, so an overlap of 1e-12
  keeps its digits). Two roots closer than the grid step may be missed; the overlap then errs by less
  than the integral of ``|p - q|`` over that step (below 1e-9 relative against
  ``scipy.integrate.quad`` in every tested case);
- **higher rank**: plain Monte Carlo from ``M = (P + Q)/2`` with a numpy generator (half the draws from
  each side) and the estimator ``E_M |p - q| / (p + q)``, its interval at the requested normal quantile.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import optimize, special, stats

__all__ = ["ReferenceTV", "scale", "line_overlap", "reference_tv", "span_coordinates"]

_GRID_STEP = 0.01
_MARGIN = 40.0  # beyond 40 standard deviations of every centre, each density is below 1e-340


class ReferenceTV(NamedTuple):
    """A reference TV with its interval (a point for the exact rank-1 integral) and its method."""

    value: float
    low: float
    high: float
    method: str


def scale(t: float, var: float = 1.0) -> float:
    """``lam(t) = e^-t / sqrt(e^-2t var + 1 - e^-2t)``: whitened distances at OU time ``t``."""
    a = math.exp(-t)
    return a / math.sqrt(a * a * var - math.expm1(-2.0 * t))


def span_coordinates(means) -> np.ndarray:
    """(K, r) coordinates of ``means`` (K, d) in an orthonormal basis of their affine span (SVD; r >= 1)."""
    x = np.asarray(means, dtype=float)
    centred = x - x.mean(0)
    if not np.abs(centred).max() > 0:
        return centred[:, :1]
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[: int((sv > 1e-9 * sv[0]).sum())].T


def _log_density(x, centres, weights):
    return special.logsumexp(-0.5 * (x[:, None] - centres[None, :]) ** 2, axis=1, b=weights[None, :])


def _mass(lo: float, hi: float, centres, weights) -> float:
    """``sum_i w_i P(lo < Z + c_i < hi)``, each term from the tail that is smaller (no cancellation)."""
    a, b = lo - centres, hi - centres
    mass = np.where(a > 0, stats.norm.sf(a) - stats.norm.sf(b), stats.norm.cdf(b) - stats.norm.cdf(a))
    return float((weights * mass).sum())


def line_overlap(c_a, w_a, c_b, w_b) -> float:
    """``int min(p, q)`` for ``p = sum w_a N(c_a, 1)``, ``q = sum w_b N(c_b, 1)`` on the real line
    (weights normalised here): ``1 - TV(p, q)``, exact up to root finding (module notes)."""
    ca, cb = np.asarray(c_a, float), np.asarray(c_b, float)
    wa, wb = np.asarray(w_a, float), np.asarray(w_b, float)
    wa, wb = wa / wa.sum(), wb / wb.sum()
    lo = max(ca.min(), cb.min()) - _MARGIN  # min(p, q) <= p, q: negligible left of both supports
    hi = min(ca.max(), cb.max()) + _MARGIN
    if hi <= lo:
        return 0.0

    def g(x):
        x = np.atleast_1d(np.asarray(x, float))
        return _log_density(x, ca, wa) - _log_density(x, cb, wb)

    grid = np.arange(lo, hi + _GRID_STEP, _GRID_STEP)
    values = g(grid)
    ends = [lo]
    for k in np.nonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)[0]:
        ends.append(optimize.brentq(lambda x: float(g(x)[0]), grid[k], grid[k + 1], xtol=1e-14))
    ends.append(hi)
    total = 0.0
    for left, right in zip(ends[:-1], ends[1:], strict=True):
        p_smaller = g(0.5 * (left + right))[0] < 0
        total += _mass(left, right, ca, wa) if p_smaller else _mass(left, right, cb, wb)
    return total


def reference_tv(
    coords, weights, A, B, t: float, *, var: float = 1.0, n: int = 200_000, seed: int = 0, z: float = 4.0
) -> ReferenceTV:
    """``TV(p_t^A, p_t^B)`` for components ``N(mu_i, var I)`` given their span ``coords`` (K, r)
    (:func:`span_coordinates`) and ``weights`` (K,): exact for ``r = 1``, else Monte Carlo with ``n``
    draws seeded by ``seed`` and an interval of ``z`` standard errors (module notes)."""
    # The seed rule of critwin._validation.check_seed, restated: this module imports nothing of critwin.
    integer = isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_))
    if not integer or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {int(seed) if integer else seed!r}")
    c = np.asarray(coords, float) * scale(t, var)
    w = np.asarray(weights, float)
    A, B = list(A), list(B)
    if c.shape[1] == 1:
        overlap = line_overlap(c[A, 0], w[A], c[B, 0], w[B])
        return ReferenceTV(1.0 - overlap, 1.0 - overlap, 1.0 - overlap, "exact (rank 1)")
    rng = np.random.default_rng(seed)
    wa, wb = w[A] / w[A].sum(), w[B] / w[B].sum()
    half = n // 2
    f = []
    for centres, weights_side in ((c[A], wa), (c[B], wb)):
        labels = rng.choice(len(weights_side), size=half, p=weights_side)
        x = centres[labels] + rng.standard_normal((half, c.shape[1]))
        log_p = special.logsumexp(-0.5 * ((x[:, None] - c[A][None]) ** 2).sum(-1), axis=1, b=wa[None])
        log_q = special.logsumexp(-0.5 * ((x[:, None] - c[B][None]) ** 2).sum(-1), axis=1, b=wb[None])
        f.append(np.tanh(0.5 * np.abs(log_p - log_q)))  # |p - q| / (p + q)
    value = 0.5 * (f[0].mean() + f[1].mean())
    se = 0.5 * math.sqrt(f[0].var(ddof=1) / half + f[1].var(ddof=1) / half)
    return ReferenceTV(value, max(0.0, value - z * se), min(1.0, value + z * se), "monte-carlo (numpy)")
