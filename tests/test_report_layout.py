"""Every figure critwin draws, checked as rendered (issue 25): no two text boxes overlap, no legend over
the data or over text, no text smaller than 7 pt where the report shows it (critwin.report._layout).

The checker itself is tested first on synthetic figures whose problems are built in by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import math  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from critwin.diagnostics.fairness import RebalanceResult  # noqa: E402
from critwin.diagnostics.feature_atlas import AtlasResult  # noqa: E402
from critwin.diagnostics.privacy import MembershipAudit  # noqa: E402
from critwin.experiments.estimation import estimate_window  # noqa: E402
from critwin.experiments.forward_reverse import ForwardReverseResult  # noqa: E402
from critwin.report import figures, sections  # noqa: E402
from critwin.report._layout import layout_problems  # noqa: E402
from critwin.report.invariance import InvarianceSection, ModelWindow  # noqa: E402
from critwin.theory.tree import hierarchy  # noqa: E402


@pytest.fixture
def figure():
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    yield fig, ax
    plt.close(fig)


# ------------------------------------------------------------------------------------- the checker
def test_clean_figure_has_no_problem(figure):
    fig, ax = figure
    ax.plot([0, 1, 2], [0, 1, 4], "o-", label="a curve")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("a title")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    assert layout_problems(fig) == []


def test_two_texts_on_one_spot_are_reported(figure):
    fig, ax = figure
    ax.text(0.5, 0.5, "first label", fontsize=10)
    ax.text(0.52, 0.5, "second label", fontsize=10)  # 2% of the axes to the right: same line, overlapping
    ax.text(0.5, 0.1, "far away", fontsize=10)
    problems = layout_problems(fig)
    assert problems == ["texts 'first label' and 'second label' overlap"]


def test_crowded_tick_labels_are_reported(figure):
    fig, ax = figure
    ax.set_xticks(range(40), [f"label {k}" for k in range(40)])
    problems = layout_problems(fig)
    assert any(p.startswith("texts 'label 0' and 'label 1' overlap") for p in problems)


def test_legend_over_the_data_is_reported(figure):
    fig, ax = figure
    ax.plot([0, 1], [1, 1], label="flat line at the top")  # runs through an upper-right legend
    ax.plot([0, 1], [0, 0.2], label="low line")
    ax.legend(loc="upper right")
    problems = layout_problems(fig)
    assert len(problems) == 1 and "covers drawn data points: 'flat line at the top'" in problems[0]
    ax.get_legend().remove()
    ax.legend(loc="center right")  # between the two lines: covers neither
    assert layout_problems(fig) == []


def test_legend_over_an_unlabelled_line_collection_is_reported(figure):
    from matplotlib.collections import LineCollection

    fig, ax = figure
    ax.add_collection(LineCollection([[(0.0, 0.95), (1.0, 0.95)]], colors="k"))
    ax.plot([0, 1], [0, 0.1], label="data")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right")
    (problem,) = layout_problems(fig)
    assert "covers drawn data points: 'LineCollection'" in problem


def test_small_text_is_reported_at_the_saved_size_and_as_the_page_shows_it(figure):
    fig, ax = figure
    ax.set_title("tiny", fontsize=6)
    (problem,) = layout_problems(fig)
    assert problem.startswith("text 'tiny' is 6 pt")
    ax.set_title("fine", fontsize=8)
    assert layout_problems(fig) == []
    # 8 pt in a figure twice as wide as the page's column: shown at 8 * 110 / 96 / ~2 = ~4.6 pt.
    fig.set_size_inches(18.0, 4.0)
    problems = layout_problems(fig)
    assert any(p.startswith("text 'fine' is 8 pt, shown on the page as 4.") for p in problems), problems


def test_text_off_the_canvas_is_reported_only_without_a_tight_box(figure):
    fig, ax = figure
    ax.text(1.5, 0.5, "beyond the right edge", transform=ax.transAxes)
    assert layout_problems(fig) == []  # bbox_inches="tight" widens the saved image to hold it
    (problem,) = layout_problems(fig, tight=False)
    assert "'beyond the right edge' is" in problem and "outside the canvas" in problem


def test_empty_and_invisible_texts_are_ignored(figure):
    fig, ax = figure
    ax.text(0.5, 0.5, "shown")
    ax.text(0.5, 0.5, "hidden").set_visible(False)
    ax.text(0.5, 0.5, "")
    ax.text(0.5, 0.5, "   ")
    assert layout_problems(fig) == []


def test_bad_arguments(figure):
    fig, _ = figure
    with pytest.raises(ValueError, match="dpi"):
        layout_problems(fig, dpi=0)
    with pytest.raises(ValueError, match="page_width_px"):
        layout_problems(fig, page_width_px=-1)
    with pytest.raises(ValueError, match="tolerance_px"):
        layout_problems(fig, tolerance_px=-1)


# --------------------------------------------------------------------------- small inputs of the figures
# Forward–reverse results drawn here from known commitment curves c_k(t) (a logistic in log t per class),
# read by the real estimator: the figures see the numbers, labels and ranges the demo's sections give.
DIGIT_TIMES = [0.0147, 0.0543, 0.208, 0.463, 0.817, 1.54, 2.48, 4.57]  # the demo's OU times, 50 steps
SHAPES_THEORY = {  # the shipped shapes model's fitted attribute mixture at quick sizes (issue 25)
    "background": (3.979, (3.955, 4.004), 4.824),
    "shape": (3.187, (3.162, 3.211), 3.920),
    "colour": (3.677, (3.652, 3.701), 4.668),
    "mark": (2.8457, (2.8456, 2.8458), 3.702),
}
SHAPES_HALF = {"background": 2.98, "colour": 2.61, "mark": 2.22, "shape": 0.48}


def _forward_reverse(times, half_times, n_per_class, seed):
    """Each source keeps its class k with probability 1 / (1 + (t / t½_k)^3), else a uniform other."""
    g = torch.Generator().manual_seed(seed)
    n_classes = len(half_times)
    source = torch.arange(n_classes * n_per_class) % n_classes
    t = torch.tensor(times, dtype=torch.float64)[:, None]
    half = torch.tensor(half_times, dtype=torch.float64)[source][None, :]
    keep = torch.rand(len(times), source.numel(), generator=g, dtype=torch.float64) < 1 / (
        1 + (t / half) ** 3
    )
    other = (source + torch.randint(1, n_classes, (len(times), source.numel()), generator=g)) % n_classes
    times = torch.tensor(times, dtype=torch.float64)
    return ForwardReverseResult(
        requested_times=times,
        times=times,
        indices=torch.arange(len(times)),
        steps=None,
        labels=torch.where(keep, source, other),
        source_labels=source.expand(len(times), -1).clone(),
        source_ids=torch.arange(source.numel()),
        n_per_time=1,
    )


def _estimate(fr, **kwargs):
    return estimate_window(fr, n_boot=20, seed=0, **kwargs)


class _Steps:
    """The sampler-step labels of a 50-step DDPM (timesteps 999, 979, ...) at the demo's OU times."""

    def locate(self, t):
        return SimpleNamespace(index=int(np.argmin(np.abs(np.asarray(DIGIT_TIMES[::-1]) - t))))

    def step_label(self, index):
        return 999 - 20 * (index * 6)


def _images(n, channels, size, seed):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def digits():
    net = _forward_reverse(DIGIT_TIMES, [0.9, 0.4, 0.6, 0.7, 1.0, 0.5, 1.3, 0.45, 0.6, 0.7], 6, seed=1)
    gmm = _forward_reverse(DIGIT_TIMES, [0.6, 0.7, 0.3, 0.5, 1.0, 0.4, 0.5, 0.45, 0.4, 0.5], 6, seed=2)
    clone = _forward_reverse(DIGIT_TIMES, [0.8] * 10, 4, seed=3)
    return SimpleNamespace(
        net=net, gmm=gmm, est=_estimate(net), gmm_est=_estimate(gmm), clone=_estimate(clone)
    )


def _saved(monkeypatch):
    """Every figure the report saves (``figures.save_figure``), with its problems as saved (110 dpi,
    tight)."""
    found = {}
    save = figures.save_figure

    def checked(fig, directory, name):
        found[name] = layout_problems(fig, dpi=figures.DPI)
        return save(fig, directory, name)

    monkeypatch.setattr(figures, "save_figure", checked)
    return found


def _check(found, names):
    assert sorted(found) == sorted(names)
    problems = [f"{name}: {problem}" for name, listed in found.items() for problem in listed]
    assert not problems, "\n".join(problems)


def _assert_lays_out(fig, **kwargs) -> None:
    """No layout problem in ``fig`` (``layout_problems`` with ``kwargs``); the figure is closed either way."""
    try:
        problems = layout_problems(fig, **kwargs)
        assert not problems, "\n".join(problems)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------ the report's figures
def test_theory_figures(monkeypatch, tmp_path):
    found = _saved(monkeypatch)
    section = sections.theory_section(sections.DemoSizes.quick(), 0.1, torch.Generator().manual_seed(0))
    figures.plot_theory(section, tmp_path)
    _check(found, ["theory_hierarchy.png", "theory_bound.png"])


def test_digits_figures(monkeypatch, tmp_path, digits):
    found = _saved(monkeypatch)
    rows = [_images(3, 1, 8, seed=k) for k in range(len(DIGIT_TIMES))]
    section = sections.DigitsSection(
        model=None,
        process=_Steps(),
        fr=digits.net,
        est=digits.est,
        est_clone=digits.clone,
        n_sources=60,
        sources=_images(60, 1, 8, seed=0),
        source=_images(1, 1, 8, seed=0),
        strip_times=DIGIT_TIMES,
        strip_rows=rows,
    )
    figures.plot_digits(section, tmp_path)
    _check(found, ["digits_commitment.png", "digits_strip.png"])


def test_like_for_like_figures(monkeypatch, tmp_path, digits):
    found = _saved(monkeypatch)
    difference = sections.paired_t_half_difference(
        digits.net, digits.gmm, 20, torch.Generator().manual_seed(0)
    )
    theory = {k: {"t_after": 0.1 + 0.01 * k, "t_before": 2.5 - 0.02 * k, "empty": False} for k in range(10)}
    section = sections.ComparisonSection(
        gmm_fr=digits.gmm,
        gmm_est=digits.gmm_est,
        difference=difference,
        theory_per_class=theory,
        speciation_time=0.52,
        top_eigenvalue=2.8,
        eps=0.1,
    )
    figures.plot_comparison(section, digits.est, tmp_path)
    _check(found, ["likeforlike_curves.png", "theory_vs_model.png"])


def test_diagnostics_figure(monkeypatch, tmp_path):
    found = _saved(monkeypatch)
    times = np.array(DIGIT_TIMES)

    def audit(shift, auc):
        curve = 1 / (1 + (times / shift) ** 3)
        return MembershipAudit(
            times, curve, 0.8 * curve, np.ones(6), np.ones(8), np.ones(8), auc, (auc - 0.1, auc + 0.1), {}
        )

    before, after = np.full(10, 0.1), np.full(10, 0.1)
    before[[0, 1]], after[[2, 3]] = (0.05, 0.15), (0.12, 0.08)
    fair = RebalanceResult(
        before, after, np.full(10, 0.1), 0.05, 0.02, 2.48, 699, torch.zeros(1), torch.zeros(1), 4
    )
    section = sections.DiagnosticsSection(
        audits={"digits-memorise": audit(2.0, 0.91), "digits": audit(0.8, 0.52)}, fair=fair
    )
    figures.plot_diagnostics(section, tmp_path)
    _check(found, ["diagnostics.png"])


def test_parameterisation_figure(monkeypatch, tmp_path, digits):
    found = _saved(monkeypatch)
    schedulers = {
        "DDPMScheduler": type("DDPMScheduler", (), {}),
        "DDIMScheduler": type("DDIMScheduler", (), {}),
    }
    schedulers["FlowMatchEulerDiscreteScheduler"] = type("FlowMatchEulerDiscreteScheduler", (), {})
    runs = [
        ("digits", "epsilon", "DDPMScheduler"),
        ("digits+ddim", "epsilon", "DDIMScheduler"),
        ("digits-flow", "flow", "FlowMatchEulerDiscreteScheduler"),
        ("digits-v", "v_prediction", "DDPMScheduler"),
    ]
    windows = {
        name: ModelWindow(
            name, kind, 0.99, SimpleNamespace(scheduler=schedulers[scheduler]()), digits.net, digits.est
        )
        for name, kind, scheduler in runs
    }
    figures.plot_invariance(InvarianceSection(windows=windows, pairs=[], differences=[]), tmp_path)
    _check(found, ["parameterisation.png"])


def _shapes_atlas():
    """An AtlasResult of the shapes model's four attributes: measured from known curves, and the theory
    rows of its fitted mixture (:data:`SHAPES_THEORY`)."""
    estimates = {}
    for name, half in SHAPES_HALF.items():
        fr = _forward_reverse([0.0147, 0.119, 0.817, 1.54, 2.48, 4.57], [half, half], 12, seed=len(name))
        estimates[name] = _estimate(fr, per_class=False)
    attributes = {
        name: {"t_merge": t, "t_merge_bracket": list(bracket), "t_bound": bound}
        for name, (t, bracket, bound) in SHAPES_THEORY.items()
    }
    return AtlasResult(
        features=tuple(SHAPES_HALF),
        estimates=estimates,
        forward_reverse=None,
        theory={"attributes": attributes},
        metadata={"clock": "ou"},
    )


def test_shapes_figures(monkeypatch, tmp_path):
    found = _saved(monkeypatch)
    times = [0.0147, 0.0543, 0.119, 0.208, 0.463, 0.817, 1.54, 4.57]  # full sizes: 8 strip times
    labels = {name: np.zeros((len(times), 3), dtype=int) for name in SHAPES_HALF}
    labels["background"][-2:] = 1
    labels["shape"][-1] = labels["mark"][-1] = labels["colour"][-3:] = 1
    section = sections.ShapesSection(
        atlas=_shapes_atlas(),
        source=_images(1, 3, 16, seed=0),
        strip_times=times,
        strip=_images(len(times) * 3, 3, 16, seed=1).reshape(len(times), 3, 3, 16, 16),
        strip_labels=labels,
        source_labels=dict.fromkeys(SHAPES_HALF, 0),
    )
    figures.plot_shapes(section, tmp_path)
    _check(found, ["shapes_atlas.png", "shapes_strip.png"])


def _level_comparison(model, clock, times, seed):
    from critwin.diagnostics.text_windows import ExactCurve
    from critwin.report.text import LevelComparison

    levels = ("class", "level1", "level2", "string")
    half = {"class": 0.7, "level1": 0.5, "level2": 0.35, "string": 0.15}
    scale = max(times)
    est = {}
    for k, name in enumerate(levels):
        fr = _forward_reverse(times, [half[name] * scale] * 2, 8, seed=seed + k)
        est[name] = _estimate(fr, per_class=False)
    grid = np.linspace(0.0, scale, 11)
    curves = {
        n: ExactCurve(grid, 0.5 + 0.5 / (1 + (grid / (half[n] * scale)) ** 3), 0.5, clock) for n in levels
    }
    return LevelComparison(model, clock, levels, None, None, est, est, curves, {}, [])


def test_text_figure(monkeypatch, tmp_path):
    from critwin.report import text

    found = _saved(monkeypatch)
    comparisons = {
        "rhm-mdm": _level_comparison("rhm-mdm", "kappa", [0.0, 0.25, 0.5, 0.75, 1.0], seed=10),
        "rhm-ar": _level_comparison("rhm-ar", "hidden", [float(k) for k in range(9)], seed=20),
    }
    text.plot_text(text.TextSection(comparisons, {}), tmp_path)
    _check(found, ["text_levels.png"])


def test_text_to_image_figure(monkeypatch, tmp_path):
    from critwin.diagnostics.prompt_privacy import PromptSets
    from critwin.report import text_to_image

    found = _saved(monkeypatch)
    times = np.array([0.1, 0.4, 1.0, 2.0])
    windows = {
        prompt: {
            "constant": False,
            "times": times,
            "c": 1 / (1 + (times / half) ** 3) * 0.5 + 0.5,
            "t_half": half,
        }
        for prompt, half in (("a circle", 1.18), ("a red circle", np.inf), ("a circle with a mark", np.inf))
    }
    windows["a shape"] = {"constant": True}
    counts = [1] * 8 + [4] * 8 + [16] * 8 + [64] * 8
    sets = PromptSets(
        [f"m{k}" for k in range(32)], counts, [f"n{k}" for k in range(8)], [f"c{k}" for k in range(8)]
    )
    g = np.random.default_rng(0)
    scores = {name: g.normal(size=48) for name in ("commitment", "wen", "loss", "copying")}
    memorisation = SimpleNamespace(rows=dict.fromkeys(scores), sets=sets, scores=scores)
    section = text_to_image.TextToImageSection(None, windows, {}, memorisation)
    text_to_image.plot_text_to_image(section, tmp_path)
    _check(found, ["t2i_audits.png"])


# ----------------------------------------------------------------------- figures outside the report
def test_tree_dendrogram_of_critwin_theory_plot():
    """``Tree.plot()`` on its own figure (``critwin theory --plot``, saved at 120 dpi)."""
    tree = hierarchy(
        sections.hierarchical_mixture(), 0.1, generator=torch.Generator().manual_seed(0), tol=2e-2
    )
    ax = tree.plot()
    _assert_lays_out(ax.figure, dpi=120)


def test_atlas_figure_of_critwin_atlas():
    """The figure ``critwin atlas --out`` writes (``atlas.png``)."""
    from critwin.cli.atlas import atlas_figure

    fig = atlas_figure(_shapes_atlas())
    _assert_lays_out(fig, dpi=110)


def test_window_estimate_plot(digits):
    ax = digits.est.plot()
    _assert_lays_out(ax.figure)


def _wide_tree(n_leaves):
    """A two-level tree of ``n_leaves`` leaves in clusters of 8, every node with a window (built by hand:
    only its drawing is under test)."""
    from critwin.theory.tree import Node, Tree
    from critwin.theory.windows import Window

    def node(components, time, children=(), window=(1.0, 2.0)):
        w = Window(*window, eps=0.1) if window is not None else None
        return Node(list(components), time, list(children), window=w)

    clusters = []
    for start in range(0, n_leaves, 8):
        members = range(start, min(start + 8, n_leaves))
        leaves = [node([k], 0.0, window=(0.5, 2.5 + 0.1 * (k % 3))) for k in members]
        clusters.append(node(members, 3.0, leaves, window=(3.5, 5.0)))
    return Tree(node(range(n_leaves), 6.0, clusters, window=None), 0.1)


@pytest.mark.parametrize("n_leaves", [20, 64])  # labelled leaves; unlabelled above max_leaves (60)
def test_wide_tree_dendrograms(n_leaves):
    """A wide tree's own figure (up to 16 in) is a file of its own, shown at its size: text is checked
    at the saved size only (no page column)."""
    ax = _wide_tree(n_leaves).plot()
    _assert_lays_out(ax.figure, dpi=120, page_width_px=math.inf)


def test_membership_audit_plot():
    times = np.array(DIGIT_TIMES)
    curve = 1 / (1 + (times / 0.8) ** 3)
    audit = MembershipAudit(
        times, curve, 0.7 * curve, np.ones(6), np.ones(8), np.ones(8), 0.7, (0.6, 0.8), {}
    )
    ax = audit.plot()
    _assert_lays_out(ax.figure)


def test_tv_curve_plot():
    from critwin.mixtures import GaussianMixture
    from critwin.theory.divergence import TVCurve

    means = torch.tensor([[-1.5, 0.0], [1.5, 0.0]], dtype=torch.float64)
    ax = TVCurve(GaussianMixture(means[:1]), GaussianMixture(means[1:])).plot([0.0, 0.25, 0.5, 1.0, 2.0, 3.0])
    _assert_lays_out(ax.figure)


def test_validation_figure(tmp_path):
    """``critwin validate``'s ``validation.png``, a file of its own shown at its size (saved at 90 dpi
    without a tight box: nothing may fall off the canvas), on the quick experiment's 19 case names
    (the full one's 51 draw the same panels in more rows)."""
    from critwin.theory.validate import QUICK_DIMS, QUICK_KS, SEPARATIONS, ValidationResult, _plot

    names = [
        f"K{k}-d{d}-{sep}-0in{target}"
        for k in QUICK_KS
        for d in QUICK_DIMS
        for sep in SEPARATIONS
        for target in ("".join(map(str, range(max(1, k // 2)))) if k > 2 else "01", "0")
    ] + ["hier-d16-0in01", "hier-d16-0in0123", "hier-d16-01in0123"]
    grid = np.linspace(0.0, 6.0, 8)
    cases, rows = [], []
    for j, name in enumerate(names):
        empty = "bad" in name
        cases.append(
            {
                "name": name,
                "empty": empty,
                "bound": 0.3,
                "t_end": None if empty else 0.5,
                "t_start": None if empty else 4.0,
                "t_end_closed_upper": 0.8,
                "t_start_closed_lower": 3.5,
            }
        )
        tv = np.exp(-grid / (1 + j % 3))
        rows += [
            {"case": name, "t_hat": t, "tv_x": v, "tv_x_se": 0.01, "tv_label": 0.9 * v}
            for t, v in zip(grid, tv, strict=True)
        ]
    result = ValidationResult(rows, cases, {"eps": 0.1, "violations": 0})
    import matplotlib.figure

    drawn = []
    save = matplotlib.figure.Figure.savefig

    def checked(fig, *args, **kwargs):  # _plot builds, saves and closes its figure in one call
        tight = kwargs.get("bbox_inches") == "tight"
        drawn.append(layout_problems(fig, dpi=kwargs["dpi"], tight=tight, page_width_px=math.inf))
        return save(fig, *args, **kwargs)

    matplotlib.figure.Figure.savefig = checked
    try:
        _plot(tmp_path / "validation.png", result)
    finally:
        matplotlib.figure.Figure.savefig = save
    (problems,) = drawn
    assert not problems, "\n".join(problems)
