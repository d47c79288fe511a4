"""The one memory guard: estimate a large temporary before building it, refuse it above a limit.

The limit is :func:`set_memory_limit` (bytes), else the environment variable ``CRITWIN_MEMORY_LIMIT``
(bytes, or with a suffix ``K``/``M``/``G``/``T`` for powers of 1024), else ``DEFAULT_MEMORY_LIMIT``
(4 GiB). Code that can work in pieces asks :func:`chunk_rows` for a piece size instead.
"""

from __future__ import annotations

import os

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "set_memory_limit",
    "memory_limit",
    "check_memory",
    "chunk_rows",
    "GRID_BYTES",
    "unet_bytes",
    "transformer_bytes",
]

DEFAULT_MEMORY_LIMIT = 4 * 2**30
ENV_VAR = "CRITWIN_MEMORY_LIMIT"
# A chunked computation keeps each piece below this share of the limit (several temporaries coexist).
_CHUNK_SHARE = 16
_SUFFIX = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_limit: int | None = None
GRID_BYTES = 64
"""Bytes per point of a time grid or schedule and its temporaries (float64 values, conversions, sorts):
the guard's estimate for a number of steps typed by a user or read from a file."""


def _parse(text: str, name: str) -> int:
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = _SUFFIX.get(raw[-1:], 1) if raw else 1
    digits = raw[:-1] if raw[-1:] in _SUFFIX else raw
    try:
        value = float(digits) * scale
    except ValueError:
        raise ValueError(f"{name} must be a number of bytes (e.g. 4G), got {text!r}") from None
    if not value >= 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {text!r}")
    return int(value)


def set_memory_limit(n_bytes: int | str | None) -> None:
    """Set the largest temporary (bytes) critwin builds; None restores the environment/default limit.

    Parameters
    ----------
    n_bytes : a positive int, a string such as ``"8G"``, or None.

    Examples
    --------
    A request above the limit is refused before anything is allocated, naming what it would build:

    >>> import critwin
    >>> critwin.set_memory_limit("1M")
    >>> critwin.time_grid(1.0, 10**6)
    Traceback (most recent call last):
        ...
    ValueError: time_grid(n_steps=1000000) would allocate about 0.0596 GiB, above the memory limit of ...
    >>> critwin.set_memory_limit(None)
    """
    global _limit
    if n_bytes is None:
        _limit = None
        return
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, (int, str)):
        raise ValueError(f"n_bytes must be a positive int, a string like '8G', or None, got {n_bytes!r}")
    _limit = _parse(str(n_bytes), "n_bytes")


def memory_limit() -> int:
    """The current limit in bytes (``set_memory_limit``, else ``$CRITWIN_MEMORY_LIMIT``, else 4 GiB).

    Examples
    --------
    >>> import critwin
    >>> critwin.set_memory_limit("1M")
    >>> critwin.memory_limit()
    1048576
    >>> critwin.set_memory_limit(None)  # back to $CRITWIN_MEMORY_LIMIT, else 4 GiB
    """
    if _limit is not None:
        return _limit
    env = os.environ.get(ENV_VAR)
    return DEFAULT_MEMORY_LIMIT if not env else _parse(env, ENV_VAR)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def check_memory(n_bytes: float, what: str, hint: str = "") -> None:
    """Raise ``ValueError`` before allocating ``n_bytes`` for ``what`` when that exceeds the limit.

    The message names what would be built, the estimate and the limit, and how to raise it.
    """
    limit = memory_limit()
    if n_bytes > limit:
        extra = f"; {hint}" if hint else ""
        raise ValueError(
            f"{what} would allocate about {_gib(n_bytes)}, above the memory limit of {_gib(limit)} "
            f"(raise it with critwin.set_memory_limit(...) or ${ENV_VAR}){extra}"
        )


def chunk_rows(bytes_per_row: float, n_rows: int, what: str) -> int:
    """Rows per piece so that one piece stays below ``memory_limit() / 16`` (at least one row).

    Raises ``ValueError`` (see :func:`check_memory`) when even one row is above that share.
    """
    budget = memory_limit() / _CHUNK_SHARE
    check_memory(bytes_per_row * _CHUNK_SHARE, f"one row of {what}")
    return max(1, min(int(n_rows), int(budget // max(bytes_per_row, 1.0))))


# Parameters of a U-Net level of c channels per layer of resnets, in units of c^2: two 3x3 convolutions
# per resnet (18 c^2), the up path's wider inputs, skip projections and time embeddings. Fitted to the
# shipped UNet2DModel layouts (0.90 M parameters counted, 0.89 M estimated).
_UNET_PARAMS_PER_C2 = 40


def unet_bytes(block_out_channels, layers_per_block: int, image_size: int = 0, batch: int = 0) -> float:
    """An estimate (within a factor of about 2) of the bytes of a diffusers-style U-Net in float32:
    its parameters, plus, for ``batch`` images of ``image_size`` pixels a side, its activations.

    For the memory guard only: sizes read from a file or typed by a user are refused before the network
    is built (a card with ``block_out_channels=[10**6]`` would ask for terabytes).

    Examples
    --------
    >>> round(unet_bytes((32, 48, 64), 1) / 4 / 1e6, 2)  # about 0.9 M parameters
    0.89
    """
    channels = [float(c) for c in block_out_channels]
    resnets = 2 * float(layers_per_block) + 1  # down path, up path (one more), per level
    params = _UNET_PARAMS_PER_C2 * resnets * sum(c * c for c in channels)
    # Activations kept for the backward pass: a few tensors per resnet at each level's resolution.
    pixels = [float(image_size) ** 2 / 4**level for level in range(len(channels))]
    activations = 6 * resnets * sum(c * n for c, n in zip(channels, pixels, strict=True))
    return 4.0 * (params + float(batch) * activations)


def transformer_bytes(
    width: int, layers: int, n_tokens: int, length: int, ffn: int = 0, batch: int = 0, heads: int = 1
) -> float:
    """An estimate of the bytes of a transformer encoder in float32: ``layers`` blocks of ``width``
    (attention ``4 width^2``, a feed-forward layer of ``ffn`` units, default ``4 width``, ``2 width ffn``),
    embeddings of ``n_tokens`` ids and ``length`` positions, plus, for ``batch`` sequences of ``length``
    tokens, the activations kept for the backward pass (the attention weights included).

    For the memory guard only, as :func:`unet_bytes`.

    Examples
    --------
    >>> round(transformer_bytes(64, 2, 9, 8) / 4 / 1e3)  # the shipped text models: about 100 k parameters
    99
    """
    w, n_layers, ffn = float(width), float(layers), float(ffn or 4 * width)
    params = n_layers * (4 * w * w + 2 * w * ffn) + (float(n_tokens) + float(length)) * w
    per_layer = float(length) * (8 * w + 2 * ffn) + 2 * float(heads) * float(length) ** 2
    return 4.0 * (params + float(batch) * n_layers * per_layer)
