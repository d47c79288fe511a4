"""Option parsing and number formatting shared by the CLI commands (not a command module)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def parse_list(text: str, option: str, convert: Callable[[str], T], what: str) -> list[T]:
    """Parse a comma-separated option value such as ``"0,2,3"`` with ``convert`` applied to each item.

    A ValueError names ``option`` and ``what`` it should hold when the list is empty or an item does not
    convert (``convert`` raises ValueError).
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{option} must be a comma-separated list of {what}, got {text!r}")
    values = []
    for part in parts:
        try:
            values.append(convert(part))
        except ValueError:
            raise ValueError(f"{option} must be a comma-separated list of {what}, got {part!r}") from None
    return values


def fmt_time(value) -> str:
    """An OU time for a table: 4 decimals, ``inf``/``-inf``, and ``-`` for missing (None or NaN)."""
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"
