"""``critwin window``, ``critwin hierarchy``, ``critwin validate``: the theory on a mixture file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from critwin._io import atomic_write_text, json_text, output_marker
from critwin._validation import check_eps, parse_seed
from critwin.cli import app
from critwin.cli._common import (
    check_choice,
    check_counts,
    check_out_dir,
    check_out_file,
    fmt_time,
    parse_list,
)

# The theory (torch, scipy) is imported in each command once its options are checked: help and option
# errors come at once (tests/test_cli_startup.py).


def _subset(text: str | None, name: str) -> list[int] | None:
    """Parse "0,2,3" into [0, 2, 3]."""
    return None if text is None else parse_list(text, f"--{name}", int, "component indices", distinct=True)


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


@app.command("window")
def window_command(
    mixture_file: Path = typer.Argument(
        ...,
        help="mixture file (.json/.yaml): means, covs, weights; or kind: categorical (examples/README.md)",
    ),
    after: str = typer.Option(..., "--after", help="the finer set S_after, e.g. 0 or 0,1"),
    before: str = typer.Option(None, "--before", help="the coarser set S_before (default: all components)"),
    eps: float = typer.Option(0.1, "--eps", help="epsilon in (0, 1)"),
    n: int = typer.Option(20000, "--n", help="Monte Carlo draws where no exact TV exists"),
    seed: str = typer.Option("0", "--seed", help="random seed"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
):
    """Critical window [T_after, T_before] of S_after inside S_before, and the theorem's transition times.

    Times are OU times for a Gaussian mixture; for a categorical one (kind: categorical) they are levels on
    its clock: kappa (masking or uniform noise) or the number of hidden final positions (autoregressive).
    """
    seed = parse_seed(seed)
    eps = check_eps(eps, "--eps")
    check_counts(n=n)
    after_set = _subset(after, "after")
    before_set = _subset(before, "before")
    from critwin.io_mixture import load_mixture
    from critwin.theory.discrete_times import CLOCK_LABELS
    from critwin.theory.windows import critical_window, transition_times

    mixture = load_mixture(mixture_file)
    g = _generator(seed)
    win = critical_window(mixture, after_set, before_set, eps, n=n, generator=g)
    times = transition_times(mixture, win.after, win.before, eps, n=n, generator=g)
    if as_json:
        typer.echo(json_text({"window": win.to_dict(), "transition_times": times.to_dict()}, indent=None))
        return
    table = Table(title=f"critical window (eps={eps:g}), S_after={win.after}, S_before={win.before}")
    table.add_column("quantity")
    table.add_column(CLOCK_LABELS[win.clock], justify="right")
    table.add_column("bracket", justify="right")
    rows = (
        ("T_after", win.t_after, win.t_after_low, win.t_after_high),
        ("T_before", win.t_before, win.t_before_low, win.t_before_high),
        ("T_end (S_after in S_before)", times.t_end, times.t_end_low, times.t_end_high),
        ("T_start (S_before)", times.t_start, times.t_start_low, times.t_start_high),
    )
    for name, value, low, high in rows:
        table.add_row(name, fmt_time(value), escape(f"[{fmt_time(low)}, {fmt_time(high)}]"))
    console = Console()
    console.print(table)
    status = win.status if win.status == "non-empty" else f"{win.status.upper()} ({win.reason})"
    console.print(
        escape(f"window: {status}; method: {win.method}; theorem bound: {times.bound:.4f} (W={times.W:.4g})")
    )


def _progress_printer(n_components: int):
    """A ``hierarchy`` progress callback printing to stderr on large inputs (None on small ones)."""
    if n_components < _PROGRESS_MIN_COMPONENTS:
        return None
    last: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        # about 20 lines per stage: stdout stays clean for --json
        step = max(1, total // 20)
        if done == total or done - last.get(stage, 0) >= step:
            last[stage] = done
            typer.echo(f"hierarchy: {stage} {done}/{total}", err=True)

    return report


_PROGRESS_MIN_COMPONENTS = 50


@app.command("hierarchy")
def hierarchy_command(
    mixture_file: Path = typer.Argument(..., help="mixture file (.json/.yaml)"),
    eps: float = typer.Option(0.1, "--eps", help="epsilon in (0, 1)"),
    n: int = typer.Option(10000, "--n", help="Monte Carlo draws where no exact TV exists"),
    seed: str = typer.Option("0", "--seed", help="random seed"),
    method: str = typer.Option("auto", "--method", help="auto, fast (shared isotropic covariance) or exact"),
    windows: bool = typer.Option(True, "--windows/--no-windows", help="compute every node's window"),
    refine: bool = typer.Option(
        None,
        "--refine/--no-refine",
        help="refine every window endpoint by Monte Carlo, or only as far as its window's status needs"
        " (default: every one up to 100 components)",
    ),
    plot: Path = typer.Option(None, "--plot", help="write the dendrogram (PNG) here"),
    out: Path = typer.Option(None, "--out", help="write the tree as JSON here"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
):
    """The eps-mixture tree (hierarchy of features) of a mixture, with each node's window.

    Progress goes to stderr for mixtures of 50 components or more.
    """
    seed = parse_seed(seed)
    eps = check_eps(eps, "--eps")
    check_counts(n=n)
    check_choice(method, "--method", ["auto", "fast", "exact"])
    check_out_file(plot, "--plot", kind="png")
    check_out_file(out, "--out", kind="hierarchy")
    from critwin.io_mixture import load_mixture
    from critwin.theory.tree import hierarchy

    mixture = load_mixture(mixture_file)
    tree = hierarchy(
        mixture,
        eps,
        n=n,
        generator=_generator(seed),
        method=method,
        windows=windows,
        refine=refine,
        progress=_progress_printer(mixture.n_components),
    )
    report = {**tree.to_dict(), **output_marker("hierarchy")}
    if out is not None:
        atomic_write_text(out, json_text(report) + "\n")
    if plot is not None:
        # matplotlib loads only when a plot is asked for, with the non-interactive backend.
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.close(tree.plot(path=plot).figure)
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    typer.echo(tree.render())


@app.command("validate")
def validate_command(
    out: Path = typer.Option(
        Path("reports/validate"), "--out", help="output folder (PNG, CSV, summary JSON)"
    ),
    quick: bool = typer.Option(False, "--quick", help="reduced sizes (K in {2,4}, d in {2,256})"),
    eps: float = typer.Option(0.1, "--eps", help="epsilon in (0, 1)"),
    seed: str = typer.Option("0", "--seed", help="random seed"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as one JSON object"),
):
    """Check the theorem (Li, Karan & Chen 2025, Thm 2) on random isotropic mixtures: exact TV of
    forward-reverse against the bound."""
    seed = parse_seed(seed)
    eps = check_eps(eps, "--eps")
    check_out_dir(out)
    from critwin.experiments.checkpoint import claim_directory
    from critwin.theory.validate import validate

    with claim_directory(out, "validate", "--out", legacy=("validation.csv", "summary.json")):
        result = validate(out, quick=quick, eps=eps, seed=seed)
    s = result.summary
    if as_json:
        typer.echo(json_text({k: v for k, v in s.items()}, indent=None))
    else:
        median = s["median_case_max_tv_over_bound_nontrivial"]
        typer.echo(
            f"{s['n_cases']} cases, {s['n_points']} points ({s['n_points_in_theorem_range']} inside "
            f"[T_end, T_start]); violations beyond 3 SE: {s['violations']} "
            f"({s['violations_trivial_init_eq_target']} with S_init = S_target); endpoint checks of "
            f"T_end/T_start failed: {s['endpoint_check_failures']}/{s['endpoint_checks']}; TV vs its "
            f"quadrature failed: {s['quadrature_check_failures']}/{s['quadrature_checks']}; max TV/bound in "
            f"range: {s['max_tv_over_bound_in_range']:.3f} (median per non-trivial case: "
            f"{'n/a' if median is None else f'{median:.3f}'}); {s['runtime_s']:.1f} s; files in {out}"
        )
    if s["violations"] or s["endpoint_check_failures"] or s["quadrature_check_failures"]:
        raise typer.Exit(1)
