"""Checkpointed sweeps: seeds per unit, the checkpoint directory, resume checks, progress.

A sweep is split into independent *units* (a time index and a chunk of samples). Each unit draws its
randomness from its own generator, seeded from ``(seed, unit key)``, so a unit's result does not depend
on which units ran before it: a sweep killed and resumed gives exactly the table of an uninterrupted
run. Completed units are written atomically to ``DIR/units/``; ``DIR/config.json`` records every
setting that determines the results, and a resume with different settings is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from critwin._io import atomic_path, atomic_write_json, json_normalised
from critwin._validation import check_positive_int

__all__ = [
    "SweepStore",
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
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        return int(seed)
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the unit ``keys`` of the sweep ``seed`` (independent streams per unit)."""
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
    generator = torch.Generator(device=device)
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
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"out must be a directory, but {self.root} is a file")
        self.config = json_normalised(dict(config))
        path = self.root / CONFIG_FILE
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"out: {path} is not valid JSON ({exc}); refusing to resume into it"
                ) from None
            if old.get("kind") != self.config.get("kind"):
                raise ValueError(
                    f"out: {self.root} holds a {old.get('kind')!r} sweep, not a {self.config.get('kind')!r} "
                    "sweep; use another directory"
                )
            differs = _first_difference(old, self.config)
            if differs is not None:
                raise ValueError(
                    f"out: {self.root} was written with different settings ({differs!r} differs: "
                    f"{_lookup(old, differs)!r} there, {_lookup(self.config, differs)!r} now); refusing to "
                    "mix results: use another directory or the original settings"
                )
        else:
            atomic_write_json(path, self.config)
        units = self.root / UNITS_DIR
        units.mkdir(parents=True, exist_ok=True)
        # A killed sweep can leave the temporary file of the unit it was writing: never a result.
        for stale in units.glob(".*.npz.*.tmp"):
            stale.unlink(missing_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / UNITS_DIR / f"{name}.npz"

    def has(self, name: str) -> bool:
        return self._path(name).exists()

    def load(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self._path(name), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

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
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)``; shows a rich progress bar on stderr when ``enabled``."""
    if not enabled or total <= 0:
        yield lambda k=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda k=1: bar.advance(task, k)
