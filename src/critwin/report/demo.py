"""``critwin demo``: critical windows in theory, on the shipped digits model, and the two compared.

The report is built in a temporary directory beside ``out`` and moved into place at the end, so an
interrupted run leaves no partial report. Sections:

1. Theory — a two-level isotropic Gaussian mixture: its hierarchy of windows, and the theorem's bound
   against the exact forward–reverse TV curve (THEORY §3–§6).
2. Real model — forward–reverse and cloning on the digits DDPM (through the diffusers adapter),
   read by the shipped classifier; the window with bootstrap CIs in OU time and scheduler steps.
3. Theory meets the model — one Gaussian per digit fitted to the training images, its predicted
   class windows against the measured ones.
4. Diagnostics — membership inference by commitment time (memorising vs main model) and a class
   rebalancing that acts only at the measured window.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critwin._io import atomic_write_json, atomic_write_text
from critwin.report.html import Page

MARKER = "critwin_demo"


@dataclass(frozen=True)
class DemoSizes:
    """Work sizes: ``full`` for ``critwin demo``, ``quick`` for tests."""

    fr_grid: int = 16
    fr_per_class: int = 24
    clone_trajectories: int = 96
    clone_children: int = 4
    clone_forks: int = 10
    inference_steps: int = 50
    n_boot: int = 200
    theory_grid: int = 24
    theory_outer: int = 2000
    gmm_mc: int = 5000
    gmm_classes: tuple[int, ...] = tuple(range(10))
    tol: float = 1e-3
    audit_members: int = 20
    audit_nonmembers: int = 40
    fair_n: int = 200

    @classmethod
    def quick(cls) -> DemoSizes:
        return cls(
            fr_grid=6,
            fr_per_class=3,
            clone_trajectories=10,
            clone_children=2,
            clone_forks=4,
            inference_steps=20,
            n_boot=30,
            theory_grid=8,
            theory_outer=400,
            gmm_mc=600,
            gmm_classes=(0, 1, 7),
            tol=2e-2,
            audit_members=6,
            audit_nonmembers=8,
            fair_n=30,
        )


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, directory: Path, name: str) -> str:
    fig.savefig(directory / name, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return name


def _finite(value):
    return float(value) if value is not None and math.isfinite(float(value)) else None


# ---------------------------------------------------------------------------------------- theory
def hierarchical_mixture(d: int = 16, within: float = 10.0, between: float = 240.0):
    """Four unit Gaussians: two clusters ``between`` apart, two components ``within`` apart in each."""
    from critwin.mixtures import GaussianMixture

    means = torch.zeros(4, d, dtype=torch.float64)
    for k, (side, sub) in enumerate([(-1, -1), (-1, 1), (1, -1), (1, 1)]):
        means[k, 0] = side * between / 2
        means[k, 1] = sub * within / 2
    return GaussianMixture(means, weights=torch.tensor([0.3, 0.2, 0.25, 0.25], dtype=torch.float64))


def theory_section(directory: Path, sizes: DemoSizes, eps: float, generator: torch.Generator) -> dict:
    from critwin.experiments.validate import forward_reverse_tv
    from critwin.tree import hierarchy
    from critwin.windows import critical_window, transition_times

    plt = _plt()
    mix = hierarchical_mixture()
    tree = hierarchy(mix, eps, generator=generator, tol=sizes.tol)
    tree.plot(path=directory / "theory_hierarchy.png")
    plt.close("all")
    fine = transition_times(mix, [0], [0, 1], eps, generator=generator, tol=sizes.tol)
    coarse = transition_times(mix, [0, 1], [0, 1, 2, 3], eps, generator=generator, tol=sizes.tol)
    window = critical_window(mix, after=[0], before=[0, 1], eps=eps, generator=generator, tol=sizes.tol)

    grid = np.linspace(0.0, 8.0, sizes.theory_grid)
    tv, se, labels = [], [], []
    for t_hat in grid:
        res = forward_reverse_tv(
            mix, [0], [0, 1], float(t_hat), n_outer=sizes.theory_outer, generator=generator
        )
        tv.append(res["tv"])
        se.append(res["tv_se"])
        labels.append(res["label_dist"].tolist())
    tv, se, labels = np.array(tv), np.array(se), np.array(labels)
    inside = (grid >= fine.t_end) & (grid <= fine.t_start)
    violations = int(np.sum(inside & (tv - 3 * se > fine.bound)))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.errorbar(grid, tv, yerr=3 * se, fmt="o-", ms=3, label="exact forward-reverse TV to p^{0,1} (±3 SE)")
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
    ax1.set_xlabel("noise level T̂ (OU time)")
    ax1.set_ylabel("TV")
    ax1.set_title("Start in component 0; target feature {0, 1}")
    ax1.legend(fontsize=7)
    for k in range(4):
        ax2.plot(grid, labels[:, k], label=f"component {k}")
    ax2.axvspan(
        window.t_after, window.t_before, color="tab:orange", alpha=0.15, label="window of {0} inside {0,1}"
    )
    ax2.set_xlabel("noise level T̂ (OU time)")
    ax2.set_ylabel("P(output component)")
    ax2.set_title("Features are decided coarse to fine")
    ax2.legend(fontsize=7)
    fig_name = _save(fig, directory, "theory_bound.png")

    return {
        "figures": ["theory_hierarchy.png", fig_name],
        "mixture": {"means": mix.means.tolist(), "weights": mix.weights.tolist(), "covs": "identity"},
        "eps": eps,
        "hierarchy": tree.to_dict(),
        "tree_text": tree.render(),
        "fine": {"t_end": _finite(fine.t_end), "t_start": _finite(fine.t_start), "bound": fine.bound},
        "coarse": {"t_end": _finite(coarse.t_end), "t_start": _finite(coarse.t_start), "bound": coarse.bound},
        "window_0_in_01": {
            "t_after": _finite(window.t_after),
            "t_before": _finite(window.t_before),
            "empty": bool(window.empty),
        },
        "curve": {"t": grid.tolist(), "tv": tv.tolist(), "se": se.tolist()},
        "bound_violations_beyond_3se": violations,
    }


# ---------------------------------------------------------------------------------------- digits
def _grid_times(process, n: int) -> list[float]:
    """``n`` distinct realised OU times spread in log-SNR across the sampler's grid (t > 0)."""
    grid = process.times[:-1].to(torch.float64)
    lo, hi = max(grid.min().item(), 0.02), min(grid.max().item(), 4.5)
    wanted = torch.exp(torch.linspace(math.log(lo), math.log(hi), n, dtype=torch.float64))
    picked = sorted({process.locate(float(t))[0] for t in wanted})
    return [float(grid[i]) for i in picked]


def _step_of(process, t) -> Any:
    if t is None or not math.isfinite(t):
        return None
    try:
        return process.step_label(process.locate(float(t))[0])
    except ValueError:
        return None


def _window_dict(est, process) -> dict:
    out = {
        "t_after": _finite(est.t_after),
        "t_before": _finite(est.t_before),
        "t_half": _finite(est.t_half),
        "t_after_ci": [_finite(v) for v in est.t_after_ci],
        "t_before_ci": [_finite(v) for v in est.t_before_ci],
        "t_half_ci": [_finite(v) for v in est.t_half_ci],
        "base_rate": float(est.b),
        "empty": bool(est.empty),
        "jump_rule": {k: (v.item() if hasattr(v, "item") else v) for k, v in est.jump.items()},
    }
    out["steps"] = {k: _step_of(process, out[k]) for k in ("t_after", "t_before", "t_half")}
    return out


def digits_section(directory: Path, sizes: DemoSizes, seed: int, progress: bool) -> dict:
    from critwin.experiments.cloning import clone
    from critwin.experiments.estimation import estimate_window
    from critwin.experiments.forward_reverse import forward_reverse
    from critwin.models.classifier import classifier_feature
    from critwin.models.digits import load_digits_model

    plt = _plt()
    model = load_digits_model()
    feature = classifier_feature()
    process = model.process(num_inference_steps=sizes.inference_steps)
    data = model.training_data()
    g = torch.Generator().manual_seed(seed)
    picks = torch.cat(
        [torch.nonzero(data.test_labels == k).flatten()[: sizes.fr_per_class] for k in range(10)]
    )
    x0 = data.test_images[picks]
    times = _grid_times(process, sizes.fr_grid)

    fr = forward_reverse(
        process,
        x0,
        times,
        n_per_time=1,
        feature=feature,
        seed=seed,
        progress=progress,
        feature_label="shipped digit classifier",
    )
    est = estimate_window(fr, delta=0.1, n_boot=sizes.n_boot, generator=g)
    ascending = sorted(times)[:-1]  # forking at the very first grid point would share no prefix
    picks = np.unique(np.linspace(0, len(ascending) - 1, sizes.clone_forks).round().astype(int))
    fork_times = [ascending[i] for i in picks]
    cl = clone(
        process,
        sizes.clone_trajectories,
        fork_times,
        sizes.clone_children,
        feature=feature,
        seed=seed,
        progress=progress,
        feature_label="shipped digit classifier",
    )
    est_clone = estimate_window(cl, delta=0.1, n_boot=sizes.n_boot, generator=g)

    # Figure: commitment curves, overall and per class, with the estimated window.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.fill_between(est.times, est.c_lower, est.c_upper, alpha=0.25, color="tab:blue")
    ax1.plot(est.times, est.c, "o-", ms=3, color="tab:blue", label="forward–reverse c(t) (95% Wilson)")
    ax1.plot(est_clone.times, est_clone.c, "s--", ms=3, color="tab:purple", label="cloning agreement")
    ax1.axhline(est.b, color="gray", lw=1, ls=":", label=f"base rate b = {est.b:.2f}")
    if math.isfinite(est.t_after) and math.isfinite(est.t_before):
        ax1.axvspan(est.t_after, est.t_before, color="tab:orange", alpha=0.2, label="estimated window")
    ax1.set_xscale("log")
    ax1.set_xlabel("OU time t (noise level)")
    ax1.set_ylabel("P(class kept)")
    ax1.set_title("Digits DDPM: when is the class decided?")
    ax1.legend(fontsize=7)
    for k, sub in sorted(est.per_class.items()):
        ax2.plot(sub.times, sub.c, "-", lw=1, label=str(k))
    ax2.set_xscale("log")
    ax2.set_xlabel("OU time t")
    ax2.set_ylabel("P(class kept)")
    ax2.set_title("per source class")
    ax2.legend(fontsize=6, ncol=2, title="digit", title_fontsize=7)
    curve_fig = _save(fig, directory, "digits_commitment.png")

    # Figure: one test digit re-generated from increasing noise levels.
    strip_times = sorted(times[:: max(1, len(times) // 7)][:7])  # increasing noise, left to right
    source = x0[[3 * sizes.fr_per_class]]  # the first "3"
    replicates = 3
    rows = []
    for t in strip_times:
        index, _ = process.locate(t)
        noised = process.add_noise(source.expand(replicates, -1, -1, -1), index, generator=g)
        rows.append(process.decode(process.run(noised, start=index, generator=g)))
    fig, axes = plt.subplots(
        replicates, len(strip_times) + 1, figsize=(1.3 * (len(strip_times) + 1), 1.4 * replicates)
    )
    for r in range(replicates):
        axes[r, 0].imshow(source[0, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
        for c, images in enumerate(rows):
            axes[r, c + 1].imshow(images[r, 0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
            if r == 0:
                axes[r, c + 1].set_title(
                    f"t={strip_times[c]:.2f}\nstep {_step_of(process, strip_times[c])}", fontsize=7
                )
    axes[0, 0].set_title("source", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    strip_fig = _save(fig, directory, "digits_strip.png")

    summary = {
        "figures": [curve_fig, strip_fig],
        "model": model.describe()["model"],
        "model_card_conditional_accuracy": model.card.get("conditional_accuracy"),
        "sampler": process.describe(),
        "times": [float(t) for t in fr.times],
        "steps": None if fr.steps is None else fr.steps.tolist(),
        "forward_reverse": {"c": est.c.tolist(), "window": _window_dict(est, process)},
        "cloning": {
            "times": est_clone.times.tolist(),
            "c": est_clone.c.tolist(),
            "window": _window_dict(est_clone, process),
        },
        "per_class": {int(k): _window_dict(v, process) for k, v in sorted(est.per_class.items())},
        "n_sources": int(x0.shape[0]),
    }
    return summary


# ---------------------------------------------------------------------------------------- comparison
def fitted_class_mixture(images: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3):
    """One full-covariance Gaussian per digit (pixel space, 64-d), weights = class frequencies."""
    from critwin.mixtures import GaussianMixture

    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    means, covs, weights = [], [], []
    for k in range(10):
        xs = flat[labels == k]
        means.append(xs.mean(0))
        covs.append(torch.cov(xs.T) + ridge * torch.eye(flat.shape[1], dtype=torch.float64))
        weights.append(xs.shape[0])
    w = torch.tensor(weights, dtype=torch.float64)
    return GaussianMixture(torch.stack(means), torch.stack(covs), w / w.sum()), flat


def comparison_section(directory: Path, sizes: DemoSizes, eps: float, digits: dict, seed: int) -> dict:
    from critwin.models.digits import load_digits_model
    from critwin.windows import critical_window

    plt = _plt()
    data = load_digits_model().training_data()
    gmm, flat = fitted_class_mixture(data.train_images, data.train_labels)
    g = torch.Generator().manual_seed(seed)
    theory = {}
    for k in sizes.gmm_classes:
        w = critical_window(gmm, after=[k], eps=eps, n=sizes.gmm_mc, generator=g, tol=max(sizes.tol, 1e-2))
        theory[k] = {"t_after": _finite(w.t_after), "t_before": _finite(w.t_before), "empty": bool(w.empty)}
    top_eig = torch.linalg.eigvalsh(torch.cov(flat.T)).max().item()
    t_speciation = 0.5 * math.log(top_eig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for k in theory:
        lo, hi = theory[k]["t_after"], theory[k]["t_before"]
        if lo is not None and hi is not None:
            ax.plot(
                [k - 0.15, k - 0.15],
                [lo, hi],
                color="tab:green",
                lw=6,
                alpha=0.6,
                label="theory window (fitted GMM)" if k == min(theory) else None,
            )
        measured = digits["per_class"].get(k)
        if measured and measured["t_after"] is not None and measured["t_before"] is not None:
            ax.plot(
                [k + 0.15, k + 0.15],
                [measured["t_after"], measured["t_before"]],
                color="tab:blue",
                lw=6,
                alpha=0.6,
                label="measured window (forward–reverse)" if k == min(theory) else None,
            )
        if measured and measured["t_half"] is not None:
            lo_ci, hi_ci = measured["t_half_ci"]
            yerr = None
            if lo_ci is not None and hi_ci is not None:
                yerr = [[max(measured["t_half"] - lo_ci, 0)], [max(hi_ci - measured["t_half"], 0)]]
            ax.errorbar(
                [k + 0.15],
                [measured["t_half"]],
                yerr=yerr,
                fmt="o",
                color="k",
                ms=3,
                label="measured t½ (95% bootstrap)" if k == min(theory) else None,
            )
    ax.axhline(t_speciation, color="tab:red", ls="--", lw=1, label=f"speciation ½ ln Λ = {t_speciation:.2f}")
    ax.set_xticks(range(10))
    ax.set_xlabel("digit")
    ax.set_ylabel("OU time t")
    ax.set_yscale("log")
    ax.set_title("Class windows: Gaussian-mixture theory vs the trained model")
    ax.legend(fontsize=7)
    name = _save(fig, directory, "theory_vs_model.png")
    return {
        "figures": [name],
        "theory_per_class": theory,
        "speciation_time": t_speciation,
        "top_eigenvalue": top_eig,
        "eps": eps,
        "fit": "one full-covariance Gaussian per digit + 1e-3 I",
    }


# ---------------------------------------------------------------------------------------- diagnostics
def diagnostics_section(directory: Path, sizes: DemoSizes, digits: dict, seed: int) -> dict:
    from critwin.diagnostics.fairness import rebalance
    from critwin.diagnostics.privacy import membership_audit
    from critwin.models.classifier import classifier_feature
    from critwin.models.digits import load_digits_model

    plt = _plt()
    audit_times = [0.05, 0.15, 0.3, 0.6, 1.0, 1.8, 3.0]
    audits = {}
    for name in ("digits-memorise", "digits"):
        model = load_digits_model(name)
        data = model.training_data()
        audits[name] = membership_audit(
            model.process(num_inference_steps=sizes.inference_steps // 2),
            data.train_images[: sizes.audit_members],
            data.test_images[: sizes.audit_nonmembers],
            audit_times,
            n_per_time=2,
            seed=seed,
            n_boot=sizes.n_boot,
        )
    window = digits["forward_reverse"]["window"]
    fork = window["t_before"] if window["t_before"] is not None else 1.5
    fair = rebalance(
        load_digits_model().process(num_inference_steps=sizes.inference_steps),
        sizes.fair_n,
        classifier_feature(),
        10,
        fork,
        n_candidates=4,
        seed=seed,
    )

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, audit), color in zip(audits.items(), ("tab:red", "tab:blue"), strict=True):
        ax1.plot(
            audit.times,
            audit.member_curve,
            "o-",
            ms=3,
            color=color,
            label=f"{name}: training images (AUC {audit.auc:.2f})",
        )
        ax1.plot(
            audit.times,
            audit.nonmember_curve,
            "s--",
            ms=3,
            color=color,
            alpha=0.6,
            label=f"{name}: held-out images",
        )
    ax1.set_xscale("log")
    ax1.set_xlabel("OU time t")
    ax1.set_ylabel("P(output is closest to its own source)")
    ax1.set_title("Privacy: memorised images commit early")
    ax1.legend(fontsize=7)
    width = 0.4
    digits_axis = np.arange(10)
    ax2.bar(digits_axis - width / 2, fair.before, width, label=f"plain sampling (TV {fair.tv_before:.3f})")
    ax2.bar(
        digits_axis + width / 2,
        fair.after,
        width,
        label=f"resampled at t={fair.fork_time:.2f} (TV {fair.tv_after:.3f})",
    )
    ax2.axhline(0.1, color="k", lw=1, ls=":")
    ax2.set_xticks(digits_axis)
    ax2.set_xlabel("digit")
    ax2.set_ylabel("fraction of samples")
    ax2.set_title("Fairness: rebalance the class only at its window")
    ax2.legend(fontsize=7)
    name = _save(fig, directory, "diagnostics.png")
    return {
        "figures": [name],
        "privacy": {
            k: {"auc": a.auc, "auc_ci": list(a.auc_ci), "operating_point": a.operating_point}
            for k, a in audits.items()
        },
        "fairness": fair.to_dict(),
    }


# ---------------------------------------------------------------------------------------- report
def _write_page(directory: Path, summary: dict) -> None:
    page = Page("critwin demo: critical windows, from theory to a trained diffusion model")
    page.paragraph(
        "One clock throughout: OU time t, with X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z. A feature's critical "
        "window is the range of noise levels in which noising-then-denoising stops preserving it."
    )
    th = summary["theory"]
    page.heading("1. Theory: a two-level Gaussian mixture")
    page.paragraph(
        "Four unit Gaussians in 16 dimensions: two clusters far apart, two components close together "
        f"inside each. eps = {th['eps']}. The tree below is the eps-mixture tree (vertical axis: OU time); "
        "bands are the critical windows of each node inside its parent."
    )
    page.figure("theory_hierarchy.png", "Hierarchy of windows (dendrogram in OU time).")
    page.figure(
        "theory_bound.png",
        "Left: exact forward-reverse TV vs the theorem's bound on [T_end, T_start]. "
        "Right: law of the output component when starting in component 0.",
    )
    page.table(
        ["feature", "T_end", "T_start", "bound ε(1+max(1,W)/√2)"],
        [
            ["{0} within {0,1}", th["fine"]["t_end"], th["fine"]["t_start"], th["fine"]["bound"]],
            ["{0,1} within all", th["coarse"]["t_end"], th["coarse"]["t_start"], th["coarse"]["bound"]],
        ],
    )
    page.paragraph(
        f"Bound violations beyond 3 standard errors: {th['bound_violations_beyond_3se']}. "
        "(n/a: infinite — the whole mixture has no complement to be separated from.)"
    )

    dg = summary["digits"]
    fw = dg["forward_reverse"]["window"]
    page.heading("2. A trained model: the shipped digits DDPM")
    page.paragraph(
        f"Model {dg['model']} (conditional accuracy in its card: {dg['model_card_conditional_accuracy']}), "
        f"sampled unconditionally with {summary['sizes']['inference_steps']} DDPM steps through the "
        f"diffusers adapter; {dg['n_sources']} held-out test digits are noised to each level and denoised; "
        "the shipped classifier reads the class."
    )
    page.figure(
        "digits_commitment.png",
        "Commitment c(t) = P(class kept) with 95% Wilson intervals, the "
        "cloning agreement, and the estimated window (isotonic fit of r = (c-b)/(1-b) crossing 0.9 and 0.1).",
    )
    page.figure(
        "digits_strip.png", "One test digit re-generated from increasing noise levels (3 replicates)."
    )
    rows = []
    for name, w in (("forward–reverse", fw), ("cloning", dg["cloning"]["window"])):
        rows.append(
            [
                name,
                w["t_after"],
                w["t_after_ci"],
                w["t_before"],
                w["t_before_ci"],
                w["steps"]["t_after"],
                w["steps"]["t_before"],
            ]
        )
    page.table(
        [
            "experiment",
            "T_after (r=0.9)",
            "95% CI",
            "T_before (r=0.1)",
            "95% CI",
            "step at T_after",
            "step at T_before",
        ],
        rows,
    )

    page.paragraph("n/a: the fitted curve does not cross that level within the measured noise levels.")

    cp = summary["comparison"]
    page.heading("3. Theory meets the trained model")
    page.paragraph(
        "Fit one Gaussian per digit to the training images (pixel space, full covariance), compute each "
        "class's critical window from the theory, and compare with the window measured on the trained "
        f"model. Speciation time ½ ln Λ of the data covariance (Biroli et al.): {cp['speciation_time']:.3f}."
    )
    page.figure(
        "theory_vs_model.png", "Per-digit windows: fitted-mixture theory (green) vs measurement (blue)."
    )
    page.table(
        [
            "digit",
            "theory T_after",
            "theory T_before",
            "measured T_after",
            "measured T_before",
            "measured t½",
        ],
        [
            [
                k,
                cp["theory_per_class"][k]["t_after"],
                cp["theory_per_class"][k]["t_before"],
                (dg["per_class"].get(k) or {}).get("t_after"),
                (dg["per_class"].get(k) or {}).get("t_before"),
                (dg["per_class"].get(k) or {}).get("t_half"),
            ]
            for k in cp["theory_per_class"]
        ],
    )
    dx = summary["diagnostics"]
    page.heading("4. Diagnostics built on windows")
    memo, main = dx["privacy"]["digits-memorise"], dx["privacy"]["digits"]
    fair = dx["fairness"]
    page.paragraph(
        "Privacy: the commitment time of an image (where its forward-reverse curve falls to 1/2) is a "
        "membership score, thresholded at a 1% false-positive rate calibrated on separate held-out images. "
        f"Memorising model (20 training digits): ROC-AUC {memo['auc']:.2f}, TPR "
        f"{memo['operating_point']['tpr']:.2f}; main model: ROC-AUC {main['auc']:.2f} "
        f"(95% CI {main['auc_ci'][0]:.2f}-{main['auc_ci'][1]:.2f})."
    )
    page.paragraph(
        "Fairness: every trajectory is generated unchanged down to the class window's upper end "
        f"(OU time {fair['fork_time']:.2f}, step {fair['fork_step']}); there 4 continuations are drawn and "
        "one is kept per trajectory so that the classes approach a uniform target. TV to the target: "
        f"{fair['tv_before']:.3f} (plain) -> {fair['tv_after']:.3f} (rebalanced)."
    )
    page.figure(
        "diagnostics.png",
        "Left: commitment curves of training vs held-out images. Right: class histogram before and after "
        "acting only at the window.",
    )
    page.paragraph(f"Every number is in summary.json. Runtime: {summary['runtime_seconds']:.1f} s.")
    atomic_write_text(directory / "index.html", page.render())


def _check_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"out must be a directory, got an existing file {out}")
        marker = out / "summary.json"
        is_report = False
        if marker.exists():
            try:
                is_report = MARKER in json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                is_report = False
        if any(out.iterdir()) and not is_report:
            raise ValueError(
                f"out {out} exists and is not an earlier critwin demo report; choose another directory"
            )


def run_demo(out, *, quick: bool = False, seed: int = 0, eps: float = 0.1, progress: bool = True) -> dict:
    """Build the demo report in ``out`` (``index.html``, PNG figures, ``summary.json``).

    Parameters
    ----------
    out : report directory (created; an earlier demo report there is replaced).
    quick : reduced sizes (seconds instead of about a minute), for tests.
    seed : every random draw derives from it.
    eps : the theory's eps.
    progress : show progress bars.

    Returns
    -------
    The summary dictionary written to ``summary.json``.
    """
    from critwin._validation import check_eps

    eps = check_eps(eps)
    out = Path(out)
    _check_out(out)
    sizes = DemoSizes.quick() if quick else DemoSizes()
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        torch.manual_seed(seed)
        summary: dict[str, Any] = {MARKER: True, "seed": seed, "quick": quick, "sizes": sizes.__dict__}
        timings = {}
        mark = time.perf_counter()
        summary["theory"] = theory_section(work, sizes, eps, torch.Generator().manual_seed(seed))
        timings["theory"], mark = time.perf_counter() - mark, time.perf_counter()
        summary["digits"] = digits_section(work, sizes, seed, progress)
        timings["digits"], mark = time.perf_counter() - mark, time.perf_counter()
        summary["comparison"] = comparison_section(work, sizes, eps, summary["digits"], seed)
        timings["comparison"], mark = time.perf_counter() - mark, time.perf_counter()
        summary["diagnostics"] = diagnostics_section(work, sizes, summary["digits"], seed)
        timings["diagnostics"] = time.perf_counter() - mark
        summary["section_seconds"] = timings
        summary["runtime_seconds"] = time.perf_counter() - start
        _write_page(work, summary)
        atomic_write_json(work / "summary.json", summary)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return summary
