"""Generic file reading and content hashing (no knowledge of experiments or models)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from critwin._lazy import deferred_import

# Deferred: the model registry imports this module, and ``critwin --help`` must not load torch.
torch = deferred_import("torch", globals())

__all__ = ["load_tensor_file", "fingerprint", "check_weights", "WEIGHT_LIMIT"]

WEIGHT_LIMIT = 1e5
"""Largest magnitude a trained network's weight may have (the shipped ones stay below 4; a checkpoint of
random bytes read as floats holds NaN, infinities or magnitudes far above this)."""
WEIGHT_DTYPES = ("float32", "float16", "bfloat16")
"""The dtypes trained weights ship in (torch names); float64 or integer tensors in a weights file are not
a network's."""


def load_tensor_file(path, what: str) -> Any:
    """What a ``.safetensors`` file holds (a dict of tensors), or any other file read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only: no code runs).

    Parameters
    ----------
    path : file path.
    what : what the file should hold, for error messages (e.g. ``"prompt embeddings"``).

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


def check_weights(
    tensors: Mapping[str, torch.Tensor], file, expected: Mapping[str, torch.dtype] | None = None
):
    """Refuse weights no trained network has, naming ``file`` and the tensor: a dtype other than the
    network's (``expected``: name -> dtype, e.g. a module's own ``state_dict``; None: one of
    :data:`WEIGHT_DTYPES` for floating tensors), NaN or infinite values, or magnitudes above
    :data:`WEIGHT_LIMIT`. Integer buffers the network itself keeps (counters) pass when ``expected``
    names them so.

    A weights file whose checksum matches its card can still hold float64 or int8 garbage that
    ``load_state_dict`` would cast silently into a network that then samples noise.
    """
    for name, tensor in tensors.items():
        want = None if expected is None else expected.get(name)
        if want is not None and tensor.dtype != want:
            raise ValueError(
                f"weights file {file}: {name} is {tensor.dtype}, but the network holds {want} there; "
                "the file is not this network's weights"
            )
        if want is None and str(tensor.dtype).removeprefix("torch.") not in WEIGHT_DTYPES:
            raise ValueError(
                f"weights file {file}: {name} is {tensor.dtype}, not a weight dtype "
                f"({', '.join(WEIGHT_DTYPES)})"
            )
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        largest = tensor.detach().abs().max().item()
        if not largest <= WEIGHT_LIMIT:  # NaN fails this too
            raise ValueError(
                f"weights file {file}: {name} holds implausible values (largest magnitude {largest:.3g}; "
                f"trained weights stay below {WEIGHT_LIMIT:g}); the file is corrupt"
            )


def fingerprint(*values) -> str:
    """16-hex-digit content hash of tensors (dtype, shape and bytes), mappings and plain values.

    Recorded in sweep configs so that a resume with other inputs is refused. SHA-256 (hardware
    accelerated on current CPUs: about 1.3 GB/s, faster here than BLAKE2b).
    """
    digest = hashlib.sha256()
    for value in values:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            if tensor.numel():
                # The raw bytes, without a copy: exact, and independent of thread count and summation order.
                digest.update(tensor.view(-1).view(torch.uint8).numpy().data)
        elif isinstance(value, Mapping):
            for key in sorted(value):
                digest.update(str(key).encode())
                digest.update(fingerprint(value[key]).encode())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]
