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

from critwin.report.invariance import InvarianceSection  # noqa: E402
from critwin.report.sections import (  # noqa: E402
    ComparisonSection,
    DiagnosticsSection,
    DigitsSection,
    ShapesSection,
    TheorySection,
    step_of,
)

__all__ = [
    "DPI",
    "save_figure",
    "plot_theory",
    "plot_digits",
    "plot_comparison",
    "plot_diagnostics",
    "plot_invariance",
    "plot_shapes",
]


#: Resolution of the report's figures (saved with ``bbox_inches="tight"``).
DPI = 110


def save_figure(fig, directory: Path, name: str) -> str:
    """Save ``fig`` as ``directory / name`` (every figure of the report is saved here) and close it."""
    fig.savefig(directory / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _finish(ax, xlabel: str, ylabel: str, heading: str, **legend) -> None:
    """Labels, title and a legend beside the axes (never over the data)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(heading)
    placement = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "fontsize": 8}
    ax.legend(**{**placement, **legend})


OU_TIME = r"OU time $t$ (noise level)"
COMPONENT_STYLES = (
    {"marker": "o", "ls": "-", "ms": 4},
    {"marker": "s", "ls": "--", "ms": 4},
    {"marker": "^", "ls": ":", "ms": 4},
    {"marker": "D", "ls": "-.", "ms": 8, "mfc": "none", "mew": 1.2},
)
"""Per mixture component: curves that coincide stay visible (a hollow larger marker around a filled one)."""


def plot_theory(section: TheorySection, directory: Path) -> list[str]:
    """The hierarchy dendrogram, and the TV curve against the theorem's bound."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    section.tree.plot(ax=ax)  # its legend beside the axes
    ax.set_title(rf"$\varepsilon$-mixture tree ($\varepsilon$ = {section.eps:g}); bands: critical windows")
    hierarchy_png = save_figure(fig, directory, "theory_hierarchy.png")
    fine, window, grid = section.fine, section.window, section.grid
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7.5), layout="constrained")
    ax1.errorbar(
        grid,
        section.tv,
        yerr=3 * section.se,
        fmt="o-",
        ms=3,
        label=r"forward–reverse TV to $p^{\{0,1\}}$ ($\pm 3$ SE)",
    )
    if math.isfinite(fine.t_end) and math.isfinite(fine.t_start) and fine.t_end <= fine.t_start:
        ax1.fill_between(
            [fine.t_end, fine.t_start],
            0,
            fine.bound,
            color="tab:green",
            alpha=0.2,
            label=rf"theorem: TV $\leq$ {fine.bound:.3f} on $[T_{{end}}, T_{{start}}]$",
        )
    for value, name, style in ((fine.t_end, "end", "--"), (fine.t_start, "start", ":")):
        if math.isfinite(value):
            ax1.axvline(value, color="k", ls=style, lw=1, label=rf"$T_{{{name}}}$ = {value:.2f}")
    noise = r"noise level $\hat T$ (OU time)"
    _finish(ax1, noise, "TV", r"Start in component 0; target feature $\{0, 1\}$")
    for k in range(4):
        # Components 2 and 3 coincide by symmetry: distinct markers and a small horizontal stagger.
        offset = (k - 1.5) * 0.04 * (grid[1] - grid[0])
        ax2.plot(grid + offset, section.labels[:, k], lw=1.2, label=f"component {k}", **COMPONENT_STYLES[k])
    ax2.axvspan(
        window.t_after,
        window.t_before,
        color="tab:orange",
        alpha=0.15,
        label=r"window of $\{0\}$ inside $\{0, 1\}$",
    )
    _finish(ax2, noise, "P(output component)", "Features are decided coarse to fine")
    return [hierarchy_png, save_figure(fig, directory, "theory_bound.png")]


def plot_digits(section: DigitsSection, directory: Path) -> list[str]:
    """Commitment curves with the window, per-class windows with intervals, and the re-generation strip."""
    est, est_clone = section.est, section.est_clone
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7.5), layout="constrained")
    ax1.fill_between(est.times, est.c_lower, est.c_upper, alpha=0.25, color="tab:blue")
    ax1.plot(est.times, est.c, "o-", ms=3, color="tab:blue", label=r"forward–reverse $c(t)$ (95% Wilson)")
    ax1.plot(est_clone.times, est_clone.c, "s--", ms=3, color="tab:purple", label="cloning agreement")
    ax1.axhline(est.b, color="gray", lw=1, ls=":", label=f"base rate $b$ = {est.b:.2f}")
    if math.isfinite(est.t_after) and math.isfinite(est.t_before):
        ax1.axvspan(est.t_after, est.t_before, color="tab:orange", alpha=0.2, label="estimated window")
    ax1.set_xscale("log")
    _finish(ax1, OU_TIME, "P(class kept)", "Digits DDPM: when is the class decided?")
    _class_windows(ax2, {"forward–reverse": (est, "tab:blue", 0.0)})
    _finish(ax2, "digit", OU_TIME, r"Per digit: window ($r$ from 0.9 to 0.1) and $t_{1/2}$ (95% bootstrap)")
    return [save_figure(fig, directory, "digits_commitment.png"), _plot_strip(section, directory)]


def _class_windows(ax, estimates: dict) -> None:
    """Per-class window bars and t½ with bootstrap intervals.

    ``estimates``: name -> (WindowEstimate, colour, x offset of its bars).

    Censored endpoints (outside the measured times) are drawn to the edge of the measured range.
    """
    for name, (est, color, offset) in estimates.items():
        lo_edge, hi_edge = float(est.times[0]), float(est.times[-1])
        for k, sub in sorted(est.per_class.items()):
            lo = min(max(sub.t_after, lo_edge), hi_edge)
            hi = min(max(sub.t_before, lo_edge), hi_edge)
            first = k == min(est.per_class)
            ax.plot(
                [k + offset] * 2,
                [lo, hi],
                color=color,
                lw=7,
                alpha=0.35,
                label=f"{name}: window" if first else None,
            )
            if math.isfinite(sub.t_half):
                ax.errorbar(
                    [k + offset],
                    [sub.t_half],
                    yerr=_interval_err(sub.t_half, sub.t_half_ci),
                    fmt="o",
                    ms=4,
                    color=color,
                    capsize=2,
                    label=f"{name}: $t_{{1/2}}$ (95% CI)" if first else None,
                )
    ax.set_xticks(range(10))
    ax.set_yscale("log")


def _interval_err(value: float, ci) -> list[list[float]] | None:
    """Asymmetric error bar from an interval (None when either end is missing or censored)."""
    lo, hi = ci
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [[max(value - lo, 0)], [max(hi - value, 0)]]


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
    return save_figure(fig, directory, "digits_strip.png")


def plot_comparison(section: ComparisonSection, model_est, directory: Path) -> list[str]:
    """Like for like: per-digit curves and windows of the network (``model_est``, section 2) and of the
    fitted mixture (exact sampler), the theorem's windows as a third band, and the t½ differences."""
    return [_plot_class_curves(section, model_est, directory), _plot_windows(section, model_est, directory)]


def _plot_class_curves(section: ComparisonSection, model_est, directory: Path) -> str:
    # At most the page's column wide (8.6 in at 110 dpi: 946 px), so that the page shows its text at the
    # size it is drawn; at 13 in the page shrank it to 2/3, its legend to ~8 px.
    fig, axes = plt.subplots(2, 5, figsize=(8.6, 5.8), sharex=True, sharey=True, layout="constrained")
    pairs = (
        ("trained network", model_est, "tab:blue", "o-"),
        ("fitted GMM, exact sampler", section.gmm_est, "tab:green", "s--"),
    )
    for k, ax in enumerate(axes.flat):
        for name, est, color, style in pairs:
            sub = est.per_class.get(k)
            if sub is None:
                continue
            ax.fill_between(sub.times, sub.c_lower, sub.c_upper, color=color, alpha=0.2, lw=0)
            ax.plot(
                sub.times, sub.c, style, ms=2.5, lw=1, color=color, label=f"{name}: $c_k(t)$ (95% Wilson)"
            )
            if math.isfinite(sub.t_half):
                ax.axvline(sub.t_half, color=color, lw=0.8, ls=":", label=rf"{name}: $t_{{1/2}}$")
        ax.set_xscale("log")
        ax.set_title(f"digit {k}", fontsize=9)
        if k % 5 == 0:
            ax.set_ylabel("P(class kept)")
        if k >= 5:
            ax.set_xlabel(r"OU time $t$")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    fig.suptitle("Like for like: same sources, OU times, estimator and classifier", fontsize=10)
    return save_figure(fig, directory, "likeforlike_curves.png")


def _plot_windows(section: ComparisonSection, model_est, directory: Path) -> str:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7.5), layout="constrained")
    _class_windows(
        ax1,
        {"network": (model_est, "tab:blue", 0.2), "fitted GMM (exact)": (section.gmm_est, "tab:green", -0.2)},
    )
    first = True
    for k, window in section.theory_per_class.items():
        lo, hi = window["t_after"], window["t_before"]
        if lo is not None and hi is not None:
            label = "theorem window of the GMM (sufficient conditions on TV)" if first else None
            ax1.plot([k, k], [lo, hi], color="0.4", lw=5, alpha=0.5, solid_capstyle="butt", label=label)
            first = False
    t_speciation = section.speciation_time
    ax1.axhline(
        t_speciation,
        color="tab:red",
        ls="--",
        lw=1,
        label=rf"speciation $\frac{{1}}{{2}}\ln\Lambda$ = {t_speciation:.2f}",
    )
    _finish(ax1, "digit", OU_TIME, "Class windows: network, its data's Gaussian fit, and the theorem")
    _plot_differences(ax2, section.difference)
    ax2.axhline(0.0, color="gray", lw=1)
    ax2.set_xticks(range(10))
    _finish(
        ax2,
        "digit",
        r"$t_{1/2}$(network) $-$ $t_{1/2}$(GMM)",
        "Where the network keeps a digit longer (> 0) or shorter (< 0)",
    )
    return save_figure(fig, directory, "theory_vs_model.png")


def _plot_differences(ax, differences: dict) -> None:
    """Per digit the paired Δt½ with its 95% interval; an infinite end (censored draws kept as a one-sided
    bound) is drawn to a common edge with an arrow; no bar without an interval (no bootstrap)."""
    shown = {k: d for k, d in sorted(differences.items()) if d["difference"] is not None}
    ends = [
        v for d in shown.values() for v in (d["difference"], *d["ci"]) if v is not None and math.isfinite(v)
    ]
    edge = 1.25 * max((abs(v) for v in ends), default=1.0)
    for k, d in shown.items():
        value, (lo, hi) = d["difference"], d["ci"]
        bar = [[0.0], [0.0]]
        if lo is not None and hi is not None:
            bar = [[value - max(lo, -edge)], [min(hi, edge) - value]]
            for end, marker in ((lo, "v"), (hi, "^")):
                if math.isinf(end):
                    ax.plot([k], [math.copysign(edge, end)], marker, color="k", ms=5)
        label = r"$\Delta t_{1/2}$ (95% paired bootstrap; arrow: one-sided)" if k == min(shown) else None
        ax.errorbar([k], [value], yerr=bar, fmt="o", color="k", capsize=3, label=label)


def plot_diagnostics(section: DiagnosticsSection, directory: Path) -> list[str]:
    """Commitment curves of members vs held-out images, and the class histogram before/after."""
    fair = section.fair
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7.5), layout="constrained")
    for (name, audit), color in zip(section.audits.items(), ("tab:red", "tab:blue"), strict=True):
        label = f"{name}: training images (AUC {audit.auc:.2f})"
        ax1.plot(audit.times, audit.member_curve, "o-", ms=3, color=color, label=label)
        label = f"{name}: held-out images"
        ax1.plot(audit.times, audit.nonmember_curve, "s--", ms=3, color=color, alpha=0.6, label=label)
    ax1.set_xscale("log")
    _finish(ax1, OU_TIME, "P(output is closest to its own source)", "Privacy: memorised images commit early")
    width = 0.4
    digits_axis = np.arange(10)
    graded = fair.graded()  # the independent judge's reading
    label = f"plain sampling (TV {graded['tv_before']:.3f})"
    ax2.bar(digits_axis - width / 2, graded["before"], width, label=label)
    label = f"resampled at t={fair.fork_time:.2f} (TV {graded['tv_after']:.3f})"
    ax2.bar(digits_axis + width / 2, graded["after"], width, label=label)
    ax2.axhline(0.1, color="k", lw=1, ls=":", label="uniform target 1/10")
    ax2.set_xticks(digits_axis)
    _finish(
        ax2,
        "digit",
        f"fraction of samples (read by {graded['graded_by']})",
        "Fairness: rebalance the class only at its window",
    )
    return [save_figure(fig, directory, "diagnostics.png")]


RUN_STYLES = (
    {"color": "tab:blue", "marker": "o", "ls": "-"},
    {"color": "tab:cyan", "marker": "v", "ls": "--"},
    {"color": "tab:green", "marker": "s", "ls": "-."},
    {"color": "tab:orange", "marker": "^", "ls": ":"},
)


def plot_invariance(section: InvarianceSection, directory: Path) -> list[str]:
    """Commitment curves of every run (model and sampler) overlaid on the OU axis, t½ with its CI."""
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    n_runs = len(section.windows)
    for i, ((name, window), style) in enumerate(zip(section.windows.items(), RUN_STYLES, strict=False)):
        est, color = window.est, style["color"]
        label = f"{name} ({window.parameterisation}, {type(window.process.scheduler).__name__})"
        ax.fill_between(est.times, est.c_lower, est.c_upper, color=color, alpha=0.15, lw=0)
        ax.plot(est.times, est.c, ms=3, label=f"{label}: $c(t)$", **style)
        if math.isfinite(est.t_half):
            # r = 1/2 on the c axis, staggered a little per run so that no interval hides another
            level = est.b + 0.5 * (1 - est.b) + 0.04 * (i - (n_runs - 1) / 2)
            ax.errorbar(
                [est.t_half],
                [level],
                xerr=_interval_err(est.t_half, est.t_half_ci),
                fmt="D",
                ms=6,
                mfc="none",
                color=color,
                capsize=3,
                label=rf"{name}: $t_{{1/2}}$ (95% bootstrap)",
            )
    ax.set_xscale("log")
    _finish(ax, OU_TIME, "P(class kept)", "Same data, three parameterisations: class windows in OU time")
    return [save_figure(fig, directory, "parameterisation.png")]


def plot_shapes(section: ShapesSection, directory: Path) -> list[str]:
    """The atlas (every attribute's r(t) on one OU axis, t½, theory merge times) and the strip."""
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    section.atlas.plot(ax)
    ax.set_title("Features are decided coarse to fine (rows on top: the fitted mixture's merge times)")
    names = [save_figure(fig, directory, "shapes_atlas.png")]
    T, R = section.strip.shape[:2]
    fig, grid = plt.subplots(R + 1, T, figsize=(1.1 * T, 1.25 * (R + 1)), squeeze=False, layout="constrained")
    for j, t in enumerate(section.strip_times):
        images = [section.source[0], *section.strip[j]]
        for i, image in enumerate(images):
            ax = grid[i][j]
            ax.imshow(((image.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t={t:.2f}", fontsize=7)
                continue
            changed = [
                n for n, lab in section.strip_labels.items() if lab[j, i - 1] != section.source_labels[n]
            ]
            ax.set_xlabel("\n".join(changed) or "same", fontsize=7, color="tab:red" if changed else "grey")
    grid[0][0].set_ylabel("source", fontsize=7)
    fig.suptitle("One image re-generated from increasing noise: which attribute changes first", fontsize=9)
    names.append(save_figure(fig, directory, "shapes_strip.png"))
    return names
