"""Exact TVs and crossing times of isotropic Gaussian mixtures whose means lie on a line, with numpy and
scipy only (no critwin code): an independent reference for the theory wing's estimators.

After whitening, the noised components at OU time t are ``N(lam x_i, 1)`` on the line (the directions
orthogonal to it are standard normal under every law and cancel), ``lam = e^-t / sqrt(e^-2t s2 +
1 - e^-2t)`` for components ``N(x_i, s2 I)``. The overlap ``int min(p, q) = 1 - TV`` is integrated
piecewise: ``p - q`` changes sign only at roots of ``log p - log q`` (found on a grid of step 0.01 and
refined by ``scipy.optimize.brentq``); between two roots ``min(p, q)`` is one of the two mixtures, whose
mass there is a sum of normal CDF differences (upper tails where they are smaller, so an overlap of
1e-12 keeps its digits). A pair of roots closer than the grid step can be missed; the overlap then
errs by less than the integral of ``|p - q|`` over that step, far below 1e-9 relative in every case
tested against ``scipy.integrate.quad`` (``tests/test_theory_tree_coverage.py``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special, stats

_GRID_STEP = 0.01
_MARGIN = 40.0  # beyond 40 standard deviations of every centre, each density is below 1e-340


def scale(t: float, var: float) -> float:
    """``lam(t)``: whitened distances of the noised components ``N(e^-t x, e^-2t var + 1 - e^-2t)``."""
    a = math.exp(-t)
    return a / math.sqrt(a * a * var - math.expm1(-2.0 * t))


def _log_density(x, centres, weights):
    return special.logsumexp(-0.5 * (x[:, None] - centres[None, :]) ** 2, axis=1, b=weights[None, :])


def _mass(lo: float, hi: float, centres, weights) -> float:
    """``sum_i w_i P(lo < Z + c_i < hi)``, each term from the tail that is smaller (no cancellation)."""
    a, b = lo - centres, hi - centres
    upper = a > 0  # both ends right of the centre: upper tails
    mass = np.where(upper, stats.norm.sf(a) - stats.norm.sf(b), stats.norm.cdf(b) - stats.norm.cdf(a))
    return float((weights * mass).sum())


def overlap(x_a, w_a, x_b, w_b, lam: float) -> float:
    """``int min(p, q)`` for ``p = sum w_a N(lam x_a, 1)``, ``q = sum w_b N(lam x_b, 1)`` (weights
    normalised here): ``1 - TV(p, q)``."""
    ca, cb = lam * np.asarray(x_a, float), lam * np.asarray(x_b, float)
    wa, wb = np.asarray(w_a, float), np.asarray(w_b, float)
    wa, wb = wa / wa.sum(), wb / wb.sum()
    lo = max(ca.min(), cb.min()) - _MARGIN  # min(p, q) <= p, q: negligible left of both supports
    hi = min(ca.max(), cb.max()) + _MARGIN
    if hi <= lo:
        return 0.0
    grid = np.arange(lo, hi + _GRID_STEP, _GRID_STEP)

    def g(x):
        x = np.atleast_1d(np.asarray(x, float))
        return _log_density(x, ca, wa) - _log_density(x, cb, wb)

    values = g(grid)
    ends = [lo]
    for k in np.nonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)[0]:
        ends.append(optimize.brentq(lambda x: float(g(x)[0]), grid[k], grid[k + 1], xtol=1e-14))
    ends.append(hi)
    total = 0.0
    for left, right in zip(ends[:-1], ends[1:], strict=True):
        mid = 0.5 * (left + right)
        p_smaller = g(mid)[0] < 0
        total += _mass(left, right, ca, wa) if p_smaller else _mass(left, right, cb, wb)
    return total


def tv(x_a, w_a, x_b, w_b, lam: float) -> float:
    """``TV(p, q) = 1 - overlap`` (see :func:`overlap`)."""
    return 1.0 - overlap(x_a, w_a, x_b, w_b, lam)


def merge_time(x, w, A, B, eps: float, var: float, t_max: float = 60.0) -> float:
    """``inf{t : TV(p_t^A, p_t^{A u B}) <= eps}`` for disjoint ``A``, ``B``: ``TV(p^A, p^{A u B}) =
    (1 - w(A)/w(A u B)) TV(p^A, p^B)``; 0 if at t = 0, inf if not by ``t_max``."""
    x, w = np.asarray(x, float), np.asarray(w, float)
    factor = 1.0 - w[A].sum() / (w[A].sum() + w[B].sum())

    def f(t):
        return factor * tv(x[A], w[A], x[B], w[B], scale(t, var)) - eps

    if f(0.0) <= 0:
        return 0.0
    if f(t_max) > 0:
        return math.inf
    return optimize.brentq(f, 0.0, t_max, xtol=1e-11)


def separation_time(x, w, A, eps: float, var: float, t_max: float = 60.0) -> float:
    """``sup{t : TV(p_t^A, p_t^rest) >= 1 - eps^2}``: where the overlap falls to ``eps^2`` (solved on its
    logarithm); -inf if not separated at t = 0, inf if ``A`` is everything."""
    x, w = np.asarray(x, float), np.asarray(w, float)
    B = [j for j in range(len(x)) if j not in set(A)]
    if not B:
        return math.inf

    def f(t):
        o = overlap(x[A], w[A], x[B], w[B], scale(t, var))
        return math.log(max(o, 1e-300)) - 2.0 * math.log(eps)

    if f(0.0) > 0:
        return -math.inf
    return optimize.brentq(f, 0.0, t_max, xtol=1e-11)
