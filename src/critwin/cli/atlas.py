"""``critwin atlas``: when each attribute of a shapes model is decided, measured and predicted."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from critwin._io import PNG_SOFTWARE, atomic_write_json, check_replaceable, json_text, output_marker
from critwin._threads import THREADS_ENV, set_threads, threads_from_env
from critwin._validation import check_delta, check_eps, check_positive_int, parse_seed
from critwin.cli import app
from critwin.cli._common import check_counts, check_out_dir, hold_output, parse_list, parse_times
from critwin.cli.text import is_text_model, text_atlas_command
from critwin.report.output import build_atomically

if TYPE_CHECKING:  # the atlas (torch, the models) is imported once the options are checked
    from critwin.diagnostics.feature_atlas import AtlasResult

ATLAS_FILE = "atlas.json"

# Sizes: the default run fits the budget (critwin atlas --model shapes --json in <= 3 minutes on
# two CPU cores); --quick is a smoke run.
SIZES = {
    "default": {"sources": 48, "replicates": 2, "n_times": 8, "trajectories": 32, "clones": 2, "boot": 200},
    "quick": {"sources": 16, "replicates": 2, "n_times": 5, "trajectories": 8, "clones": 2, "boot": 50},
}


def _shapes():
    # Deferred: the shapes models import diffusers (seconds); options are checked first.
    return importlib.import_module("critwin.models.shapes")


def load_shapes(model: str, steps: int, prompt: str | None = None, guidance: float | None = None):
    """``(process, training data, readers)`` of a shipped shapes model or a directory of one.

    A text-to-image model (``shapes-t2i*`` or a directory written by ``critwin train shapes-t2i``) needs
    ``prompt``; its data are the training pairs whose captions mean the same as the prompt (the images the
    model learnt that prompt from), and its process is the stock pipeline loaded as any SD directory.
    """
    t2i = importlib.import_module("critwin.models.shapes_t2i")
    if model in t2i.MODEL_NAMES or t2i.is_t2i_directory(model):
        return _load_t2i(t2i, model, steps, prompt, guidance)
    for option, value in (("--prompt", prompt), ("--guidance", guidance)):
        if value is not None:
            raise ValueError(
                f"{option} applies only to the text-to-image models (shapes-t2i, ...), not {model!r}"
            )
    shapes = _shapes()
    path = Path(model)
    if path.is_dir():
        cards = sorted(p.stem for p in path.glob("*.safetensors") if p.with_suffix(".json").exists())
        if len(cards) != 1:
            raise ValueError(f"--model {model}: the directory must hold one <name>.safetensors with its card")
        loaded = shapes.load_shapes_model(cards[0], path)
    elif model in shapes.MODEL_NAMES:
        loaded = shapes.load_shapes_model(model)
    else:
        names = ", ".join((*shapes.MODEL_NAMES, *t2i.MODEL_NAMES))
        raise ValueError(
            f"--model must be a shipped shapes model ({names}) or an existing directory holding one, "
            f"got {model!r}"
        )
    return loaded.process(num_inference_steps=steps), loaded.training_data(), shapes.attribute_readers()


def _load_t2i(t2i, model: str, steps: int, prompt: str | None, guidance: float | None):
    """:func:`load_shapes` for a text-to-image model: checks first, then the pipeline."""
    card = t2i.load_t2i_card(model)
    if prompt is None:
        raise ValueError(f"--prompt: {card['name']} is a text-to-image model; give --prompt TEXT")
    t2i.check_model_prompt(prompt, card, "--prompt")
    data = t2i.config_of(card).load_data()
    if prompt.strip():
        try:
            meaning = t2i.parse_caption(prompt).key()
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None
        rows = [i for i, caption in enumerate(data.captions) if t2i.parse_caption(caption).key() == meaning]
    else:  # the null prompt: the unconditional model, learnt from every pair
        rows = list(range(len(data)))
    if not rows:
        raise ValueError(
            f"--prompt {prompt!r}: no training caption of {card['name']} means the same; the atlas's theory "
            "is fitted to the images of such captions (try a caption of the grammar without an unseen "
            "item id)"
        )
    import torch  # after the options are checked: help and usage errors come without it

    index = torch.tensor(rows)
    pairs = (data.images[index], {name: labels[index] for name, labels in data.attributes.items()})
    adapter = importlib.import_module("critwin.adapters.diffusers")
    pipe = adapter.load_local(t2i.model_directory(model), text_encoder=True)
    scale = card["guidance_scale"] if guidance is None else guidance
    process = adapter.from_pipeline(pipe, steps, scale, prompt=prompt)
    return process, pairs, _shapes().attribute_readers()


def check_atlas_dir(out: Path | None) -> Path | None:
    """``--out`` may be missing, empty, or an earlier atlas (its ``atlas.json`` written by critwin)."""
    if out is None:
        return None
    check_out_dir(out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / ATLAS_FILE).is_file():
            raise ValueError(
                f"--out {out} exists and is not an earlier critwin atlas; choose another directory"
            )
        check_replaceable(out / ATLAS_FILE, "--out", "atlas")
    hold_output(out, "--out")
    return out


@app.command("atlas")
def atlas_command(
    ctx: typer.Context,
    model: str = typer.Option(
        "shapes",
        "--model",
        help="Shipped shapes model name (DDPM or text-to-image) or a directory holding one; or a text model "
        "(rhm-mdm, rhm-ar).",
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Prompt of a text-to-image model (shapes-t2i, ...; required there)."
    ),
    guidance: float | None = typer.Option(
        None, "--guidance", help="Classifier-free guidance of a text-to-image model (default: its card's)."
    ),
    features: str | None = typer.Option(
        None, "--features", help="Comma-separated attributes (default: all of the model's readers)."
    ),
    times: str | None = typer.Option(None, "--times", help="Comma-separated OU times (default: spread)."),
    steps: int = typer.Option(50, "--steps", help="Sampler steps."),
    sources: int | None = typer.Option(None, "--sources", help="Source images (default 48; quick 16)."),
    replicates: int | None = typer.Option(None, "--replicates", help="Re-noisings per source and time."),
    trajectories: int | None = typer.Option(None, "--trajectories", help="Cloning trajectories (0: none)."),
    clones: int | None = typer.Option(None, "--clones", help="Continuations per trajectory and fork."),
    boot: int | None = typer.Option(None, "--boot", help="Bootstrap replicates."),
    eps: float = typer.Option(0.1, "--eps", help="eps of the fitted mixture's tree."),
    delta: float = typer.Option(0.1, "--delta", help="Window level."),
    seed: str = typer.Option("0", "--seed"),
    quick: bool = typer.Option(False, "--quick", help="Small sizes (a smoke run)."),
    out: Path | None = typer.Option(None, "--out", help="Write atlas.json, atlas.png and table.csv here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help=f"Torch CPU threads (default: ${THREADS_ENV}, else 1; one is fastest for this small work).",
        show_default=False,
    ),
) -> None:
    """Per attribute: commitment curve, t½ and window with CIs on one OU axis, ordered from first decided
    to last; cloning susceptibility; the fitted attribute mixture's ε-tree and its like-for-like run.

    JSON: {"features": {name: {"t_half", "t_half_ci", "t_after", "t_before", "order", ...}}, "order",
    "overlaps", "theory": {...}, "comparison": {...}}; censored times as {"value": null, "censored": ...}.
    """
    seed = parse_seed(seed)
    sizes = dict(SIZES["quick" if quick else "default"])
    given = {"sources": sources, "replicates": replicates, "trajectories": trajectories}
    sizes.update({k: v for k, v in {**given, "clones": clones, "boot": boot}.items() if v is not None})
    check_counts(
        steps=steps, sources=sizes["sources"], replicates=sizes["replicates"], clones=sizes["clones"]
    )
    check_counts(minimum=0, trajectories=sizes["trajectories"], boot=sizes["boot"])
    eps, delta = check_eps(eps, "--eps"), check_delta(delta, "--delta")
    requested = None if times is None else parse_times(times)
    wanted = (
        None
        if features is None
        else parse_list(features, "--features", str, "attribute names", distinct=True)
    )
    check_atlas_dir(out)
    set_threads(threads_from_env() if threads is None else check_positive_int(threads, "--threads"))
    started = time.perf_counter()
    if guidance is not None and not guidance >= 0:
        raise ValueError(f"--guidance must be a number >= 0, got {guidance}")
    if is_text_model(model):
        given = ctx.get_parameter_source("steps").name == "COMMANDLINE"
        options = dict(sizes, times=requested, features=wanted, eps=eps, delta=delta, seed=seed)
        options.update(steps=steps if given else None, progress=progress and not as_json)
        result = text_atlas_command(model, options)
        _finish(result, model, started, out, as_json)
        return
    process, data, readers = load_shapes(model, steps, prompt, guidance)
    _check_sources(sources, data, model)
    if wanted is not None:
        unknown = [name for name in wanted if name not in readers]
        if unknown:
            raise ValueError(f"--features: {', '.join(unknown)} not among {', '.join(readers)}")
        readers = {name: readers[name] for name in wanted}
    from critwin.diagnostics.feature_atlas import atlas

    result = atlas(
        process,
        readers,
        data=data,
        times=requested,
        n_times=sizes["n_times"],
        n_sources=sizes["sources"],
        n_per_time=sizes["replicates"],
        n_trajectories=max(sizes["trajectories"], 1),
        n_clones=sizes["clones"],
        cloning=sizes["trajectories"] > 0,
        eps=eps,
        delta=delta,
        n_boot=sizes["boot"],
        seed=seed,
        progress=progress and not as_json,
        threads=None,  # set above from --threads
    )
    _finish(result, model, started, out, as_json, prompt)


def _finish(
    result: AtlasResult,
    model: str,
    started: float,
    out: Path | None,
    as_json: bool,
    prompt: str | None = None,
) -> None:
    """Write the atlas into ``out`` and print it (one JSON object, or the table)."""
    report = {
        "model": model,
        **({} if prompt is None else {"prompt": prompt}),
        **result.to_dict(),
        "seconds": time.perf_counter() - started,
    }
    report.update(output_marker("atlas"))
    if out is not None:
        build_atomically(out, lambda work: _write(work, result, report), option="--out")
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    _print_table(result, model, report["seconds"])


def atlas_figure(result: AtlasResult):
    """The figure of ``atlas.png``: :meth:`AtlasResult.plot` on its own figure, with a title."""
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot()
    ax.set_title("Features are decided coarse to fine")
    return ax.figure


def _write(directory: Path, result: AtlasResult, report: dict) -> None:
    fig = atlas_figure(result)
    fig.savefig(directory / "atlas.png", dpi=110, bbox_inches="tight", metadata={"Software": PNG_SOFTWARE})
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_json(directory / ATLAS_FILE, report)
    table = result.table()
    lines = [",".join(table)] + [",".join(str(v) for v in row) for row in zip(*table.values(), strict=True)]
    (directory / "table.csv").write_text("\n".join(lines) + "\n")


def _print_table(result: AtlasResult, model: str, seconds: float) -> None:
    typer.echo(f"{model}: features from first decided to last ({seconds:.0f} s)")
    # The library's table, each estimate beside its 95% interval and rounded to what it supports.
    from critwin._display import Table

    table = result.table()
    shown = ("feature", "t_half", "t_after", "t_before", "theory_t_merge", "theory_t_bound")
    typer.echo(str(Table({k: v for k, v in table.items() if k.rsplit("_", 1)[0] in shown or k in shown})))
    comparison = result.comparison()
    if comparison is not None:
        verdict = (
            "agree"
            if comparison["agree"]
            else ("differ only where one side ties" if comparison["agree_within_ci"] else "contradict")
        )
        typer.echo(
            f"measured order {comparison['measured_text']}; theory (merge times) "
            f"{comparison['predicted_text']} ({verdict}; '~': intervals overlap, no order claimed)"
        )
    else:
        typer.echo(f"measured order {result.order_text()} ('~': t½ intervals overlap, no order claimed)")


def _check_sources(sources: int | None, data, model: str) -> None:
    """An explicit ``--sources`` beyond the data is refused (the default takes what there is)."""
    if sources is None or data is None:
        return
    available = len(data.images if hasattr(data, "images") else data[0])
    if sources > available:
        raise ValueError(f"--sources {sources} exceeds the {available} images {model} draws sources from")
