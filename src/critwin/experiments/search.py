"""Adaptive search for the window endpoints (bisection with sequential sampling).

The normalised commitment ``r(t) = (c(t) - b) / (1 - b)`` of a forward–reverse experiment is
non-increasing in t. Each endpoint is a level crossing — ``t_after`` where ``r = 1 - delta``,
``t_before`` where ``r = delta`` — so it can be bracketed by bisection instead of a uniform grid. At
each probe time, samples are drawn in batches until the Wilson interval of ``c`` excludes the level
(or ``max_per_probe`` is reached): clear-cut probes far from the crossing stop after one batch.
Probes are cached and shared between the two searches (and between the features of a multi-feature
search, which read every probe's outputs). For a process with a fixed grid the bisection
runs over its grid points (resolution: adjacent steps). NFEs (per-sample denoiser evaluations) are
counted.

Call shape::

    found = search_window(model, x0, feature, delta=0.1, resolution=0.05, t_range=(lo, hi), seed=0)
    found.t_after, found.t_before, found.t_after_bracket, found.nfe
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

import torch

from critwin._io import json_float
from critwin._validation import check_delta, check_eps, check_generator, check_number, check_positive_int
from critwin.experiments.checkpoint import progress_bar, resolve_seed, unit_generator
from critwin.experiments.estimation import ConstantFeatureError, wilson_interval
from critwin.experiments.estimation import base_rate as estimated_base_rate
from critwin.experiments.executor import resolve_executor
from critwin.experiments.features import (
    UNNAMED,
    FeatureSet,
    feature_names,
    labelled,
    read_features,
    resolve_features,
    split_labels,
)
from critwin.experiments.forward_reverse import SweepSources, feature_outputs
from critwin.experiments.process import (
    as_process,
    check_cond,
    check_model_shape,
    check_samples,
    nfe_since,
    realise_times,
    select_cond,
)
from critwin.experiments.results import ResultTable, at_edge, result_metadata

__all__ = ["search_window", "SearchResult"]


MIN_RESOLUTION = 1e-6
"""Smallest bracket width in OU time ``search_window`` accepts (at most ~25 bisection steps per range
of 10 OU units)."""

_PROBE_COLUMNS = {"t": float, "n": int, "kept": int, "c": float, "lower": float, "upper": float}


@dataclass(repr=False)
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
    metadata : the process description and provenance.
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
    metadata: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "search"

    def summary(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "b": self.b,
            "t_after": self.t_after,
            "t_after_ci": self.t_after_ci,
            "t_before": self.t_before,
            "t_before_ci": self.t_before_ci,
            "probes": len(self.probes),
            "nfe": self.nfe,
        }

    @property
    def n_samples(self) -> int:
        return int(sum(p["n"] for p in self.probes))

    def table(self) -> dict[str, list]:
        """Columns, one row per probed time: t, n, kept, c, lower, upper."""
        return {name: [p[name] for p in self.probes] for name in _PROBE_COLUMNS}

    def _saved_metadata(self) -> dict[str, Any]:
        # critwin._io writes censored (infinite) endpoints as {"value": null, "censored": ...}.
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "probes"}

    @classmethod
    def _from_saved(cls, columns, meta) -> SearchResult:
        n = len(columns["t"])
        probes = [{k: kind(columns[k][i]) for k, kind in _PROBE_COLUMNS.items()} for i in range(n)]
        # Results saved before ``metadata`` existed have none.
        scalars = {f.name: _decode(meta[f.name]) for f in fields(cls) if f.name not in ("probes", "metadata")}
        scalars["metadata"] = meta.get("metadata", {})
        return cls(**scalars, probes=probes)


def _decode(value):
    """A stored scalar or bracket: censored markers (and the "inf" strings of older files) to floats."""
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        return json_float(value)
    return float(value) if value in ("inf", "-inf") else value


@dataclass
class _Probe:
    """One probed time: its realised OU time ``t``, the samples drawn so far ``n``, how many kept each
    feature ``kept`` ({name: count}), the probe's unit key, and batches drawn ahead (by offset)."""

    t: float
    kept: dict[Any, int]
    key: int
    n: int = 0
    ahead: dict[int, dict] = field(default_factory=dict)


class _Prober:
    """Sequentially sampled forward–reverse outcomes at single times, cached per time.

    Batches are drawn through ``runner``: when it runs several units at once, the next batches of a
    probe are drawn together ahead of the stopping rule, which then consumes them one at a time, so
    the outcome (and the NFE count) is that of drawing them one by one; batches drawn past the stop are
    kept for a later look at the same time.
    """

    def __init__(self, runner, shared: SweepSources, batch, max_n, level, counted):
        self.runner, self.shared = runner, shared
        # Labels per feature name; every batch is read by every feature.
        self.source = shared.source_labels
        self.batch, self.max_n, self.level = batch, max_n, level
        # Up to ceil(max_n / batch) looks at the same probe: Bonferroni keeps the chance of stopping
        # on the wrong side of the threshold below 1 - level per probe despite the repeated looks.
        looks = -(-max_n // batch)
        self.look_level = 1 - (1 - level) / looks
        self.cache: dict[float, _Probe] = {}
        self.nfe = 0 if counted else None

    def _entry(self, t: float) -> _Probe:
        entry = self.cache.get(t)
        if entry is None:
            realised = realise_times(self.shared.process, t).times
            entry = _Probe(t=float(realised[0]), kept=dict.fromkeys(self.source, 0), key=len(self.cache))
            self.cache[t] = entry
        return entry

    def _draw(self, t: float, entry: _Probe) -> None:
        if entry.n not in entry.ahead:
            left = -(-(self.max_n - entry.n) // self.batch)
            offsets = [entry.n + k * self.batch for k in range(min(self.runner.parallelism, left))]
            jobs = [(n, (t, entry.key, n, self.batch)) for n in offsets]
            entry.ahead.update(self.runner.map_unordered(_probe_unit, jobs))
        unit = entry.ahead.pop(entry.n)
        if self.nfe is not None:
            self.nfe += int(unit["nfe"])
        for name, source in self.source.items():
            rows = (entry.n + torch.arange(self.batch)) % source.shape[0]
            labels = torch.from_numpy(unit[labelled("labels", name)])
            entry.kept[name] += int((labels == source[rows]).sum().item())
        entry.n += self.batch

    def above(self, t: float, threshold: float, name: str) -> bool:
        """Whether c(t) of the feature ``name`` > threshold, sampling until the Wilson interval excludes
        it (batches drawn before, for another feature or level, count)."""
        entry = self._entry(t)
        while True:
            if entry.n > 0:
                kept = entry.kept[name]
                lower, upper = wilson_interval(kept, entry.n, self.look_level)
                if lower > threshold or upper < threshold or entry.n >= self.max_n:
                    return kept / entry.n > threshold
            self._draw(t, entry)

    def summary(self, name: str) -> list[dict[str, Any]]:
        out = []
        for entry in sorted(self.cache.values(), key=lambda e: e.t):
            kept = entry.kept[name]
            lower, upper = wilson_interval(kept, entry.n, self.level)
            out.append(
                {
                    "t": entry.t,
                    "n": entry.n,
                    "kept": kept,
                    "c": kept / entry.n,
                    "lower": float(lower),
                    "upper": float(upper),
                }
            )
        return out


def _probe_unit(shared: SweepSources, t: float, key: int, n: int, batch: int):
    """Batch ``n // batch`` of the probe ``key`` at the requested time ``t``: sources ``n, n+1, ...``
    (cycling), noised to ``t`` realised on the process's grid and denoised."""
    grid = realise_times(shared.process, t)
    z0 = shared.z0
    rows = (n + torch.arange(batch)) % z0.shape[0]
    generator = unit_generator(shared.seed, "probe", key, n // batch, device=z0.device)
    index = int(grid.indices[0])
    return feature_outputs(grid.process, z0, shared.feature_fn, rows, index, shared.cond, generator)


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
    executor="local",
    ray_address: str | None = None,
) -> SearchResult:
    """Locate ``t_after`` (r = 1 - delta) and ``t_before`` (r = delta) by bisection.

    Parameters
    ----------
    model : mixture (with ``sampler``) or ``ReverseProcess``.
    x0 : (N, ...) source samples in data space (cycled through in order at each probe).
    feature : callable or ``"bayes"`` (the mixture's Bayes label; the latent ``"component"`` is not
        available here: the search draws outputs by sampler runs that do not follow it); or a mapping
        ``{name: feature}``: each feature's two endpoints are bisected in turn (features in the given
        order), all from one cache of probes — every batch drawn at a time is read by every feature, so
        a time probed for one feature (bisection midpoints from the same range often coincide) costs
        nothing more for the next, which starts with those samples and draws more only while its own
        Wilson interval is inconclusive.
    delta : level in (0, 1/2).
    resolution : final bracket width in OU time (>= ``MIN_RESOLUTION`` = 1e-6). On a fixed grid, the
        search also stops at adjacent grid points.
    t_range : ``(lo, hi)`` initial bracket in OU time (default: 0 to the process's largest time).
    base_rate : known ``b`` (several features: ``{name: b}``); if None it is estimated as
        ``sum_k p_k q_k`` from ``n_reference`` samples of the model (drawn from its prior and run to the
        end; their NFEs are counted; one set of samples read by every feature).
    batch, max_per_probe : sequential sampling per probe time: batches are drawn until the Wilson
        interval (Bonferroni-corrected for the repeated looks) excludes the threshold.
    level : confidence level of the stopping rule and of the reported intervals.
    sampler, generator, seed, cond, n_steps, t_max, eta : as in ``forward_reverse``.
    progress : show a progress bar (one tick per bisection step).
    executor, ray_address : where the batches run, as in ``forward_reverse``. The search is sequential;
        with Ray, the next batches of a probe run in parallel (same result as ``"local"``).

    Returns
    -------
    SearchResult, or ``{name: SearchResult}`` for several features: each with its own probes (every
    probed time, with that feature's counts) and base rate, and ``nfe`` the whole joint search's.
    """
    runs_on = resolve_executor(executor, ray_address)
    process = as_process(model, sampler, n_steps, t_max, eta)
    x0 = check_samples(x0, process)
    delta = check_delta(delta)
    # Below MIN_RESOLUTION the bisection would stall on float spacing (1e-300 never terminated).
    resolution = check_number(resolution, "resolution (OU time)", low=MIN_RESOLUTION)
    check_generator(generator)
    batch = check_positive_int(batch, "batch")
    max_per_probe = check_positive_int(max_per_probe, "max_per_probe")
    level = check_eps(level, "level")
    cond = check_cond(cond)
    feature_fn = resolve_features(feature, process, caller="search_window")
    names = feature_names(feature_fn)
    base_seed = resolve_seed(seed, generator)
    lo, hi = _check_range(t_range, process.grid)
    given, n_ref = _check_reference(
        base_rate, n_reference if n_reference is not None else max_per_probe, feature_fn
    )

    z0 = check_model_shape(process.encode(x0), process)
    shared = SweepSources(
        process=process,
        z0=z0,
        feature_fn=feature_fn,
        cond=cond,
        seed=base_seed,
        source_labels=split_labels(feature_fn, read_features(feature_fn, x0)),
    )
    with runs_on.bind(shared, gpu=z0.is_cuda) as runner:
        rates, nfe_reference = _base_rates_of(runner, given, shared.source_labels, n_ref)
        prober = _Prober(runner, shared, batch, max_per_probe, level, process.nfe is not None)
        # A fixed grid is bisected over its own times (resolution: adjacent steps).
        grid = None if process.continuous else process.times[:-1].tolist()
        bisect = _Bisection(prober, grid and sorted(t for t in grid if lo <= t <= hi), lo, hi, resolution)
        steps = 2 * max(1, math.ceil(math.log2(max((hi - lo) / resolution, 1.0))))
        with progress_bar(steps * len(names), "window search", progress) as advance:
            found = {name: _search_one(bisect, name, rates[name], delta, advance) for name in names}
    metadata = result_metadata(
        {"process": process.describe()}, getattr(process, "device", None), getattr(process, "dtype", None)
    )
    nfe = None if prober.nfe is None else prober.nfe + nfe_reference
    results = {}
    for name in names:
        after, before = found[name]
        probes = prober.summary(name)
        results[name] = SearchResult(
            t_after=after.t,
            t_before=before.t,
            t_after_bracket=after.bracket,
            t_before_bracket=before.bracket,
            t_after_ci=_probe_ci(probes, after.level, lo, hi),
            t_before_ci=_probe_ci(probes, before.level, lo, hi),
            b=rates[name],
            delta=delta,
            resolution=resolution,
            probes=probes,
            nfe=nfe,
            metadata=metadata if feature_fn.single else {**metadata, "feature": name, "features": names},
        )
    return at_edge(results)


class _Endpoint(NamedTuple):
    """A searched endpoint: the final ``bracket`` (c > level at its start, <= level at its end), the
    estimate ``t`` (its midpoint, or ±inf when censored) and the ``level`` on c it crosses."""

    bracket: tuple[float, float]
    t: float
    level: float


def _search_one(bisect: _Bisection, name, b: float, delta: float, advance) -> tuple[_Endpoint, _Endpoint]:
    """Both endpoints of the feature ``name``: t_after (r = 1 - delta) and t_before (r = delta)."""
    out = []
    for level in (b + (1 - b) * (1 - delta), b + (1 - b) * delta):
        bracket = bisect(level, advance, name)
        check = functools.partial(bisect.prober.above, threshold=level, name=name)
        out.append(_Endpoint(bracket, _censor(bracket, bisect.lo, bisect.hi, check), level))
    return tuple(out)


class _Bisection:
    """Bisection for the crossing of ``c(t) = threshold`` between ``lo`` and ``hi``: over OU time for a
    continuous process (``candidates`` None), else over the positions of the grid times ``candidates``."""

    def __init__(self, prober: _Prober, candidates, lo, hi, resolution):
        self.prober, self.candidates = prober, candidates
        self.lo, self.hi, self.resolution = lo, hi, resolution

    def __call__(self, threshold: float, advance, name: str) -> tuple[float, float]:
        """The final bracket ``(a, z)``: c > threshold at ``a``, <= threshold at ``z`` (of the feature
        ``name``)."""
        candidates = self.candidates

        def above(t):
            return self.prober.above(t, threshold, name)

        if candidates is None:
            a, z = self.lo, self.hi
            while z - a > self.resolution:
                mid = 0.5 * (a + z)
                a, z = (mid, z) if above(mid) else (a, mid)
                advance(1)
            return a, z
        # Fixed grid: bisection over positions; -1 / len stand for the range ends.
        a, z = -1, len(candidates)
        while z - a > 1 and self._at(z) - self._at(a) > self.resolution:
            mid = (a + z) // 2
            a, z = (mid, z) if above(candidates[mid]) else (a, mid)
            advance(1)
        return self._at(a), self._at(z)

    def _at(self, position: int) -> float:
        if position < 0:
            return self.lo
        return self.hi if position >= len(self.candidates) else self.candidates[position]


def _check_reference(base_rate, n_reference, features: FeatureSet) -> tuple[dict, int | None]:
    """``{name: b or None}`` from ``base_rate`` (a number in [0, 1), a mapping name -> number for several
    features, or None) and the reference sample size when some ``b`` is to be estimated."""
    names = list(features.names)
    if base_rate is None:
        given = dict.fromkeys(names)
    elif features.single:
        given = {UNNAMED: base_rate}
    elif isinstance(base_rate, Mapping) and set(base_rate) == set(names):
        given = dict(base_rate)
    else:
        raise ValueError(
            f"base_rate must be None or a mapping with the feature names {names}, got {base_rate!r}"
        )
    for value in given.values():
        if value is not None:
            check_number(value, "base_rate", low=0.0, high=1.0, closed="low")
    if all(value is not None for value in given.values()):
        return {name: float(value) for name, value in given.items()}, None
    return given, check_positive_int(n_reference, "n_reference")


def _base_rates_of(runner, given, source_labels, n_ref) -> tuple[dict, int]:
    """``{name: b}`` (the given base rates, the others estimated from ``n_ref`` model samples, one set
    of samples read by every feature) and the NFEs spent on them."""
    if n_ref is None:
        return given, 0
    [(_, unit)] = runner.map_unordered(_reference_unit, [(0, (n_ref,))])
    rates = dict(given)
    for name, value in given.items():
        if value is None:
            model_labels = torch.from_numpy(unit[labelled("labels", name)])
            rates[name] = estimated_base_rate(source_labels[name], model_labels)
            if not rates[name] < 1.0:
                raise ConstantFeatureError(
                    "the estimated base rate is 1 (the feature never varies); pass base_rate="
                    + ("" if name == UNNAMED else f" (feature {name!r})")
                )
    return rates, int(unit["nfe"])


def _reference_unit(shared: SweepSources, n_ref: int):
    """Labels (n_ref,) of model samples (prior run to the end) for the base rate (per feature), and
    their NFEs."""
    process, z0 = shared.process, shared.z0
    generator = unit_generator(shared.seed, "reference", device=z0.device)
    before = process.nfe
    x = process.prior(n_ref, generator=generator, device=z0.device, dtype=z0.dtype)
    rows = torch.arange(n_ref) % z0.shape[0]  # per-sample conditioning cycles like the sources
    x = process.run(x, generator=generator, cond=select_cond(shared.cond, rows, z0.shape[0]) or None)
    return {**read_features(shared.feature_fn, process.decode(x)), "nfe": nfe_since(process, before)}


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
