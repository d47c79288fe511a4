"""The same seed gives the same files with 1 and 2 intra-op threads (issue 22): the hierarchy always,
a sweep and the atlas on a shipped network with ``CRITWIN_REPRODUCIBLE=1`` (by default a network's
output on a small batch differs in its last bits between thread counts: see
:func:`critwin._threads.make_reproducible`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from critwin._io import result_contents

ROOT = Path(__file__).resolve().parents[1]


def _critwin(args: list[str], threads: int, reproducible: bool) -> None:
    env = dict(os.environ, CRITWIN_THREADS=str(threads), CRITWIN_REPRODUCIBLE="1" if reproducible else "0")
    done = subprocess.run([sys.executable, "-m", "critwin", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _same_with_one_and_two_threads(tmp_path: Path, args, reproducible: bool, name: str) -> dict:
    results = []
    for threads in (1, 2):
        out = tmp_path / f"{threads}-{name}"
        _critwin([*args, "--out", str(out)], threads, reproducible)
        results.append(result_contents(out))
    assert results[0].keys() == results[1].keys()
    differing = [k for k in results[0] if results[0][k] != results[1][k]]
    assert differing == []
    return results[0]


def test_hierarchy_is_the_same_with_one_and_two_threads(tmp_path):
    tree = _same_with_one_and_two_threads(
        tmp_path, ["hierarchy", str(ROOT / "examples" / "hierarchical.yaml")], False, "tree.json"
    )
    assert tree[""]  # a tree was written


def test_a_reproducible_sweep_is_the_same_with_one_and_two_threads(tmp_path):
    # 4 sources: a batch small enough that oneDNN and MKL split reductions by thread by default.
    args = ["sweep", "--model", "digits", "--steps", "6", "--times", "0.3,1.5", "--n", "4"]
    files = _same_with_one_and_two_threads(
        tmp_path, [*args, "--n-per-time", "2", "--no-progress"], True, "sweep"
    )
    assert "sources.safetensors" in files and "table.csv" in files


@pytest.mark.slow
def test_a_reproducible_atlas_is_the_same_with_one_and_two_threads(tmp_path):
    args = ["atlas", "--model", "shapes", "--steps", "8", "--sources", "6", "--replicates", "2"]
    args += ["--trajectories", "4", "--clones", "2", "--boot", "40", "--times", "0.3,1,2", "--no-progress"]
    files = _same_with_one_and_two_threads(tmp_path, args, True, "atlas")
    assert "atlas.json" in files


def test_reproducible_setting_is_checked():
    env = dict(os.environ, CRITWIN_REPRODUCIBLE="yes")
    done = subprocess.run(
        [sys.executable, "-m", "critwin", "hierarchy", "--help"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "critwin: error: CRITWIN_REPRODUCIBLE must be 0 or 1, got 'yes'"
