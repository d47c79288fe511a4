"""Mixtures with one shared isotropic covariance, worked in the span of their means (docs/theory.md §3).

For components ``N(mu_i, sigma^2 I)`` every noised law is ``N(a mu_i, (a^2 sigma^2 + s^2) I)``, so after
whitening all components move along the fixed span of the means, scaled by
``lam(t) = a / sqrt(a^2 sigma^2 + s^2)``, and are standard normal orthogonally to it. Everything here is
computed from the (K, r) coordinates of the centred means in that span (``r <= K - 1``), obtained from
the (K, K) Gram matrix: no (d, d) matrix is ever formed.

- pairwise TVs ``erf(lam D_ij / (2 sqrt 2))`` and merge times in closed form, for all pairs at once;
- sure bounds on ``TV(p^A, p^B)`` of sub-mixtures from pairwise closed forms (:func:`tv_bounds`):
  convexity gives ``TV <= sum_ab w_a v_b TV_ab``, and ``min(sum_a x_a, sum_b y_b) <= sum_ab min(x_a, y_b)``
  gives ``1 - TV <= sum_ab int min(w_a p_a, v_b p_b)``, each term the weighted overlap of two unit
  Gaussians at distance ``delta = lam D_ab``: ``w Phi(-c) + v Phi(c - delta)``, ``c = delta/2 +
  ln(w/v)/delta`` (:func:`weighted_overlap`);
- stratified Monte Carlo with pair strata in the overlaps (:mod:`critwin.theory.mc_tv`), its draws
  made once per curve (common random numbers at every time);
- crossing times of many TV curves at once (every window of a tree): :mod:`critwin.theory.span_crossings`.
"""

from __future__ import annotations

import math

import torch

from critwin._memory import check_memory, chunk_rows
from critwin.clock import noised_variance, ou_coefficients
from critwin.mixtures import GaussianMixture
from critwin.theory.divergence import DEFAULT_SEED, SINGULAR_T0, Estimate, mc_tv_estimate
from critwin.theory.mc_tv import allocate, span_terms

__all__ = [
    "SpanMixture",
    "shared_isotropic",
    "tv_bounds",
    "tv_bound",
    "weighted_overlap",
    "pair_crossing_times",
]


_SQRT2 = math.sqrt(2.0)


def shared_isotropic(mixture: GaussianMixture) -> bool:
    """Whether every component of ``mixture`` has the same isotropic covariance ``sigma^2 I``."""
    if mixture.cov_kind != "iso":
        return False
    v = mixture.covs.to(torch.float64)
    return bool(torch.allclose(v, v[0].expand_as(v), rtol=1e-9, atol=1e-12))


def weighted_overlap(delta: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``int min(w N(0, I), v N(delta e, I))``: ``w Phi(-c) + v Phi(c - delta)``, ``c = delta/2 +
    ln(w/v)/delta`` (``min(w, v)`` at ``delta = 0``); broadcast over the arguments."""
    # In place after the first temporaries: on millions of pairs each fresh temporary is new memory the
    # kernel must fault in (1.6-2.5x slower than the same arithmetic out of place; same numbers).
    safe = delta.clamp_min(1e-300)
    c = torch.div((w / v).log_(), safe).add_(0.5 * safe)  # the broadcast shape of all three
    far = torch.sub(safe, c).div_(_SQRT2).erfc_().mul_(v)
    tail = c.div_(_SQRT2).erfc_().mul_(w).add_(far).mul_(0.5)
    smaller = torch.minimum(w, v)
    overlap = torch.where(delta > 0, torch.minimum(tail, smaller, out=tail), smaller)
    # a weight 0 on either side overlaps nothing (w = v = 0 would be log(0/0): NaN)
    return overlap.masked_fill_(~(smaller > 0), 0.0)


def tv_bounds(delta: torch.Tensor, w: torch.Tensor, v: torch.Tensor, groups=None):
    """Sure (lower, upper) bounds on ``TV(sum_a w_a p_a, sum_b v_b q_b)`` from the whitened distances
    ``delta`` of the pairs of unit Gaussians and their (broadcast) weights (module notes).

    ``groups``: None to sum over every element (one pair of bounds), or ``(owner, n)`` to sum the pairs
    of flat tensors by their group ``owner`` (n,) into ``n`` pairs of bounds.
    """
    return tv_bound(delta, w, v, groups, upper=False), tv_bound(delta, w, v, groups, upper=True)


def tv_bound(delta, w, v, groups=None, *, upper: bool) -> torch.Tensor:
    """One side of :func:`tv_bounds`. The upper one is written ``1 - sum w v erfc(delta / (2 sqrt 2))``
    (the weights of each side sum to 1), so that near TV = 1 it keeps its digits and never falls below
    the lower one by rounding."""
    if upper:
        terms = w * v * torch.erfc(delta / (2 * math.sqrt(2.0)))
    else:
        terms = weighted_overlap(delta, w, v)
    if groups is None:
        total = terms.sum()
    else:
        owner, n = groups
        total = torch.zeros(n, dtype=terms.dtype).index_add_(0, owner, terms)
    return (1.0 - total).clamp(0.0, 1.0)


def pair_crossing_times(span, sq_dist, level) -> torch.Tensor:
    """``inf{t : erf(lam(t) D / (2 sqrt 2)) <= level}``: when two components of ``span`` at squared
    distance ``sq_dist`` are ``level``-close in TV (elementwise; 0 where ``level >= 1``).

    ``lam(t)^2 D^2 = c^2`` with ``c = 2 sqrt 2 erfinv(level)`` and ``u = e^{-2t}`` reads
    ``u (D^2 + c^2 (1 - sigma^2)) = c^2``; 0 when already ``D <= c sigma``.
    """
    level = torch.as_tensor(level, dtype=torch.float64)
    sq = torch.as_tensor(sq_dist, dtype=torch.float64)
    c2 = 8.0 * torch.erfinv(level.clamp(max=1.0)).square()
    merged_at_zero = (sq <= c2 * span.var) | (level >= 1.0)
    t = 0.5 * torch.log((sq + c2 * (1.0 - span.var)).clamp_min(c2) / c2)
    return torch.where(merged_at_zero, torch.zeros_like(t), t)


class SpanMixture:
    """A mixture of components ``N(mu_i, sigma^2 I)`` in the span of its means.

    Parameters
    ----------
    mixture : GaussianMixture with one shared isotropic covariance (:func:`shared_isotropic`).
    n : Monte Carlo draws per TV evaluation where the bounds do not decide.
    generator : torch.Generator for the draws (None: seeded with ``DEFAULT_SEED`` = 0).
    level : confidence level of Monte Carlo intervals.

    Attributes
    ----------
    coords : (K, r) coordinates of the centred means in an orthonormal basis of their span.
    sq_dist : (K, K) squared distances of the means.  weights : (K,) float64.  var : ``sigma^2``.
    """

    def __init__(self, mixture: GaussianMixture, n: int = 10000, generator=None, level: float = 0.95):
        if not shared_isotropic(mixture):
            raise ValueError("mixture must have one shared isotropic covariance for the span reduction")
        K, d = mixture.n_components, mixture.dim
        check_memory(8 * (2 * K * d + 4 * K * K), f"the span reduction of {K} means in dimension {d}")
        means = mixture.means.to(torch.float64).cpu()
        centred = means - means.mean(0)
        gram = centred @ centred.T
        if d < K:
            # The span has rank <= d: an orthonormal basis from the (d, d) scatter matrix costs O(K d^2)
            # where the Gram matrix's eigendecomposition costs O(K^3) (K = 10,000: ~170 s of one core).
            lam, V = torch.linalg.eigh(centred.T @ centred)
            keep = lam > 1e-12 * float(lam.max().clamp_min(1e-300))
            self.coords = centred @ V[:, keep]
        else:
            lam, U = torch.linalg.eigh(gram)
            keep = lam > 1e-12 * float(lam.max().clamp_min(1e-300))
            self.coords = U[:, keep] * lam[keep].sqrt()
        diag = gram.diagonal()
        self.sq_dist = (diag.unsqueeze(1) + diag.unsqueeze(0) - 2 * gram).clamp_min(0).fill_diagonal_(0)
        self.dist = self.sq_dist.sqrt()
        self.weights = mixture.weights.to(torch.float64).cpu()
        self.var = float(mixture.covs[0])
        self.n = n
        self.z_level = math.sqrt(2.0) * float(torch.erfinv(torch.tensor(level, dtype=torch.float64)))
        self.generator = generator or torch.Generator().manual_seed(DEFAULT_SEED)

    @property
    def n_components(self) -> int:
        return self.sq_dist.shape[0]

    # ------------------------------------------------------------------------------ closed forms
    def scale(self, t):
        """``lam(t)``: whitened distances at OU time ``t`` are ``lam(t) |mu_i - mu_j|`` (``t`` a float,
        or a float64 tensor of times giving a tensor of scales)."""
        tensor = isinstance(t, torch.Tensor)
        if self.var == 0.0:
            # Dirac components: the limit t -> 0+ (as divergence.TVCurve does)
            t = torch.where(t == 0, SINGULAR_T0, t) if tensor else (SINGULAR_T0 if t == 0.0 else float(t))
        a, _ = ou_coefficients(t)
        v = noised_variance(self.var, t)
        return a / (v.sqrt() if tensor else math.sqrt(v))

    def pair_tv(self, t: float, rows=None, cols=None) -> torch.Tensor:
        """Pairwise ``TV(p_t^i, p_t^j) = erf(lam(t) D_ij / (2 sqrt 2))`` for ``i in rows``, ``j in cols``."""
        dist = self.dist if rows is None else self.dist[rows][:, cols]
        return torch.erf(self.scale(t) * dist / (2 * math.sqrt(2.0)))

    def merge_time_of(self, sq_dist: torch.Tensor, eps: float) -> torch.Tensor:
        """``inf{t : TV(p_t^i, p_t^j) <= eps}`` of two components at squared distance ``sq_dist``
        (:func:`pair_crossing_times`)."""
        return pair_crossing_times(self, sq_dist, torch.tensor(eps, dtype=torch.float64))

    def bounds(self, A: list[int], B: list[int], t: float) -> tuple[float, float]:
        """Sure ``(lower, upper)`` bounds on ``TV(p_t^A, p_t^B)`` for disjoint ``A``, ``B`` (module notes)."""
        A, B = torch.as_tensor(A), torch.as_tensor(B)
        w = (self.weights[A] / self.weights[A].sum()).unsqueeze(1)
        v = (self.weights[B] / self.weights[B].sum()).unsqueeze(0)
        low, high = tv_bounds(self.scale(t) * self.dist[A][:, B], w, v)
        return float(low), float(high)

    # ------------------------------------------------------------------------------ Monte Carlo
    def curve(self, A: list[int], B: list[int]):
        """``t -> TV(p_t^A, p_t^B)`` (an :class:`Estimate`) for disjoint ``A``, ``B``: stratified Monte
        Carlo (:mod:`critwin.theory.mc_tv`) with the draws made once, so the curve is smooth in ``t``
        (common random numbers)."""
        w_p = self.weights[A] / self.weights[A].sum()
        w_q = self.weights[B] / self.weights[B].sum()
        c_p, c_q = self.coords[A], self.coords[B]
        distinct = self.sq_dist[A][:, B] > 0
        strata = allocate(w_p, w_q, self.n, distinct, self.generator)
        rows = strata.rows.numel()
        check_memory(
            8 * rows * (self.coords.shape[1] + 2 * (len(A) + len(B))), "the Monte Carlo draws in the span"
        )
        z = torch.randn(rows, self.coords.shape[1], generator=self.generator, dtype=torch.float64)
        step = chunk_rows(8 * 4 * (len(A) + len(B) + strata.counts.numel()), rows, "the Monte Carlo draws")

        def evaluate(t: float) -> Estimate:
            lam = self.scale(t)
            terms = span_terms(lam * c_p, lam * c_q, w_p, w_q, strata, z, step)
            return mc_tv_estimate(terms, strata, w_p, w_q, self.z_level)

        return evaluate

    def tv(self, A: list[int], B: list[int], t: float) -> Estimate:
        """Stratified Monte Carlo ``TV(p_t^A, p_t^B)`` for disjoint ``A``, ``B`` (see :meth:`curve`)."""
        return self.curve(A, B)(t)
