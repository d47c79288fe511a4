"""Every figure critwin draws, checked as rendered (issue 25): no two text boxes overlap, no legend over
the data or over text, no text smaller than 7 pt where the report shows it (critwin.report._layout).

The checker itself is tested first on synthetic figures whose problems are built in by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from critwin.report._layout import layout_problems  # noqa: E402


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
