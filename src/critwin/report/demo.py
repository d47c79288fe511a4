"""``critwin demo``: critical windows in theory, on the shipped digits model, and the two compared.

The report is built in a temporary directory beside ``out`` and moved into place at the end, so an
interrupted run leaves no partial report. Sections:

1. Theory — a two-level isotropic Gaussian mixture: its hierarchy of windows, and the theorem's bound
   against the exact forward–reverse TV curve (docs/theory.md §2–§7).
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
7. Text: windows in masked diffusion and autoregression — every level of a Random Hierarchy Model
   language measured on the shipped masked-diffusion and autoregressive transformers, beside the same
   estimator on the language's exact law and its exact curve (:mod:`critwin.report.text`).
8. Text-to-image audits — on the shipped Stable Diffusion pipelines trained on captioned shapes: a
   prompt's background window, four fairness fixes on the same draws graded by independent judges, and
   memorisation detectors side by side (:mod:`critwin.report.text_to_image`).

Each section is computed in :mod:`critwin.report.sections`, drawn by :mod:`critwin.report.figures`
and written into the page by :mod:`critwin.report.page`. :data:`SECTIONS` lists them as independent
pieces of work (:class:`critwin.report.schedule.Section`: a function, its estimated cost, the sections
whose results it reads), which :func:`run_demo` runs in two worker processes, longest chain first; a
new section plugs in by adding its function to the list. Every section seeds its own generators, so
the report is the same on one process or two.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from critwin._io import atomic_write_json, atomic_write_text
from critwin._threads import using_threads
from critwin._validation import check_eps, check_positive_int, check_seed
from critwin.report import plan
from critwin.report.output import MARKER, build_atomically, check_report_dir
from critwin.report.page import demo_page
from critwin.report.plan import DemoSizes
from critwin.report.schedule import Section, SectionRun, default_workers, run_sections

# The sections' modules (diffusers, transformers, scipy, matplotlib) load in the processes that compute
# the sections: this module is what the scheduling process imports (see critwin.report.plan).
_LAZY = {"hierarchical_mixture": "critwin.report.sections", "fitted_class_mixture": "critwin.report.sections"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "run_demo",
    "demo_sections",
    "DemoContext",
    "DemoSizes",
    "MARKER",
    "CONVENTIONS",
    "hierarchical_mixture",  # noqa: F822  (loaded on first use, by __getattr__)
    "fitted_class_mixture",  # noqa: F822
]

CONVENTIONS = {
    "time": "OU time t (X_t = e^-t X_0 + sqrt(1 - e^-2t) Z)",
    "order": "every array indexed by time is in ascending OU time; steps and curves follow the same order",
    "null": "a value that is missing or not finite: a crossing outside the measured times (censored)",
    "clocks": "the text section (7) is on the discrete clocks its models state: 'kappa' (masking "
    "level in [0, 1]) or 'hidden' (positions hidden at the end); ascending there too",
}
"""Stated at the top of ``summary.json``."""


@dataclass(frozen=True)
class DemoContext:
    """What every section function receives: where to draw, the sizes, eps, the seed, progress bars."""

    work: Path
    sizes: DemoSizes
    eps: float
    seed: int
    progress: bool
    quick: bool = False


# ------------------------------------------------------------------------------------------ sections
# Each returns (summary entry, what the sections that need it receive).
def theory(ctx: DemoContext, inputs) -> tuple[dict, None]:
    from critwin.report import figures, sections

    section = sections.theory_section(ctx.sizes, ctx.eps, torch.Generator().manual_seed(ctx.seed))
    return {"figures": figures.plot_theory(section, ctx.work), **section.summary()}, None


def digits(ctx: DemoContext, inputs) -> tuple[dict, tuple]:
    from critwin.report import figures, sections

    section = sections.digits_section(ctx.sizes, ctx.seed, ctx.progress)
    summary = {"figures": figures.plot_digits(section, ctx.work), **section.summary()}
    return summary, (section, summary)


def comparison(ctx: DemoContext, inputs) -> tuple[dict, None]:
    from critwin.report import figures, sections

    section_2, _ = inputs["digits"]
    section = sections.comparison_section(ctx.sizes, ctx.eps, ctx.seed, section_2, ctx.progress)
    drawn = figures.plot_comparison(section, section_2.est, ctx.work)
    return {"figures": drawn, **section.summary()}, None


def diagnostics(ctx: DemoContext, inputs) -> tuple[dict, None]:
    from critwin.report import figures, sections

    _, digits_summary = inputs["digits"]
    section = sections.diagnostics_section(ctx.sizes, digits_summary, ctx.seed)
    return {"figures": figures.plot_diagnostics(section, ctx.work), **section.summary()}, None


def parameterisation_run(ctx: DemoContext, inputs, position: int) -> tuple[None, Any]:
    """One run of section 5 other than the reference (``position``: its place among them), measured on
    its own with the bootstrap generator it would hold inside one compare_parameterisations call."""
    from critwin.models.digits import load_digits_model
    from critwin.report import invariance, sections

    runs = _measured_elsewhere()
    model = load_digits_model()
    x0 = sections.digit_sources(model.training_data(), ctx.sizes.fr_per_class)
    window = invariance.measure_window(
        runs[position],
        x0,
        n_times=ctx.sizes.fr_grid,
        inference_steps=ctx.sizes.inference_steps,
        n_boot=ctx.sizes.n_boot,
        seed=ctx.seed,
        generator=invariance.bootstrap_generator(ctx.seed, position),
        progress=ctx.progress,
    )
    return None, window


def parameterisation(ctx: DemoContext, inputs) -> tuple[dict, None]:
    from critwin.report import figures, invariance

    section_2, _ = inputs["digits"]
    measured = {w.name: w for w in (inputs[_run_name(i)] for i in range(len(_measured_elsewhere())))}
    section = invariance.invariance_section(
        ctx.sizes,
        ctx.seed,
        section_2,
        ctx.progress,
        measured=measured,
        generator=invariance.bootstrap_generator(ctx.seed, len(measured)),
    )
    return {"figures": figures.plot_invariance(section, ctx.work), **section.summary()}, None


def shapes(ctx: DemoContext, inputs) -> tuple[dict, None]:
    from critwin.report import figures, sections

    section = sections.shapes_section(ctx.sizes, ctx.eps, ctx.seed, ctx.progress)
    return {"figures": figures.plot_shapes(section, ctx.work), **section.summary()}, None


def text_section(ctx: DemoContext, inputs) -> tuple[dict, None]:
    from critwin.report import text

    sizes = text.TextSizes.quick() if ctx.quick else text.TextSizes()
    section = text.text_section(sizes, ctx.seed, ctx.progress)
    return {"figures": text.plot_text(section, ctx.work), **section.summary()}, None


def text_to_image_audits(ctx: DemoContext, inputs) -> tuple[dict, None]:
    from critwin.report import text_to_image

    section = text_to_image.text_to_image_section(ctx.sizes, ctx.seed, ctx.progress)
    return {"figures": text_to_image.plot_text_to_image(section, ctx.work), **section.summary()}, None


def _measured_elsewhere() -> list:
    """Section 5's runs other than the reference (section 2's sweep), in the order of compared_runs."""
    runs, _ = plan.compared_runs()
    return [run for run in runs if run.label != plan.REFERENCE]


def _run_name(position: int) -> str:
    return f"parameterisation:{_measured_elsewhere()[position].label}"


def demo_sections() -> list[Section]:
    """The demo's sections in the report's order, with their CPU seconds at full sizes (measured on one
    core, quiet, in a full demo's ``section_cpu_seconds``; they only order the work) and the sections
    whose results they read."""
    runs = [
        Section(
            _run_name(i),
            functools.partial(parameterisation_run, position=i),
            _RUN_COSTS.get(_measured_elsewhere()[i].label, 32.0),
        )
        for i in range(len(_measured_elsewhere()))
    ]
    out = [
        Section("theory", theory, 3.0),
        Section("digits", digits, 69.0),
        Section("comparison", comparison, 12.0, needs=("digits",)),
        Section("diagnostics", diagnostics, 17.0, needs=("digits",)),
        *runs,
        Section("parameterisation", parameterisation, 10.0, needs=("digits", *(r.name for r in runs))),
    ]
    if plan.shapes_available():
        out.append(Section("shapes", shapes, 50.0))
    if plan.text_available():
        out.append(Section("text", text_section, 5.0))
    if plan.text_to_image_available():
        out.append(Section("text_to_image", text_to_image_audits, 33.0))
    return out


# Section 5's runs, CPU seconds at full sizes: the flow run's grid leaves more sampler steps after its
# OU times (101,040 network evaluations against 63,120 for the DDPM and DDIM runs).
_RUN_COSTS = {"digits+ddim": 32.0, "digits-flow": 41.0, "digits-v": 32.0}


def run_demo(
    out,
    *,
    quick: bool = False,
    seed: int = 0,
    eps: float = 0.1,
    progress: bool = True,
    threads: int | None = 1,
    status=None,
    workers: int | None = None,
) -> dict:
    """Build the demo report in ``out`` (``index.html``, PNG figures, ``summary.json``).

    Parameters
    ----------
    out : report directory (created; an earlier demo report there is replaced).
    quick : reduced sizes (seconds instead of about a minute), for tests.
    seed : every random draw derives from it.
    eps : the theory's eps.
    progress : show progress bars (with several workers: one bar over the sections).
    threads : torch intra-op threads of each process while the report is built (None: leave them); one is
        fastest for this small work and keeps the slowdown proportional when other jobs share the cores
        (see :mod:`critwin._threads`).
    status : ``status(line)`` called once per finished section (e.g. ``print`` when progress bars
        are not shown); None for silence.
    workers : processes computing the sections (default: 2, or 1 on a one-core machine); 1 computes
        them in this process. The report is the same either way.

    Returns
    -------
    The summary dictionary written to ``summary.json``.
    """
    eps = check_eps(eps)
    seed = check_seed(seed)
    workers = default_workers() if workers is None else check_positive_int(workers, "workers")
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
        listed = demo_sections()
        # Bars of sweeps in two processes would overwrite each other: one bar over the sections then.
        context = DemoContext(work, sizes, eps, seed, progress and workers == 1, quick)
        timer = _SectionTimer(start, status)
        with _section_bar(len(listed), progress and workers > 1) as advance:
            done = run_sections(
                listed,
                context,
                workers,
                threads,
                on_done=lambda name, run: (timer.done(name, run), advance()),
            )
        for name, run in done.items():
            if run.summary is not None:
                summary[name] = run.summary
        if not plan.shapes_available():
            summary["shapes_skipped"] = (
                "the shipped shapes model's weights are missing (critwin train shapes)"
            )
        if not plan.text_available():
            summary["text_skipped"] = "the shipped text models are missing (critwin train rhm-mdm, rhm-ar)"
        if not plan.text_to_image_available():
            summary["text_to_image_skipped"] = (
                "the shipped text-to-image pipelines are missing (critwin train shapes-t2i-biased, "
                "critwin train shapes-t2i-memorise)"
            )
        summary["section_seconds"] = {name: run.wall_seconds for name, run in done.items()}
        summary["section_cpu_seconds"] = {name: run.cpu_seconds for name, run in done.items()}
        summary["workers"] = workers
        summary["runtime_seconds"] = time.perf_counter() - start
        summary["threads"] = torch.get_num_threads() if threads is None else threads
        atomic_write_text(work / "index.html", demo_page(summary))
        atomic_write_json(work / "summary.json", summary)

    with using_threads(threads):
        build_atomically(out, build)
    return summary


def _section_bar(n: int, show: bool):
    """One bar over the sections (rich's, as the sweeps'); without a bar, nothing is imported for it."""
    if not show:
        return contextlib.nullcontext(lambda: None)
    from critwin.experiments.checkpoint import progress_bar

    return progress_bar(n, "critwin demo sections", True)


class _SectionTimer:
    """Reports each finished section through ``status``: its wall and CPU seconds and the elapsed time."""

    def __init__(self, start: float, status) -> None:
        self.start = start
        self.status = status

    def done(self, name: str, run: SectionRun) -> None:
        if self.status is not None:
            elapsed = time.perf_counter() - self.start
            self.status(
                f"critwin demo: {name} done ({run.wall_seconds:.0f} s, {run.cpu_seconds:.0f} s CPU; "
                f"{elapsed:.0f} s elapsed)"
            )


def print_status(line: str) -> None:
    """A status line on stdout, flushed at once (stdout to a file or pipe is block-buffered)."""
    print(line, file=sys.stdout, flush=True)
