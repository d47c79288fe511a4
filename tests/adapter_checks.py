"""Checks shared by the diffusers-adapter tests: sweeps report the realised grid, CLI runs in-process."""

from __future__ import annotations

import csv

import pytest


def assert_sweeps_report_realised_times(process, x0, times=(0.5, 1.5)) -> None:
    """forward_reverse and clone through ``process``: every reported time is a grid point's OU time, and
    the reported steps are the scheduler's timesteps there."""
    from critwin.experiments.cloning import clone
    from critwin.experiments.features import SourceSimilarity
    from critwin.experiments.forward_reverse import forward_reverse

    feature = SourceSimilarity(x0)
    result = forward_reverse(process, x0, list(times), n_per_time=1, feature=feature, seed=0, progress=False)
    for requested, got in zip(times, result.times.tolist(), strict=True):
        realised = process.realise(requested)
        assert got == realised["ou_time"] == process.times[realised["index"]].item()
    assert result.steps.tolist() == [process.step_label(process.realise(r)["index"]) for r in times]
    # A grid that starts at pure noise (flow) realises no finite time beyond its largest finite one.
    cloned = clone(
        process, 2, [times[0], min(2.0, process.grid.finite_max)], 2, feature=feature, seed=1, progress=False
    )
    assert cloned.clone_labels.shape == (2, 2, 2)


def run_sweep(argv, capsys) -> None:
    """``critwin`` in-process; fails the test with the CLI's stderr unless it exits 0."""
    from critwin.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err


def read_table(out) -> list[dict]:
    """The rows of a sweep's ``table.csv``."""
    with open(out / "table.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def realised_times(out) -> list[float]:
    """The distinct OU times of a sweep's table, ascending."""
    return sorted({float(row["t"]) for row in read_table(out)})
