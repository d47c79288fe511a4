"""Notebook display of results: one-line reprs, HTML tables, pandas frames and matplotlib axes.

Every result class builds its ``__repr__`` / ``_repr_html_`` from a few key numbers with
:func:`short_repr` / :func:`html_summary`, its ``to_pandas()`` with :func:`data_frame`, and its
``plot(ax=None)`` on :func:`axes`. Long computations show their progress in a notebook with
:class:`NotebookProgress` (see :func:`critwin.experiments.checkpoint.progress_bar`).
"""

from __future__ import annotations

import html
import math
import sys
import time
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


# ------------------------------------------------------------------------------ progress in Jupyter
def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel, where output renders as HTML rather than on a terminal.

    (rich's live bars need ipywidgets there, and without them show nothing.)
    """
    ipython = sys.modules.get("IPython")  # a kernel has imported it; nothing to detect otherwise
    if ipython is None or not hasattr(ipython, "get_ipython"):
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class _BarView:
    """One state of a notebook bar: HTML for the notebook, plain text for consoles and saved outputs."""

    def __init__(self, description: str, done: int, total: int, elapsed: float) -> None:
        self.description, self.done, self.total, self.elapsed = description, done, total, elapsed

    def _timing(self) -> str:
        if self.done >= self.total:
            return f"done in {_duration(self.elapsed)}"
        spent = f"{_duration(self.elapsed)} elapsed"
        if not self.done:
            return spent
        return f"{spent}, ~{_duration(self.elapsed / self.done * (self.total - self.done))} left"

    def __repr__(self) -> str:
        return f"{self.description}: {self.done}/{self.total} ({self._timing()})"

    def _repr_html_(self) -> str:
        return (
            f"<div style='font-family:monospace'>{html.escape(self.description)} "
            f"<progress value='{self.done}' max='{self.total}' style='width:30em'></progress> "
            f"{self.done}/{self.total} <span style='color:grey'>{html.escape(self._timing())}</span></div>"
        )


class NotebookProgress:
    """A progress bar in a Jupyter output cell: one display updated in place (``display_id``), so it
    needs no ipywidgets and its last state stays in the saved notebook.

    ``advance(k)`` redraws at most every ``min_interval`` seconds (and always at the end), so a sweep of
    many small units does not flood the kernel with messages.
    """

    def __init__(self, total: int, description: str, min_interval: float = 0.25, clock=time.monotonic):
        from IPython.display import display  # only ever built inside a kernel (see in_notebook)

        self.total, self.description, self.done = int(total), description, 0
        self._clock, self._min_interval = clock, min_interval
        self._start = self._drawn = clock()
        self._handle = display(self._view(), display_id=True)

    def _view(self) -> _BarView:
        return _BarView(self.description, self.done, self.total, self._clock() - self._start)

    def advance(self, k: int = 1) -> None:
        self.done = min(self.total, self.done + k)
        now = self._clock()
        if self.done >= self.total or now - self._drawn >= self._min_interval:
            self._drawn = now
            self._handle.update(self._view())

    def close(self) -> None:
        """The final state (also when the work stopped early: the bar shows how far it got)."""
        self._handle.update(self._view())
