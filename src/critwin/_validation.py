"""Argument checks shared by every layer: each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch


def check_time(t, name: str = "t", allow_zero: bool = True) -> float:
    """Return ``t`` as a float after checking it is a finite, non-negative OU time."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"{name} must be a scalar OU time, got a tensor of shape {tuple(t.shape)}")
        t = t.item()
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (an OU time), got {t!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} (OU time), got {value}")
    return value


def check_finite(x: torch.Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def check_eps(eps, name: str = "eps") -> float:
    value = float(eps)
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {eps!r}")
    return value


def check_subset(subset: Iterable[int] | None, n_components: int, name: str) -> list[int]:
    """Validate a subset of component indices; return it sorted and de-duplicated."""
    if subset is None:
        raise ValueError(f"{name} must be a non-empty list of component indices, got None")
    if isinstance(subset, torch.Tensor):
        subset = subset.tolist()
    if isinstance(subset, (int,)):
        subset = [subset]
    items: Sequence = list(subset)
    if len(items) == 0:
        raise ValueError(f"{name} must be a non-empty list of component indices, got an empty set")
    out = set()
    for item in items:
        if (
            isinstance(item, bool)
            or not isinstance(item, (int,))
            and not (hasattr(item, "__index__") and not isinstance(item, float))
        ):
            raise ValueError(f"{name} must contain integer component indices, got {item!r}")
        index = int(item)
        if not 0 <= index < n_components:
            raise ValueError(
                f"{name} contains unknown component {index}; valid indices are 0..{n_components - 1}"
            )
        out.add(index)
    return sorted(out)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
