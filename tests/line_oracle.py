"""Exact TVs and crossing times of isotropic Gaussian mixtures whose means lie on a line: the piecewise
integral of :func:`critwin.theory.references.line_overlap` (numpy and scipy only, no code shared with
the estimators under test; checked against ``scipy.integrate.quad`` in tests/test_theory_references.py)
and ``scipy.optimize.brentq`` for the crossings."""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from critwin.theory.references import line_overlap, scale


def overlap(x_a, w_a, x_b, w_b, lam: float) -> float:
    """``int min(p, q)`` for ``p = sum w_a N(lam x_a, 1)``, ``q = sum w_b N(lam x_b, 1)``."""
    return line_overlap(lam * np.asarray(x_a, float), w_a, lam * np.asarray(x_b, float), w_b)


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
