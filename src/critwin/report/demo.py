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

Each section is computed in :mod:`critwin.report.sections`, drawn by :mod:`critwin.report.figures`
and written into the page by :mod:`critwin.report.page`; this module runs them in order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from critwin._io import atomic_write_json, atomic_write_text
from critwin._validation import check_eps
from critwin.report import figures, sections
from critwin.report.output import MARKER, build_atomically, check_report_dir
from critwin.report.page import demo_page
from critwin.report.sections import DemoSizes, fitted_class_mixture, hierarchical_mixture

__all__ = ["run_demo", "DemoSizes", "MARKER", "hierarchical_mixture", "fitted_class_mixture"]


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
    eps = check_eps(eps)
    out = check_report_dir(Path(out))
    sizes = DemoSizes.quick() if quick else DemoSizes()
    summary: dict[str, Any] = {MARKER: True, "seed": seed, "quick": quick, "sizes": sizes.__dict__}

    def build(work: Path) -> None:
        start = time.perf_counter()
        torch.manual_seed(seed)
        summary["section_seconds"] = _run_sections(work, summary, sizes, eps, seed, progress)
        summary["runtime_seconds"] = time.perf_counter() - start
        atomic_write_text(work / "index.html", demo_page(summary))
        atomic_write_json(work / "summary.json", summary)

    build_atomically(out, build)
    return summary


def _run_sections(
    work: Path, summary: dict, sizes: DemoSizes, eps: float, seed: int, progress: bool
) -> dict[str, float]:
    """Compute and draw the four sections into ``summary`` and ``work``; returns seconds per section."""
    timings = {}
    mark = time.perf_counter()
    theory = sections.theory_section(sizes, eps, torch.Generator().manual_seed(seed))
    summary["theory"] = {"figures": figures.plot_theory(theory, work), **theory.summary()}
    timings["theory"], mark = time.perf_counter() - mark, time.perf_counter()
    digits = sections.digits_section(sizes, seed, progress)
    summary["digits"] = {"figures": figures.plot_digits(digits, work), **digits.summary()}
    timings["digits"], mark = time.perf_counter() - mark, time.perf_counter()
    comparison = sections.comparison_section(sizes, eps, seed)
    drawn = figures.plot_comparison(comparison, summary["digits"]["per_class"], work)
    summary["comparison"] = {"figures": drawn, **comparison.summary()}
    timings["comparison"], mark = time.perf_counter() - mark, time.perf_counter()
    diagnostics = sections.diagnostics_section(sizes, summary["digits"], seed)
    summary["diagnostics"] = {"figures": figures.plot_diagnostics(diagnostics, work), **diagnostics.summary()}
    timings["diagnostics"] = time.perf_counter() - mark
    return timings
