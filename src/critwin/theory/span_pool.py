"""Pooled Monte Carlo TVs of many pairs of sub-mixtures of one span mixture (THEORY §4): the second stage
of :mod:`critwin.theory.span_crossings`.

A pool serves every task of one group ``U`` (the components that can matter for each of them,
:func:`critwin.theory.span_bounds.restrict`). It draws once, per component of ``U``, standard normal
rows in the span of ``U``'s means (``x = lam c_b + z``; the products ``z @ c^T`` serve every time). A
task estimates ``1 - TV = E_Q min(1, p/q)`` on the draws of the larger of its two sides ``Q`` (the
small side's density by a log-sum-exp over its components, ``Q``'s by complement in ``U``), stratified
by component with ``max(2, floor(n v_b))`` draws for relative weight ``v_b``: one (rows, |U|) matrix of
log-densities per time serves every task of the group. The interval is the normal one with the
stratified variance; where few draws carry the estimate (effective sample size below
:data:`critwin.theory.divergence.MIN_ESS`) it is widened to contain the Wilson interval built on the
bound ``Var <= mu (1 - mu)`` of a [0, 1] variable with the smallest per-stratum sample size. The
overlap of the components left out (``slack``) is added to the interval's top.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from critwin._memory import check_memory
from critwin._stats import wilson_bounds
from critwin.theory.mc_tv import MIN_ESS

__all__ = ["TVInterval", "Pool", "Group", "group_tasks"]


class TVInterval(NamedTuple):
    """A TV with its interval (a Monte Carlo confidence interval, sure bounds, or both combined)."""

    value: float
    low: float
    high: float


class Group(NamedTuple):
    """Tasks (their ``keys``) whose components that can matter are the same set ``U``."""

    U: list[int]
    keys: list


def group_tasks(keys, parts) -> list[Group]:
    """Group the tasks ``keys`` by the union of their restricted sides (``parts``, in the same order)."""
    groups: dict[bytes, Group] = {}
    for key, part in zip(keys, parts, strict=True):
        U = np.unique(np.asarray(part.A + part.B, dtype=np.int64))
        groups.setdefault(U.tobytes(), Group(U.tolist(), [])).keys.append(key)
    return list(groups.values())


class _Side(NamedTuple):
    """One task in a pool: positions in ``U`` of its small side, and the weights that scale it."""

    small: torch.Tensor
    ratio: float  # W_side / W_small
    w_side: float
    slack: float


class Pool:
    """Draws shared by every task of one group ``U``: rows of standard normals in the span, per component
    of ``U``, as many as the most demanding task asks of that component.

    Each task is a :class:`critwin.theory.span_bounds.Restricted` ``(A, B, W_A, W_B, slack)``: the
    components of its two sides that can matter (``A ∪ B = U``), the full sides' weights and the sure
    bound ``slack`` on the overlap of the components left out. The pool estimates ``int min(p_A', q_B')``
    of the kept parts (weights normalised by the full sides), which is within ``[0, slack]`` below
    ``1 - TV``."""

    def __init__(self, span, U: list[int], tasks):
        self.span, self.U = span, U
        pos = torch.full((span.n_components,), -1, dtype=torch.long)
        pos[torch.tensor(U)] = torch.arange(len(U))
        w = span.weights[U]
        need = torch.full((len(U),), 2, dtype=torch.long)
        self.sides = []
        for task in tasks:
            # the larger side carries the draws; the estimate needs the density of the other, small one
            swap = len(task.A) > len(task.B)
            small = pos[torch.tensor(task.B if swap else task.A)]
            W_small, W_side = (task.W_B, task.W_A) if swap else (task.W_A, task.W_B)
            inside = torch.zeros(len(U), dtype=torch.bool).index_fill_(0, small, True)
            need = torch.where(inside, need, torch.maximum(need, (span.n * w / W_side).floor().long()))
            self.sides.append(_Side(small, W_side / W_small, W_side, task.slack))
        self.ratio = torch.tensor([s.ratio for s in self.sides], dtype=torch.float64)
        self.first = torch.stack([s.small[0] for s in self.sides])
        self.w_side = torch.tensor([s.w_side for s in self.sides], dtype=torch.float64)
        self.slack = torch.tensor([s.slack for s in self.sides], dtype=torch.float64)
        self.counts = need.to(torch.float64)
        rows = int(need.sum())
        check_memory(8 * rows * 4 * len(U), f"the Monte Carlo draws of {len(tasks)} crossings in the span")
        self.comp = torch.repeat_interleave(torch.arange(len(U)), need)  # position in U of each row
        zc = _span_normals(span, U, rows)
        # log w_l N(x; lam c_l, I) = lam (lam half_sq - dz) + log w_l up to a term common to a row
        # (float32: its rounding, ~1e-4 relative in a density ratio, is far below the Monte Carlo error)
        self.half_sq = (-0.5 * span.sq_dist[U][:, U][self.comp]).float()
        self.dz = (zc.gather(1, self.comp.unsqueeze(1)) - zc).float()
        del zc
        self.log_w, self.w = w.log().float(), w
        self._cache: tuple[float, torch.Tensor] | None = None

    @property
    def rows(self) -> int:
        return self.comp.numel()

    def log_densities(self, t: float) -> torch.Tensor:
        """(rows, |U|) log of ``w_l N(x; lam c_l, I)`` up to a term common to a row (it cancels)."""
        if self._cache is None or self._cache[0] != t:
            lam = self.span.scale(t)
            self._cache = t, torch.add(self.dz, self.half_sq, alpha=-lam).mul_(-lam).add_(self.log_w)
        return self._cache[1]

    def estimate(self, ks, t: float) -> np.ndarray:
        """(len(ks), 3) value, low and high of the TV of tasks ``ks`` at time ``t``: ``1 - E_Q min(1,
        p/q)`` on the draws of each task's large side ``Q`` (every row of ``U`` outside its small set),
        stratified by component."""
        log_dens = self.log_densities(t)
        lse_u = torch.logsumexp(log_dens, 1, keepdim=True).double()
        step = max(1, (1 << 22) // log_dens.shape[0])
        ks = list(ks)
        z = self.span.z_level
        return np.concatenate(
            [self._estimate(ks[i : i + step], log_dens, lse_u, z) for i in range(0, len(ks), step)]
        )

    def _estimate(self, ks, log_dens, lse_u, z) -> np.ndarray:
        n_comp = len(self.U)
        index = torch.tensor(ks)
        small = torch.zeros(n_comp, len(ks), dtype=torch.bool)
        # a small set of one component (most tasks): its column; larger ones: a log-sum-exp
        lse_small = log_dens.index_select(1, self.first[index]).double()
        small[self.first[index], torch.arange(len(ks))] = True
        for j, k in enumerate(ks):
            if self.sides[k].small.numel() > 1:
                small[self.sides[k].small, j] = True
                lse_small[:, j] = torch.logsumexp(log_dens[:, self.sides[k].small], 1)
        # pi: posterior of the small set within U; the side's density ratio p_small / p_side is
        # pi / (1 - pi) times W_side / W_small (pi = 1 exactly gives inf, clamped to 1 as it should)
        pi = torch.exp((lse_small - lse_u).clamp_max(0.0))
        h = (pi / (1.0 - pi)).mul_(self.ratio[index]).clamp_max_(1.0)
        c = self.counts.unsqueeze(1)
        v = torch.where(small, 0.0, self.w.unsqueeze(1) / self.w_side[index])  # strata weights (|U|, n)
        sums = torch.zeros(n_comp, len(ks), dtype=torch.float64).index_add_(0, self.comp, h)
        squares = torch.zeros(n_comp, len(ks), dtype=torch.float64).index_add_(0, self.comp, h.square_())
        overlap = (v * sums / c).sum(0)
        var = ((squares - sums * sums / c) / (c - 1)).clamp_min(0)
        se = (v * v * var / c).sum(0).sqrt()
        low, high = (overlap - z * se).numpy(), (overlap + z * se).numpy()
        # effective sample sizes of the terms of h and of 1 - h, from the per-stratum sums
        per_draw = v / c
        ess = torch.minimum(_ess(per_draw, sums, squares), _ess(per_draw, c - sums, c - 2 * sums + squares))
        few = (ess < MIN_ESS).numpy()
        if few.any():
            # n_eff = min over strata of c_l / v_l: conservative for any allocation
            n_eff = torch.where(v > 0, c / v.clamp_min(1e-300), torch.inf).amin(0).numpy()
            w_low, w_high = wilson_bounds(overlap.numpy(), n_eff, z)
            low, high = (
                np.where(few, np.minimum(low, w_low), low),
                np.where(few, np.maximum(high, w_high), high),
            )
        high = high + self.slack[index].numpy()  # the overlap of the components left out is in [0, slack]
        return np.stack([1.0 - overlap.numpy(), np.clip(1.0 - high, 0, 1), np.clip(1.0 - low, 0, 1)], 1)


def _span_normals(span, U: list[int], rows: int) -> torch.Tensor:
    """(rows, |U|) products ``z @ c_U^T`` of standard normal rows ``z`` in the span with the coordinates
    of ``U``: drawn in the span of ``c_U`` alone (``c_U^T = Q R``, ``z Q`` is standard normal), so a
    small group costs ``|U|`` normals per row, not the span's dimension."""
    coords = span.coords[U]
    if len(U) < coords.shape[1]:
        _, R = torch.linalg.qr(coords.T)
        g = torch.randn(rows, R.shape[0], generator=span.generator, dtype=torch.float64)
        return g @ R
    z = torch.randn(rows, coords.shape[1], generator=span.generator, dtype=torch.float64)
    return z @ coords.T


def _ess(per_draw, sums, squares) -> torch.Tensor:
    """``(sum x)^2 / sum x^2`` per column for terms ``x = per_draw * y`` given per-stratum sums of ``y``
    and ``y^2`` (0 where the squares underflow: the conservative interval is then used)."""
    total = (per_draw * sums).sum(0)
    total_sq = (per_draw * per_draw * squares.clamp_min(0)).sum(0)
    return torch.where(total_sq > 0, total * total / total_sq.clamp_min(1e-300), 0.0)
