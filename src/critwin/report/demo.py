"""``critwin demo``: critical windows in theory, on the shipped digits model, and the two compared.

The report is built in a temporary directory beside ``out`` and moved into place at the end, so an
interrupted run leaves no partial report. Sections:

1. Theory — a two-level isotropic Gaussian mixture: its hierarchy of windows, and the theorem's bound
   against the exact forward–reverse TV curve (THEORY §3–§6).
2. Real model — forward–reverse and cloning on the digits DDPM (through the diffusers adapter),
   read by the shipped classifier; the window with bootstrap CIs in OU time and scheduler steps.
3. Theory meets the model — one Gaussian per digit fitted to the training images. Like for like: the
   same forward–reverse estimator, classifier, sources and OU times on the fitted mixture (exact
   sampler) against the network, with the per-digit difference in t½; the theorem's sufficient
   windows of the mixture are shown as a third band.
4. Diagnostics — membership inference by commitment time (memorising vs main model) and a class
   rebalancing that acts only at the measured window.
5. Parameterisation invariance — the same digits model trained with the v-prediction and the
   rectified-flow objective: their class windows in OU time against the epsilon model's
   (:mod:`critwin.report.invariance`).
6. Features are decided coarse to fine — the atlas of the shipped shapes model (every attribute's
   commitment on one OU axis, measured vs the fitted attribute mixture's tree) and one image
   re-generated from increasing noise.

Each section is computed in :mod:`critwin.report.sections`, drawn by :mod:`critwin.report.figures`
and written into the page by :mod:`critwin.report.page`; this module runs them in order.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from critwin._io import atomic_write_json, atomic_write_text
from critwin._threads import set_threads
from critwin._validation import check_eps, check_seed
from critwin.report import figures, invariance, sections
from critwin.report.output import MARKER, build_atomically, check_report_dir
from critwin.report.page import demo_page
from critwin.report.sections import DemoSizes, fitted_class_mixture, hierarchical_mixture

__all__ = ["run_demo", "DemoSizes", "MARKER", "CONVENTIONS", "hierarchical_mixture", "fitted_class_mixture"]

CONVENTIONS = {
    "time": "OU time t (X_t = e^-t X_0 + sqrt(1 - e^-2t) Z)",
    "order": "every array indexed by time is in ascending OU time; steps and curves follow the same order",
    "null": "a value that is missing or not finite: a crossing outside the measured times (censored)",
}
"""Stated at the top of ``summary.json``."""


def run_demo(
    out,
    *,
    quick: bool = False,
    seed: int = 0,
    eps: float = 0.1,
    progress: bool = True,
    threads: int | None = 1,
    status=None,
) -> dict:
    """Build the demo report in ``out`` (``index.html``, PNG figures, ``summary.json``).

    Parameters
    ----------
    out : report directory (created; an earlier demo report there is replaced).
    quick : reduced sizes (seconds instead of about a minute), for tests.
    seed : every random draw derives from it.
    eps : the theory's eps.
    progress : show progress bars.
    threads : torch intra-op threads while the report is built (None: leave them); one is fastest for
        this small work and keeps the slowdown proportional when other jobs share the cores
        (see :mod:`critwin._threads`).
    status : ``status(line)`` called once per finished section (e.g. ``print`` when progress bars
        are not shown); None for silence.

    Returns
    -------
    The summary dictionary written to ``summary.json``.
    """
    eps = check_eps(eps)
    seed = check_seed(seed)
    out = check_report_dir(Path(out))
    sizes = DemoSizes.quick() if quick else DemoSizes()
    summary: dict[str, Any] = {
        MARKER: True,
        "conventions": CONVENTIONS,
        "seed": seed,
        "quick": quick,
        "sizes": sizes.__dict__,
    }

    def build(work: Path) -> None:
        start = time.perf_counter()
        torch.manual_seed(seed)
        timer = _SectionTimer(start, status)
        summary["section_seconds"] = _run_sections(work, summary, sizes, eps, seed, progress, timer)
        summary["runtime_seconds"] = time.perf_counter() - start
        summary["threads"] = torch.get_num_threads()
        atomic_write_text(work / "index.html", demo_page(summary))
        atomic_write_json(work / "summary.json", summary)

    previous = set_threads(threads) if threads is not None else None
    try:
        build_atomically(out, build)
    finally:
        if previous is not None:
            set_threads(previous)
    return summary


class _SectionTimer:
    """Seconds per section; reports each finished section through ``status``."""

    def __init__(self, start: float, status) -> None:
        self.start = self.mark = start
        self.status = status
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.mark = now - self.mark, now
        if self.status is not None:
            self.status(f"critwin demo: {name} done ({now - self.start:.0f} s elapsed)")


def print_status(line: str) -> None:
    """A status line on stdout, flushed at once (stdout to a file or pipe is block-buffered)."""
    print(line, file=sys.stdout, flush=True)


def _run_sections(
    work: Path, summary: dict, sizes: DemoSizes, eps: float, seed: int, progress: bool, timer: _SectionTimer
) -> dict[str, float]:
    """Compute and draw the six sections into ``summary`` and ``work``; returns seconds per section."""
    theory = sections.theory_section(sizes, eps, torch.Generator().manual_seed(seed))
    summary["theory"] = {"figures": figures.plot_theory(theory, work), **theory.summary()}
    timer.done("theory")
    digits = sections.digits_section(sizes, seed, progress)
    summary["digits"] = {"figures": figures.plot_digits(digits, work), **digits.summary()}
    timer.done("digits")
    comparison = sections.comparison_section(sizes, eps, seed, digits, progress)
    drawn = figures.plot_comparison(comparison, digits.est, work)
    summary["comparison"] = {"figures": drawn, **comparison.summary()}
    timer.done("comparison")
    diagnostics = sections.diagnostics_section(sizes, summary["digits"], seed)
    summary["diagnostics"] = {"figures": figures.plot_diagnostics(diagnostics, work), **diagnostics.summary()}
    timer.done("diagnostics")
    param = invariance.invariance_section(sizes, seed, digits, progress)
    summary["parameterisation"] = {"figures": figures.plot_invariance(param, work), **param.summary()}
    timer.done("parameterisation")
    if sections.shapes_available():
        shapes = sections.shapes_section(sizes, eps, seed, progress)
        summary["shapes"] = {"figures": figures.plot_shapes(shapes, work), **shapes.summary()}
        timer.done("shapes")
    else:
        summary["shapes_skipped"] = "the shipped shapes model's weights are missing (critwin train shapes)"
    return timer.seconds
