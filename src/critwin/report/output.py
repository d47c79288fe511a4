"""The report directory: refuse to overwrite anything but an earlier report, and replace it atomically."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from critwin._io import remove_stale_work_directories, replace_directory, work_directory

MARKER = "critwin_demo"
"""Key of ``summary.json`` that marks a directory as a critwin demo report (safe to replace)."""


def check_report_dir(out: Path) -> Path:
    """``out`` may be missing, empty or an earlier demo report; anything else is a ValueError."""
    out = Path(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise ValueError(f"out must be a directory, got an existing file {out}")
    marker = out / "summary.json"
    is_report = False
    if marker.exists():
        try:
            is_report = MARKER in json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            is_report = False
    if any(out.iterdir()) and not is_report:
        raise ValueError(
            f"out {out} exists and is not an earlier critwin demo report; choose another directory"
        )
    return out


def build_atomically(out: Path, build: Callable[[Path], None], option: str = "out") -> None:
    """Run ``build(work)`` in a temporary directory beside ``out``, then swap it into place.

    A second writer of ``out`` is refused while this one runs (``claim_output``); an interrupted or
    failing build leaves the previous ``out`` as it was, and neither a partial report nor (once the next
    build starts) the temporary directory of a killed one. An OS error (a full disk) names ``out``.
    """
    from critwin.experiments.checkpoint import claim_output  # the engine imports torch

    out = Path(out)
    with claim_output(out, option):
        remove_stale_work_directories(out)
        work = work_directory(out)
        try:
            build(work)
            replace_directory(work, out)
        except OSError as exc:
            shutil.rmtree(work, ignore_errors=True)
            if exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(out)) from exc
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
