"""OU times on a process's grid: the requested times of a sweep or a search realised as grid points
(:func:`realise_times`), and evenly spread grid times (:func:`grid_times`).

:mod:`critwin.experiments.process` re-exports them beside the processes they take.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

__all__ = ["RealisedTimes", "grid_times", "realise_times"]


class RealisedTimes(NamedTuple):
    """Requested OU times put on a process's grid (by :func:`realise_times`).

    Attributes
    ----------
    process : the process to run (re-gridded when continuous).
    requested : (T,) float64 validated requested times, order preserved.
    indices : (T,) long grid indices (the final, clean index for t = 0).
    times : (T,) float64 realised OU times.
    steps : (T,) model step labels (long, or float64 for fractional timesteps; -1 at the clean end),
        or None when the model has none.
    """

    process: Any
    requested: torch.Tensor
    indices: torch.Tensor
    times: torch.Tensor
    steps: torch.Tensor | None


def grid_times(process, n: int, lo: float = 0.02, hi: float = 4.5) -> list[float]:
    """``n`` (at most; distinct) realised OU times of ``process``'s grid spread evenly in log OU time
    (log-SNR, up to a constant, at small t) between ``lo`` and ``hi``, clipped to the grid's finite
    times (t > 0)."""
    grid = process.times[:-1].to(torch.float64)
    # A pure-noise start (t = inf: flow and zero-terminal-SNR grids) is no time a run can start from.
    grid = grid[torch.isfinite(grid)]
    lo, hi = max(grid.min().item(), lo), min(grid.max().item(), hi)
    wanted = torch.exp(torch.linspace(math.log(lo), math.log(hi), n, dtype=torch.float64))
    picked = sorted({process.locate(float(t)).index for t in wanted})
    return [float(process.times[i]) for i in picked]  # indices of the full grid, not of the finite part


def realise_times(process, times, name: str = "times") -> RealisedTimes:
    """Validate requested OU times once and put them on the process's grid.

    Continuous processes are re-gridded so that every requested time is a grid point (the base grid's
    step density is kept); discrete ones use the nearest grid point. Time 0 maps to the clean end.

    Parameters
    ----------
    process : the process.
    times : a number or (T,) OU times, each finite, >= 0 and within the process's range.
    name : argument name for error messages.
    """
    requested = process.grid.check(times, name)
    if process.continuous:
        process = process.with_times(process.grid.refined(requested).times)
    indices, realised = process.grid.nearest(requested)
    last = process.times.numel() - 1
    labels = [process.step_label(i) if i < last else None for i in indices.tolist()]
    steps = None
    if any(label is not None for label in labels):
        values = [-1 if label is None else label for label in labels]
        # Sigma-based schedulers (Euler) have fractional timesteps: keep them exactly.
        integral = all(float(v).is_integer() for v in values)
        steps = torch.tensor(values, dtype=torch.long if integral else torch.float64)
    return RealisedTimes(process=process, requested=requested, indices=indices, times=realised, steps=steps)
