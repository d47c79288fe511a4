"""``critwin demo``: the report of critical windows in theory and on the shipped digits model."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from critwin._display import format_ci
from critwin._threads import THREADS_ENV, threads_from_env
from critwin._validation import check_eps, check_positive_int, parse_seed
from critwin.cli import app
from critwin.cli._common import check_out_dir, hold_output
from critwin.report.output import check_report_dir


@app.command()
def demo(
    out: Path = typer.Option(
        Path("reports/demo"), "--out", help="Report directory (index.html, PNGs, summary.json)."
    ),
    seed: str = typer.Option("0", "--seed", help="Seed of every random draw."),
    eps: float = typer.Option(0.1, "--eps", help="The theory's eps, in (0, 1)."),
    quick: bool = typer.Option(False, "--quick", help="Reduced sizes: a fast smoke run."),
    progress: bool = typer.Option(
        True,
        "--progress/--no-progress",
        help="Show progress bars (on a terminal; elsewhere one status line per section is printed).",
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        help=f"Torch CPU threads (default: ${THREADS_ENV}, else 1; one is fastest for this small work and "
        "slows down only in proportion when other jobs share the cores).",
        show_default=False,
    ),
    workers: int = typer.Option(
        2,
        "--workers",
        help="Processes computing the sections (the report is the same for any number; 1: this one).",
    ),
) -> None:
    """Measure critical windows on the shipped digits DDPM and compare them with theory."""
    seed = parse_seed(seed)
    eps = check_eps(eps, "--eps")
    check_out_dir(out)
    threads = threads_from_env() if threads is None else check_positive_int(threads, "--threads")
    workers = check_positive_int(workers, "--workers")
    check_report_dir(out)
    hold_output(out, "--out")
    # Deferred: the report imports diffusers and matplotlib (seconds); options are checked above.
    from critwin.report.demo import print_status, run_demo

    bars = progress and sys.stderr.isatty()
    # With several workers the bar counts sections; the status lines still say what finished.
    status = None if sys.stdout.isatty() and bars else print_status
    summary = run_demo(
        out, quick=quick, seed=seed, eps=eps, progress=bars, threads=threads, status=status, workers=workers
    )
    typer.echo(summary_line(summary, out))


def summary_line(summary: dict, out: Path) -> str:
    """The demo's last line: the digits class window, each endpoint rounded to what its interval
    supports, and where the report is."""
    window = summary["digits"]["forward_reverse"]["window"]
    after, before = (format_ci(window[k], *window[f"{k}_ci"]) for k in ("t_after", "t_before"))
    return (
        f"digits class window (forward-reverse, OU time, 95% bootstrap CIs): t_after {after}, "
        f"t_before {before}; report: {out / 'index.html'} ({summary['runtime_seconds']:.0f} s)"
    )
