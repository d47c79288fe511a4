"""The times a window search may probe: its resolution, its range, (with ``ci_half_width``) the
lattice of OU times it is restricted to, and the bisection over them.
:mod:`critwin.experiments.search` re-exports the constants.
"""

from __future__ import annotations

import math

from critwin._validation import check_number
from critwin.experiments.grid_times import realise_times

__all__ = [
    "MIN_RESOLUTION",
    "LATTICE_SPACING",
    "check_resolution",
    "lattice_candidates",
    "check_t_range",
    "Bisection",
    "probe_range_ends",
]


MIN_RESOLUTION = 1e-6
"""Smallest bracket width in OU time ``search_window`` accepts (at most ~25 bisection steps per range
of 10 OU units)."""

LATTICE_SPACING = 2.0
"""With ``ci_half_width=h``, ``search_window`` probes only the lattice of OU times spaced ``2 h``
apart (realised on a fixed grid), the grid ``estimate_window`` would read at that precision: the
crossing is interpolated between lattice times, whose curvature error (~ h^2 |c''/c'| / 2) stays
well within the interval, while their difference in c is about twice the sampling error of each,
so that the interpolation does not divide by noise."""


def check_resolution(resolution, precision) -> float:
    """The bracket width (plain search) or lattice spacing (with ``ci_half_width``) in OU time."""
    if resolution is None:
        return 0.05 if precision is None else LATTICE_SPACING * precision.half_width
    # Below MIN_RESOLUTION the bisection would stall on float spacing (1e-300 never terminated).
    return check_number(resolution, "resolution (OU time)", low=MIN_RESOLUTION)


def lattice_candidates(process, lo: float, hi: float, resolution: float, precision) -> list[float] | None:
    """The times the bisection may probe, increasing: None (any time of a continuous process) or a
    fixed grid's times in ``[lo, hi]``; with ``ci_half_width`` the lattice ``lo + k * resolution``
    (and ``hi``; t = 0 is known, never probed), realised on a fixed grid (distinct grid times)."""
    if precision is None:
        if process.continuous:
            return None
        return sorted(t for t in process.times[:-1].tolist() if lo <= t <= hi)
    steps = math.floor((hi - lo) / resolution * (1 + 1e-12))
    lattice = [lo + k * resolution for k in range(steps + 1)] + [hi]
    lattice = [t for t in lattice if 0.0 < t <= hi]
    if not process.continuous:
        lattice = realise_times(process, lattice).times.tolist()
    return sorted({t for t in lattice if t > 0.0})


def check_t_range(t_range, grid) -> tuple[float, float]:
    """``t_range`` (default: 0 to the grid's largest finite time) as a validated pair ``lo < hi``."""
    if t_range is None:
        return 0.0, grid.finite_max
    if isinstance(t_range, (str, bytes)) or not hasattr(t_range, "__len__") or len(t_range) != 2:
        raise ValueError(f"t_range must be a pair (lo, hi) of OU times, got {t_range!r}")
    lo, hi = grid.check(t_range, "t_range").tolist()
    if not lo < hi:
        raise ValueError(f"t_range must satisfy lo < hi, got {t_range!r}")
    return lo, hi


class Bisection:
    """Bisection for the crossing of ``c(t) = threshold`` between ``lo`` and ``hi``: over OU time for a
    continuous process (``candidates`` None), else over the positions of the grid times ``candidates``."""

    def __init__(self, prober, candidates, lo, hi, resolution):
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


def probe_range_ends(bracket, bisect: Bisection, check) -> None:
    """Probe the end of the range that a bracket touches (``check(t)``: r(t) > level, sampling until it
    is decided), so that the fit over the probes shows a crossing beyond the range as censored (±inf)
    rather than extrapolating it. At ``lo = 0`` the curve is known: ``r(0) = 1``."""
    a, z = bracket
    if a == bisect.lo and bisect.lo > 0:
        check(bisect.lo)
    if z == bisect.hi:
        check(bisect.hi)
