"""Notebook display of results: one-line reprs, printed tables, HTML tables, pandas frames and axes.

Every result class builds its ``__repr__`` / ``_repr_html_`` from a few key numbers with
:func:`short_repr` / :func:`html_summary`, its ``table()`` as a :class:`Table` (a dict of columns that
prints as a table), its ``to_pandas()`` with :func:`data_frame`, and its ``plot(ax=None)`` on
:func:`axes`. Long computations show their progress in a notebook with :class:`NotebookProgress`
(see :func:`critwin.experiments.checkpoint.progress_bar`).

Numbers are rounded in one place, :func:`ci_decimals`: an estimate shown with its interval keeps the
decimals of the leading digit of the interval's half-width (``2.9934 [2.81, 3.19]`` prints as
``3.0 [2.8, 3.2]``); a number shown without one keeps :data:`SIGNIFICANT` significant digits.
"""

from __future__ import annotations

import html
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

#: Significant digits of a number printed without an interval.
SIGNIFICANT = 4
#: Column-name suffixes of an interval's bounds, beside the column of its estimate.
_BOUND_SUFFIXES = (("_lo", "_hi"), ("_low", "_high"))
#: Rows of a printed :class:`Table` above which the middle rows are left out.
_MAX_ROWS = 20


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (numpy scalars and 0-d tensors included)."""
    if isinstance(value, bool) or value is None:
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ci_decimals(value: float, low: float | None, high: float | None) -> int | None:
    """Decimals an estimate supports: those of the leading digit of its interval's half-width, and at
    least one significant digit of the estimate itself (a time of 0.042 never prints as 0.0).

    With one bound censored (infinite or None), the distance from ``value`` to the other bound is the
    half-width. None when no finite positive width is known (then print :data:`SIGNIFICANT` digits).

    Examples
    --------
    >>> ci_decimals(2.9934, 2.81, 3.19)      # half-width 0.19: one decimal
    1
    >>> ci_decimals(123.4, 80.0, 170.0)      # half-width 45: tens
    -1
    >>> ci_decimals(2.0, 1.32, math.inf)     # censored above: 2.0 - 1.32 = 0.68
    1
    >>> ci_decimals(0.042, 0.028, 0.23)      # half-width 0.1, but 0.042 needs two decimals
    2
    """
    bounds = [b for b in (_real(low), _real(high)) if b is not None and math.isfinite(b)]
    if not math.isfinite(value) or not bounds:
        return None
    half = (bounds[1] - bounds[0]) / 2 if len(bounds) == 2 else abs(value - bounds[0])
    if not half > 0:
        return None
    decimals = -math.floor(math.log10(half))
    return decimals if value == 0 else max(decimals, -math.floor(math.log10(abs(value))))


def format_number(value: Any, decimals: int | None = None) -> str:
    """One number: ``decimals`` decimals (negative: rounded to tens, hundreds...) or, when None,
    :data:`SIGNIFICANT` significant digits; ``inf``/``-inf``/``nan``, None as ``None``.

    Examples
    --------
    >>> format_number(0.04234387324690203), format_number(2.9934, 1), format_number(123.4, -1)
    ('0.04234', '3.0', '120')
    """
    number = _real(value)
    if number is None:
        return str(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if math.isnan(number):
        return "nan"
    if isinstance(value, int) and decimals is None:
        return str(value)
    if decimals is None:
        return f"{number:.{SIGNIFICANT}g}"
    if decimals <= 0:
        return f"{round(number, decimals):.0f}"
    return f"{number:.{decimals}f}"


def format_ci(value: Any, low: Any, high: Any) -> str:
    """``estimate [low, high]`` rounded to what the interval supports (:func:`ci_decimals`).

    Examples
    --------
    >>> format_ci(2.9934, 2.81, 3.19)
    '3.0 [2.8, 3.2]'
    >>> format_ci(1.9974442139286621, 1.322597977190851, None)   # censored above
    '2.0 [1.3, inf]'
    """
    number = _real(value)
    decimals = None if number is None else ci_decimals(number, low, high)
    low = -math.inf if low is None else low
    high = math.inf if high is None else high
    parts = (format_number(v, decimals) for v in (value, low, high))
    return "{} [{}, {}]".format(*parts)


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return format_number(value)


def set_label(components: Sequence[int], most: int = 12) -> str:
    """``{0,1,2}``, or ``{0,1,2,…,999} (1000)`` for sets of more than ``most`` components."""
    if len(components) <= most:
        return "{" + ",".join(map(str, components)) + "}"
    return "{" + ",".join(map(str, components[:3])) + f",…,{components[-1]}}} ({len(components)})"


def _interval(value: Any) -> tuple[Any, Any] | None:
    """``(low, high)`` when ``value`` is a two-element interval."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        bounds = [_real(v) for v in value]
        known = [b for b in bounds if b is not None and not math.isnan(b)]
        if known and all(v is None or b is not None for v, b in zip(value, bounds, strict=True)):
            return value[0], value[1]
    return None


def _with_intervals(fields: Mapping[str, Any]) -> dict[str, str]:
    """Formatted fields; ``x`` beside ``x_ci`` (an interval) becomes one ``estimate [low, high]``."""
    out = {}
    for key, value in fields.items():
        if key.endswith("_ci") and key[:-3] in fields and _interval(value) is not None:
            continue
        ci = _interval(fields.get(f"{key}_ci"))
        out[key] = format_ci(value, *ci) if ci is not None and _real(value) is not None else _fmt(value)
    return out


def short_repr(name: str, fields: Mapping[str, Any]) -> str:
    """``Name(key=value, ...)`` on one line: an estimate with its ``key_ci`` interval as ``key=3.0 [2.8,
    3.2]`` (rounded by :func:`ci_decimals`), other numbers to :data:`SIGNIFICANT` significant digits.

    Examples
    --------
    >>> short_repr("WindowEstimate", {"t_half": 2.236, "t_half_ci": (1.874, 2.61), "n_times": 4})
    'WindowEstimate(t_half=2.2 [1.9, 2.6], n_times=4)'
    """
    text = ", ".join(f"{key}={value}" for key, value in _with_intervals(fields).items())
    return f"{name}({text})"


def html_summary(name: str, fields: Mapping[str, Any]) -> str:
    """The same numbers as :func:`short_repr` as a small HTML table (Jupyter's ``_repr_html_``)."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(v)}</td></tr>"
        for k, v in _with_intervals(fields).items()
    )
    return f"<table><caption><b>{html.escape(name)}</b></caption>{rows}</table>"


def data_frame(columns: Mapping[str, Any]):
    """``pandas.DataFrame(columns)``; pandas is an optional dependency (``pip install 'critwin[pandas]'``)."""
    try:
        import pandas as pd  # optional dependency: imported only when a frame is asked for
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install 'critwin[pandas]'") from None
    return pd.DataFrame(dict(columns))


def _bound_names(columns: Mapping[str, Sequence], name: str) -> tuple[str, str] | None:
    """The names of the interval columns of ``name`` (``name_lo``/``name_hi`` or ``_low``/``_high``)."""
    for low, high in _BOUND_SUFFIXES:
        if f"{name}{low}" in columns and f"{name}{high}" in columns:
            return f"{name}{low}", f"{name}{high}"
    return None


def _display_columns(columns: Mapping[str, Sequence]) -> dict[str, list[str]]:
    """Formatted cells; a column ``x`` beside ``x_lo``/``x_hi`` (or ``_low``/``_high``) becomes one
    column ``x [CI]`` of ``estimate [low, high]`` cells, rounded by :func:`ci_decimals`."""
    bounds = {name: _bound_names(columns, name) for name in columns}
    folded = {bound for pair in bounds.values() if pair for bound in pair}
    out = {}
    for name, values in columns.items():
        if name in folded:
            continue
        if bounds[name] is None:
            out[name] = [_fmt(v) for v in values]
            continue
        lows, highs = (columns[b] for b in bounds[name])
        out[f"{name} [CI]"] = [
            format_ci(v, lo, hi) if _real(v) is not None else _fmt(v)
            for v, lo, hi in zip(values, lows, highs, strict=True)
        ]
    return out


class Table(dict):
    """Tidy columns (name -> list of values, all of one length) that print as an aligned text table.

    Still a plain ``dict`` for code (``table["t_half"]``, ``json.dumps(table)``); ``print(table)`` and
    the notebook show rows, with an estimate and its ``_lo``/``_hi`` columns in one ``[CI]`` cell rounded
    to what the interval supports; :meth:`to_pandas` gives a ``pandas.DataFrame`` of the exact values.

    Examples
    --------
    >>> t = Table({"feature": ["shape", "mark"], "t_half": [0.4853, 2.2341], "t_half_lo": [0.41, 1.62],
    ...            "t_half_hi": [0.56, 2.71]})
    >>> print(t)
    feature  t_half [CI]
    shape    0.49 [0.41, 0.56]
    mark     2.2 [1.6, 2.7]
    >>> t["t_half"]
    [0.4853, 2.2341]
    """

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        shown = _display_columns(self)
        header = list(shown)
        rows = [list(r) for r in zip(*shown.values(), strict=True)] if shown else []
        return header, rows

    def __str__(self) -> str:
        header, rows = self._cells()
        if not header:
            return "(empty table)"
        if len(rows) > _MAX_ROWS:
            skipped = len(rows) - _MAX_ROWS + 5
            rows = [*rows[: _MAX_ROWS - 5], [f"... {skipped} rows"] + [""] * (len(header) - 1), *rows[-5:]]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        ]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        header, rows = self._cells()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def to_pandas(self):
        """The exact values as a ``pandas.DataFrame`` (``pip install 'critwin[pandas]'``)."""
        return data_frame(self)


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
