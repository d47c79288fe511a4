"""Checks of a matplotlib figure as it is rendered: overlapping text, text off the canvas, legends over
the data, and text too small to read where the report shows it.

:func:`layout_problems` draws the figure on Agg at the dpi it is saved with and reads back what was
drawn: the window extent of every :class:`~matplotlib.text.Text` that the renderer actually painted
(tick labels inside the view, axis labels, titles, legend entries, annotations; never an empty or
invisible one), and the extent of every legend. It reports

* two text boxes that overlap by more than ``tolerance_px`` in both directions (the text of a legend is
  not compared with its own frame);
* a legend that covers another text, or another legend;
* a legend that covers drawn data: the lines, collections (scatter points, line segments, error bars,
  bands) and patches of the figure's axes, sampled every 2 px along their outlines in display
  coordinates and kept where they lie inside their axes, counted inside the legend's box;
* text outside the canvas (only when the figure is saved without ``bbox_inches="tight"``, which widens
  the canvas to hold every text);
* text smaller than ``min_points`` both at the size it is saved (``fontsize`` in points) and as the
  report's page shows it: the page's column is :data:`PAGE_WIDTH_PX` CSS pixels wide and shrinks a
  wider image to fit, at :data:`CSS_DPI` CSS pixels per inch.

The minimum of 7 pt: at the report's 110 dpi it is 10.7 image pixels, and the page shows a figure of at
most 960 px at that size, as 8 pt type. The issue's complaint was the like-for-like figure's 8 pt legend
in a 13-inch figure, shown as ~8 px (6 pt) type after the page shrank it to its column.

Used by the tests (``tests/test_report_layout.py``) on every figure that critwin draws.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import numpy as np

from critwin.report.html import PAGE_WIDTH_PX

__all__ = ["layout_problems", "CSS_DPI", "PAGE_WIDTH_PX", "MIN_POINTS"]

#: CSS pixels per inch: the scale at which a browser shows a point of type.
CSS_DPI = 96.0
#: The smallest text accepted, in points, at the saved size and as the page shows it.
MIN_POINTS = 7.0
#: Spacing of the points sampled along a drawn outline, in pixels.
_SAMPLE_PX = 2.0
#: Padding of ``savefig(bbox_inches="tight")`` around the tight box, in inches (matplotlib's default).
_TIGHT_PAD_IN = 0.1


@contextmanager
def _at_dpi(fig, dpi: float):
    old = fig.dpi
    fig.set_dpi(dpi)
    try:
        yield
    finally:
        fig.set_dpi(old)


def _drawn_texts(fig):
    """Draw ``fig`` on Agg; return (renderer, the Text artists the renderer painted, in drawing order)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    drawn: dict[int, object] = {}
    paint = renderer.draw_text

    def record(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and str(s).strip():
            drawn.setdefault(id(mtext), mtext)
        return paint(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    renderer.draw_text = record  # an instance attribute: shadows the method for this one draw
    try:
        fig.draw(renderer)
    finally:
        del renderer.draw_text
    return renderer, list(drawn.values())


def _name(text) -> str:
    return repr(" ".join(text.get_text().split())[:40])


def _legends(fig) -> list:
    found = [ax.get_legend() for ax in fig.axes]
    return [legend for legend in [*found, *fig.legends] if legend is not None and legend.get_visible()]


def _overlap(a, b, tolerance: float) -> bool:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > tolerance and height > tolerance


def _overlapping(boxes, texts, tolerance: float) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` of the texts whose boxes overlap by more than ``tolerance`` both ways."""
    if len(texts) < 2:
        return []
    x0, y0, x1, y1 = np.array([boxes[id(t)].extents for t in texts]).T
    width = np.minimum(x1[:, None], x1[None, :]) - np.maximum(x0[:, None], x0[None, :])
    height = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
    i, j = np.nonzero(np.triu((width > tolerance) & (height > tolerance), k=1))
    return list(zip(i.tolist(), j.tolist(), strict=True))


def _sample_path(path, transform) -> np.ndarray:
    """Points every :data:`_SAMPLE_PX` pixels along ``path`` in display coordinates ((n, 2); its
    vertices alone when it has no segments)."""
    pieces = []
    for polygon in path.to_polygons(transform=transform, closed_only=False):
        polygon = polygon[np.isfinite(polygon).all(axis=1)]
        if len(polygon) == 0:
            continue
        pieces.append(polygon)
        for start, end in itertools.pairwise(polygon):
            steps = int(np.hypot(*(end - start)) // _SAMPLE_PX)
            if steps > 1:
                share = np.linspace(0.0, 1.0, steps + 1)[1:-1, None]
                pieces.append(start + share * (end - start))
    return np.concatenate(pieces) if pieces else np.empty((0, 2))


def _line_points(line) -> np.ndarray:
    path = line.get_path()
    transform = line.get_transform()
    if line.get_linestyle() in ("None", "none", "", " "):  # markers only
        return transform.transform(path.vertices) if len(path.vertices) else np.empty((0, 2))
    return _sample_path(path, transform)


def _collection_points(collection) -> np.ndarray:
    from matplotlib.collections import PathCollection

    if isinstance(collection, PathCollection):  # scatter: the markers sit at the offsets
        offsets = np.asarray(collection.get_offsets(), dtype=float)
        return collection.get_offset_transform().transform(offsets) if len(offsets) else np.empty((0, 2))
    transform = collection.get_transform()
    pieces = [_sample_path(path, transform) for path in collection.get_paths()]
    return np.concatenate(pieces) if pieces else np.empty((0, 2))


def _data_points(ax) -> list[tuple[str, np.ndarray]]:
    """(label, drawn points inside the axes) of every visible line, collection and patch of ``ax``."""
    out = []
    box = ax.bbox
    for artist in [*ax.lines, *ax.collections, *ax.patches]:
        if not artist.get_visible():
            continue
        if artist in ax.lines:
            points = _line_points(artist)
        elif artist in ax.collections:
            points = _collection_points(artist)
        else:
            points = _sample_path(artist.get_path(), artist.get_transform())
        inside = (
            (points[:, 0] >= box.x0)
            & (points[:, 0] <= box.x1)
            & (points[:, 1] >= box.y0)
            & (points[:, 1] <= box.y1)
        )
        if inside.any():
            label = artist.get_label()
            named = label and not label.startswith("_")  # "_child0", "_nolegend_": matplotlib's names
            out.append((label if named else type(artist).__name__, points[inside]))
    return out


def _legend_over_data(fig, legends, renderer, tolerance: float) -> list[str]:
    problems = []
    data = [(ax, label, points) for ax in fig.axes for label, points in _data_points(ax)]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        covered = {}
        for _, label, points in data:
            inside = (
                (points[:, 0] > box.x0 + tolerance)
                & (points[:, 0] < box.x1 - tolerance)
                & (points[:, 1] > box.y0 + tolerance)
                & (points[:, 1] < box.y1 - tolerance)
            )
            if inside.any():
                covered[label] = covered.get(label, 0) + int(inside.sum())
        if covered:
            what = ", ".join(f"{label!r} ({n})" for label, n in sorted(covered.items()))
            problems.append(f"legend {_legend_name(legend)} covers drawn data points: {what}")
    return problems


def _legend_name(legend) -> str:
    texts = [t for t in legend.get_texts() if t.get_text()]
    return _name(texts[0]) + "..." if texts else "(empty)"


def _saved_width_px(fig, renderer, dpi: float, tight: bool) -> float:
    if not tight:
        return fig.get_figwidth() * dpi
    return (fig.get_tightbbox(renderer).width + 2 * _TIGHT_PAD_IN) * dpi


def _small_text(texts, dpi: float, width_px: float, page_width_px: float, min_points: float) -> list[str]:
    shrink = min(1.0, page_width_px / width_px)
    page_scale = dpi / CSS_DPI * shrink  # points of type shown on the page per point in the figure
    problems = []
    for text in texts:
        size = text.get_fontsize()
        shown = size * page_scale
        if size < min_points or shown < min_points:
            problems.append(
                f"text {_name(text)} is {size:.3g} pt, shown on the page as {shown:.3g} pt "
                f"(image {width_px:.0f} px wide at {dpi:g} dpi in a {page_width_px:g} px column; "
                f"minimum {min_points:g} pt)"
            )
    return problems


def layout_problems(
    fig,
    *,
    dpi: float = 110.0,
    tight: bool = True,
    min_points: float = MIN_POINTS,
    page_width_px: float = PAGE_WIDTH_PX,
    tolerance_px: float = 1.0,
) -> list[str]:
    """What is wrong with ``fig`` as it is saved at ``dpi`` (see the module's docstring): one sentence
    per problem, none when the figure is clean.

    Parameters
    ----------
    fig : a matplotlib Figure (drawn here on Agg, as ``savefig`` would).
    dpi : the dpi it is saved with.  tight : whether it is saved with ``bbox_inches="tight"``.
    min_points : the smallest text accepted, at the saved size and as the page shows it.
    page_width_px : the width in CSS pixels of the column that shows the image (``math.inf``: an image
        shown at its own size, such as a file of its own).
    tolerance_px : overlaps of at most this many pixels (at ``dpi``) are not reported.
    """
    if not dpi > 0:
        raise ValueError(f"dpi must be > 0, got {dpi}")
    if not page_width_px > 0:
        raise ValueError(f"page_width_px must be > 0, got {page_width_px}")
    if not tolerance_px >= 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    with _at_dpi(fig, dpi):
        renderer, texts = _drawn_texts(fig)
        return _problems(fig, renderer, texts, dpi, tight, min_points, page_width_px, tolerance_px)


def _problems(fig, renderer, texts, dpi, tight, min_points, page_width_px, tolerance) -> list[str]:
    from matplotlib.text import Text

    boxes = {id(t): Text.get_window_extent(t, renderer) for t in texts}  # the text, not an arrow
    problems = [
        f"texts {_name(texts[i])} and {_name(texts[j])} overlap"
        for i, j in _overlapping(boxes, texts, tolerance)
    ]
    legends = _legends(fig)
    for legend in legends:
        own = {id(t) for t in [*legend.get_texts(), legend.get_title()]}
        box = legend.get_window_extent(renderer)
        for text in texts:
            if id(text) not in own and _overlap(box, boxes[id(text)], tolerance):
                problems.append(f"legend {_legend_name(legend)} covers text {_name(text)}")
    for a, b in itertools.combinations(legends, 2):
        if _overlap(a.get_window_extent(renderer), b.get_window_extent(renderer), tolerance):
            problems.append(f"legends {_legend_name(a)} and {_legend_name(b)} overlap")
    problems += _legend_over_data(fig, legends, renderer, tolerance)
    if not tight:
        canvas = fig.bbox
        for text in texts:
            box = boxes[id(text)]
            outside = max(canvas.x0 - box.x0, box.x1 - canvas.x1, canvas.y0 - box.y0, box.y1 - canvas.y1)
            if outside > tolerance:
                problems.append(f"text {_name(text)} is {outside:.0f} px outside the canvas")
    width = _saved_width_px(fig, renderer, dpi, tight)
    problems += _small_text(texts, dpi, width, page_width_px, min_points)
    return problems
