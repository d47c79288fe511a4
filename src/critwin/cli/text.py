"""Text models on the command line: ``critwin text`` (levels measured against the exact law), and the
text branches of ``critwin sweep`` and ``critwin atlas`` (``--model rhm-mdm`` / ``rhm-ar`` / a directory
holding one)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from critwin._display import format_ci
from critwin._io import atomic_write_json, check_replaceable, json_text, output_marker
from critwin._validation import check_delta, parse_seed
from critwin.cli import app
from critwin.cli._common import (
    check_counts,
    check_out_dir,
    check_request_memory,
    fmt_time,
    hold_output,
    parse_times,
)
from critwin.models._store import SHIPPED_MODELS

TEXT_FILE = "text.json"
NOT_TEXT = "does not apply to the text models"
TEXT_REFUSED = (
    "--prompt",
    "--negative-prompt",
    "--prompt-embeds",
    "--guidance",
    "--class-label",
    "--null-label",
    "--scheduler",
    "--x0",
    "--clip-weights",
    "--clip-arch",
    "--labels",
    "--height",
    "--width",
)
"""``critwin sweep`` options of image models that a text model refuses."""


def text_model_names() -> tuple[str, ...]:
    """The shipped text models (``rhm-*`` in the registry)."""
    return tuple(name for name in SHIPPED_MODELS if name.startswith("rhm-"))


def _card_stem(directory: Path) -> str | None:
    """The stem of the one text-model card in ``directory`` (None if it holds no text model)."""
    stems = []
    for card in sorted(directory.glob("*.json")):
        try:
            kind = json.loads(card.read_text()).get("kind", "")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(kind, str) and kind.startswith("rhm-") and card.with_suffix(".safetensors").exists():
            stems.append(card.stem)
    if len(stems) > 1:
        raise ValueError(f"--model {directory}: the directory holds several text models ({', '.join(stems)})")
    return stems[0] if stems else None


def is_text_model(model: str) -> bool:
    """Whether ``--model`` names a shipped text model or a directory holding one."""
    if model in SHIPPED_MODELS:
        return model in text_model_names()
    path = Path(model)
    return path.is_dir() and _card_stem(path) is not None


def load_text(model: str):
    """The :class:`~critwin.models.text.TextModel` behind ``--model``."""
    from critwin.models.text import load_text_model

    if model in SHIPPED_MODELS:
        return load_text_model(model)
    path = Path(model)
    return load_text_model(_card_stem(path), path)


def _process(loaded, steps: int | None, device=None):
    """The model's process; ``--steps`` (grid steps) applies to masked diffusion only."""
    if loaded.kind == "masked":
        return loaded.process(steps, device=device)
    if steps is not None:
        raise ValueError(
            f"--steps does not apply to the autoregressive model {loaded.name} (one step per token)"
        )
    return loaded.process(device=device)


def _features(grammar, feature: str | None) -> dict:
    """``--feature``: a level name, or every level (default)."""
    features = grammar.features()
    if feature is None or feature == "all":
        return features
    if feature not in features:
        raise ValueError(
            f"--feature must be a level of the grammar ({', '.join(features)}) or all, got {feature!r}"
        )
    return {feature: features[feature]}


def check_text_options(given: dict[str, object]) -> None:
    """Options of image models (prompts, guidance, schedulers, CLIP, image files) are refused by name."""
    for flag, value in given.items():
        if value is not None and value is not False:
            raise ValueError(f"{flag} {NOT_TEXT}")


def text_sweep(model: str, out: Path, run: dict) -> None:
    """``critwin sweep`` on a text model: forward-reverse or cloning (or an adaptive search) with every
    level of the grammar (or ``--feature LEVEL``) read from the same outputs.

    ``run`` holds the sweep's options: experiment, times, adaptive, delta, resolution, probe_batch,
    max_per_probe, n, n_per_time, n_clones, feature, seed, chunk_size, progress, executor, ray_address,
    steps (grid steps of a masked-diffusion model, None: its own).
    """
    import torch

    from critwin.experiments.cloning import clone
    from critwin.experiments.estimation import estimate_window
    from critwin.experiments.forward_reverse import forward_reverse
    from critwin.experiments.search import search_window

    check_out_dir(out)
    check_counts(
        n=run["n"], n_per_time=run["n_per_time"], n_clones=run["n_clones"], chunk_size=run["chunk_size"]
    )
    check_counts(probe_batch=run["probe_batch"], max_per_probe=run["max_per_probe"], steps=run["steps"])
    check_delta(run["delta"], "--delta")
    if run["dtype"] != "float32":
        raise ValueError("--dtype: the text models run in float32")
    loaded = load_text(model)
    process = _process(loaded, run["steps"], run["device"])
    grammar = loaded.grammar
    features = _features(grammar, run["feature"])
    sources = grammar.sample(run["n"], torch.Generator().manual_seed(run["seed"]))[0]
    common = dict(
        seed=run["seed"], progress=run["progress"], executor=run["executor"], ray_address=run["ray_address"]
    )
    if run["adaptive"]:
        found = search_window(
            process,
            sources,
            features,
            delta=run["delta"],
            resolution=run["resolution"],
            batch=run["probe_batch"],
            max_per_probe=run["max_per_probe"],
            **common,
        )
        found = found if isinstance(found, dict) else {next(iter(features)): found}
        report = {
            name: {"t_after": r.t_after, "t_before": r.t_before, "b": r.b, "nfe": r.nfe}
            for name, r in found.items()
        }
        check_replaceable(out / "search.json", "--out", "search")
        atomic_write_json(
            out / "search.json", {"clock": process.clock, "levels": report, **output_marker("search")}
        )
        for name, r in found.items():
            typer.echo(
                f"{name:<8} t_after {fmt_time(r.t_after)}  t_before {fmt_time(r.t_before)}"
                f"  (base rate {r.b:.3g})"
            )
        typer.echo(f"clock {process.clock}; wrote {out / 'search.json'}")
        return
    times = run["times"]
    if times is None:
        grid = [i / 8 for i in range(9)] if process.clock == "kappa" else list(range(grammar.length + 1))
        times = grid if run["experiment"] == "forward-reverse" else [t for t in grid if t > 0]
    common.update(out=out, chunk_size=run["chunk_size"])
    if run["experiment"] == "forward-reverse":
        result = forward_reverse(process, sources, times, run["n_per_time"], feature=features, **common)
    else:
        result = clone(process, run["n"], times, run["n_clones"], feature=features, **common)
    windows = {}
    typer.echo(f"clock {process.clock}; level   t_half  t_after  t_before (95% bootstrap CIs in window.json)")
    for name in features:
        try:
            est = estimate_window(result, delta=run["delta"], per_class=False, seed=run["seed"], feature=name)
        except ValueError as exc:  # e.g. every output with one label: nothing to estimate
            typer.echo(f"critwin: note: no window estimate for {name}: {exc}", err=True)
            continue
        windows[name] = est.to_dict()
        typer.echo(
            f"{name:<14} {fmt_time(est.t_half):>8} {fmt_time(est.t_after):>8} {fmt_time(est.t_before):>8}"
        )
    atomic_write_json(out / "window.json", {"clock": process.clock, "levels": windows})
    typer.echo(f"wrote {out / 'table.csv'} and {out / 'window.json'}")


def text_atlas_command(model: str, options: dict):
    """``critwin atlas`` on a text model: :func:`critwin.diagnostics.text_windows.text_atlas`'s result."""
    from critwin.diagnostics.text_windows import text_atlas

    loaded = load_text(model)
    process = _process(loaded, options["steps"])
    grammar = loaded.grammar
    if options["features"] is not None:
        unknown = [name for name in options["features"] if name not in grammar.level_names]
        if unknown:
            raise ValueError(f"--features: {', '.join(unknown)} not among {', '.join(grammar.level_names)}")
    result = text_atlas(
        process,
        grammar,
        times=options["times"],
        n_sources=options["sources"],
        n_per_time=options["replicates"],
        n_trajectories=max(options["trajectories"], 1),
        n_clones=options["clones"],
        cloning=options["trajectories"] > 0,
        eps=options["eps"],
        delta=options["delta"],
        n_boot=options["boot"],
        seed=options["seed"],
        progress=options["progress"],
    )
    return result


def check_text_dir(out: Path | None) -> None:
    """``--out`` may be missing, empty, or an earlier ``critwin text`` output (its ``text.json``), which
    is replaced whole; a directory holding anything else is refused, never emptied. Held until the end."""
    if out is None:
        return
    check_out_dir(out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / TEXT_FILE).is_file():
            raise ValueError(f"--out {out} exists and is not an earlier critwin text output; choose another")
        check_replaceable(out / TEXT_FILE, "--out", "text")
    hold_output(out, "--out")


@app.command("text")
def text_command(
    model: str = typer.Option(
        "rhm-mdm", "--model", help="A shipped text model (rhm-mdm, rhm-ar) or a directory holding one."
    ),
    sources: int = typer.Option(64, "--sources", help="Source strings drawn from the grammar."),
    replicates: int = typer.Option(
        4, "--replicates", help="Forward-reverse replicates per source and level."
    ),
    boot: int = typer.Option(100, "--boot", help="Bootstrap replicates (intervals and paired differences)."),
    times: str | None = typer.Option(
        None, "--times", help="Comma-separated levels (default: kappa 0..1 by 1/8, or every hidden count)."
    ),
    theory: bool = typer.Option(
        True,
        "--theory/--no-theory",
        help="The theorem's windows of every level (exact TV; a minute for masking).",
    ),
    eps: float = typer.Option(0.1, "--eps", help="eps of the theorem's windows."),
    seed: str = typer.Option("0", "--seed", help="Seed of every random draw."),
    out: Path | None = typer.Option(None, "--out", help="Write text.json and text_levels.png here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    progress: bool = typer.Option(False, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """Per level of the grammar: the network's window (t½, t_after, t_before with bootstrap CIs) beside the
    same estimator on the exact law, the exact curve's crossings, their paired difference and a verdict.

    JSON: {"model", "clock", "levels": [{"level", "t_half", "t_half_ci", "exact_engine_t_half",
    "exact_t_half", "difference_t_half": {"difference", "ci"}, ..., "theory": {...}, "verdict"}], ...}.
    """
    from dataclasses import replace

    from critwin.report.text import TextSizes, compare_levels

    seed = parse_seed(seed)
    check_counts(sources=sources, replicates=replicates, boot=boot)
    check_request_memory(
        draws=(f"--sources {sources} x --replicates {replicates} strings", sources * replicates),
        boot=(f"--boot {boot} bootstrap replicates of --sources {sources}", boot * sources),
    )
    check_text_dir(out)
    if not is_text_model(model):
        raise ValueError(
            f"--model must be a text model ({', '.join(text_model_names())}) or a directory holding one, "
            f"got {model!r}"
        )
    sizes = TextSizes(sources=sources, replicates=replicates, n_boot=boot)
    if times is not None:
        sizes = replace(sizes, kappa_times=tuple(parse_times(times)))
    loaded = load_text(model)
    if times is not None and loaded.kind == "autoregressive":
        raise ValueError("--times: the autoregressive model is measured at every count of hidden positions")
    comparison = compare_levels(loaded, sizes, seed, theory=theory, eps=eps, progress=progress)
    report = {**comparison.summary(), **output_marker("text")}
    if out is not None:
        from critwin.report.output import build_atomically
        from critwin.report.text import TextSection, plot_text

        def write(work: Path) -> None:
            atomic_write_json(work / TEXT_FILE, report)
            plot_text(TextSection({loaded.name: comparison}, loaded.grammar.describe()), work)

        # text.json and its figure replace the previous pair together (a full disk keeps the old pair).
        build_atomically(out, write, option="--out")
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    typer.echo(f"{loaded.name}: clock {comparison.clock}; network vs exact law (paired 95% intervals)")
    typer.echo(f"{'level':<8}{'t½ net':>9}{'t½ exact':>10}{'difference [95% CI]':>30}  verdict")
    for row in comparison.rows():
        diff = row["difference_t_half"]
        text = _with_ci(diff["difference"], diff["ci"])
        net = row["t_half"] if row["t_half"] is not None else float("nan")
        exact = fmt_time(row["exact_t_half"] if row["exact_t_half"] is not None else float("nan"))
        typer.echo(f"{row['level']:<8}{fmt_time(net):>9}{exact:>10}{text:>30}  {row['verdict']}")


def _with_ci(value, ci) -> str:
    """``value [low, high]`` rounded to what the interval supports; None (not measured) prints ``-``."""
    if value is None or None in ci:
        lo, hi = (fmt_time(float("nan") if v is None else v) for v in ci)
        return f"{fmt_time(float('nan') if value is None else value)} [{lo}, {hi}]"
    return format_ci(value, *ci)
