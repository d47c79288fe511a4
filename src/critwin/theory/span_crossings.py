"""Many TV crossings of one span mixture at once: every window of an eps-tree (docs/theory.md §5, §7, §9).

Each task (:class:`critwin.theory.span_bounds.CrossingTask`) is the time where ``factor * TV(p_t^A,
p_t^B)`` (non-increasing in ``t``) crosses ``level``, with a bracket, as
:func:`critwin.theory.windows.merge_time` and :func:`critwin.theory.windows.separation_time` give for
one. Two stages:

1. *Sure bounds* (:func:`critwin.theory.span_bounds.bound_brackets`): any curve between the lower and
   the upper bound crosses between the crossings of the two bounds. When those are within ``tol`` (or
   at 0, or never) the task is decided with no Monte Carlo (method ``"bounds"``).
2. *Pooled Monte Carlo* for the rest (:class:`critwin.theory.span_pool.Pool`), grouped by the
   components that can matter up to the top of the task's sure bracket
   (:func:`critwin.theory.span_bounds.restrict`; with ``needed``, of the tasks it keeps only). The
   value, lower and upper confidence curves of every task are bisected on shared dyadic times (tasks
   whose crossings are close share evaluations)
   down to ``max(tol, spread / 16)``, ``spread`` being the task's Monte Carlo uncertainty of the time.

**Honest brackets** (docs/theory.md §9). The Monte Carlo curves are searched on their own, starting from the
sure bracket and leaving it when they do not cross inside it, so the Monte Carlo bracket ``[L, H]`` of
a task is known whole. The reported bracket is ``[L, H]`` moved (not cut) into the sure bracket: a
bracket capped by a sure end keeps the Monte Carlo width (or the whole sure bracket when that is
narrower), so a cap never makes a bracket look more precise than its Monte Carlo allows. It still
contains ``[L, H] ∩ sure``, hence the true time whenever the Monte Carlo bracket does.

**Refining only what is needed** (``needed``; docs/theory.md §9). A caller that only needs some
brackets to a given precision (a tree's windows need their *status*) passes ``needed(low, high)``:
after the sure bounds, and after every round of the search, it gets every task's current bracket and
says which tasks to refine further. A task it leaves out at the sure stage keeps its sure bracket
(method ``"bounds"``, no Monte Carlo draws); one it leaves out later keeps the bracket established so
far, ``[lo, hi]`` of its lower and upper confidence curves where their predicates were evaluated
(False at ``lo``, True at ``hi``), moved into the sure one. There is one set of draws and one
confidence level: stopping early only decides how far the same confidence curves are bisected, and the
bracket so far always contains the crossings of both curves (the bisection keeps them inside), so it
covers the true time whenever the fully bisected bracket's curves do. No stage, no split of the level.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from critwin.theory.span_bounds import CrossingTask, SureBracket, restrict, sure_and_restricted
from critwin.theory.span_pool import Pool, TVInterval, group_tasks
from critwin.theory.windows import T_MAX, Crossing

__all__ = ["CrossingTask", "crossings", "tv_values", "honest_bracket"]

_CURVES = 3  # value, lower and upper curve of every task
_VALUE, _LOW, _HIGH = range(_CURVES)
_CI_RESOLUTION = 16.0  # brackets stop at 1/16 of the Monte Carlo uncertainty of the time (or at tol)
_VALUE_COARSER = 4.0  # the value curve stops at 1/4 of it


def crossings(span, tasks: list[CrossingTask], tol: float, report=None, needed=None) -> list[Crossing]:
    """Crossing times of ``tasks`` on ``span`` (a :class:`critwin.theory.span.SpanMixture`).

    Parameters
    ----------
    span : SpanMixture.
    tasks : list of :class:`CrossingTask` ``(A, B, level, factor, separation)`` (plain tuples too).
    tol : bisection tolerance in OU time.
    report : optional ``report(done, total)`` called as tasks are decided.
    needed : optional ``needed(low, high) -> bool array``, given every task's current bracket (two
        float arrays): which tasks to refine further (module notes); None refines every task.

    Returns
    -------
    One :class:`critwin.theory.windows.Crossing` per task.
    """
    report = report or (lambda done, total: None)
    tasks = [CrossingTask(*task) for task in tasks]
    out: list = [None] * len(tasks)
    pending, sure, parts = [], {}, {}
    # with ``needed``, only the tasks it keeps are restricted (below); else every open one, from the
    # pairs of the bounds
    for k, (bracket, part) in enumerate(sure_and_restricted(span, tasks, tol, restricted=needed is None)):
        if bracket.decided:
            out[k] = Crossing(bracket.low, bracket.low, bracket.high, "bounds")
        elif not bracket.from_zero and bracket.high - bracket.low <= tol:
            out[k] = Crossing(0.5 * (bracket.low + bracket.high), bracket.low, bracket.high, "bounds")
        else:
            # the pair overlaps only grow with t: components negligible at the bracket's top are at
            # every time the bisection visits below it (sure_and_restricted restricts at that top)
            pending.append(k)
            sure[k], parts[k] = bracket, part
    if needed is not None and pending:
        for k in pending:
            out[k] = _sure_crossing(tasks[k], sure[k])
        low, high = (np.array([c[i] for c in out]) for i in (1, 2))
        wanted = np.asarray(needed(low, high), dtype=bool)
        pending = [k for k in pending if wanted[k]]
        kept = restrict(span, [tasks[k] for k in pending], [sure[k].high for k in pending])
        parts = dict(zip(pending, kept, strict=True))
    done = len(tasks) - len(pending)
    report(done, len(tasks))
    if not pending:
        return out
    groups = group_tasks(pending, [parts[k] for k in pending])
    order = [k for group in groups for k in group.keys]  # the pool's task numbering
    pool = Pool(span, groups, parts)
    rule = None
    if needed is not None:

        def rule(low_p, high_p):  # the search's tasks (numbered as the pool's) among all of them
            low[order], high[order] = low_p, high_p
            return np.asarray(needed(low, high), dtype=bool)[order]

    search = _Search(pool, [tasks[k] for k in order], [sure[k] for k in order], tol, rule)
    for k, result in zip(order, search.run(lambda count: report(done + count, len(tasks))), strict=True):
        out[k] = result
    return out


def _sure_crossing(task: CrossingTask, sure: SureBracket) -> Crossing:
    """A task's crossing from its sure bracket alone (method ``"bounds"``): the bracket, its lower end
    -inf for a separation that may hold at t = 0 already, and its middle (from t = 0) as the value."""
    low = _sure_low(task, sure)
    return Crossing(0.5 * (max(low, 0.0) + sure.high), low, sure.high, "bounds")


def tv_values(span, tasks) -> list[TVInterval]:
    """``TV(p_t^A, p_t^B)`` with its confidence interval, a :class:`critwin.theory.span_pool.TVInterval`
    ``(value, low, high)``, for each task ``(A, B, t)``: the estimator of :func:`crossings` (one pool
    per set of components that can matter), so a task costs the components near it, not all of
    ``span``'s."""
    out: list = [None] * len(tasks)
    if not tasks:
        return out
    shells = [CrossingTask(A, B, 0.0, 1.0, False) for A, B, _ in tasks]
    parts = dict(enumerate(restrict(span, shells, [t for _, _, t in tasks])))
    groups = group_tasks(list(parts), list(parts.values()))
    order = [k for group in groups for k in group.keys]
    pool = Pool(span, groups, parts)
    by_time: dict[float, list[int]] = {}
    for j, k in enumerate(order):
        by_time.setdefault(float(tasks[k][2]), []).append(j)
    for t, js in by_time.items():
        for j, (value, low, high) in zip(js, pool.estimate(js, t), strict=True):
            out[order[j]] = TVInterval(float(value), float(low), float(high))
    return out


def honest_bracket(mc_low: float, mc_high: float, sure_low: float, sure_high: float) -> tuple[float, float]:
    """The Monte Carlo bracket ``[mc_low, mc_high]`` moved into the sure one (module notes): translated
    until inside, then cut to the sure bracket only where it is wider than that."""
    width = 0.0 if mc_high == mc_low else mc_high - mc_low  # both at the same infinity: a point
    if not width <= sure_high - sure_low:  # wider (or infinite): the sure part of the Monte Carlo one
        return max(mc_low, sure_low), min(mc_high, sure_high)
    if mc_low < sure_low:
        return sure_low, sure_low + width
    if mc_high > sure_high:
        return sure_high - width, sure_high
    return mc_low, mc_high


# --------------------------------------------------------------------------------------------- search
def _dyadic_inside(lo: float, hi: float) -> float:
    """The point of (lo, hi) with the coarsest dyadic grid ``j 2^-l``: shared by overlapping brackets."""
    level = math.floor(-math.log2(hi - lo)) - 1
    while True:
        h = 2.0**-level
        point = (math.floor(lo / h) + 1) * h
        if point < hi:
            return point
        level += 1


def _snap(t: float, slack: float, direction: int) -> float:
    """The coarsest dyadic point within ``slack`` of ``t`` on the side ``direction`` (-1 below, +1
    above), so that brackets starting near each other share their first evaluations."""
    if not (slack > 0 and math.isfinite(t)):
        return t
    lo, hi = (max(0.0, t - slack), t) if direction < 0 else (t, t + slack)
    return _dyadic_inside(lo, hi) if hi > lo else t


class _Search:
    """The pooled search of the value, lower and upper curve of every task of one pool.

    Per task and curve (arrays of shape (tasks, 3)): the predicate (``factor * TV <= level``, or ``<``
    for separations) is False at ``lo`` and True at ``hi`` once ``lo_known`` / ``hi_known``. Both start
    at the sure bracket's ends (snapped outwards to coarse dyadic times) and are checked there first; a
    curve that does not cross inside moves out by ``step`` (doubling). Then every bracket is bisected on
    shared dyadic times to ``max(tol, spread / 16)``."""

    def __init__(
        self, pool: Pool, tasks: list[CrossingTask], sure: list[SureBracket], tol: float, needed=None
    ):
        self.pool, self.tol, self.needed = pool, tol, needed
        n = len(tasks)
        self.level = np.array([t.level for t in tasks])[:, None]
        self.factor = np.array([t.factor for t in tasks])[:, None]
        self.strict = np.array([bool(t.separation) for t in tasks])[:, None]
        self.at_zero = np.where(self.strict[:, 0], -np.inf, 0.0)
        self.sure_low = np.array([_sure_low(t, s) for t, s in zip(tasks, sure, strict=True)])
        self.sure_high = np.array([s.high for s in sure])
        low0 = np.maximum(self.sure_low, 0.0)
        width = np.where(np.isfinite(self.sure_high), self.sure_high - low0, 1.0)
        lo = [0.0 if s.from_zero else _snap(s.low, w / 2, -1) for s, w in zip(sure, width, strict=True)]
        hi = [_snap(s.high, w / 2, +1) for s, w in zip(sure, width, strict=True)]
        self.lo = np.repeat(np.array(lo)[:, None], _CURVES, 1)
        self.hi = np.repeat(np.array(hi)[:, None], _CURVES, 1)
        self.lo_known = np.zeros((n, _CURVES), bool)
        self.hi_known = np.zeros((n, _CURVES), bool)
        self.step = np.repeat(np.maximum(width, 16 * tol)[:, None], _CURVES, 1)
        self.f_lo, self.f_hi = np.full(n, np.nan), np.full(n, np.nan)  # the value curve at lo and hi
        self.result = np.full((n, _CURVES), np.nan)
        self.idle = np.zeros(n, bool)  # tasks ``needed`` does not want refined (for now)

    # ------------------------------------------------------------------------------ one round
    def _resolution(self) -> np.ndarray:
        hi, lo = self.hi[:, _HIGH], np.maximum(self.lo[:, _LOW], 0.0)
        spread = np.where(np.isfinite(hi), hi - lo, np.inf)
        return np.maximum(self.tol, spread / _CI_RESOLUTION)

    def _wanted(self, i: int, c: int, resolution: float):
        """What curve ``c`` of task ``i`` needs next: a fixed time (an end to check), its bracket
        ``(lo, hi)`` to be cut, or None once resolved (then stored)."""
        lo, hi = self.lo[i, c], self.hi[i, c]
        if not self.lo_known[i, c]:
            return max(lo, 0.0)
        if not self.hi_known[i, c]:
            return hi if math.isfinite(hi) else max(1.0, 2.0 * lo)
        if hi - lo > resolution and lo < 0.5 * (lo + hi) < hi:
            return lo, hi
        self.result[i, c] = self._resolved(i, c)
        return None

    def _resolved(self, i: int, c: int) -> float:
        if c == _LOW:
            return self.lo[i, c]
        if c == _HIGH:
            return self.hi[i, c]
        return _interpolate(self.lo[i, c], self.hi[i, c], self.f_lo[i], self.f_hi[i], self.level[i, 0])

    def _times(self) -> list[float]:
        """This round's times: the ends to check, then one time inside the middle half of every bracket
        to cut, shared where it can be (narrowest brackets first; a new time is the coarsest dyadic
        point of the middle half, so that later rounds share too)."""
        resolution = self._resolution()
        fixed, brackets = set(), []
        for i, c in zip(*np.nonzero(self._open()), strict=True):
            # the value curve only places the reported time inside the bracket: a quarter of the
            # Monte Carlo spread is finer than its own noise
            want = self._wanted(i, c, resolution[i] * (_VALUE_COARSER if c == _VALUE else 1.0))
            if isinstance(want, tuple):
                brackets.append(want)
            elif want is not None:
                fixed.add(want)
        chosen = sorted(fixed)
        for lo, hi in sorted(brackets, key=lambda b: b[1] - b[0]):
            quarter = 0.25 * (hi - lo)
            k = bisect.bisect_left(chosen, lo + quarter)
            if k < len(chosen) and chosen[k] <= hi - quarter:
                continue
            bisect.insort(chosen, _dyadic_inside(lo + quarter, hi - quarter))
        return chosen

    def _open(self) -> np.ndarray:
        """(tasks, curves): the curves still to resolve, of the tasks being refined."""
        return np.isnan(self.result) & ~self.idle[:, None]

    def _evaluate(self, t: float) -> None:
        open_ = self._open()
        bisecting = open_ & self.lo_known & self.hi_known & (self.lo < t) & (t < self.hi)
        checking_lo = open_ & ~self.lo_known & (np.maximum(self.lo, 0.0) == t)
        checking_hi = open_ & self.lo_known & ~self.hi_known & (self._hi_wanted() == t)
        use = bisecting | checking_lo | checking_hi
        active = np.nonzero(use.any(1))[0]
        if active.size == 0:
            return
        f = self.factor[active] * self.pool.estimate(active.tolist(), t)
        holds = np.where(self.strict[active], f < self.level[active], f <= self.level[active])
        self._update(
            active, t, holds, f[:, _VALUE], bisecting[active], checking_lo[active], checking_hi[active]
        )

    def _hi_wanted(self) -> np.ndarray:
        return np.where(np.isfinite(self.hi), self.hi, np.maximum(1.0, 2.0 * self.lo))

    def _update(self, rows, t, holds, f_value, bisecting, checking_lo, checking_hi) -> None:
        lo, hi, step = self.lo[rows], self.hi[rows], self.step[rows]
        lo_known, hi_known, result = self.lo_known[rows], self.hi_known[rows], self.result[rows]
        # bisection: the bracket's end on the predicate's side moves to t
        up = (bisecting | checking_hi) & holds
        down = (bisecting | checking_hi) & ~holds
        hi, hi_known = np.where(up, t, hi), hi_known | (checking_hi & holds)
        # checking lo and the predicate already holds: the crossing is earlier, step down (at 0: done)
        early = checking_lo & holds
        hi, hi_known = np.where(early, t, hi), hi_known | early
        zero = early & (t <= 0.0)
        result = np.where(zero, self.at_zero[rows][:, None], result)
        lo = np.where(early & ~zero, np.maximum(0.0, t - step), lo)
        lo_known |= checking_lo & ~holds
        # checking hi and it does not hold yet: the crossing is later, step up (past T_MAX: never)
        late = checking_hi & ~holds
        lo, lo_known = np.where(down, t, lo), lo_known | down
        hi = np.where(late, np.where(np.isfinite(hi), t + step, np.inf), hi)
        result = np.where(late & (t >= T_MAX), np.inf, result)
        step = np.where(early | late, 2.0 * step, step)
        self.f_lo[rows] = np.where((down | (checking_lo & ~holds))[:, _VALUE], f_value, self.f_lo[rows])
        self.f_hi[rows] = np.where((up | early)[:, _VALUE], f_value, self.f_hi[rows])
        self.lo[rows], self.hi[rows], self.step[rows] = lo, hi, step
        self.lo_known[rows], self.hi_known[rows], self.result[rows] = lo_known, hi_known, result

    # ------------------------------------------------------------------------------ driver
    def run(self, report) -> list[Crossing]:
        """Search until every curve is resolved; ``report(count)`` after each round (tasks done)."""
        while True:
            if self.needed is not None:
                brackets = [self._bracket(i) for i in range(len(self.result))]
                self.idle = ~self.needed(*(np.array(b) for b in zip(*brackets, strict=True)))
            wanted = self._times()
            report(int((~self._open()).all(1).sum()))
            if not wanted:
                break
            for t in wanted:
                self._evaluate(t)
        return [self._crossing(i) for i in range(len(self.result))]

    def _so_far(self, i: int) -> tuple[float, float]:
        """The Monte Carlo bracket of task ``i`` established so far: its lower curve's ``lo`` (where that
        predicate is False; -inf before it is checked) and its upper curve's ``hi`` (where it is True;
        +inf before), or their resolved ends."""
        low, high = self.result[i, _LOW], self.result[i, _HIGH]
        if math.isnan(low):
            low = self.lo[i, _LOW] if self.lo_known[i, _LOW] else -math.inf
        if math.isnan(high):
            high = self.hi[i, _HIGH] if self.hi_known[i, _HIGH] else math.inf
        return low, high

    def _bracket(self, i: int) -> tuple[float, float]:
        return honest_bracket(*self._so_far(i), self.sure_low[i], self.sure_high[i])

    def _crossing(self, i: int) -> Crossing:
        low, high = self._bracket(i)
        value = self.result[i, _VALUE]
        if math.isnan(value):  # left unresolved (not needed): the value curve's bracket so far
            c = _VALUE
            if self.lo_known[i, c] and self.hi_known[i, c]:
                value = _interpolate(
                    self.lo[i, c], self.hi[i, c], self.f_lo[i], self.f_hi[i], self.level[i, 0]
                )
            else:
                value = 0.5 * (max(low, 0.0) + high) if math.isfinite(high) else high
        value = min(max(value, low), high)
        return Crossing(float(value), float(low), float(high), "monte-carlo")


def _sure_low(task: CrossingTask, sure: SureBracket) -> float:
    """The sure bracket's lower end, -inf (a separation) or 0 (a merge) when it may be at t = 0."""
    if sure.from_zero:
        return -math.inf if task.separation else 0.0
    return sure.low


def _interpolate(lo: float, hi: float, f_lo: float, f_hi: float, level: float) -> float:
    """Where the line through ``(lo, f_lo)`` and ``(hi, f_hi)`` meets ``level`` (inside [lo, hi])."""
    if not (math.isfinite(f_lo) and math.isfinite(f_hi)) or f_lo == f_hi or not math.isfinite(hi):
        return 0.5 * (lo + hi) if math.isfinite(hi) else hi
    return min(hi, max(lo, lo + (f_lo - level) / (f_lo - f_hi) * (hi - lo)))
