"""``critwin estimate``: window estimate with bootstrap CIs from a saved forward–reverse/cloning result."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin._display import format_ci
from critwin._io import atomic_write_json, json_text, output_marker, read_json
from critwin._validation import check_delta, check_eps, parse_seed
from critwin.cli import app
from critwin.cli._common import check_counts, check_out_file, cli_error, fmt_time


def load_result(directory: Path):
    """A ForwardReverseResult or CloneResult saved in ``directory`` (by kind in metadata.json)."""
    meta_path = Path(directory) / "metadata.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: is {directory} a critwin result directory?")
    kind = read_json(meta_path, "result metadata").get("kind")
    # The engine (torch, scipy) loads once the options and the directory are checked.
    from critwin.experiments.cloning import CloneResult
    from critwin.experiments.forward_reverse import ForwardReverseResult

    if kind == "forward_reverse":
        return ForwardReverseResult.load(directory)
    if kind == "clone":
        return CloneResult.load(directory)
    raise ValueError(f"{meta_path} describes a {kind!r} result; expected 'forward_reverse' or 'clone'")


@app.command("estimate")
def estimate_command(
    result_dir: Path = typer.Argument(
        ..., help="directory written by forward_reverse/clone (table.csv + metadata.json)"
    ),
    delta: float = typer.Option(0.1, "--delta", help="window levels: r crosses 1 - delta and delta"),
    n_boot: int = typer.Option(200, "--n-boot", help="bootstrap replicates for the CIs (0: none)"),
    base_rate: float = typer.Option(
        None, "--base-rate", help="known base rate b in [0, 1) (default: estimated)"
    ),
    level: float = typer.Option(0.95, "--level", help="confidence level"),
    seed: str = typer.Option("0", "--seed", help="bootstrap seed (same seed, same intervals)"),
    out: Path = typer.Option(None, "--out", help="also write the estimate as JSON to this file"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    feature: str = typer.Option(
        None,
        "--feature",
        help="the feature to estimate, for a result of several features (label[NAME] columns)",
    ),
):
    """Commitment curve, base rate, window endpoints with bootstrap CIs, jump rule and per-class windows.

    JSON (--json, --out): an endpoint outside the measured times is censored, never extrapolated, and
    keeps its direction: {"value": null, "censored": "below"} (already crossed at the smallest time,
    printed -inf) or {"value": null, "censored": "above"} (not crossed by the largest time, printed inf);
    null alone means not measured (NaN).
    """
    seed = parse_seed(seed)
    delta = check_delta(delta, "--delta")
    check_counts(n_boot=n_boot, minimum=0)
    if base_rate is not None and not 0.0 <= base_rate < 1.0:
        raise ValueError(f"--base-rate must lie in [0, 1), got {base_rate}")
    level = check_eps(level, "--level")
    check_out_file(out, kind="estimate")
    result = load_result(result_dir)
    import torch

    from critwin.experiments.estimation import estimate_window

    try:
        estimate = estimate_window(
            result,
            delta=delta,
            base_rate=base_rate,
            n_boot=n_boot,
            level=level,
            generator=torch.Generator().manual_seed(seed),
            feature=feature,
        )
    except ValueError as exc:  # a multi-feature result without --feature names the option to pass
        raise cli_error(exc, {"feature": "--feature"}) from None
    summary = {**estimate.to_dict(), **output_marker("estimate")}
    summary["source"] = str(result_dir)
    if out is not None:
        atomic_write_json(out, summary)
    if as_json:
        typer.echo(json_text(summary, indent=None))
        return
    typer.echo(f"{'t':>8} {'c':>7} {'c_lo':>7} {'c_hi':>7} {'r_fit':>7}")
    for t, c, lo, hi, r in zip(
        estimate.times, estimate.c, estimate.c_lower, estimate.c_upper, estimate.r_fit, strict=True
    ):
        typer.echo(f"{t:8.4f} {c:7.3f} {lo:7.3f} {hi:7.3f} {r:7.3f}")
    typer.echo(f"base rate b = {estimate.b:.4f}; delta = {estimate.delta:g}; level = {estimate.level:g}")
    for name in ("t_after", "t_half", "t_before"):
        typer.echo(
            f"{name:<9}= {format_ci(getattr(estimate, name), *getattr(estimate, name + '_ci'))} (95% CI)"
        )
    jump = estimate.jump
    verdict = "passes" if jump["passes"] else "fails"
    typer.echo(
        f"jump rule: largest drop {jump['size']:.3f} between t={jump['t_lo']:.4f} and "
        f"{jump['t_hi']:.4f} ({verdict})"
    )
    for label, sub in estimate.per_class.items():
        typer.echo(
            f"class {label}: b={sub.b:.3f} t_after={fmt_time(sub.t_after)} t_half={fmt_time(sub.t_half)} "
            f"t_before={fmt_time(sub.t_before)}"
        )
    if out is not None:
        typer.echo(f"wrote {out}")
