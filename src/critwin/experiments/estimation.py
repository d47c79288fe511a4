"""Window estimates from forward–reverse or cloning results (docs/theory.md §5).

From the per-sample outcomes ("kept": output feature equals the source's / trajectory's own):

- commitment curve ``c(t)`` with Wilson confidence intervals;
- base rate ``b``: the value of ``c`` once the feature is forgotten (``sum_k p_k q_k`` with ``p`` the
  source label frequencies and ``q`` the model's label frequencies; for cloning ``sum_k q_k^2``);
- normalised ``r(t) = (c(t) - b) / (1 - b)`` and its non-increasing isotonic fit (pool adjacent
  violators, weighted by sample counts);
- window endpoints: ``t_after`` where the fit crosses ``1 - delta`` (below it the feature is kept) and
  ``t_before`` where it crosses ``delta`` (above it the feature is forgotten), plus ``t_half`` (r = 1/2,
  the commitment time) — linear interpolation between grid points, cluster-bootstrap percentile CIs
  (resampling sources / trajectories, because the replicates of one source are correlated);
- Blink's steepest-jump rule on the raw curve, a per-class breakdown, and the susceptibility
  (between-source variance of the keep probability, which peaks inside the window; Sclocchi et al.).

A crossing outside the measured times is reported as ``-inf`` (already below the level at the
smallest time) or ``+inf`` (still above it at the largest time): censored, never extrapolated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from critwin._display import axes, data_frame, html_summary, short_repr
from critwin._io import provenance
from critwin._validation import (
    check_delta,
    check_eps,
    check_labels,
    check_number,
    check_positive_int,
    check_seed,
)
from critwin.experiments.curve_stats import (
    crossing_time,
    isotonic_decreasing,
    percentile_interval,
    wilson_interval,
)
from critwin.experiments.results import CLOCK_AXES, select_feature

__all__ = [
    "wilson_interval",
    "percentile_interval",
    "ConstantFeatureError",
    "isotonic_decreasing",
    "crossing_time",
    "jump_rule",
    "base_rate",
    "commitment_curve",
    "estimate_window",
    "susceptibility",
    "Susceptibility",
    "CommitmentCurve",
    "WindowEstimate",
]


class ConstantFeatureError(ValueError):
    """The estimated base rate is 1: every sample has the same feature label, so the feature has no
    window to estimate (pass ``base_rate=`` to estimate with a known one). A ValueError, so the CLI
    reports it as any bad input; callers that skip such features catch this type, never the text."""


BOOTSTRAP_SEED = 0
"""Seed of :func:`estimate_window`'s bootstrap when neither ``generator`` nor ``seed`` is given."""


def jump_rule(times, curve, jump: float = 0.5, elsewhere: float = 0.3) -> dict[str, Any]:
    """Blink's rule: a drop of more than ``jump`` between adjacent grid points, none above ``elsewhere``.

    Returns
    -------
    dict with ``t_lo``, ``t_hi`` (the adjacent times of the largest drop), ``size`` (the drop) and
    ``passes`` (whether the curve has a critical window by this rule).
    """
    t = np.asarray(times, dtype=float)
    c = np.asarray(curve, dtype=float)
    if t.size < 2:
        return {"t_lo": math.nan, "t_hi": math.nan, "size": math.nan, "passes": False}
    drops = c[:-1] - c[1:]
    k = int(np.argmax(drops))
    others = np.delete(drops, k)
    passes = bool(drops[k] > jump and (others.size == 0 or np.all(others <= elsewhere)))
    return {"t_lo": float(t[k]), "t_hi": float(t[k + 1]), "size": float(drops[k]), "passes": passes}


def base_rate(source_labels, model_labels) -> float:
    """``b = sum_k p_k q_k``: agreement of a source label with an independent model label.

    Parameters
    ----------
    source_labels : (M,) labels of the sources (their frequencies p).
    model_labels : (R,) labels of samples from the model (frequencies q).
    """
    p = _frequencies(source_labels)
    q = _frequencies(model_labels)
    return float(sum(p[k] * q.get(k, 0.0) for k in p))


def _frequencies(labels) -> dict[int, float]:
    values = np.asarray(torch.as_tensor(labels).reshape(-1).numpy())
    if values.size == 0:
        raise ValueError("labels must be non-empty")
    keys, counts = np.unique(values, return_counts=True)
    return {int(k): float(c) / values.size for k, c in zip(keys, counts, strict=True)}


@dataclass
class CommitmentCurve:
    """``c(t)`` on increasing times with Wilson intervals: arrays of shape (T,)."""

    times: np.ndarray
    c: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: np.ndarray

    def __repr__(self) -> str:
        ends = {
            "times": int(self.times.size),
            "t": [self.times[0], self.times[-1]],
            "c": [self.c[0], self.c[-1]],
        }
        return short_repr("CommitmentCurve", ends)


@dataclass(repr=False)
class WindowEstimate:
    """A window estimate (times sorted increasingly; all arrays (T,)).

    Attributes
    ----------
    times, c, c_lower, c_upper, n : the commitment curve and its Wilson intervals.
    b : base rate used.  r : normalised curve.  r_fit : its non-increasing isotonic fit.
    delta : level.  t_after, t_before, t_half : crossings of ``1 - delta``, ``delta``, ``1/2``.
    t_after_ci, t_before_ci, t_half_ci : bootstrap percentile intervals (``level``).
    jump : Blink's jump rule on ``c``.  per_class : {label: WindowEstimate} breakdown by source class.
    chi : susceptibility curve (None if fewer than 2 replicates per source).  t_peak : its argmax.
    metadata : provenance (:func:`critwin._io.provenance`) and the bootstrap seed.

    Examples
    --------
    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> x0, _ = mix.subset([0]).sample(200, generator=torch.Generator().manual_seed(0))
    >>> res = critwin.forward_reverse(
    ...     mix, x0, [0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0], feature="component", sampler="exact", seed=0,
    ...     progress=False,
    ... )
    >>> est = critwin.estimate_window(res, n_boot=100)
    >>> est.status, round(est.t_half, 2), [round(end, 2) for end in est.t_half_ci]
    ('non-empty', 1.72, [1.53, 2.0])
    """

    times: np.ndarray
    c: np.ndarray
    c_lower: np.ndarray
    c_upper: np.ndarray
    n: np.ndarray
    b: float
    r: np.ndarray
    r_fit: np.ndarray
    delta: float
    t_after: float
    t_before: float
    t_half: float
    t_after_ci: tuple[float, float]
    t_before_ci: tuple[float, float]
    t_half_ci: tuple[float, float]
    jump: dict[str, Any]
    level: float = 0.95
    n_boot: int = 0
    per_class: dict[int, WindowEstimate] = field(default_factory=dict)
    chi: np.ndarray | None = None
    t_peak: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The key numbers: level, base rate, endpoints and t½ with their intervals, number of times."""
        return {
            "clock": self.clock,
            "delta": self.delta,
            "b": self.b,
            "t_after": self.t_after,
            "t_after_ci": self.t_after_ci,
            "t_before": self.t_before,
            "t_before_ci": self.t_before_ci,
            "t_half": self.t_half,
            "t_half_ci": self.t_half_ci,
            "status": self.status,
            "n_times": int(self.times.size),
        }

    @property
    def clock(self) -> str:
        """The clock of :attr:`times` (``"ou"``, or ``"kappa"``/``"hidden"`` for token processes)."""
        return self.metadata.get("clock", "ou")

    def __repr__(self) -> str:
        return short_repr("WindowEstimate", self.summary())

    def _repr_html_(self) -> str:
        return html_summary("WindowEstimate", self.summary())

    def to_pandas(self):
        """The curves as a ``pandas.DataFrame``, one row per time: t, c, c_lower, c_upper, n, r, r_fit,
        chi."""
        chi = self.chi if self.chi is not None else np.full(self.times.shape, np.nan)
        columns = {"t": self.times, "c": self.c, "c_lower": self.c_lower, "c_upper": self.c_upper}
        return data_frame({**columns, "n": self.n, "r": self.r, "r_fit": self.r_fit, "chi": chi})

    def plot(self, ax=None):
        """Normalised curve ``r(t)``, its isotonic fit, the levels ``1 - delta``/``delta`` and the window.

        Returns
        -------
        The matplotlib Axes (a new figure's when ``ax`` is None).
        """
        ax = axes(ax)
        ax.plot(self.times, self.r, "o", ms=3, label="r(t) measured")
        ax.plot(self.times, self.r_fit, "-", label="isotonic fit")
        for level in (1 - self.delta, self.delta):
            ax.axhline(level, color="grey", lw=0.8, ls=":")
        if not self.empty:
            ax.axvspan(self.t_after, self.t_before, color="tab:orange", alpha=0.2, label="window")
        ax.set_xlabel(CLOCK_AXES.get(self.clock, self.clock))
        ax.set_ylabel("normalised commitment r(t)")
        ax.legend(loc="best", fontsize="small")
        return ax

    @property
    def status(self) -> str:
        """``"non-empty"``, or ``"empty"`` when the fit never passes from above ``1 - delta`` to below
        ``delta`` inside the measured range (an endpoint is censored: widen the range of times)."""
        return "non-empty" if math.isfinite(self.t_after) and math.isfinite(self.t_before) else "empty"

    @property
    def empty(self) -> bool:
        """Alias of ``status == "empty"``."""
        return self.status == "empty"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary: censored (infinite) endpoints keep their direction through
        :func:`critwin._io.json_text` (``{"value": null, "censored": "below"|"above"}``)."""
        out = {
            "times": self.times.tolist(),
            "c": self.c.tolist(),
            "c_lower": self.c_lower.tolist(),
            "c_upper": self.c_upper.tolist(),
            "n": self.n.tolist(),
            "b": self.b,
            "r": self.r.tolist(),
            "r_fit": self.r_fit.tolist(),
            "delta": self.delta,
            "level": self.level,
            "n_boot": self.n_boot,
            "t_after": self.t_after,
            "t_before": self.t_before,
            "t_half": self.t_half,
            "t_after_ci": list(self.t_after_ci),
            "t_before_ci": list(self.t_before_ci),
            "t_half_ci": list(self.t_half_ci),
            "status": self.status,
            "jump": self.jump,
            "chi": None if self.chi is None else self.chi.tolist(),
            "t_peak": self.t_peak,
            "metadata": self.metadata,
        }
        out["per_class"] = {str(k): v.to_dict() for k, v in self.per_class.items()}
        return out


class _Outcomes(NamedTuple):
    """The per-sample outcomes of a forward–reverse or cloning result, times sorted increasingly.

    ``kept`` (T, M) bool: a column's output kept its source's (trajectory's) label; ``clusters`` (M,)
    the source or trajectory of every column (the bootstrap resamples them); ``classes`` (M,) its
    label; ``own`` (N,) the trajectories' own labels (cloning) or None.
    """

    times: np.ndarray
    kept: np.ndarray
    clusters: np.ndarray
    classes: np.ndarray
    own: np.ndarray | None
    is_clone: bool

    @property
    def order(self) -> np.ndarray:
        return np.argsort(self.times, kind="stable")

    def columns(self, chosen: np.ndarray) -> _Outcomes:
        """The outcomes of the columns ``chosen`` (a boolean mask over the M columns)."""
        return self._replace(
            kept=self.kept[:, chosen], clusters=self.clusters[chosen], classes=self.classes[chosen]
        )


def _outcomes(result) -> _Outcomes:
    """The result's outcomes, its rows sorted by time (stable)."""
    if hasattr(result, "clone_labels"):
        own = result.own_labels.numpy()
        clusters = result.source_ids.numpy()
        found = _Outcomes(result.times.numpy(), result.kept().numpy(), clusters, own[clusters], own, True)
    elif hasattr(result, "labels") and hasattr(result, "source_labels"):
        source = np.asarray(result.source_labels)
        source = source[0] if source.ndim == 2 else source
        kept = result.labels.numpy() == source[None, :]
        found = _Outcomes(result.times.numpy(), kept, result.source_ids.numpy(), source, None, False)
    else:
        raise ValueError(f"result must be a ForwardReverseResult or CloneResult, got {type(result).__name__}")
    order = found.order
    return found._replace(times=found.times[order], kept=found.kept[order])


def commitment_curve(result, level: float = 0.95, *, feature: str | None = None) -> CommitmentCurve:
    """c(t) (sorted by time) with Wilson intervals from a forward–reverse or cloning result (of the
    feature ``feature`` of a multi-feature result).

    Examples
    --------
    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> x0, _ = mix.subset([0]).sample(200, generator=torch.Generator().manual_seed(0))
    >>> res = critwin.forward_reverse(
    ...     mix, x0, [2.0, 0.5], feature="component", sampler="exact", seed=0, progress=False
    ... )
    >>> curve = critwin.commitment_curve(res)
    >>> curve.times.tolist(), curve.n.tolist()  # sorted by time
    ([0.5, 2.0], [200, 200])
    >>> bool(((curve.lower <= curve.c) & (curve.c <= curve.upper)).all())  # 95% Wilson intervals
    True
    """
    found = _outcomes(select_feature(result, feature))
    k = found.kept.sum(1)
    n = np.full(k.shape, found.kept.shape[1])
    lower, upper = wilson_interval(k, n, level)
    return CommitmentCurve(times=found.times, c=k / n, lower=lower, upper=upper, n=n)


def estimate_window(
    result,
    delta: float = 0.1,
    base_rate: float | None = None,
    reference_labels=None,
    n_boot: int = 200,
    level: float = 0.95,
    per_class: bool = True,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    feature: str | None = None,
) -> WindowEstimate:
    """Window estimate with bootstrap CIs from a forward–reverse or cloning result.

    Deterministic: the same call gives the same estimate every time. The bootstrap draws from
    ``generator`` if given, else from ``seed``, else from the fixed seed :data:`BOOTSTRAP_SEED` (0).

    Parameters
    ----------
    result : :class:`ForwardReverseResult` or :class:`CloneResult`.
    delta : level in (0, 1/2): the window is where the isotonic fit of r passes from ``1 - delta``
        down to ``delta``.
    base_rate : known base rate ``b`` in [0, 1). Default: estimated — for cloning
        ``sum_k q_k^2`` from the trajectories' own labels (unbiased pair estimate); for forward–reverse
        ``sum_k p_k q_k`` with ``q`` from ``reference_labels`` (labels of model samples) or, if absent,
        from the outputs at the largest time (assumes that time is past the window).
    reference_labels : (R,) labels of samples drawn from the model, for ``q``.
    n_boot : bootstrap replicates (0: no CIs).
    level : confidence level of the Wilson and bootstrap intervals.
    per_class : also estimate per source class (with ``b_k = q_k``).
    generator : for the bootstrap (one draw from it seeds the bootstrap).
    seed : bootstrap seed when no ``generator`` is given (default :data:`BOOTSTRAP_SEED`).
    feature : with a multi-feature result (``feature={name: f}`` in the sweep), the name of the feature
        to estimate (required there; the estimate is that of ``result.select(feature)``).

    Returns
    -------
    WindowEstimate

    Examples
    --------
    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> x0, _ = mix.subset([0]).sample(200, generator=torch.Generator().manual_seed(0))
    >>> times = [0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
    >>> res = critwin.forward_reverse(
    ...     mix, x0, times, feature="component", sampler="exact", seed=0, progress=False
    ... )
    >>> critwin.estimate_window(res, n_boot=100)
    WindowEstimate(clock=ou, delta=0.1, b=0.45, t_after=0.9 [0.8, 1.0], t_before=3.5 [2.8, 3.7], ...)
    """
    result = select_feature(result, feature)
    seed = None if seed is None else check_seed(seed)
    delta = check_delta(delta)
    level = check_eps(level, "level")
    n_boot = check_positive_int(n_boot, "n_boot", minimum=0)
    if base_rate is not None:
        base_rate = check_number(base_rate, "base_rate", low=0.0, high=1.0, closed="low")
    found = _outcomes(result)
    model_labels = _model_labels(result, reference_labels, found)
    if generator is not None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    seed = BOOTSTRAP_SEED if seed is None else seed
    settings = _Settings(delta=delta, n_boot=n_boot, level=level, rng=np.random.default_rng(seed))
    estimate = _estimate(found, model_labels, base_rate, settings)
    if per_class:
        estimate.per_class = _per_class(found, model_labels, base_rate, settings)
    clock = getattr(result, "metadata", {}).get("clock", "ou")
    estimate.metadata = {"bootstrap_seed": seed, "clock": clock, "provenance": provenance()}
    for sub in estimate.per_class.values():
        sub.metadata = {"clock": clock}
    chi = susceptibility(result)
    if chi is not None:
        estimate.chi = chi.chi
        estimate.t_peak = float(chi.times[int(np.nanargmax(chi.chi))]) if np.isfinite(chi.chi).any() else None
    return estimate


class _ModelLabels(NamedTuple):
    """Labels of model samples for the base rate's ``q``: ``kind`` says where they come from
    (``"reference"`` samples, the trajectories' ``"own"`` labels, the outputs at the ``"largest_time"``)."""

    kind: str
    labels: np.ndarray


class _Settings(NamedTuple):
    """What every estimate of one call shares: the level ``delta``, bootstrap replicates ``n_boot``
    and their generator ``rng``, the confidence ``level``."""

    delta: float
    n_boot: int
    level: float
    rng: np.random.Generator


def _model_labels(result, reference_labels, found: _Outcomes) -> _ModelLabels:
    if reference_labels is not None:
        return _ModelLabels("reference", check_labels(reference_labels, "reference_labels").numpy())
    if found.is_clone:
        return _ModelLabels("own", found.own)
    largest = np.argsort(result.times.numpy(), kind="stable")[-1]  # the last row of the largest time
    return _ModelLabels("largest_time", result.labels.numpy()[largest])


def _per_class(found: _Outcomes, model_labels: _ModelLabels, base_rate, settings: _Settings) -> dict:
    """``{label: WindowEstimate}`` of the columns of every source class (base rate ``q_k`` unless
    given); a class whose feature never varies (``q_k = 1``) has no window and is left out."""
    out = {}
    for k in np.unique(found.classes).tolist():
        q_k = _class_rate(model_labels, k) if base_rate is None else None
        if q_k is not None and q_k >= 1.0:
            continue
        b = q_k if q_k is not None else base_rate
        out[int(k)] = _estimate(found.columns(found.classes == k), model_labels, b, settings, class_label=k)
    return out


def _class_rate(model_labels: _ModelLabels, k) -> float:
    return float(np.mean(model_labels.labels == k))


def _base_rate_weighted(classes, weights, model_labels: _ModelLabels, cluster_weights_model) -> float:
    """Base rate from (optionally bootstrap-weighted) label frequencies."""
    kind, labels = model_labels
    if kind == "own":
        w = cluster_weights_model
        total = w.sum()
        keys = np.unique(labels)
        counts = np.array([w[labels == k].sum() for k in keys])
        # Unbiased pair estimate of sum_k q_k^2 (two distinct trajectories agreeing).
        return float((np.sum(counts**2) - np.sum(w**2)) / max(total**2 - np.sum(w**2), 1e-300))
    keys = np.unique(np.concatenate([classes, labels]))
    p = np.array([weights[classes == k].sum() for k in keys]) / weights.sum()
    if kind == "largest_time":
        q = np.array([weights[labels == k].sum() for k in keys]) / weights.sum()
    else:
        q = np.array([np.mean(labels == k) for k in keys])
    return float(np.dot(p, q))


class _Curve(NamedTuple):
    """c(t), r(t), the isotonic fit of r and its crossings of ``1 - delta``, ``delta`` and 1/2."""

    c: np.ndarray
    r: np.ndarray
    fit: np.ndarray
    t_after: float
    t_before: float
    t_half: float

    @property
    def crossings(self) -> tuple[float, float, float]:
        return self.t_after, self.t_before, self.t_half


def _curve_estimate(times, kept, weights, b, delta) -> _Curve:
    c = (weights[None, :] * kept).sum(1) / weights.sum()
    r = (c - b) / (1 - b)
    fit = isotonic_decreasing(r)
    return _Curve(c, r, fit, *(crossing_time(times, fit, lvl) for lvl in (1 - delta, delta, 0.5)))


def _base_rate_rule(found: _Outcomes, model_labels: _ModelLabels, fixed_b, class_label):
    """``rate(weights, model_weights) -> b``: ``fixed_b``, the class rate ``q_k``, or the weighted
    estimate (weights over the columns, and over the model labels for cloning's own labels)."""

    def rate(weights, model_weights) -> float:
        if fixed_b is not None:
            return fixed_b
        if class_label is not None:
            return _class_rate(model_labels, class_label)
        return _base_rate_weighted(found.classes, weights, model_labels, model_weights)

    return rate


def _estimate(found: _Outcomes, model_labels: _ModelLabels, fixed_b, settings: _Settings, class_label=None):
    """The estimate of the columns ``found`` (base rate ``fixed_b``, or estimated from ``model_labels``:
    ``q_k`` for the class ``class_label``), with cluster-bootstrap CIs."""
    times, kept = found.times, found.kept
    rate = _base_rate_rule(found, model_labels, fixed_b, class_label)
    b = rate(np.ones(kept.shape[1]), np.ones(len(model_labels.labels)))
    if not b < 1.0:
        raise ConstantFeatureError(
            "the estimated base rate is 1 (every sample has the same feature label); pass base_rate="
        )
    curve = _curve_estimate(times, kept, np.ones(kept.shape[1]), b, settings.delta)
    k = kept.sum(1)
    n = np.full(k.shape, kept.shape[1])
    lower, upper = wilson_interval(k, n, settings.level)
    cis = _bootstrap_cis(found, rate, len(model_labels.labels), settings)
    return WindowEstimate(
        times=times,
        c=curve.c,
        c_lower=lower,
        c_upper=upper,
        n=n,
        b=float(b),
        r=curve.r,
        r_fit=curve.fit,
        delta=settings.delta,
        t_after=curve.t_after,
        t_before=curve.t_before,
        t_half=curve.t_half,
        t_after_ci=cis[0],
        t_before_ci=cis[1],
        t_half_ci=cis[2],
        jump=jump_rule(times, curve.c),
        level=settings.level,
        n_boot=settings.n_boot,
    )


def _bootstrap_cis(found: _Outcomes, rate, n_model: int, settings: _Settings) -> list[tuple[float, float]]:
    """Percentile intervals of t_after, t_before and t_half over ``settings.n_boot`` cluster-bootstrap
    replicates (sources / trajectories resampled with their columns; the base rate re-estimated by
    ``rate``; a replicate with no columns or ``b = 1`` is left out). No replicates: NaN intervals."""
    if settings.n_boot == 0:
        return [(math.nan, math.nan)] * 3
    cluster_ids, cluster_index = np.unique(found.clusters, return_inverse=True)
    own_weights = np.ones(n_model)
    draws = np.full((settings.n_boot, 3), math.nan)
    for i in range(settings.n_boot):
        counts = settings.rng.multinomial(len(cluster_ids), np.full(len(cluster_ids), 1 / len(cluster_ids)))
        weights = counts[cluster_index].astype(float)
        if weights.sum() == 0:
            continue
        # Cloning's own labels are one per trajectory: the same units as the clusters.
        same_units = found.is_clone and len(counts) == n_model
        b_star = rate(weights, counts.astype(float) if same_units else own_weights)
        if b_star < 1.0:
            draws[i] = _curve_estimate(found.times, found.kept, weights, b_star, settings.delta).crossings
    return [percentile_interval(draws[:, j], settings.level) for j in range(3)]


class Susceptibility(NamedTuple):
    """The susceptibility curve of :func:`susceptibility`: ``chi`` (T,) at OU ``times`` (T,), increasing."""

    times: np.ndarray
    chi: np.ndarray


def susceptibility(result, *, feature: str | None = None) -> Susceptibility | None:
    """Between-source variance of the keep probability, ``chi(t) = Var_sources[P(kept | source)]``.

    It is 0 while every source keeps its feature and again once every source has forgotten it, and
    peaks inside the window. The binomial noise of the per-source estimates (m replicates) is
    removed: ``chi = Var(p_hat) - mean(p_hat (1 - p_hat)) / (m - 1)``.

    Returns
    -------
    :class:`Susceptibility` ``(times, chi)``, both (T,) sorted by time, or None when sources have fewer
    than 2 replicates. ``feature`` names the feature of a multi-feature result.

    Examples
    --------
    A cloning sweep: before the window every trajectory keeps its component (chi = 0), after it every
    one has forgotten it (chi near 0, up to noise), and in between the keep probability depends on
    the trajectory:

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> process = critwin.MixtureProcess(mix, "exact", times=torch.linspace(4.0, 0.0, 41).tolist())
    >>> res = critwin.clone(process, 100, [0.1, 1.5, 4.0], 8, seed=0, progress=False)
    >>> chi = critwin.susceptibility(res)
    >>> chi.times.tolist(), [round(v, 3) for v in chi.chi.tolist()]
    ([0.1, 1.5, 4.0], [0.0, 0.056, -0.002])
    """
    found = _outcomes(select_feature(result, feature))
    ids, inverse, counts = np.unique(found.clusters, return_inverse=True, return_counts=True)
    if counts.min() < 2 or ids.size < 2:
        return None
    m = counts.astype(float)
    chi = np.empty(len(found.times))
    for row, kept in enumerate(found.kept):
        p_hat = np.bincount(inverse, weights=kept.astype(float), minlength=ids.size) / m
        within = np.mean(p_hat * (1 - p_hat) / (m - 1))
        chi[row] = np.var(p_hat, ddof=1) - within
    return Susceptibility(found.times, chi)
