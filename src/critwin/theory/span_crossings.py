"""Many TV crossings of one span mixture at once: every window of an eps-tree (THEORY §3, §6).

Each task is the time where ``factor * TV(p_t^A, p_t^B)`` (non-increasing in ``t``) crosses ``level``:
``inf{t : . <= level}`` (a merge time, 0 if at t = 0) or ``sup{t : . >= level}`` (a separation time,
-inf if not at t = 0), with a bracket from the same crossing on the lower and upper curves, as
:func:`critwin.theory.windows.merge_time` and :func:`critwin.theory.windows.separation_time` give for one.
Two stages:

1. *Sure bounds* (those of :meth:`critwin.theory.span.SpanMixture.bounds`, vectorised over the pairs of every
   task): any curve between the lower and the upper bound crosses between the crossings of the two
   bounds. When those are within ``tol`` (or at 0, or never) the task is decided with no Monte Carlo
   (method ``"bounds"``).
2. *Pooled Monte Carlo* for the rest, grouped by ``U``: the components of ``A ∪ B`` that can matter
   up to the top of the task's bracket (:func:`_restrict`; the others, e.g. groups thousands of
   standard deviations away, enter as a sure slack of at most ``_NEGLIGIBLE`` on the overlap), so
   the separations of nested sets inside one far-off group share a pool with that group's merges.
   Each group draws once, per component of ``U``, standard normal rows in the span of ``U``'s means
   (``x = lam c_b + z``; the products ``z @ c^T`` serve every time). A task estimates
   ``1 - TV = E_Q min(1, p/q)`` on the draws of the larger of its two sides ``Q`` (the small side's
   density by a log-sum-exp over its components, ``Q``'s by complement in ``U``), stratified by
   component with ``max(2, floor(n v_b))`` draws for relative weight ``v_b``: one (rows, |U|) matrix
   of log-densities per time serves every task of the group. All brackets bisect on one shared set of
   dyadic times (the most dyadic point inside a bracket), so tasks whose crossings are close share
   evaluations, and stop at ``max(tol, spread / 16)`` where ``spread`` is the task's Monte Carlo
   uncertainty of the time (bisecting one noisy curve finer than its noise buys nothing).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from critwin._memory import check_memory
from critwin._stats import wilson_bounds
from critwin.theory.divergence import _MIN_ESS
from critwin.theory.span import _tv_bound, weighted_overlap
from critwin.theory.windows import _T_MAX

__all__ = ["crossings", "tv_values"]

_PAIR_BATCH = 1 << 21  # pairs of components per batch of the bound stage (a few arrays of 16 MiB)
_CURVES = 3  # value, lower and upper curve of every task
_CI_RESOLUTION = 16.0  # brackets stop at 1/16 of the Monte Carlo uncertainty of the time (or at tol)


def crossings(span, tasks, tol: float, report=None) -> list[tuple[float, float, float, str]]:
    """Crossing times of ``tasks`` on ``span`` (a :class:`critwin.theory.span.SpanMixture`).

    Parameters
    ----------
    span : SpanMixture.
    tasks : list of ``(A, B, level, factor, separation)``: disjoint non-empty component lists, the level
        crossed by ``factor * TV(p_t^A, p_t^B)``, and whether it is a separation time (``sup{t : . >=
        level}``, -inf if not at t = 0) or a merge time (``inf{t : . <= level}``, 0 if at t = 0).
    tol : bisection tolerance in OU time.
    report : optional ``report(done, total)`` called as tasks are decided.

    Returns
    -------
    One ``(time, low, high, method)`` per task, as :func:`critwin.theory.windows.merge_time`.
    """
    report = report or (lambda done, total: None)
    out: list = [None] * len(tasks)
    pending = []
    for k, (low, high) in enumerate(_bound_brackets(span, tasks, tol)):
        # every curve between the sure bounds crosses in [low, high] (low = -1: maybe at t = 0)
        at_zero = -math.inf if tasks[k][4] else 0.0
        if low is None:
            out[k] = (at_zero, at_zero, at_zero, "bounds")
        elif low == math.inf:
            out[k] = (math.inf, math.inf, math.inf, "bounds")
        elif low >= 0 and high - low <= tol:
            out[k] = (0.5 * (low + high), low, high, "bounds")
        else:
            pending.append((k, low, high))
    done = len(tasks) - len(pending)
    report(done, len(tasks))
    parts, groups = {}, {}
    for item in pending:
        k, _, high = item
        # the pair overlaps only grow with t: components negligible at the bracket's top are at every
        # time the bisection visits
        parts[k] = _restrict(span, tasks[k][0], tasks[k][1], high)
        groups.setdefault(tuple(sorted(parts[k][0] + parts[k][1])), []).append(item)
    for U, items in groups.items():
        pool = _Pool(span, list(U), [parts[k] for k, _, _ in items])
        resolved = _bisect_pooled(
            pool, items, tasks, tol, lambda count, d=done: report(d + count, len(tasks))
        )
        for k, result in zip((k for k, _, _ in items), resolved, strict=True):
            out[k] = result
        done += len(items)
    return out


def tv_values(span, tasks) -> list[tuple[float, float, float]]:
    """``TV(p_t^A, p_t^B)`` with its confidence interval, ``(value, low, high)``, for each task
    ``(A, B, t)``: the estimator of the crossings (one pool per set of components that can matter,
    :func:`_restrict`), so a task costs the components near it, not all of ``span``'s."""
    out: list = [None] * len(tasks)
    parts, groups = [], {}
    for k, (A, B, t) in enumerate(tasks):
        parts.append(_restrict(span, A, B, t))
        groups.setdefault(tuple(sorted(parts[k][0] + parts[k][1])), []).append(k)
    for U, ks in groups.items():
        pool = _Pool(span, list(U), [parts[k] for k in ks])
        for j, k in enumerate(ks):
            value, low, high = pool.estimate([j], pool.log_densities(tasks[k][2]), span.z_level)[0]
            out[k] = (float(value), float(low), float(high))
    return out


# ------------------------------------------------------------------------------------------ bounds
def _bound_brackets(span, tasks, tol):
    """Per task ``(low, high)``: every curve between the sure bounds is still on its initial side of the
    level at ``low`` (the lower bound is; -1 when it crosses at t = 0 already) and has crossed by
    ``high`` (the upper bound has; inf when it never does); ``(None, 0)`` when the upper bound crosses at
    t = 0, ``(inf, inf)`` when the lower bound never does. Batches of at most ``_PAIR_BATCH`` pairs."""
    out: list = [None] * len(tasks)
    batch: list[int] = []
    size = 0
    for k, task in enumerate(tasks):
        batch.append(k)
        size += len(task[0]) * len(task[1])
        if size >= _PAIR_BATCH or k == len(tasks) - 1:
            for j, pair in zip(batch, _bound_batch(span, [tasks[j] for j in batch], tol), strict=True):
                out[j] = pair
            batch, size = [], 0
    return out


def _pairs(span, tasks):
    """Flattened pairs of every task: the task of each pair, ``D_ab``, ``w_a`` and ``v_b`` (float64)."""
    owner, dist, wa, vb = [], [], [], []
    for k, (A, B, *_rest) in enumerate(tasks):
        a, b = torch.tensor(A), torch.tensor(B)
        owner.append(torch.full((len(A) * len(B),), k))
        dist.append(span.dist[a][:, b].reshape(-1))
        wa.append((span.weights[a] / span.weights[a].sum()).repeat_interleave(len(B)))
        vb.append((span.weights[b] / span.weights[b].sum()).repeat(len(A)))
    return torch.cat(owner), torch.cat(dist), torch.cat(wa), torch.cat(vb)


def _bound_values(pairs, scales, n_tasks, upper: bool):
    """The sure lower (``upper=False``) or upper bound on the TV of every task at its own scale ``lam``
    (:func:`critwin.theory.span.tv_bounds`)."""
    owner, dist, wa, vb = pairs
    return _tv_bound(scales[owner] * dist, wa, vb, (owner, n_tasks), upper)


def _bound_batch(span, tasks, tol):
    pairs = _pairs(span, tasks)
    n = len(tasks)
    level = torch.tensor([t[2] for t in tasks], dtype=torch.float64).repeat(2)
    factor = torch.tensor([t[3] for t in tasks], dtype=torch.float64).repeat(2)
    strict = torch.tensor([bool(t[4]) for t in tasks]).repeat(2)

    def holds(times: np.ndarray) -> np.ndarray:
        """The predicate on the lower bound at ``times[:n]`` and on the upper bound at ``times[n:]``."""
        scales = span.scale(torch.as_tensor(times, dtype=torch.float64))
        f = factor * torch.cat(
            [_bound_values(pairs, scales[:n], n, False), _bound_values(pairs, scales[n:], n, True)]
        )
        return torch.where(strict, f < level, f <= level).numpy()

    def resolution(lo, hi):
        # a bracket of the crossing narrower than 1/16 of the gap between the bounds' crossings is
        # never needed (Monte Carlo bisects that gap); when they are close, tol decides
        gap = lo[n:] - hi[:n]
        return np.tile(np.maximum(tol, gap / 16.0), 2)

    state, lo, hi = _first_true_vectorised(holds, 2 * n, resolution)
    out = []
    for k in range(n):
        if state[n + k] == _AT_ZERO:
            out.append((None, 0.0))
        elif state[k] == _NEVER:
            out.append((math.inf, math.inf))
        else:
            low = -1.0 if state[k] == _AT_ZERO else float(lo[k])
            out.append((low, math.inf if state[n + k] == _NEVER else float(hi[n + k])))
    return out


_AT_ZERO, _NEVER = 1, 2


def _first_true_vectorised(holds, n: int, resolution):
    """:func:`critwin.theory.windows._first_true` for ``n`` predicates that stay true once they hold, at once.

    Returns ``(state, lo, hi)``: state ``_AT_ZERO`` where a predicate holds at 0, ``_NEVER`` where not by
    ``_T_MAX``, else 0 with a bracket (false at ``lo``, true at ``hi``) no wider than
    ``resolution(lo, hi)``."""
    state = np.zeros(n, dtype=int)
    state[holds(np.zeros(n))] = _AT_ZERO
    lo, hi = np.zeros(n), np.ones(n)
    growing = state == 0
    while growing.any():
        ok = holds(hi)
        growing &= ~ok
        lo = np.where(growing, hi, lo)
        hi = np.where(growing, 2.0 * hi, hi)
        state[growing & (hi > _T_MAX)] = _NEVER
        growing &= hi <= _T_MAX
    active = state == 0
    while True:
        mid = 0.5 * (lo + hi)
        active &= (hi - lo > resolution(lo, hi)) & (lo < mid) & (mid < hi)
        if not active.any():
            return state, lo, hi
        ok = holds(mid)
        hi, lo = np.where(active & ok, mid, hi), np.where(active & ~ok, mid, lo)


# ------------------------------------------------------------------------------------- Monte Carlo
class _Pool:
    """Draws shared by every task of one group ``U``: rows of standard normals in the span, per component
    of ``U``, as many as the most demanding task asks of that component.

    Each task is ``(A, B, W_A, W_B, slack)`` (:func:`_restrict`): the components of its two sides that
    can matter (``A ∪ B = U``), the full sides' weights and the sure bound ``slack`` on the overlap of
    the components left out. The pool estimates ``int min(p_A', q_B')`` of the kept parts (weights
    normalised by the full sides), which is within ``[0, slack]`` below ``1 - TV``."""

    def __init__(self, span, U: list[int], tasks):
        self.span, self.U = span, U
        pos = torch.full((span.n_components,), -1, dtype=torch.long)
        pos[torch.tensor(U)] = torch.arange(len(U))
        w = span.weights[U]
        need = torch.full((len(U),), 2, dtype=torch.long)
        self.small, ratio, w_side, slack = [], [], [], []
        for A, B, W_A, W_B, gap in tasks:
            # the larger side carries the draws; the estimate needs the density of the other, small one
            swap = len(A) > len(B)
            small = pos[torch.tensor(B if swap else A)]
            inside = torch.zeros(len(U), dtype=torch.bool).index_fill_(0, small, True)
            W_small, W_side = (W_B, W_A) if swap else (W_A, W_B)
            need = torch.where(inside, need, torch.maximum(need, (span.n * w / W_side).floor().long()))
            self.small.append(small)
            ratio.append(W_side / W_small)
            w_side.append(W_side)
            slack.append(gap)
        self.ratio = torch.tensor(ratio, dtype=torch.float64)
        self.first = torch.stack([small[0] for small in self.small])
        self.w_side = torch.tensor(w_side, dtype=torch.float64)
        self.slack = torch.tensor(slack, dtype=torch.float64)
        self.counts = need.to(torch.float64)
        rows = int(need.sum())
        check_memory(
            8 * rows * (len(U) + 3 * len(U)), f"the Monte Carlo draws of {len(tasks)} crossings in the span"
        )
        self.comp = torch.repeat_interleave(torch.arange(len(U)), need)  # position in U of each row
        zc = _span_normals(span, U, rows)
        # log w_l N(x; lam c_l, I) = lam (lam half_sq - dz) + log w_l up to a term common to a row
        # (float32: its rounding, ~1e-4 relative in a density ratio, is far below the Monte Carlo error)
        self.half_sq = (-0.5 * span.sq_dist[U][:, U][self.comp]).float()
        self.dz = (zc.gather(1, self.comp.unsqueeze(1)) - zc).float()
        del zc
        self.log_w, self.w = w.log().float(), w

    def log_densities(self, t: float) -> torch.Tensor:
        """(rows, |U|) log of ``w_l N(x; lam c_l, I)`` up to a term common to a row (it cancels)."""
        lam = self.span.scale(t)
        return torch.add(self.dz, self.half_sq, alpha=-lam).mul_(-lam).add_(self.log_w)

    def estimate(self, ks, log_dens: torch.Tensor, z: float) -> np.ndarray:
        """(len(ks), 3) value, low and high of the TV of tasks ``ks``: ``1 - E_Q min(1, p/q)`` on the
        draws of each task's large side ``Q`` (every row of ``U`` outside its small set), stratified by
        component."""
        lse_u = torch.logsumexp(log_dens, 1, keepdim=True).double()
        step = max(1, (1 << 22) // log_dens.shape[0])
        return np.concatenate(
            [self._estimate(ks[i : i + step], log_dens, lse_u, z) for i in range(0, len(ks), step)]
        )

    def _estimate(self, ks, log_dens, lse_u, z) -> np.ndarray:
        n_comp = len(self.U)
        small = torch.zeros(n_comp, len(ks), dtype=torch.bool)
        # a small set of one component (most tasks): its column; larger ones: a log-sum-exp
        index = torch.tensor(ks)
        lse_small = log_dens.index_select(1, self.first[index]).double()
        small[self.first[index], torch.arange(len(ks))] = True
        for j, k in enumerate(ks):
            if self.small[k].numel() > 1:
                small[self.small[k], j] = True
                lse_small[:, j] = torch.logsumexp(log_dens[:, self.small[k]], 1)
        # pi: posterior of the small set within U; the side's density ratio p_small / p_side is
        # pi / (1 - pi) times W_side / W_small (pi = 1 exactly gives inf, clamped to 1 as it should)
        pi = torch.exp((lse_small - lse_u).clamp_max(0.0))
        h = (pi / (1.0 - pi)).mul_(self.ratio[ks]).clamp_max_(1.0)
        c = self.counts.unsqueeze(1)
        v = torch.where(small, 0.0, self.w.unsqueeze(1) / self.w_side[ks])  # strata weights (|U|, n)
        sums = torch.zeros(n_comp, len(ks), dtype=torch.float64).index_add_(0, self.comp, h)
        squares = torch.zeros(n_comp, len(ks), dtype=torch.float64).index_add_(0, self.comp, h.square_())
        overlap = (v * sums / c).sum(0)
        var = ((squares - sums * sums / c) / (c - 1)).clamp_min(0)
        se = (v * v * var / c).sum(0).sqrt()
        low, high = overlap - z * se, overlap + z * se
        slack = self.slack[ks]
        # effective sample sizes of the terms of h and of 1 - h, from the per-stratum sums
        per_draw = v / c
        ess = torch.minimum(_ess(per_draw, sums, squares), _ess(per_draw, c - sums, c - 2 * sums + squares))
        for j in torch.nonzero(ess < _MIN_ESS).flatten().tolist():
            n_eff = float((c[:, 0] / v[:, j])[v[:, j] > 0].min())
            w_low, w_high = wilson_bounds(float(overlap[j]), n_eff, z)
            low[j], high[j] = min(float(low[j]), w_low), max(float(high[j]), w_high)
        high += slack  # the overlap of the components left out (_restrict) is in [0, slack]
        return torch.stack([1.0 - overlap, (1.0 - high).clamp_min(0), (1.0 - low).clamp_max(1)], 1).numpy()


_NEGLIGIBLE = 1e-9  # most overlap (summed) that the components left out of a Monte Carlo task may carry


def _restrict(span, A: list[int], B: list[int], t: float):
    """The components of ``A`` and ``B`` that can matter for ``1 - TV(p_t^A, p_t^B)`` at any time up
    to ``t``: ``(A', B', W_A, W_B, slack)``.

    ``min(x_a + x_f, y_b + y_g) <= min(x_a, y_b) + sum_f min(x_f, y) + sum_g min(x, y_g)`` and
    ``int min(w_f p_f, q) <= sum_b int min(w_f p_f, v_b p_b)`` (the pair overlaps of the sure bound), so
    ``int min(p_A', q_B') <= 1 - TV <= int min(p_A', q_B') + slack`` where ``slack`` sums the pair
    overlaps of the components left out: those with the smallest sums of pair overlaps, while the total
    stays below ``_NEGLIGIBLE`` (never all of a side). The pair overlaps grow with ``t``, so the bound
    holds at every earlier time too. ``t = inf``: nothing is left out."""
    W_A, W_B = float(span.weights[A].sum()), float(span.weights[B].sum())
    if not math.isfinite(t) or len(A) + len(B) <= 2:
        return list(A), list(B), W_A, W_B, 0.0
    a, b = torch.tensor(A), torch.tensor(B)
    w = (span.weights[a] / W_A).unsqueeze(1)
    v = (span.weights[b] / W_B).unsqueeze(0)
    terms = weighted_overlap(span.scale(t) * span.dist[a][:, b], w, v)
    kept = []
    slack = 0.0
    for side, mass in ((A, terms.sum(1)), (B, terms.sum(0))):
        order = torch.argsort(mass)
        cumulative = torch.cumsum(mass[order], 0)
        # leave out the smallest while the running total (both sides) stays below _NEGLIGIBLE
        drop = int((cumulative <= _NEGLIGIBLE - slack).sum())
        drop = min(drop, len(side) - 1)
        slack += float(cumulative[drop - 1]) if drop else 0.0
        keep = sorted(order[drop:].tolist())
        kept.append([side[i] for i in keep])
    return kept[0], kept[1], W_A, W_B, slack


def _span_normals(span, U: list[int], rows: int) -> torch.Tensor:
    """(rows, |U|) products ``z @ c_U^T`` of standard normal rows ``z`` in the span with the coordinates
    of ``U``: drawn in the span of ``c_U`` alone (``c_U^T = Q R``, ``z Q`` is standard normal), so a
    small group costs ``|U|`` normals per row, not the span's dimension."""
    coords = span.coords[U]
    if len(U) < coords.shape[1]:
        _, R = torch.linalg.qr(coords.T)
        g = torch.randn(rows, R.shape[0], generator=span._generator, dtype=torch.float64)
        return g @ R
    z = torch.randn(rows, coords.shape[1], generator=span._generator, dtype=torch.float64)
    return z @ coords.T


def _ess(per_draw, sums, squares) -> torch.Tensor:
    """``(sum x)^2 / sum x^2`` per column for terms ``x = per_draw * y`` given per-stratum sums of ``y``
    and ``y^2`` (0 where the squares underflow: the conservative interval is then used)."""
    total = (per_draw * sums).sum(0)
    total_sq = (per_draw * per_draw * squares.clamp_min(0)).sum(0)
    return torch.where(total_sq > 0, total * total / total_sq.clamp_min(1e-300), 0.0)


def _dyadic_inside(lo: float, hi: float) -> float:
    """The point of (lo, hi) with the coarsest dyadic grid ``j 2^-l``: shared by overlapping brackets."""
    level = math.floor(-math.log2(hi - lo)) - 1
    while True:
        h = 2.0**-level
        point = (math.floor(lo / h) + 1) * h
        if point < hi:
            return point
        level += 1


def _next_time(lo: float, hi: float, tol: float) -> float | None:
    """Where a bracket wants its next evaluation (None: resolved)."""
    if lo < 0:
        return 0.0
    if hi == math.inf:
        return max(1.0, 2.0 * lo) if 2.0 * lo <= _T_MAX else None
    if hi - lo <= tol or not lo < 0.5 * (lo + hi) < hi:
        return None
    return _dyadic_inside(lo, hi)


def _bisect_pooled(pool: _Pool, items, tasks, tol: float, report):
    """Bisect the value, lower and upper curve of every task of a group on shared times;
    ``report(count)`` after each round with the number of tasks resolved.

    Every bracket stops at ``max(tol, spread / _CI_RESOLUTION)`` (``spread``: the distance between the
    outer ends of the task's lower- and upper-curve brackets, i.e. the Monte Carlo uncertainty of the
    time): the lower and upper curves report the outer end of their final bracket, the value curve the
    linear interpolation of its two evaluated ends (the midpoint where an end has no Monte Carlo value)."""
    n = len(items)
    lo = np.array([[item[1]] * _CURVES for item in items])
    hi = np.array([[item[2]] * _CURVES for item in items])
    f_lo, f_hi = np.full(n, np.nan), np.full(n, np.nan)  # the value curve at lo and hi
    level = np.array([tasks[k][2] for k, _, _ in items])[:, None]
    factor = np.array([tasks[k][3] for k, _, _ in items])[:, None]
    strict = np.array([bool(tasks[k][4]) for k, _, _ in items])[:, None]
    at_zero = np.where(strict, -np.inf, 0.0) * np.ones((1, _CURVES))
    result = np.full((n, _CURVES), np.nan)
    while True:
        spread = np.where(np.isfinite(hi[:, 2]), hi[:, 2] - np.maximum(lo[:, 1], 0.0), np.inf)
        resolution = np.maximum(tol, spread / _CI_RESOLUTION)
        wanted = set()
        for i, c in zip(*np.nonzero(np.isnan(result)), strict=True):
            t = _next_time(lo[i, c], hi[i, c], resolution[i])
            if t is not None:
                wanted.add(t)
            elif hi[i, c] == math.inf:
                result[i, c] = math.inf
            else:
                result[i, c] = (
                    _interpolate(lo[i, 0], hi[i, 0], f_lo[i], f_hi[i], level[i, 0]),
                    lo[i, c],
                    hi[i, c],
                )[c]
        report(int((~np.isnan(result)).all(1).sum()))  # tasks whose three curves are resolved
        if not wanted:
            break
        for t in sorted(wanted):
            open_ = np.isnan(result) & (((lo < 0) & (t == 0.0)) | ((lo >= 0) & (lo < t) & (t < hi)))
            active = np.nonzero(open_.any(1))[0]
            if active.size == 0:
                continue
            f = factor[active] * pool.estimate(active.tolist(), pool.log_densities(t), pool.span.z_level)
            holds = np.where(strict[active], f < level[active], f <= level[active])
            sub = open_[active]
            zero = sub & (lo[active] < 0)
            result[active] = np.where(zero & holds, at_zero[active], result[active])
            lower, upper = sub & ~zero & ~holds, sub & ~zero & holds
            f_lo[active] = np.where(lower[:, 0], f[:, 0], f_lo[active])
            f_hi[active] = np.where(upper[:, 0], f[:, 0], f_hi[active])
            lo[active] = np.where(zero, 0.0, np.where(lower, t, lo[active]))
            hi[active] = np.where(upper, t, hi[active])
    return [
        (float(value), float(min(low, value)), float(max(high, value)), "monte-carlo")
        for value, low, high in result
    ]


def _interpolate(lo: float, hi: float, f_lo: float, f_hi: float, level: float) -> float:
    """Where the line through ``(lo, f_lo)`` and ``(hi, f_hi)`` meets ``level`` (inside [lo, hi])."""
    if not (math.isfinite(f_lo) and math.isfinite(f_hi)) or f_lo == f_hi:
        return 0.5 * (lo + hi)
    return min(hi, max(lo, lo + (f_lo - level) / (f_lo - f_hi) * (hi - lo)))
