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

import ctypes
import functools
import glob
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from critwin._lazy import deferred_import
from critwin._version import __version__

torch = deferred_import("torch", globals())  # the command line writes and checks files before torch loads


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Temporary files of ``path`` left by dead writers (a kill) are removed first; an OS error (a full
    disk, a read-only directory) is raised naming ``path``, and leaves neither a partial file nor the
    temporary one: ``path`` keeps its previous content.
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(*paths: str | os.PathLike):
    """:func:`atomic_path` for files that belong together (weights and their card): yields one temporary
    path per file; only once every one is complete are they renamed, in order, onto ``paths``.

    Between two of those renames (microseconds) a kill leaves the first file new and the next old: a
    reader that checks them against each other (a card's SHA-256) reports it.
    """
    paths = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(path.parent, path.name)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent
            )
            os.close(fd)
            temps.append(Path(tmp))
        yield tuple(temps)
        for tmp in temps:
            # mkstemp creates the file private (0600); a result file gets the usual umask-derived mode.
            os.chmod(tmp, umask_mode(0o666))
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
    except OSError as exc:
        _discard(temps)
        target = _target(exc, paths, temps)
        if target is None:
            raise
        raise _naming(exc, target) from exc
    except BaseException:
        _discard(temps)
        raise


def _discard(temps) -> None:
    for tmp in temps:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _target(exc: OSError, paths: list[Path], temps: list[Path]) -> Path | None:
    """The output an OS error is about (None: another file's error, raised as it is): the file whose
    temporary could not be made, the one the error names (it or its temporary), or, for an error that
    names no file (a full disk on write), the first."""
    if len(temps) < len(paths):
        return paths[len(temps)]
    if exc.filename is None:
        return paths[0]
    named = str(exc.filename)
    return next((p for p, t in zip(paths, temps, strict=True) if named in (str(p), str(t))), None)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` about ``path`` (the user's file, not a temp file): ``PATH: No space left on device``."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def umask_mode(mode: int) -> int:
    """``mode`` less the process's umask: the mode ``open``/``mkdir`` would give a new file or directory
    (``0o666`` / ``0o777``), for files made private first (``mkstemp``, ``mkdtemp``)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def work_directory(out) -> Path:
    """A new private directory beside ``out`` to build its replacement in: ``.NAME.pidPID.XXXX``."""
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.pid{os.getpid()}.", dir=out.parent))
    # mkdtemp makes the directory private (0700); the result gets the mode a mkdir would give it.
    os.chmod(work, umask_mode(0o777))
    return work


def replace_directory(work, out) -> None:
    """Put the complete directory ``work`` in the place of ``out`` (which may exist); ``work`` is gone.

    On Linux the two are swapped by one ``renameat2(RENAME_EXCHANGE)``: at every moment ``out`` is the
    old result or the new one. Elsewhere the old one is first renamed aside (``.NAME.pidPID.old``);
    a kill between the two renames leaves it there, and :func:`remove_stale_work_directories` puts it
    back.
    """
    work, out = Path(work), Path(out)
    if not out.exists():
        os.rename(work, out)
        return
    if _exchange(work, out):
        shutil.rmtree(work)  # it now holds the old result
        return
    aside = out.parent / f".{out.name}.pid{os.getpid()}.old"
    os.rename(out, aside)
    os.rename(work, out)
    shutil.rmtree(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


_WORK_PID = re.compile(r"\.pid(\d+)\.[^.]*$|\.pid(\d+)\.old$")


def remove_stale_work_directories(out) -> list[Path]:
    """Remove the :func:`work_directory` s of ``out`` whose writer is dead (a kill mid-build), and put
    back an old result a kill left aside in :func:`replace_directory` when ``out`` is missing.
    Returns the removed (or restored) paths."""
    out = Path(out)
    found = []
    if not out.parent.is_dir():
        return found
    for path in sorted(out.parent.glob(f".{glob.escape(out.name)}.pid*")):
        tagged = _WORK_PID.search(path.name)
        if tagged is None or not path.is_dir() or pid_alive(int(tagged.group(1) or tagged.group(2))):
            continue
        if path.name.endswith(".old") and not out.exists():
            os.rename(path, out)
        else:
            shutil.rmtree(path, ignore_errors=True)
        found.append(path)
    return found


_SAFETENSORS_IO = re.compile(r"I/O error: (.*?) \(os error (\d+)\)")


@contextmanager
def safetensors_os_errors(path=None):
    """Within: safetensors' failure to write a file (its ``SafetensorError``, e.g. on a full disk or a
    read-only directory) is raised as the ``OSError`` it wraps, naming ``path`` if given, so that the
    atomic writers and the command line treat it as any other OS error (one line, exit status 2)."""
    try:
        yield
    except Exception as exc:
        found = _SAFETENSORS_IO.search(str(exc)) if type(exc).__name__ == "SafetensorError" else None
        if found is None:
            raise
        code = int(found.group(2))
        raise OSError(code, os.strerror(code), None if path is None else str(path)) from exc


def save_safetensors(tensors, path, metadata=None) -> None:
    """``safetensors.torch.save_file``, its I/O failures raised as ``OSError`` naming ``path``."""
    from safetensors.torch import save_file

    with safetensors_os_errors(path):
        save_file(tensors, str(path), metadata=metadata)


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


def _is_array(obj) -> bool:
    """A torch tensor or a numpy array or scalar (neither can exist before its module is imported)."""
    loaded_torch, loaded_numpy = sys.modules.get("torch"), sys.modules.get("numpy")
    return (loaded_torch is not None and isinstance(obj, loaded_torch.Tensor)) or (
        loaded_numpy is not None and isinstance(obj, (loaded_numpy.ndarray, loaded_numpy.generic))
    )


def _plain(obj):
    if _is_array(obj):
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


def finite_or_none(value) -> float | None:
    """JSON-friendly: the value as a float, None for a censored (infinite) or undefined one."""
    return float(value) if value is not None and math.isfinite(float(value)) else None


def json_float(value) -> float:
    """A float written by :func:`json_text`: censored markers back to ``±inf``, ``null`` to NaN."""
    if value is None:
        return math.nan
    if isinstance(value, dict) and "censored" in value:
        return math.inf if value["censored"] == "above" else -math.inf
    return float(value)


@functools.cache
def _version(package: str) -> str | None:
    # Cached: reading an installed package's metadata costs milliseconds, and provenance() is recorded
    # by every estimate (a bootstrap over sources makes thousands).
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


def remove_stale_temp_files(directory, target: str | None = None) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` in ``directory`` whose writer is dead.

    ``target``: only those of the file ``target`` (``.TARGET.pidPID.XXXX.tmp``), which a writer of that
    file may remove at any time (a live writer's files stay). Without it, a file without a pid tag
    (written by an older critwin) counts as dead too: call this only while holding the directory (see
    ``critwin.experiments.checkpoint.claim_directory``). Returns the removed.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    prefix = None if target is None else f".{target}.pid"
    for path in directory.iterdir():
        if not _TEMP.match(path.name) or (prefix is not None and not path.name.startswith(prefix)):
            continue
        tagged = _TEMP_PID.search(path.name)
        if tagged is None and prefix is not None:
            continue
        if (tagged is None or not pid_alive(int(tagged.group(1)))) and path.is_file():
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


# Fields of a result file that record when, where or how fast a run went, not what it computed.
RUN_FIELDS = frozenset(
    {
        "provenance",
        "pid",
        "seconds",
        "wall_seconds",
        "cpu_seconds",
        "evaluation_seconds",
        "load_average_1min_start",
        "load_average_1min_end",
    }
)


def without_run_fields(value):
    """``value`` (parsed JSON) with every :data:`RUN_FIELDS` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_run_fields(v) for k, v in value.items() if k not in RUN_FIELDS}
    if isinstance(value, list):
        return [without_run_fields(v) for v in value]
    return value


def result_contents(path) -> dict[str, bytes]:
    """What the results under ``path`` (a file or a directory) say, for comparing two runs: each file's
    bytes by its path relative to ``path`` (``""`` for a file), JSON files re-encoded without their run
    fields (a torn JSON file stays as its bytes), and the writers' own files (``.critwin*`` markers and
    ``*.critwin-lock`` claims, which a killed writer leaves) left out."""
    path = Path(path)
    if path.is_file():
        return {"": _result_bytes(path)}
    return {
        str(p.relative_to(path)): _result_bytes(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".critwin") and not p.name.endswith(".critwin-lock")
    }


def _result_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix != ".json":
        return data
    try:
        return json.dumps(without_run_fields(json.loads(data)), sort_keys=True).encode()
    except ValueError:
        return data
