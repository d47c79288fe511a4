"""The feature atlas: when each of several features is decided, measured and predicted.

``atlas(process, features, data=...)`` runs one forward–reverse sweep and one cloning sweep that read
every feature from the same outputs (``feature={name: f}``), and for each feature estimates the
commitment curve, t½ and the window with bootstrap CIs on one OU-time axis; the features are ordered
from first decided (largest t½: committed earliest in the reverse process) to last. Beside it, the
theory's prediction:

- a Gaussian mixture fitted to ``data`` with one component per combination of the attributes (the
  mean image of each combination, its frequency as weight) and **one shared isotropic variance** (the
  pooled within-combination variance per pixel). That is the model :func:`critwin.hierarchy` handles
  with ``method="fast"``: closed-form pairwise merge times and work in the span of the means, never a
  (d, d) matrix — full covariances of 3·H·W-pixel images are neither estimable from a few thousand
  images nor tractable for the exact tree;
- its ε-tree, each internal level labelled by the attribute that splits it (the attribute whose
  values are disjoint between the node's children; ``"mixed"`` when none is, the joint name ``a+b``
  when several are). A level's *merge time* is when its children's sub-mixtures have merged into it,
  ``max_child T_end(child, node)`` (``T_end(A, B) = inf{t : TV(p_t^A, p_t^B) <= eps}``, docs/theory.md §4:
  above it noising and denoising forgets which child a sample came from), with its bracket
  (:func:`critwin.theory.tree.merge_times`). The tree node's own time ``T_u`` (the largest merge time
  of two of its *components*) is only a sure upper bound on it (0.3–1 OU units later on the shipped
  shapes model) and is reported as ``t_bound``. An attribute's predicted decision time is the largest
  merge time of the levels it splits, with the bracket ``[max of lows, max of highs]``;
- orders, measured and predicted, follow one tie rule (:func:`critwin._stats.interval_order`): feature
  ``a`` is decided before ``b`` only where their intervals (t½ bootstrap intervals; merge brackets) are
  disjoint, "tied" otherwise;
- the like-for-like run: the same forward–reverse estimator, sources, OU times and readers on the
  fitted mixture with its exact sampler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._display import Table, axes, data_frame, html_summary, short_repr
from critwin._io import json_text, provenance
from critwin._stats import TIED, interval_order, order_text, order_verdict
from critwin._threads import using_threads
from critwin._validation import check_delta, check_eps, check_positive_int, check_seed
from critwin.diagnostics.atlas_theory import (
    MIXED,
    check_attribute_data,
    fit_attribute_mixture,
    theory_prediction,
    tree_levels,
)
from critwin.experiments.checkpoint import derive_seed
from critwin.experiments.cloning import CloneResult, clone
from critwin.experiments.estimation import ConstantFeatureError, WindowEstimate, estimate_window
from critwin.experiments.features import CallableFeature, feature_name
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.process import MixtureProcess, as_process, grid_times
from critwin.experiments.results import CLOCK_AXES

__all__ = ["atlas", "AtlasResult", "fit_attribute_mixture", "tree_levels", "MIXED", "TIED"]


@dataclass(repr=False)
class AtlasResult:
    """When each feature is decided: measurement, cloning and theory (see the module notes).

    Attributes
    ----------
    features : feature names, in the order given.
    estimates : {name: WindowEstimate} of the forward–reverse sweep (c(t), t½, window, bootstrap CIs).
    forward_reverse : the multi-feature :class:`ForwardReverseResult`.
    clone_estimates : {name: WindowEstimate} of the cloning sweep (susceptibility ``chi``, ``t_peak``),
        empty without cloning.  clone_result : the :class:`CloneResult` or None.
    theory : the fitted mixture's prediction (fit, ε, levels, per-attribute times and order) or None.
    like_for_like : {name: WindowEstimate} of the same estimator on the fitted mixture (exact sampler),
        empty without theory.
    metadata : settings and provenance.

    Examples
    --------
    What :func:`critwin.atlas` returns (see its example): "side" (x = ±5) is decided at a larger ``t``
    than "height" (y = ±1.5), and their t½ intervals do not overlap.

    >>> import torch, critwin
    >>> means = torch.tensor([[5.0, 1.5], [5.0, -1.5], [-5.0, 1.5], [-5.0, -1.5]], dtype=torch.float64)
    >>> mix = critwin.GaussianMixture(means)
    >>> features = {"side": lambda x: (x[:, 0] < 0).long(), "height": lambda x: (x[:, 1] < 0).long()}
    >>> process = critwin.MixtureProcess(mix, "exact", times=torch.linspace(4.0, 0.0, 41).tolist())
    >>> x0, _ = mix.sample(40, generator=torch.Generator().manual_seed(0))
    >>> result = critwin.atlas(
    ...     process, features, x0=x0, times=[0.2, 0.6, 1.0, 1.6, 2.4, 3.5], n_sources=40,
    ...     cloning=False, theory=False, n_boot=50, progress=False,
    ... )
    >>> result.order, result.overlaps(), type(result.forward_reverse).__name__
    (['side', 'height'], [], 'ForwardReverseResult')
    >>> {name: [round(end, 2) for end in ci] for name, ci in result.t_half_intervals().items()}
    {'side': [1.78, 2.02], 'height': [0.2, 0.86]}
    """

    features: tuple[str, ...]
    estimates: dict[str, WindowEstimate]
    forward_reverse: ForwardReverseResult
    clone_estimates: dict[str, WindowEstimate] = field(default_factory=dict)
    clone_result: CloneResult | None = None
    theory: dict[str, Any] | None = None
    like_for_like: dict[str, WindowEstimate] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        """Feature names from first decided (largest t½) to last; censored t½ sort at their end. Adjacent
        features whose t½ intervals overlap are tied (:meth:`overlaps`, :meth:`order_text`)."""
        return sorted(self.features, key=lambda name: -_sortable(self.estimates[name].t_half))

    def t_half_intervals(self) -> dict[str, tuple[float, float]]:
        """Each feature's t½ bootstrap interval (censored ends ``±inf``; NaN without bootstrap)."""
        return {name: tuple(self.estimates[name].t_half_ci) for name in self.features}

    def overlaps(self) -> list[tuple[str, str]]:
        """Adjacent features of :attr:`order` whose t½ bootstrap intervals overlap: tied, their order is
        not resolved (:func:`critwin._stats.interval_order`; NaN intervals, i.e. no bootstrap, tie)."""
        order, intervals = self.order, self.t_half_intervals()
        return [
            (first, second)
            for first, second in zip(order, order[1:], strict=False)
            if interval_order(intervals[first], intervals[second]) == 0
        ]

    def order_text(self) -> str:
        """The measured order as text, ``a > b ~ c``: ``~`` between adjacent tied features."""
        return order_text(self.order, self.t_half_intervals())

    def comparison(self) -> dict[str, Any] | None:
        """Measured order against the theory's, pair by pair, with one tie rule for both (an order is
        claimed only where the intervals are disjoint: t½ bootstrap intervals, merge-time brackets).

        Each pair's ``measured`` and ``predicted`` verdict is the feature decided first or
        :data:`TIED`; its ``status`` is ``"agree"`` (same verdict), ``"contradict"`` (opposite orders,
        both resolved) or ``"unresolved"`` (one side ties). ``agree``: every pair agrees;
        ``agree_within_ci``: no pair contradicts; ``differences``: the pairs that do not agree."""
        if self.theory is None:
            return None
        attributes = self.theory["attributes"]
        predicted = [name for name in self.theory["order"] if name in self.features]
        measured = [name for name in self.order if name in predicted]
        t_half = self.t_half_intervals()
        pairs = []
        for i, a in enumerate(measured):
            for b in measured[i + 1 :]:
                seen = order_verdict(a, b, t_half[a], t_half[b])
                expected = order_verdict(
                    a, b, attributes[a]["t_merge_bracket"], attributes[b]["t_merge_bracket"]
                )
                pairs.append(
                    {
                        "pair": [a, b],
                        "measured": seen,
                        "predicted": expected,
                        "status": _status(seen, expected),
                    }
                )
        return {
            "measured": measured,
            "predicted": predicted,
            "measured_text": order_text(measured, t_half),
            "predicted_text": order_text(predicted, {n: attributes[n]["t_merge_bracket"] for n in predicted}),
            "agree": all(p["status"] == "agree" for p in pairs),
            "agree_within_ci": all(p["status"] != "contradict" for p in pairs),
            "pairs": pairs,
            "differences": [p for p in pairs if p["status"] != "agree"],
            "unplaced": [name for name in self.features if name not in predicted],
        }

    def feature_dict(self, name: str) -> dict[str, Any]:
        """The numbers of one feature: measured window, cloning susceptibility, like for like, theory."""
        est = self.estimates[name]
        out = {
            "order": self.order.index(name) + 1,
            "t_half": est.t_half,
            "t_half_ci": list(est.t_half_ci),
            "t_after": est.t_after,
            "t_after_ci": list(est.t_after_ci),
            "t_before": est.t_before,
            "t_before_ci": list(est.t_before_ci),
            "b": est.b,
            "times": est.times.tolist(),
            "c": est.c.tolist(),
            "c_lower": est.c_lower.tolist(),
            "c_upper": est.c_upper.tolist(),
        }
        cloned = self.clone_estimates.get(name)
        if cloned is not None:
            chi = cloned.chi
            out["clone"] = {
                "t_half": cloned.t_half,
                "t_half_ci": list(cloned.t_half_ci),
                "t_peak": cloned.t_peak,
                "chi_max": None if chi is None or not np.isfinite(chi).any() else float(np.nanmax(chi)),
            }
        exact = self.like_for_like.get(name)
        if exact is not None:
            out["like_for_like"] = {"t_half": exact.t_half, "t_half_ci": list(exact.t_half_ci)}
        if self.theory is not None:
            theory = self.theory["attributes"].get(name, {})
            out["theory"] = {k: theory.get(k) for k in ("t_merge", "t_merge_bracket", "t_bound")}
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"features": {name: {...}}, "order": [...], "order_text", "overlaps": [...], "theory": {...},
        "comparison": {...}, "metadata": {...}}``; censored times as :func:`critwin._io.json_text`
        writes them."""
        return {
            "features": {name: self.feature_dict(name) for name in self.features},
            "order": self.order,
            "order_text": self.order_text(),
            "overlaps": [list(pair) for pair in self.overlaps()],
            "theory": self.theory,
            "comparison": self.comparison(),
            "metadata": self.metadata,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json_text(self.to_dict(), indent=indent)

    def table(self) -> Table:
        """One row per feature, in :attr:`order`: feature, order, t_half, t_after and t_before with their
        CIs, clone t_peak, like-for-like t_half with its CI, theory merge time with its bracket and the
        tree's bound.

        A :class:`~critwin._display.Table`: a dict of columns that prints as a table (each estimate with
        its interval, rounded to what the interval supports); :meth:`to_pandas` keeps the exact values.
        """
        rows = [(name, self.feature_dict(name)) for name in self.order]

        def nested(row, key, inner):
            return row.get(key, {}).get(inner) if isinstance(row.get(key), dict) else None

        return Table(
            {
                "feature": [name for name, _ in rows],
                "order": [row["order"] for _, row in rows],
                "t_half": [row["t_half"] for _, row in rows],
                "t_half_lo": [row["t_half_ci"][0] for _, row in rows],
                "t_half_hi": [row["t_half_ci"][1] for _, row in rows],
                **{
                    f"{key}{end}": [row[key] if i is None else row[f"{key}_ci"][i] for _, row in rows]
                    for key in ("t_after", "t_before")
                    for end, i in (("", None), ("_lo", 0), ("_hi", 1))
                },
                "clone_t_peak": [nested(row, "clone", "t_peak") for _, row in rows],
                "exact_t_half": [nested(row, "like_for_like", "t_half") for _, row in rows],
                **{
                    f"exact_t_half{end}": [
                        (nested(row, "like_for_like", "t_half_ci") or [None, None])[i] for _, row in rows
                    ]
                    for end, i in (("_lo", 0), ("_hi", 1))
                },
                "theory_t_merge": [nested(row, "theory", "t_merge") for _, row in rows],
                "theory_t_merge_lo": [
                    (nested(row, "theory", "t_merge_bracket") or [None])[0] for _, row in rows
                ],
                "theory_t_merge_hi": [
                    (nested(row, "theory", "t_merge_bracket") or [None, None])[1] for _, row in rows
                ],
                "theory_t_bound": [nested(row, "theory", "t_bound") for _, row in rows],
            }
        )

    def to_pandas(self):
        """:meth:`table` as a ``pandas.DataFrame``."""
        return data_frame(self.table())

    def summary(self) -> dict[str, Any]:
        out = {"order": self.order_text()}
        for name in self.order:  # t½ of each feature with its interval, first decided to last
            out[name], out[f"{name}_ci"] = self.estimates[name].t_half, self.estimates[name].t_half_ci
        comparison = self.comparison()
        if comparison is not None:
            out["theory order"] = comparison["predicted_text"]
        return out

    def __repr__(self) -> str:
        return short_repr("AtlasResult", self.summary())

    def _repr_html_(self) -> str:
        return html_summary("AtlasResult", self.summary())

    def plot(self, ax=None):
        """Every feature's normalised commitment ``r(t)`` on one OU axis with its Wilson band, t½ with its
        bootstrap interval, and above the curves one row per attribute of the theory: its merge time
        (dot) with its bracket (bar) and the tree's upper bound (open triangle), labelled in its row; the
        rows are spaced for their labels in the axes' height, the legend sits beside the axes.

        Returns
        -------
        The matplotlib Axes (a new figure's when ``ax`` is None).
        """
        ax = axes(ax)
        colours = {}
        for name in self.order:
            est = self.estimates[name]
            scale = 1 - est.b
            (line,) = ax.plot(est.times, est.r, "o-", ms=3, label=f"{name} (t½ {_fmt(est.t_half)})")
            colours[name] = line.get_color()
            ax.fill_between(
                est.times,
                (est.c_lower - est.b) / scale,
                (est.c_upper - est.b) / scale,
                color=line.get_color(),
                alpha=0.15,
            )
            if math.isfinite(est.t_half):
                lo, hi = (v if math.isfinite(v) else est.t_half for v in est.t_half_ci)
                ax.errorbar(
                    [est.t_half],
                    [0.5],
                    xerr=[[est.t_half - lo], [hi - est.t_half]],
                    fmt="D",
                    color=line.get_color(),
                    capsize=3,
                )
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        right = _theory_rows(ax, self.theory["attributes"], colours) if self.theory is not None else 0.0
        clock = self.metadata.get("clock", "ou")
        if clock == "ou":
            ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(0.0, max(ax.get_xlim()[1], 1.1 * right))  # every clock starts at 0; room for the bounds
        ax.set_xlabel(f"{CLOCK_AXES.get(clock, clock)} (reverse process runs right to left)")
        ax.set_ylabel("normalised commitment r(t)")
        # beside the axes: inside, it covered the r = 1/2 line or the bands
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
        return ax


def _sortable(t: float) -> float:
    return -math.inf if math.isnan(t) else t


def _status(measured: str, predicted: str) -> str:
    if measured == predicted:
        return "agree"
    return "unresolved" if TIED in (measured, predicted) else "contradict"


_ROW_BASE, _ROW_STEP = 1.12, 0.09  # theory rows above the curves (r <= 1), in r units (the least step)
_ROW_FONT = 8  # points: the rows' labels
_ROW_LEADING = 1.5  # a row's height in units of its label's font size


def _row_step(ax, n_rows: int) -> float:
    """The spacing of the theory rows in r units: at least :data:`_ROW_STEP`, and enough for one label
    per row (:data:`_ROW_LEADING` times :data:`_ROW_FONT`) in the axes' height; in a small figure a
    fixed step let the labels of adjacent rows overlap.

    With the rows' top at ``base + step (n - 1/2)`` and the axes ``H`` points tall from ``bottom``, a row
    is ``step H / (top - bottom)`` points tall; setting that to the label height ``g`` gives
    ``step = g (base - bottom) / (H - g (n - 1/2))``. ``H`` is the axes' height before layout, less 15%
    for what a constrained layout takes from it (titles, labels).
    """
    height = 0.85 * ax.get_position().height * ax.figure.get_figheight() * 72.0
    label = _ROW_LEADING * _ROW_FONT
    room = height - label * (n_rows - 0.5)
    bottom = min(ax.get_ylim()[0], 0.0)
    if room <= label:  # too many rows for this axes: one label's height per row at the least
        room = label
    return max(_ROW_STEP, label * (_ROW_BASE - bottom) / room)


def _theory_rows(ax, attributes: Mapping[str, Any], colours: Mapping[str, str]) -> float:
    """One row per attribute above the curves, first decided at the bottom: the merge time as a dot with
    its bracket as an error bar, the bound as an open triangle, the name left of the bracket. One row
    each, so neither the intervals nor the labels of two attributes can overlap. Returns the largest
    time drawn (0 if none)."""
    rows = [n for n, v in attributes.items() if v.get("t_merge") is not None and math.isfinite(v["t_merge"])]
    rows.sort(key=lambda n: -attributes[n]["t_merge"])
    bottom = ax.get_ylim()[0]
    step = _row_step(ax, len(rows))
    for k, name in enumerate(rows):
        info, y, colour = attributes[name], _ROW_BASE + step * k, colours.get(name, "black")
        t = info["t_merge"]
        lo, hi = (v if v is not None and math.isfinite(v) else t for v in info["t_merge_bracket"])
        first = k == 0
        ax.errorbar(
            [t],
            [y],
            xerr=[[t - lo], [hi - t]],
            fmt="o",
            ms=3,
            color=colour,
            elinewidth=2,
            capsize=3,
            label="theory: merge time, bracket" if first else None,
        )
        bound = info.get("t_bound")
        if bound is not None and math.isfinite(bound):
            ax.plot(
                [bound],
                [y],
                ">",
                mfc="none",
                color=colour,
                ms=5,
                label="theory: tree's upper bound" if first else None,
            )
        ax.annotate(
            name,
            (lo, y),
            xytext=(-6, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=_ROW_FONT,
            color=colour,
        )
    if rows:
        ax.axhline(0.5 * (1.0 + _ROW_BASE), color="0.75", lw=0.6)
        ax.set_ylim(min(bottom, 0.0), _ROW_BASE + step * (len(rows) - 0.5))
        ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    drawn = [v for n in rows for v in (attributes[n]["t_bound"], *attributes[n]["t_merge_bracket"])]
    return max((v for v in drawn if v is not None and math.isfinite(v)), default=0.0)


def _fmt(t: float) -> str:
    return f"{t:.3g}" if math.isfinite(t) else ("censored above" if t > 0 else "censored below")


# -------------------------------------------------------------------------------------------- atlas
def atlas(
    process,
    features: Mapping[str, Any],
    *,
    data=None,
    x0: torch.Tensor | None = None,
    times=None,
    n_times: int = 8,
    n_sources: int = 48,
    n_per_time: int = 2,
    n_trajectories: int = 32,
    n_clones: int = 2,
    clone_times=None,
    cloning: bool = True,
    theory: bool = True,
    eps: float = 0.1,
    delta: float = 0.1,
    n_boot: int = 200,
    seed: int = 0,
    progress: bool = True,
    threads: int | None = 1,
) -> AtlasResult:
    """Measure when each feature is decided and compare with the theory's prediction.

    Parameters
    ----------
    process : a ``ReverseProcess`` (e.g. :func:`critwin.models.shipped_process`) or a mixture.
    features : {name: feature} (callables ``f(x_data) -> (n,) labels`` or ``"bayes"``), read from the
        same outputs of one sweep.
    data : the data the theory is fitted to and the sources come from: an object with ``.images``
        (n, ...) and ``.attributes`` {name: (n,) long} (e.g. ``make_shapes(...)``) or such a pair. The
        theory uses the features that are attributes of ``data``.
    x0 : (N, ...) sources (default: the first ``n_sources`` images of ``data``).
    times : OU times of the forward–reverse sweep (default: ``n_times`` grid times spread in log-SNR).
    n_per_time : replicates per source and time.
    n_trajectories, n_clones, clone_times : the cloning sweep (default fork times: ``times`` > 0).
    cloning, theory : whether to run the cloning sweep / the theory (theory needs ``data``).
    eps : ε of the tree.  delta : window level.  n_boot : bootstrap replicates of every estimate.
    seed : base seed (forward–reverse, cloning and the like-for-like run get derived seeds).
    progress : progress bars (in a Jupyter notebook: HTML bars in the cell's output).
    threads : torch intra-op threads while the atlas runs (restored after; None: leave torch's setting).
        One keeps the work at its pace on a shared machine: with torch's default of one thread per core,
        every network layer waits at an OpenMP barrier for a thread another job holds (in a notebook,
        where OpenMP spin-waits, the shapes model then ran 23x slower on a loaded 2-core machine); see
        :mod:`critwin._threads`. The results do not depend on it.

    Returns
    -------
    AtlasResult

    Examples
    --------
    Four unit Gaussians: "side" (x = ±5) is decided before (at larger t than) "height" (y = ±1.5).

    >>> import torch, critwin
    >>> from critwin.experiments.process import MixtureProcess
    >>> means = torch.tensor([[5.0, 1.5], [5.0, -1.5], [-5.0, 1.5], [-5.0, -1.5]], dtype=torch.float64)
    >>> mix = critwin.GaussianMixture(means)
    >>> features = {"side": lambda x: (x[:, 0] < 0).long(), "height": lambda x: (x[:, 1] < 0).long()}
    >>> process = MixtureProcess(mix, "exact", times=torch.linspace(4.0, 0.0, 41).tolist())
    >>> x0, _ = mix.sample(40, generator=torch.Generator().manual_seed(0))
    >>> result = critwin.atlas(
    ...     process, features, x0=x0, times=[0.2, 0.6, 1.0, 1.6, 2.4, 3.5], n_sources=40,
    ...     cloning=False, theory=False, n_boot=50, progress=False,
    ... )
    >>> result
    AtlasResult(order=side > height, side=1.9 [1.8, 2.0], height=0.5 [0.2, 0.9])
    """
    if not isinstance(features, Mapping) or not features:
        raise ValueError("features must be a non-empty mapping name -> feature")
    eps, delta = check_eps(eps), check_delta(delta)
    seed = check_seed(seed)
    n_boot = check_positive_int(n_boot, "n_boot", minimum=0)
    threads = None if threads is None else check_positive_int(threads, "threads")
    with using_threads(threads):
        process = as_process(process, None)
        if data is not None:
            # An object or a pair, checked here (before any sweep); the theory reads its attributes below.
            data = (check_attribute_data(data, []).images, _attributes_of(data))
        if x0 is None:
            if data is None:
                raise ValueError("x0: give the sources (x0=) or data= to draw them from")
            x0 = data[0][: check_positive_int(n_sources, "n_sources")]
        if times is None:
            times = grid_times(process, check_positive_int(n_times, "n_times"))
        names = tuple(features)
        fr = forward_reverse(
            process,
            x0,
            times,
            n_per_time,
            feature=dict(features),
            seed=derive_seed(seed, "fr"),
            progress=progress,
        )
        estimates = feature_estimates(fr, names, delta, n_boot, seed)
        clone_result, clone_estimates = None, {}
        if cloning:
            forks = [t for t in fr.times.tolist() if t > 0] if clone_times is None else clone_times
            clone_result = clone(
                process,
                n_trajectories,
                forks,
                n_clones,
                feature=dict(features),
                seed=derive_seed(seed, "clone"),
                progress=progress,
            )
            clone_estimates = _clone_estimates(clone_result, names, delta, n_boot, seed)
        prediction, exact = None, {}
        if theory:
            if data is None:
                raise ValueError("data: the theory needs attribute-labelled data (or theory=False)")
            attributes = [name for name in names if name in _attribute_names(data)]
            if not attributes:
                raise ValueError(
                    f"data: none of the features ({', '.join(names)}) is an attribute of the data"
                )
            images, labels = check_attribute_data(data, attributes)
            prediction, gmm = theory_prediction(images, labels, eps)
            exact = _like_for_like(
                gmm,
                fr,
                x0,
                features,
                run_seed=derive_seed(seed, "exact"),
                delta=delta,
                n_boot=n_boot,
                boot_seed=seed,
                progress=progress,
            )
        metadata = _metadata(features, process, x0, fr, clone_result, seed=seed, n_per_time=n_per_time)
        metadata.update(n_clones=n_clones if cloning else None, delta=delta, n_boot=n_boot)
        return AtlasResult(
            features=names,
            estimates=estimates,
            forward_reverse=fr,
            clone_estimates=clone_estimates,
            clone_result=clone_result,
            theory=prediction,
            like_for_like=exact,
            metadata=metadata,
        )


def _metadata(features, process, x0, fr, clone_result, **settings) -> dict[str, Any]:
    """The atlas's settings, sweep sizes and NFEs, and provenance."""
    return {
        "features": {name: feature_name(f) for name, f in features.items()},
        "process": process.describe(),
        **settings,
        "n_sources": int(x0.shape[0]),
        "n_trajectories": None
        if clone_result is None
        else int(clone_result.source_ids.numel()) // clone_result.n_clones,
        "nfe": {"forward_reverse": fr.nfe, "clone": None if clone_result is None else clone_result.nfe},
        "provenance": provenance(),
    }


def feature_estimates(result, names, delta: float, n_boot: int, seed: int) -> dict:
    """Per feature of ``names``, the window estimate of the forward–reverse ``result`` (``n_boot``
    bootstrap replicates seeded with ``seed``)."""
    return {name: estimate_window(result, delta, n_boot=n_boot, seed=seed, feature=name) for name in names}


def _clone_estimates(result: CloneResult, names, delta: float, n_boot: int, seed: int) -> dict:
    """Per feature, the cloning estimate (susceptibility); a feature whose trajectories all end with one
    label (base rate 1: nothing to estimate) is left out."""
    out = {}
    for name in names:
        try:
            out[name] = estimate_window(
                result, delta, n_boot=n_boot, seed=seed, per_class=False, feature=name
            )
        except ConstantFeatureError:
            pass
    return out


def _attribute_names(data: tuple) -> set[str]:
    return set(data[1])


def _attributes_of(data) -> Mapping:
    """The attribute mapping of checked ``data`` (an object with ``.attributes`` or a pair)."""
    return data.attributes if hasattr(data, "attributes") else data[1]


def _like_for_like(gmm, fr, x0, features, *, run_seed, delta, n_boot, boot_seed, progress) -> dict:
    """The same forward–reverse estimator, sources, realised OU times and readers on the fitted mixture
    with its exact sampler (its grid is made of the measured times, so nothing is rounded)."""
    times = sorted(set(fr.times.tolist()))
    process = MixtureProcess(gmm, "exact", times=[t for t in times[::-1] if t > 0] + [0.0])
    shape = tuple(x0.shape[1:])
    flat = x0.reshape(x0.shape[0], -1).to(torch.float64)
    readers = {name: _on_images(f, shape) for name, f in features.items()}
    result = forward_reverse(
        process, flat, times, fr.n_per_time, feature=readers, seed=run_seed, progress=progress
    )
    return feature_estimates(result, features, delta, n_boot, boot_seed)


def _on_images(feature, shape):
    """``feature`` read on flat mixture samples reshaped to the images' ``shape`` (in float32)."""
    if isinstance(feature, str):
        return feature
    return CallableFeature(
        lambda x: feature(x.reshape(x.shape[0], *shape).float()), name=feature_name(feature)
    )
