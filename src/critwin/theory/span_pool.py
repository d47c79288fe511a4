"""Pooled Monte Carlo TVs of many pairs of sub-mixtures of one span mixture (docs/theory.md §3): the second
stage of :mod:`critwin.theory.span_crossings`.

A pool serves every task of one group ``U`` (the components that can matter for each of them,
:func:`critwin.theory.span_bounds.restrict`). It draws once, per component of ``U``, standard normal
rows in the span of ``U``'s means (``x = lam c_b + z``: the same normals serve every time). A task
estimates ``1 - TV = E_Q min(1, p/q)`` on the draws of the larger of its two sides ``Q`` (the small
side's density by a log-sum-exp over its components, ``Q``'s by complement in ``U``), stratified by
component with ``max(2, floor(n v_b))`` draws for relative weight ``v_b``: one (|U|, rows) matrix of
log-densities per time serves every task of the group (component-major, so a small side's densities are
contiguous rows). Where ``U``'s means span at most :data:`_LOW_RANK` dimensions (a dense cloud in few
dimensions, a small group) the draws are kept in *low rank*: the rows' normals and coordinates, and the
log-densities ``log w_l + lam x.c_l - lam^2 |c_l|^2 / 2`` (up to a term common to a row) are one float64
product per time, rounded to float32 only relative to the row's largest; memory is O(rows x rank), not
O(rows x |U|). Otherwise the products ``-|c_b - c_l|^2 / 2`` and ``z.(c_b - c_l)`` are *stored* in
float32. Either way the densities are worked through in pieces of about :data:`_DENSITY_ELEMENTS`
(component, row) pairs that stay in cache, the per-stratum sums adding up over the pieces. Groups of
similar size (within a factor of two in rows and in components, with the same form of draws) are stacked
into buckets padded to their largest member, not to a power of two, since the padding is computed at
every time: one evaluation serves many groups. The interval is the normal one with the stratified
variance; where few draws carry the estimate (effective sample size below
:data:`critwin.theory.divergence.MIN_ESS`) it is widened to contain the Wilson interval built on the
bound ``Var <= mu (1 - mu)`` of a [0, 1] variable with the smallest per-stratum sample size. The
overlap of the components left out (``slack``) is added to the interval's top.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from critwin._memory import check_memory
from critwin._stats import wilson_bounds
from critwin.theory.mc_tv import MIN_ESS
from critwin.theory.span_bounds import as_index

__all__ = ["TVInterval", "Pool", "Group", "group_tasks"]

# Relative densities (to a row's largest) below _NEGLIGIBLE_DENSITY count as 0: just above float32's
# smallest normal (1.2e-38), so only subnormals and the floor exp(_LOG_FLOOR) = 1.6e-38 are zeroed.
_LOG_FLOOR = -87.0
_NEGLIGIBLE_DENSITY = 2e-38
# Groups whose means span at most _LOW_RANK dimensions keep their draws in low rank (module notes).
_LOW_RANK = 4
# Densities of at most about this many (component, row) pairs at once.
_DENSITY_ELEMENTS = 1 << 18


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
        U = torch.unique(torch.cat([as_index(part.A), as_index(part.B)])).numpy()
        groups.setdefault(U.tobytes(), Group(U.tolist(), [])).keys.append(key)
    return list(groups.values())


class _Task(NamedTuple):
    """One task in the pools: its group, the positions in the group's ``U`` of its small side, the
    weight ratio ``W_side / W_small``, the large side's weight and the sure slack of its restriction."""

    group: int
    small: torch.Tensor
    ratio: float
    w_side: float
    slack: float


class _Draws(NamedTuple):
    """One group's draws: the position in ``U`` of each row's component, ``log w``, ``w`` and the row
    counts per component, and the rows in one of two forms (module notes). *Low rank* (``rank`` set):
    ``coords`` (|U|, rank), the centred coordinates of ``U``'s means in an orthonormal basis of their
    span, and per row the normals ``z`` and its component's coordinates ``own`` (rows, rank), float64.
    *Stored* (``rank`` None): the row's ``-|c_row - c_l|^2 / 2`` and ``z.(c_row - c_l)`` against every
    component ``l`` of ``U`` (float32, ``(|U|, rows)``: a component's terms over the rows contiguous)."""

    comp: torch.Tensor
    log_w: torch.Tensor
    w: torch.Tensor
    counts: torch.Tensor
    rank: int | None
    coords: torch.Tensor | None = None
    z: torch.Tensor | None = None
    own: torch.Tensor | None = None
    half_sq: torch.Tensor | None = None
    dz: torch.Tensor | None = None


class _Bucket(NamedTuple):
    """Groups of similar size (row and component counts within a factor of two, the same form of
    draws) stacked, padded to the members' largest ``size x rows`` (and rank): padded rows belong to a
    dummy stratum ``size``, padded components have weight 0, padded coordinates are 0."""

    groups: list[int]
    log_w: torch.Tensor  # (G, size, 1), -inf where padded
    comp: torch.Tensor  # (G, rows), ``size`` where padded
    w: torch.Tensor  # (G, size + 1) float64, 0 where padded
    counts: torch.Tensor  # (G, size + 1) float64, 1 where padded
    low_rank: bool
    coords: torch.Tensor | None = None  # low rank: (G, size, rank) float64
    z: torch.Tensor | None = None  # (G, rows, rank) float64
    own: torch.Tensor | None = None  # (G, rows, rank) float64
    half_sq: torch.Tensor | None = None  # stored: (G, size, rows) float32
    dz: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(groups, components, rows)."""
        return self.comp.shape[0], self.w.shape[1] - 1, self.comp.shape[1]


class Pool:
    """Draws for every task of many groups (:func:`group_tasks`): per group ``U``, rows of standard
    normals in the span, per component of ``U``, as many as the most demanding task asks of that
    component (module notes). Groups of similar size are stacked, so one evaluation at a time ``t``
    serves the tasks of many groups at once.

    Each task is a :class:`critwin.theory.span_bounds.Restricted` ``(A, B, W_A, W_B, slack)``: the
    components of its two sides that can matter (``A ∪ B = U``), the full sides' weights and the sure
    bound ``slack`` on the overlap of the components left out. The pool estimates ``int min(p_A', q_B')``
    of the kept parts (weights normalised by the full sides), which is within ``[0, slack]`` below
    ``1 - TV``. Tasks are numbered in the order of ``groups`` and, inside each, of its keys."""

    def __init__(self, span, groups: list[Group], parts):
        self.span = span
        self.tasks: list[_Task] = []
        draws = []
        for g, group in enumerate(groups):
            draws.append(self._group(span, g, group.U, [parts[k] for k in group.keys]))
        self.buckets: list[_Bucket] = []
        self.where: list[tuple[int, int]] = [(-1, -1)] * len(groups)  # group -> (bucket, slot)
        by_shape: dict[tuple[int, int, bool], list[int]] = {}
        for g, d in enumerate(draws):
            key = (_pow2(d.comp.numel()), _pow2(d.w.numel()), d.rank is not None)
            by_shape.setdefault(key, []).append(g)
        for members in by_shape.values():
            for slot, g in enumerate(members):
                self.where[g] = (len(self.buckets), slot)
            self.buckets.append(_stack(members, [draws[g] for g in members]))
        self.task_group = torch.tensor([t.group for t in self.tasks])
        self.group_bucket = torch.tensor([b for b, _ in self.where])
        self.group_slot = torch.tensor([slot for _, slot in self.where])
        self.ratio = torch.tensor([t.ratio for t in self.tasks], dtype=torch.float64)
        self.w_side = torch.tensor([t.w_side for t in self.tasks], dtype=torch.float64)
        self.slack = torch.tensor([t.slack for t in self.tasks], dtype=torch.float64)
        # the tasks' small sides concatenated: task i's positions in U are small_flat[start_i:][:size_i]
        self.small_size = torch.tensor([t.small.numel() for t in self.tasks], dtype=torch.long)
        self.small_start = torch.cumsum(self.small_size, 0) - self.small_size
        self.small_flat = torch.cat([torch.zeros(0, dtype=torch.long), *(t.small for t in self.tasks)])

    def _group(self, span, g: int, U: list[int], parts) -> _Draws:
        pos = torch.full((span.n_components,), -1, dtype=torch.long)
        pos[torch.tensor(U)] = torch.arange(len(U))
        w = span.weights[U]
        need = torch.full((len(U),), 2, dtype=torch.long)
        for task in parts:
            # the larger side carries the draws; the estimate needs the density of the other, small one
            swap = len(task.A) > len(task.B)
            small = pos[as_index(task.B if swap else task.A)]
            W_small, W_side = (task.W_B, task.W_A) if swap else (task.W_A, task.W_B)
            inside = torch.zeros(len(U), dtype=torch.bool).index_fill_(0, small, True)
            need = torch.where(inside, need, torch.maximum(need, (span.n * w / W_side).floor().long()))
            self.tasks.append(_Task(g, small, W_side / W_small, W_side, task.slack))
        rows = int(need.sum())
        rank = min(len(U), span.coords.shape[1])
        low_rank = rank <= _LOW_RANK
        per_row = 8 * 3 * rank if low_rank else 8 * rank + 4 * 2 * len(U)
        check_memory(per_row * rows, f"the Monte Carlo draws of {len(parts)} crossings in the span")
        comp = torch.repeat_interleave(torch.arange(len(U)), need)  # position in U of each row
        coords, z = _span_normals(span, U, rows)
        log_w = w.log().float()
        if low_rank:
            coords = coords - coords.mean(0)  # a shift common to all components (smaller products)
            return _Draws(comp, log_w, w, need.double(), rank, coords, z, coords[comp])
        # log w_l N(x; lam c_l, I) = lam (lam half_sq - dz) + log w_l up to a term common to a row
        # (float32: its rounding, ~1e-4 relative in a density ratio, is far below the Monte Carlo error)
        zc = z @ coords.T
        half_sq = (-0.5 * span.sq_dist[U][:, U][:, comp]).float()
        dz = (zc.gather(1, comp.unsqueeze(1)) - zc).T.float()
        return _Draws(comp, log_w, w, need.double(), None, half_sq=half_sq, dz=dz)

    @property
    def rows(self) -> int:
        return sum(int((b.comp < b.w.shape[1] - 1).sum()) for b in self.buckets)

    def estimate(self, ks, t: float) -> np.ndarray:
        """(len(ks), 3) value, low and high of the TV of tasks ``ks`` at time ``t``: ``1 - E_Q min(1,
        p/q)`` on the draws of each task's large side ``Q`` (every row of ``U`` outside its small set),
        stratified by component."""
        ks = torch.as_tensor(np.asarray(ks, dtype=np.int64))
        out = np.zeros((ks.numel(), 3))
        bucket_of = self.group_bucket[self.task_group[ks]]
        lam = self.span.scale(t)
        for b in torch.unique(bucket_of).tolist():
            chosen = torch.nonzero(bucket_of == b).flatten()
            out[chosen.numpy()] = self._bucket_estimate(self.buckets[b], ks[chosen], lam)
        return out

    def _bucket_estimate(self, bucket: _Bucket, ks: torch.Tensor, lam: float) -> np.ndarray:
        slot_of = self.group_slot[self.task_group[ks]]
        slots, task_slot = torch.unique(slot_of, return_inverse=True)
        _, size, rows = bucket.shape
        n = ks.numel()
        sums = torch.zeros(n, size + 1, dtype=torch.float64)
        squares = torch.zeros(n, size + 1, dtype=torch.float64)
        # densities of a few groups and rows at a time, so that the pieces stay in cache; the per-stratum
        # sums of h and h^2 add up over the pieces
        per_slot = max(1, _DENSITY_ELEMENTS // (size * rows))
        per_row = rows if per_slot > 1 else min(rows, max(1, _DENSITY_ELEMENTS // size))
        for first in range(0, slots.numel(), per_slot):
            chunk = slots[first : first + per_slot]
            mine = torch.nonzero((task_slot >= first) & (task_slot < first + per_slot)).flatten()
            whole = chunk.numel() == len(bucket.groups) and per_row == rows
            for start in range(0, rows, per_row):
                cols = slice(start, start + per_row)
                # (chunk, size, cols): w_l N_l(x) / the row's largest, 0 below _NEGLIGIBLE_DENSITY (exp is
                # 10-50x slower on inputs whose result is a float32 subnormal or 0: they are floored first)
                log_dens = _relative_log_density(bucket, chunk, lam, cols, whole)
                dens = torch.threshold_(log_dens.exp_(), _NEGLIGIBLE_DENSITY, 0.0)
                total = dens.sum(1).double()
                step = max(1, (1 << 22) // dens.shape[2])
                for i in range(0, mine.numel(), step):
                    j = mine[i : i + step]
                    part = self._tasks_sums(bucket, ks[j], task_slot[j] - first, chunk, dens, total, cols)
                    sums.index_add_(0, j, part[0])
                    squares.index_add_(0, j, part[1])
        slot_of = slots[task_slot]
        sizes = self.small_size[ks]
        v = bucket.w[slot_of] / self.w_side[ks].unsqueeze(1)  # strata weights (n, size + 1)
        v[torch.repeat_interleave(torch.arange(n), sizes), self._small_members(ks, sizes)] = 0.0
        return _stratified(v, bucket.counts[slot_of], sums, squares, self.slack[ks], self.span.z_level)

    def _small_members(self, ks: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """The positions in ``U`` of the small sides of tasks ``ks`` (of ``sizes``), concatenated."""
        offsets = torch.repeat_interleave(self.small_start[ks] - (torch.cumsum(sizes, 0) - sizes), sizes)
        return self.small_flat[torch.arange(offsets.numel()) + offsets]

    def _small_density(self, ks, sizes, task_slot, dens) -> torch.Tensor:
        """(n, rows) float64: per task, the sum of ``dens`` over its small side (tasks batched by the size
        of their small side)."""
        # rows of dens gathered from its (groups x components, rows) view: index_select of whole rows is
        # faster than indexing two dimensions element by element (same values)
        size, rows = dens.shape[1], dens.shape[2]
        flat = dens.reshape(-1, rows)
        first = task_slot * size
        small_dens = flat.index_select(0, first + self.small_flat[self.small_start[ks]]).double()
        for k in torch.unique(sizes[sizes > 1]).tolist():
            js = torch.nonzero(sizes == k).flatten()
            step = max(1, (1 << 22) // (rows * k))
            for i in range(0, js.numel(), step):
                j = js[i : i + step]
                members = self.small_flat[self.small_start[ks[j]].unsqueeze(1) + torch.arange(k)]
                picked = flat.index_select(0, (first[j].unsqueeze(1) + members).flatten())
                small_dens[j] = picked.view(j.numel(), k, rows).sum(1).double()
        return small_dens

    def _tasks_sums(
        self, bucket, ks, task_slot, slots, dens, total, cols
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-stratum sums of ``h = min(1, p_small / p_side)`` and of ``h^2`` (n, size + 1) over the rows
        ``cols`` of ``dens``, for tasks ``ks`` of the groups ``slots[task_slot]``."""
        size = bucket.w.shape[1] - 1
        n = ks.numel()
        small_dens = self._small_density(ks, self.small_size[ks], task_slot, dens)
        # the side's density ratio p_small / p_side: (w-weighted) small over the rest of U, times
        # W_side / W_small; where the rest vanishes the ratio is infinite (small >= total >= 1 there: a
        # row's largest term is 1), clamped to 1 as it should be. A positive rest of float32 sums is at
        # least 2^-149, so the quotient is the plain one.
        rest = total.index_select(0, task_slot).sub_(small_dens).clamp_min_(0.0)
        h = small_dens.div_(rest).mul_(self.ratio[ks].unsqueeze(1)).clamp_max_(1.0)
        comp = bucket.comp[:, cols].index_select(0, slots.index_select(0, task_slot))  # (n, cols)
        sums = torch.zeros(n, size + 1, dtype=torch.float64).scatter_add_(1, comp, h)
        squares = torch.zeros(n, size + 1, dtype=torch.float64).scatter_add_(1, comp, h.square_())
        return sums, squares


def _relative_log_density(bucket: _Bucket, slots: torch.Tensor, lam: float, cols: slice, whole: bool):
    """(slots, size, rows) float32 ``log w_l N(x_row; lam c_l, I)`` minus each row's largest, floored at
    ``_LOG_FLOOR``, for the groups ``slots`` of ``bucket`` and its rows ``cols`` (``whole``: every group
    and row, in order)."""
    if bucket.low_rank:
        # log w_l + lam x.c_l - lam^2 |c_l|^2 / 2 with x = lam c_row + z, up to a term common to a row:
        # one batched product of the rank, in float64, so that only the relative log-density is rounded
        coords = bucket.coords[slots]
        x = torch.add(bucket.z[slots, cols], bucket.own[slots, cols], alpha=lam)
        offset = bucket.log_w[slots].double() - (0.5 * lam * lam) * coords.square().sum(2, keepdim=True)
        log_dens = torch.baddbmm(offset, coords, x.transpose(1, 2), alpha=lam)
        peak = log_dens.amax(1, keepdim=True).clamp_min_(-1e30)
        # rounded to float32 once, after the floor (the same numbers as flooring in float32: rounding is
        # monotone and the floor a float32; a float64 -> float32 broadcast subtraction is 1.3x slower)
        return log_dens.sub_(peak).clamp_min_(_LOG_FLOOR).float()
    if whole:  # no copy of the bucket's draws
        log_dens = torch.add(bucket.dz, bucket.half_sq, alpha=-lam)
    else:
        # slot by slot into one buffer: indexing dz and half_sq by slots would copy both first
        log_dens = torch.empty(
            (slots.numel(), bucket.dz.shape[1], len(range(*cols.indices(bucket.dz.shape[2]))))
        )
        for j, s in enumerate(slots.tolist()):
            torch.add(bucket.dz[s, :, cols], bucket.half_sq[s, :, cols], alpha=-lam, out=log_dens[j])
    log_dens = torch.add(
        bucket.log_w[slots], log_dens, alpha=-lam, out=log_dens
    )  # log w - lam (dz - lam half_sq)
    peak = log_dens.amax(1, keepdim=True).clamp_min_(-1e30)
    return log_dens.sub_(peak).clamp_min_(_LOG_FLOOR)


def _stratified(v, c, sums, squares, slack, z) -> np.ndarray:
    """(n, 3) TV value, low, high from per-stratum sums of ``h`` and ``h^2`` (n, strata), strata weights
    ``v`` and counts ``c``: the overlap ``sum v mean_l(h)``, its stratified normal interval, widened to
    the Wilson one where the effective sample size is small, plus the sure ``slack`` at the top."""
    overlap = (v * sums / c).sum(1)
    var = ((squares - sums * sums / c) / (c - 1).clamp_min(1)).clamp_min(0)
    se = (v * v * var / c).sum(1).sqrt()
    low, high = (overlap - z * se).numpy(), (overlap + z * se).numpy()
    # effective sample sizes of the terms of h and of 1 - h, from the per-stratum sums
    per_draw = v / c
    ess = torch.minimum(_ess(per_draw, sums, squares), _ess(per_draw, c - sums, c - 2 * sums + squares))
    few = (ess < MIN_ESS).numpy()
    if few.any():
        # n_eff = min over strata of c_l / v_l: conservative for any allocation
        n_eff = torch.where(v > 0, c / v.clamp_min(1e-300), torch.inf).amin(1).numpy()
        w_low, w_high = wilson_bounds(overlap.numpy(), n_eff, z)
        low, high = np.where(few, np.minimum(low, w_low), low), np.where(few, np.maximum(high, w_high), high)
    high = high + slack.numpy()  # the overlap of the components left out is in [0, slack]
    return np.stack([1.0 - overlap.numpy(), np.clip(1.0 - high, 0, 1), np.clip(1.0 - low, 0, 1)], 1)


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _stack(members, draws: list[_Draws]) -> _Bucket:
    G = len(members)
    size = max(d.w.numel() for d in draws)
    rows = max(d.comp.numel() for d in draws)
    log_w = torch.full((G, size, 1), -math.inf)
    comp = torch.full((G, rows), size, dtype=torch.long)
    w = torch.zeros(G, size + 1, dtype=torch.float64)
    counts = torch.ones(G, size + 1, dtype=torch.float64)
    for j, d in enumerate(draws):
        u, r = d.w.numel(), d.comp.numel()
        log_w[j, :u, 0], comp[j, :r], w[j, :u], counts[j, :u] = d.log_w, d.comp, d.w, d.counts
    if draws[0].rank is not None:
        rank = max(d.rank for d in draws)
        coords = torch.zeros(G, size, rank, dtype=torch.float64)
        z, own = (
            torch.zeros(G, rows, rank, dtype=torch.float64),
            torch.zeros(G, rows, rank, dtype=torch.float64),
        )
        for j, d in enumerate(draws):
            (u, p), r = d.coords.shape, d.comp.numel()
            coords[j, :u, :p], z[j, :r, :p], own[j, :r, :p] = d.coords, d.z, d.own
        return _Bucket(members, log_w, comp, w, counts, True, coords=coords, z=z, own=own)
    half_sq = torch.zeros(G, size, rows)
    dz = torch.zeros(G, size, rows)
    for j, d in enumerate(draws):
        u, r = d.half_sq.shape
        half_sq[j, :u, :r], dz[j, :u, :r] = d.half_sq, d.dz
    return _Bucket(members, log_w, comp, w, counts, False, half_sq=half_sq, dz=dz)


def _span_normals(span, U: list[int], rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(coords, z)``: the coordinates (|U|, r) of ``U``'s means in an orthonormal basis of (a space
    containing) their span and ``rows`` standard normal rows ``z`` (rows, r) in that basis, so that
    ``z @ coords^T`` are the products of standard normals in the span with the means. A small group is
    drawn in the span of its own means (``c_U^T = Q R``, ``z Q`` is standard normal), so it costs
    ``|U|`` normals per row, not the span's dimension."""
    coords = span.coords[U]
    if len(U) < coords.shape[1]:
        _, R = torch.linalg.qr(coords.T)
        return R.T, torch.randn(rows, R.shape[0], generator=span.generator, dtype=torch.float64)
    return coords, torch.randn(rows, coords.shape[1], generator=span.generator, dtype=torch.float64)


def _ess(per_draw, sums, squares) -> torch.Tensor:
    """``(sum x)^2 / sum x^2`` per row for terms ``x = per_draw * y`` given per-stratum sums of ``y``
    and ``y^2`` (0 where the squares underflow: the conservative interval is then used)."""
    total = (per_draw * sums).sum(1)
    total_sq = (per_draw * per_draw * squares.clamp_min(0)).sum(1)
    return torch.where(total_sq > 0, total * total / total_sq.clamp_min(1e-300), 0.0)
