"""Text: windows of a planted tree's levels in masked diffusion and autoregression, measured and exact.

The language counterpart of the digits and shapes comparisons. The shipped ``rhm-mdm`` (masked
diffusion, clock kappa) and ``rhm-ar`` (autoregressive, clock: hidden positions) are trained on a
Random Hierarchy Model language whose levels (class > level1 > level2 > string) are read from a string
by its parser. For each model and level, like for like:

- the network: forward–reverse from strings of the language, every level read from the same outputs,
  :func:`estimate_window` (t½, t_after, t_before with bootstrap CIs);
- the exact engine: the same sources, levels, replicates and estimator on the language's exact law
  sampled exactly (a ``CategoricalProcess``);
- the exact curve: the expectation of that commitment curve, with no Monte Carlo
  (:func:`critwin.diagnostics.text_windows.exact_commitment_curves`), and its crossings;
- the paired difference network − exact engine of each endpoint (bootstrap over sources, which both
  runs share) — "agree" when its 95% interval holds 0, else the difference is stated with its size and
  the share of outputs outside the language at the level where it arises;
- optionally the theorem's windows of every level (:func:`~critwin.diagnostics.text_windows.grammar_theory`,
  a different definition: conditions on TV, not crossings of r).

Used by ``critwin demo`` (section "Text") and ``critwin text``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critwin._io import finite_or_none
from critwin._validation import check_positive_int, check_seed
from critwin.diagnostics.text_windows import (
    ExactCurve,
    exact_commitment_curves,
    exact_crossings,
    exact_process,
    grammar_theory,
)
from critwin.experiments.checkpoint import derive_seed
from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.results import CLOCK_AXES
from critwin.models.text import MODEL_NAMES, TextModel, load_text_model
from critwin.report.page import text_page
from critwin.report.plan import text_available

__all__ = [
    "TextSizes",
    "LevelComparison",
    "TextSection",
    "compare_levels",
    "paired_differences",
    "text_available",
    "text_section",
    "plot_text",
    "text_page",
    "ENDPOINTS",
]

ENDPOINTS = ("t_half", "t_after", "t_before")
"""The window numbers compared, network against the exact engine."""


@dataclass(frozen=True)
class TextSizes:
    """Work sizes of the text comparison (``quick`` for tests)."""

    sources: int = 64
    replicates: int = 4
    n_boot: int = 100
    kappa_times: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    curve_points: int = 81

    @classmethod
    def quick(cls) -> TextSizes:
        return cls(
            sources=8, replicates=2, n_boot=10, kappa_times=(0.0, 0.25, 0.5, 0.75, 1.0), curve_points=11
        )

    def times(self, clock: str, length: int) -> list[float]:
        return list(self.kappa_times) if clock == "kappa" else [float(h) for h in range(length + 1)]


def _columns(result: ForwardReverseResult, chosen: np.ndarray) -> ForwardReverseResult:
    """``result`` restricted to the column blocks of the sources ``chosen`` (a source drawn twice counts
    twice; its new id is its draw's position)."""
    ids = result.source_ids.numpy()
    blocks = [np.nonzero(ids == s)[0] for s in chosen]
    picked = torch.from_numpy(np.concatenate(blocks))
    new_ids = torch.from_numpy(np.repeat(np.arange(len(blocks)), [len(b) for b in blocks]))
    return ForwardReverseResult(
        requested_times=result.requested_times,
        times=result.times,
        indices=result.indices,
        steps=result.steps,
        labels=result.labels[:, picked],
        source_labels=result.source_labels[:, picked],
        source_ids=new_ids,
        n_per_time=result.n_per_time,
        metadata=result.metadata,
    )


def _endpoints(result: ForwardReverseResult) -> dict[str, float]:
    est = estimate_window(result, n_boot=0, per_class=False)
    return {name: getattr(est, name) for name in ENDPOINTS}


def paired_differences(
    first: dict[str, ForwardReverseResult], second: dict[str, ForwardReverseResult], n_boot: int, seed: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per level and endpoint: ``first`` minus ``second`` with a paired bootstrap 95% interval.

    Both results of a level start from the same sources (same ``source_ids``); a replicate draws
    sources with replacement and keeps every column of a drawn source in both (pairing), then
    re-estimates both endpoints (:func:`estimate_window`, no inner bootstrap). Replicates where either
    endpoint is censored give no difference; their share is ``censored_share``.

    Returns
    -------
    ``{level: {endpoint: {"difference", "ci": [lo, hi], "censored_share"}}}`` (None where censored).
    """
    seed = check_seed(seed)
    n_boot = check_positive_int(n_boot, "n_boot")
    rng = np.random.default_rng(derive_seed(seed, "paired"))
    out = {}
    for name in first:
        a, b = first[name], second[name]
        sources = np.unique(a.source_ids.numpy())
        point = (_endpoints(a), _endpoints(b))
        draws = {e: np.full(n_boot, math.nan) for e in ENDPOINTS}
        for i in range(n_boot):
            chosen = rng.choice(sources, size=sources.size)
            ea, eb = _endpoints(_columns(a, chosen)), _endpoints(_columns(b, chosen))
            for e in ENDPOINTS:
                d = ea[e] - eb[e]
                draws[e][i] = d if math.isfinite(d) else math.nan
        out[name] = {}
        for e in ENDPOINTS:
            valid = draws[e][~np.isnan(draws[e])]
            lo, hi = np.quantile(valid, [0.025, 0.975]) if valid.size else (math.nan, math.nan)
            out[name][e] = {
                "difference": finite_or_none(point[0][e] - point[1][e]),
                "ci": [finite_or_none(lo), finite_or_none(hi)],
                "censored_share": float(np.mean(np.isnan(draws[e]))),
            }
    return out


@dataclass
class LevelComparison:
    """One model's level windows beside the exact ones (see the module notes)."""

    model: str
    clock: str
    levels: tuple[str, ...]
    network: ForwardReverseResult
    exact: ForwardReverseResult
    network_est: dict[str, WindowEstimate]
    exact_est: dict[str, WindowEstimate]
    curves: dict[str, ExactCurve]
    differences: dict[str, dict[str, dict[str, Any]]]
    invalid_share: list[float]
    theory: dict[str, Any] | None = None
    card: dict[str, Any] = field(default_factory=dict)

    def verdict(self, level: str) -> str:
        """'agree' when the paired 95% interval of the t½ difference holds 0, else the difference in words."""
        diff = self.differences[level]["t_half"]
        lo, hi = diff["ci"]
        if lo is None or hi is None:
            return "not resolved (censored t½)"
        if lo <= 0.0 <= hi:
            return "agree"
        side = "later (at more noise)" if diff["difference"] > 0 else "earlier (at less noise)"
        return f"differ: the network forgets this level {side}, by {abs(diff['difference']):.3g}"

    def rows(self) -> list[dict[str, Any]]:
        """One row per level: network, exact engine and exact curve endpoints, difference, verdict."""
        out = []
        for name in self.levels:
            net, ex = self.network_est[name], self.exact_est[name]
            exact = exact_crossings(self.curves[name], net.delta)
            row = {"level": name, "model": self.model, "clock": self.clock}
            for e in ENDPOINTS:
                row[e] = finite_or_none(getattr(net, e))
                row[f"{e}_ci"] = [finite_or_none(v) for v in getattr(net, f"{e}_ci")]
                row[f"exact_engine_{e}"] = finite_or_none(getattr(ex, e))
                row[f"exact_engine_{e}_ci"] = [finite_or_none(v) for v in getattr(ex, f"{e}_ci")]
                row[f"exact_{e}"] = finite_or_none(exact[e])
                row[f"difference_{e}"] = self.differences[name][e]
            if self.theory is not None:
                info = self.theory["attributes"][name]
                row["theory"] = {k: finite_or_none(info[k]) for k in ("t_merge", "t_after", "t_before")}
                row["theory"]["status"] = info["status"]
            row["verdict"] = self.verdict(name)
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        metrics = self.card.get("metrics", {})
        return {
            "model": self.model,
            "clock": self.clock,
            "axis": CLOCK_AXES[self.clock],
            "times": self.network.times.tolist(),
            "sources": int(self.network.source_ids.max()) + 1,
            "replicates": self.network.n_per_time,
            "nfe": {"network": self.network.nfe, "exact_engine": self.exact.nfe},
            "invalid_share_by_time": self.invalid_share,
            "card": {
                "valid_fraction": metrics.get("valid_fraction"),
                "prediction_tv_mean": metrics.get("prediction_tv_mean"),
            },
            "levels": self.rows(),
            "curves": {
                name: {
                    "measured_c": self.network_est[name].c.tolist(),
                    "exact_engine_c": self.exact_est[name].c.tolist(),
                    "exact_levels": c.levels.tolist(),
                    "exact_c": c.c.tolist(),
                    "b_exact": c.b,
                }
                for name, c in self.curves.items()
            },
            "theory_eps": None if self.theory is None else self.theory["eps"],
        }


def compare_levels(
    model: TextModel,
    sizes: TextSizes,
    seed: int = 0,
    *,
    theory: bool = False,
    eps: float = 0.1,
    progress: bool = False,
) -> LevelComparison:
    """The network's level windows beside the exact engine's and the exact curves (module notes)."""
    seed = check_seed(seed)
    process, grammar = model.process(), model.grammar
    clock = process.clock
    times = sizes.times(clock, grammar.length)
    sources = grammar.sample(
        check_positive_int(sizes.sources, "sources"), torch.Generator().manual_seed(seed)
    )[0]
    features = grammar.features()
    common = dict(feature=features, progress=progress)
    network = forward_reverse(
        process, sources, times, sizes.replicates, seed=derive_seed(seed, "net"), **common
    )
    exact = forward_reverse(
        exact_process(grammar, clock, times),
        sources,
        times,
        sizes.replicates,
        seed=derive_seed(seed, "exact"),
        **common,
    )
    levels = tuple(features)
    boot = dict(n_boot=sizes.n_boot, seed=seed, per_class=False)
    network_est = {name: estimate_window(network, feature=name, **boot) for name in levels}
    exact_est = {name: estimate_window(exact, feature=name, **boot) for name in levels}
    fine = np.linspace(0.0, 1.0, sizes.curve_points) if clock == "kappa" else np.arange(grammar.length + 1)
    noise = "mask" if clock == "kappa" else "autoregressive"
    curves = exact_commitment_curves(grammar.mixture(noise), grammar.partitions(), fine.tolist())
    pick = {name: network.select(name) for name in levels}
    differences = paired_differences(pick, {name: exact.select(name) for name in levels}, sizes.n_boot, seed)
    invalid = network.select("string").labels >= grammar.n_strings
    order = torch.argsort(network.times, stable=True)
    return LevelComparison(
        model=model.name,
        clock=clock,
        levels=levels,
        network=network,
        exact=exact,
        network_est=network_est,
        exact_est=exact_est,
        curves=curves,
        differences=differences,
        invalid_share=invalid.double().mean(1)[order].tolist(),
        theory=grammar_theory(grammar, noise, eps) if theory else None,
        card=model.card,
    )


@dataclass
class TextSection:
    """The demo's text section: one :class:`LevelComparison` per shipped text model."""

    comparisons: dict[str, LevelComparison]
    grammar: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "grammar": self.grammar,
            "models": {name: c.summary() for name, c in self.comparisons.items()},
        }


def text_section(
    sizes: TextSizes, seed: int, progress: bool = False, theory_clocks=("hidden",)
) -> TextSection:
    """Both shipped text models compared with the exact law; the theorem's windows on ``theory_clocks``
    (the autoregressive ones take a second; masking ones about a minute, left to ``critwin text``)."""
    comparisons = {}
    for name in MODEL_NAMES:
        model = load_text_model(name)
        clock = "kappa" if model.kind == "masked" else "hidden"
        comparisons[name] = compare_levels(
            model, sizes, derive_seed(seed, name), theory=clock in theory_clocks, progress=progress
        )
    return TextSection(comparisons, load_text_model(MODEL_NAMES[0]).grammar.describe())


def plot_text(section: TextSection, directory: Path) -> list[str]:
    """Per model, every level's measured commitment (Wilson band) beside the exact curve and the exact
    engine's measurement."""
    import matplotlib.pyplot as plt

    from critwin.report import figures  # matplotlib (Agg) only when a figure is drawn

    fig, axes = plt.subplots(
        1, len(section.comparisons), figsize=(11, 4), layout="constrained", squeeze=False
    )
    for ax, comparison in zip(axes[0], section.comparisons.values(), strict=True):
        for name in comparison.levels:
            est, curve, exact = (
                comparison.network_est[name],
                comparison.curves[name],
                comparison.exact_est[name],
            )
            (line,) = ax.plot(curve.levels, curve.c, "-", lw=1.2, label=f"{name}: exact")
            colour = line.get_color()
            ax.errorbar(
                est.times,
                est.c,
                yerr=[np.clip(est.c - est.c_lower, 0, None), np.clip(est.c_upper - est.c, 0, None)],
                fmt="o",
                ms=3.5,
                color=colour,
                capsize=2,
                label=f"{name}: network",
            )
            ax.plot(exact.times, exact.c, "x", ms=4, color=colour, alpha=0.7)
        ax.set_xlabel(CLOCK_AXES[comparison.clock] + " (generation runs right to left)")
        ax.set_ylabel("commitment c (output keeps the source's level)")
        ax.set_title(
            f"{comparison.model}: measured (dots, 95% Wilson), exact (lines), exact engine (x)", fontsize=9
        )
    # One legend below both panels (they show the same levels): inside, it covered curves.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    return [figures.save_figure(fig, directory, "text_levels.png")]
