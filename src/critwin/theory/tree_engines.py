"""The engines behind :func:`critwin.theory.tree.hierarchy` and :func:`~critwin.theory.tree.merge_times`.

An engine answers the tree's questions about a GaussianMixture: pairwise linkage values, whether a set
is merged or separated at a time (``True``/``False``, or ``None`` where its interval straddles the
threshold), and batched merge and separation times with their brackets. :class:`SpanEngine` works in
the span of the means (closed forms, sure bounds, Monte Carlo on shared pools) and needs components
sharing one isotropic covariance; :class:`ExactEngine` does one TV (exact, quadrature or Monte Carlo)
per check. A CategoricalMixture's engine is :class:`critwin.theory.discrete_times.CategoricalEngine`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from critwin.mixtures import GaussianMixture
from critwin.theory.divergence import component_tv, tv
from critwin.theory.span import SpanMixture, shared_isotropic
from critwin.theory.span_bounds import CrossingTask, as_index, complement, complement_bounds, tv_bounds_at
from critwin.theory.span_crossings import crossings, honest_bracket, tv_values
from critwin.theory.span_pool import TVInterval
from critwin.theory.windows import Crossing, merge_time, separation_time, status_from_times

__all__ = ["ExactEngine", "SpanEngine", "gaussian_engine", "complement", "decide", "all_of"]


def gaussian_engine(mixture: GaussianMixture, eps: float, method: str, kw: dict):
    """The span engine for ``"fast"`` (and ``"auto"`` where it applies), else the exact one."""
    fast = shared_isotropic(mixture)
    if method == "fast" and not fast:
        raise ValueError("method='fast' needs components sharing one isotropic covariance; use 'exact'")
    return SpanEngine(mixture, eps, kw) if fast and method != "exact" else ExactEngine(mixture, eps, kw)


class ExactEngine:
    """Pairwise merge times by bisection, one TV (exact, quadrature or Monte Carlo) per check."""

    def __init__(self, mixture, eps, kw):
        self.mixture, self.eps, self.kw, self.tol = mixture, eps, kw, kw["tol"]
        self.K = mixture.n_components

    def linkage_values(self, report) -> torch.Tensor:
        """(K, K) pairwise values whose complete linkage is the tree; here the merge times themselves."""
        K, tau = self.K, torch.zeros(self.K, self.K, dtype=torch.float64)
        for i in range(K):
            for j in range(i + 1, K):
                tau[i, j] = tau[j, i] = merge_time(self.mixture, [i], [j], self.eps, **self.kw)[0]
            report("pairs", i + 1, K)
        return tau

    def time_of(self, value: float) -> float:
        return value

    def merged(self, comps: list[int], t: float, value: float) -> bool | None:
        """Whether every pair of ``comps`` is eps-close at ``t`` (``value``: their largest linkage value)."""

        def pair(i: int, j: int) -> bool | None:
            tv_ij, exact = component_tv(self.mixture, i, j, t)
            if exact:
                return decide(tv_ij, tv_ij, self.eps, above=False)
            est = tv(
                self.mixture.subset([i]), self.mixture.subset([j]), t, self.kw["n"], self.kw["generator"]
            )
            return decide(est.low, est.high, self.eps, above=False)

        return all_of(pair(i, j) for i in comps for j in comps if i < j)

    def separations(self, requests, parents=None) -> list[TVInterval]:
        """``TV(p_t^comps, p_t^rest)`` with its interval for each request ``(comps, rest, t)`` (``rest``
        None: the complement of ``comps``). ``parents``: the requests' tree, where they are the nodes of
        one against their complements (parents first, -1 for the root's children); unused here."""
        out = []
        for comps, rest, t in requests:
            rest = complement(comps, self.K) if rest is None else rest
            est = tv(
                self.mixture.subset(comps), self.mixture.subset(rest), t, self.kw["n"], self.kw["generator"]
            )
            out.append(TVInterval(est.value, est.low, est.high))
        return out

    def merge_time(self, A, B):
        return merge_time(self.mixture, A, B, self.eps, **self.kw)

    def separation_time(self, S):
        return separation_time(self.mixture, S, self.eps, **self.kw)

    def times(self, requests, report) -> list[Crossing]:
        """``merge_time(A, B)`` for each request ``(A, B)``, ``separation_time(A)`` for ``(A, None)``."""
        out = []
        for done, (A, B) in enumerate(requests, 1):
            out.append(self.separation_time(A) if B is None else self.merge_time(A, B))
            report(done, len(requests))
        return out


class SpanEngine:
    """Closed forms, sure bounds and Monte Carlo in the span of the means (:class:`SpanMixture`)."""

    def __init__(self, mixture, eps, kw):
        self.span = SpanMixture(mixture, kw["n"], kw["generator"])
        self.eps, self.tol = eps, kw["tol"]
        self.K = mixture.n_components

    def linkage_values(self, report) -> torch.Tensor:
        # The merge time is increasing in the distance: complete linkage on squared distances is the same.
        report("pairs", self.K, self.K)
        return self.span.sq_dist

    def time_of(self, value: float) -> float:
        return float(self.span.merge_time_of(value, self.eps))

    def merged(self, comps: list[int], t: float, value: float) -> bool | None:
        # The pairwise TV is increasing in the distance: the farthest pair decides for all.
        tv_max = math.erf(self.span.scale(t) * math.sqrt(value) / (2 * math.sqrt(2.0)))
        return decide(tv_max, tv_max, self.eps, above=False)

    def separations(self, requests, parents=None) -> list[TVInterval]:
        """As :meth:`ExactEngine.separations`: the sure bounds, and Monte Carlo only where they straddle
        the threshold (every such check at once, :func:`critwin.theory.span_crossings.tv_values`); a
        Monte Carlo interval cut by the bounds keeps its width (:func:`honest_bracket`, docs/theory.md §9).
        With ``parents`` (the requests are the nodes of a tree against their complements), the bounds
        of many pairs come per subtree (:func:`critwin.theory.span_bounds.complement_bounds`)."""
        threshold = 1.0 - self.eps * self.eps
        times = [t for *_, t in requests]
        if parents is None:
            requests = [(c, complement(c, self.K) if r is None else r, t) for c, r, t in requests]
            bounds = tv_bounds_at(self.span, [(comps, rest) for comps, rest, _ in requests], times)
        else:
            bounds = complement_bounds(self.span, [c for c, *_ in requests], parents, times, threshold)
        out = [TVInterval((high if high < threshold else low), low, high) for low, high in bounds]
        pending = [k for k, (low, high) in enumerate(bounds) if not (high < threshold or low >= threshold)]
        checks = [requests[k] for k in pending]
        estimates = tv_values(
            self.span, [(c, complement(c, self.K) if r is None else r, t) for c, r, t in checks]
        )
        for k, est in zip(pending, estimates, strict=True):
            sure = out[k]
            low, high = honest_bracket(est.low, est.high, sure.low, sure.high)
            out[k] = TVInterval(min(high, max(low, est.value)), low, high)
        return out

    def times(self, requests, report, windows=None) -> list[Crossing]:
        """As :meth:`ExactEngine.times`, every crossing at once
        (:func:`critwin.theory.span_crossings.crossings`: sure bounds first, then Monte Carlo pooled over
        the tasks that share their components).

        ``windows``: optional ``(merged, separated_before, separated_after)`` request indices (the middle
        one None for +inf) of windows (:func:`critwin.theory.windows.window_from_times`) that are the
        only use of these times: a time is then refined only while a window it enters is undetermined,
        and one that no such window needs keeps the bracket that decided them (its sure bracket where
        the bounds decide, no Monte Carlo)."""
        out: list = [None] * len(requests)
        tasks, where = [], []
        for k, (A, B) in enumerate(requests):
            task = self._task(A, B)
            if isinstance(task, Crossing):
                out[k] = task
            else:
                tasks.append(task)
                where.append(k)
        needed = None if windows is None else _window_rule(out, where, windows)
        for k, result in zip(where, crossings(self.span, tasks, self.tol, report, needed), strict=True):
            out[k] = result
        return out

    def _task(self, A, B) -> CrossingTask | Crossing:
        """The crossing task of a request, or its answer when there is nothing to compute."""
        if B is None:
            rest = complement(A, self.K)
            if not rest.numel():
                return Crossing(math.inf, math.inf, math.inf, "closed-form")
            return CrossingTask(as_index(A), rest, 1.0 - self.eps * self.eps, 1.0, True)
        # TV(p^A, p^B) = (1 - W_A / W_B) TV(p^A, p^{B - A}) for A ⊂ B
        B = as_index(B)
        rest = B[~torch.isin(B, as_index(A))]
        w = self.span.weights
        factor = 1.0 - float(w[A].sum() / w[B].sum()) if rest.numel() else 0.0
        if factor <= 0.0:
            return Crossing(0.0, 0.0, 0.0, "closed-form")
        return CrossingTask(as_index(A), rest, self.eps, factor, False)


def _window_rule(fixed: list, where: list[int], windows):
    """``needed(low, high)`` for :func:`critwin.theory.span_crossings.crossings`: the tasks (requests
    ``where``; the other requests' crossings are ``fixed``) that enter a window whose status their
    brackets leave undetermined."""
    infinite = Crossing(math.inf, math.inf, math.inf, "closed-form")
    windows = [(m, infinite if b is None else b, a) for m, b, a in windows]
    task_of = {k: j for j, k in enumerate(where)}

    def needed(low, high) -> np.ndarray:
        current = list(fixed)
        for j, k in enumerate(where):
            current[k] = Crossing(float(low[j]), float(low[j]), float(high[j]), "")
        out = np.zeros(len(where), dtype=bool)
        for m, b, a in windows:
            before = b if isinstance(b, Crossing) else current[b]
            if status_from_times(current[m], before, current[a]) == "undetermined":
                for k in (m, b, a):
                    if not isinstance(k, Crossing) and k in task_of:
                        out[task_of[k]] = True
        return out

    return needed


def decide(low: float, high: float, threshold: float, above: bool) -> bool | None:
    """Whether a TV with interval ``[low, high]`` is ``>= threshold`` (``above``) or ``<= threshold``:
    True / False when the whole interval says so, None when it straddles."""
    if above:
        return True if low >= threshold else (False if high < threshold else None)
    return True if high <= threshold else (False if low > threshold else None)


def all_of(values) -> bool | None:
    values = list(values)
    return False if False in values else (None if None in values else True)
