"""The paired difference of t½ between two forward–reverse runs from the same sources (per class, with
a paired bootstrap interval that keeps censored t½ as the intervals they allow: docs/theory.md §9)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from critwin._io import finite_or_none
from critwin._stats import bounded_percentile_interval, censored_interval, difference_bounds
from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.forward_reverse import ForwardReverseResult

__all__ = ["paired_t_half_difference"]


def _with_sources(result: ForwardReverseResult, columns: list[np.ndarray]) -> ForwardReverseResult:
    """``result`` restricted to the given per-source column blocks (a source drawn twice counts twice)."""
    picked = torch.from_numpy(np.concatenate(columns))
    ids = torch.from_numpy(np.repeat(np.arange(len(columns)), [len(c) for c in columns]))
    return dataclasses.replace(
        result,
        labels=result.labels[:, picked],
        source_labels=result.source_labels[:, picked],
        source_ids=ids,
        probabilities=None,
    )


def _t_halves(est: WindowEstimate, pooled: bool) -> dict:
    """Per-class t½ of ``est``, and its pooled t½ under ``"all"`` when ``pooled``."""
    out: dict = {k: sub.t_half for k, sub in est.per_class.items()}
    if pooled:
        out["all"] = est.t_half
    return out


def paired_t_half_difference(
    model_fr: ForwardReverseResult,
    gmm_fr: ForwardReverseResult,
    n_boot: int,
    generator: torch.Generator,
    level: float = 0.95,
    names: tuple[str, str] = ("model", "gmm"),
    pooled: bool = False,
) -> dict:
    """Per source class: t½ of ``model_fr`` minus t½ of ``gmm_fr`` with a paired bootstrap interval.

    Both results start from the same sources (same ``source_ids``); their OU times may differ (each
    t½ is read on its own curve). A bootstrap replicate draws sources with replacement within each
    class, keeps every column of a drawn source in both results (pairing), and re-estimates both
    per-class t½ with :func:`estimate_window` (no inner bootstrap).

    Censoring (docs/theory.md §9): a t½ outside its result's measured times (``±inf``) is kept in the
    statistic as the interval of values it can take (:func:`critwin._stats.censored_interval`: above the
    largest measured time, or between 0 and the smallest), so each replicate's difference is an interval and
    the 95% interval is :func:`critwin._stats.bounded_percentile_interval` over them — it contains the
    interval the uncensored differences would give, and becomes a one-sided bound (an infinite end)
    when censored replicates reach a tail. Dropping censored replicates instead would condition the
    interval on non-censoring.

    Parameters
    ----------
    names : the keys of the two t½ in each entry.
    pooled : also the difference of the t½ pooled over all classes, under the key ``"all"``.

    Returns
    -------
    ``{class: {names[0], names[1], "difference", "difference_bounds", "ci", "censored_share",
    "unestimated_share"}}``: the two t½ (None when censored), their difference (None when either is
    censored) and ``difference_bounds`` ``[lo, hi]`` (what the censored point estimates allow; both ends
    the difference when neither is censored), ``ci`` ``[lo, hi]`` (``±inf``: a one-sided bound; None:
    no bootstrap), the share of replicates in which either t½ is censored (kept, as bounds) and the
    share with no estimate at all (a resampled class whose outputs all carry one label; left out).
    """
    results = (model_fr, gmm_fr)
    ranges = [(float(r.times.min()), float(r.times.max())) for r in results]
    point = [_t_halves(estimate_window(r, n_boot=0, generator=generator), pooled) for r in results]
    ids = model_fr.source_ids.numpy()
    source_class = {int(s): int(c) for s, c in zip(ids, model_fr.source_labels[0].numpy(), strict=True)}
    blocks = [{s: np.nonzero(r.source_ids.numpy() == s)[0] for s in source_class} for r in results]
    groups = {k: np.array([s for s, c in source_class.items() if c == k]) for k in set(source_class.values())}
    keys = sorted(groups) + (["all"] if pooled else [])
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item()))
    draws = {k: np.full((n_boot, 2), math.nan) for k in keys}  # per replicate: bounds of the difference
    for i in range(n_boot):
        chosen = np.concatenate([rng.choice(members, size=members.size) for members in groups.values()])
        boot = [
            _t_halves(
                estimate_window(_with_sources(r, [b[s] for s in chosen]), n_boot=0, generator=generator),
                pooled,
            )
            for r, b in zip(results, blocks, strict=True)
        ]
        for k in keys:
            draws[k][i] = _difference_interval(boot[0].get(k, math.nan), boot[1].get(k, math.nan), ranges)
    out = {}
    for k in keys:
        first, second = point[0].get(k, math.nan), point[1].get(k, math.nan)
        out[k if k == "all" else int(k)] = {
            names[0]: finite_or_none(first),
            names[1]: finite_or_none(second),
            "difference": finite_or_none(first - second),
            **_difference_summary(_difference_interval(first, second, ranges), draws[k], level),
        }
    return out


def _difference_interval(first: float, second: float, ranges) -> tuple[float, float]:
    """``[lo, hi]`` of ``first - second`` where each t½ is known only as its :func:`censored_interval` on
    its own measured times (``ranges``: (lowest, highest) of each)."""
    return difference_bounds(censored_interval(first, *ranges[0]), censored_interval(second, *ranges[1]))


def _difference_summary(bounds: tuple[float, float], draws: np.ndarray, level: float) -> dict:
    """The point bounds, the bounded percentile interval of the (B, 2) replicate bounds and the shares
    of censored (interval-valued, kept) and unestimated (nan, left out) replicates."""
    if draws.shape[0] == 0:
        return {
            "difference_bounds": _ends(bounds),
            "ci": [None, None],
            "censored_share": None,
            "unestimated_share": None,
        }
    lows, highs = draws[:, 0], draws[:, 1]
    unestimated = np.isnan(lows)
    censored = ~unestimated & (lows != highs)
    return {
        "difference_bounds": _ends(bounds),
        "ci": _ends(bounded_percentile_interval(lows, highs, level)),
        "censored_share": float(np.mean(censored)),
        "unestimated_share": float(np.mean(unestimated)),
    }


def _ends(interval) -> list[float | None]:
    """An interval's ends as floats, ``±inf`` kept (a censored end: JSON writes it with its direction),
    None where undefined (nan)."""
    return [None if math.isnan(v) else float(v) for v in interval]
