"""Fairness: act only inside an attribute's critical window (THEORY §8).

An attribute (a demographic class read by a classifier, a digit class) is decided inside its window.
To rebalance its distribution it is enough to act there: generate every trajectory unchanged down to
the fork time ``T`` (the window's start in generation, i.e. its upper end ``T_before`` in OU time),
draw a few continuations from each forked state, and keep, per trajectory, a continuation whose
attribute brings the batch closest to the target distribution. Everything decided before ``T``
(coarser features) is untouched by construction; only the continuation after ``T`` is resampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._io import provenance
from critwin._validation import check_positive_int
from critwin.experiments import apply_feature, as_process, realise_times, resolve_feature
from critwin.experiments.checkpoint import resolve_seed
from critwin.experiments.features import feature_name

__all__ = ["RebalanceResult", "rebalance", "total_variation", "check_target"]


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
    n_candidates : continuations drawn per trajectory.  nfe : denoiser evaluations, if counted.
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
            "judged_before": None if self.judged_before is None else self.judged_before.tolist(),
            "judged_after": None if self.judged_after is None else self.judged_after.tolist(),
            "tv_judged_before": self.tv_judged_before,
            "tv_judged_after": self.tv_judged_after,
            "metadata": self.metadata,
        }


def check_target(target, n_classes: int, name: str = "target") -> np.ndarray:
    """``target`` as a (C,) distribution (None: uniform); a ValueError naming ``name`` otherwise."""
    target = np.full(n_classes, 1.0 / n_classes) if target is None else np.asarray(target, dtype=float)
    if target.shape != (n_classes,) or (target < 0).any() or abs(target.sum() - 1) > 1e-6:
        raise ValueError(f"{name} must be {n_classes} non-negative probabilities summing to 1")
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

    Returns
    -------
    RebalanceResult
    """
    n = check_positive_int(n, "n")
    seed = resolve_seed(seed, generator, default=0)
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    n_candidates = check_positive_int(n_candidates, "n_candidates", minimum=2)
    target = check_target(target, n_classes)
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
    outputs, labels = [], []
    for _ in range(n_candidates):
        x = process.decode(process.run(trunk, start=index, generator=generator, cond=cond))
        outputs.append(x)
        labels.append(apply_feature(feature_fn, x)[0])
    candidate_labels = torch.stack(labels).numpy()
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
    settings = {"feature": feature_name(feature), "judge": None if judge is None else feature_name(judge)}
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
        **judged,
        metadata={
            **settings,
            "process": process.describe(),
            "provenance": provenance(device, getattr(process, "dtype", None)),
        },
    )


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
