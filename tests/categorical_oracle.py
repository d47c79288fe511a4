"""Brute-force laws of a small CategoricalMixture: every clean string and every noised string enumerated.

Independent of the library's formulas: the forward process is written here as per-position transition
matrices (clean token -> noised token, column V the mask id) and every probability is a sum over all
V^L clean strings and (V+1)^L noised ones.
"""

from __future__ import annotations

import itertools

import numpy as np


def position_kernel(noise: str, V: int, L: int, level, position: int) -> np.ndarray:
    """(V, V + 1) ``P(Y_l = b | X_l = a)`` at one position."""
    k = np.zeros((V, V + 1))
    if noise == "mask":
        k[:, :V] = (1 - level) * np.eye(V)
        k[:, V] = level
    elif noise == "uniform":
        k[:, :V] = (1 - level) * np.eye(V) + level / V
    elif position >= L - level:  # autoregressive: the last `level` positions hidden
        k[:, V] = 1.0
    else:
        k[:, :V] = np.eye(V)
    return k


def step_kernel(noise: str, V: int, L: int, s, t, position: int) -> np.ndarray:
    """(V + 1, V + 1) ``P(Y_t = b | Y_s = a)`` for ``s < t`` at one position (row V: a masked token)."""
    k = np.zeros((V + 1, V + 1))
    if noise == "mask":
        r = (t - s) / (1 - s)
        k[:V, :V] = (1 - r) * np.eye(V)
        k[:V, V] = r
        k[V, V] = 1.0
    elif noise == "uniform":
        r = 1 - (1 - t) / (1 - s)
        k[:V, :V] = (1 - r) * np.eye(V) + r / V
        k[V, V] = 1.0  # never reached
    else:
        k[:, V] = 1.0 if position >= L - t else 0.0
        if position < L - t:
            k[:V, :V] = np.eye(V)
    return k


def strings(V: int, L: int, with_mask: bool) -> np.ndarray:
    return np.array(list(itertools.product(range(V + 1 if with_mask else V), repeat=L)), dtype=np.int64)


def clean_probs(mixture) -> tuple[np.ndarray, np.ndarray]:
    """(V^L, L) every clean string and (K, V^L) its probability under each component."""
    probs = mixture.probs.numpy()
    K, L, V = probs.shape
    xs = strings(V, L, False)
    p = np.ones((K, len(xs)))
    for pos in range(L):
        p *= probs[:, pos, xs[:, pos]]
    return xs, p


def transition(xs: np.ndarray, ys: np.ndarray, kernels) -> np.ndarray:
    """(len(xs), len(ys)) product over positions of ``kernels[l][x_l, y_l]``."""
    out = np.ones((len(xs), len(ys)))
    for pos, k in enumerate(kernels):
        out *= k[np.ix_(xs[:, pos], ys[:, pos])]
    return out


def joint(mixture, level) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, ys, P)`` with ``P[k, x, y] = w_k p_k(x) P(y | x)`` over all clean and noised strings."""
    K, L, V = mixture.probs.shape
    xs, p = clean_probs(mixture)
    ys = strings(V, L, True)
    kernels = [position_kernel(mixture.noise, V, L, level, pos) for pos in range(L)]
    w = mixture.weights.numpy()
    return xs, ys, w[:, None, None] * p[:, :, None] * transition(xs, ys, kernels)[None]


def noised_law(mixture, level) -> tuple[np.ndarray, np.ndarray]:
    """``(ys, P)`` with ``P[k, y] = w_k p_k^level(y)``."""
    _, ys, P = joint(mixture, level)
    return ys, P.sum(1)


def tv_brute(P_mixture, Q_mixture, level) -> float:
    """TV between the two mixtures' noised laws, summed over every noised string."""
    _, p = noised_law(P_mixture, level)
    _, q = noised_law(Q_mixture, level)
    return 0.5 * float(np.abs(p.sum(0) - q.sum(0)).sum())


def index_of(ys: np.ndarray, y) -> int:
    return int(np.nonzero((ys == np.asarray(y)).all(1))[0][0])


def codes(rows, base: int) -> np.ndarray:
    """Row indices into :func:`strings` (lexicographic order) of many strings at once: (n,)."""
    rows = np.asarray(rows)
    return rows @ (base ** np.arange(rows.shape[-1] - 1, -1, -1))
