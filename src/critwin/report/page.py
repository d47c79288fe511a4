"""The HTML page of ``critwin demo``, assembled from ``summary.json`` values (one function per section)."""

from __future__ import annotations

from critwin.report.html import Page

__all__ = ["demo_page"]


def demo_page(summary: dict) -> str:
    """The whole ``index.html`` of a demo report from its summary dictionary."""
    page = Page("critwin demo: critical windows, from theory to a trained diffusion model")
    page.paragraph(
        "One clock throughout: OU time t, with X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z. A feature's critical "
        "window is the range of noise levels in which noising-then-denoising stops preserving it."
    )
    _theory(page, summary)
    _digits(page, summary)
    _comparison(page, summary)
    _diagnostics(page, summary)
    page.paragraph(f"Every number is in summary.json. Runtime: {summary['runtime_seconds']:.1f} s.")
    return page.render()


def _theory(page: Page, summary: dict) -> None:
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


def _digits(page: Page, summary: dict) -> None:
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


def _comparison(page: Page, summary: dict) -> None:
    cp = summary["comparison"]
    measured = summary["digits"]["per_class"]
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
                (measured.get(k) or {}).get("t_after"),
                (measured.get(k) or {}).get("t_before"),
                (measured.get(k) or {}).get("t_half"),
            ]
            for k in cp["theory_per_class"]
        ],
    )


def _diagnostics(page: Page, summary: dict) -> None:
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
