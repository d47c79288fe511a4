"""Adaptive search for the window endpoints (bisection with sequential sampling).

The normalised commitment ``r(t) = (c(t) - b) / (1 - b)`` of a forward–reverse experiment is
non-increasing in t. Each endpoint is a level crossing — ``t_after`` where ``r = 1 - delta``,
``t_before`` where ``r = delta`` — so it can be bracketed by bisection instead of a uniform grid. At
each probe time, samples are drawn in batches until the Wilson interval of ``c`` excludes the level
(or ``max_per_probe`` is reached): clear-cut probes far from the crossing stop after one batch.
Probes are cached and shared between the two searches. For a process with a fixed grid the bisection
runs over its grid points (resolution: adjacent steps). NFEs (per-sample denoiser evaluations) are
counted.

Call shape::

    found = search_window(model, x0, feature, delta=0.1, resolution=0.05, t_range=(lo, hi), seed=0)
    found.t_after, found.t_before, found.t_after_bracket, found.nfe
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from critwin._validation import check_eps, check_generator, check_number, check_positive_int
from critwin.experiments.checkpoint import progress_bar, resolve_seed, unit_generator
from critwin.experiments.estimation import base_rate as _base_rate
from critwin.experiments.estimation import wilson_interval
from critwin.experiments.features import apply_feature, resolve_feature
from critwin.experiments.forward_reverse import noise_and_denoise
from critwin.experiments.process import (
    as_process,
    check_cond,
    check_model_shape,
    check_samples,
    nfe_since,
    realise_times,
    select_cond,
)
from critwin.experiments.results import ResultTable

__all__ = ["search_window", "SearchResult"]


MIN_RESOLUTION = 1e-6
"""Smallest bracket width in OU time ``search_window`` accepts (at most ~25 bisection steps per range
of 10 OU units)."""

_PROBE_COLUMNS = {"t": float, "n": int, "kept": int, "c": float, "lower": float, "upper": float}


@dataclass
class SearchResult(ResultTable):
    """Outcome of :func:`search_window`.

    Attributes
    ----------
    t_after, t_before : endpoint estimates (midpoints of the final brackets; ±inf if censored).
    t_after_bracket, t_before_bracket : final brackets ``(lo, hi)``: r > level at lo, <= level at hi.
    t_after_ci, t_before_ci : confidence intervals from the probes: from the largest probed time whose
        Wilson interval lies wholly above the level's threshold on c to the smallest one wholly below
        it (range ends where no probe is conclusive). Pointwise Wilson ``level``, not simultaneous.
    b : base rate used.  delta, resolution : the request.
    probes : one dict per probed time (t, n, kept, c, lower, upper).
    nfe : per-sample denoiser evaluations spent (probes + base-rate reference), or None.
    """

    t_after: float
    t_before: float
    t_after_bracket: tuple[float, float]
    t_before_bracket: tuple[float, float]
    t_after_ci: tuple[float, float]
    t_before_ci: tuple[float, float]
    b: float
    delta: float
    resolution: float
    probes: list[dict[str, Any]] = field(default_factory=list)
    nfe: int | None = None

    kind: ClassVar[str] = "search"

    @property
    def n_samples(self) -> int:
        return int(sum(p["n"] for p in self.probes))

    def table(self) -> dict[str, list]:
        """Columns, one row per probed time: t, n, kept, c, lower, upper."""
        return {name: [p[name] for p in self.probes] for name in _PROBE_COLUMNS}

    def _saved_metadata(self) -> dict[str, Any]:
        # JSON has no tuples and no infinities (censored endpoints): store them as lists and strings.
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self) if f.name != "probes"}

    @classmethod
    def _from_saved(cls, columns, meta) -> SearchResult:
        n = len(columns["t"])
        probes = [{k: kind(columns[k][i]) for k, kind in _PROBE_COLUMNS.items()} for i in range(n)]
        scalars = {f.name: _decode(meta[f.name]) for f in fields(cls) if f.name != "probes"}
        return cls(**scalars, probes=probes)


def _encode(value):
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return repr(value) if isinstance(value, float) and math.isinf(value) else value


def _decode(value):
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return float(value) if value in ("inf", "-inf") else value


class _Prober:
    """Sequentially sampled forward–reverse outcomes at single times, cached per time."""

    def __init__(self, process, z0, source_labels, feature_fn, cond, seed, batch, max_n, level):
        self.process, self.z0, self.source = process, z0, source_labels
        self.feature_fn, self.cond, self.seed = feature_fn, cond, seed
        self.batch, self.max_n, self.level = batch, max_n, level
        # Up to ceil(max_n / batch) looks at the same probe: Bonferroni keeps the chance of stopping
        # on the wrong side of the threshold below 1 - level per probe despite the repeated looks.
        looks = -(-max_n // batch)
        self.look_level = 1 - (1 - level) / looks
        self.cache: dict[float, dict[str, Any]] = {}
        self.nfe = 0 if process.nfe is not None else None

    def _draw(self, entry):
        process = entry["process"]
        rows = (entry["n"] + torch.arange(self.batch)) % self.z0.shape[0]
        generator = unit_generator(
            self.seed, "probe", entry["key"], entry["n"] // self.batch, device=self.z0.device
        )
        before = process.nfe
        x = noise_and_denoise(process, self.z0, rows, entry["index"], self.cond, generator)
        labels, _ = apply_feature(self.feature_fn, x)
        if self.nfe is not None:
            self.nfe += int(nfe_since(process, before))
        entry["kept"] += int((labels == self.source[rows]).sum().item())
        entry["n"] += self.batch

    def above(self, t: float, threshold: float) -> bool:
        """Whether c(t) > threshold, sampling until the Wilson interval excludes it."""
        entry = self.cache.get(t)
        if entry is None:
            process, _, indices, realised, _ = realise_times(self.process, t)
            entry = {
                "t": float(realised[0]),
                "process": process,
                "index": int(indices[0]),
                "n": 0,
                "kept": 0,
                "key": len(self.cache),
            }
            self.cache[t] = entry
        while True:
            if entry["n"] > 0:
                lower, upper = wilson_interval(entry["kept"], entry["n"], self.look_level)
                if lower > threshold or upper < threshold or entry["n"] >= self.max_n:
                    return entry["kept"] / entry["n"] > threshold
            self._draw(entry)

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for entry in sorted(self.cache.values(), key=lambda e: e["t"]):
            lower, upper = wilson_interval(entry["kept"], entry["n"], self.level)
            out.append(
                {
                    "t": entry["t"],
                    "n": entry["n"],
                    "kept": entry["kept"],
                    "c": entry["kept"] / entry["n"],
                    "lower": float(lower),
                    "upper": float(upper),
                }
            )
        return out


def search_window(
    model,
    x0,
    feature="bayes",
    *,
    delta: float = 0.1,
    resolution: float = 0.05,
    t_range: tuple[float, float] | None = None,
    base_rate: float | None = None,
    batch: int = 64,
    max_per_probe: int = 512,
    n_reference: int | None = None,
    level: float = 0.95,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    cond: dict[str, Any] | None = None,
    n_steps: int | None = None,
    t_max: float | None = None,
    eta: float | None = None,
    progress: bool = True,
) -> SearchResult:
    """Locate ``t_after`` (r = 1 - delta) and ``t_before`` (r = delta) by bisection.

    Parameters
    ----------
    model : mixture (with ``sampler``) or ``ReverseProcess``.
    x0 : (N, ...) source samples in data space (cycled through in order at each probe).
    feature : callable or ``"bayes"`` (the mixture's Bayes label; the latent ``"component"`` is not
        available here: the search draws outputs by sampler runs that do not follow it).
    delta : level in (0, 1/2).
    resolution : final bracket width in OU time (>= ``MIN_RESOLUTION`` = 1e-6). On a fixed grid, the
        search also stops at adjacent grid points.
    t_range : ``(lo, hi)`` initial bracket in OU time (default: 0 to the process's largest time).
    base_rate : known ``b``; if None it is estimated as ``sum_k p_k q_k`` from ``n_reference`` samples of
        the model (drawn from its prior and run to the end; their NFEs are counted).
    batch, max_per_probe : sequential sampling per probe time: batches are drawn until the Wilson
        interval (Bonferroni-corrected for the repeated looks) excludes the threshold.
    level : confidence level of the stopping rule and of the reported intervals.
    sampler, generator, seed, cond, n_steps, t_max, eta : as in ``forward_reverse``.
    progress : show a progress bar (one tick per bisection step).

    Returns
    -------
    SearchResult
    """
    process = as_process(model, sampler, n_steps, t_max, eta)
    x0 = check_samples(x0, process)
    delta = check_eps(delta, "delta")
    if delta >= 0.5:
        raise ValueError(f"delta must be < 0.5, got {delta}")
    # Below MIN_RESOLUTION the bisection would stall on float spacing (1e-300 never terminated).
    resolution = check_number(resolution, "resolution (OU time)", low=MIN_RESOLUTION)
    check_generator(generator)
    batch = check_positive_int(batch, "batch")
    max_per_probe = check_positive_int(max_per_probe, "max_per_probe")
    level = check_eps(level, "level")
    cond = check_cond(cond)
    feature_fn = resolve_feature(feature, process, caller="search_window")
    base_seed = resolve_seed(seed, generator)
    lo, hi = _check_range(t_range, process.grid)

    z0 = check_model_shape(process.encode(x0), process)
    source_labels, _ = apply_feature(feature_fn, x0)
    nfe_reference = 0
    if base_rate is None:
        n_ref = check_positive_int(n_reference if n_reference is not None else max_per_probe, "n_reference")
        b, nfe_reference = _reference_base_rate(
            process, z0, source_labels, feature_fn, cond, n_ref, base_seed
        )
    else:
        b = check_number(base_rate, "base_rate", low=0.0, high=1.0, closed="low")
    if not b < 1.0:
        raise ValueError("the estimated base rate is 1 (the feature never varies); pass base_rate=")

    prober = _Prober(process, z0, source_labels, feature_fn, cond, base_seed, batch, max_per_probe, level)
    if process.continuous:
        candidates = None
    else:
        grid = process.times[:-1]
        candidates = sorted(t for t in grid.tolist() if lo <= t <= hi)

    def bisect(r_level: float) -> tuple[float, float]:
        threshold = b + (1 - b) * r_level
        if candidates is None:
            a, z = lo, hi
            while z - a > resolution:
                mid = 0.5 * (a + z)
                if prober.above(mid, threshold):
                    a = mid
                else:
                    z = mid
                advance(1)
            return a, z
        # Fixed grid: bisection over positions; -1 / len stand for the range ends.
        a, z = -1, len(candidates)
        while z - a > 1 and _position_width(candidates, a, z, lo, hi) > resolution:
            mid = (a + z) // 2
            if prober.above(candidates[mid], threshold):
                a = mid
            else:
                z = mid
            advance(1)
        return (lo if a < 0 else candidates[a]), (hi if z >= len(candidates) else candidates[z])

    steps = 2 * max(1, math.ceil(math.log2(max((hi - lo) / resolution, 1.0))))
    with progress_bar(steps, "window search", progress) as advance:
        after = bisect(1 - delta)
        before = bisect(delta)
    t_after = _censor(after, lo, hi, lambda t: prober.above(t, b + (1 - b) * (1 - delta)))
    t_before = _censor(before, lo, hi, lambda t: prober.above(t, b + (1 - b) * delta))
    nfe = None if prober.nfe is None else prober.nfe + nfe_reference
    probes = prober.summary()
    return SearchResult(
        t_after=t_after,
        t_before=t_before,
        t_after_bracket=after,
        t_before_bracket=before,
        t_after_ci=_probe_ci(probes, b + (1 - b) * (1 - delta), lo, hi),
        t_before_ci=_probe_ci(probes, b + (1 - b) * delta, lo, hi),
        b=b,
        delta=delta,
        resolution=resolution,
        probes=probes,
        nfe=nfe,
    )


def _reference_base_rate(process, z0, source_labels, feature_fn, cond, n_ref, seed) -> tuple[float, int]:
    """Base rate ``sum_k p_k q_k`` with ``q`` from ``n_ref`` model samples, and the NFEs they cost."""
    generator = unit_generator(seed, "reference", device=z0.device)
    before = process.nfe
    x = process.prior(n_ref, generator=generator, device=z0.device, dtype=z0.dtype)
    rows = torch.arange(n_ref) % z0.shape[0]  # per-sample conditioning cycles like the sources
    x = process.run(x, generator=generator, cond=select_cond(cond, rows, z0.shape[0]) or None)
    model_labels, _ = apply_feature(feature_fn, process.decode(x))
    return _base_rate(source_labels, model_labels), int(nfe_since(process, before))


def _check_range(t_range, grid) -> tuple[float, float]:
    """``t_range`` (default: 0 to the grid's largest time) as a validated pair ``lo < hi``."""
    if t_range is None:
        return 0.0, grid.t_max
    if isinstance(t_range, (str, bytes)) or not hasattr(t_range, "__len__") or len(t_range) != 2:
        raise ValueError(f"t_range must be a pair (lo, hi) of OU times, got {t_range!r}")
    lo, hi = grid.check(t_range, "t_range").tolist()
    if not lo < hi:
        raise ValueError(f"t_range must satisfy lo < hi, got {t_range!r}")
    return lo, hi


def _position_width(candidates, a, z, lo, hi) -> float:
    left = lo if a < 0 else candidates[a]
    right = hi if z >= len(candidates) else candidates[z]
    return right - left


def _probe_ci(probes, threshold, lo, hi) -> tuple[float, float]:
    above = [p["t"] for p in probes if p["lower"] > threshold]
    below = [p["t"] for p in probes if p["upper"] < threshold]
    return (max(above) if above else lo), (min(below) if below else hi)


def _censor(bracket, lo, hi, check) -> float:
    """Bracket midpoint, or ±inf when the crossing lies outside ``[lo, hi]``.

    A bracket touching an end of the range is verified by probing that end (``check(t)``: r(t) > level).
    """
    a, z = bracket
    if a == lo and lo > 0 and not check(lo):
        return -math.inf
    if z == hi and check(hi):
        return math.inf
    return 0.5 * (a + z)
