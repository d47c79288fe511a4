"""Atomic file output (temp file + rename), the one JSON encoder, and the provenance of results.

A crash or a user error never leaves a partial result file behind. Every JSON file and ``--json`` output
goes through :func:`json_text`, which writes strict JSON: a censored (infinite) value keeps its direction
as ``{"value": null, "censored": "below"}`` (``-inf``: already past the level at the smallest measured
time) or ``{"value": null, "censored": "above"}`` (``+inf``: not reached by the largest one); NaN (not
measured) is ``null``. :func:`json_float` reads such values back. Temporary files carry the writer's
pid (``.NAME.pidPID.XXXX.tmp``), so a later writer removes those of dead processes only
(:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from critwin._version import __version__


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file private (0600); a result file gets the usual umask-derived mode.
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def umask_mode(mode: int) -> int:
    """``mode`` less the process's umask: the mode ``open``/``mkdir`` would give a new file or directory
    (``0o666`` / ``0o777``), for files made private first (``mkstemp``, ``mkdtemp``)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


CENSORED = {math.inf: "above", -math.inf: "below"}


def json_text(obj, indent: int | None = 2) -> str:
    """Strict JSON: tensors and arrays become lists, ``±inf`` a censored marker and NaN ``null``."""
    return json.dumps(_plain(obj), indent=indent, allow_nan=False)


def json_normalised(obj):
    """``obj`` as it reads back from the strict JSON critwin writes (so stored and fresh values compare)."""
    return json.loads(json_text(obj, indent=None))


def atomic_write_json(path, obj, indent: int = 2) -> None:
    atomic_write_text(path, json_text(obj, indent) + "\n")


def _plain(obj):
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        obj = obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        if math.isinf(obj):
            return {"value": None, "censored": CENSORED[obj]}
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def json_float(value) -> float:
    """A float written by :func:`json_text`: censored markers back to ``±inf``, ``null`` to NaN."""
    if value is None:
        return math.nan
    if isinstance(value, dict) and "censored" in value:
        return math.inf if value["censored"] == "above" else -math.inf
    return float(value)


@cache  # installed versions do not change within a process; metadata parsing is slow
def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(device=None, dtype=None, call: str | None = None) -> dict[str, str | None]:
    """Where and how a result was computed, recorded in every result's metadata.

    Parameters
    ----------
    device, dtype : where the model ran (``torch.device``/``torch.dtype`` or their names), if known.
    call : the command line or call that produced the result (default: this process's command line).

    Returns
    -------
    dict with ``critwin``, ``torch``, ``diffusers``, ``python`` versions (``None`` when not installed),
    ``device``, ``dtype``, ``utc`` (ISO 8601 timestamp) and ``call``.
    """
    return {
        "critwin": _version("critwin"),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "python": platform.python_version(),
        "device": None if device is None else str(device),
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "call": call if call is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


_TEMP = re.compile(r"^\..+\.tmp$")
_TEMP_PID = re.compile(r"\.pid(\d+)\.[^.]*\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def remove_stale_temp_files(directory) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` in ``directory`` whose writer is dead.

    A file without a pid tag (written by an older critwin) counts as dead: call this only while
    holding the directory (see ``critwin.experiments.checkpoint.claim_directory``). Returns the removed.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        if not _TEMP.match(path.name) or not path.is_file():
            continue
        tagged = _TEMP_PID.search(path.name)
        if tagged is None or not pid_alive(int(tagged.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_json(path, what: str, kind: type = dict):
    """The JSON value of the file ``path``, which must be a ``kind`` (dict or list).

    Raises
    ------
    ValueError naming ``what`` and the file when it is not UTF-8, not JSON or of another type.
    FileNotFoundError when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({exc}); the file is corrupt") from None
    if not isinstance(value, kind):
        raise ValueError(
            f"{what} {path} must hold a JSON {'object' if kind is dict else 'array'}, "
            f"got {type(value).__name__}; the file is corrupt"
        )
    return value


OUTPUT_KEY = "critwin"
"""Top-level key of every JSON file a command writes with ``--out FILE``: ``{"version", "output"}``."""
PNG_SOFTWARE = "critwin"
"""``Software`` text of every PNG critwin writes: how a later run knows the file is its own."""


def output_marker(kind: str) -> dict[str, dict[str, str]]:
    """The entry that marks a JSON report as critwin's output of ``kind`` (e.g. ``"privacy"``)."""
    return {OUTPUT_KEY: {"version": __version__, "output": kind}}


def check_replaceable(path, option: str, kind: str) -> None:
    """An existing ``path`` may be replaced only when critwin wrote it: a JSON report of this ``kind``
    (its :func:`output_marker`), or, for ``kind="png"``, a PNG whose ``Software`` text names critwin.

    Raises ValueError naming ``option`` otherwise, so that no user file is overwritten.
    """
    path = Path(path)
    if not path.is_file():
        return
    head = path.read_bytes()[: 1 << 16]
    if kind == "png":
        ours = head.startswith(b"\x89PNG") and PNG_SOFTWARE.encode() in head
    else:
        try:
            value = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            value = None
        ours = isinstance(value, dict) and (value.get(OUTPUT_KEY) or {}).get("output") == kind
    if not ours:
        raise ValueError(
            f"{option} {path} exists and is not a critwin {kind} output; critwin replaces only files it "
            "wrote: choose another path or remove the file"
        )


def check_writable(path, option: str, directory: bool) -> Path:
    """Check, without leaving anything behind, that ``path`` (a directory or a file) can be written.

    The nearest existing ancestor must be a directory in which a file can be created; an existing
    ``path`` must be of the right type. Raises ValueError naming ``option`` and the path.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        want, got = ("a directory", "a file") if directory else ("a file", "a directory")
        raise ValueError(f"{option} must be {want}, but {path} is {got}")
    parent = path if directory else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: cannot be created, {parent} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".critwin-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot write in {parent} ({exc.strerror or exc})") from None
    return path
