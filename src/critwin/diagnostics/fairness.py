"""Fairness: act only inside an attribute's critical window (docs/theory.md §8).

An attribute (a demographic class read by a classifier, a digit class) is decided inside its window.
To rebalance its distribution it is enough to act there: generate every trajectory unchanged down to
the fork time ``T`` (the window's start in generation, i.e. its upper end ``T_before`` in OU time),
draw a few continuations from each forked state, and keep, per trajectory, a continuation whose
attribute brings the batch closest to the target distribution. Everything decided before ``T``
(coarser features) is untouched by construction; only the continuation after ``T`` is resampled.

What it costs and what it leaves alone are measured: ``nfe - nfe_plain`` extra denoiser evaluations
(``n_candidates - 1`` continuations per trajectory), and, for every other attribute read by
``others``, its distribution on the plain and the rebalanced samples with the TV between them and
paired bootstrap intervals (resampling trajectories) of every per-value difference (Bonferroni over
the values, so that the verdict holds at the family level): an attribute is ``unchanged`` when each
interval contains 0.

Judges (docs/theory.md §8). The ``feature`` that selects the continuations is optimised for: its own reading
of the rebalanced batch hits the target by construction and measures the selector, not the model. The
number to report is that of an independent ``judge`` (another classifier trained on a disjoint split,
with another seed or architecture, or an analytic reader); :meth:`RebalanceResult.graded` returns it
and names who graded it. A judge that is the selector itself (the same object, or a reader of the same
name) is refused.

Intervals of a TV. The TV of an empirical distribution is biased upwards (sampling noise never cancels
in ``|p - q|``) and not smooth where ``p = q``, so a bootstrap percentile interval of it sits above the
plug-in estimate (a batch selected to hit the target exactly reads TV ~ 0 while its resamples read
~ 0.08 at n = 200 over ten classes): the estimate falls outside its own interval. A bootstrap of the
estimation error (``TV(p_hat, target) +- c``) holds the estimate but under-covers where a class is rare:
resamples never draw a class the sample lacks (exact coverage 0.33 at n = 20, p = (0.98, 0.02) against
(0.5, 0.5); 0.92 at n = 200, p = (0.97, 0.01, 0.01, 0.01) against uniform). Here every TV interval is
the range of the TV over a confidence box: Clopper–Pearson intervals of the proportions, Bonferroni
over them (:func:`~critwin._stats.clopper_pearson_bounds`), intersected with the simplex; the TV's
smallest and largest values over that polytope are exact (:func:`tv_interval`; paired differences in
:func:`paired_comparison`). The box holds the true proportions with probability at least the level,
for every ``p`` and ``n``, and then the interval holds the true TV: coverage is at least the level
(conservative; checked by simulation and exact enumeration in the tests), and the interval contains the
estimate, whose proportions lie in the box. For a quota-selected batch, whose proportions vary less
than independent draws', it is more conservative still.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._display import short_repr
from critwin._io import provenance
from critwin._stats import clopper_pearson_bounds
from critwin._validation import check_eps, check_positive_int, check_real_tensor, check_seed
from critwin.diagnostics.selection import integer_quotas, select_from_pool, select_to_target
from critwin.experiments import apply_feature, as_process, realise_times, resolve_feature
from critwin.experiments.checkpoint import progress_bar, resolve_seed
from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.features import feature_name
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.process import grid_times

__all__ = [
    "RebalanceResult",
    "rebalance",
    "total_variation",
    "tv_interval",
    "tv_range",
    "check_target",
    "check_judge",
    "select_to_target",
    "select_from_pool",
    "integer_quotas",
    "paired_comparison",
    "window_fork_time",
]


def total_variation(p, q) -> float:
    """``1/2 sum |p - q|`` between two discrete distributions of the same length."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"distributions must have the same length, got {p.shape} and {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


MAX_ENUMERATED = 16
"""Classes whose split :func:`tv_range` enumerates exactly (``2**16`` subsets); beyond, a valid bound."""


def tv_range(lower, upper, centre) -> tuple[float, float]:
    """Smallest and largest ``1/2 sum_k |x_k - c_k|`` over the box ``lower <= x <= upper`` intersected with
    the hyperplane ``sum x = sum c`` (for proportions ``x`` and a target ``c``: the box within the simplex).

    With ``sum x = sum c`` the distance is ``sum (x - c)_+ = max_S (x(S) - c(S))`` over the sets ``S`` of
    classes. Smallest: each term is at least ``(l_k - c_k)_+`` and, by the other form, the sum at least
    ``sum (c_k - u_k)_+``; the larger of the two bounds is attained (start from ``x = clip(c, l, u)`` and
    move mass toward the other side's ends), so it is the minimum (0 when ``c`` lies in the box). Largest:
    for each ``S``, ``x(S)`` reaches ``min(u(S), sum c - l(S^c))``, so the maximum is
    ``max_S min(a(S), b(S^c))`` with ``a = u - c``, ``b = c - l``. A class with ``a_k <= 0`` belongs in
    ``S^c`` and one with ``b_k <= 0`` in ``S``; the rest (``c_k`` inside its interval) are split every way
    when at most :data:`MAX_ENUMERATED`, else bounded by ``min(a_+ sum, b_+ sum)`` (still an upper bound:
    the interval stays valid, only wider). Both ends are clipped to ``[0, 1]``.

    The box must meet the hyperplane (it does when it holds an estimate that does).

    Examples
    --------
    >>> low, high = tv_range([0.1, 0.2], [0.4, 0.9], [0.5, 0.5])  # x_0 in [0.1, 0.4]: TV = 0.5 - x_0
    >>> round(low, 12), round(high, 12)
    (0.1, 0.4)
    """
    lower, upper, centre = (np.asarray(v, dtype=float) for v in (lower, upper, centre))
    smallest = max(np.clip(lower - centre, 0, None).sum(), np.clip(centre - upper, 0, None).sum())
    above, below = upper - centre, centre - lower  # a, b of the notes
    inside = below <= 0
    outside = (above <= 0) & ~inside
    free = ~inside & ~outside
    a0, b0 = above[inside].sum(), below[outside].sum()
    a, b = above[free], below[free]
    if a.size <= MAX_ENUMERATED:
        subsets = ((np.arange(2**a.size)[:, None] >> np.arange(a.size)) & 1).astype(float)
        largest = float(np.max(np.minimum(a0 + subsets @ a, b0 + (1 - subsets) @ b)))
    else:
        largest = float(min(a0 + a.sum(), b0 + b.sum()))
    return float(np.clip(smallest, 0.0, 1.0)), float(np.clip(largest, 0.0, 1.0))


def tv_interval(labels, target, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of ``TV(p, target)`` from labels drawn independently from ``p``.

    The range of the TV (:func:`tv_range`) over the box of Clopper–Pearson intervals of the ``C``
    proportions, each at level ``1 - (1 - level) / C`` (Bonferroni; for ``C = 2`` the two intervals are one
    event, so each is at ``level``), within the simplex. The box holds ``p`` with probability at least
    ``level`` for every ``p`` and ``n``, and then the interval holds ``TV(p, target)``; it contains the
    plug-in estimate, whose proportions lie in the box. Module notes: why not a bootstrap.

    Parameters
    ----------
    labels : (n,) integer labels in ``0..C-1``.
    target : (C,) target distribution.
    level : confidence level in (0, 1).

    Returns
    -------
    (lower, upper)

    Examples
    --------
    >>> low, high = tv_interval([0] * 50 + [1] * 50, [0.5, 0.5])
    >>> low, round(high, 3)
    (0.0, 0.102)
    """
    target = np.asarray(target, dtype=float)
    labels = np.asarray(labels).astype(int).ravel()
    if labels.size == 0:
        raise ValueError("labels must be non-empty")
    if labels.min() < 0 or labels.max() >= target.size:
        raise ValueError(f"labels must lie in 0..{target.size - 1}")
    level = check_eps(level, "level")
    family = 1 if target.size == 2 else target.size
    counts = np.bincount(labels, minlength=target.size)
    lower, upper = clopper_pearson_bounds(counts, labels.size, 1 - (1 - level) / family)
    low, high = tv_range(lower, upper, target)
    # The exact range holds the plug-in TV (its proportions lie in the box); the range's sums and the
    # estimate's round differently, by up to an ulp (1/3 from 96 labels over 3 classes: 0.33333333333333337
    # against an upper end 0.3333333333333333), so the ends are widened to hold it.
    estimate = total_variation(counts / labels.size, target)
    return min(low, estimate), max(high, estimate)


def check_judge(judge, feature, name: str = "judge"):
    """``judge`` (callable or None) if it is not the selecting ``feature`` itself.

    The same object, the same wrapped function, or a reader with the same explicit ``name`` (two
    :class:`~critwin.experiments.features.CallableFeature` of one reader) is refused with a ValueError
    naming ``name``: a number graded by its own selector measures the selector (docs/theory.md §8).
    """
    if judge is None:
        return None
    if not callable(judge):
        raise ValueError(f"{name} must be a callable attribute reader, got {type(judge).__name__}")
    same = judge is feature or getattr(judge, "fn", judge) is getattr(feature, "fn", feature)
    named = isinstance(getattr(judge, "name", None), str) and judge.name == getattr(feature, "name", None)
    if same or named:
        raise ValueError(
            f"{name} must be independent of the selecting feature, got {feature_name(judge)!r} for both: "
            "a number graded by its own selector measures the selector"
        )
    return judge


@dataclass
class RebalanceResult:
    """Result of :func:`rebalance`.

    Attributes
    ----------
    before, after, target : (C,) attribute distributions of the plain samples (one continuation per
        trajectory) and of the rebalanced samples *as the selecting feature reads them*, and the target.
    tv_before, tv_after : their total variation to ``target`` (the selector's own reading: optimised for,
        so ``tv_after`` flatters the result; report :meth:`graded`).
    tv_before_ci, tv_after_ci : intervals of those TVs (:func:`tv_interval`); None with ``intervals=False``.
    fork_time, fork_step : realised OU time (and model step) of the fork; ``inf`` and None where the
        candidates were drawn from the prior.
    samples : (n, ...) rebalanced outputs (data space).  labels : (n,) their attributes (selector).
    n_candidates : continuations drawn per trajectory.  nfe : denoiser evaluations, if counted;
        ``nfe_plain`` those of the plain samples (the trunks and one continuation each): the cost of
        rebalancing is ``nfe - nfe_plain``.
    others : {name: comparison} for the ``others`` readers: ``before``/``after`` distributions, ``tv``
        between them with ``tv_ci``, ``difference_ci`` per value (:func:`paired_comparison`) and
        ``unchanged``.
    judge : name of the independent judge (None without one).
    judged_before, judged_after, tv_judged_before, tv_judged_after, tv_judged_before_ci,
        tv_judged_after_ci : the same distributions, distances and intervals read by the judge.
    metadata : the settings (feature and judge names, requested fork time, target, seed), the process
        and provenance.
    """

    before: np.ndarray
    after: np.ndarray
    target: np.ndarray
    tv_before: float
    tv_after: float
    fork_time: float
    fork_step: Any
    samples: torch.Tensor
    labels: torch.Tensor
    n_candidates: int
    nfe: int | None = None
    nfe_plain: int | None = None
    tv_before_ci: tuple[float, float] | None = None
    tv_after_ci: tuple[float, float] | None = None
    others: dict[str, dict[str, Any]] = field(default_factory=dict)
    judged_before: np.ndarray | None = None
    judged_after: np.ndarray | None = None
    tv_judged_before: float | None = None
    tv_judged_after: float | None = None
    tv_judged_before_ci: tuple[float, float] | None = None
    tv_judged_after_ci: tuple[float, float] | None = None
    judge: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        graded = self.graded()
        fields = {k: graded[k] for k in ("tv_before", "tv_before_ci", "tv_after", "tv_after_ci")}
        fields.update(graded_by=graded["graded_by"], fork_time=self.fork_time, n=int(self.labels.numel()))
        fields.update(n_candidates=self.n_candidates, nfe=self.nfe)
        return short_repr("RebalanceResult", fields)

    def graded(self) -> dict[str, Any]:
        """The numbers to report: the judge's reading, or without a judge the selector's, flagged
        ``independent: False`` (``graded_by`` names who read them)."""
        if self.judge is None:
            values = (
                self.before,
                self.after,
                self.tv_before,
                self.tv_after,
                self.tv_before_ci,
                self.tv_after_ci,
            )
            graded_by, independent = self.metadata.get("feature"), False
        else:
            values = (
                self.judged_before,
                self.judged_after,
                self.tv_judged_before,
                self.tv_judged_after,
                self.tv_judged_before_ci,
                self.tv_judged_after_ci,
            )
            graded_by, independent = self.judge, True
        before, after, tv_before, tv_after, before_ci, after_ci = values
        return {
            "graded_by": graded_by,
            "independent": independent,
            "before": before.tolist(),
            "after": after.tolist(),
            "tv_before": tv_before,
            "tv_before_ci": None if before_ci is None else list(before_ci),
            "tv_after": tv_after,
            "tv_after_ci": None if after_ci is None else list(after_ci),
        }

    def to_dict(self) -> dict[str, Any]:
        def listed(value):
            return None if value is None else (value.tolist() if hasattr(value, "tolist") else list(value))

        return {
            "graded": self.graded(),
            "selector": self.metadata.get("feature"),
            "judge": self.judge,
            "before": self.before.tolist(),
            "after": self.after.tolist(),
            "target": self.target.tolist(),
            "tv_before": self.tv_before,
            "tv_after": self.tv_after,
            "tv_before_ci": listed(self.tv_before_ci),
            "tv_after_ci": listed(self.tv_after_ci),
            "fork_time": self.fork_time,
            "fork_step": self.fork_step,
            "n_candidates": self.n_candidates,
            "nfe": self.nfe,
            "nfe_plain": self.nfe_plain,
            "others": self.others,
            "judged_before": listed(self.judged_before),
            "judged_after": listed(self.judged_after),
            "tv_judged_before": self.tv_judged_before,
            "tv_judged_after": self.tv_judged_after,
            "tv_judged_before_ci": listed(self.tv_judged_before_ci),
            "tv_judged_after_ci": listed(self.tv_judged_after_ci),
            "metadata": self.metadata,
        }


def check_target(target, n_classes: int, name: str = "target") -> np.ndarray:
    """``target`` as a (C,) distribution (None: uniform); a ValueError naming ``name`` otherwise."""
    message = f"{name} must be {n_classes} non-negative probabilities summing to 1"
    if target is None:
        return np.full(n_classes, 1.0 / n_classes)
    try:
        # NaN compares False with everything: without the finiteness check it passes every test below.
        target = check_real_tensor(target, name, torch.float64).numpy()
    except ValueError as exc:
        raise ValueError(f"{message} ({exc})") from None
    if target.shape != (n_classes,) or (target < 0).any() or abs(target.sum() - 1) > 1e-6:
        raise ValueError(f"{message}, got {target.tolist()}")
    return target


def rebalance(
    model,
    n: int,
    feature,
    n_classes: int,
    fork_time: float,
    *,
    target=None,
    n_candidates: int = 4,
    sampler: str | None = None,
    seed: int | None = None,
    cond: dict[str, Any] | None = None,
    judge=None,
    generator: torch.Generator | None = None,
    others: Mapping[str, Any] | None = None,
    intervals: bool = True,
    level: float = 0.95,
    progress: bool = False,
) -> RebalanceResult:
    """Rebalance an attribute by resampling continuations at ``fork_time`` only.

    Parameters
    ----------
    model : a mixture (with ``sampler``, default exact) or any :class:`~critwin.ReverseProcess`.
    n : number of samples.
    feature : attribute reader ``f(x) -> (n,)`` labels in ``0..n_classes-1`` (or ``"bayes"``, the
        mixture's Bayes label): the selector.
    n_classes : number of attribute values C.
    fork_time : OU time at which continuations are resampled (the window's upper end ``T_before``), or
        ``math.inf``: the window is still open at the process's first step (its ``T_before`` censored
        above: the initial noise decides), so each trajectory's candidates are independent generations
        from the prior, the first of them the plain sample, and the batch is chosen from all of them
        (:func:`select_from_pool`); at a finite fork each trajectory keeps one of its own continuations
        (:func:`select_to_target`).
    target : (C,) target distribution (default uniform).
    n_candidates : continuations per trajectory (>= 2); each costs one continuation's NFEs.
    sampler, cond : passed to the process.
    seed, generator : ``seed`` fixes every draw; ``generator`` gives it when ``seed`` is None (as in
        :func:`critwin.forward_reverse`); neither: seed 0 (deterministic by default).
    judge : an independent attribute reader (another classifier, an analytic reader) that grades the plain
        and the rebalanced samples; the ``feature`` that selected them is refused as its own judge
        (:func:`check_judge`). Without one, :meth:`RebalanceResult.graded` is the selector's reading,
        flagged not independent.
    others : {name: reader} of the other attributes, read on the plain and the rebalanced samples (they
        should not move: see the module notes).
    intervals, level : whether to compute the intervals of the TVs and of the paired differences
        (:func:`tv_interval`, :func:`paired_comparison`), and their confidence level.
    progress : show a progress bar (sampler steps of the trunk and of every continuation).

    Returns
    -------
    RebalanceResult

    Examples
    --------
    >>> from critwin import GaussianMixture
    >>> mix = GaussianMixture(torch.tensor([[-4.0], [4.0]]), 1.0, torch.tensor([0.8, 0.2]))
    >>> judge = lambda x: (x[:, 0] > 0).long()  # an analytic reader, not the selector
    >>> res = rebalance(mix, 200, "bayes", 2, 3.0, judge=judge, seed=0)
    >>> graded = res.graded()
    >>> graded["graded_by"] != res.metadata["feature"] and graded["tv_after"] < graded["tv_before"]
    True
    """
    n = check_positive_int(n, "n")
    seed = resolve_seed(seed, generator, default=0)
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    n_candidates = check_positive_int(n_candidates, "n_candidates", minimum=2)
    intervals = bool(intervals)
    level = check_eps(level, "level")
    target = check_target(target, n_classes)
    others = _check_others(others)
    judge = check_judge(judge, feature)
    process = as_process(model, sampler)
    from_prior = isinstance(fork_time, (int, float)) and fork_time == math.inf
    if from_prior:
        index, realised, steps = 0, torch.tensor([math.inf]), None
    else:
        process, _, indices, realised, steps = realise_times(process, fork_time, "fork_time")
        if realised[0].item() <= 0:
            raise ValueError("fork_time must be > 0: at t = 0 the sample is finished")
        index = int(indices[0])
    feature_fn = resolve_feature(feature, process, caller="rebalance")
    generator = torch.Generator().manual_seed(seed)
    device = getattr(process, "device", None)
    if device is not None and torch.device(device).type != "cpu":
        generator = torch.Generator(device=device).manual_seed(seed)
    nfe_start = getattr(process, "nfe", None)

    n_steps = int(process.times.numel()) - 1
    with progress_bar(index + n_candidates * (n_steps - index), "rebalance", progress) as advance:
        # The bar draws nothing at random: a sampler callback would make the exact mixture sampler step
        # through every grid point (other draws), so there the bar advances once per run instead.
        stepwise = progress and getattr(process, "sampler", None) != "exact"
        step = (lambda *_: advance(1)) if stepwise else None
        trunk = process.prior(n, generator=generator, device=device)
        trunk = process.run(trunk, start=0, stop=index, generator=generator, cond=cond, callback=step)
        chunked = progress and not stepwise
        if chunked:
            advance(index)
        outputs, candidate_labels, nfe_plain = _continuations(
            process,
            trunk,
            index,
            n_candidates,
            feature_fn,
            generator,
            cond,
            nfe_start,
            step,
            (lambda: advance(n_steps - index)) if chunked else None,
            (lambda: process.prior(n, generator=generator, device=device)) if from_prior else None,
        )
    if candidate_labels.max() >= n_classes:
        raise ValueError(f"feature returned label {candidate_labels.max()} >= n_classes={n_classes}")
    if from_prior:  # independent generations: any candidate may fill any slot
        rows, columns = select_from_pool(candidate_labels, target * n)
    else:  # one continuation of each trunk, so that what the trunk decided stays
        rows, columns = select_to_target(candidate_labels, target * n), np.arange(n)
    chosen_labels = candidate_labels[rows, columns]
    stacked = torch.stack(outputs)
    samples = stacked[tuple(torch.as_tensor(v, device=stacked.device) for v in (rows, columns))]
    nfe_end = getattr(process, "nfe", None)
    selected = _reading(candidate_labels[0], chosen_labels, n_classes, target, intervals, level)
    judged = {}
    if judge is not None:
        plain_read, chosen_read = (_labels(judge, x, n_classes, "judge") for x in (outputs[0], samples))
        judged = _reading(plain_read, chosen_read, n_classes, target, intervals, level, prefix="judged_")
    compared = {name: _compare(fn, outputs[0], samples, level, intervals) for name, fn in others.items()}
    settings = {"feature": feature_name(feature), "judge": None if judge is None else feature_name(judge)}
    settings["others"] = {name: feature_name(fn) for name, fn in others.items()}
    settings.update(fork_time_requested=float(fork_time), target=target.tolist(), seed=seed)
    return RebalanceResult(
        **selected,
        target=target,
        fork_time=float(realised[0]),
        fork_step=None if steps is None else steps[0].item(),
        samples=samples,
        labels=torch.as_tensor(chosen_labels),
        n_candidates=n_candidates,
        nfe=None if nfe_start is None or nfe_end is None else int(nfe_end - nfe_start),
        nfe_plain=nfe_plain,
        others=compared,
        **judged,
        judge=settings["judge"],
        metadata={
            **settings,
            "process": process.describe(),
            "provenance": provenance(device, getattr(process, "dtype", None)),
        },
    )


def _continuations(
    process,
    trunk,
    index,
    n_candidates,
    feature_fn,
    generator,
    cond,
    nfe_start,
    callback,
    after_each=None,
    fresh_trunk=None,
):
    """``n_candidates`` continuations of every trunk state from grid index ``index``: their outputs,
    labels (n_candidates, n) and the NFEs of the plain samples (trunks and one continuation each).
    ``after_each()`` (optional) is called after every continuation; ``fresh_trunk()`` (optional) gives
    every candidate after the first its own trunk (independent prior draws)."""
    outputs, labels = [], []
    nfe_plain = None
    for k in range(n_candidates):
        if k and fresh_trunk is not None:
            trunk = fresh_trunk()
        x = process.decode(process.run(trunk, start=index, generator=generator, cond=cond, callback=callback))
        if after_each is not None:
            after_each()
        if nfe_plain is None and nfe_start is not None:
            nfe_plain = int(process.nfe - nfe_start)
        outputs.append(x)
        labels.append(apply_feature(feature_fn, x)[0])
    return outputs, torch.stack(labels).numpy(), nfe_plain


def _labels(reader, x, n_classes: int, name: str) -> np.ndarray:
    labels = apply_feature(reader, x)[0].numpy()
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} returned labels outside 0..{n_classes - 1}")
    return labels


def _reading(plain, chosen, n_classes, target, intervals, level, prefix: str = "") -> dict[str, Any]:
    """One reader's distributions of the plain and the rebalanced samples, their TVs to ``target`` and
    the intervals of those (:func:`tv_interval`; none without ``intervals``), as RebalanceResult fields."""
    out = {}
    for side, labels in (("before", plain), ("after", chosen)):
        dist = np.bincount(labels, minlength=n_classes) / labels.size
        out[f"{prefix}{side}"] = dist
        out[f"tv_{prefix}{side}"] = total_variation(dist, target)
        out[f"tv_{prefix}{side}_ci"] = tv_interval(labels, target, level) if intervals else None
    return out


def _check_others(others) -> dict[str, Any]:
    if others is None:
        return {}
    if not isinstance(others, Mapping) or not all(isinstance(k, str) and k for k in others):
        raise ValueError("others must be a mapping attribute name -> reader")
    for name, fn in others.items():
        if not callable(fn):
            raise ValueError(f"others: the reader of {name!r} must be callable, got {type(fn).__name__}")
    return dict(others)


def _distribution(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=n_classes) / labels.size


def paired_comparison(before, after, level: float = 0.95, n_classes: int | None = None, intervals=True):
    """One attribute read on paired samples (trajectory ``i`` before and after): both distributions,
    their TV, and intervals of the per-value differences and of the TV that hold at family level.

    The difference of value ``k`` is ``d_k = P(after = k, before != k) - P(before = k, after != k)``:
    two proportions of the ``n`` pairs (pairs that agree cancel). Each of the ``2 C`` proportions gets a
    Clopper–Pearson interval at level ``1 - (1 - level) / (2 C)`` (Bonferroni; for ``C = 2`` the two
    proportions of one value are those of the other, so ``2`` intervals), so with probability at least
    ``level`` all hold and every ``d_k`` lies in ``[lo(in_k) - hi(out_k), hi(in_k) - lo(out_k)]``. The
    TV ``1/2 sum |d_k|`` then lies in its range over that box with ``sum d = 0`` (:func:`tv_range`): both
    cover at least at ``level`` for every joint distribution of the pairs, and contain their estimates.
    Unlike a bootstrap over the pairs, which reads ``[0, 0]`` when no pair changed, they say how large a
    change ``n`` pairs cannot rule out (rare changes: module notes).

    Parameters
    ----------
    before, after : (n,) labels of the same n trajectories under two methods.
    level : confidence level (family level of the per-value intervals).
    n_classes : number of values (default: the largest label + 1).
    intervals : False: distributions and TV only.

    Returns
    -------
    ``{"before", "after", "tv", "tv_ci", "difference_ci", "unchanged"}``: ``difference_ci`` the intervals
    of ``after - before`` per value, ``unchanged`` when each contains 0 (one verdict at family level
    ``level``); the last three None without intervals.

    Examples
    --------
    >>> same = paired_comparison([0, 1, 0, 1] * 25, [0, 1, 0, 1] * 25)
    >>> same["tv"], same["tv_ci"][0], round(same["tv_ci"][1], 3), same["unchanged"]
    (0.0, 0.0, 0.043, True)
    """
    before, after = np.asarray(before).astype(int).ravel(), np.asarray(after).astype(int).ravel()
    if before.size == 0 or before.shape != after.shape:
        raise ValueError(f"before and after must be non-empty and paired, got {before.size} and {after.size}")
    C = int(max(before.max(), after.max())) + 1 if n_classes is None else int(n_classes)
    n = before.size
    p, q = _distribution(before, C), _distribution(after, C)
    out = {"before": p.tolist(), "after": q.tolist(), "tv": total_variation(p, q)}
    if not intervals:
        return {**out, "tv_ci": None, "difference_ci": None, "unchanged": None}
    level = check_eps(level, "level")
    moved = before != after
    gained = np.bincount(after[moved], minlength=C)  # pairs that moved into value k
    lost = np.bincount(before[moved], minlength=C)  # pairs that moved out of it
    family = 2 if C == 2 else 2 * C
    in_low, in_high = clopper_pearson_bounds(gained, n, 1 - (1 - level) / family)
    out_low, out_high = clopper_pearson_bounds(lost, n, 1 - (1 - level) / family)
    low, high = in_low - out_high, in_high - out_low
    out["tv_ci"] = list(tv_range(low, high, np.zeros(C)))
    out["difference_ci"] = [[float(a), float(z)] for a, z in zip(low, high, strict=True)]
    out["unchanged"] = bool(np.all((low <= 0) & (high >= 0)))
    return out


def _compare(reader, plain, rebalanced, level: float, intervals: bool) -> dict[str, Any]:
    """Another attribute on the plain and rebalanced samples (:func:`paired_comparison`)."""
    before, after = (apply_feature(reader, x)[0].numpy() for x in (plain, rebalanced))
    return paired_comparison(before, after, level, intervals=intervals)


def window_fork_time(
    model,
    x0,
    feature,
    *,
    times=None,
    n_per_time: int = 2,
    delta: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> tuple[float, WindowEstimate]:
    """Where to fork: the upper end ``t_before`` of the attribute's measured window (a forward–reverse
    sweep of the sources ``x0`` read by ``feature``; default times: 8 spread over the grid). A window
    still open at the largest time (censored above) forks at that time. ``progress``: a bar over the
    sweep's units.

    Returns
    -------
    (fork time, the window estimate it came from)
    """
    seed = check_seed(seed)
    process = as_process(model, None)
    times = grid_times(process, 8) if times is None else times
    result = forward_reverse(process, x0, times, n_per_time, feature=feature, seed=seed, progress=progress)
    estimate = estimate_window(result, delta, n_boot=0, per_class=False)
    fork = estimate.t_before if np.isfinite(estimate.t_before) else float(estimate.times.max())
    return float(max(fork, float(estimate.times[estimate.times > 0].min()))), estimate
