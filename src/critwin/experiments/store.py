"""Shared machinery of the sweeps: seeds per unit, checkpoint directories, features, tables, progress.

A sweep is split into independent *units* (a time index and a chunk of samples). Each unit draws its
randomness from its own generator, seeded from ``(seed, unit key)``, so a unit's result does not depend
on which units ran before it: a sweep killed and resumed gives exactly the table of an uninterrupted
run. Completed units are written atomically to ``DIR/units/``; ``DIR/config.json`` records every
setting that determines the results, and a resume with different settings is refused.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critwin._io import atomic_path, atomic_write_json, atomic_write_text, json_text
from critwin._validation import check_positive_int, check_time

CONFIG_FILE = "config.json"
UNITS_DIR = "units"
TABLE_FILE = "table.csv"
METADATA_FILE = "metadata.json"


# ---------------------------------------------------------------------------------------------- seeds
def resolve_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """The base seed of a sweep: ``seed`` if given, else one drawn from ``generator`` (or torch's RNG).

    Drawing from ``generator`` makes the sweep a deterministic function of the generator's state.
    """
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
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


# ------------------------------------------------------------------------------------- checkpointing
def _normalise(obj):
    """The value as it reads back from the strict JSON the store writes (so resumes compare equal)."""
    return json.loads(json_text(obj, indent=None))


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
        self.config = _normalise(dict(config))
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


def nfe_since(process, before: int | None) -> np.int64:
    """Per-sample denoiser evaluations of ``process`` since its counter read ``before`` (0 if uncounted)."""
    return np.int64(0 if before is None else process.nfe - before)


def _lookup(config, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return "<missing>"
        value = value[part]
    return value


def load_tensor_file(path, what: str) -> Any:
    """What a ``.safetensors`` file holds (a dict of tensors), or any other file read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only: no code runs).

    Raises
    ------
    ValueError naming ``what`` and ``path`` when the file cannot be read that way.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and unpickling fail in many ways: all are bad input
        raise ValueError(f"could not read {what} from {path}: {exc}") from None


# ------------------------------------------------------------------------------------------ progress
@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k)``; shows a rich progress bar on stderr when ``enabled``."""
    if not enabled or total <= 0:
        yield lambda k=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda k=1: bar.advance(task, k)


# ------------------------------------------------------------------------------------------ features
def feature_name(feature, name: str | None = None) -> str:
    """A stable name for a feature (recorded in the config so that resumes cannot mix features)."""
    if name is not None:
        return str(name)
    if isinstance(feature, str):
        return feature
    explicit = getattr(feature, "name", None)
    if isinstance(explicit, str):
        return explicit
    target = feature if hasattr(feature, "__qualname__") else type(feature)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(feature).__name__)}"


def resolve_feature(feature, process) -> Callable:
    """The callable behind ``feature``; ``"component"`` is the mixture's Bayes label."""
    if isinstance(feature, str):
        if feature != "component":
            raise ValueError(f"feature must be a callable or 'component', got {feature!r}")
        # A MixtureProcess holds .mixture; a DiscreteProcess may run on a mixture's exact denoiser.
        mixture = getattr(process, "mixture", None) or getattr(process, "denoiser", None)
        if mixture is None or not hasattr(mixture, "bayes_label"):
            raise ValueError("feature='component' needs a mixture model (GaussianMixture/EmpiricalMixture)")
        return mixture.bayes_label
    if not callable(feature):
        raise ValueError(f"feature must be a callable or 'component', got {type(feature).__name__}")
    return feature


def apply_feature(fn: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Evaluate a feature on a batch and validate it.

    Returns
    -------
    labels : (n,) int64 CPU tensor.  probabilities : (n, C) float CPU tensor or None.
    """
    n = int(x.shape[0])
    with torch.no_grad():
        value = fn(x)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"feature must return a tensor or array of labels, got {type(value).__name__}")
    value = value.detach().cpu()
    if value.ndim == 1 and value.shape[0] == n:
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(
                f"feature must return integer labels (n,) or probabilities (n, C); got dtype {value.dtype} "
                "of shape (n,)"
            )
        labels = value.long()
        if (labels < 0).any():
            raise ValueError("feature returned negative labels; labels must be integers >= 0")
        return labels, None
    if value.ndim == 2 and value.shape[0] == n and value.is_floating_point():
        if not torch.isfinite(value).all() or (value < 0).any():
            raise ValueError(
                "feature returned (n, C) values that are not probabilities (negative or non-finite)"
            )
        if ((value.sum(1) - 1).abs() > 1e-3).any():
            raise ValueError(
                "feature returned (n, C) values whose rows do not sum to 1; return probabilities "
                "(apply softmax to logits)"
            )
        return value.argmax(1), value.float()
    raise ValueError(
        f"feature must return (n,) integer labels or (n, C) probabilities for n={n} inputs, "
        f"got {value.dtype} of shape {tuple(value.shape)}"
    )


# ------------------------------------------------------------------------------------ inputs & models
def as_process(model, sampler, n_steps=None, t_max=None, eta=None):
    """A :class:`ReverseProcess` from a process or a mixture (wrapped in :class:`MixtureProcess`)."""
    from critwin.experiments.process import MixtureProcess, ReverseProcess

    if isinstance(model, ReverseProcess):
        if n_steps is not None or t_max is not None or eta is not None:
            raise ValueError(
                "n_steps, t_max and eta configure a mixture's sampler; a ReverseProcess has its own"
            )
        own = model.describe().get("sampler")
        if sampler is not None and own is not None and sampler != own:
            raise ValueError(
                f"sampler={sampler!r} differs from the process's own sampler {own!r}; pass sampler=None"
            )
        return model
    if hasattr(model, "sample_posterior") and hasattr(model, "denoise"):
        kwargs = {"sampler": "exact" if sampler is None else sampler, "eta": eta}
        if n_steps is not None:
            kwargs["n_steps"] = n_steps
        if t_max is not None:
            kwargs["t_max"] = t_max
        return MixtureProcess(model, **kwargs)
    raise ValueError(
        f"model must be a GaussianMixture, EmpiricalMixture or ReverseProcess, got {type(model).__name__}"
    )


def check_requested_times(times, name: str = "times") -> torch.Tensor:
    """Validate requested OU times (finite, >= 0): a (T,) float64 tensor, order preserved."""
    if isinstance(times, (int, float)) or (isinstance(times, torch.Tensor) and times.ndim == 0):
        times = [times]
    try:
        values = list(times.tolist() if isinstance(times, (torch.Tensor, np.ndarray)) else times)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of OU times, got {type(times).__name__}") from None
    if len(values) == 0:
        raise ValueError(f"{name} must hold at least one OU time")
    checked = [check_time(value, f"{name}[{i}]") for i, value in enumerate(values)]
    return torch.tensor(checked, dtype=torch.float64)


def realise_times(process, requested: torch.Tensor, name: str = "times"):
    """Put requested times on the process's grid.

    Continuous processes are re-gridded so that every requested time is a grid point (the base grid's
    step density is kept); discrete ones use the nearest grid point. Time 0 maps to the clean end.

    Returns
    -------
    process, indices (T,) long, realised times (T,) float64, steps (T,) long (float64 for fractional
    timesteps) or None.
    """
    grid = process.times
    t_hi, t_lo = grid[:-1].max().item(), grid.min().item()
    for i, t in enumerate(requested.tolist()):
        if t > t_hi * (1 + 1e-9) + 1e-12:
            raise ValueError(
                f"{name}[{i}]={t:.4g} is beyond the sampler's range of OU times [{t_lo:.4g}, {t_hi:.4g}]"
            )
    if process.continuous:
        positive = requested[requested > 0]
        keep = [
            g for g in grid.tolist() if positive.numel() == 0 or (positive - g).abs().min().item() > 1e-12
        ]
        merged = sorted(set(keep) | set(positive.tolist()) | {0.0, grid[0].item()}, reverse=True)
        process = process.with_times(torch.tensor(merged, dtype=torch.float64))
    last = process.times.numel() - 1
    indices, realised, steps = [], [], []
    for t in requested.tolist():
        if t == 0.0:
            index, value = last, 0.0
        else:
            index, value = process.locate(t)
        indices.append(index)
        realised.append(value)
        steps.append(process.step_label(index) if index < last else None)
    has_steps = any(s is not None for s in steps)
    step_tensor = None
    if has_steps:
        values = [-1 if s is None else s for s in steps]
        # Sigma-based schedulers (Euler) have fractional timesteps: keep them exactly.
        integral = all(float(v).is_integer() for v in values)
        step_tensor = torch.tensor(values, dtype=torch.long if integral else torch.float64)
    index_tensor = torch.tensor(indices, dtype=torch.long)
    return process, index_tensor, torch.tensor(realised, dtype=torch.float64), step_tensor


def check_samples(x0, process, name: str = "x0") -> torch.Tensor:
    if isinstance(x0, np.ndarray):
        x0 = torch.from_numpy(x0)
    if not isinstance(x0, torch.Tensor) or x0.ndim == 0 or x0.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty tensor with the batch dimension first")
    if not x0.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x0.dtype}")
    if not torch.isfinite(x0).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x0


def check_model_shape(z0: torch.Tensor, process, name: str = "x0") -> torch.Tensor:
    """Check encoded samples against the process's ``sample_shape`` (when it declares one)."""
    shape = tuple(getattr(process, "sample_shape", ()) or ())
    if shape and tuple(z0.shape[1:]) != shape:
        raise ValueError(
            f"{name} must hold samples of shape {shape} (in model space), got {tuple(z0.shape[1:])}"
        )
    return z0


def check_cond(cond) -> dict[str, Any]:
    """``cond`` as a dict (empty for None); which tensors are per sample is decided by :func:`select_cond`."""
    if cond is None:
        return {}
    if not isinstance(cond, Mapping):
        raise ValueError(f"cond must be a dict of tensors, got {type(cond).__name__}")
    return dict(cond)


def select_cond(cond: Mapping[str, Any], rows: torch.Tensor, n_rows: int) -> dict[str, Any]:
    """Conditioning for the samples ``rows``: per-sample tensors (first dim ``n_rows``) are indexed."""
    out = {}
    for key, value in cond.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n_rows:
            out[key] = value[rows.to(value.device)]
        else:
            out[key] = value
    return out


def fingerprint(*values) -> str:
    """Content hash of tensors / plain values (for the config of a sweep)."""
    import hashlib

    digest = hashlib.sha256()
    for value in values:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(value, Mapping):
            for key in sorted(value):
                digest.update(str(key).encode())
                digest.update(fingerprint(value[key]).encode())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def check_chunk_size(chunk_size, default: int) -> int:
    return default if chunk_size is None else check_positive_int(chunk_size, "chunk_size")


# --------------------------------------------------------------------------------------------- tables
def write_table(directory, columns: Mapping[str, list], metadata: Mapping[str, Any]) -> None:
    """Write ``table.csv`` (one row per sample) and ``metadata.json`` atomically into ``directory``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory must be a directory, but {directory} is a file")
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    cols = [columns[k] for k in names]
    for i in range(n):
        writer.writerow([_format(col[i]) for col in cols])
    atomic_write_text(directory / TABLE_FILE, buffer.getvalue())
    atomic_write_json(directory / METADATA_FILE, _normalise(dict(metadata)))


def table_rows(columns: Mapping[str, list]) -> list[dict[str, Any]]:
    """Column lists (as from ``table()``) -> one dict per row."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def grid_metadata(requested: torch.Tensor, times: torch.Tensor, indices: torch.Tensor, steps) -> dict:
    """Requested and realised times of a result for ``metadata.json`` (read by :func:`grid_from_metadata`)."""
    return {
        "requested_times": requested.tolist(),
        "times": times.tolist(),
        "indices": indices.tolist(),
        "steps": None if steps is None else steps.tolist(),
    }


def grid_from_metadata(meta: Mapping[str, Any]) -> dict[str, torch.Tensor | None]:
    """``requested_times``, ``times``, ``indices``, ``steps`` tensors from :func:`grid_metadata`'s dict."""
    steps = meta.get("steps")
    return {
        "requested_times": torch.tensor(meta["requested_times"], dtype=torch.float64),
        "times": torch.tensor(meta["times"], dtype=torch.float64),
        "indices": torch.tensor(meta["indices"], dtype=torch.long),
        "steps": None if steps is None else torch.tensor(steps),
    }


def step_column(steps, t_rep) -> list:
    """Per-row step labels (None where the model has none or t = 0); fractional ones stay exact."""
    if steps is None:
        return [None] * len(t_rep)
    return [None if s < 0 else int(s) if float(s).is_integer() else float(s) for s in steps[t_rep]]


def _format(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return value


def read_table(directory) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Read ``table.csv`` (columns of strings) and ``metadata.json`` from ``directory``."""
    directory = Path(directory)
    table, meta = directory / TABLE_FILE, directory / METADATA_FILE
    for path in (table, meta):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found (is {directory} a saved critwin result?)")
    with open(table, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        columns: dict[str, list[str]] = {name: [] for name in header}
        for row in reader:
            for name, value in zip(header, row, strict=True):
                columns[name].append(value)
    return columns, json.loads(meta.read_text())
