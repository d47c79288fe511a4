"""The figures of ``critwin demo``: one function per section, drawing a section's computed numbers.

Plotting draws no random numbers and computes nothing that ``summary.json`` reports.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from critwin.report.sections import (  # noqa: E402
    ComparisonSection,
    DiagnosticsSection,
    DigitsSection,
    TheorySection,
    step_of,
)

__all__ = ["plot_theory", "plot_digits", "plot_comparison", "plot_diagnostics"]


def _save(fig, directory: Path, name: str) -> str:
    fig.savefig(directory / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def _finish(ax, xlabel: str, ylabel: str, heading: str, **legend) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(heading)
    ax.legend(**{"fontsize": 7, **legend})


def plot_theory(section: TheorySection, directory: Path) -> list[str]:
    """The hierarchy dendrogram, and the TV curve against the theorem's bound."""
    section.tree.plot(path=directory / "theory_hierarchy.png")
    plt.close("all")
    fine, window, grid = section.fine, section.window, section.grid
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.errorbar(
        grid,
        section.tv,
        yerr=3 * section.se,
        fmt="o-",
        ms=3,
        label="exact forward-reverse TV to p^{0,1} (±3 SE)",
    )
    if math.isfinite(fine.t_end) and math.isfinite(fine.t_start) and fine.t_end <= fine.t_start:
        ax1.fill_between(
            [fine.t_end, fine.t_start],
            0,
            fine.bound,
            color="tab:green",
            alpha=0.2,
            label=f"theorem: TV ≤ {fine.bound:.3f} on [T_end, T_start]",
        )
    for value, name, style in ((fine.t_end, "T_end", "--"), (fine.t_start, "T_start", ":")):
        if math.isfinite(value):
            ax1.axvline(value, color="k", ls=style, lw=1, label=f"{name} = {value:.2f}")
    _finish(ax1, "noise level T̂ (OU time)", "TV", "Start in component 0; target feature {0, 1}")
    for k in range(4):
        ax2.plot(grid, section.labels[:, k], label=f"component {k}")
    ax2.axvspan(
        window.t_after, window.t_before, color="tab:orange", alpha=0.15, label="window of {0} inside {0,1}"
    )
    _finish(ax2, "noise level T̂ (OU time)", "P(output component)", "Features are decided coarse to fine")
    return ["theory_hierarchy.png", _save(fig, directory, "theory_bound.png")]


def plot_digits(section: DigitsSection, directory: Path) -> list[str]:
    """Commitment curves (overall and per class) with the window, and the re-generation strip."""
    est, est_clone = section.est, section.est_clone
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.fill_between(est.times, est.c_lower, est.c_upper, alpha=0.25, color="tab:blue")
    ax1.plot(est.times, est.c, "o-", ms=3, color="tab:blue", label="forward–reverse c(t) (95% Wilson)")
    ax1.plot(est_clone.times, est_clone.c, "s--", ms=3, color="tab:purple", label="cloning agreement")
    ax1.axhline(est.b, color="gray", lw=1, ls=":", label=f"base rate b = {est.b:.2f}")
    if math.isfinite(est.t_after) and math.isfinite(est.t_before):
        ax1.axvspan(est.t_after, est.t_before, color="tab:orange", alpha=0.2, label="estimated window")
    ax1.set_xscale("log")
    _finish(ax1, "OU time t (noise level)", "P(class kept)", "Digits DDPM: when is the class decided?")
    for k, sub in sorted(est.per_class.items()):
        ax2.plot(sub.times, sub.c, "-", lw=1, label=str(k))
    ax2.set_xscale("log")
    _finish(
        ax2,
        "OU time t",
        "P(class kept)",
        "per source class",
        fontsize=6,
        ncol=2,
        title="digit",
        title_fontsize=7,
    )
    return [_save(fig, directory, "digits_commitment.png"), _plot_strip(section, directory)]


def _plot_strip(section: DigitsSection, directory: Path) -> str:
    times, rows, source = section.strip_times, section.strip_rows, section.source
    replicates = rows[0].shape[0]
    fig, axes = plt.subplots(replicates, len(times) + 1, figsize=(1.3 * (len(times) + 1), 1.4 * replicates))
    for r in range(replicates):
        axes[r, 0].imshow(source[0, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
        for c, images in enumerate(rows):
            axes[r, c + 1].imshow(images[r, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
            if r == 0:
                step = step_of(section.process, times[c])
                axes[r, c + 1].set_title(f"t={times[c]:.2f}\nstep {step}", fontsize=7)
    axes[0, 0].set_title("source", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, directory, "digits_strip.png")


def plot_comparison(section: ComparisonSection, measured_per_class: dict, directory: Path) -> list[str]:
    """Per-digit windows: fitted-mixture theory against the measured ones (``digits`` summary's per_class)."""
    theory = section.theory_per_class
    first = min(theory)
    fig, ax = plt.subplots(figsize=(8, 4))
    for k in theory:
        lo, hi = theory[k]["t_after"], theory[k]["t_before"]
        if lo is not None and hi is not None:
            label = "theory window (fitted GMM)" if k == first else None
            ax.plot([k - 0.15, k - 0.15], [lo, hi], color="tab:green", lw=6, alpha=0.6, label=label)
        measured = measured_per_class.get(k)
        if measured and measured["t_after"] is not None and measured["t_before"] is not None:
            label = "measured window (forward–reverse)" if k == first else None
            span = [measured["t_after"], measured["t_before"]]
            ax.plot([k + 0.15, k + 0.15], span, color="tab:blue", lw=6, alpha=0.6, label=label)
        if measured and measured["t_half"] is not None:
            label = "measured t½ (95% bootstrap)" if k == first else None
            ax.errorbar(
                [k + 0.15],
                [measured["t_half"]],
                yerr=_t_half_err(measured),
                fmt="o",
                color="k",
                ms=3,
                label=label,
            )
    t_speciation = section.speciation_time
    ax.axhline(t_speciation, color="tab:red", ls="--", lw=1, label=f"speciation ½ ln Λ = {t_speciation:.2f}")
    ax.set_xticks(range(10))
    ax.set_yscale("log")
    _finish(ax, "digit", "OU time t", "Class windows: Gaussian-mixture theory vs the trained model")
    return [_save(fig, directory, "theory_vs_model.png")]


def _t_half_err(measured: dict):
    """Asymmetric error bar of t½ from its bootstrap interval (None when either end is missing)."""
    lo_ci, hi_ci = measured["t_half_ci"]
    if lo_ci is None or hi_ci is None:
        return None
    return [[max(measured["t_half"] - lo_ci, 0)], [max(hi_ci - measured["t_half"], 0)]]


def plot_diagnostics(section: DiagnosticsSection, directory: Path) -> list[str]:
    """Commitment curves of members vs held-out images, and the class histogram before/after."""
    fair = section.fair
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, audit), color in zip(section.audits.items(), ("tab:red", "tab:blue"), strict=True):
        label = f"{name}: training images (AUC {audit.auc:.2f})"
        ax1.plot(audit.times, audit.member_curve, "o-", ms=3, color=color, label=label)
        label = f"{name}: held-out images"
        ax1.plot(audit.times, audit.nonmember_curve, "s--", ms=3, color=color, alpha=0.6, label=label)
    ax1.set_xscale("log")
    _finish(
        ax1, "OU time t", "P(output is closest to its own source)", "Privacy: memorised images commit early"
    )
    width = 0.4
    digits_axis = np.arange(10)
    ax2.bar(digits_axis - width / 2, fair.before, width, label=f"plain sampling (TV {fair.tv_before:.3f})")
    label = f"resampled at t={fair.fork_time:.2f} (TV {fair.tv_after:.3f})"
    ax2.bar(digits_axis + width / 2, fair.after, width, label=label)
    ax2.axhline(0.1, color="k", lw=1, ls=":")
    ax2.set_xticks(digits_axis)
    _finish(ax2, "digit", "fraction of samples", "Fairness: rebalance the class only at its window")
    return [_save(fig, directory, "diagnostics.png")]
