"""Narrowing a window search to a requested precision (``search_window(..., ci_half_width=)``).

The endpoints of :func:`~critwin.experiments.search.search_window` are estimated from its probes —
times with unequal numbers of samples — as :func:`~critwin.experiments.estimation.estimate_window`
estimates them on a grid: the sample-weighted non-increasing fit of ``r = (c - b) / (1 - b)``, its
crossings by linear interpolation, cluster-bootstrap percentile intervals that resample the sources
(with every sample each gave at every probe) and, for an estimated base rate, the reference samples.
:class:`Narrowing` then spends batches where they narrow the widest interval most, until every
interval has the requested half-width.

Engine-internal: the search's prober and bisection are passed in, never imported.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np

from critwin._validation import check_number, check_positive_int
from critwin.experiments.estimation import base_rate as estimated_base_rate
from critwin.experiments.estimation import crossing_time, isotonic_decreasing, percentile_interval
from critwin.experiments.features import UNNAMED

__all__ = [
    "Precision",
    "check_precision",
    "EndpointEstimate",
    "ProbeCrossings",
    "fitted_crossings",
    "Narrowing",
    "PILOT_WIDTH",
    "FLOOR_SHARE",
    "CONFIRMATION_MARGIN",
    "confirmation_counts",
    "growth_factor",
    "sources_needed",
    "fixed_width",
]

PILOT_WIDTH = math.sqrt(2.0)
"""The pilot narrowing stops at this multiple of the requested half-width (about half the samples of
narrowing to it); the confirmation then draws its samples afresh (:func:`confirmation_counts`)."""

CONFIRMATION_MARGIN = 1.25
"""The confirmation draws this multiple of the samples that the plug-in rule ``n (w / h)^2`` (pilot
half-width ``w``, requested ``h``) says reach the requested half-width. Its own first half-widths still
vary widely (two strings under masking: 0.5 h to 1.4 h between the 10% and 90% quantiles, over h in
about half of the searches), so top-ups are common; the intervals narrower than ``h`` are then
reported at ``h`` (:func:`fixed_width`)."""

FLOOR_SHARE = 0.5
"""An endpoint is source-limited where its floor is above the requested half-width and at least this
share of its half-width (the samples’ part at most 3/4 of its variance): while the interval is much
wider than its floor, the floor's estimate is rough (the sources' rates come from few samples each)
and more samples narrow the interval anyway."""

_BOOTSTRAP_STREAM = 0x5EA2C4
"""The bootstrap's random stream under the search's seed (apart from every unit's generator)."""


class Precision(NamedTuple):
    """What ``ci_half_width`` asks: the ``half_width`` in OU time, within ``max_samples`` samples."""

    half_width: float
    max_samples: int


def check_precision(ci_half_width, max_samples, n_boot, level, max_per_probe) -> Precision | None:
    """The validated request (None without ``ci_half_width``); ``n_boot`` is checked here too."""
    n_boot = check_positive_int(n_boot, "n_boot")
    if ci_half_width is None:
        if max_samples is not None:
            raise ValueError("max_samples bounds the narrowing to ci_half_width; give ci_half_width too")
        return None
    half_width = check_number(ci_half_width, "ci_half_width (OU time)", low=0.0, closed="high")
    # With fewer replicates a percentile interval's tail holds no replicate: its width means nothing.
    fewest = math.ceil(2 / (1 - level))
    if n_boot < fewest:
        raise ValueError(f"n_boot must be >= {fewest} at level {level:g} with ci_half_width, got {n_boot}")
    budget = 64 * max_per_probe if max_samples is None else check_positive_int(max_samples, "max_samples")
    return Precision(half_width, budget)


class EndpointEstimate(NamedTuple):
    """An endpoint's estimate ``t`` (±inf when censored), its bootstrap interval ``ci``, the share of
    its bootstrap variance that resampling the reference samples alone gives (0 for a given base rate:
    above 1/2, more reference samples narrow it more than more probe samples), its ``floor`` — the
    half-width its interval keeps however many samples each source and the reference get (the
    between-source part: see :meth:`ProbeCrossings.endpoints`; 0 where unknown) — and the bootstrap
    ``replicates`` of the crossing (where they cross says which probes set the interval's ends)."""

    t: float
    ci: tuple[float, float]
    reference_share: float = 0.0
    floor: float = 0.0
    replicates: tuple = ()

    @property
    def half_width(self) -> float:
        return 0.5 * (self.ci[1] - self.ci[0])

    def source_limited(self, target: float) -> bool:
        """Whether no sample count narrows the interval to ``target`` (see ``FLOOR_SHARE``)."""
        return self.floor > target and self.floor >= FLOOR_SHARE * self.half_width

    def reachable_floor(self, target: float) -> float:
        """The floor to plan samples with: 0 where it is above ``target`` but not yet trusted."""
        return self.floor if self.floor < target else 0.0


class ProbeCrossings:
    """Endpoint estimates and cluster-bootstrap intervals from the probes (see search_window's Notes).

    The bootstrap's draws of sources are made once and those of reference samples once per reference
    size, so an estimate changes between calls only by the samples drawn in between, and the same
    seed gives the same intervals.
    """

    def __init__(self, prober, reference, n_boot: int, level: float, seed, anchored):
        self.prober, self.reference, self.level, self.anchored = prober, reference, level, anchored
        self.n_boot, self.seed = n_boot, seed
        n_sources = prober.shared.z0.shape[0]
        self.draws = np.random.default_rng([seed, _BOOTSTRAP_STREAM]).integers(
            0, n_sources, (n_boot, n_sources)
        )
        # (B, N): how often each replicate drew each source.
        self.weights = np.stack([np.bincount(row, minlength=n_sources) for row in self.draws]).astype(float)
        self.refresh()

    def on(self, prober) -> ProbeCrossings:
        """The same estimator (reference, bootstrap, level, seed) on the probes of another prober."""
        return ProbeCrossings(prober, self.reference, self.n_boot, self.level, self.seed, self.anchored)

    def refresh(self) -> None:
        """Redraw the base rates of the replicates (after the reference grew): ``rates`` with sources
        and reference samples resampled, ``reference_rates`` with the reference samples alone,
        ``source_rates`` with the sources alone."""
        self.rates, self.reference_rates, self.source_rates = {}, {}, {}
        for name, b in self.reference.rates.items():
            if name not in self.reference.estimated:
                self.rates[name] = self.reference_rates[name] = self.source_rates[name] = np.full(
                    self.n_boot, b
                )
                continue
            source, model = self.prober.source[name], self.reference.labels[name]
            rng = np.random.default_rng([self.seed, _BOOTSTRAP_STREAM, model.shape[0]])
            picks = rng.integers(0, model.shape[0], size=(self.n_boot, model.shape[0]))
            both = zip(self.draws, picks, strict=True)
            self.rates[name] = np.array([estimated_base_rate(source[d], model[q]) for d, q in both])
            self.reference_rates[name] = np.array([estimated_base_rate(source, model[q]) for q in picks])
            self.source_rates[name] = np.array([estimated_base_rate(source[d], model) for d in self.draws])

    def endpoints(self, name, levels) -> list[EndpointEstimate]:
        """The crossings of ``levels`` (of r) of the feature ``name``, with their intervals.

        The floor of an interval: its bootstrap variance is that of the sources (the spread of their
        own rates, which only more sources lower) plus that of the samples drawn from them and of the
        reference samples (which more samples lower). The floor is the interval of the same bootstrap
        with every source's rate at a probe known and the reference samples fixed (see
        :meth:`_floor_draws`); 0 where it is not finite."""
        entries = sorted(self.prober.cache.values(), key=lambda e: e.t)
        times = np.array([e.t for e in entries])
        kept = np.stack([e.kept_by[name] for e in entries]).astype(float)  # (P, N)
        trials = np.stack([e.trials for e in entries]).astype(float)
        k, n = kept.sum(1), trials.sum(1)
        point = fitted_crossings(times, k, n, self.reference.rates[name], levels, self.anchored)
        replicates = zip(self.weights @ kept.T, self.weights @ trials.T, self.rates[name], strict=True)
        draws = np.array([fitted_crossings(times, *rep, levels, self.anchored) for rep in replicates])
        if name in self.reference.estimated:
            alone = [
                fitted_crossings(times, k, n, b, levels, self.anchored) for b in self.reference_rates[name]
            ]
            shares = [_share(np.array(alone)[:, j], draws[:, j]) for j in range(len(levels))]
        else:
            shares = [0.0] * len(levels)
        floors = self._floor_draws(name, times, kept, trials, levels)
        out = []
        for j in range(len(levels)):
            low, high = percentile_interval(floors[:, j], self.level)
            floor = 0.5 * (high - low) if math.isfinite(high - low) else 0.0
            ci = percentile_interval(draws[:, j], self.level)
            out.append(EndpointEstimate(point[j], ci, shares[j], floor, tuple(draws[:, j].tolist())))
        return out

    def _floor_draws(self, name, times, kept, trials, levels) -> np.ndarray:
        """(B, len(levels)) crossings of the bootstrap's replicates of sources with each source's own
        rate at each probe in place of its samples, and the base rate of the resampled sources with
        the reference samples fixed.

        A source's rate is its observed one shrunk towards the probe's ``c``, so that their spread
        (weighted by samples) is the observed spread less its sampling part, ``c (1 - c)`` over the
        samples per source (the most it can be: sources that differ share less), so the floor is
        understated where sources have few samples each, never overstated."""
        n = trials.sum(1, keepdims=True)
        c = kept.sum(1, keepdims=True) / np.maximum(n, 1.0)
        rate = np.where(trials > 0, kept / np.maximum(trials, 1.0), c)
        spread = (trials * (rate - c) ** 2).sum(1, keepdims=True) / np.maximum(n, 1.0)
        sampling = c * (1 - c) * trials.shape[1] / np.maximum(n, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            shrink = np.sqrt(np.clip(np.where(spread > 0, 1 - sampling / spread, 0.0), 0.0, 1.0))
        expected = trials * (c + shrink * (rate - c))
        replicates = zip(
            self.weights @ expected.T, self.weights @ trials.T, self.source_rates[name], strict=True
        )
        return np.array([fitted_crossings(times, *rep, levels, self.anchored) for rep in replicates])


def _spread(draws: np.ndarray) -> float:
    """Half the central 68% range of the draws (their SD for a normal law; robust to a few
    infinite ones), NaN draws left out."""
    low, high = percentile_interval(draws, 0.6827)
    return 0.5 * (high - low)


def _share(part: np.ndarray, whole: np.ndarray) -> float:
    """The variance of the draws ``part`` as a share of that of ``whole`` (1 when only the part's is
    infinite or unknown, 0 when it is finite and the whole's is not)."""
    v_part, v_whole = _spread(part) ** 2, _spread(whole) ** 2
    if not math.isfinite(v_part):
        return 1.0
    if not math.isfinite(v_whole):
        return 0.0
    return min(v_part / v_whole, 1.0) if v_whole > 0 else 0.0


def fitted_crossings(times, kept, trials, b: float, levels, anchored: bool) -> list[float]:
    """Crossings of ``levels`` by the sample-weighted non-increasing fit of ``r = (c - b) / (1 - b)``
    over the probed ``times`` (increasing; with ``r(0) = 1`` when ``anchored``), as estimate_window
    finds them on a grid; probes without samples are left out, and ``b = 1`` has none (NaN)."""
    drawn = trials > 0
    times, trials = times[drawn], trials[drawn]
    if not b < 1.0:
        return [math.nan] * len(levels)
    r = (kept[drawn] / trials - b) / (1 - b)
    if anchored:
        # r <= 1 everywhere, so the anchor is never pooled with a later time: its weight does not matter.
        # np.concatenate, not np.r_: this runs once per bootstrap replicate, and np.r_ costs ~30 us a call.
        times, r, trials = (np.concatenate(([a], v)) for a, v in ((0.0, times), (1.0, r), (1.0, trials)))
    fit = isotonic_decreasing(r, trials)
    return [crossing_time(times, fit, level) for level in levels]


def fixed_width(found: dict, target: float) -> dict:
    """The reported estimates of a narrowing stopped at half-width ``target``: every finite interval
    narrower than ``target`` widened on both sides to half-width ``target`` (it still contains the
    bootstrap interval); the others as they are.

    The narrowing stops when the bootstrap half-width first falls to ``target``, so a narrower one is
    a selected draw, not a sign of more precision than the samples were sized for: the searches that
    stop on a narrow bootstrap interval are those whose interval is too narrow (on two strings under
    masking, t_after's intervals that met ``target`` at the confirmation's first look covered 0.88,
    the others 0.98+). The interval reported is then that of Chow and Robbins' fixed-width sequential
    procedure (the estimate ± the requested half-width, stopped once the estimated half-width is within
    it), with the bootstrap's asymmetry kept."""
    out = {}
    for name, estimates in found.items():
        out[name] = []
        for e in estimates:
            low, high = e.ci
            if math.isfinite(e.t) and math.isfinite(high - low) and e.half_width < target:
                extra = (target - e.half_width) * (1 - 1e-9)  # never past target by a rounding
                e = e._replace(ci=(low - extra, high + extra))
            out[name].append(e)
    return out


def growth_factor(width: float, floor: float, target: float) -> float:
    """How many times the samples must grow to narrow a half-width ``width`` to ``target`` when
    ``floor`` of it stays however many samples are drawn: the rest falls as ``1 / n``, so
    ``(width^2 - floor^2) / (target^2 - floor^2)`` (``(width / target)^2`` without a floor; inf when
    ``floor >= target``)."""
    if floor >= target:
        return math.inf
    return (width**2 - floor**2) / (target**2 - floor**2)


def confirmation_counts(prober, found, target: float, spacing: float, budget: int) -> dict | None:
    """Samples to draw afresh at every time the pilot probed (``{cache key: n}``, whole batches), or
    None where ``budget`` has not one batch per time left.

    Times within two lattice ``spacing`` of an endpoint estimate get ``CONFIRMATION_MARGIN`` times
    :func:`growth_factor` of the pilot's samples there (``w`` that endpoint's pilot half-width, its
    floor; the largest over the endpoints near a time), the others as many as the pilot drew; scaled
    down to fit ``budget``. A source-limited endpoint (:meth:`EndpointEstimate.source_limited`) asks
    for no more.
    """
    scale = dict.fromkeys(prober.cache, 1.0)
    for estimates in found.values():
        for estimate in estimates:
            if not (math.isfinite(estimate.t) and math.isfinite(estimate.half_width)):
                continue  # censored, or no finite replicate: the pilot's count
            if estimate.source_limited(target):
                continue  # no count reaches the target
            floor = estimate.reachable_floor(target)
            wanted = CONFIRMATION_MARGIN * growth_factor(estimate.half_width, floor, target)
            for key, entry in prober.cache.items():
                if abs(entry.t - estimate.t) <= 2 * spacing:
                    scale[key] = max(scale[key], wanted)
    batch = prober.batch
    counts = {key: batch * math.ceil(scale[key] * prober.cache[key].n / batch) for key in scale}
    total = sum(counts.values())
    if total > budget:
        if budget < batch * len(counts):
            return None
        counts = {key: batch * max(1, math.floor(n * budget / total / batch)) for key, n in counts.items()}
    return counts


class Narrowing:
    """After the bisection: batches where they narrow the widest interval most, until every endpoint's
    half-width is at most the requested one or the budget is spent (then a UserWarning says so).

    The widest interval's endpoint lies between two probed times of the search's lattice. Where the
    interval is censored (some replicates cross beyond the outermost probe: an end ±inf), the lattice
    time next beyond that probe is probed first. If a lattice time not yet probed lies between the
    two, it is probed; else batches go to whichever of the two a batch narrows more (the variance of
    the interpolated crossing, ``(1 - lam)^2 v_lo / n_lo + lam^2 v_hi / n_hi``, falls by ``w^2 v / n^2``
    per sample at a probe), about half of the samples that the plug-in rule
    ``n (width / requested)^2`` says are missing, so that the bootstrap is rerun a few times, not
    after every batch. Where resampling the reference samples alone gives most of an interval's
    bootstrap variance, the reference grows instead.

    An endpoint source-limited at ``requested`` (the final half-width; the precision's by default:
    its interval's floor, the between-source part of :meth:`ProbeCrossings.endpoints`, is above it,
    :meth:`EndpointEstimate.source_limited`) gets no more samples: with these sources no count
    reaches it (once found so, for the rest of the search). The warning then says how many sources
    could.
    """

    def __init__(
        self,
        bisect,
        crossings: ProbeCrossings,
        precision: Precision,
        levels,
        advance,
        spent=0,
        requested=None,
        limited=None,
    ):
        self.bisect, self.crossings, self.precision = bisect, crossings, precision
        self.levels, self.advance = levels, advance
        self.requested = precision.half_width if requested is None else requested
        self.spent = spent  # samples drawn before (the pilot's, for a confirmation): they count in the budget
        self.short: set = set()  # after run: the names (features) with an interval wider than requested
        # {(name, j): floor} of the endpoints found source-limited (here or, ``limited``, by a stage
        # before on the same sources), with the largest floor they were found to have.
        self.limited: dict = dict(limited or {})

    def run(self, names, warn: bool = True) -> dict[Any, list[EndpointEstimate]]:
        """``{name: [t_after, t_before]}`` estimates once narrow enough or out of budget (``warn``: then
        with a UserWarning)."""
        target = self.precision.half_width
        while True:
            found = {name: self.crossings.endpoints(name, self.levels) for name in names}
            # Half-width over the request per endpoint; NaN (no finite replicate) counts as the widest.
            excess = {
                (name, j): math.inf if math.isnan(e.half_width) else e.half_width / target
                for name in names
                for j, e in enumerate(found[name])
            }
            wide = [key for key, ratio in excess.items() if ratio > 1.0]
            for name, j in wide:
                if found[name][j].source_limited(self.requested):
                    self.limited[name, j] = max(self.limited.get((name, j), 0.0), found[name][j].floor)
            narrowable = [
                (name, j)
                for name, j in wide
                if math.isfinite(found[name][j].t) and (name, j) not in self.limited
            ]
            if not narrowable or self.spent >= self.precision.max_samples:
                self.short = {name for name, _ in wide}
                if wide and warn:
                    self._warn(wide, found)
                return found
            name, j = max(narrowable, key=excess.get)
            estimate = found[name][j]
            factor = growth_factor(estimate.half_width, estimate.reachable_floor(target), target)
            if estimate.reference_share > 0.5:
                drawn = self._grow_reference(factor)
            else:
                drawn = self._spend(name, estimate, factor)
            self.spent += drawn
            self.advance(drawn)

    def _wanted(self, have: int, factor: float) -> int:
        """Samples to add to ``have`` that must grow ``factor`` times (:func:`growth_factor`): about
        half of the missing ``(factor - 1) n`` (at most 1.5 n), whole batches within the budget."""
        batch = self.crossings.prober.batch
        wanted = have * (min(factor, 4.0) - 1) / 2
        left = self.precision.max_samples - self.spent
        return batch * max(1, min(math.ceil(wanted / batch), math.ceil(left / batch)))

    def _grow_reference(self, factor: float) -> int:
        """More reference samples, where the base rate's uncertainty dominates; the samples drawn."""
        n = self._wanted(self.crossings.reference.size, factor)
        self.crossings.reference.grow(n)
        self.crossings.refresh()
        return n

    def _spend(self, name, estimate: EndpointEstimate, factor: float) -> int:
        """Draw at the probes where the bootstrap replicates cross (or, where the interval is censored,
        beyond them; first at any lattice time not yet probed next to the estimate or an interval end);
        the samples drawn."""
        prober, batch = self.crossings.prober, self.crossings.prober.batch
        t_hat = estimate.t
        low, high = self._neighbours(t_hat)
        new = self._beyond(estimate.ci)
        if new is None:
            new = self._between(low, high, t_hat)
        if new is not None:
            prober.draw_at(new)
            return batch
        weights = self._weights(estimate.replicates)
        if not weights:  # no finite replicate: the estimate's neighbours, as a single crossing there
            weights = self._interpolation_weights(t_hat, low, high)
        drawn = self._wanted(sum(prober.cache[t].n for t in weights), factor)
        for _ in range(drawn // batch):
            prober.draw_at(self._pick(name, weights))
        return drawn

    def _weights(self, replicates) -> dict:
        """``{probe: sum over replicates of its squared interpolation weight}``: a replicate crossing at
        ``t`` between probes ``a < t <= b`` (``lam = (t - a) / (b - a)``) depends on ``c(a)`` with
        weight ``1 - lam`` and on ``c(b)`` with ``lam``, so a sample at a probe lowers the variance of the
        replicates' crossings (hence the interval's width, ends included) in proportion to it."""
        weights: dict = {}
        for t in replicates:
            if not math.isfinite(t):
                continue
            for key, weight in self._interpolation_weights(t, *self._neighbours(t)).items():
                weights[key] = weights.get(key, 0.0) + weight
        return weights

    def _interpolation_weights(self, t: float, low, high) -> dict:
        """``{probe: squared weight}`` of a crossing at ``t`` interpolated between the probes ``low`` and
        ``high`` (``low`` None: between the range's start, where r(0) = 1 is known, and ``high``; ``high``
        None: ``low`` alone)."""
        cache = self.crossings.prober.cache
        if high is None:
            return {} if low is None else {low: 1.0}
        start = self.bisect.lo if low is None else cache[low].t
        lam = min(max((t - start) / (cache[high].t - start), 0.0), 1.0) if cache[high].t > start else 1.0
        if low is None:
            return {high: lam**2}
        return {low: (1 - lam) ** 2, high: lam**2}

    def _pick(self, name, weights: dict):
        """The probe where a batch lowers ``sum_p weight_p v_p / n_p`` most (by ``weight v / n^2`` per
        sample; the first of equals): batch after batch the counts settle at ``n ∝ sqrt(weight v)``,
        the allocation that minimises that variance for their total."""
        cache = self.crossings.prober.cache

        def gain(t):
            n, k = cache[t].n, cache[t].kept[name]
            return weights[t] * (k + 1) * (n - k + 1) / (n + 2) ** 4  # smoothed c (1 - c) / n^2

        return max(weights, key=gain)

    def _neighbours(self, t_hat: float) -> tuple[float | None, float | None]:
        """The probed times (cache keys) last at or below ``t_hat`` and first above it (None: none, or
        the anchor r(0) = 1 below)."""
        keys = sorted(self.crossings.prober.cache, key=lambda t: self.crossings.prober.cache[t].t)
        low = [t for t in keys if self.crossings.prober.cache[t].t <= t_hat]
        high = [t for t in keys if self.crossings.prober.cache[t].t > t_hat]
        return (low[-1] if low else None), (high[0] if high else None)

    def _beyond(self, ci) -> float | None:
        """Where replicates cross beyond the outermost probe (an interval end ±inf), the lattice time
        next beyond it (None: there is none, or the interval is finite). Without it the replicates'
        crossings stay censored however many samples the probes next to the estimate get: a crossing
        just below the highest probe takes ~(SE / gap)^2 samples there to resolve."""
        cache = self.crossings.prober.cache
        if ci[1] == math.inf:
            outside = [t for t in self.bisect.candidates if t > max(cache) and t not in cache]
            return min(outside) if outside else None
        if ci[0] == -math.inf:
            outside = [t for t in self.bisect.candidates if t < min(cache) and t not in cache]
            return max(outside) if outside else None
        return None

    def _between(self, low, high, t_hat: float) -> float | None:
        """A time not yet probed between the two neighbours, or None."""
        if high is None:
            return None
        a = self.bisect.lo if low is None else low
        inside = [t for t in self.bisect.candidates if a < t < high]
        return min(inside, key=lambda t: abs(t - t_hat)) if inside else None

    def _noisier(self, name, t_hat: float, low, high) -> float:
        """Of the two neighbours, the one where a batch lowers the variance of a crossing interpolated
        at ``t_hat`` more: ``(1 - lam)^2 v_lo / n_lo + lam^2 v_hi / n_hi`` (:meth:`_pick`), so that the
        counts settle at ``n ∝ w sqrt(v)``, not at ``n ∝ w^2 v`` (equal shares of it)."""
        return self._pick(name, self._interpolation_weights(t_hat, low, high))

    def _warn(self, wide, found) -> None:
        parts = []
        n_sources = self.crossings.prober.shared.z0.shape[0]
        for name, j in wide:
            estimate = found[name][j]
            label = ("t_after", "t_before")[j] + ("" if name == UNNAMED else f" of {name!r}")
            note = " (censored: the crossing lies outside t_range)" if not math.isfinite(estimate.t) else ""
            if (name, j) in self.limited:
                floor = self.limited[name, j]
                needed = sources_needed(n_sources, floor, self.requested)
                note = (
                    f" (source-limited: with {n_sources} sources it stays above {floor:.3g} "
                    f"however many samples each gets; needs >= {needed} sources for ±{self.requested:g}; "
                    "not narrowed)"
                )
            parts.append(f"{label} half-width {estimate.half_width:.3g}{note}")
        warnings.warn(
            f"search_window: ci_half_width={self.precision.half_width:g} not reached after {self.spent} "
            f"samples (max_samples={self.precision.max_samples}): " + "; ".join(parts),
            UserWarning,
            stacklevel=3,
        )


def sources_needed(n_sources: int, floor: float, target: float) -> int:
    """The fewest sources whose floor (between-source variance, ``∝ 1 / N``) is below ``target``, from
    ``floor`` measured with ``n_sources``: ``N (floor / target)^2``, more than ``n_sources``; with that
    many the samples still have to be unlimited, so more sources reach the target for fewer samples."""
    return max(n_sources + 1, math.ceil(n_sources * (floor / target) ** 2))
