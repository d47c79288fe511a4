"""The HTML page of ``critwin demo``, assembled from ``summary.json`` values (one function per section)."""

from __future__ import annotations

import math

from critwin._io import json_float
from critwin.report.html import Page
from critwin.report.plan import FAIRNESS_PROMPT

__all__ = ["demo_page"]


def demo_page(summary: dict) -> str:
    """The whole ``index.html`` of a demo report from its summary dictionary."""
    page = Page("critwin demo: critical windows, from theory to a trained diffusion model")
    page.paragraph(
        "One clock throughout: OU time t, with Xₜ = e^(−t) X₀ + √(1 − e^(−2t)) Z, Z standard normal. A "
        "feature's critical window is the range of noise levels in which noising-then-denoising stops "
        "preserving it. In summary.json every array indexed by time is in ascending OU time."
    )
    _theory(page, summary)
    _digits(page, summary)
    _comparison(page, summary)
    _diagnostics(page, summary)
    if "parameterisation" in summary:
        _parameterisation(page, summary)
    if "shapes" in summary:
        _shapes(page, summary)
    if "text" in summary:
        text_page(page, summary["text"])
    if "text_to_image" in summary:
        text_to_image_page(page, summary)
    page.paragraph(f"Every number is in summary.json. Runtime: {summary['runtime_seconds']:.1f} s.")
    return page.render()


def _theory(page: Page, summary: dict) -> None:
    th = summary["theory"]
    page.heading("1. Theory: a two-level Gaussian mixture")
    page.paragraph(
        "Four unit Gaussians in 16 dimensions: two clusters far apart, two components close together "
        f"inside each. ε = {th['eps']}. The tree below is the ε-mixture tree (vertical axis: OU time); "
        "bands are the critical windows of each node inside its parent."
    )
    page.figure("theory_hierarchy.png", "Hierarchy of windows (dendrogram in OU time).")
    page.figure(
        "theory_bound.png",
        "Top: exact forward-reverse TV vs the theorem's bound on [T_end, T_start]. "
        "Bottom: law of the output component when starting in component 0 (components 2 and 3 are both "
        "near 0; their markers differ and are staggered slightly in t so that neither hides the other).",
    )
    page.table(
        ["feature", "T_end", "T_start", "bound ε(1 + max(1, W)/√2)"],
        [
            ["{0} within {0,1}", th["fine"]["t_end"], th["fine"]["t_start"], th["fine"]["bound"]],
            ["{0,1} within all", th["coarse"]["t_end"], th["coarse"]["t_start"], th["coarse"]["bound"]],
        ],
        missing="infinite — the whole mixture has no complement to be separated from, so T_start = ∞.",
    )
    page.paragraph(f"Bound violations beyond 3 standard errors: {th['bound_violations_beyond_3se']}.")


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
        "Top: commitment c(t) = P(class kept) with 95% Wilson intervals, the cloning agreement, and the "
        "estimated window (isotonic fit of r = (c − b)/(1 − b) crossing 0.9 and 0.1). Bottom: the same "
        "per source digit: window bars (censored ends drawn to the edge of the measured range) and the "
        "commitment time t½ (r = 1/2) with its 95% bootstrap interval.",
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
        missing="the fitted curve does not cross that level within the measured noise levels (censored), "
        "so there is no time, and no sampler step, to report.",
    )


def _comparison(page: Page, summary: dict) -> None:
    cp = summary["comparison"]
    like = cp["like_for_like"]
    measured = summary["digits"]["per_class"]
    page.heading("3. Theory meets the trained model")
    page.paragraph(
        "Fit one Gaussian per digit to the training images (pixel space, full covariance, weights = class "
        "frequencies). Like for like: run the forward–reverse experiment of section 2 on this mixture — "
        "the same test digits, the same OU times, the same classifier and the same estimator — with the "
        f"mixture's exact sampler ({like['replicates_per_source']} replicates per source) in place of the "
        "network. Any difference between the two windows is then the network's, not the definitions'. "
        "The theorem's window of the mixture (sufficient conditions on TV: a different definition, so its "
        "ends need not match the estimated crossings even for a perfect model) is shown as a third, grey "
        "band. Speciation time ½ ln Λ of the data covariance (Biroli et al.): "
        f"{cp['speciation_time']:.3f}."
    )
    page.figure(
        "likeforlike_curves.png",
        "Per digit: P(class kept) of the trained network (blue) and of its data's Gaussian fit sampled "
        "exactly (green), with 95% Wilson intervals; dotted lines: t½.",
    )
    page.figure(
        "theory_vs_model.png",
        "Top: per-digit windows (bars) and t½ with 95% bootstrap intervals, network (blue) and fitted "
        "GMM (green); grey: the theorem's window of the GMM. Bottom: the difference in t½ with its "
        "95% paired bootstrap interval.",
    )
    rows = []
    for k, d in like["t_half_difference"].items():
        theory = cp["theory_per_class"].get(k) or {}
        net = measured.get(k) or {}
        gmm = like["per_class"].get(k) or {}
        rows.append(
            [
                k,
                d["model"],
                net.get("t_half_ci"),
                d["gmm"],
                gmm.get("t_half_ci"),
                d["difference"],
                d["ci"],
                d["censored_share"],
                theory.get("t_after"),
                theory.get("t_before"),
            ]
        )
    page.table(
        [
            "digit",
            "network t½",
            "95% CI",
            "GMM t½",
            "95% CI",
            "difference",
            "95% CI (paired)",
            "censored draws",
            "theorem T_after",
            "theorem T_before",
        ],
        rows,
        missing="censored or not computed: a t½ outside the measured OU times, or a theorem window that "
        "is empty or was not computed (the quick run computes it for three digits only). ±inf: an interval "
        "end that censored draws leave unbounded (a one-sided bound).",
    )
    page.paragraph(
        "How to read the difference: t½ is the noise level at which half of the digit's identity is "
        "lost when noising and denoising. A positive difference means the network keeps the digit up "
        "to more noise than the Gaussian fit of its own training data does — it commits to the class "
        "earlier in generation, using structure (strokes, shape) that a per-class Gaussian does not "
        "have; a negative one means it forgets the class sooner than the fit. Intervals come from a "
        "bootstrap that resamples the test digits within each class and re-estimates both t½ on the "
        "same draw (paired: both experiments start from the same sources). A draw in which a t½ falls "
        "outside the measured times (censored) is kept, as the range of differences the censoring allows "
        "(that t½ lies beyond the largest measured time, or between 0 and the smallest): the interval "
        "covers every value in those ranges, so censored draws widen it — up to a one-sided bound (±inf) "
        "when they reach a tail — instead of being dropped, which would make it too narrow (column "
        "'censored draws': their share)."
    )
    page.paragraph(_differences_in_words(like["t_half_difference"]))


def _differences_in_words(differences: dict) -> str:
    """Which digits' t½ differ between network and Gaussian fit (95% interval excluding 0), and how."""
    longer, shorter, undecided = [], [], []
    for k, d in differences.items():
        lo, hi = d["ci"]
        if lo is not None and lo > 0:
            longer.append(str(k))
        elif hi is not None and hi < 0:
            shorter.append(str(k))
        else:
            undecided.append(str(k))
    parts = []
    if longer:
        parts.append(f"the network keeps digit(s) {', '.join(longer)} to more noise than its Gaussian fit")
    if shorter:
        parts.append(f"the network forgets digit(s) {', '.join(shorter)} at less noise than its Gaussian fit")
    if undecided:
        parts.append(
            f"for digit(s) {', '.join(undecided)} the interval contains 0 (or is censored): no difference "
            "is resolved at this sample size"
        )
    return "In this run: " + "; ".join(parts) + "."


def _diagnostics(page: Page, summary: dict) -> None:
    dx = summary["diagnostics"]
    page.heading("4. Diagnostics built on windows")
    memo, main = dx["privacy"]["digits-memorise"], dx["privacy"]["digits"]
    fair = dx["fairness"]
    op = memo["operating_point"]
    page.paragraph(
        "Privacy: the commitment time of an image (where its forward-reverse curve falls to 1/2) is a "
        f"membership score, {_threshold_words(memo)}. Memorising model (20 training digits): ROC-AUC "
        f"{memo['auc']:.2f}, TPR {_with_ci(op['tpr'], op.get('tpr_ci'))} "
        "(of members above the calibrated threshold) at a held-out FPR of "
        f"{op['fpr_held_out']:.2f} ({op['n_held_out']} images); "
        f"main model: ROC-AUC {main['auc']:.2f} (95% CI {main['auc_ci'][0]:.2f}-{main['auc_ci'][1]:.2f})."
    )
    graded = fair["graded"]
    before = _with_ci(graded["tv_before"], graded["tv_before_ci"])
    after = _with_ci(graded["tv_after"], graded["tv_after_ci"])
    extra = fair["nfe"] - fair["nfe_plain"]
    page.paragraph(
        "Fairness: every trajectory is generated unchanged down to the class window's upper end "
        f"(OU time {fair['fork_time']:.2f}, step {fair['fork_step']}); there 4 continuations are drawn "
        f"and one is kept per trajectory so that the classes read by the selector ({fair['selector']}) "
        f"approach a uniform target. Graded by an independent judge ({graded['graded_by']}: another CNN "
        f"trained on the disjoint test split), the TV to the target goes from {before} (plain) to {after} "
        f"(rebalanced), at {extra} extra NFEs ({fair['nfe'] / fair['nfe_plain']:.2f}x). The selector reads "
        f"its own choice as {fair['tv_before']:.3f} -> {fair['tv_after']:.3f}: that measures the selector, "
        "not the model, and is not a result."
    )
    page.figure(
        "diagnostics.png",
        "Top: commitment curves of training vs held-out images. Bottom: class histogram before and after "
        "acting only at the window.",
    )


def _threshold_words(audit: dict) -> str:
    """How a membership audit's threshold was set: the FPR asked, or the one its calibration resolves."""
    op, asked = audit["operating_point"], audit["fpr_requested"]
    words = (
        f"thresholded at a {_percent(op['target_fpr'])} false-positive rate calibrated on "
        f"{op['n_calibration']} separate held-out images"
    )
    if op["target_fpr"] > asked:
        words += (
            f" (the smallest rate {op['n_calibration']} images resolve: {_percent(asked)} would need "
            f"{math.ceil(1 / asked)})"
        )
    return words


def _percent(rate: float) -> str:
    """``0.05`` -> ``5%``, ``1 / 30`` -> ``3.33%``."""
    return f"{100 * rate:.3g}%"


def _with_ci(value: float, interval) -> str:
    """``0.115 (95% CI 0.000-0.236)``."""
    if interval is None:
        return f"{value:.3f}"
    return f"{value:.3f} (95% CI {interval[0]:.3f}-{interval[1]:.3f})"


def _parameterisation(page: Page, summary: dict) -> None:
    pm = summary["parameterisation"]
    page.heading("5. Windows do not depend on the parameterisation")
    page.paragraph(
        "A critical window is a property of the data distribution, not of how a network is trained to "
        "reverse the noise. The same U-Net, trained on the same digits for the same number of steps "
        "with three objectives — noise (ε, the model of section 2), v-prediction on the same DDPM "
        "schedule, and rectified flow (x_s = (1 − s) x₀ + s z, velocity z − x₀, s uniform) — is run through "
        "the diffusers adapter on its own OU-time grid "
        f"({summary['sizes']['inference_steps']} sampler steps), from the same held-out digits as "
        "section 2, and read by the same classifier. Flow time s is OU time t = ½ ln(1 + s²/(1 − s)²), "
        "with the state rescaled by √((1 − s)² + s²). The samplers differ too: DDPM is stochastic while "
        "the flow Euler sampler is a deterministic ODE, and noising then denoising through a "
        "deterministic map keeps more of the source than sampling the posterior does. So the ε model is "
        "also run with DDIM (deterministic, same grid): each comparison below changes one thing."
    )
    page.figure(
        "parameterisation.png",
        "P(class kept) of each run on the OU axis (95% Wilson bands); diamonds: t½ with its 95% "
        "bootstrap interval, near the level where r = 1/2 (staggered so that none hides another).",
    )
    page.table(
        ["run", "parameterisation", "sampler", "card accuracy", "t½", "95% CI", "T_after", "T_before"]
        + ["NFEs"],
        [
            [
                name,
                m["parameterisation"],
                m["scheduler"],
                m["card_conditional_accuracy"],
                m["t_half"],
                m["t_half_ci"],
                m["t_after"],
                m["t_before"],
                m["network_evaluations"],
            ]
            for name, m in pm["runs"].items()
        ],
        missing="a crossing outside the measured OU times (censored).",
    )
    page.table(
        [
            "run",
            "minus",
            "isolates",
            "Δt½ (pooled)",
            "95% CI (paired)",
            "censored draws",
            "digits with 0 in CI",
            "verdict",
        ],
        [
            [
                c["run"],
                c["against"],
                c["isolates"],
                c["t_half_difference"]["all"]["difference"],
                c["t_half_difference"]["all"]["ci"],
                c["t_half_difference"]["all"]["censored_share"],
                f"{c['digits_agreeing']} of {c['n_digits']}",
                c["verdict"],
            ]
            for c in pm["comparisons"]
        ],
        missing="a t½ outside the measured OU times (censored). ±inf: an interval end that censored draws "
        "leave unbounded (they are kept as bounds, never dropped); 'undetermined': the interval contains 0 "
        "and is unbounded on one side.",
    )
    page.paragraph(_agreement_in_words(pm["comparisons"]))


def _agreement_in_words(comparisons: list[dict]) -> str:
    """The comparisons that agree (pooled 95% interval of Δt½ contains 0) and those that differ."""
    agree = [f"{c['run']} vs {c['against']}" for c in comparisons if c["verdict"] == "agree"]
    differ = [
        f"{c['run']} vs {c['against']} ({c['t_half_difference']['all']['difference']:+.3f})"
        for c in comparisons
        if c["verdict"] == "differ"
    ]
    parts = []
    if agree:
        parts.append(f"t½ agrees within the paired 95% interval for {', '.join(agree)}")
    if differ:
        parts.append(f"it differs for {', '.join(differ)}")
    if not parts:
        return "No comparison is resolved in this run (intervals censored)."
    return "In this run: " + "; ".join(parts) + "."


def _shapes(page: Page, summary: dict) -> None:
    sh = summary["shapes"]
    atlas, strip = sh["atlas"], sh["strip"]
    page.heading("6. Features are decided coarse to fine")
    page.paragraph(
        "The shipped shapes model (16x16 images: background, shape, colour, mark). One forward-reverse sweep "
        "reads every attribute from the same outputs; per attribute the commitment time t½ (where its "
        "normalised curve falls to 1/2) with a bootstrap 95% interval. The theory: a Gaussian mixture with "
        "one component per attribute combination (shared isotropic variance) fitted to the training images; "
        "each level of its ε-tree is split by one attribute. A level's merge time is when its children's "
        "sub-mixtures have become ε-close (TV ≤ ε) to the level's mixture — noising further forgets which "
        "child a sample came from — computed with a 95% bracket; the tree node's own time (when its two "
        "farthest components merge) is only an upper bound on it, shown for reference. An attribute's "
        "theory time is the largest merge time of the levels it splits. Like for like: the same estimator "
        "on the fitted mixture with its exact sampler."
    )
    page.figure(
        "shapes_atlas.png",
        "Normalised commitment of every attribute on one OU axis; diamonds: t½ with its 95% bootstrap "
        "interval. Rows on top: the theory's merge time with its bracket (dot and bar) and the tree's "
        "upper bound (open triangle), one row per attribute.",
    )
    theory = atlas.get("theory") or {"attributes": {}}
    rows = []
    for name in atlas["order"]:
        row = atlas["features"][name]
        exact = row.get("like_for_like", {})
        info = theory["attributes"].get(name, {})
        rows.append(
            [
                name,
                row["order"],
                row["t_half"],
                row["t_half_ci"],
                exact.get("t_half"),
                info.get("t_merge"),
                info.get("t_merge_bracket"),
                info.get("t_bound"),
            ]
        )
    page.table(
        [
            "attribute",
            "measured order",
            "t½",
            "95% CI",
            "t½ fitted mixture (exact)",
            "theory merge time",
            "95% bracket",
            "tree bound (upper)",
        ],
        rows,
        missing="a crossing outside the measured times (censored), or not computed.",
    )
    comparison = atlas.get("comparison") or {}
    if comparison:
        page.paragraph(_order_in_words(comparison))
    first = {k: v for k, v in strip["first_change"].items() if v is not None}
    order = sorted(first, key=first.get)
    page.figure(
        "shapes_strip.png",
        "Top row: the source; below, re-generations from each OU time, labelled with the attributes that "
        "changed. "
        + ("First to change: " + ", then ".join(f"{n} (t={first[n]:.2f})" for n in order) if order else ""),
    )


def _order_in_words(comparison: dict) -> str:
    """The measured and predicted orders ('~': tied, intervals overlap) and, pair by pair, where they
    differ: contradictions (both sides resolve the pair, in opposite orders) and pairs one side ties."""
    head = (
        f"Measured order {comparison['measured_text']}; the theory's (merge times) "
        f"{comparison['predicted_text']} ('~': the intervals overlap, so no order is claimed). "
    )
    if comparison["agree"]:
        return head + "They agree on every pair."
    contradict = [p for p in comparison["differences"] if p["status"] == "contradict"]
    parts = []
    if contradict:
        pairs = ", ".join(f"{p['measured']} before {_other(p, p['measured'])}" for p in contradict)
        parts.append(f"the network decides {pairs}, the opposite of the mixture")
    for side, other in (("measured", "predicted"), ("predicted", "measured")):
        one_sided = [
            p for p in comparison["differences"] if p["status"] == "unresolved" and p[side] != "tied"
        ]
        if one_sided:
            pairs = ", ".join(f"{p[side]} before {_other(p, p[side])}" for p in one_sided)
            who = "the measurement" if side == "measured" else "the theory"
            parts.append(f"{who} resolves {pairs} where the {other} side ties")
    return head + "Differences: " + "; ".join(parts) + "."


def _other(pair: dict, name: str) -> str:
    a, b = pair["pair"]
    return b if name == a else a


# ------------------------------------------------------------------------------------------- 7. text
def text_page(page, text: dict) -> None:
    """The section "Text: windows in masked diffusion and autoregression" of the demo page."""
    grammar = text["grammar"]
    page.heading("7. Text: windows in masked diffusion and autoregression")
    page.paragraph(
        f"A Random Hierarchy Model language: {grammar['n_strings']} strings of {grammar['length']} tokens "
        f"over {grammar['vocab_size']} symbols, generated by a planted tree (class, then level-1 and level-2 "
        "symbols, then tokens), whose every level a parser reads back from a string. Two shipped "
        "transformers learnt it: rhm-mdm (masked diffusion; the noise level is the masking probability "
        "κ) and rhm-ar (autoregressive; the noise level is the number of hidden positions at the end). "
        "Forward-reverse re-masks a fraction κ of a string's tokens (or hides its last tokens) and "
        "resamples them with the model. The same estimator runs on the language's exact law (the exact "
        "engine); the exact curve is its expectation, with no Monte Carlo."
    )
    page.figure(
        "text_levels.png", "Commitment of every level: network (dots), exact curve (lines), exact engine (x)."
    )
    for name, model in text["models"].items():
        rows = []
        for row in model["levels"]:
            diff = row["difference_t_half"]
            rows.append(
                [
                    row["level"],
                    row["t_half"],
                    row["t_half_ci"],
                    row["exact_engine_t_half"],
                    row["exact_t_half"],
                    diff["difference"],
                    diff["ci"],
                    row["verdict"],
                ]
            )
        page.paragraph(
            f"{name} ({model['axis']}); card: valid samples {model['card']['valid_fraction']}, mean TV of "
            f"its token predictions to the exact posterior {model['card']['prediction_tv_mean']}."
        )
        page.table(
            [
                "level",
                "t½ network",
                "95% CI",
                "t½ exact engine",
                "t½ exact",
                "difference",
                "95% CI",
                "verdict",
            ],
            rows,
            missing="a crossing outside the measured levels (censored).",
        )


# ------------------------------------------------------------------------------ 8. text-to-image
def _interval(value, interval) -> str:
    if value is None or not math.isfinite(value):
        return "censored"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _start_words(start: dict) -> str:
    """The sentence on where sampling starts (the terminal-SNR note of the shipped schedule)."""
    return (
        f"Both pipelines keep Stable Diffusion's scaled-linear noise schedule, whose noisiest state is not "
        f"pure noise: sampling starts at timestep {start['timestep']} (OU time {start['ou_time']:.2f}), "
        f"where the signal coefficient is still {start['signal']:.3f} (SNR {start['snr']:.2g}), so the "
        "prior N(0, I) is only approximately the noised law there, and nothing is measured above that "
        "OU time (a window starting higher shows as censored)."
    )


def _fork_words(fork_time: float) -> str:
    if math.isinf(fork_time):
        return "draws its candidates from the prior (the window is still open at the first step)"
    return f"forks at OU time {fork_time:.3f}"


def text_to_image_page(page, summary: dict) -> None:
    """Section 8 of the demo page from ``summary["text_to_image"]``."""
    t2i = summary["text_to_image"]
    fair, windows, memo = t2i["fairness"], t2i["windows"], t2i["memorisation"]
    meta = fair["metadata"]
    page.heading("8. Text-to-image audits")
    page.paragraph(
        f"A Stable Diffusion pipeline (CLIP text encoder, VAE, cross-attention U-Net, classifier-free "
        f"guidance {meta['model']['guidance_scale']:g}, {meta['model']['num_inference_steps']} DDIM steps "
        f"with eta = 1) trained on captioned shapes, where the prompt '{FAIRNESS_PROMPT}' without a named "
        "background carried a stereotype in training (blue 80%). Every number below is graded by readers "
        f"independent of the one that steers: the {meta['selector']} CNN selects, the analytic readers and "
        "the shapes-classifier judge. All four methods start from the same initial noises and draws, so "
        "sample i of each method is paired with sample i of plain sampling."
    )
    if t2i.get("start"):
        page.paragraph(_start_words(t2i["start"]))
    page.figure(
        "t2i_audits.png",
        f"Left: commitment of the background per prompt (cloning: the share of continuations forked at OU "
        f"time t that keep their trajectory's background, read by {windows['read_by']}). Right: the four "
        "memorisation scores of every audited prompt, members by duplication count and held-out non-members.",
    )
    page.table(
        ["prompt", "base rate", "T_after (95% CI)", "t½ (95% CI)", "T_before (95% CI)", "NFEs"],
        [
            [
                prompt,
                w.get("base_rate"),
                _interval(w.get("t_after"), w.get("t_after_ci")),
                _interval(w.get("t_half"), w.get("t_half_ci")),
                _interval(w.get("t_before"), w.get("t_before_ci")),
                windows["nfe"][prompt],
            ]
            for prompt, w in windows["prompts"].items()
        ],
        missing="the background never varies among this prompt's generations (no window).",
    )
    page.paragraph(
        f"Fairness of '{fair['prompt']}': the {fair['attribute']} toward the uniform target, "
        f"n = {meta['n']} per method; the rebalancing {_fork_words(json_float(fair['fork_time']))} (the "
        f"selector's measured window; measuring it cost {fair['window_nfe']} NFEs once for this prompt). "
        "Other attributes: the largest TV between the method's and the plain samples, with its paired 95% "
        "interval ('unchanged' when every per-value difference's interval holds 0). KID: to clean renderings "
        "of a circle with every other attribute uniform, in the shapes classifier's feature space."
    )
    rows = []
    for row in fair["table"]:
        worst = max(row["others"].items(), key=lambda kv: kv[1]["tv"])
        rows.append(
            [
                row["method"],
                _interval(row["tv"], row["tv_ci"]),
                f"{worst[0]} {_interval(worst[1]['tv'], worst[1]['tv_ci'])}",
                "yes" if row["others_unchanged"] else "no",
                _interval(row["adherence"], row["adherence_ci"]),
                _interval(row.get("kid"), row.get("kid_ci")),
                row["nfe"],
                row["extra_nfe"],
            ]
        )
    page.table(
        [
            "method",
            "TV to target [95% CI]",
            "other attributes: largest TV vs plain",
            "others unchanged",
            "adherence",
            "KID",
            "NFEs",
            "extra NFEs",
        ],
        rows,
        missing="not computed.",
    )
    sets = memo["prompts"]
    page.paragraph(
        f"Memorisation: {len(sets['members'])} member prompts (duplicated "
        f"{', '.join(str(c) for c in sorted({m['count'] for m in sets['members']}))} times in training), "
        f"{len(sets['non_members'])} held-out non-members and {len(sets['calibration'])} calibration prompts "
        f"that only set each score's threshold; graded by {memo['graded_by']}. TPR at the threshold that "
        f"{memo['fpr']:.1%} of calibration prompts exceed ({len(sets['calibration'])} calibration prompts "
        "resolve false-positive rates down to one in their number), and the FPR it realises on the held-out "
        "non-members."
    )
    page.table(
        ["score", "duplication", "ROC-AUC [95% CI]", "TPR [95% CI]", "held-out FPR", "NFEs per prompt"],
        [
            [
                name,
                "all" if row["count"] is None else f"×{row['count']}",
                _interval(row["auc"], row["auc_ci"]),
                _interval(row["tpr"], row["tpr_ci"]),
                row["fpr_held_out"],
                memo["nfe_per_prompt"][name],
            ]
            for name, table in memo["table"].items()
            for row in table
        ],
        missing="not computed.",
    )
