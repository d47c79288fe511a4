"""The report directory: refuse to overwrite anything but an earlier report, and replace it atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from critwin._io import umask_mode

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


def build_atomically(out: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(work)`` in a temporary directory beside ``out``, then move it into place.

    An interrupted or failing build leaves neither a partial report nor the temporary directory.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # mkdtemp makes the directory private (0700); the report gets the mode a mkdir would give it.
        os.chmod(work, umask_mode(0o777))
        build(work)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
