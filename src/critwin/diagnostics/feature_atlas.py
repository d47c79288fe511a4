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
  when several are) and its merge time; an attribute's predicted decision time is the largest merge
  time of the levels it splits;
- the like-for-like run: the same forward–reverse estimator, sources, OU times and readers on the
  fitted mixture with its exact sampler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from critwin._display import axes, data_frame, html_summary, short_repr
from critwin._io import json_text, provenance
from critwin._validation import (
    check_delta,
    check_eps,
    check_finite,
    check_labels,
    check_positive_int,
    check_seed,
)
from critwin.experiments.checkpoint import derive_seed
from critwin.experiments.cloning import CloneResult, clone
from critwin.experiments.estimation import ConstantFeatureError, WindowEstimate, estimate_window
from critwin.experiments.features import CallableFeature, feature_name
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.process import MixtureProcess, as_process, grid_times
from critwin.mixtures import GaussianMixture
from critwin.theory.tree import Tree, hierarchy

__all__ = ["atlas", "AtlasResult", "fit_attribute_mixture", "tree_levels", "MIXED"]

MIXED = "mixed"
"""Label of a tree level that no single attribute splits."""


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
        """Feature names from first decided (largest t½) to last; censored t½ sort at their end."""
        return sorted(self.features, key=lambda name: -_sortable(self.estimates[name].t_half))

    def overlaps(self) -> list[tuple[str, str]]:
        """Adjacent features of :attr:`order` whose t½ bootstrap intervals overlap (order not resolved)."""
        order = self.order
        out = []
        for first, second in zip(order, order[1:], strict=False):
            lo_first = self.estimates[first].t_half_ci[0]
            hi_second = self.estimates[second].t_half_ci[1]
            if not (lo_first > hi_second):  # NaN intervals (no bootstrap) count as overlapping
                out.append((first, second))
        return out

    def comparison(self) -> dict[str, Any] | None:
        """Measured order against the theory's: agreement, and for each pair ordered differently whether
        the measurement resolves it (disjoint t½ intervals) — an explained difference — or not."""
        if self.theory is None:
            return None
        predicted = [name for name in self.theory["order"] if name in self.features]
        measured = [name for name in self.order if name in predicted]
        unresolved = {frozenset(pair) for pair in self.overlaps()}
        pairs = []
        for i, a in enumerate(measured):
            for b in measured[i + 1 :]:
                if predicted.index(a) > predicted.index(b):
                    ci_a, ci_b = self.estimates[a].t_half_ci, self.estimates[b].t_half_ci
                    resolved = frozenset((a, b)) not in unresolved and ci_a[0] > ci_b[1]
                    pairs.append({"measured_first": a, "predicted_first": b, "resolved": bool(resolved)})
        return {
            "measured": measured,
            "predicted": predicted,
            "agree": measured == predicted,
            "agree_within_ci": all(not p["resolved"] for p in pairs),
            "differences": pairs,
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
            out["theory_t_merge"] = self.theory["attributes"].get(name, {}).get("t_merge")
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"features": {name: {...}}, "order": [...], "overlaps": [...], "theory": {...},
        "comparison": {...}, "metadata": {...}}``; censored times as :func:`critwin._io.json_text`
        writes them."""
        return {
            "features": {name: self.feature_dict(name) for name in self.features},
            "order": self.order,
            "overlaps": [list(pair) for pair in self.overlaps()],
            "theory": self.theory,
            "comparison": self.comparison(),
            "metadata": self.metadata,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json_text(self.to_dict(), indent=indent)

    def table(self) -> dict[str, list]:
        """One row per feature, in :attr:`order`: feature, order, t_half and its CI, t_after, t_before,
        clone t_peak, like-for-like t_half, theory t_merge."""
        rows = [(name, self.feature_dict(name)) for name in self.order]

        def nested(row, key, inner):
            return row.get(key, {}).get(inner) if isinstance(row.get(key), dict) else None

        return {
            "feature": [name for name, _ in rows],
            "order": [row["order"] for _, row in rows],
            "t_half": [row["t_half"] for _, row in rows],
            "t_half_lo": [row["t_half_ci"][0] for _, row in rows],
            "t_half_hi": [row["t_half_ci"][1] for _, row in rows],
            "t_after": [row["t_after"] for _, row in rows],
            "t_before": [row["t_before"] for _, row in rows],
            "clone_t_peak": [nested(row, "clone", "t_peak") for _, row in rows],
            "exact_t_half": [nested(row, "like_for_like", "t_half") for _, row in rows],
            "theory_t_merge": [row.get("theory_t_merge") for _, row in rows],
        }

    def to_pandas(self):
        """:meth:`table` as a ``pandas.DataFrame``."""
        return data_frame(self.table())

    def summary(self) -> dict[str, Any]:
        out = {"order": " > ".join(self.order)}
        out.update({name: self.estimates[name].t_half for name in self.order})
        comparison = self.comparison()
        if comparison is not None:
            out["theory order"] = " > ".join(comparison["predicted"])
        return out

    def __repr__(self) -> str:
        return short_repr("AtlasResult", self.summary())

    def _repr_html_(self) -> str:
        return html_summary("AtlasResult", self.summary())

    def plot(self, ax=None):
        """Every feature's normalised commitment ``r(t)`` on one OU axis with its Wilson band, t½ with its
        bootstrap interval, and the theory's merge times as ticks on the top edge.

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
        if self.theory is not None:
            for name, info in self.theory["attributes"].items():
                t = info.get("t_merge")
                if t is not None and math.isfinite(t):
                    ax.axvline(t, ymin=0.93, ymax=1.0, color=colours.get(name, "black"), lw=2.5)
                    ax.annotate(
                        name,
                        (t, 1.0),
                        xycoords=("data", "axes fraction"),
                        fontsize="x-small",
                        rotation=60,
                        va="bottom",
                    )
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0.0)  # OU time is >= 0
        ax.set_xlabel("OU time t (reverse process runs right to left)")
        ax.set_ylabel("normalised commitment r(t)")
        ax.legend(loc="lower left", fontsize="small")
        return ax


def _sortable(t: float) -> float:
    return -math.inf if math.isnan(t) else t


def _fmt(t: float) -> str:
    return f"{t:.3g}" if math.isfinite(t) else ("censored above" if t > 0 else "censored below")


# ------------------------------------------------------------------------------------------- theory
class AttributeData(NamedTuple):
    """Checked attribute-labelled data: ``images`` (n, ...) and ``attributes`` ``{name: (n,) long}``."""

    images: torch.Tensor
    attributes: dict[str, torch.Tensor]


def check_attribute_data(data, names) -> AttributeData:
    """The images and the attributes ``names`` (those the theory needs) of ``data``: an object with
    ``.images`` and ``.attributes``, or such a pair."""
    if hasattr(data, "attributes") and hasattr(data, "images"):
        images, attributes = data.images, data.attributes
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, attributes = data
    else:
        raise ValueError(
            "data must have .images and .attributes (e.g. make_shapes(...)) or be a pair (images, "
            f"attributes), got {type(data).__name__}"
            + (f" of {len(data)} items" if isinstance(data, (tuple, list)) else "")
        )
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or not images.is_floating_point():
        raise ValueError("data: images must be a floating-point tensor (n, ...)")
    check_finite(images, "data: images")
    if not isinstance(attributes, Mapping):
        raise ValueError("data: attributes must be a mapping name -> (n,) integer labels")
    out = {}
    for name in names:
        if name not in attributes:
            raise ValueError(f"data: attributes has no {name!r}; it has {', '.join(map(repr, attributes))}")
        expected = f"data: attribute {name!r} must hold (n,) = ({images.shape[0]},) integer labels >= 0"
        try:
            labels = check_labels(attributes[name], "labels")
        except ValueError as exc:
            raise ValueError(f"{expected} ({exc})") from None
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{expected}, got shape {tuple(torch.as_tensor(attributes[name]).shape)}")
        out[name] = labels
    return AttributeData(images, out)


def fit_attribute_mixture(
    images, attributes: Mapping[str, torch.Tensor]
) -> tuple[GaussianMixture, torch.Tensor]:
    """One Gaussian per observed combination of ``attributes`` with one shared isotropic variance.

    Parameters
    ----------
    images : (n, ...) data.  attributes : {name: (n,) long} (at least one).

    Returns
    -------
    mixture : ``GaussianMixture`` (K, d) float64: combination means, ``sigma^2`` = pooled
        within-combination variance per coordinate, weights = combination frequencies.
    combos : (K, A) long attribute values of each component (columns in the order of ``attributes``).
    """
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    values = torch.stack([attributes[name] for name in attributes], 1)
    combos, inverse, counts = torch.unique(values, dim=0, return_inverse=True, return_counts=True)
    K, (n, d) = combos.shape[0], flat.shape
    if n <= K:
        raise ValueError(f"data: {n} images cannot fit {K} attribute combinations (need more images)")
    means = torch.zeros(K, d, dtype=torch.float64).index_add_(0, inverse, flat) / counts[:, None]
    residual = ((flat - means[inverse]) ** 2).sum()
    variance = float(residual) / ((n - K) * d)
    if not variance > 0:
        raise ValueError("data: the images do not vary within attribute combinations (variance 0)")
    weights = counts.to(torch.float64) / n
    return GaussianMixture(means, torch.full((K,), variance, dtype=torch.float64), weights), combos


def tree_levels(tree: Tree, combos: torch.Tensor, names) -> list[dict[str, Any]]:
    """Every internal node of ``tree`` as a level: its merge time, depth, size and the attribute that
    splits it (values pairwise disjoint between its children; :data:`MIXED` if none, ``a+b`` if several)."""
    levels = []

    def visit(node, depth):
        if node.is_leaf:
            return
        splits = []
        for a, name in enumerate(names):
            seen: set[int] = set()
            disjoint = True
            for child in node.children:
                child_values = set(combos[child.components, a].tolist())
                disjoint = disjoint and not (child_values & seen)
                seen |= child_values
            if disjoint:
                splits.append(name)
        levels.append(
            {
                "time": node.time,
                "depth": depth,
                "components": len(node.components),
                "children": len(node.children),
                "attribute": "+".join(splits) if splits else MIXED,
                "separated": node.separated,
            }
        )
        for child in node.children:
            visit(child, depth + 1)

    visit(tree.root, 0)
    return levels


def theory_prediction(images, attributes, eps: float) -> tuple[dict[str, Any], GaussianMixture]:
    """The fitted mixture's ε-tree read attribute by attribute (see the module notes)."""
    gmm, combos = fit_attribute_mixture(images, attributes)
    names = list(attributes)
    # Not collapsed: every merge of the complete linkage is a level, whether or not the node passes the
    # strict separation check (TV >= 1 - eps^2), which is recorded per level.
    tree = hierarchy(gmm, eps, method="fast", windows=False, collapse=False)
    levels = tree_levels(tree, combos, names)
    per_attribute = {}
    for name in names:
        times = [lv["time"] for lv in levels if name in lv["attribute"].split("+")]
        per_attribute[name] = {"t_merge": max(times) if times else None, "levels": len(times)}
    order = sorted(
        (n for n in names if per_attribute[n]["t_merge"] is not None),
        key=lambda n: -per_attribute[n]["t_merge"],
    )
    theory = {
        "fit": "one Gaussian per attribute combination, shared isotropic variance (pooled within)",
        "components": int(gmm.n_components),
        "dim": int(gmm.dim),
        "variance": float(gmm.covs[0]),
        "eps": eps,
        "levels": levels,
        "attributes": per_attribute,
        "order": order,
    }
    return theory, gmm


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
    progress: bool = False,
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
    progress : progress bars.

    Returns
    -------
    AtlasResult
    """
    if not isinstance(features, Mapping) or not features:
        raise ValueError("features must be a non-empty mapping name -> feature")
    eps, delta = check_eps(eps), check_delta(delta)
    seed = check_seed(seed)
    n_boot = check_positive_int(n_boot, "n_boot", minimum=0)
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
    estimates = {name: estimate_window(fr, delta, n_boot=n_boot, seed=seed, feature=name) for name in names}
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
            raise ValueError(f"data: none of the features ({', '.join(names)}) is an attribute of the data")
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
    return {
        name: estimate_window(result, delta, n_boot=n_boot, seed=boot_seed, feature=name) for name in features
    }


def _on_images(feature, shape):
    """``feature`` read on flat mixture samples reshaped to the images' ``shape`` (in float32)."""
    if isinstance(feature, str):
        return feature
    return CallableFeature(
        lambda x: feature(x.reshape(x.shape[0], *shape).float()), name=feature_name(feature)
    )
