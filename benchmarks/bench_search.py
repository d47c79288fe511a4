"""Window search to a requested precision vs a uniform grid that reaches the same precision (issue 21.7).

On the shipped ``digits`` DDPM (``load_digits_model().process(STEPS)``, its training DDPM sampler),
with the shipped classifier's digit as the feature (``classifier_feature()``), ``N_SOURCES`` = 800
digits as sources (80 per class: the 35-37 held-out test digits of the class, then training digits),
``delta = 0.1`` and 95% intervals, both methods are asked for the same precision: both endpoints'
intervals of half-width ``(hi - lo) / 2 <= H`` (OU time). The intervals resample the sources, so the
spread of their own rates leaves a floor that no number of samples lowers (``ci_floor``): with the
200 held-out digits of earlier runs it was ~0.051 at ``t_before``, above ``H = 0.05``, for either
method; with 800 it is about half that.

- **Search**: ``search_window(process, x0, feature, ci_half_width=H)`` with its defaults (it probes
  the lattice of OU times ``2 H`` apart and estimates the base rate from its own reference samples).
- **Uniform grid that reaches the same precision**: forward–reverse on the same lattice — OU times
  ``k * 2 H`` for ``k = 1, 2, ...`` up to the sampler's largest time (and that time), realised on the
  sampler's grid (distinct grid times), plus ``t = 0`` (free) — with every source at every time, one
  replicate per source per sweep; sweeps (fresh seeds) are added until ``estimate_window`` (its
  defaults: 200 cluster-bootstrap draws over sources, base rate from the outputs at the largest time)
  gives both endpoints a half-width <= H. Same sources, feature, sampler, steps, level and estimator
  family (isotonic fit, linear interpolation, cluster bootstrap); the grid is the one the search
  probes, so only where the samples go differs. A grid spaced ``2 H`` is the coarsest on which
  adjacent times bracket a crossing within ``± H``; a coarser one is cheaper per replicate but its
  interpolation error is not in its bootstrap interval (printed too, for comparison).

NFEs are the processes' ``nfe`` counters (per-sample U-Net evaluations: the search's bisection, pilot
narrowing, confirmation and reference samples; the grid's sweeps). A search whose intervals stay wider
than ``H`` within its budget (``ci_reached`` False) is said to be so: its ratio is then not one at equal
precision. The ratio printed is search / grid (target <= 0.25). CPU time
is ``time.process_time`` of this process (the machine may be shared: wall time means little).

``--quick`` (or ``CRITWIN_BENCH_QUICK=1``): 200 sources and ``H_QUICK = 0.1`` (minutes, not the
hour of the full run). ``--search-only`` / ``--grid-only`` run one half (NFEs are deterministic, so
the halves of separate runs compare; CPU seconds only within one run on a quiet machine).
Usage: ``python benchmarks/bench_search.py [--quick] [--search-only | --grid-only]``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings

import torch

from critwin import classifier_feature, load_digits_model
from critwin.experiments.estimation import estimate_window
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.process import realise_times
from critwin.experiments.search import LATTICE_SPACING, search_window
from critwin.models.data import load_digits_data

N_SOURCES = 800  # 80 digits per class: the held-out ones (35-37 per class), then training ones
QUICK_SOURCES = 200  # --quick: 20 digits per class, the precision H_QUICK (minutes, not hours)
STEPS = 50  # DDPM sampler steps
H = 0.05  # requested half-width in OU time
H_QUICK = 0.1
DELTA = 0.1
SEED = 0
MAX_SWEEPS = 40  # the uniform grid gives up after this many replicates per source


def _sources(n: int) -> torch.Tensor:
    """``n // 10`` digits of each class: the held-out test digits first (35-37 per class), then
    training digits of that class (the model saw those: their window may differ, but both methods
    get the same sources)."""
    data = load_digits_data()
    per_class = n // 10
    picks = []
    for k in range(10):
        pool = torch.cat([data.test_images[data.test_labels == k], data.train_images[data.train_labels == k]])
        if pool.shape[0] < per_class:
            raise ValueError(
                f"n must be <= {10 * pool.shape[0]} (digit {k} has {pool.shape[0]} images), got {n}"
            )
        picks.append(pool[:per_class])
    return torch.cat(picks)


def _lattice(process, spacing: float) -> list[float]:
    """t = 0 and the OU times ``k * spacing`` up to the largest one, realised, distinct, increasing."""
    t_max = process.grid.t_max
    wanted = [k * spacing for k in range(1, math.floor(t_max / spacing * (1 + 1e-12)) + 1)] + [t_max]
    return [0.0] + sorted(set(realise_times(process, wanted).times.tolist()))


def _pooled(sweeps):
    """One result of all replicate sweeps (columns of every sweep side by side; clusters by source)."""
    first = sweeps[0]
    return dataclasses.replace(
        first,
        labels=torch.cat([s.labels for s in sweeps], 1),
        source_labels=torch.cat([s.source_labels for s in sweeps], 1),
        source_ids=torch.cat([s.source_ids for s in sweeps]),
        n_per_time=len(sweeps),
        nfe=sum(s.nfe for s in sweeps),
    )


def _rows(result, keep: torch.Tensor):
    """The result restricted to the times ``keep`` (a boolean mask over its rows)."""
    steps = None if result.steps is None else result.steps[keep]
    return dataclasses.replace(
        result,
        requested_times=result.requested_times[keep],
        times=result.times[keep],
        indices=result.indices[keep],
        steps=steps,
        labels=result.labels[keep],
        source_labels=result.source_labels[keep],
    )


def _sweep_nfe(process, result) -> int:
    """NFEs of one replicate sweep on ``result``'s times: from grid index i the sampler runs its
    remaining steps, one U-Net evaluation per sample each (no guidance)."""
    last = process.times.numel() - 1
    return int(result.labels.shape[1] * sum(last - int(i) for i in result.indices))


def _half_widths(estimate) -> tuple[float, float]:
    return tuple(0.5 * (ci[1] - ci[0]) for ci in (estimate.t_after_ci, estimate.t_before_ci))


class _Grid:
    """A uniform grid (a subset of the sweeps' times) and the first replicate count that reached ``h``."""

    def __init__(self, label: str, keep: torch.Tensor, h: float):
        self.label, self.keep, self.h = label, keep, h
        self.estimate, self.replicates, self.nfe, self.cpu = None, 0, 0, 0.0

    @property
    def reached(self) -> bool:
        return self.estimate is not None and max(_half_widths(self.estimate)) <= self.h


def _uniform_grids(process, x0, feature, times: list[float], grids: list[_Grid]) -> None:
    """Replicate sweeps on ``times`` (every grid's times among them) until every grid reached its h.

    A grid's CPU time counts its share of the sweeps (by NFEs) and its own estimates."""
    sweeps = []
    for m in range(1, MAX_SWEEPS + 1):
        start = time.process_time()
        sweeps.append(
            forward_reverse(process, x0, times, feature=feature, seed=SEED + 100 + m, progress=False)
        )
        sweep_cpu = time.process_time() - start
        pooled = _pooled(sweeps)
        assert _sweep_nfe(process, sweeps[-1]) == sweeps[-1].nfe  # the NFE rule of a grid's subset
        for grid in (g for g in grids if not g.reached):
            start = time.process_time()
            subset = _rows(pooled, grid.keep)
            grid.estimate = estimate_window(subset, delta=DELTA, per_class=False)
            per_sweep = _sweep_nfe(process, _rows(sweeps[-1], grid.keep))
            grid.replicates, grid.nfe = m, m * per_sweep
            grid.cpu += time.process_time() - start + sweep_cpu * per_sweep / sweeps[-1].nfe
            widths = _half_widths(grid.estimate)
            print(
                f"    {grid.label}: {m:2d} replicate(s) per source and time, half-widths "
                f"{widths[0]:.4f} / {widths[1]:.4f}, {grid.nfe:,d} NFEs",
                flush=True,
            )
        if all(g.reached for g in grids):
            return


def _search(process, x0, feature, h: float):
    """The search to half-width ``h``; its result and CPU seconds (printed)."""
    start = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = search_window(process, x0, feature, delta=DELTA, ci_half_width=h, seed=SEED, progress=False)
    cpu = time.process_time() - start
    widths = [0.5 * (ci[1] - ci[0]) for ci in (found.t_after_ci, found.t_before_ci)]
    print(
        f"    search: t_after {found.t_after:.3f} {_ci(found.t_after_ci)}, t_before {found.t_before:.3f} "
        f"{_ci(found.t_before_ci)}, half-widths {widths[0]:.4f} / {widths[1]:.4f}, b {found.b:.3f}, "
        f"{found.nfe:,d} NFEs ({found.n_samples:,d} confirmation samples in {len(found.probes)} probes, "
        f"{found.n_pilot:,d} before them), CPU {cpu:.0f} s"
        + ("" if found.ci_reached else f" (half-width {h} NOT reached)"),
        flush=True,
    )
    for warning in caught:
        print(f"    warning: {warning.message}", flush=True)
    return found, cpu


def _grids(process, x0, feature, h: float) -> list[_Grid]:
    """The grid spaced 2 h (the search's lattice) and, from the same sweeps, the one spaced 4 h (the
    realised times of k * 4 h are those of 2k * 2 h: a subset), each swept until it reached h."""
    times = _lattice(process, LATTICE_SPACING * h)
    coarse = set(_lattice(process, 2 * LATTICE_SPACING * h))
    grids = [
        _Grid(
            f"grid {LATTICE_SPACING * h:g} apart ({len(times)} times)",
            torch.ones(len(times), dtype=torch.bool),
            h,
        ),
        _Grid(
            f"grid {2 * LATTICE_SPACING * h:g} apart ({len(coarse)} times)",
            torch.tensor([t in coarse for t in times]),
            h,
        ),
    ]
    _uniform_grids(process, x0, feature, times, grids)
    for grid in grids:
        estimate = grid.estimate
        print(
            f"    {grid.label}: t_after {estimate.t_after:.3f} {_ci(estimate.t_after_ci)}, t_before "
            f"{estimate.t_before:.3f} {_ci(estimate.t_before_ci)}, b {estimate.b:.3f}, {grid.replicates} "
            f"replicate(s), {grid.nfe:,d} NFEs, CPU {grid.cpu:.0f} s"
            + ("" if grid.reached else f" (not reached in {MAX_SWEEPS} sweeps)"),
            flush=True,
        )
    return grids


def bench_search_to_precision(n_sources: int = N_SOURCES, h: float = H, parts=("search", "grid")) -> None:
    """Search and grids to half-width ``h`` on ``n_sources`` digits (``parts``: which to run)."""
    process = load_digits_model().process(STEPS)
    feature = classifier_feature()
    x0 = _sources(n_sources)
    print(
        f"digits DDPM, {STEPS} steps, {x0.shape[0]} digits ({n_sources // 10} per class), classifier "
        f"feature, delta = {DELTA}, requested half-width {h} OU units (95%); load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if "search" in parts:
        found, search_cpu = _search(process, x0, feature, h)
    if "grid" not in parts:
        return
    grids = _grids(process, x0, feature, h)
    if "search" not in parts:
        return
    for grid in grids:
        print(
            f"    ratio search / {grid.label}: NFEs {found.nfe / grid.nfe:.3f}, "
            f"CPU {search_cpu / grid.cpu:.3f}"
            + ("" if found.ci_reached else " (not at the same precision: the search fell short of h)")
        )
    print("    target: search / grid spaced 2 h (the search's lattice) NFEs <= 0.25")


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def main(quick: bool | None = None) -> None:
    if quick is None:
        quick = "--quick" in sys.argv or os.environ.get("CRITWIN_BENCH_QUICK") == "1"
    parts = ("search", "grid")
    for arg in sys.argv[1:]:
        if arg in ("--search-only", "--grid-only"):
            parts = (arg[2:-5],)
    if quick:
        bench_search_to_precision(QUICK_SOURCES, H_QUICK, parts)
    else:
        bench_search_to_precision(N_SOURCES, H, parts)


if __name__ == "__main__":
    main()
