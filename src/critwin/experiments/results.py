"""Result tables of the experiments: one base class, and the csv/JSON files they are saved as.

A result is one tidy table (one row per measurement) plus metadata. :class:`ResultTable` writes
``table()``, ``rows()``, ``to_pandas()``, ``save()``, ``load()``, the one-line ``repr`` and the
notebook's ``_repr_html_`` once (subclasses give ``summary()``, a few key numbers, and use
``@dataclass(repr=False)``); each result
(``ForwardReverseResult``, ``CloneResult``, ``SearchResult``) says what its columns and metadata are
and how to rebuild itself from them. A saved result is ``DIR/table.csv`` + ``DIR/metadata.json``,
both written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from critwin._display import data_frame, html_summary, short_repr
from critwin._io import atomic_paths, json_normalised, json_text, provenance, read_json
from critwin.experiments.checkpoint import claim_directory
from critwin.experiments.features import UNNAMED, labelled

__all__ = [
    "ResultTable",
    "write_table",
    "read_table",
    "table_rows",
    "grid_metadata",
    "grid_from_metadata",
    "step_column",
    "result_metadata",
    "SHARED_COLUMNS",
    "FeatureLabels",
    "select_feature",
    "feature_columns",
    "CLOCK_AXES",
    "clock_of",
    "at_edge",
    "by_feature",
]

# Columns that forward–reverse and cloning tables share, meaning the same thing in both: the realised
# and requested OU time, the model step and grid index, the unit whose feature is compared (a source
# image / a trajectory), its replicate (a re-noising / a continuation), the output's feature label and
# the label it is compared with.
SHARED_COLUMNS = ("t", "requested_t", "step", "index", "source_id", "replicate", "label", "source_label")

CLOCK_AXES = {
    "ou": "OU time t",
    "kappa": "masking level \u03ba",
    "hidden": "hidden positions at the end",
}
"""Axis label of each clock a result's times can be on (the ``clock`` entry of its metadata)."""


def clock_of(process) -> str:
    """The clock of a process's grid: ``"ou"`` unless it states another (token processes)."""
    return getattr(process, "clock", "ou")


TABLE_FILE = "table.csv"
METADATA_FILE = "metadata.json"


class ResultTable(ABC):
    """Base class of the experiments' results: a tidy table plus metadata, saved and loaded as files.

    Subclasses set ``kind`` (recorded in ``metadata.json`` and checked by :meth:`load`) and implement
    :meth:`table`, :meth:`_saved_metadata` and :meth:`_from_saved`.
    """

    kind: ClassVar[str]

    @abstractmethod
    def table(self) -> dict[str, list]:
        """Tidy columns (name -> list of values, all of one length): one row per measurement."""

    @abstractmethod
    def _saved_metadata(self) -> dict[str, Any]:
        """What ``metadata.json`` holds besides ``kind``: everything the table does not."""

    @classmethod
    @abstractmethod
    def _from_saved(cls, columns: dict[str, list[str]], meta: dict[str, Any]) -> ResultTable:
        """The result from the table's columns (strings, as read from csv) and its metadata."""

    def summary(self) -> dict[str, Any]:
        """A few key numbers of the result (its one-line ``repr`` and notebook table)."""
        return {"columns": len(self.table())}

    def __repr__(self) -> str:
        return short_repr(type(self).__name__, self.summary())

    def _repr_html_(self) -> str:
        return html_summary(type(self).__name__, self.summary())

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row of :meth:`table`."""
        return table_rows(self.table())

    def to_pandas(self):
        """:meth:`table` as a ``pandas.DataFrame`` (pandas: ``pip install 'critwin[pandas]'``)."""
        return data_frame(self.table())

    def save(self, directory) -> None:
        """Write ``table.csv`` and ``metadata.json`` (atomically) into ``directory``.

        ``directory`` must be missing, empty or a critwin result of this kind (see
        :func:`~critwin.experiments.checkpoint.claim_directory`); anything else is refused untouched.
        """
        meta = self._saved_metadata()
        meta["kind"] = self.kind
        with claim_directory(directory, self.kind, "directory"):
            write_table(directory, self.table(), meta)

    @classmethod
    def load(cls, directory):
        """Read a result written by :meth:`save` of the same class.

        Raises
        ------
        FileNotFoundError if a file is missing; ValueError if ``directory`` holds another kind of result
        or a corrupt one (naming the file).
        """
        columns, meta = read_table(directory)
        if meta.get("kind") != cls.kind:
            raise ValueError(f"directory {directory} holds a {meta.get('kind')!r} result, not {cls.kind}")
        try:
            return cls._from_saved(columns, meta)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(
                f"{Path(directory) / TABLE_FILE} and {METADATA_FILE} do not form a valid {cls.kind} result "
                f"({detail}); the files are corrupt"
            ) from None


def at_edge(by_name: Mapping[str, Any]):
    """A result's public form of ``{name: value}`` (labels by feature, or search results): the value
    itself for a single-feature sweep (the one name :data:`~critwin.experiments.features.UNNAMED`),
    the mapping for several, None for none (no feature gave probabilities). Read back by
    :func:`by_feature`."""
    if not by_name:
        return None
    if set(by_name) == {UNNAMED}:
        return by_name[UNNAMED]
    return dict(by_name)


def by_feature(value) -> dict[str, Any]:
    """``{name: value}`` of a result's field in its public form (inverse of :func:`at_edge`)."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else {UNNAMED: value}


class FeatureLabels:
    """Mixin of the sweep results that may hold several features (``feature={name: f, ...}``).

    A single-feature result holds tensors in its ``_label_fields``; a multi-feature one holds
    ``{name: tensor}`` there, in the sweep's feature order, and :meth:`select` gives the single-feature
    result of one of them (what :func:`~critwin.experiments.estimation.estimate_window` reads). That
    is the public form (:func:`at_edge`); the methods read the fields as ``{name: tensor}``
    (:func:`by_feature`).
    """

    _label_fields: ClassVar[tuple[str, ...]]

    @property
    def feature_names(self) -> tuple[str, ...] | None:
        """The features' names, or None for a single-feature result."""
        names = tuple(by_feature(getattr(self, self._label_fields[0])))
        return None if names == (UNNAMED,) else names

    def _first(self, field: str) -> torch.Tensor:
        """The tensor of ``field`` (of the first feature for a multi-feature result: shapes only)."""
        return next(iter(by_feature(getattr(self, field)).values()))

    def _label_columns(self, *specs: tuple[str, str, Any]) -> dict[str, list]:
        """Table columns of labels, feature by feature: for each ``(column, field, rows)`` of ``specs``
        the column ``column[name]`` (plain ``column`` for a single feature) holding the flattened
        labels of ``field`` (indexed by ``rows`` unless None)."""
        fields = [(column, by_feature(getattr(self, field)), rows) for column, field, rows in specs]
        out = {}
        for name in fields[0][1]:
            for column, labels, rows in fields:
                values = labels[name].numpy().reshape(-1)
                out[labelled(column, name)] = (values if rows is None else values[rows]).tolist()
        return out

    def select(self, feature: str):
        """The single-feature result of ``feature`` (same times, sources, NFEs; labels of that feature)."""
        names = self.feature_names
        if names is None:
            raise ValueError("feature: this result has a single feature; select() picks one of several")
        if feature not in names:
            raise ValueError(f"feature must be one of {', '.join(names)}; got {feature!r}")
        values = {field: by_feature(getattr(self, field)).get(feature) for field in self._label_fields}
        meta = dict(self.metadata)
        recorded = meta.get("feature")
        meta["feature"] = recorded.get(feature, feature) if isinstance(recorded, dict) else feature
        meta["selected_feature"] = feature
        return dataclasses.replace(self, **values, metadata=meta)

    def _feature_summary(self) -> dict[str, Any]:
        """The agreement at the first and last time (one feature) or the features' names (several)."""
        names = self.feature_names
        if names is not None:
            return {"features": ", ".join(names)}
        agreement = self.agreement
        return {"agreement": (float(agreement[0]), float(agreement[-1]))}

    def _single(self, what: str) -> None:
        names = self.feature_names
        if names is not None:
            raise ValueError(
                f"{what} reads one feature, and this result has {len(names)} ({', '.join(names)}); "
                "use result.select(name)"
            )


def select_feature(result, feature: str | None):
    """``result`` itself (``feature`` None) or its single-feature part ``result.select(feature)``.

    Raises
    ------
    ValueError naming ``feature`` when a multi-feature result gets none, or a single-feature one a name.
    """
    names = getattr(result, "feature_names", None)
    if feature is None:
        if names is not None:
            listed = ", ".join(names)
            raise ValueError(f"feature: the result has several features ({listed}); pass feature=NAME")
        return result
    if names is None:
        raise ValueError(f"feature={feature!r} given, but the result has a single feature")
    return result.select(feature)


def feature_columns(columns: Mapping[str, list], column: str) -> dict[str, list]:
    """``{name: values}`` of the columns ``column[name]`` of a table, in table order (a single-feature
    table's plain ``column`` under :data:`~critwin.experiments.features.UNNAMED`)."""
    if column in columns:
        return {UNNAMED: columns[column]}
    prefix = column + "["
    return {k[len(prefix) : -1]: v for k, v in columns.items() if k.startswith(prefix) and k.endswith("]")}


def write_table(directory, columns: Mapping[str, list], metadata: Mapping[str, Any]) -> None:
    """Write ``table.csv`` (one row per measurement) and ``metadata.json`` atomically into ``directory``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory must be a directory, but {directory} is a file")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*columns.values(), strict=True):
        writer.writerow([_format(value) for value in row])
    # Replaced together: a full disk or a kill never leaves a new table beside old metadata.
    with atomic_paths(directory / TABLE_FILE, directory / METADATA_FILE) as (table, meta):
        table.write_text(buffer.getvalue())
        meta.write_text(json_text(json_normalised(dict(metadata))) + "\n")


def read_table(directory) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Read ``table.csv`` (columns of strings) and ``metadata.json`` from ``directory``."""
    directory = Path(directory)
    table, meta = directory / TABLE_FILE, directory / METADATA_FILE
    for path in (table, meta):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found (is {directory} a saved critwin result?)")
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise ValueError("it has no header row")
            columns: dict[str, list[str]] = {name: [] for name in header}
            for row in reader:
                for name, value in zip(header, row, strict=True):
                    columns[name].append(value)
    except (ValueError, csv.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{table} is not a critwin result table ({exc}); the file is corrupt") from None
    return columns, read_json(meta, "result metadata")


def table_rows(columns: Mapping[str, list]) -> list[dict[str, Any]]:
    """Column lists (as from ``table()``) -> one dict per row."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _format(value):
    if value is None:
        return ""
    if isinstance(value, float):
        # repr round-trips a float exactly; inf/nan are written as csv readers expect them.
        return repr(value) if math.isfinite(value) else str(value)
    return value


def result_metadata(settings: Mapping[str, Any], device=None, dtype=None) -> dict[str, Any]:
    """A result's metadata: its ``settings`` plus ``provenance`` (versions, device, dtype, UTC time, call)."""
    return {**settings, "provenance": provenance(device, dtype)}


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


def grid_columns(result, t_rep) -> dict[str, list]:
    """The grid columns of a forward–reverse or cloning table (t, requested_t, step, index) for rows at
    the time indices ``t_rep`` of ``result`` (its ``times``, ``requested_times``, ``steps``, ``indices``)."""
    steps = None if result.steps is None else result.steps.numpy()
    return {
        "t": result.times.numpy()[t_rep].tolist(),
        "requested_t": result.requested_times.numpy()[t_rep].tolist(),
        "step": step_column(steps, t_rep),
        "index": result.indices.numpy()[t_rep].tolist(),
    }
