"""Sure bounds on many TV curves of one span mixture at once (docs/theory.md §3, §7): the first stage of
:mod:`critwin.theory.span_crossings`.

A *task* (:class:`CrossingTask`) is the time where ``factor * TV(p_t^A, p_t^B)`` crosses ``level``. Any
curve between the sure lower and upper bounds of :func:`critwin.theory.span.tv_bounds` crosses between
the crossings of the two bounds, so :func:`bound_brackets` returns a sure bracket per task
(:class:`SureBracket`). The pairwise closed forms start it: the upper bound ``1 - sum w_a v_b
erfc(lam D_ab / (2 sqrt 2))`` is a weighted mean of pairwise TVs, so it crosses between the pairwise
crossing times at the task's smallest and largest distance, and the lower bound (never above the upper
one) crosses before it. Both are then bisected, every task at once, one batch of at most
``_PAIR_BATCH`` pairs at a time.

**Bins.** A task with at least ``_BIN_ABOVE`` pairs also has its pairs in bins: ``_D_BINS`` of its
distances (equal widths) by ``_R_BINS`` of the weight ratios ``x = w_a / v_b`` (one where the ratio
is the same for every pair, as with equal weights), each bin with the smallest and largest distance
and ratio of its own pairs and their sums of ``w_a v_b`` and ``v_b``. The terms of the upper bound,
``w v erfc(lam D / (2 sqrt 2))``, fall with ``D``; the pair overlaps of the lower one, ``v int min(x
p_a, p_b)``, fall with ``D`` and grow with ``x``. So each bin's terms sum to between its weight times
the term at its largest distance (and smallest ratio) and at its smallest distance (largest ratio):
a sure interval on each bound, from a few hundred terms instead of ``|A| |B|``. Each predicate of the
bisection (``factor * bound < level``, or ``<=``) is answered from that interval where it lies wholly
on one side of the level, more than ``_MARGIN`` (far above the rounding of either sum) away, and from
the task's pairs only where it does not. The predicates are then those of the bisection on every pair,
so the brackets are the same (tests/test_theory_span_bins.py); only the last few steps near each
crossing, where the bins straddle the level, still sum the pairs.

:func:`restrict` finds the components of each task that can matter up to a time: those whose summed
pair overlaps are smallest are left out while the total stays below ``NEGLIGIBLE``, a sure slack on the
overlap (``1 - TV``) that the Monte Carlo stage adds to its interval.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from critwin.theory.span import pair_crossing_times, tv_bound, weighted_overlap
from critwin.theory.windows import T_MAX

__all__ = [
    "CrossingTask",
    "SureBracket",
    "Restricted",
    "bound_brackets",
    "sure_and_restricted",
    "restrict",
    "tv_bounds_at",
    "nested_tv_bounds",
    "complement_bounds",
    "complement",
    "as_index",
    "NEGLIGIBLE",
]

_PAIR_BATCH = 1 << 21  # pairs of components per batch (a few float64 arrays of 16 MiB)
_RESOLUTION_SHARE = 16.0  # bound brackets stop at 1/16 of the gap between the two bounds' crossings
_BIN_ABOVE = 1024  # tasks with at least this many pairs are answered from their bins where these decide
_D_BINS = 128  # bins of a task's distances (equal widths from its smallest to its largest)
_R_BINS = 4  # bins of the weight ratios w_a / v_b (one where every task has a single ratio)
_MARGIN = 1e-9  # the bins decide a predicate only this far from the level (rounding: below 1e-12)
NEGLIGIBLE = 1e-9
"""Largest overlap (summed) that the components :func:`restrict` leaves out of a task may carry."""


class CrossingTask(NamedTuple):
    """``factor * TV(p_t^A, p_t^B)`` (non-increasing in ``t``) crossing ``level``: a separation time
    ``sup{t : . >= level}`` (-inf if not at t = 0) when ``separation``, else a merge time
    ``inf{t : . <= level}`` (0 if at t = 0). ``A``, ``B``: disjoint non-empty component lists."""

    A: list[int]
    B: list[int]
    level: float
    factor: float
    separation: bool


class SureBracket(NamedTuple):
    """Where the sure bounds put a task's crossing: in ``[low, high]`` (``high`` may be inf).

    ``decided``: the bounds alone give the answer, ``low == high`` (0 or -inf: at t = 0 already).
    ``from_zero``: the lower bound already crosses at t = 0, so the crossing may be at t = 0 itself
    (``low`` is 0 then)."""

    low: float
    high: float
    from_zero: bool = False
    decided: bool = False


class Restricted(NamedTuple):
    """The components of a task's two sides that can matter (:func:`restrict`), the full sides' weights
    ``W_A``, ``W_B`` and the sure slack on the overlap of those left out (sides: 1-d long tensors)."""

    A: torch.Tensor
    B: torch.Tensor
    W_A: float
    W_B: float
    slack: float


class _Pairs(NamedTuple):
    """Flattened pairs ``(a, b)`` of a batch of tasks: the task (``owner``), ``D_ab``, the normalised
    weights ``w_a`` (in A) and ``v_b`` (in B), and the slots of ``a`` and ``b`` (their rows among the
    batch's concatenated sides)."""

    owner: torch.Tensor
    dist: torch.Tensor
    w: torch.Tensor
    v: torch.Tensor
    slot_a: torch.Tensor
    slot_b: torch.Tensor

    def select(self, keep: torch.Tensor) -> _Pairs:
        return _Pairs(*(x[keep] for x in self))


def as_index(components) -> torch.Tensor:
    """A side of a task as a 1-d long tensor (a list, an array or a tensor)."""
    return torch.as_tensor(components, dtype=torch.long).reshape(-1)


class _Sides(NamedTuple):
    """The two sides of a batch of tasks, concatenated, with their sizes, total weights and the task of
    each slot."""

    a: torch.Tensor
    b: torch.Tensor
    n_a: torch.Tensor
    n_b: torch.Tensor
    W_a: torch.Tensor
    W_b: torch.Tensor
    owner_a: torch.Tensor
    owner_b: torch.Tensor


def _sides(span, tasks) -> _Sides:
    A = [as_index(t.A) for t in tasks]
    B = [as_index(t.B) for t in tasks]
    a, b = torch.cat(A), torch.cat(B)
    n_a = torch.tensor([x.numel() for x in A])
    n_b = torch.tensor([x.numel() for x in B])
    owner_a = torch.repeat_interleave(torch.arange(len(tasks)), n_a)
    owner_b = torch.repeat_interleave(torch.arange(len(tasks)), n_b)
    W_a = torch.zeros(len(tasks), dtype=torch.float64).index_add_(0, owner_a, span.weights[a])
    W_b = torch.zeros(len(tasks), dtype=torch.float64).index_add_(0, owner_b, span.weights[b])
    return _Sides(a, b, n_a, n_b, W_a, W_b, owner_a, owner_b)


def _pairs(span, sides: _Sides) -> _Pairs:
    """Every pair ``(a, b)`` of every task (row-major per task), built without a Python loop.

    Each slot of a side ``A`` is repeated ``|B|`` times, and the ``B`` slots run along each repeat, so no
    integer division is needed; weights are normalised per slot before being spread over the pairs, and
    ``D_ab`` is gathered from the flat distance matrix (2x faster than the division and 2-D indexing)."""
    n_b_of_a = sides.n_b.index_select(0, sides.owner_a)  # per slot of A: its task's |B|
    total = int(n_b_of_a.sum())
    slot_a = torch.repeat_interleave(torch.arange(n_b_of_a.numel()), n_b_of_a, output_size=total)
    first_pair = torch.cumsum(n_b_of_a, 0) - n_b_of_a
    first_b = torch.cumsum(sides.n_b, 0) - sides.n_b
    shift = torch.repeat_interleave(first_pair - first_b[sides.owner_a], n_b_of_a, output_size=total)
    slot_b = torch.arange(total).sub_(shift)
    owner = sides.owner_a.index_select(0, slot_a)
    # index_select rather than x[index]: 3-4x faster on millions of 1-d gathers (the same values)
    w = (span.weights[sides.a] / sides.W_a[sides.owner_a]).index_select(0, slot_a)
    v = (span.weights[sides.b] / sides.W_b[sides.owner_b]).index_select(0, slot_b)
    flat = (sides.a * span.dist.shape[1]).index_select(0, slot_a).add_(sides.b.index_select(0, slot_b))
    return _Pairs(owner, span.dist.reshape(-1).index_select(0, flat), w, v, slot_a, slot_b)


def _batches(tasks):
    """Consecutive index ranges of ``tasks`` with at most ``_PAIR_BATCH`` pairs (or one task)."""
    start, size = 0, 0
    for k, task in enumerate(tasks):
        size += len(task.A) * len(task.B)
        if size >= _PAIR_BATCH or k == len(tasks) - 1:
            yield start, k + 1
            start, size = k + 1, 0


def tv_bound_values(span, pairs: _Pairs, times: torch.Tensor, n_tasks: int, upper: bool) -> torch.Tensor:
    """The sure lower (``upper=False``) or upper bound on the TV of every task at its time (n_tasks,)
    (:func:`critwin.theory.span.tv_bound`)."""
    delta = span.scale(times).index_select(0, pairs.owner) * pairs.dist
    return tv_bound(delta, pairs.w, pairs.v, (pairs.owner, n_tasks), upper=upper)


def bound_brackets(span, tasks: list[CrossingTask], tol: float, fine: bool = False) -> list[SureBracket]:
    """A :class:`SureBracket` per task, each end bisected to ``max(tol, gap / 16)`` (``gap``: between
    the two bounds' crossings, which Monte Carlo bisects anyway) or, with ``fine``, to ``tol``."""
    return [sure for sure, _ in sure_and_restricted(span, tasks, tol, fine, restricted=False)]


def sure_and_restricted(span, tasks: list[CrossingTask], tol: float, fine: bool = False, restricted=True):
    """``(SureBracket, Restricted or None)`` per task: the sure bracket (:func:`bound_brackets`) and,
    for the tasks it leaves undecided (when ``restricted``), the components that can matter up to its
    top (:func:`restrict`), from the same pairs."""
    out: list = []
    for start, stop in _batches(tasks):
        batch = tasks[start:stop]
        sides = _sides(span, batch)
        pairs = _pairs(span, sides)
        brackets = _bound_batch(span, batch, pairs, tol, fine)
        parts = [None] * len(batch)
        if restricted:
            open_ = [k for k, b in enumerate(brackets) if not b.decided]
            times = [brackets[k].high if k in set(open_) else -1.0 for k in range(len(batch))]
            parts = _restrict_batch(span, batch, sides, pairs, times)
            parts = [parts[k] if not brackets[k].decided else None for k in range(len(batch))]
        out += list(zip(brackets, parts, strict=True))
    return out


def _bound_batch(span, tasks, pairs: _Pairs, tol, fine) -> list[SureBracket]:
    n = len(tasks)
    level = torch.tensor([t.level for t in tasks], dtype=torch.float64)
    factor = torch.tensor([t.factor for t in tasks], dtype=torch.float64)
    strict = torch.tensor([bool(t.separation) for t in tasks])
    counts = torch.tensor([len(t.A) * len(t.B) for t in tasks])
    starts = torch.cumsum(counts, 0) - counts
    bins = _bins(pairs, counts)

    def holds(times: np.ndarray, upper: bool, active: np.ndarray | None = None) -> np.ndarray:
        # only the active tasks are answered (the others' answers are not used); the bins answer
        # where they decide, the task's pairs elsewhere
        times = torch.as_tensor(times, dtype=torch.float64)
        exact = np.ones(n, dtype=bool) if active is None else active.copy()
        answer = np.zeros(n, dtype=bool)
        if bins is not None:
            low, high = bins.values(span, times, upper, exact, factor)
            sure, never = high < level - _MARGIN, low > level + _MARGIN
            answer |= sure.numpy()
            exact &= ~(sure | never).numpy()
        if exact.any():
            sub = _take(pairs, starts, counts, torch.from_numpy(exact))
            f = factor * tv_bound_values(span, sub, times, n, upper)
            answer = np.where(exact, torch.where(strict, f < level, f <= level).numpy(), answer)
        return answer

    zero = np.zeros(n)
    decided, from_zero = holds(zero, True), holds(zero, False)
    # the upper bound is a weighted mean of pairwise TVs: it crosses between the pairwise crossings at
    # the task's smallest and largest distance (pushed outwards by a hair against rounding)
    x = (level / factor).clamp(max=1.0)
    d_min, d_max = _extremes(pairs.dist, pairs.owner, n)  # every task has a pair
    lo_u = (pair_crossing_times(span, d_min.square(), x) * (1 - 1e-9) - 1e-12).clamp_min(0).numpy()
    hi_u = (pair_crossing_times(span, d_max.square(), x) * (1 + 1e-9) + 1e-12).numpy()
    lo_u, hi_u = _grow_until(
        lambda t, active: holds(t, True, active), lo_u, np.maximum(hi_u, lo_u + tol), ~decided
    )
    lo_l, hi_l = np.zeros(n), hi_u.copy()
    active_u, active_l = ~decided & np.isfinite(hi_u), ~decided & ~from_zero & np.isfinite(hi_u)

    def resolution():
        # tol / 2 per side: where the bounds meet, the final bracket [lo_l, hi_u] is then within tol
        gap = np.maximum(lo_u - hi_l, 0.0)
        return np.full(n, tol / 2) if fine else np.maximum(tol / 2, gap / _RESOLUTION_SHARE)

    while True:
        res = resolution()
        active_u &= hi_u - lo_u > res
        active_l &= hi_l - lo_l > res
        if not (active_u.any() or active_l.any()):
            break
        mid_u, mid_l = 0.5 * (lo_u + hi_u), 0.5 * (lo_l + hi_l)
        ok_u, ok_l = holds(mid_u, True, active_u), holds(mid_l, False, active_l)
        lo_u, hi_u = np.where(active_u & ~ok_u, mid_u, lo_u), np.where(active_u & ok_u, mid_u, hi_u)
        lo_l, hi_l = np.where(active_l & ~ok_l, mid_l, lo_l), np.where(active_l & ok_l, mid_l, hi_l)
    return [_sure(tasks[k], bool(decided[k]), bool(from_zero[k]), lo_l[k], hi_u[k]) for k in range(n)]


class _Bins(NamedTuple):
    """The pairs of the large tasks of a batch in bins (module notes): per task (``row``: its row, -1
    for a task answered by its pairs alone) and bin, the smallest and largest distance and weight ratio
    ``x = w_a / v_b`` of its pairs and their sums of ``w_a v_b`` and ``v_b`` ((rows, bins) tensors)."""

    row: torch.Tensor
    d_lo: torch.Tensor
    d_hi: torch.Tensor
    x_lo: torch.Tensor
    x_hi: torch.Tensor
    wv: torch.Tensor
    v: torch.Tensor

    def values(self, span, times, upper: bool, active: np.ndarray, factor: torch.Tensor):
        """Sure ``(low, high)`` on ``factor * bound`` (the lower or upper TV bound) of every active task
        with bins at its time (-inf, inf for the others): each bin's pairs at its smallest and largest
        distance and ratio (the terms fall with the distance, the overlaps grow with the ratio)."""
        tasks = torch.nonzero(torch.from_numpy(active) & (self.row >= 0)).flatten()
        low = torch.full((self.row.numel(),), -math.inf, dtype=torch.float64)
        high = torch.full((self.row.numel(),), math.inf, dtype=torch.float64)
        if not tasks.numel():
            return low, high
        rows = self.row[tasks]
        lam = span.scale(times[tasks]).unsqueeze(1)
        if upper:
            c = 1.0 / (2 * math.sqrt(2.0))
            most = (self.wv[rows] * torch.erfc(lam * self.d_lo[rows] * c)).sum(1)
            least = (self.wv[rows] * torch.erfc(lam * self.d_hi[rows] * c)).sum(1)
        else:
            # int min(w p, v q) = v int min((w / v) p, q): grows with w / v, falls with the distance
            x_lo, x_hi, one = self.x_lo[rows], self.x_hi[rows], torch.ones(1, dtype=torch.float64)
            most = (self.v[rows] * weighted_overlap(lam * self.d_lo[rows], x_hi, one)).sum(1)
            least = (self.v[rows] * weighted_overlap(lam * self.d_hi[rows], x_lo, one)).sum(1)
        low[tasks] = factor[tasks] * (1.0 - most).clamp(0.0, 1.0)
        high[tasks] = factor[tasks] * (1.0 - least).clamp(0.0, 1.0)
        return low, high


def _bins(pairs: _Pairs, counts: torch.Tensor) -> _Bins | None:
    """:class:`_Bins` of the tasks of a batch with at least ``_BIN_ABOVE`` pairs (None if none)."""
    binned = counts >= _BIN_ABOVE
    while True:
        m = int(binned.sum())
        if not m:
            return None
        keep = binned[pairs.owner]
        owner, dist, w, v = (x if bool(keep.all()) else x[keep] for x in pairs[:4])
        # a side of weight 0, or a pair of two weights 0 (0/0 in the overlap): answered by its pairs
        bad = w.isnan() | v.isnan() | ((w == 0) & (v == 0))
        if not bool(bad.any()):
            break
        binned[owner[bad]] = False
    positive = (w > 0) & (v > 0)  # a pair with a weight 0 adds 0 to both sums: left out of the bins
    if not bool(positive.all()):
        owner, dist, w, v = (x[positive] for x in (owner, dist, w, v))
    ratio = w / v
    row = torch.where(binned, torch.cumsum(binned, 0) - 1, -1)
    owner = row[owner]
    d_pos = _positions(dist, owner, m, _D_BINS)
    x_min, x_max = _extremes(ratio, owner, m)
    r_bins = 1 if bool((x_min == x_max).all()) else _R_BINS
    where = owner * (_D_BINS * r_bins) + d_pos * r_bins
    if r_bins > 1:
        where += _positions(ratio.log(), owner, m, r_bins)
    size = m * _D_BINS * r_bins
    d_lo, d_hi = _extremes(dist, where, size)
    if r_bins > 1:
        x_lo, x_hi = _extremes(ratio, where, size)
    else:
        x_lo = x_hi = x_min.repeat_interleave(_D_BINS)
    empty = d_lo > d_hi  # no pair: weight 0 at any finite distance and ratio
    d_lo, d_hi = d_lo.masked_fill(empty, 0.0), d_hi.masked_fill(empty, 0.0)
    x_lo, x_hi = x_lo.masked_fill(empty, 1.0), x_hi.masked_fill(empty, 1.0)
    wv = torch.zeros(size, dtype=torch.float64).index_add_(0, where, w * v)
    v_sum = torch.zeros(size, dtype=torch.float64).index_add_(0, where, v)
    shape = (m, -1)
    return _Bins(row, *(x.reshape(shape) for x in (d_lo, d_hi, x_lo, x_hi, wv, v_sum)))


def _extremes(values: torch.Tensor, group: torch.Tensor, size: int):
    """Per group (of ``size``), the smallest and largest of ``values`` (inf and -inf where none)."""
    low = torch.full((size,), math.inf, dtype=torch.float64).scatter_reduce_(0, group, values, "amin")
    high = torch.full((size,), -math.inf, dtype=torch.float64).scatter_reduce_(0, group, values, "amax")
    return low, high


def _positions(values: torch.Tensor, group: torch.Tensor, m: int, count: int) -> torch.Tensor:
    """Each value's bin among ``count`` of equal widths from its group's smallest to largest value
    (the bins' ends come from the values in them, so rounding here only moves a value to a neighbour)."""
    low, high = _extremes(values, group, m)
    spread = high - low
    scale = torch.where(spread > 0, count / spread.clamp_min(1e-300), 0.0)
    low, scale = low.index_select(0, group), scale.index_select(0, group)
    return ((values - low) * scale).floor_().clamp_(0, count - 1).long()


def _take(pairs: _Pairs, starts: torch.Tensor, counts: torch.Tensor, tasks: torch.Tensor) -> _Pairs:
    """The pairs (owner, distance, weights) of the flagged ``tasks`` of a batch, in the batch's order
    (each task's pairs are consecutive, from ``starts``)."""
    if bool(tasks.all()):
        return pairs
    lengths = counts[tasks]
    offset = starts[tasks] - (torch.cumsum(lengths, 0) - lengths)
    index = torch.arange(int(lengths.sum())) + torch.repeat_interleave(offset, lengths)
    owner, dist, w, v = (x.index_select(0, index) for x in pairs[:4])
    return _Pairs(owner, dist, w, v, None, None)


def _grow_until(holds, lo: np.ndarray, hi: np.ndarray, active: np.ndarray):
    """Move ``hi`` up (doubling) where ``holds(hi, active)`` is False (rounding of the closed-form start; past
    ``T_MAX``: inf, never); ``lo`` follows to the last time where it did not hold."""
    ok = ~active | holds(hi, active)
    while not ok.all():
        lo = np.where(ok, lo, hi)
        hi = np.where(ok, hi, 2.0 * hi + 1.0)
        never = ~ok & (hi > T_MAX)
        hi = np.where(never, np.inf, hi)
        ok |= never
        ok |= holds(np.where(ok, 0.0, hi), ~ok)
    return lo, hi


def _sure(task: CrossingTask, decided: bool, from_zero: bool, low: float, high: float) -> SureBracket:
    at_zero = -math.inf if task.separation else 0.0
    if decided:
        return SureBracket(at_zero, at_zero, decided=True)
    if not math.isfinite(high):
        return SureBracket(math.inf, math.inf, decided=True)
    return SureBracket(0.0 if from_zero else float(low), float(high), from_zero=from_zero)


# ------------------------------------------------------------------------------------------ restriction
def restrict(span, tasks: list[CrossingTask], times) -> list[Restricted]:
    """For each task, the components that can matter for ``1 - TV(p_t^A, p_t^B)`` at any time up to
    its ``times[k]`` (inf: all of them).

    ``min(x_a + x_f, y_b + y_g) <= min(x_a, y_b) + sum_f min(x_f, y) + sum_g min(x, y_g)`` and ``int
    min(w_f p_f, q) <= sum_b int min(w_f p_f, v_b p_b)`` (the pair overlaps of the sure bound), so
    ``int min(p_A', q_B') <= 1 - TV <= int min(p_A', q_B') + slack``, where ``slack`` sums the pair
    overlaps of the components left out: on each side those with the smallest sums, while the total of
    both sides stays below ``NEGLIGIBLE`` (never all of a side). Pair overlaps grow with ``t``, so the
    bound holds at every earlier time too."""
    out: list[Restricted] = []
    times = list(times)
    for start, stop in _batches(tasks):
        sides = _sides(span, tasks[start:stop])
        out += _restrict_batch(span, tasks[start:stop], sides, _pairs(span, sides), times[start:stop])
    return out


def _restrict_batch(span, tasks, sides: _Sides, pairs: _Pairs, times) -> list[Restricted]:
    t = torch.tensor([min(max(float(x), 0.0), T_MAX) for x in times], dtype=torch.float64)
    finite = torch.tensor([math.isfinite(float(x)) for x in times])
    terms = weighted_overlap(span.scale(t).index_select(0, pairs.owner) * pairs.dist, pairs.w, pairs.v)
    small = (sides.n_a + sides.n_b <= 2) | ~finite
    budget = torch.where(small, 0.0, NEGLIGIBLE).to(torch.float64)
    mass_a = torch.zeros(sides.a.numel(), dtype=torch.float64).index_add_(0, pairs.slot_a, terms)
    mass_b = torch.zeros(sides.b.numel(), dtype=torch.float64).index_add_(0, pairs.slot_b, terms)
    drop_a, slack_a = _drop_smallest(mass_a, sides.n_a, budget)
    drop_b, slack_b = _drop_smallest(mass_b, sides.n_b, budget - slack_a)
    keep_a = sides.a[~drop_a].split(sides.n_a.sub(_count(drop_a, sides.n_a)).tolist())
    keep_b = sides.b[~drop_b].split(sides.n_b.sub(_count(drop_b, sides.n_b)).tolist())
    slack = (slack_a + slack_b).tolist()
    W_a, W_b = sides.W_a.tolist(), sides.W_b.tolist()
    return [Restricted(keep_a[k], keep_b[k], W_a[k], W_b[k], slack[k]) for k in range(len(tasks))]


def _count(flags: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Per group of ``sizes`` consecutive entries, how many ``flags`` are set."""
    owner = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    return torch.zeros(sizes.numel(), dtype=torch.long).index_add_(0, owner, flags.long())


def _drop_smallest(mass: torch.Tensor, sizes: torch.Tensor, budget: torch.Tensor):
    """Per group of ``sizes`` consecutive entries: which to leave out (the smallest, while their sum
    stays within the group's ``budget``, never all) and the sum left out."""
    n = sizes.numel()
    owner = torch.repeat_interleave(torch.arange(n), sizes)
    drop = torch.zeros(mass.numel(), dtype=torch.bool)
    slack = torch.zeros(n, dtype=torch.float64)
    # only entries within the budget can be left out: they come first in their group's order by mass,
    # so the rest are never sorted (and the sums run over these small entries alone)
    candidates = torch.nonzero(mass <= budget[owner]).flatten()
    if not candidates.numel():
        return drop, slack
    group = owner[candidates]
    order = torch.argsort(mass[candidates], stable=True)
    order = order[torch.argsort(group[order], stable=True)]  # by group, then by mass
    candidates, group = candidates[order], group[order]
    count = torch.zeros(n, dtype=torch.long).index_add_(0, group, torch.ones_like(group))
    start = torch.cumsum(count, 0) - count
    total = torch.cumsum(mass[candidates], 0)
    before = torch.where(
        start > 0, total[(start - 1).clamp_min(0)], torch.zeros_like(start, dtype=total.dtype)
    )
    cumulative = total - before[group]
    rank = torch.arange(candidates.numel()) - start[group]
    dropped = (cumulative <= budget[group]) & (rank < sizes[group] - 1)
    slack.scatter_reduce_(0, group, torch.where(dropped, cumulative, 0.0), "amax")
    drop[candidates] = dropped
    return drop, slack


def tv_bounds_at(span, pairs_of_sets, times) -> list[tuple[float, float]]:
    """Sure ``(lower, upper)`` bounds on ``TV(p_t^A, p_t^B)`` for each ``(A, B)`` of ``pairs_of_sets``
    at its time in ``times`` (:func:`critwin.theory.span.tv_bounds`, batched)."""
    tasks = [CrossingTask(A, B, 0.0, 1.0, False) for A, B in pairs_of_sets]
    times = torch.tensor([float(t) for t in times], dtype=torch.float64)
    out: list[tuple[float, float]] = []
    for start, stop in _batches(tasks):
        pairs = _pairs(span, _sides(span, tasks[start:stop]))
        n = stop - start
        low = tv_bound_values(span, pairs, times[start:stop], n, upper=False)
        high = tv_bound_values(span, pairs, times[start:stop], n, upper=True)
        out += list(zip(low.tolist(), high.tolist(), strict=True))
    return out


# ------------------------------------------------------------------------------------ nested complements
_NESTED_ABOVE = 1 << 24  # pairs (about 6 s of pairwise sums) above which complement_bounds nests
_BLOCK_ELEMENTS = 1 << 22  # (component, component) distances gathered at once by nested_tv_bounds
_SUM_MARGIN = 1e-12  # relative, on float64 sums of at most K positive terms (rounding: below K * 2^-53)


def nested_tv_bounds(span, nodes, parents, times) -> list[tuple[float, float]]:
    """Sure ``(lower, upper)`` bounds on ``TV(p_t^A, p_t^R)``, ``R`` the complement of ``A``, for every
    node ``A`` of a tree at its time, in ``O(K^2)`` for the whole tree (:func:`tv_bounds_at` costs
    ``sum |A| |R|``, about ``K^2`` times the depth).

    ``nodes``: component lists, a parent before its children; ``parents[k]``: the index of node ``k``'s
    parent in ``nodes``, or -1 for a child of the root (all components). Top-down, each component
    ``a`` of ``A`` carries the smallest distance ``m_a`` and the weighted sum ``r_a = sum_b w_b D_ab``
    over the ``b`` outside ``A`` (the parent's, updated from the block between ``A`` and its siblings,
    so every pair is gathered once, at its lowest common ancestor). With ``v_b = w_b / W_R``:

    - upper: ``sum_b v_b TV_ab <= erf(lam sum_b v_b D_ab / (2 sqrt 2))`` (Jensen: ``erf`` is concave on
      ``[0, inf)``), so the pairwise bound of :func:`critwin.theory.span.tv_bound` is at most
      ``1 - sum_a w_a erfc(lam r_a / (2 sqrt 2 W_R))``;
    - lower: a pair overlap ``int min(w p_a, v p_b)`` decreases in the distance and is concave in ``v``,
      so ``sum_b overlap(lam D_ab, w_a, v_b) <= |R| overlap(lam m_a, w_a, 1 / |R|)``; the TV is at least
      one minus the sum over ``a``.

    Both are looser than the pairwise sums (the same where the distances from each ``a`` to ``R`` are
    equal), never tighter, so they hold wherever those do.
    """
    K = span.n_components
    if len(parents) != len(nodes) or len(times) != len(nodes):
        raise ValueError("parents and times must have one entry per node")
    dist, weights = span.dist, span.weights
    nearest = torch.full((K,), math.inf, dtype=torch.float64)
    outside = torch.zeros(K, dtype=torch.float64)
    rest_weight, rest_count = [], []
    snapshot_m, snapshot_r, owners = [], [], []
    inside = torch.zeros(K, dtype=torch.bool)
    deepest = torch.full((K,), -1)  # the last node processed that holds each component
    members = [as_index(node) for node in nodes]
    for k, (A, p) in enumerate(zip(members, parents, strict=True)):
        if not 0 <= p < k and p != -1:
            raise ValueError(f"parents[{k}] must be -1 or the index of an earlier node, got {p}")
        # within its parent and disjoint from its siblings (and their descendants) processed before it
        if not (A.numel() and bool((deepest[A] == p).all())):
            raise ValueError(
                f"nodes[{k}] must be a non-empty subset of its parent's components, apart from its siblings"
            )
        deepest[A] = k
        parent = torch.arange(K) if p == -1 else members[p]
        inside[A] = True
        siblings = parent[~inside[parent]]
        inside[A] = False
        _gather_outside(dist, weights, A, siblings, nearest, outside)
        w_s = float(weights[siblings].sum())
        rest_weight.append(w_s + (0.0 if p == -1 else rest_weight[p]))
        rest_count.append(siblings.numel() + (0 if p == -1 else rest_count[p]))
        snapshot_m.append(nearest[A].clone())
        snapshot_r.append(outside[A].clone())
        owners.append(torch.full((A.numel(),), k))
    if not nodes:
        return []
    if min(rest_count) == 0:
        raise ValueError("every node must leave components outside it")
    return _nested_values(span, members, owners, snapshot_m, snapshot_r, rest_weight, rest_count, times)


def _gather_outside(dist, weights, A, siblings, nearest, outside) -> None:
    """``nearest[a] = min(nearest[a], min_s D_as)`` and ``outside[a] += sum_s w_s D_as`` for ``a`` in
    ``A``, ``s`` in ``siblings``, in row chunks of ``_BLOCK_ELEMENTS``."""
    if not siblings.numel():
        return
    step = max(1, _BLOCK_ELEMENTS // siblings.numel())
    w_s = weights[siblings]
    for start in range(0, A.numel(), step):
        rows = A[start : start + step]
        block = dist[rows.unsqueeze(1), siblings]  # only the block (a row gather would copy K per row)
        nearest[rows] = torch.minimum(nearest[rows], block.amin(1))
        outside[rows] += block @ w_s


def _nested_values(span, members, owners, snapshot_m, snapshot_r, rest_weight, rest_count, times):
    n = len(members)
    owner = torch.cat(owners)
    a = torch.cat(members)
    W_A = torch.zeros(n, dtype=torch.float64).index_add_(0, owner, span.weights[a])
    W_R = torch.tensor(rest_weight, dtype=torch.float64)
    count = torch.tensor(rest_count, dtype=torch.float64)
    lam = span.scale(torch.tensor([float(t) for t in times], dtype=torch.float64))[owner]
    w = span.weights[a] / W_A[owner]
    mean_dist = torch.cat(snapshot_r) / W_R[owner] * (1.0 + _SUM_MARGIN)
    kept = w * torch.erfc(lam * mean_dist / (2 * math.sqrt(2.0)))
    high = (1.0 - torch.zeros(n, dtype=torch.float64).index_add_(0, owner, kept)).clamp(0.0, 1.0)
    c = count[owner]
    overlaps = c * weighted_overlap(lam * torch.cat(snapshot_m), w, 1.0 / c)
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, owner, overlaps) * (1.0 + _SUM_MARGIN)
    low = (1.0 - total).clamp(0.0, 1.0)
    return list(zip(low.tolist(), high.tolist(), strict=True))


def complement_bounds(span, nodes, parents, times, threshold: float) -> list[tuple[float, float]]:
    """:func:`tv_bounds_at` for the nodes of a tree against their complements (``nodes``, ``parents``
    as :func:`nested_tv_bounds`), as they serve a check of ``TV >= threshold``: the pairwise bounds
    where the pairs are few (``sum |A| |R| <= _NESTED_ABOVE``), else :func:`nested_tv_bounds`, and the
    pairwise ones only for the nodes these leave straddling ``threshold`` (the two intersected)."""
    K = span.n_components
    if sum(len(A) * (K - len(A)) for A in nodes) <= _NESTED_ABOVE:
        return tv_bounds_at(span, [(A, complement(A, K)) for A in nodes], times)
    out = nested_tv_bounds(span, nodes, parents, times)
    open_ = [k for k, (low, high) in enumerate(out) if not (high < threshold or low >= threshold)]
    exact = tv_bounds_at(
        span, [(nodes[k], complement(nodes[k], K)) for k in open_], [times[k] for k in open_]
    )
    for k, (low, high) in zip(open_, exact, strict=True):
        out[k] = (max(low, out[k][0]), min(high, out[k][1]))
    return out


def complement(components, K: int) -> torch.Tensor:
    """The components of ``range(K)`` not in ``components`` (a long tensor)."""
    inside = torch.zeros(K, dtype=torch.bool)
    inside[as_index(components)] = True
    return torch.nonzero(~inside).flatten()
