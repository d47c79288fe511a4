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
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from critwin._display import Table
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
    RealisedTimes,
    as_process,
    check_cond,
    check_model_shape,
    check_samples,
    nfe_since,
    realise_times,
    select_cond,
)
from critwin.experiments.results import ResultTable, at_edge, clock_of, result_metadata
from critwin.experiments.search_lattice import (
    LATTICE_SPACING,
    MIN_RESOLUTION,
    Bisection,
    check_resolution,
    check_t_range,
    lattice_candidates,
    probe_range_ends,
)
from critwin.experiments.search_precision import (
    PILOT_WIDTH,
    Narrowing,
    ProbeCrossings,
    check_precision,
    confirmation_counts,
    fixed_width,
    sources_needed,
)

__all__ = ["search_window", "SearchResult", "LATTICE_SPACING", "MIN_RESOLUTION"]


_PROBE_COLUMNS = {"t": float, "n": int, "kept": int, "c": float, "lower": float, "upper": float}


@dataclass(repr=False)
class SearchResult(ResultTable):
    """Outcome of :func:`search_window`.

    Attributes
    ----------
    t_after, t_before : endpoint estimates: crossings of the sample-weighted isotonic fit of r over
        the probes (linear interpolation, as ``estimate_window`` on a grid); ±inf if censored.
    t_after_bracket, t_before_bracket : the bisection's final brackets ``(lo, hi)``: r was judged
        > level at lo and <= level at hi.
    t_after_ci, t_before_ci : cluster-bootstrap percentile intervals (``level``; sources resampled
        with all their samples, an estimated base rate re-estimated), ``n_boot`` replicates; with
        ``ci_half_width``, one narrower than it is widened to it on both sides (``fixed_width``).
    b : base rate used.  delta, resolution : the request (resolution as the bisection used it).
    probes : one dict per probed time (t, n, kept, c, lower, upper).
    nfe : per-sample denoiser evaluations spent (probes + base-rate reference), or None.
    ci_half_width : the requested half-width of both intervals, or None (bisection only).
    ci_reached : with ``ci_half_width``, whether both intervals reached it (False: the budget was
        spent first, an endpoint is censored or source-limited; a UserWarning said so too); None
        without.
    ci_floor : with ``ci_half_width``, the half-widths ``(t_after, t_before)`` that the intervals keep
        however many samples each source gets: the part of their bootstrap variance that is the
        sources' own spread (estimated from the samples; falls as ``1 / len(x0)``). An endpoint whose
        floor is above ``ci_half_width`` is source-limited: the narrowing stops sampling for it (the
        warning says how many sources could reach the request). None without.
    sources_needed : with ``ci_half_width`` and a source-limited endpoint, the fewest sources
        whose floor would be below the request (``len(x0) (floor / ci_half_width)^2``, with unlimited
        samples; more sources reach it for fewer); None otherwise.
    n_boot : bootstrap replicates of the intervals.
    n_pilot : with ``ci_half_width``, the samples of the bisection and the pilot narrowing, which
        placed the probes and set their sample counts but are not among ``probes`` (the estimates
        and intervals come from the confirmation's fresh samples alone); 0 otherwise.
    metadata : the process description and provenance.

    Examples
    --------
    What :func:`critwin.search_window` returns (bisection only, no ``ci_half_width``):

    >>> import torch, critwin
    >>> mixture = critwin.GaussianMixture(torch.tensor([[4.0], [-4.0]], dtype=torch.float64))
    >>> x0 = mixture.subset([0]).sample(256, generator=torch.Generator().manual_seed(0))[0]
    >>> found = critwin.search_window(mixture, x0, base_rate=0.5, seed=0, progress=False)
    >>> found
    SearchResult(clock=ou, delta=0.1, b=0.5, t_after=0.77 [0.69, 0.83], t_before=2.6 [2.4, 2.9], ...)
    >>> lo, hi = found.t_after_bracket
    >>> bool(lo <= found.t_after <= hi), sorted(found.probes[0])
    (True, ['c', 'kept', 'lower', 'n', 't', 'upper'])
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
    ci_half_width: float | None = None
    ci_reached: bool | None = None
    n_boot: int = 200
    n_pilot: int = 0
    ci_floor: tuple[float, float] | None = None
    sources_needed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "search"

    def summary(self) -> dict[str, Any]:
        return {
            "clock": self.metadata.get("clock", "ou"),
            "delta": self.delta,
            "b": self.b,
            "t_after": self.t_after,
            "t_after_ci": self.t_after_ci,
            "t_before": self.t_before,
            "t_before_ci": self.t_before_ci,
            "ci_half_width": self.ci_half_width,
            "ci_reached": self.ci_reached,
            "probes": len(self.probes),
            "nfe": self.nfe,
        }

    @property
    def n_samples(self) -> int:
        return int(sum(p["n"] for p in self.probes))

    def table(self) -> dict[str, list]:
        """Columns, one row per probed time: t, n, kept, c, lower, upper."""
        return Table({name: [p[name] for p in self.probes] for name in _PROBE_COLUMNS})

    def _saved_metadata(self) -> dict[str, Any]:
        # critwin._io writes censored (infinite) endpoints as {"value": null, "censored": ...}.
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "probes"}

    @classmethod
    def _from_saved(cls, columns, meta) -> SearchResult:
        n = len(columns["t"])
        probes = [{k: kind(columns[k][i]) for k, kind in _PROBE_COLUMNS.items()} for i in range(n)]
        # Results saved before ``metadata``, ``ci_half_width``, ``ci_reached``, ``n_boot``, ``n_pilot``,
        # ``ci_floor`` and ``sources_needed`` existed keep the defaults.
        optional = {
            "metadata",
            "ci_half_width",
            "ci_reached",
            "n_boot",
            "n_pilot",
            "ci_floor",
            "sources_needed",
        }
        scalars = {
            f.name: meta[f.name] if f.name == "metadata" else _decode(meta[f.name])
            for f in fields(cls)
            if f.name != "probes" and (f.name in meta or f.name not in optional)
        }
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
    feature ``kept`` ({name: count}), the probe's unit key, batches drawn ahead (by offset), and per
    source the samples drawn ``trials`` (N,) and kept ``kept_by`` ({name: (N,)}) for the bootstrap."""

    t: float
    kept: dict[Any, int]
    key: int
    trials: np.ndarray
    kept_by: dict[Any, np.ndarray]
    n: int = 0
    ahead: dict[int, dict] = field(default_factory=dict)


class _Prober:
    """Sequentially sampled forward–reverse outcomes at single times, cached per time.

    Batches are drawn through ``runner``: when it runs several units at once, the next batches of a
    probe are drawn together ahead of the stopping rule, which then consumes them one at a time, so
    the outcome (and the NFE count) is that of drawing them one by one; batches drawn past the stop are
    kept for a later look at the same time.
    """

    def __init__(self, runner, shared: SweepSources, batch, max_n, level, counted, stream="probe"):
        self.runner, self.shared, self.stream = runner, shared, stream
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
            realised = _realised(self.shared.process, t).times
            n_sources = self.shared.z0.shape[0]
            entry = _Probe(
                t=float(realised[0]),
                kept=dict.fromkeys(self.source, 0),
                key=len(self.cache),
                trials=np.zeros(n_sources, dtype=np.int64),
                kept_by={name: np.zeros(n_sources, dtype=np.int64) for name in self.source},
            )
            self.cache[t] = entry
        return entry

    def _draw(self, t: float, entry: _Probe) -> None:
        if entry.n not in entry.ahead:
            # Ahead of the stopping rule, no further than max_n; past it (narrowing) one round at a time.
            left = max(-(-(self.max_n - entry.n) // self.batch), 1)
            offsets = [entry.n + k * self.batch for k in range(min(self.runner.parallelism, left))]
            jobs = [(n, (t, entry.key, n, self.batch, self.stream)) for n in offsets]
            entry.ahead.update(self.runner.map_unordered(_probe_unit, jobs))
        unit = entry.ahead.pop(entry.n)
        if self.nfe is not None:
            self.nfe += int(unit["nfe"])
        rows = (entry.n + torch.arange(self.batch)) % self.shared.z0.shape[0]
        np.add.at(entry.trials, rows.numpy(), 1)
        for name, source in self.source.items():
            kept = (torch.from_numpy(unit[labelled("labels", name)]) == source[rows]).numpy()
            entry.kept[name] += int(kept.sum())
            np.add.at(entry.kept_by[name], rows.numpy(), kept.astype(np.int64))
        entry.n += self.batch

    def draw_at(self, t: float) -> None:
        """One more batch at the probed time ``t`` (a key of the cache), whatever its counts say."""
        self._draw(t, self._entry(t))

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


_REGRIDDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _realised(process, t: float) -> RealisedTimes:
    """``realise_times(process, t)``, kept per continuous process and time: re-gridding one costs
    ~20 ms (its base grid is scanned), and every batch of a probe needs it. Weak keys: the cache
    never keeps a process alive (the re-gridded copies it holds do not refer to the original)."""
    if not process.continuous:
        return realise_times(process, t)
    times = _REGRIDDED.setdefault(process, {})
    if t not in times:
        times[t] = realise_times(process, t)
    return times[t]


def _probe_unit(shared: SweepSources, t: float, key: int, n: int, batch: int, stream: str = "probe"):
    """Batch ``n // batch`` of the probe ``key`` at the requested time ``t``: sources ``n, n+1, ...``
    (cycling), noised to ``t`` realised on the process's grid and denoised; ``stream`` names the
    random stream (the confirmation's samples are independent of the pilot's)."""
    grid = _realised(shared.process, t)
    z0 = shared.z0
    rows = (n + torch.arange(batch)) % z0.shape[0]
    generator = unit_generator(shared.seed, stream, key, n // batch, device=z0.device)
    index = int(grid.indices[0])
    return feature_outputs(grid.process, z0, shared.feature_fn, rows, index, shared.cond, generator)


def search_window(
    model,
    x0,
    feature="bayes",
    *,
    delta: float = 0.1,
    resolution: float | None = None,
    t_range: tuple[float, float] | None = None,
    base_rate: float | None = None,
    batch: int = 64,
    max_per_probe: int = 512,
    n_reference: int | None = None,
    level: float = 0.95,
    ci_half_width: float | None = None,
    max_samples: int | None = None,
    n_boot: int = 200,
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
    ray_timeout: float | None = None,
) -> SearchResult:
    """Locate ``t_after`` (r = 1 - delta) and ``t_before`` (r = delta) by bisection, optionally until
    both confidence intervals are narrower than a requested half-width.

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
    resolution : final bracket width in OU time (>= ``MIN_RESOLUTION`` = 1e-6; default 0.05). On a
        fixed grid, the search also stops at adjacent grid points. With ``ci_half_width``: the spacing
        of the lattice of OU times that the search probes (default ``LATTICE_SPACING *
        ci_half_width``; see there).
    t_range : ``(lo, hi)`` initial bracket in OU time (default: 0 to the process's largest time).
    base_rate : known ``b`` (several features: ``{name: b}``); if None it is estimated as
        ``sum_k p_k q_k`` from ``n_reference`` samples of the model (drawn from its prior and run to the
        end; their NFEs are counted; one set of samples read by every feature).
    batch, max_per_probe : sequential sampling per probe time during the bisection: batches are drawn
        until the Wilson interval (Bonferroni-corrected for the repeated looks) excludes the threshold.
    level : confidence level of the stopping rule and of the reported intervals.
    ci_half_width : requested precision in OU time, > 0 (None: bisection only). After the bisection,
        batches are drawn at the probed times around each endpoint (where they narrow its interval
        most) until the confidence intervals of ``t_after`` and ``t_before`` (every feature's) have
        half-width ``(hi - lo) / 2 <= ci_half_width``. The bisection then brackets to at most
        ``2 * ci_half_width`` on a continuous process, so that interpolating between the probes
        around a crossing is accurate well within the requested width. A censored endpoint (crossing
        outside ``t_range``) cannot narrow; it and a budget spent before the precision is reached are
        reported with a ``UserWarning``.
    max_samples : most forward–reverse samples the narrowing to ``ci_half_width`` draws in all
        (default ``64 * max_per_probe``); it is not bound by ``max_per_probe``.
    n_boot : bootstrap replicates of the intervals (>= 1).
    sampler, generator, seed, cond, n_steps, t_max, eta : as in ``forward_reverse``.
    progress : show a progress bar (one tick per bisection step, then one per narrowing sample).
    executor, ray_address, ray_timeout : where the batches run, as in ``forward_reverse``. The search is
        sequential; with Ray, the next batches of a probe run in parallel (same result as ``"local"``).

    Returns
    -------
    SearchResult, or ``{name: SearchResult}`` for several features: each with its own probes (every
    probed time, with that feature's counts) and base rate, and ``nfe`` the whole joint search's.

    Notes
    -----
    Estimates and intervals are those of :func:`~critwin.experiments.estimation.estimate_window` on a
    grid, applied to the probes: the normalised curve ``r`` of the probed times (and ``r(0) = 1`` when
    the range starts at 0) gets its non-increasing fit weighted by the samples of each time, and each
    endpoint is its crossing by linear interpolation. Intervals are cluster-bootstrap percentile
    intervals: the sources are resampled with every sample they gave at every probe (the samples of
    one source are correlated across times), and an estimated base rate is re-estimated from the
    resampled sources and resampled reference samples.

    Examples
    --------
    >>> import torch
    >>> from critwin import GaussianMixture, search_window
    >>> mixture = GaussianMixture(torch.tensor([[4.0], [-4.0]], dtype=torch.float64))
    >>> x0 = mixture.subset([0]).sample(256, generator=torch.Generator().manual_seed(0))[0]
    >>> found = search_window(mixture, x0, base_rate=0.5, ci_half_width=0.1, seed=0, progress=False)
    >>> lo, hi = found.t_after_ci
    >>> bool(hi - lo <= 0.2)
    True
    """
    runs_on = resolve_executor(executor, ray_address, ray_timeout)
    process = as_process(model, sampler, n_steps, t_max, eta)
    x0 = check_samples(x0, process)
    delta = check_delta(delta)
    check_generator(generator)
    batch = check_positive_int(batch, "batch")
    max_per_probe = check_positive_int(max_per_probe, "max_per_probe")
    level = check_eps(level, "level")
    precision = check_precision(ci_half_width, max_samples, n_boot, level, max_per_probe)
    resolution = check_resolution(resolution, precision)
    cond = check_cond(cond)
    feature_fn = resolve_features(feature, process, caller="search_window")
    names = feature_names(feature_fn)
    base_seed = resolve_seed(seed, generator)
    lo, hi = check_t_range(t_range, process.grid)
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
        reference = _Reference(runner, given, shared.source_labels, n_ref)
        prober = _Prober(runner, shared, batch, max_per_probe, level, process.nfe is not None)
        bisect = Bisection(
            prober, lattice_candidates(process, lo, hi, resolution, precision), lo, hi, resolution
        )
        steps = 2 * max(1, math.ceil(math.log2(max((hi - lo) / resolution, 1.0))))
        with progress_bar(steps * len(names), "window search", progress) as advance:
            found = {name: _search_one(bisect, name, reference.rates[name], delta, advance) for name in names}
        crossings = ProbeCrossings(prober, reference, n_boot, level, base_seed, anchored=lo == 0.0)
        levels = (1 - delta, delta)
        reached = dict.fromkeys(names)
        if precision is None:
            narrowed = _Narrowed({name: crossings.endpoints(name, levels) for name in names}, prober, 0)
        else:
            confirming = functools.partial(
                _Prober, runner, shared, batch, max_per_probe, level, process.nfe is not None, "confirm"
            )
            with progress_bar(precision.max_samples, "narrowing intervals", progress) as advance:
                narrowed = _narrow(bisect, crossings, precision, levels, names, advance, confirming)
            reached = {name: name not in narrowed.short for name in names}
        estimates = narrowed.estimates
    metadata = result_metadata(
        {"clock": clock_of(process), "process": process.describe()},
        getattr(process, "device", None),
        getattr(process, "dtype", None),
    )
    nfe = None if prober.nfe is None else prober.nfe + reference.nfe
    if nfe is not None and narrowed.prober is not prober:
        nfe += narrowed.prober.nfe
    results = {}
    for name in names:
        after, before = found[name]
        estimate_after, estimate_before = estimates[name]
        results[name] = SearchResult(
            t_after=estimate_after.t,
            t_before=estimate_before.t,
            t_after_bracket=after.bracket,
            t_before_bracket=before.bracket,
            t_after_ci=estimate_after.ci,
            t_before_ci=estimate_before.ci,
            b=reference.rates[name],
            delta=delta,
            resolution=resolution,
            probes=narrowed.prober.summary(name),
            nfe=nfe,
            n_pilot=narrowed.n_pilot,
            ci_half_width=None if precision is None else precision.half_width,
            ci_reached=reached[name],
            ci_floor=None if precision is None else (estimate_after.floor, estimate_before.floor),
            sources_needed=_sources_needed(
                z0.shape[0], [f for (n, _), f in narrowed.limited.items() if n == name], precision
            ),
            n_boot=n_boot,
            metadata=metadata if feature_fn.single else {**metadata, "feature": name, "features": names},
        )
    return at_edge(results)


def _sources_needed(n_sources: int, floors, precision) -> int | None:
    """The fewest sources for the request, from the ``floors`` of the source-limited endpoints (None
    where there is none)."""
    if precision is None or not floors:
        return None
    return sources_needed(n_sources, max(floors), precision.half_width)


class _Narrowed(NamedTuple):
    """The estimates ``{name: [t_after, t_before]}``, the prober whose samples gave them, the samples
    drawn before them and not in that prober (0 without a confirmation) and the names whose
    intervals stayed wider than requested."""

    estimates: dict
    prober: _Prober
    n_pilot: int
    short: frozenset = frozenset()
    limited: dict = {}  # noqa: RUF012 (a NamedTuple default, never mutated)


def _narrow(bisect, crossings: ProbeCrossings, precision, levels, names, advance, confirming) -> _Narrowed:
    """Narrow to ``precision`` in two stages: a pilot on the bisection's probes, then a confirmation.

    The pilot narrows to ``PILOT_WIDTH`` times the requested half-width; where it sends samples and
    when it stops depend on its own draws, so its intervals (computed on those draws) under-cover. The
    confirmation (a prober ``confirming()`` on an independent random stream) redraws every probed time
    afresh, as many samples as the pilot says reach the requested width with a margin
    (:func:`~critwin.experiments.search_precision.confirmation_counts`), and the estimates and
    intervals are those of its samples alone: a design fixed before they were drawn. Should an
    interval still be wider than requested, the confirmation narrows on (top-ups: on two strings under
    masking, in about half of the searches). Without budget for it, the pilot's estimates are returned,
    short of the precision (warned). Either way the intervals narrower than requested are reported at
    the requested half-width (:func:`~critwin.experiments.search_precision.fixed_width`): stopping
    once a bootstrap interval is narrow enough selects the too-narrow ones.
    """
    pilot_precision = precision._replace(half_width=PILOT_WIDTH * precision.half_width)
    pilot = Narrowing(bisect, crossings, pilot_precision, levels, advance, requested=precision.half_width)
    found = pilot.run(names, warn=False)
    left = precision.max_samples - pilot.spent
    counts = confirmation_counts(crossings.prober, found, precision.half_width, bisect.resolution, left)
    if counts is None:
        final = Narrowing(
            bisect, crossings, precision, levels, advance, spent=pilot.spent, limited=pilot.limited
        )
        estimates = fixed_width(final.run(names), precision.half_width)
        return _Narrowed(estimates, crossings.prober, 0, frozenset(final.short), final.limited)
    fresh = confirming()
    for key, n in counts.items():
        for _ in range(n // fresh.batch):
            fresh.draw_at(key)
        advance(n)
    n_pilot = sum(entry.n for entry in crossings.prober.cache.values())
    spent = pilot.spent + sum(counts.values())
    final = Narrowing(
        bisect, crossings.on(fresh), precision, levels, advance, spent=spent, limited=pilot.limited
    )
    estimates = fixed_width(final.run(names), precision.half_width)
    return _Narrowed(estimates, fresh, n_pilot, frozenset(final.short), final.limited)


class _Endpoint(NamedTuple):
    """A bisected endpoint: the final ``bracket`` (c > level at its start, <= level at its end) and
    the ``level`` on c it crosses."""

    bracket: tuple[float, float]
    level: float


def _search_one(bisect: Bisection, name, b: float, delta: float, advance) -> tuple[_Endpoint, _Endpoint]:
    """Both endpoints of the feature ``name``: t_after (r = 1 - delta) and t_before (r = delta)."""
    out = []
    for level in (b + (1 - b) * (1 - delta), b + (1 - b) * delta):
        bracket = bisect(level, advance, name)
        probe_range_ends(bracket, bisect, functools.partial(bisect.prober.above, threshold=level, name=name))
        out.append(_Endpoint(bracket, level))
    return tuple(out)


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


class _Reference:
    """The base rates ``rates`` ({name: b}): the given ones, and the others (names ``estimated``)
    ``sum_k p_k q_k`` with ``q`` from the labels ``labels`` ({name: (R,)}) of model samples drawn
    from the prior and run to the end (``nfe`` their evaluations; one set read by every feature).
    :meth:`grow` draws more of them (the narrowing does, where the base rate limits the precision).
    """

    def __init__(self, runner, given: dict, source_labels: dict, n_ref: int | None):
        self.runner, self.source_labels = runner, source_labels
        self.rates = dict(given)
        self.estimated = frozenset(name for name, value in given.items() if value is None)
        self.labels = {name: torch.zeros(0, dtype=torch.long) for name in self.estimated}
        self.nfe, self.parts = 0, 0
        if self.estimated:
            self.grow(n_ref)

    @property
    def size(self) -> int:
        return next(iter(self.labels.values())).numel() if self.labels else 0

    def grow(self, n: int) -> None:
        """Draw ``n`` more reference samples and re-estimate the rates."""
        [(_, unit)] = self.runner.map_unordered(_reference_unit, [(0, (n, self.parts, self.size))])
        self.parts += 1
        self.nfe += int(unit["nfe"])
        for name in self.estimated:
            self.labels[name] = torch.cat(
                [self.labels[name], torch.from_numpy(unit[labelled("labels", name)])]
            )
            self.rates[name] = estimated_base_rate(self.source_labels[name], self.labels[name])
            if not self.rates[name] < 1.0:
                raise ConstantFeatureError(
                    "the estimated base rate is 1 (the feature never varies); pass base_rate="
                    + ("" if name == UNNAMED else f" (feature {name!r})")
                )


def _reference_unit(shared: SweepSources, n_ref: int, part: int, offset: int):
    """Labels (n_ref,) of model samples (prior run to the end) for the base rate (per feature), and
    their NFEs: part ``part`` of the reference, its samples numbered from ``offset``."""
    process, z0 = shared.process, shared.z0
    keys = ("reference",) if part == 0 else ("reference", part)
    generator = unit_generator(shared.seed, *keys, device=z0.device)
    before = process.nfe
    x = process.prior(n_ref, generator=generator, device=z0.device, dtype=z0.dtype)
    rows = (offset + torch.arange(n_ref)) % z0.shape[0]  # per-sample conditioning cycles like the sources
    x = process.run(x, generator=generator, cond=select_cond(shared.cond, rows, z0.shape[0]) or None)
    return {**read_features(shared.feature_fn, process.decode(x)), "nfe": nfe_since(process, before)}
