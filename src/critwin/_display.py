"""Notebook display of results: one-line reprs, HTML tables, pandas frames and matplotlib axes.

Every result class builds its ``__repr__`` / ``_repr_html_`` from a few key numbers with
:func:`short_repr` / :func:`html_summary`, its ``to_pandas()`` with :func:`data_frame`, and its
``plot(ax=None)`` on :func:`axes`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def short_repr(name: str, fields: Mapping[str, Any]) -> str:
    """``Name(key=value, ...)`` on one line, floats to 4 significant digits, intervals as ``[lo, hi]``."""
    return f"{name}(" + ", ".join(f"{key}={_fmt(value)}" for key, value in fields.items()) + ")"


def html_summary(name: str, fields: Mapping[str, Any]) -> str:
    """The same numbers as :func:`short_repr` as a small HTML table (Jupyter's ``_repr_html_``)."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in fields.items()
    )
    return f"<table><caption><b>{html.escape(name)}</b></caption>{rows}</table>"


def data_frame(columns: Mapping[str, Any]):
    """``pandas.DataFrame(columns)``; pandas is an optional dependency (``pip install 'critwin[pandas]'``)."""
    try:
        import pandas as pd  # optional dependency: imported only when a frame is asked for
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install 'critwin[pandas]'") from None
    return pd.DataFrame(dict(columns))


def axes(ax=None):
    """``ax``, or the axes of a new matplotlib figure (pyplot, so that notebooks display it)."""
    if ax is not None:
        return ax
    # pyplot picks a backend when imported: done on first plot only, never when critwin is imported.
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.5, 3.5))[1]
