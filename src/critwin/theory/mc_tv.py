"""Monte Carlo TV between two mixtures with relative precision near TV = 1 (docs/theory.md §3, §9).

Draws come in *strata*, each from a known density ``r_s`` with a fixed count ``c_s``: every component of
``P`` and of ``Q`` (``max(2, floor(n' m_k))`` draws for its weight ``m_k`` in ``M = (P + Q)/2``), one
stratum ``M`` itself for large point clouds, and, where the components share one covariance, *pair
strata* in the overlap of two components: a unit Gaussian centred where ``w_a p_a = v_b q_b`` on the
segment between them, with a quarter of the draws spread over the pairs by ``sqrt(w_a v_b)``. With
``R(x) = sum_s c_s r_s(x)`` (the expected count density), the terms

    y_o = min(p, q) / R,    y_t = |p - q| / (2 R)

summed over all draws estimate ``1 - TV = int min(p, q)`` and ``TV`` without bias (multiple importance
sampling with the balance heuristic). Their sum estimates ``int (p + q)/2 = 1`` exactly, so the
reported TV is the control-variate combination ``(1 - g) T + g (1 - O)`` with the variance-minimising
``g`` in [0, 1]: ``1 - O`` (the overlap, estimated directly with its relative digits) near TV = 1, ``T``
near TV = 0. Standard errors are stratified. Where few draws carry a term (effective sample size
``(sum y)^2 / sum y^2`` below :data:`critwin.theory.divergence.MIN_ESS`), the interval is widened to
contain the conservative one built on ``Var(sum y) <= y_max sum E y`` (every term lies in
``[0, y_max]``, ``y_max`` from the counts of the component strata): the score interval of a scaled
Poisson count.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "Strata",
    "allocate",
    "MCTerms",
    "TVResult",
    "estimate_tv",
    "term_bounds",
    "pair_centres",
    "poisson_score_bounds",
]

MIN_ESS = 200.0
"""Below this effective sample size the normal interval of a Monte Carlo TV is not trusted."""
_PAIR_SHARE = 0.25  # of the draws, in the pair strata
_MAX_PAIRS = 64


class Strata(NamedTuple):
    """Strata of one pair of mixtures ``P``, ``Q``: per stratum its ``kind`` (0: a component of P,
    1: a component of Q, 2: a pair, 3: ``M`` itself), the component of P (``a``) and of Q (``b``)
    it involves (-1 where none) and its draw ``counts``; ``rows``: the stratum of every draw;
    ``labels``: the component of every draw (P's indices, then Q's from K_P; -1 in a pair stratum)."""

    kind: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    counts: torch.Tensor
    rows: torch.Tensor
    labels: torch.Tensor

    @property
    def plain(self) -> bool:
        """One stratum, ``M`` itself."""
        return bool((self.kind == 3).any())


def allocate(w_p: torch.Tensor, w_q: torch.Tensor, n: int, distinct=None, generator=None) -> Strata:
    """Strata for weights ``w_p`` (K_P,), ``w_q`` (K_Q,) and ``n`` draws (module notes).

    ``distinct``: (K_P, K_Q) bool, the pairs whose components differ and share a covariance (candidates
    for pair strata), or None for no pair strata. With more than ``n / 4`` components one stratum, ``M``,
    takes every draw (labels drawn from ``generator``)."""
    kp, kq = w_p.numel(), w_q.numel()
    m = torch.cat([w_p, w_q]).double() / 2
    if m.numel() > n // 4:
        one = torch.tensor([3])
        return Strata(
            one, torch.tensor([-1]), torch.tensor([-1]), torch.tensor([n]), torch.zeros(n, dtype=torch.long)
        )
    pairs = _pairs(w_p, w_q, distinct)
    n_comp = n - (int(n * _PAIR_SHARE) if pairs.numel() else 0)
    counts = torch.where(m > 0, (n_comp * m).floor().clamp_min(2), torch.zeros_like(m)).long()
    kind = torch.cat([torch.zeros(kp, dtype=torch.long), torch.ones(kq, dtype=torch.long)])
    a = torch.cat([torch.arange(kp), torch.full((kq,), -1)])
    b = torch.cat([torch.full((kp,), -1), torch.arange(kq)])
    if pairs.numel():
        pa, pb = pairs[:, 0], pairs[:, 1]
        share = (w_p[pa] * w_q[pb]).double().sqrt()
        pair_counts = (int(n * _PAIR_SHARE) * share / share.sum()).floor().clamp_min(2).long()
        kind = torch.cat([kind, torch.full((pa.numel(),), 2)])
        a, b = torch.cat([a, pa]), torch.cat([b, pb])
        counts = torch.cat([counts, pair_counts])
    rows = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    component = torch.where(kind == 0, a, torch.where(kind == 1, b + kp, -1))
    return Strata(kind, a, b, counts, rows, component[rows])


def _pairs(w_p, w_q, distinct) -> torch.Tensor:
    """(n_pairs, 2) the pairs given strata: the ``_MAX_PAIRS`` distinct ones of largest ``w_a v_b``."""
    if distinct is None or not bool(distinct.any()):
        return torch.zeros(0, 2, dtype=torch.long)
    score = torch.where(distinct, w_p.double().unsqueeze(1) * w_q.double().unsqueeze(0), -1.0).reshape(-1)
    top = torch.argsort(score, descending=True)[: min(_MAX_PAIRS, int(distinct.sum()))]
    return torch.stack([top // w_q.numel(), top % w_q.numel()], 1)


def pair_centres(c_p: torch.Tensor, c_q: torch.Tensor, w_p, w_q, strata: Strata) -> torch.Tensor:
    """(n_pairs, r) centres of the pair strata for whitened component centres ``c_p`` (K_P, r), ``c_q``:
    where ``w_a N(c_a, I) = v_b N(c_b, I)`` on the segment ``[c_a, c_b]`` (its end when outside)."""
    pair = strata.kind == 2
    ca, cb = c_p[strata.a[pair]], c_q[strata.b[pair]]
    gap = cb - ca
    delta = gap.norm(dim=1, keepdim=True).clamp_min(1e-300)
    ratio = (w_p[strata.a[pair]] / w_q[strata.b[pair]]).double().log().unsqueeze(1)
    along = (0.5 * delta + ratio / delta).clamp(min=torch.zeros_like(delta), max=delta)
    return ca + gap / delta * along


class MCTerms(NamedTuple):
    """Per draw: ``log p``, ``log q`` (normalised mixtures) and ``log R`` (the count density)."""

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_r: torch.Tensor


class TVResult(NamedTuple):
    """A Monte Carlo TV: ``value``, ``overlap`` (``1 - TV`` with its own digits), ``stderr``, interval
    ``low``, ``high``, the smaller effective sample size ``ess`` of the two terms."""

    value: float
    overlap: float
    stderr: float
    low: float
    high: float
    ess: float


def estimate_tv(terms: MCTerms, strata: Strata, y_max: tuple[float, float], z: float) -> TVResult:
    """The TV from the terms of every draw (module notes); ``y_max``: the sure bounds on ``y_o`` and
    ``y_t`` (:func:`term_bounds`); ``z``: the two-sided normal quantile of the level."""
    lp, lq, lr = (x.double().cpu() for x in terms)
    big, small = torch.maximum(lp, lq), torch.minimum(lp, lq)
    y_o = torch.exp(small - lr)
    # |p - q| / 2 = max (1 - e^{-|log p/q|}) / 2, with expm1 for its digits where p ~ q
    y_t = 0.5 * torch.exp(big - lr) * -torch.expm1(small - big)
    y_o, y_t = torch.nan_to_num(y_o), torch.nan_to_num(y_t)
    n_s = strata.counts.numel()
    c = strata.counts.double()

    def stratum_sum(x):
        return torch.zeros(n_s, dtype=torch.float64).index_add_(0, strata.rows, x)

    s_o, s_t = stratum_sum(y_o), stratum_sum(y_t)
    keep = c > 1

    def variance(sx, sy, sxy):
        """Stratified covariance of the two sums: ``sum_s c_s cov_s(x, y)``."""
        cov = (sxy - sx * sy / c.clamp_min(1)) / (c - 1).clamp_min(1)
        return float((c * cov)[keep].sum())

    v_o = max(variance(s_o, s_o, stratum_sum(y_o * y_o)), 0.0)
    v_t = max(variance(s_t, s_t, stratum_sum(y_t * y_t)), 0.0)
    c_ot = variance(s_o, s_t, stratum_sum(y_o * y_t))
    O, T = float(s_o.sum()), float(s_t.sum())
    v_m = v_o + v_t + 2 * c_ot
    g = min(1.0, max(0.0, (v_t + c_ot) / v_m)) if v_m > 0 else (1.0 if O < T else 0.0)
    value = (1 - g) * T + g * (1 - O)
    overlap = (1 - g) * (1 - T) + g * O
    se = math.sqrt(max((1 - g) ** 2 * v_t + g * g * v_o - 2 * g * (1 - g) * c_ot, 0.0))
    low, high = value - z * se, value + z * se
    ess_o, ess_t = _ess(y_o), _ess(y_t)
    if ess_o < MIN_ESS:
        o_low, o_high = poisson_score_bounds(O, y_max[0], z)
        low, high = min(low, 1 - o_high), max(high, 1 - o_low)
    if ess_t < MIN_ESS:
        t_low, t_high = poisson_score_bounds(T, y_max[1], z)
        low, high = min(low, t_low), max(high, t_high)
    value = min(1.0, max(0.0, value))
    return TVResult(value, min(1.0, max(0.0, overlap)), se, max(0.0, low), min(1.0, high), min(ess_o, ess_t))


def term_bounds(w_p, w_q, strata: Strata) -> tuple[float, float]:
    """Sure bounds ``(y_o_max, y_t_max)`` on the terms: ``p <= max_a (w_a / c_a) R`` since ``R >=
    c_a p_a`` (and likewise ``q``), for the component strata; ``M`` alone: ``min(p, q) <= (p+q)/2``."""
    if bool((strata.kind == 3).any()):
        n = float(strata.counts.sum())
        return 1.0 / n, 1.0 / n
    c = strata.counts.double()
    on_p, on_q = strata.kind == 0, strata.kind == 1
    max_p = float((w_p.double().cpu()[strata.a[on_p]] / c[on_p]).max())
    max_q = float((w_q.double().cpu()[strata.b[on_q]] / c[on_q]).max())
    return min(max_p, max_q), 0.5 * max(max_p, max_q)


def poisson_score_bounds(total: float, y_max: float, z: float) -> tuple[float, float]:
    """``{mu : (total - mu)^2 <= z^2 y_max mu}``: the score interval of a sum of terms in ``[0,
    y_max]`` whose variance is at most ``y_max`` times its mean (a Poisson count scaled by ``y_max``)."""
    a = z * z * y_max
    half = math.sqrt(a * max(total, 0.0) + a * a / 4)
    return max(0.0, total + a / 2 - half), total + a / 2 + half


def _ess(y: torch.Tensor) -> float:
    """``(sum y)^2 / sum y^2`` of non-negative terms (0 if all vanish), scaled against underflow."""
    peak = float(y.max()) if y.numel() else 0.0
    if not peak > 0:
        return 0.0
    u = y / peak
    return float(u.sum()) ** 2 / float(u.square().sum())


def span_terms(c_p, c_q, w_p, w_q, strata: Strata, z: torch.Tensor, chunk: int) -> MCTerms:
    """The terms of the draws ``x = centre + z`` (rows of ``z``: standard normal in the span; the centre
    of the draw's component or pair stratum) for unit Gaussian components at whitened centres ``c_p``
    (K_P, r), ``c_q`` (K_Q, r) with weights ``w_p``, ``w_q``; densities up to the common factor
    ``(2 pi)^{-r/2}``, which cancels. ``chunk``: rows at a time (bounded memory)."""
    kp, kq = c_p.shape[0], c_q.shape[0]
    device = c_p.device
    # the strata are P's components, Q's, then the pairs (allocate): their centres in that order
    centres = torch.cat([c_p, c_q, pair_centres(c_p, c_q, w_p, w_q, strata)])
    row_centre = (strata.labels if strata.plain else strata.rows).to(device)
    log_wp, log_wq = w_p.double().log().to(device), w_q.double().log().to(device)
    log_c = strata.counts.double().log().to(device)
    norms = centres.square().sum(1)
    out = []
    for lo in range(0, row_centre.numel(), chunk):
        x = centres[row_centre[lo : lo + chunk]] + z[lo : lo + chunk]
        sq = (x.square().sum(1, keepdim=True) - 2 * x @ centres.T + norms).clamp_min(0)
        log_p = torch.logsumexp(-0.5 * sq[:, :kp] + log_wp, 1)
        log_q = torch.logsumexp(-0.5 * sq[:, kp : kp + kq] + log_wq, 1)
        if strata.plain:
            log_r = math.log(row_centre.numel()) + torch.logaddexp(log_p, log_q) - math.log(2.0)
        else:
            log_r = torch.logsumexp(-0.5 * sq + log_c, 1)
        out.append(torch.stack([log_p, log_q, log_r], 1).cpu())
    lp, lq, lr = torch.cat(out).unbind(1)
    return MCTerms(lp, lq, lr)


def mixture_log_r(log_p, log_q, comp_log_p, comp_log_q, strata: Strata) -> torch.Tensor:
    """``log R`` of draws from component strata given the per-component log densities (rows, K_P) and
    (rows, K_Q) (weights not included), or from the one stratum ``M`` (``R = n M``; the per-component
    densities are then not needed and may be None)."""
    if strata.plain:
        return math.log(float(strata.counts.sum())) + torch.logaddexp(log_p, log_q) - math.log(2.0)
    log_c = strata.counts[strata.kind < 2].double().log().to(comp_log_p.device)
    return torch.logsumexp(torch.cat([comp_log_p, comp_log_q], 1).double() + log_c, 1)
