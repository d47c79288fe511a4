"""Many TV crossings of one span mixture at once: every window of an eps-tree (THEORY §3, §6).

Each task is the time where ``factor * TV(p_t^A, p_t^B)`` (non-increasing in ``t``) crosses ``level``:
``inf{t : . <= level}`` (a merge time) or ``sup{t : . >= level}`` (a separation time), with the bracket
of the same crossing on the lower and upper Monte Carlo curves, as
:meth:`critwin.span.SpanMixture.crossing` does for one task. Two stages:

1. *Sure bounds* (:meth:`SpanMixture.bounds`, vectorised over the pairs of every task): the crossing of
   any curve between the lower and upper bound lies between the crossings of the two bounds. When those
   are within ``tol`` (or at 0 / beyond ``_T_MAX``) the task is decided with no Monte Carlo
   (method ``"bounds"``).
2. *Pooled Monte Carlo* for the rest, grouped by ``U = A ∪ B`` (every separation shares ``U`` = all
   components; a merge into a parent has ``U`` = the parent). Each group draws once, per component of
   ``U``, standard normal rows in the span (``x = lam c_b + z``; the products ``z @ c^T`` serve every
   time). A task estimates ``1 - TV = E_Q min(1, p/q)`` on the draws of the larger of its two sides
   (``Q``), stratified by component (``max(2, floor(n v_b))`` draws for a component of relative weight
   ``v_b``), so every task of a group reuses the same draws and one (rows, |U|) matrix of
   log-densities per time serves all of them. All brackets bisect on one shared set of dyadic times
   (the most dyadic point inside a bracket), so tasks whose crossings are close share evaluations.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from critwin._memory import check_memory
from critwin.divergence import _MIN_ESS, _wilson
from critwin.windows import _T_MAX

__all__ = ["crossings"]

_PAIR_BATCH = 1 << 21  # pairs of components per batch of the bound stage (a few arrays of 16 MiB)
_CURVES = 3  # value, lower and upper curve of every task
_CI_RESOLUTION = 16.0  # the lower/upper curves' brackets stop at 1/16 of their spread


def crossings(span, tasks, tol: float, report=None) -> list[tuple[float, float, float, str]]:
    """Crossing times of ``tasks`` on ``span`` (a :class:`critwin.span.SpanMixture`).

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
    One ``(time, low, high, method)`` per task, as :func:`critwin.windows.merge_time`.
    """
    report = report or (lambda done, total: None)
    out: list = [None] * len(tasks)
    pending = []
    for k, (t_lb, t_ub) in enumerate(_bound_brackets(span, tasks, tol)):
        at_zero = -math.inf if tasks[k][4] else 0.0
        if t_ub == at_zero:
            out[k] = (at_zero, at_zero, at_zero, "bounds")
        elif t_lb == math.inf:
            out[k] = (math.inf, math.inf, math.inf, "bounds")
        elif t_lb != at_zero and t_ub - t_lb <= tol:
            lo, hi = max(0.0, t_lb - tol / 2), t_ub + tol / 2
            out[k] = (0.5 * (t_lb + t_ub), lo, hi, "bounds")
        else:
            # lo < 0: whether the curves already cross at t = 0 is open; hi = inf: no time known above.
            lo = -1.0 if t_lb == at_zero else max(0.0, t_lb - tol / 2)
            pending.append((k, lo, t_ub + tol / 2 if math.isfinite(t_ub) else math.inf))
    done = len(tasks) - len(pending)
    report(done, len(tasks))
    groups: dict[tuple[int, ...], list] = {}
    for item in pending:
        A, B = tasks[item[0]][:2]
        groups.setdefault(tuple(sorted(A + B)), []).append(item)
    for U, items in groups.items():
        pool = _Pool(span, list(U), [tasks[k] for k, _, _ in items])
        for k, result in zip((k for k, _, _ in items), _bisect_pooled(pool, items, tasks, tol), strict=True):
            out[k] = result
        done += len(items)
        report(done, len(tasks))
    return out


# ------------------------------------------------------------------------------------------ bounds
def _bound_brackets(span, tasks, tol):
    """Per task ``(t_lb, t_ub)``: where the lower and the upper sure bound first satisfy the crossing
    predicate (``at_zero`` if at t = 0, inf if not by ``_T_MAX``; otherwise a bisection midpoint within
    ``tol / 2`` of the crossing)."""
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
    """Flattened pairs of every task: (task of each pair, distance, w_a, v_b), float64."""
    owner, dist, wa, vb = [], [], [], []
    for k, (A, B, *_rest) in enumerate(tasks):
        a, b = torch.tensor(A), torch.tensor(B)
        w = span.weights[a] / span.weights[a].sum()
        v = span.weights[b] / span.weights[b].sum()
        owner.append(torch.full((len(A) * len(B),), k))
        dist.append(span.dist[a][:, b].reshape(-1))
        wa.append(w.repeat_interleave(len(B)))
        vb.append(v.repeat(len(A)))
    return torch.cat(owner), torch.cat(dist), torch.cat(wa), torch.cat(vb)


def _bound_values(pairs, scales, n_tasks):
    """Sure (lower, upper) bounds on the TV of every task at its own scale ``lam`` (module notes of
    :mod:`critwin.span`)."""
    owner, dist, wa, vb = pairs
    pair = torch.erf(scales[owner] * dist / (2 * math.sqrt(2.0)))
    upper = torch.zeros(n_tasks, dtype=torch.float64).index_add_(0, owner, wa * vb * pair)
    overlap = torch.minimum(torch.minimum(wa, vb), torch.maximum(wa, vb) * (1 - pair))
    total = torch.zeros(n_tasks, dtype=torch.float64).index_add_(0, owner, overlap)
    return (1.0 - total).clamp_min(0.0), upper.clamp_max(1.0)


def _bound_batch(span, tasks, tol):
    pairs = _pairs(span, tasks)
    n = len(tasks)
    level = torch.tensor([t[2] for t in tasks], dtype=torch.float64)
    factor = torch.tensor([t[3] for t in tasks], dtype=torch.float64)
    strict = torch.tensor([bool(t[4]) for t in tasks])

    def holds(times: np.ndarray, which: int) -> np.ndarray:
        scales = span.scale(torch.as_tensor(times, dtype=torch.float64))
        f = factor * _bound_values(pairs, scales, n)[which]
        return torch.where(strict, f < level, f <= level).numpy()

    result = []
    for which in (0, 1):  # the lower bound's crossing, then the upper bound's
        result.append(_first_true_vectorised(lambda t, w=which: holds(t, w), n, tol))
    at_zero = np.where(strict.numpy(), -np.inf, 0.0)
    return [tuple(float(at_zero[k]) if r[k] == -2.0 else float(r[k]) for r in result) for k in range(n)]


def _first_true_vectorised(holds, n: int, tol: float) -> np.ndarray:
    """:func:`critwin.windows._first_true` for ``n`` predicates at once: -2 where they hold at 0, inf
    where not by ``_T_MAX``, else the midpoint of a final bracket of width <= tol."""
    out = np.full(n, np.nan)
    out[holds(np.zeros(n))] = -2.0
    lo, hi = np.zeros(n), np.ones(n)
    growing = np.isnan(out)
    while growing.any():
        ok = holds(hi)
        growing &= ~ok
        lo = np.where(growing, hi, lo)
        hi = np.where(growing, 2.0 * hi, hi)
        out[growing & (hi > _T_MAX)] = np.inf
        growing &= hi <= _T_MAX
    active = np.isnan(out)
    while active.any():
        mid = 0.5 * (lo + hi)
        ok = holds(mid)
        hi, lo = np.where(active & ok, mid, hi), np.where(active & ~ok, mid, lo)
        mid = 0.5 * (lo + hi)
        active &= (hi - lo > tol) & (lo < mid) & (mid < hi)
    return np.where(np.isnan(out), 0.5 * (lo + hi), out)


# ------------------------------------------------------------------------------------- Monte Carlo
class _Pool:
    """Draws shared by every task of one group ``U``: rows of standard normals in the span, per component
    of ``U``, as many as the most demanding task asks of that component."""

    def __init__(self, span, U: list[int], tasks):
        self.span, self.U = span, U
        pos = torch.full((span.n_components,), -1, dtype=torch.long)
        pos[torch.tensor(U)] = torch.arange(len(U))
        w = span.weights[U]
        need = torch.full((len(U),), 2, dtype=torch.long)
        self.small, log_ratio, w_side = [], [], []
        for A, B, *_rest in tasks:
            # the larger side carries the draws; the estimate needs the density of the other, small one
            small = pos[torch.tensor(B if len(A) > len(B) else A)]
            inside = torch.zeros(len(U), dtype=torch.bool).index_fill_(0, small, True)
            W_small, W_side = float(w[small].sum()), float(w[~inside].sum())
            need = torch.where(inside, need, torch.maximum(need, (span.n * w / W_side).floor().long()))
            self.small.append(small)
            log_ratio.append(math.log(W_side / W_small))
            w_side.append(W_side)
        self.log_ratio = torch.tensor(log_ratio, dtype=torch.float64)
        self.w_side = torch.tensor(w_side, dtype=torch.float64)
        self.counts = need.to(torch.float64)
        rows, r = int(need.sum()), span.coords.shape[1]
        check_memory(
            8 * rows * (r + 3 * len(U)), f"the Monte Carlo draws of {len(tasks)} crossings in the span"
        )
        self.comp = torch.repeat_interleave(torch.arange(len(U)), need)  # position in U of each row
        z = torch.randn(rows, r, generator=span._generator, dtype=torch.float64)
        zc = z @ span.coords[U].T
        del z
        # log w_l N(x; lam c_l, I) = lam (lam half_sq - dz) + log w_l up to a term common to a row
        self.half_sq = -0.5 * span.sq_dist[U][:, U][self.comp]
        self.dz = zc.gather(1, self.comp.unsqueeze(1)) - zc
        del zc
        self.log_w, self.w = w.log(), w

    def log_densities(self, t: float) -> torch.Tensor:
        """(rows, |U|) log of ``w_l N(x; lam c_l, I)`` up to a term common to a row (it cancels)."""
        lam = self.span.scale(t)
        return torch.add(self.dz, self.half_sq, alpha=-lam).mul_(-lam).add_(self.log_w)

    def estimate(self, ks, log_dens: torch.Tensor, z: float) -> np.ndarray:
        """(len(ks), 3) value, low and high of the TV of tasks ``ks``: ``1 - E_Q min(1, p/q)`` on the
        draws of each task's large side ``Q`` (every row of ``U`` outside its small set), stratified by
        component."""
        lse_u = torch.logsumexp(log_dens, 1, keepdim=True)
        step = max(1, (1 << 22) // log_dens.shape[0])
        return np.concatenate(
            [self._estimate(ks[i : i + step], log_dens, lse_u, z) for i in range(0, len(ks), step)]
        )

    def _estimate(self, ks, log_dens, lse_u, z) -> np.ndarray:
        n_comp = len(self.U)
        small = torch.zeros(n_comp, len(ks), dtype=torch.bool)
        lse_small = torch.empty(log_dens.shape[0], len(ks), dtype=torch.float64)
        for j, k in enumerate(ks):
            s = self.small[k]
            small[s, j] = True
            lse_small[:, j] = log_dens[:, s[0]] if s.numel() == 1 else torch.logsumexp(log_dens[:, s], 1)
        # The side's mixture is U minus the small set; its log density by complement (1 - e^x, x <= 0).
        lse_side = lse_u + torch.log1p(-torch.exp((lse_small - lse_u).clamp_max(0.0)))
        h = torch.exp((lse_small - lse_side + self.log_ratio[ks]).clamp_max(0.0))
        c = self.counts.unsqueeze(1)
        v = torch.where(small, 0.0, self.w.unsqueeze(1) / self.w_side[ks])  # strata weights (|U|, n)
        sums = torch.zeros(n_comp, len(ks), dtype=torch.float64).index_add_(0, self.comp, h)
        squares = torch.zeros(n_comp, len(ks), dtype=torch.float64).index_add_(0, self.comp, h * h)
        overlap = (v * sums / c).sum(0)
        var = ((squares - sums * sums / c) / (c - 1)).clamp_min(0)
        se = (v * v * var / c).sum(0).sqrt()
        low, high = overlap - z * se, overlap + z * se
        per_draw = (v / c)[self.comp]
        ess = torch.minimum(_ess_columns(per_draw * h), _ess_columns(per_draw * (1 - h)))
        for j in torch.nonzero(ess < _MIN_ESS).flatten().tolist():
            n_eff = float((c[:, 0] / v[:, j])[v[:, j] > 0].min())
            w_low, w_high = _wilson(float(overlap[j]), n_eff, z)
            low[j], high[j] = min(float(low[j]), w_low), max(float(high[j]), w_high)
        return torch.stack([1.0 - overlap, (1.0 - high).clamp_min(0), (1.0 - low).clamp_max(1)], 1).numpy()


def _ess_columns(x: torch.Tensor) -> torch.Tensor:
    """:func:`critwin.divergence._ess` of every column of ``x`` (rows, n)."""
    y = x / x.max(0).values.clamp_min(1e-300)
    return y.sum(0).square() / y.square().sum(0).clamp_min(1e-300)


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


def _bisect_pooled(pool: _Pool, items, tasks, tol: float):
    """Bisect the value, lower and upper curve of every task of a group on shared times.

    The value curve is bisected to ``tol``; the lower and upper curves only bound the time, so they
    stop at ``max(tol, spread / _CI_RESOLUTION)`` (``spread``: the current distance between the outer
    ends of their brackets), and the outer end of their final bracket is reported."""
    n = len(items)
    lo = np.array([[item[1]] * _CURVES for item in items])
    hi = np.array([[item[2]] * _CURVES for item in items])
    level = np.array([tasks[k][2] for k, _, _ in items])[:, None]
    factor = np.array([tasks[k][3] for k, _, _ in items])[:, None]
    strict = np.array([bool(tasks[k][4]) for k, _, _ in items])[:, None]
    at_zero = np.where(strict, -np.inf, 0.0) * np.ones((1, _CURVES))
    result = np.full((n, _CURVES), np.nan)
    while True:
        spread = np.where(np.isfinite(hi[:, 2]), hi[:, 2] - np.maximum(lo[:, 1], 0.0), np.inf)
        resolution = np.stack([np.full(n, tol), *[np.maximum(tol, spread / _CI_RESOLUTION)] * 2], 1)
        wanted = set()
        for i, c in zip(*np.nonzero(np.isnan(result)), strict=True):
            t = _next_time(lo[i, c], hi[i, c], resolution[i, c])
            if t is not None:
                wanted.add(t)
            elif hi[i, c] == math.inf:
                result[i, c] = math.inf
            else:
                # value: the midpoint; lower and upper curves: the outer end of the bracket
                result[i, c] = (0.5 * (lo[i, c] + hi[i, c]), lo[i, c], hi[i, c])[c]
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
            lo[active] = np.where(zero, 0.0, np.where(sub & ~zero & ~holds, t, lo[active]))
            hi[active] = np.where(sub & ~zero & holds, t, hi[active])
    # the value's crossing lies within tol/2 of its midpoint; the bounds' outer ends are sure already
    out = []
    for value, low, high in result:
        low = min(low, value - tol / 2) if value > 0 and math.isfinite(value) else min(low, value)
        high = max(high, value + tol / 2) if value > 0 and math.isfinite(value) else max(high, value)
        out.append((float(value), float(low), float(high), "monte-carlo"))
    return out
