"""Fairness: act only inside an attribute's critical window (THEORY §8).

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._io import provenance
from critwin._validation import check_eps, check_positive_int, check_real_tensor, check_seed
from critwin.experiments import apply_feature, as_process, realise_times, resolve_feature
from critwin.experiments.checkpoint import resolve_seed
from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.features import feature_name
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.process import grid_times

__all__ = ["RebalanceResult", "rebalance", "total_variation", "check_target", "window_fork_time"]


def total_variation(p, q) -> float:
    """``1/2 sum |p - q|`` between two discrete distributions of the same length."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"distributions must have the same length, got {p.shape} and {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


@dataclass
class RebalanceResult:
    """Result of :func:`rebalance`.

    Attributes
    ----------
    before, after, target : (C,) attribute distributions of the plain samples (one continuation per
        trajectory), of the rebalanced samples, and the requested one.
    tv_before, tv_after : their total variation to ``target``.
    fork_time, fork_step : realised OU time (and model step) of the fork.
    samples : (n, ...) rebalanced outputs (data space).  labels : (n,) their attributes.
    n_candidates : continuations drawn per trajectory.  nfe : denoiser evaluations, if counted;
        ``nfe_plain`` those of the plain samples (the trunks and one continuation each): the cost of
        rebalancing is ``nfe - nfe_plain``.
    tv_before_ci, tv_after_ci : bootstrap intervals (resampling trajectories) of the TV to ``target``
        as the judge reads it (the feature without a judge); None with ``n_boot=0``.
    others : {name: comparison} for the ``others`` readers: ``before``/``after`` distributions, ``tv``
        between them with ``tv_ci``, ``difference_ci`` per value (paired bootstrap) and ``unchanged``.
    judged_before, judged_after, tv_judged_before, tv_judged_after : the same distributions and distances
        read by the independent ``judge`` (None without one). The selecting ``feature`` is optimised
        for, so its own reading flatters the result; the judge's is the one to report.
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
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.tolist(),
            "after": self.after.tolist(),
            "target": self.target.tolist(),
            "tv_before": self.tv_before,
            "tv_after": self.tv_after,
            "fork_time": self.fork_time,
            "fork_step": self.fork_step,
            "n_candidates": self.n_candidates,
            "nfe": self.nfe,
            "nfe_plain": self.nfe_plain,
            "tv_before_ci": None if self.tv_before_ci is None else list(self.tv_before_ci),
            "tv_after_ci": None if self.tv_after_ci is None else list(self.tv_after_ci),
            "others": self.others,
            "judged_before": None if self.judged_before is None else self.judged_before.tolist(),
            "judged_after": None if self.judged_after is None else self.judged_after.tolist(),
            "tv_judged_before": self.tv_judged_before,
            "tv_judged_after": self.tv_judged_after,
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


def _select(candidate_labels: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Per trajectory, the candidate whose attribute is furthest below its quota (greedy).

    Trajectories with the fewest distinct options choose first, so scarce attributes are not used up
    by trajectories that could have produced anything.
    """
    n_candidates, n = candidate_labels.shape
    counts = np.zeros_like(quotas, dtype=float)
    choice = np.zeros(n, dtype=int)
    options = [np.unique(candidate_labels[:, i]) for i in range(n)]
    for i in sorted(range(n), key=lambda i: len(options[i])):
        deficit = quotas[options[i]] - counts[options[i]]
        label = options[i][int(np.argmax(deficit))]
        choice[i] = int(np.nonzero(candidate_labels[:, i] == label)[0][0])
        counts[label] += 1
    return choice


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
    n_boot: int = 200,
    level: float = 0.95,
) -> RebalanceResult:
    """Rebalance an attribute by resampling continuations at ``fork_time`` only.

    Parameters
    ----------
    model : a mixture (with ``sampler``, default exact) or any :class:`~critwin.ReverseProcess`.
    n : number of samples.
    feature : attribute reader ``f(x) -> (n,)`` labels in ``0..n_classes-1`` (or ``"bayes"``, the
        mixture's Bayes label).
    n_classes : number of attribute values C.
    fork_time : OU time at which continuations are resampled (the window's upper end ``T_before``).
    target : (C,) target distribution (default uniform).
    n_candidates : continuations per trajectory (>= 2); each costs one continuation's NFEs.
    sampler, cond : passed to the process.
    seed, generator : ``seed`` fixes every draw; ``generator`` gives it when ``seed`` is None (as in
        :func:`critwin.forward_reverse`); neither: seed 0 (deterministic by default).
    judge : an independent attribute reader (another classifier, a held-out reader) that scores the plain
        and the rebalanced samples; the ``feature`` that selected them is no fair judge of its own choice.
    others : {name: reader} of the other attributes, read on the plain and the rebalanced samples (they
        should not move: see the module notes).
    n_boot, level : bootstrap replicates (0: no intervals) and confidence level of the intervals.

    Returns
    -------
    RebalanceResult
    """
    n = check_positive_int(n, "n")
    seed = resolve_seed(seed, generator, default=0)
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    n_candidates = check_positive_int(n_candidates, "n_candidates", minimum=2)
    n_boot = check_positive_int(n_boot, "n_boot", minimum=0)
    level = check_eps(level, "level")
    target = check_target(target, n_classes)
    others = _check_others(others)
    process = as_process(model, sampler)
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

    trunk = process.prior(n, generator=generator, device=device)
    trunk = process.run(trunk, start=0, stop=index, generator=generator, cond=cond)
    outputs, candidate_labels, nfe_plain = _continuations(
        process, trunk, index, n_candidates, feature_fn, generator, cond, nfe_start
    )
    if candidate_labels.max() >= n_classes:
        raise ValueError(f"feature returned label {candidate_labels.max()} >= n_classes={n_classes}")
    quotas = target * n
    choice = _select(candidate_labels, quotas)
    chosen_labels = torch.as_tensor(candidate_labels[choice, np.arange(n)])
    stacked = torch.stack(outputs)
    samples = stacked[torch.as_tensor(choice, device=stacked.device), torch.arange(n, device=stacked.device)]
    before = np.bincount(candidate_labels[0], minlength=n_classes) / n
    after = np.bincount(chosen_labels.numpy(), minlength=n_classes) / n
    nfe_end = getattr(process, "nfe", None)
    judged = _judge(judge, outputs[0], samples, n_classes, target)
    rng = np.random.default_rng(seed)
    reader = feature_fn if judge is None else judge
    plain_read, chosen_read = (apply_feature(reader, x)[0].numpy() for x in (outputs[0], samples))
    tv_cis = _tv_to_target_cis(plain_read, chosen_read, target, n_boot, level, rng)
    compared = {name: _compare(fn, outputs[0], samples, n_boot, level, rng) for name, fn in others.items()}
    settings = {"feature": feature_name(feature), "judge": None if judge is None else feature_name(judge)}
    settings["others"] = {name: feature_name(fn) for name, fn in others.items()}
    settings.update(fork_time_requested=float(fork_time), target=target.tolist(), seed=seed)
    return RebalanceResult(
        before=before,
        after=after,
        target=target,
        tv_before=total_variation(before, target),
        tv_after=total_variation(after, target),
        fork_time=float(realised[0]),
        fork_step=None if steps is None else steps[0].item(),
        samples=samples,
        labels=chosen_labels,
        n_candidates=n_candidates,
        nfe=None if nfe_start is None or nfe_end is None else int(nfe_end - nfe_start),
        nfe_plain=nfe_plain,
        tv_before_ci=tv_cis[0],
        tv_after_ci=tv_cis[1],
        others=compared,
        **judged,
        metadata={
            **settings,
            "process": process.describe(),
            "provenance": provenance(device, getattr(process, "dtype", None)),
        },
    )


def _continuations(process, trunk, index, n_candidates, feature_fn, generator, cond, nfe_start):
    """``n_candidates`` continuations of every trunk state from grid index ``index``: their outputs,
    labels (n_candidates, n) and the NFEs of the plain samples (trunks and one continuation each)."""
    outputs, labels = [], []
    nfe_plain = None
    for _ in range(n_candidates):
        x = process.decode(process.run(trunk, start=index, generator=generator, cond=cond))
        if nfe_plain is None and nfe_start is not None:
            nfe_plain = int(process.nfe - nfe_start)
        outputs.append(x)
        labels.append(apply_feature(feature_fn, x)[0])
    return outputs, torch.stack(labels).numpy(), nfe_plain


def _judge(judge, plain, rebalanced, n_classes: int, target: np.ndarray) -> dict[str, Any]:
    """The independent reader's class distributions of the plain and rebalanced samples, and their TV."""
    if judge is None:
        return {}
    out = {}
    for name, x in (("before", plain), ("after", rebalanced)):
        labels = apply_feature(judge, x)[0].numpy()
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"judge returned labels outside 0..{n_classes - 1}")
        dist = np.bincount(labels, minlength=n_classes) / labels.size
        out[f"judged_{name}"] = dist
        out[f"tv_judged_{name}"] = total_variation(dist, target)
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


def _distribution(labels: np.ndarray, n_classes: int, weights=None) -> np.ndarray:
    counts = np.bincount(labels, weights=weights, minlength=n_classes)
    return counts / counts.sum()


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], axis=0)
    return low, high


def _tv_to_target_cis(plain, chosen, target, n_boot: int, level: float, rng):
    """Bootstrap percentile intervals of the plain and rebalanced TVs to ``target`` (trajectories
    resampled; the rebalanced batch is resampled as it is, so the interval is of its reading)."""
    if n_boot == 0:
        return None, None
    C, n = target.size, plain.size
    draws = np.empty((n_boot, 2))
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        draws[b] = [total_variation(_distribution(x, C, w), target) for x in (plain, chosen)]
    low, high = _interval(draws, level)
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def _compare(reader, plain, rebalanced, n_boot: int, level: float, rng) -> dict[str, Any]:
    """Another attribute on the plain and rebalanced samples: both distributions, their TV and paired
    bootstrap intervals (same resampled trajectories on both sides) of the TV and per-value differences."""
    before, after = (apply_feature(reader, x)[0].numpy() for x in (plain, rebalanced))
    C, n = int(max(before.max(), after.max())) + 1, before.size
    p, q = _distribution(before, C), _distribution(after, C)
    out = {"before": p.tolist(), "after": q.tolist(), "tv": total_variation(p, q)}
    if n_boot == 0:
        return {**out, "tv_ci": None, "difference_ci": None, "unchanged": None}
    tvs, differences = np.empty(n_boot), np.empty((n_boot, C))
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        p_b, q_b = _distribution(before, C, w), _distribution(after, C, w)
        tvs[b], differences[b] = total_variation(p_b, q_b), q_b - p_b
    # Bonferroni over the C values: ``unchanged`` is one verdict on C intervals at family level ``level``.
    low, high = _interval(differences, 1 - (1 - level) / C)
    tv_low, tv_high = _interval(tvs, level)
    out["tv_ci"] = [float(tv_low), float(tv_high)]
    out["difference_ci"] = [[float(a), float(z)] for a, z in zip(low, high, strict=True)]
    out["unchanged"] = bool(np.all((low <= 0) & (high >= 0)))
    return out


def window_fork_time(
    model, x0, feature, *, times=None, n_per_time: int = 2, delta: float = 0.1, seed: int = 0
) -> tuple[float, WindowEstimate]:
    """Where to fork: the upper end ``t_before`` of the attribute's measured window (a forward–reverse
    sweep of the sources ``x0`` read by ``feature``; default times: 8 spread over the grid). A window
    still open at the largest time (censored above) forks at that time.

    Returns
    -------
    (fork time, the window estimate it came from)
    """
    seed = check_seed(seed)
    process = as_process(model, None)
    times = grid_times(process, 8) if times is None else times
    result = forward_reverse(process, x0, times, n_per_time, feature=feature, seed=seed, progress=False)
    estimate = estimate_window(result, delta, n_boot=0, per_class=False)
    fork = estimate.t_before if np.isfinite(estimate.t_before) else float(estimate.times.max())
    return float(max(fork, float(estimate.times[estimate.times > 0].min()))), estimate
