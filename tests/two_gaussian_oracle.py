"""Quadrature truths for the symmetric mixture ``N(+mu, I)/2 + N(-mu, I)/2`` with ``|mu| = m`` (shared by
the engine tests and ``benchmarks/bench_experiments.py``).

Projected on ``mu/|mu|``, an OU state at time ``T`` started from ``x0 ~ N(+mu, I)`` is ``y ~ N(a m, 1)``
with ``a = e^{-T}``; ``pi(+|y) = sigmoid(2 a m y)``; given component ±, the exact posterior draw is
``N(±s^2 m + a y, s^2)`` along ``mu`` (``s^2 = 1 - a^2``), so the probability that its Bayes label is
``+`` is ``P(y) = pi(+|y) Phi((s^2 m + a y)/s) + pi(-|y) Phi((-s^2 m + a y)/s)`` (THEORY §4). The
orthogonal coordinates do not change the label, so one Gauss–Hermite rule in ``y`` is exact up to its
(spectrally small) quadrature error.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import expit
from scipy.stats import norm

from critwin.mixtures import GaussianMixture


def two_gaussians(m: float = 4.0, d: int = 2) -> GaussianMixture:
    """Equal-weight ``N(±mu, I)`` in ``d`` dimensions with ``mu`` along the diagonal, ``|mu| = m``."""
    mu = torch.full((1, d), m / math.sqrt(d), dtype=torch.float64)
    return GaussianMixture(torch.cat([mu, -mu]))


def _plus_probability(T: float, m: float, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature weights and ``P(y)`` (see the module docstring) at the nodes of ``y ~ N(a m, 1)``."""
    z, w = hermegauss(n_nodes)
    return w / w.sum(), _label_plus(math.exp(-T) * m + z, T, m)


def _label_plus(y: np.ndarray, T: float, m: float) -> np.ndarray:
    """``P(y)``: probability that the exact posterior draw from the OU state ``y`` (along mu) at time
    ``T`` has the Bayes label ``+`` (see the module docstring)."""
    a = math.exp(-T)
    s = math.sqrt(-math.expm1(-2 * T))
    plus = expit(2 * a * m * y)
    return plus * norm.cdf((s * s * m + a * y) / s) + (1 - plus) * norm.cdf((-s * s * m + a * y) / s)


def fr_truth_from(T: float, m: float, u, n_nodes: int = 100) -> np.ndarray:
    """P(Bayes label +) of the forward–reverse output from sources whose coordinates along mu are
    ``u`` (array), noised to ``T``: ``y = e^{-T} u + s z`` with ``z ~ N(0, 1)``."""
    z, w = hermegauss(n_nodes)
    s = math.sqrt(-math.expm1(-2 * T))
    y = math.exp(-T) * np.asarray(u, dtype=float)[:, None] + s * z[None, :]
    return _label_plus(y, T, m) @ (w / w.sum())


def fr_truth(T: float, m: float, n_nodes: int = 100) -> float:
    """P(Bayes label of the forward–reverse output = +) for ``x0 ~ N(+mu, I)`` noised to ``T``."""
    w, p = _plus_probability(T, m, n_nodes)
    return float(np.sum(w * p))


def clone_truth(T: float, m: float, n_nodes: int = 100) -> float:
    """Agreement at fork time ``T`` with exact continuations.

    Given the fork state, the trunk's own continuation and every clone are independent draws with
    P(label +) = ``P(y)``, so agreement = ``E_y[P^2 + (1 - P)^2]``; by symmetry the trunk's state at
    ``T`` may be taken as ``y ~ N(a m, 1)`` along ``mu``.
    """
    w, p = _plus_probability(T, m, n_nodes)
    return float(np.sum(w * (p * p + (1 - p) ** 2)))
