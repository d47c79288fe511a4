"""Closed-form divergences between two Gaussians (docs/theory.md §3): TV for equal covariances, KL,
Bhattacharyya, Hellinger, and the bounds that relate them to TV.

Covariances may be given as None (identity), a scalar, (d,) variances or a (d, d) matrix; scalar and
diagonal covariances never form a (d, d) matrix.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from critwin._memory import check_memory

__all__ = [
    "tv_gaussians",
    "kl_gaussians",
    "bhattacharyya_gaussians",
    "hellinger_gaussians",
    "tv_bounds_gaussians",
    "pinsker_bound",
]


def _as_cov(cov, d: int, name: str) -> torch.Tensor:
    """A (d, d) float64 covariance from None (identity), a scalar, a (d,) diagonal or a (d, d) matrix."""
    # eye, the symmetrised copy and the eigendecomposition coexist: about three (d, d) float64 arrays.
    check_memory(3 * 8 * d * d, f"a dense ({d}, {d}) covariance for {name}")
    if cov is None:
        return torch.eye(d, dtype=torch.float64)
    c = torch.as_tensor(cov, dtype=torch.float64)
    if c.ndim == 0:
        c = c * torch.eye(d, dtype=torch.float64)
    elif c.shape == (d,):
        c = torch.diag(c)
    elif c.shape != (d, d):
        raise ValueError(f"{name} must be None, a scalar, ({d},) or ({d}, {d}); got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lam = torch.linalg.eigvalsh(0.5 * (c + c.T))
    if lam.min() <= 0:
        raise ValueError(f"{name} must be positive definite, got an eigenvalue {lam.min().item():.4g}")
    return 0.5 * (c + c.T)


def _as_diag(cov, d: int, name: str) -> torch.Tensor | None:
    """(d,) float64 variances when ``cov`` is None, a scalar or a (d,) diagonal; None for a matrix."""
    c = torch.ones(d, dtype=torch.float64) if cov is None else torch.as_tensor(cov, dtype=torch.float64)
    if c.ndim == 0:
        c = c.expand(d)
    if c.shape != (d,):
        return None
    if not torch.isfinite(c).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (c <= 0).any():
        raise ValueError(f"{name} must be positive definite, got a variance {c.min().item():.4g}")
    return c


def _as_mean(mean, name: str) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=torch.float64).flatten()
    if m.numel() == 0 or not torch.isfinite(m).all():
        raise ValueError(f"{name} must be a finite non-empty vector")
    return m


def _pair(mean1, cov1, mean2, cov2):
    m1, m2 = _as_mean(mean1, "mean1"), _as_mean(mean2, "mean2")
    if m1.shape != m2.shape:
        raise ValueError(f"mean1 and mean2 must have the same dimension, got {m1.numel()} and {m2.numel()}")
    d = m1.numel()
    return m1, _as_cov(cov1, d, "cov1"), m2, _as_cov(cov2, d, "cov2")


def _diag_pair(mean1, cov1, mean2, cov2):
    """``(m1, c1, m2, c2)`` with (d,) variances when both covariances are diagonal (no (d, d) matrix)."""
    m1, m2 = _as_mean(mean1, "mean1"), _as_mean(mean2, "mean2")
    if m1.shape != m2.shape:
        raise ValueError(f"mean1 and mean2 must have the same dimension, got {m1.numel()} and {m2.numel()}")
    c1, c2 = _as_diag(cov1, m1.numel(), "cov1"), _as_diag(cov2, m1.numel(), "cov2")
    return None if c1 is None or c2 is None else (m1, c1, m2, c2)


def tv_gaussians(mean1, mean2, cov=None) -> float:
    """``TV(N(m1, Sigma), N(m2, Sigma)) = 2 Phi(delta / 2) - 1`` with ``delta = |Sigma^{-1/2}(m1 - m2)|``.

    Parameters
    ----------
    mean1, mean2 : (d,) means.  cov : None (identity), scalar, (d,) diagonal or (d, d) shared covariance.

    Examples
    --------
    >>> import torch, critwin
    >>> round(critwin.tv_gaussians(torch.tensor([0.0]), torch.tensor([2.0])), 4)  # 2 Phi(1) - 1
    0.6827
    """
    m1, m2 = _as_mean(mean1, "mean1"), _as_mean(mean2, "mean2")
    if m1.shape != m2.shape:
        raise ValueError(f"mean1 and mean2 must have the same dimension, got {m1.numel()} and {m2.numel()}")
    diff = m1 - m2
    diag = _as_diag(cov, m1.numel(), "cov")
    # A scalar or diagonal covariance never becomes a (d, d) matrix (d may be 1e5).
    if diag is not None:
        maha = float((diff.square() / diag).sum())
    else:
        maha = float(diff @ torch.linalg.solve(_as_cov(cov, m1.numel(), "cov"), diff))
    delta = math.sqrt(max(0.0, maha))
    # 2 Phi(x) - 1 = erf(x / sqrt 2): no cancellation for small x.
    return math.erf(delta / 2.0 / math.sqrt(2.0))


def kl_gaussians(mean1, cov1, mean2, cov2) -> float:
    """``KL(N(m1, S1) || N(m2, S2))`` in nats (closed form).

    Parameters
    ----------
    mean1, mean2 : (d,).  cov1, cov2 : None, scalar, (d,) or (d, d).

    Examples
    --------
    >>> import torch, critwin
    >>> mean1, mean2, cov = torch.tensor([0.0]), torch.tensor([2.0]), torch.eye(1)
    >>> critwin.kl_gaussians(mean1, cov, mean2, cov)  # |m1 - m2|^2 / 2 for unit covariances
    2.0
    """
    diag = _diag_pair(mean1, cov1, mean2, cov2)
    if diag is not None:
        m1, c1, m2, c2 = diag
        terms = c1 / c2 + (m2 - m1).square() / c2 - 1.0 + c2.log() - c1.log()
        return max(0.0, 0.5 * float(terms.sum()))
    m1, c1, m2, c2 = _pair(mean1, cov1, mean2, cov2)
    d = m1.numel()
    L2 = torch.linalg.cholesky(c2)
    diff = (m2 - m1).unsqueeze(1)
    sol = torch.cholesky_solve(torch.cat([c1, diff], 1), L2)
    trace = torch.trace(sol[:, :d])
    maha = float(diff[:, 0] @ sol[:, d])
    logdet = torch.linalg.slogdet(c2)[1] - torch.linalg.slogdet(c1)[1]
    return max(0.0, 0.5 * float(trace + maha - d + logdet))


def bhattacharyya_gaussians(mean1, cov1, mean2, cov2) -> float:
    """Bhattacharyya coefficient ``BC = int sqrt(p q)`` of two Gaussians (closed form, in [0, 1]).

    ``BC = |S1|^{1/4} |S2|^{1/4} / |S|^{1/2} exp(-(m1-m2)^T S^{-1} (m1-m2) / 8)``, ``S = (S1 + S2)/2``.

    Examples
    --------
    >>> import math, torch, critwin
    >>> mean1, mean2, cov = torch.tensor([0.0]), torch.tensor([2.0]), torch.eye(1)
    >>> round(critwin.bhattacharyya_gaussians(mean1, cov, mean2, cov), 6), round(math.exp(-0.5), 6)
    (0.606531, 0.606531)
    """
    diag = _diag_pair(mean1, cov1, mean2, cov2)
    if diag is not None:
        m1, c1, m2, c2 = diag
        avg = 0.5 * (c1 + c2)
        log_bc = float(
            (0.25 * c1.log() + 0.25 * c2.log() - 0.5 * avg.log() - (m1 - m2).square() / avg / 8).sum()
        )
        return min(1.0, math.exp(log_bc))
    m1, c1, m2, c2 = _pair(mean1, cov1, mean2, cov2)
    avg = 0.5 * (c1 + c2)
    diff = m1 - m2
    maha = float(diff @ torch.linalg.solve(avg, diff))
    log_bc = (
        0.25 * torch.linalg.slogdet(c1)[1]
        + 0.25 * torch.linalg.slogdet(c2)[1]
        - 0.5 * torch.linalg.slogdet(avg)[1]
    ).item() - maha / 8.0
    return min(1.0, math.exp(log_bc))


def hellinger_gaussians(mean1, cov1, mean2, cov2) -> float:
    """Hellinger distance ``H = sqrt(1 - BC)`` of two Gaussians (so ``H^2 = 1 - BC``).

    Examples
    --------
    Equal covariances: ``BC = exp(-|mu1 - mu2|^2 / 8)``, so ``H = sqrt(1 - e^-1/2)`` at distance 2:

    >>> import math, critwin
    >>> h = critwin.hellinger_gaussians([0.0], [[1.0]], [2.0], [[1.0]])
    >>> round(h, 6), round(math.sqrt(1 - math.exp(-0.5)), 6)
    (0.627271, 0.627271)
    """
    return math.sqrt(max(0.0, 1.0 - bhattacharyya_gaussians(mean1, cov1, mean2, cov2)))


def pinsker_bound(kl: float) -> float:
    """Pinsker: ``TV <= sqrt(KL / 2)`` (capped at 1).

    Examples
    --------
    >>> import critwin
    >>> round(critwin.pinsker_bound(0.02), 6), critwin.pinsker_bound(5.0)  # sqrt(0.01); capped
    (0.1, 1.0)
    """
    if not kl >= 0:
        raise ValueError(f"kl must be >= 0, got {kl!r}")
    return min(1.0, math.sqrt(kl / 2.0))


class TVBounds(NamedTuple):
    """Sure bounds on a TV: ``lower <= TV <= upper``."""

    lower: float
    upper: float


def tv_bounds_gaussians(mean1, cov1, mean2, cov2) -> TVBounds:
    """Bounds ``(lower, upper)`` on the TV of two Gaussians with any covariances (a :class:`TVBounds`).

    ``lower = 1 - BC``; ``upper = min(sqrt(1 - BC^2), Pinsker in either direction)``.

    Examples
    --------
    >>> import torch, critwin
    >>> mean1, mean2, cov = torch.tensor([0.0]), torch.tensor([2.0]), torch.eye(1)
    >>> low, high = critwin.tv_bounds_gaussians(mean1, cov, mean2, cov)
    >>> round(low, 4), round(high, 4)  # around the exact TV 2 Phi(1) - 1 = 0.6827
    (0.3935, 0.7951)
    """
    bc = bhattacharyya_gaussians(mean1, cov1, mean2, cov2)
    upper = min(
        math.sqrt(max(0.0, 1.0 - bc * bc)),
        pinsker_bound(kl_gaussians(mean1, cov1, mean2, cov2)),
        pinsker_bound(kl_gaussians(mean2, cov2, mean1, cov1)),
    )
    return TVBounds(1.0 - bc, upper)
