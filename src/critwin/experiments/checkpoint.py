"""Checkpointed sweeps: seeds per unit, the checkpoint directory, resume checks, progress.

A sweep is split into independent *units* (a time index and a chunk of samples). Each unit draws its
randomness from its own generator, seeded from ``(seed, unit key)``, so a unit's result does not depend
on which units ran before it: a sweep killed and resumed gives exactly the table of an uninterrupted
run. Completed units are written atomically to ``DIR/units/``; ``DIR/config.json`` records every
setting that determines the results, and a resume with different settings is refused.

Every writer holds its output directory through :func:`claim_directory`: an exclusive lock (a second
process is refused with the holder's pid; the lock of a dead process is free), the kind of result the
directory holds (a non-empty directory of another kind, or not written by critwin, is refused), and the
removal of temporary files left by dead writers. Every artefact is bound to the settings that made it:
the settings file is written first (:func:`bind_settings`), so a rerun with other settings is refused
by name, even after a kill between the two writes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from critwin._display import NotebookProgress, in_notebook
from critwin._files import load_tensor_file
from critwin._io import (
    atomic_path,
    atomic_write_json,
    json_normalised,
    json_text,
    read_json,
    remove_stale_temp_files,
    save_safetensors,
)
from critwin._validation import check_device, check_positive_int, check_seed

try:  # POSIX
    import fcntl
except ImportError:  # Windows: msvcrt byte-range locks, also freed when the holder dies
    fcntl = None
    import msvcrt

__all__ = [
    "SweepStore",
    "holds_outputs",
    "claim_directory",
    "claim_output",
    "output_lock_file",
    "bind_settings",
    "bound_tensors",
    "cached_unit",
    "check_resumable",
    "check_chunk_size",
    "resolve_seed",
    "derive_seed",
    "unit_generator",
    "progress_bar",
]

CONFIG_FILE = "config.json"
UNITS_DIR = "units"
CLAIM_FILE = ".critwin"
"""Lock and marker of a critwin output directory: JSON ``{"kind": ..., "pid": ...}``, locked with flock."""
LEGACY_MARKERS = ("config.json", "metadata.json")
"""Files whose ``kind`` marks a result directory written before :data:`CLAIM_FILE` existed."""


# ---------------------------------------------------------------------------------------------- seeds
def resolve_seed(seed: int | None, generator: torch.Generator | None, default: int | None = None) -> int:
    """The base seed of a sweep: ``seed`` if given, else one drawn from ``generator``, else ``default``
    (when given: functions deterministic by default), else one drawn from torch's global RNG.

    Drawing from ``generator`` makes the sweep a deterministic function of the generator's state.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if seed is None and generator is None and default is not None:
        return int(default)
    if seed is not None:
        return check_seed(seed)
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the unit ``keys`` of the sweep ``seed`` (independent streams per unit)."""
    seed = check_seed(seed)
    words = [int(seed) % 2**32, int(seed) // 2**32 % 2**32]
    for key in keys:
        if isinstance(key, str):
            words.extend(key.encode())
        else:
            words.append(int(key))
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def unit_generator(seed: int, *keys: int | str, device="cpu") -> torch.Generator:
    """A generator on ``device`` seeded for the unit ``keys`` of the sweep ``seed``."""
    seed = check_seed(seed)
    generator = torch.Generator(device=check_device(device))
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


# ------------------------------------------------------------------------------------- checkpointing
def _first_difference(old, new, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                return name
            found = _first_difference(old[key], new[key], name)
            if found:
                return found
        return None
    return None if old == new else (prefix or "config")


# --------------------------------------------------------------------------------- output directories
@dataclass
class _Hold:
    """A directory this process holds: its lock's file descriptor, the kind of result written there and
    how many nested claims hold it."""

    fd: int
    kind: str
    depth: int = 1


_HELD: dict[Path, _Hold] = {}  # resolved directory -> its hold by this process
_SCOPE: ContextVar[ExitStack | None] = ContextVar("critwin_output_scope", default=None)


def holds_outputs(fn: Callable) -> Callable:
    """Decorator of an experiment: directories its :class:`SweepStore` claims stay held until it returns
    (the lock is taken when the store opens, after the inputs are checked)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with ExitStack() as stack:
            token = _SCOPE.set(stack)
            try:
                return fn(*args, **kwargs)
            finally:
                _SCOPE.reset(token)

    return wrapper


def _claim_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _legacy_kind(root: Path) -> str | None:
    for name in LEGACY_MARKERS:
        if (root / name).is_file():
            return _claim_record(root / name).get("kind")
    return None


def _check_kind(root: Path, kind: str, recorded: str | None, option: str, legacy: tuple[str, ...]) -> None:
    """``root`` is empty or holds a critwin result of ``kind``; anything else is refused untouched."""
    if recorded is None:
        recorded = _legacy_kind(root)
    if recorded is None and legacy and all((root / name).is_file() for name in legacy):
        recorded = kind
    others = [p for p in root.iterdir() if p.name != CLAIM_FILE and not p.name.endswith(".tmp")]
    if recorded is None and not others:
        return
    if recorded is None:
        raise ValueError(
            f"{option}: {root} is not empty and is not a critwin output directory; critwin never "
            "writes into a directory it did not create: choose a new or empty one"
        )
    if recorded != kind:
        raise ValueError(
            f"{option}: {root} holds a critwin {recorded!r} result, not a {kind!r} one; use another directory"
        )


def _lock(path: Path, root: Path, option: str) -> int:
    """An exclusive lock on the file ``path`` guarding the output ``root`` (its fd), or a ValueError
    naming ``option``, ``root`` and the holder's pid."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:  # a read-only or full file system: about the output, not its lock file
        raise ValueError(f"{option} {root}: cannot write there ({exc.strerror or exc})") from None
    try:
        # The lock belongs to the open file: the kernel frees it when the holder dies, however it dies.
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        os.close(fd)
        pid = _claim_record(path).get("pid", "unknown")
        raise ValueError(
            f"{option}: {root} is in use by pid {pid} (another critwin process writes there); wait for "
            f"it to finish or choose another {'directory' if root.is_dir() else 'path'}"
        ) from None
    return fd


def _first_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its ancestors that does not exist yet (what a ``mkdir(parents=True)``
    of ``path`` would create first), or None when ``path`` exists."""
    path = Path(os.path.abspath(path))
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _failed(exc: BaseException) -> bool:
    """Whether the writer ended in failure: an error, or an exit with a non-zero status. An interrupt
    (Ctrl-C) is not one: what it leaves is resumable, as after a kill."""
    if isinstance(exc, KeyboardInterrupt):
        return False
    if isinstance(exc, SystemExit):
        return exc.code not in (None, 0)
    return True


def _remove_new_directories(path: Path, created: Path | None, whole: bool = False) -> None:
    """After a failed writer: remove ``path`` (with what is in it when ``whole``, else only if empty) and
    then each empty ancestor up to ``created``, the first directory this run made; a directory some other
    process wrote into meanwhile stays."""
    if created is None:
        return
    path = Path(os.path.abspath(path))
    if whole:
        shutil.rmtree(path, ignore_errors=True)
    for directory in (path, *path.parents):
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # not empty (another writer's output) or not ours to remove
            return
        if directory == created:
            return


def _finished_units(root: Path) -> bool:
    """Whether ``root`` holds a completed sweep unit (resumable work a failed run keeps)."""
    return any((root / UNITS_DIR).glob("*.npz"))


@contextmanager
def claim_directory(out, kind: str, option: str = "out", legacy: tuple[str, ...] = ()) -> Iterator[Path]:
    """Hold the output directory ``out`` for a writer of results of ``kind`` while the block runs.

    Creates ``out`` if missing. Refuses (ValueError naming ``option``) a path that is a file, a
    non-empty directory that is not a critwin result of ``kind``, and a directory another process holds
    ("in use by pid N"). Removes temporary files of dead writers. Re-entrant within a process.
    ``legacy``: file names that together mark a result of ``kind`` written by an older critwin.

    A block that fails (an error, not an interrupt) removes the directory again when this claim created
    it and it holds no finished unit: no new empty or partial directory is left behind. Finished units
    stay, so the same command resumes them.
    """
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{option} must be a directory, but {root} is a file")
    created = _first_missing(root)
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    if key in _HELD:
        if _HELD[key].kind != kind:
            raise ValueError(f"{option}: {root} is held for a {_HELD[key].kind!r} result, not {kind!r}")
        _HELD[key].depth += 1
        created = None  # the outer claim decides
    else:
        fd = _lock(root / CLAIM_FILE, root, option)
        if created is not None and any(p.name != CLAIM_FILE for p in root.iterdir()):
            created = None  # another writer filled it between our mkdir and our lock: not ours
        try:
            _check_kind(root, kind, _claim_record(root / CLAIM_FILE).get("kind"), option, legacy)
            _write_record(fd, {"kind": kind, "pid": os.getpid()}, root, option)
            for directory in (root, root / UNITS_DIR):
                remove_stale_temp_files(directory)
        except BaseException:
            _remove_new_directories(root, created, whole=True)
            os.close(fd)
            raise
        _HELD[key] = _Hold(fd, kind)
    try:
        yield root
    except BaseException as exc:
        if _failed(exc) and created is not None and not _finished_units(root):
            _remove_new_directories(root, created, whole=True)
        raise
    finally:
        _HELD[key].depth -= 1
        if _HELD[key].depth == 0:
            os.close(_HELD.pop(key).fd)


def _write_record(fd: int, record: dict, root: Path, option: str) -> None:
    """Write the holder's record into its lock file; a full disk is a ValueError naming the output."""
    data = (json_text(record, indent=None) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
    except OSError as exc:
        raise ValueError(f"{option} {root}: cannot write there ({exc.strerror or exc})") from None


def output_lock_file(path) -> Path:
    """The lock of an output that is replaced as a whole (a file, or a report directory): a hidden file
    beside it, ``.NAME.critwin-lock`` (inside, the lock would go with the output it guards), there
    only while a writer holds it."""
    path = Path(path)
    return path.parent / f".{path.name}.critwin-lock"


@contextmanager
def claim_output(path, option: str = "out") -> Iterator[Path]:
    """Hold the output ``path`` (a file or a directory written by replacing it whole) while the block
    runs: a second writer of the same path is refused ("in use by pid N", a ValueError naming
    ``option``) before it does any work; the lock of a dead process is free. None holds nothing.
    Folders it creates for ``path`` are removed again, if still empty, when the block fails.
    """
    if path is None:
        yield None
        return
    path = Path(path)
    created = _first_missing(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    if key in _HELD:  # this process holds it already (re-entrant)
        _HELD[key].depth += 1
        created = None  # the outer claim decides
    else:
        fd = _lock_output(path, option)
        try:
            _write_record(fd, {"pid": os.getpid()}, path, option)
        except BaseException:
            output_lock_file(path).unlink(missing_ok=True)  # still locked: no one else uses it
            os.close(fd)
            _remove_new_directories(path.parent, created)
            raise
        _HELD[key] = _Hold(fd, "output")
    failed = False
    try:
        yield path
    except BaseException as exc:
        failed = _failed(exc)
        raise
    finally:
        _HELD[key].depth -= 1
        if _HELD[key].depth == 0:
            # Removed while still locked, so no lock file is left beside the output; a writer that
            # opened it just before sees (in _lock_output) that it locked a removed file and retries.
            output_lock_file(path).unlink(missing_ok=True)
            os.close(_HELD.pop(key).fd)
            if failed:
                _remove_new_directories(path.parent, created)


def _lock_output(path: Path, option: str) -> int:
    """:func:`_lock` on the lock file of ``path``, retried while the locked file is one its holder
    removed on release (it is no longer the file at that name)."""
    lock_file = output_lock_file(path)
    while True:
        fd = _lock(lock_file, path, option)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock_file)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def bind_settings(path, settings: Mapping[str, Any], what: str = "out") -> None:
    """Bind the artefacts of a directory to ``settings``: written to ``path`` before any artefact, or,
    if ``path`` exists, compared with it; a difference is a ValueError naming the first differing setting.
    """
    path = Path(path)
    settings = json_normalised(dict(settings))
    if not path.exists():
        atomic_write_json(path, settings)
        return
    old = read_json(path, f"{what}: settings file")
    differs = _first_difference(old, settings)
    if differs is not None:
        raise ValueError(
            f"{what}: {path.parent} was written with different settings ({differs!r} differs: "
            f"{_lookup(old, differs)!r} there, {_lookup(settings, differs)!r} now); refusing to "
            "mix results: use another directory or the original settings"
        )


def bound_tensors(
    root, name: str, settings: Mapping[str, Any], make: Callable[[], dict[str, torch.Tensor]], what: str
) -> dict[str, torch.Tensor]:
    """Tensors kept in ``root/NAME.safetensors``, made once by ``make()`` and bound to ``settings``
    (``root/NAME.json``, written first): a rerun with other settings is refused, never given stale ones."""
    root = Path(root)
    bind_settings(root / f"{name}.json", settings, what)
    path = root / f"{name}.safetensors"
    if path.is_file():
        return load_tensor_file(path, f"{name} (delete {path} to regenerate it)")
    tensors = {k: v.contiguous() for k, v in make().items()}
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp)
    return tensors


class SweepStore:
    """A checkpoint directory: ``config.json`` plus one ``.npz`` file per completed unit.

    Parameters
    ----------
    out : directory (created if missing).
    config : JSON-serialisable settings that determine the results. If the directory already holds
        a different ``config.json``, a ValueError names the first setting that differs and nothing is
        written.
    """

    def __init__(self, out, config: Mapping[str, Any]):
        self.root = Path(out)
        self.config = json_normalised(dict(config))
        with ExitStack() as stack:
            claim = claim_directory(self.root, self.config.get("kind", "sweep"))
            # Inside an experiment (holds_outputs) the directory stays held until it returns.
            (_SCOPE.get() or stack).enter_context(claim)
            bind_settings(self.root / CONFIG_FILE, self.config)
        (self.root / UNITS_DIR).mkdir(parents=True, exist_ok=True)
        # Units a previous run completed (the settings are bound above, so they are this sweep's).
        self.done_before = sum(1 for _ in (self.root / UNITS_DIR).glob("*.npz"))

    def _path(self, name: str) -> Path:
        return self.root / UNITS_DIR / f"{name}.npz"

    def has(self, name: str) -> bool:
        return self._path(name).exists()

    def load(self, name: str) -> dict[str, np.ndarray]:
        path = self._path(name)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(
                f"out: unit file {path} is corrupt ({exc}); delete it and rerun to recompute that unit"
            ) from None

    def save(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        with atomic_path(self._path(name)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})


def cached_unit(
    store: SweepStore | None, name: str, run: Callable[..., Mapping[str, np.ndarray]], *args
) -> Mapping[str, np.ndarray]:
    """The unit ``name``: loaded from ``store`` if it completed before, else ``run(*args)`` (saved)."""
    if store is not None and store.has(name):
        return store.load(name)
    unit = run(*args)
    if store is not None:
        store.save(name, unit)
    return unit


def check_resumable(out, seed: int | None, generator: torch.Generator | None) -> None:
    """A checkpointed sweep must be reproducible, or a resume would mix two random streams."""
    if out is not None and seed is None and generator is None:
        raise ValueError("out: a resumable sweep needs seed= (or a generator) so that a rerun reproduces it")


def _lookup(config, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return "<missing>"
        value = value[part]
    return value


def check_chunk_size(chunk_size, default: int) -> int:
    """``chunk_size`` (samples per unit of work, >= 1), or ``default`` when None."""
    return default if chunk_size is None else check_positive_int(chunk_size, "chunk_size")


# ------------------------------------------------------------------------------------------ progress
@contextmanager
def progress_bar(
    total: int, description: str, enabled: bool = True, store: SweepStore | None = None
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)``; shows a progress bar when ``enabled``: in a Jupyter notebook an HTML bar
    updated in place in the cell's output (:class:`critwin._display.NotebookProgress`), elsewhere a rich
    bar on stderr. A line ``resumed: N of M units done (DIR)`` comes first when ``store`` holds units of
    an earlier run."""
    if enabled and store is not None and store.done_before:
        done = min(store.done_before, total)
        print(f"{description}: resumed: {done} of {total} units done ({store.root})", file=sys.stderr)
    if not enabled or total <= 0:
        yield lambda k=1: None
        return
    if in_notebook():
        bar = NotebookProgress(total, description)
        try:
            yield bar.advance
        finally:
            bar.close()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda k=1: bar.advance(task, k)
