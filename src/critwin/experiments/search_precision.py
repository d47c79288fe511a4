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
    "CONFIRMATION_MARGIN",
    "confirmation_counts",
]

PILOT_WIDTH = math.sqrt(2.0)
"""The pilot narrowing stops at this multiple of the requested half-width (about half the samples of
narrowing to it); the confirmation then draws its samples afresh (:func:`confirmation_counts`)."""

CONFIRMATION_MARGIN = 1.25
"""The confirmation draws this multiple of the samples that the plug-in rule ``n (w / h)^2`` (pilot
half-width ``w``, requested ``h``) says reach the requested half-width: bootstrap widths vary by ~10%
from run to run, so that it seldom needs a top-up."""

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
    """An endpoint's estimate ``t`` (±inf when censored), its bootstrap interval ``ci`` and the share
    of its bootstrap variance that resampling the reference samples alone gives (0 for a given base
    rate): above 1/2, more reference samples narrow it more than more probe samples."""

    t: float
    ci: tuple[float, float]
    reference_share: float = 0.0

    @property
    def half_width(self) -> float:
        return 0.5 * (self.ci[1] - self.ci[0])


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
        and reference samples resampled, ``reference_rates`` with the reference samples alone."""
        self.rates, self.reference_rates = {}, {}
        for name, b in self.reference.rates.items():
            if name not in self.reference.estimated:
                self.rates[name] = self.reference_rates[name] = np.full(self.n_boot, b)
                continue
            source, model = self.prober.source[name], self.reference.labels[name]
            rng = np.random.default_rng([self.seed, _BOOTSTRAP_STREAM, model.shape[0]])
            picks = rng.integers(0, model.shape[0], size=(self.n_boot, model.shape[0]))
            both = zip(self.draws, picks, strict=True)
            self.rates[name] = np.array([estimated_base_rate(source[d], model[q]) for d, q in both])
            self.reference_rates[name] = np.array([estimated_base_rate(source, model[q]) for q in picks])

    def endpoints(self, name, levels) -> list[EndpointEstimate]:
        """The crossings of ``levels`` (of r) of the feature ``name``, with their intervals."""
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
        return [
            EndpointEstimate(point[j], percentile_interval(draws[:, j], self.level), shares[j])
            for j in range(len(levels))
        ]


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


def confirmation_counts(prober, found, target: float, spacing: float, budget: int) -> dict | None:
    """Samples to draw afresh at every time the pilot probed (``{cache key: n}``, whole batches), or
    None where ``budget`` has not one batch per time left.

    Times within two lattice ``spacing`` of an endpoint estimate get ``CONFIRMATION_MARGIN * (w / target)^2``
    times the pilot's samples there (``w`` that endpoint's pilot half-width; the largest over the
    endpoints near a time), the others as many as the pilot drew; scaled down to fit ``budget``.
    """
    scale = dict.fromkeys(prober.cache, 1.0)
    for estimates in found.values():
        for estimate in estimates:
            if not (math.isfinite(estimate.t) and math.isfinite(estimate.half_width)):
                continue  # censored, or no finite replicate: the pilot's count
            wanted = CONFIRMATION_MARGIN * (estimate.half_width / target) ** 2
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
    """

    def __init__(self, bisect, crossings: ProbeCrossings, precision: Precision, levels, advance, spent=0):
        self.bisect, self.crossings, self.precision = bisect, crossings, precision
        self.levels, self.advance = levels, advance
        self.spent = spent  # samples drawn before (the pilot's, for a confirmation): they count in the budget
        self.short: set = set()  # after run: the names (features) with an interval wider than requested

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
            narrowable = [(name, j) for name, j in wide if math.isfinite(found[name][j].t)]
            if not narrowable or self.spent >= self.precision.max_samples:
                self.short = {name for name, _ in wide}
                if wide and warn:
                    self._warn(wide, found)
                return found
            name, j = max(narrowable, key=excess.get)
            estimate = found[name][j]
            if estimate.reference_share > 0.5:
                drawn = self._grow_reference(excess[name, j])
            else:
                drawn = self._spend(name, estimate, excess[name, j])
            self.spent += drawn
            self.advance(drawn)

    def _wanted(self, have: int, ratio: float) -> int:
        """Samples to add to ``have`` that narrow an interval ``ratio`` times too wide: about half of
        what ``n (width / requested)^2`` says (at most 1.5 n), whole batches within the budget."""
        batch = self.crossings.prober.batch
        wanted = have * (min(ratio, 2.0) ** 2 - 1) / 2
        left = self.precision.max_samples - self.spent
        return batch * max(1, min(math.ceil(wanted / batch), math.ceil(left / batch)))

    def _grow_reference(self, ratio: float) -> int:
        """More reference samples, where the base rate's uncertainty dominates; the samples drawn."""
        n = self._wanted(self.crossings.reference.size, ratio)
        self.crossings.reference.grow(n)
        self.crossings.refresh()
        return n

    def _spend(self, name, estimate: EndpointEstimate, ratio: float) -> int:
        """Draw at the probes around the estimate (or, where its interval is censored, beyond them); the
        samples drawn."""
        prober, batch = self.crossings.prober, self.crossings.prober.batch
        t_hat = estimate.t
        low, high = self._neighbours(t_hat)
        new = self._beyond(estimate.ci)
        if new is None:
            new = self._between(low, high, t_hat)
        if new is not None:
            prober.draw_at(new)
            return batch
        drawn = self._wanted(sum(prober.cache[t].n for t in (low, high) if t is not None), ratio)
        for _ in range(drawn // batch):
            prober.draw_at(self._noisier(name, t_hat, low, high))
        return drawn

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
        """Of the two neighbours, the one where a batch lowers the variance of the interpolated crossing
        more: ``(1 - lam)^2 v_lo / n_lo + lam^2 v_hi / n_hi`` falls by about ``w^2 v / n^2`` per sample
        at a probe, so that batch after batch the counts settle at ``n ∝ w sqrt(v)`` (the allocation that
        minimises that variance for their total), not at ``n ∝ w^2 v`` (equal shares of it)."""
        if low is None or high is None:
            return high if low is None else low
        cache = self.crossings.prober.cache
        lam = min(max((t_hat - cache[low].t) / (cache[high].t - cache[low].t), 0.0), 1.0)

        def gain(t, weight):
            n, k = cache[t].n, cache[t].kept[name]
            return weight**2 * (k + 1) * (n - k + 1) / (n + 2) ** 4  # smoothed c (1 - c) / n^2

        return low if gain(low, 1 - lam) >= gain(high, lam) else high

    def _warn(self, wide, found) -> None:
        parts = []
        for name, j in wide:
            estimate = found[name][j]
            label = ("t_after", "t_before")[j] + ("" if name == UNNAMED else f" of {name!r}")
            note = " (censored: the crossing lies outside t_range)" if not math.isfinite(estimate.t) else ""
            parts.append(f"{label} half-width {estimate.half_width:.3g}{note}")
        warnings.warn(
            f"search_window: ci_half_width={self.precision.half_width:g} not reached after {self.spent} "
            f"samples (max_samples={self.precision.max_samples}): " + "; ".join(parts),
            UserWarning,
            stacklevel=3,
        )
