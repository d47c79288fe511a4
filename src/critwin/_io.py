"""Atomic file output: write to a temporary file in the same directory, then rename.

A crash or a user error never leaves a partial result file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file private (0600); a result file gets the usual umask-derived mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def json_text(obj, indent: int | None = 2) -> str:
    """Strict JSON: tensors and arrays become lists and non-finite floats ``null``, so any parser reads it."""
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
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
