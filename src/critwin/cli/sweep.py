"""``critwin sweep``: forward–reverse or cloning sweeps (or a window search) on a local diffusers model
or a shipped one (``--model digits``)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import typer

from critwin._display import format_ci
from critwin._io import atomic_write_json, json_float, read_json
from critwin._lazy import deferred_import
from critwin._validation import check_delta, check_number, check_time, parse_seed
from critwin.cli import app
from critwin.cli._common import (
    EXECUTOR_HELP,
    RAY_ADDRESS_HELP,
    RAY_TIMEOUT_HELP,
    check_choice,
    check_counts,
    check_out_dir,
    cli_error,
    executor_options,
    fmt_time,
    parse_device_dtype,
    parse_list,
    parse_times,
    reject_unused,
)
from critwin.cli.text import TEXT_REFUSED, check_text_options, is_text_model, text_sweep
from critwin.models._store import PIPELINE_MODELS, SHIPPED_MODELS
from critwin.models.data import NUM_CLASSES
from critwin.models.shapes import ATTRIBUTES

# The engine (torch, scipy) is imported where the sweep runs, after every option is checked: help and
# option errors come at once (tests/test_cli_startup.py).
torch = deferred_import("torch", globals())
np = deferred_import("numpy", globals(), "np")
features = deferred_import("critwin.experiments.features", globals())
t2i_pipeline = deferred_import("critwin.models.shapes_t2i.pipeline", globals(), "t2i_pipeline")

EXPERIMENTS = ("forward-reverse", "clone")
FEATURES = (
    "nearest-source, nearest-source-cosine, clip, MODULE:FUNCTION, or a shapes attribute "
    f"({', '.join(ATTRIBUTES)}; shapes models)"
)
SOURCES_NAME = "sources"
SOURCES_FILE = f"{SOURCES_NAME}.safetensors"
SEARCH_FILE = "search.json"
SHIPPED = ", ".join(SHIPPED_MODELS)
# Python keywords of from_pipeline -> the sweep's options, so that errors name what the user typed.
FLAGS = {
    "class_labels": "--class-label",
    "null_class_label": "--null-label",
    "guidance_scale": "--guidance",
    "num_inference_steps": "--steps",
    "prompt_embeds": "--prompt-embeds",
    "scheduler": "--scheduler",
}
# Options of latent and text-conditional pipelines: a shipped model (8x8 pixels, class labels) has none.
PIPELINE_ONLY = ("--prompt", "--negative-prompt", "--prompt-embeds", "--height", "--width", "--null-label")
# ... and the unconditional shapes models have no class labels either.
CONDITIONAL_ONLY = ("--class-label", "--guidance")


def _adapter():
    """The diffusers adapter, imported on first use: diffusers costs ~2 s, which every other command skips."""
    return importlib.import_module("critwin.adapters.diffusers")


def _load_tensor_file(path: Path, key: str):
    if not path.is_file():
        raise FileNotFoundError(f"--x0 file {path} does not exist")
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"--x0 must be a .safetensors or .pt file, got {path.name}")
    from critwin._files import load_tensor_file

    data = load_tensor_file(path, "--x0 images")
    if isinstance(data, dict):
        if key not in data and len(data) != 1:
            raise ValueError(f"--x0 file {path} must hold one tensor or one named {key!r}")
        data = data.get(key, next(iter(data.values())))
    if not isinstance(data, torch.Tensor) or data.ndim != 4:
        raise ValueError(
            f"--x0 must hold images of shape (N, C, H, W) in [-1, 1], got {getattr(data, 'shape', data)}"
        )
    return data.float()


def _sources(process, out: Path, x0: torch.Tensor | None, n: int, seed: int, device: str):
    """Source images: the given --x0 images, or n samples of the model, generated once and kept in OUT,
    bound to the settings that made them (a rerun with another seed, model or sampler is refused)."""
    if x0 is not None:
        return x0
    from critwin.experiments.checkpoint import bound_tensors

    def generate() -> dict[str, torch.Tensor]:
        generator = torch.Generator(device=device).manual_seed(seed)
        x = process.prior(n, generator=generator, device=device, dtype=process.dtype)
        return {"x0": process.decode(process.run(x, generator=generator)).float().cpu()}

    settings = {"seed": seed, "n": n, "device": str(torch.device(device)), "process": process.describe()}
    images = bound_tensors(out, SOURCES_NAME, settings, generate, "--out")
    if set(images) != {"x0"} or images["x0"].ndim != 4 or images["x0"].shape[0] != n:
        raise ValueError(f"--out: {out / SOURCES_FILE} does not hold {n} source images; the file is corrupt")
    return images["x0"]


def _import_feature(spec: str) -> Callable:
    """``MODULE:FUNCTION`` imported now (the current directory first on the path): a callable or an error."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--feature {spec!r} must read MODULE:FUNCTION")
    # The console script's path does not include the current directory, where users keep feature files.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--feature {spec!r}: cannot import module {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"--feature {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"--feature {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: their first call tells
        return fn
    try:
        signature.bind(None)
    except TypeError as exc:
        raise ValueError(
            f"--feature {spec!r}: {attr}{signature} must take one argument, the batch of images ({exc})"
        ) from None
    return fn


def _is_shapes(model: str) -> bool:
    """A shipped shapes model (DDPM or text-to-image) or a shapes text-to-image directory: the shapes
    attributes are its features."""
    return (model in SHIPPED_MODELS and model.startswith("shapes")) or t2i_pipeline.is_t2i_directory(model)


def _t2i_card(model: str) -> dict | None:
    """The card of a shapes text-to-image model (a shipped name or a directory written by critwin train)."""
    return (
        t2i_pipeline.load_t2i_card(model)
        if model in PIPELINE_MODELS or t2i_pipeline.is_t2i_directory(model)
        else None
    )


def _check_t2i(card: dict, prompt, prompt_embeds, negative_prompt) -> None:
    """A shapes text-to-image model needs a prompt it can read (known words, within its tokenizer's limit)."""
    if prompt is None and prompt_embeds is None:
        raise ValueError(f"--prompt: {card['name']} is a text-to-image model; give --prompt TEXT")
    if prompt is not None:
        t2i_pipeline.check_model_prompt(prompt, card, "--prompt")
    if negative_prompt is not None:
        t2i_pipeline.check_model_prompt(negative_prompt, card, "--negative-prompt")


def _feature_factory(spec: str, clip_weights, clip_arch, labels, device, model: str) -> Callable:
    """Check ``--feature`` and its options now; returns ``make(sources) -> feature`` for later."""
    if spec in ATTRIBUTES:
        if not _is_shapes(model):
            shapes = ", ".join(name for name in SHIPPED_MODELS if _is_shapes(name))
            raise ValueError(
                f"--feature {spec} reads a shapes attribute; it applies only with --model {shapes} "
                "(or a directory written by critwin train shapes-t2i)"
            )
        return lambda sources: importlib.import_module("critwin.models.shapes").attribute_readers()[spec]
    if spec == "nearest-source":
        return lambda sources: features.SourceSimilarity(sources, metric="l2")
    if spec == "nearest-source-cosine":
        return lambda sources: features.SourceSimilarity(sources, metric="cosine")
    if spec == "clip":
        if clip_weights is None or labels is None:
            raise ValueError("--feature clip needs --clip-weights (a local file or directory) and --labels")
        if not Path(clip_weights).exists():
            raise FileNotFoundError(f"--clip-weights {clip_weights} does not exist")
        names = parse_list(labels, "--labels", str, "class names", distinct=True)
        return lambda sources: features.zero_shot_clip(names, clip_weights, arch=clip_arch, device=device)
    if ":" in spec:
        fn = _import_feature(spec)
        return lambda sources: features.CallableFeature(fn, name=spec)
    raise ValueError(f"--feature must be one of {FEATURES}, got {spec!r}")


def _check_modes(experiment, times, adaptive, prompt, prompt_embeds, negative_prompt) -> None:
    """Options that exclude or need each other."""
    check_choice(experiment, "--experiment", EXPERIMENTS)
    if times is not None and adaptive:
        raise ValueError("--times and --adaptive are exclusive: give a grid of times or search adaptively")
    if adaptive and experiment != "forward-reverse":
        raise ValueError("--adaptive searches with the forward-reverse experiment; drop --experiment clone")
    if prompt is not None and prompt_embeds is not None:
        raise ValueError("--prompt and --prompt-embeds are exclusive")
    if negative_prompt is not None and prompt is None:
        raise ValueError("--negative-prompt needs --prompt")


def _unused_options(experiment, adaptive, feature, x0, class_label) -> dict[str, str | None]:
    """Why each option would be ignored in this run (None where it applies)."""
    search_only = None if adaptive else "applies only with --adaptive"
    clip_only = None if feature == "clip" else "applies only with --feature clip"
    return {
        "resolution": search_only,
        "ci_half_width": search_only,
        "probe_batch": search_only,
        "max_per_probe": search_only,
        "chunk_size": "does not apply to --adaptive (no checkpointed units)" if adaptive else None,
        "n_per_time": None
        if experiment == "forward-reverse" and not adaptive
        else "applies only to --experiment forward-reverse without --adaptive",
        "n_clones": None if experiment == "clone" else "applies only to --experiment clone",
        "clip_weights": clip_only,
        "clip_arch": clip_only,
        "labels": clip_only,
        "null_label": None if class_label is not None else "needs --class-label",
        "n": "does not apply with --x0 (the sources are the given images)"
        if x0 is not None and experiment == "forward-reverse"
        else None,
    }


def _check_numbers(guidance: float | None, **counts: int | None) -> None:
    """Counts >= 1 (labels >= 0) and a guidance scale >= 0, where given."""
    labels = {k: counts.pop(k) for k in ("class_label", "null_label")}
    check_counts(**counts)
    check_counts(minimum=0, **labels)
    if guidance is not None and not guidance >= 0:
        raise ValueError(f"--guidance must be a number >= 0, got {guidance}")


def _check_scheduler(scheduler: str | None) -> None:
    if scheduler is not None:
        try:
            _adapter().scheduler_class(scheduler)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None


def _check_shipped(model: str, given: dict[str, object]) -> None:
    """A shipped model takes none of the options of latent or text-conditional pipelines (and the
    unconditional shapes models none of class-conditional ones)."""
    shapes = _is_shapes(model)
    kind = "16x16 shapes, unconditional" if shapes else "8x8 digits, class labels"
    for flag in PIPELINE_ONLY + (CONDITIONAL_ONLY if shapes else ()):
        if given.get(flag) is not None:
            raise ValueError(f"{flag} does not apply to the shipped model {model!r} ({kind})")


def _build_process(model, scheduler, device, dtype, prompt, embeds, steps, guidance, **conditioning):
    """A shipped model (a name of SHIPPED_MODELS) or a local pipeline directory, as a process."""
    if model in PIPELINE_MODELS:
        model = str(t2i_pipeline.model_directory(model))
    if model in SHIPPED_MODELS:
        # Deferred like the adapter: the shipped models import diffusers.
        return importlib.import_module("critwin.models._shipped").shipped_process(
            model,
            steps,
            guidance,
            conditioning["class_labels"],
            scheduler=None if scheduler is None else _adapter().scheduler_class(scheduler),
            device=device,
            dtype=dtype,
        )
    pipe = _adapter().load_local(
        Path(model), scheduler=scheduler, device=device, dtype=dtype, text_encoder=prompt is not None
    )
    try:
        return _adapter().from_pipeline(pipe, steps, guidance, prompt=prompt, **conditioning, **embeds)
    except ValueError as exc:
        raise cli_error(exc, FLAGS) from None


def _load_process(model, scheduler, device, dtype, prompt, embeds, steps, guidance, **conditioning):
    """The model as a process; critwin's noise-level notes become one stderr line each."""
    with warnings.catch_warnings(record=True) as caught:
        # Warnings that pass the active filters are collected here instead of printed.
        warnings.simplefilter("always", UserWarning)
        process = _build_process(
            model, scheduler, device, dtype, prompt, embeds, steps, guidance, **conditioning
        )
    # Noise-level notes (non-zero terminal SNR, DDIM landing between timesteps): one line each.
    for warning in caught:
        if issubclass(warning.category, UserWarning) and "critwin" in warning.filename:
            typer.echo(f"critwin: note: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return process


@app.command("sweep")
def sweep(
    ctx: typer.Context,
    model: str = typer.Option(
        ...,
        "--model",
        help=f"A shipped model ({SHIPPED}; no download, no export) or a local diffusers pipeline "
        "directory (model_index.json; ./NAME for a directory named like a shipped model).",
    ),
    out: Path = typer.Option(..., "--out", help="Result directory (resumable: rerun the same command)."),
    experiment: str = typer.Option("forward-reverse", "--experiment", help="forward-reverse or clone."),
    prompt: str = typer.Option(
        None, "--prompt", help="Text prompt (needs tokenizer + text encoder in --model)."
    ),
    negative_prompt: str = typer.Option(None, "--negative-prompt", help="Negative prompt (with --prompt)."),
    prompt_embeds: Path = typer.Option(
        None,
        "--prompt-embeds",
        help="Prompt embeddings: .safetensors or .pt (prompt_embeds, negative_prompt_embeds, pooled_...).",
    ),
    guidance: float = typer.Option(
        None,
        "--guidance",
        help="Classifier-free guidance scale (default: pipeline's; shapes-t2i: its card's).",
    ),
    class_label: int = typer.Option(
        None,
        "--class-label",
        help=f"Class label of a class-conditional model. Shipped digits models: 0-9, or {NUM_CLASSES} = "
        f"the null label (unconditional; the default).",
    ),
    null_label: int = typer.Option(
        None,
        "--null-label",
        help=f"Unconditional class label for --guidance (local pipelines; digits models: {NUM_CLASSES}).",
    ),
    scheduler: str = typer.Option(
        None,
        "--scheduler",
        help="Replace the saved scheduler: ddpm, ddim, euler, euler-ancestral, dpm++, unipc.",
    ),
    steps: int = typer.Option(25, "--steps", help="Sampler steps."),
    times: str = typer.Option(None, "--times", help="Comma-separated OU times (default: every grid time)."),
    adaptive: bool = typer.Option(
        False, "--adaptive", help="Bisect for the window endpoints instead of a grid."
    ),
    delta: float = typer.Option(0.1, "--delta", help="Window level delta (estimate and --adaptive)."),
    resolution: float = typer.Option(
        None,
        "--resolution",
        help="--adaptive: OU-time resolution (default 0.05); with --ci-half-width the spacing of the "
        "probed times (default 2 x the half-width).",
    ),
    ci_half_width: float = typer.Option(
        None,
        "--ci-half-width",
        help="--adaptive: sample until both endpoints' 95% intervals have this half-width (OU time).",
    ),
    probe_batch: int = typer.Option(
        64, "--probe-batch", help="--adaptive: samples per batch at a probe time."
    ),
    max_per_probe: int = typer.Option(
        512, "--max-per-probe", help="--adaptive: most samples at one probe time."
    ),
    x0: Path = typer.Option(
        None, "--x0", help="Source images (N, C, H, W) in [-1, 1]; default: --n model samples."
    ),
    n: int = typer.Option(8, "--n", help="Generated source images / cloning trajectories."),
    n_per_time: int = typer.Option(4, "--n-per-time", help="Forward-reverse replicates per source and time."),
    n_clones: int = typer.Option(4, "--n-clones", help="Continuations per trajectory and fork."),
    feature: str = typer.Option("nearest-source", "--feature", help=f"Feature: {FEATURES}."),
    clip_weights: Path = typer.Option(None, "--clip-weights", help="Local CLIP weights (file or directory)."),
    clip_arch: str = typer.Option(
        None, "--clip-arch", help="open_clip architecture of --clip-weights (a file)."
    ),
    labels: str = typer.Option(None, "--labels", help="Comma-separated class names for --feature clip."),
    height: int = typer.Option(None, "--height", help="Image height (latent models)."),
    width: int = typer.Option(None, "--width", help="Image width (latent models)."),
    seed: str = typer.Option("0", "--seed", help="Seed of every random draw."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16."),
    chunk_size: int = typer.Option(None, "--chunk-size", help="Samples per checkpointed unit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float | None = typer.Option(None, "--ray-timeout", help=RAY_TIMEOUT_HELP),
) -> None:
    """Measure critical windows on a shipped model or a local diffusers model (Stable Diffusion, SDXL, DDPM).

    Writes the engine's tidy outputs into --out (config.json, units/, table.csv, metadata.json; with
    --adaptive: search.json) and prints the realised noise level of every requested time.
    """
    seed = parse_seed(seed)
    if is_text_model(model):
        image_only = (prompt, negative_prompt, prompt_embeds, guidance, class_label, null_label, scheduler)
        image_only += (x0, clip_weights, clip_arch, labels, height, width)
        check_text_options(dict(zip(TEXT_REFUSED, image_only, strict=True)))
        run = dict(experiment=experiment, adaptive=adaptive, delta=delta, resolution=resolution, n=n)
        run.update(probe_batch=probe_batch, max_per_probe=max_per_probe, n_per_time=n_per_time)
        run.update(n_clones=n_clones, seed=seed, chunk_size=chunk_size, progress=progress, device=device)
        run.update(executor=executor, ray_address=ray_address, dtype=dtype)
        given = {k: ctx.get_parameter_source(k).name == "COMMANDLINE" for k in ("steps", "feature")}
        run.update(steps=steps if given["steps"] else None, feature=feature if given["feature"] else None)
        run["times"] = parse_times(times) if times is not None else None
        return text_sweep(model, out, run)
    # Every option is checked (and every small file read) before the pipeline loads.
    _check_modes(experiment, times, adaptive, prompt, prompt_embeds, negative_prompt)
    card = _t2i_card(model)
    if card is not None:
        _check_t2i(card, prompt, prompt_embeds, negative_prompt)
        guidance = card["guidance_scale"] if guidance is None else guidance
    elif model in SHIPPED_MODELS:
        given = dict(
            zip(
                PIPELINE_ONLY + CONDITIONAL_ONLY,
                (prompt, negative_prompt, prompt_embeds, height, width, null_label, class_label, guidance),
                strict=True,
            )
        )
        _check_shipped(model, given)
    reject_unused(ctx, _unused_options(experiment, adaptive, feature, x0, class_label))
    check_out_dir(out)
    _check_numbers(
        guidance,
        steps=steps,
        n=n,
        n_per_time=n_per_time,
        n_clones=n_clones,
        probe_batch=probe_batch,
        max_per_probe=max_per_probe,
        chunk_size=chunk_size,
        height=height,
        width=width,
        class_label=class_label,
        null_label=null_label,
    )
    delta = check_delta(delta, "--delta")
    runs_on = executor_options(executor, ray_address, ray_timeout)
    resolution, ci_half_width = _check_precision(resolution, ci_half_width)
    device, torch_dtype = parse_device_dtype(device, dtype)
    _check_scheduler(scheduler)
    requested = parse_times(times) if times is not None else None
    make_feature = _feature_factory(feature, clip_weights, clip_arch, labels, device, model)
    embeds = _adapter().load_prompt_embeds(prompt_embeds) if prompt_embeds is not None else {}
    images = _load_tensor_file(x0, "x0") if x0 is not None else None

    kind = "search" if adaptive else experiment.replace("-", "_")
    if not adaptive:
        n_sources = n if images is None else images.shape[0]
        n_times = len(requested) if requested is not None else steps + 1  # at most the grid's times
        _check_sweep_sizes(experiment, n_sources, n_times, n_per_time, n_clones)
    from critwin.experiments.checkpoint import claim_directory
    from critwin.experiments.cloning import clone
    from critwin.experiments.forward_reverse import forward_reverse

    # Held for the whole run: a second process is refused ("in use by pid N"), a foreign directory too.
    with claim_directory(out, kind, "--out"):
        process = _load_process(
            model,
            scheduler,
            device,
            torch_dtype,
            prompt,
            embeds,
            steps,
            guidance,
            negative_prompt=negative_prompt,
            class_labels=class_label,
            null_class_label=null_label,
            height=height,
            width=width,
        )
        sources = _sources(process, out, images, n, seed, device)
        feature_fn = make_feature(sources)
        if adaptive:
            settings = {"feature": getattr(feature_fn, "name", feature), "seed": seed, "delta": delta}
            settings.update(resolution=resolution, probe_batch=probe_batch, max_per_probe=max_per_probe)
            if ci_half_width is not None:  # absent otherwise, so that earlier searches still resume
                settings["ci_half_width"] = ci_half_width
            _search(process, sources, feature_fn, settings, out, dict(progress=progress, **runs_on))
            return
        if requested is None:
            grid = process.times[:-1].tolist()
            requested = ([0.0] if experiment == "forward-reverse" else []) + sorted(grid)
        common = dict(
            feature=feature_fn, seed=seed, out=out, chunk_size=chunk_size, progress=progress, **runs_on
        )
        if experiment == "forward-reverse":
            result = forward_reverse(process, sources, requested, n_per_time=n_per_time, **common)
        else:
            result = clone(process, n, requested, n_clones, **common)
        _print_table(result)
        _report_window(result, delta, seed, out)
        typer.echo(f"wrote {out / 'table.csv'}")


def _check_sweep_sizes(experiment: str, n: int, n_times: int, n_per_time: int, n_clones: int) -> None:
    """The memory guard on the sweep's tables before the model loads and the sources are drawn (the
    engine checks again, with the realised times)."""
    from critwin.experiments.process import check_sweep_memory

    if experiment == "forward-reverse":
        what = f"a sweep of --n {n} sources x --n-per-time {n_per_time} at {n_times} times"
        check_sweep_memory(n_times * n * n_per_time, 1, what)
    else:
        what = f"a cloning sweep of --n {n} trajectories x --n-clones {n_clones} at {n_times} times"
        check_sweep_memory(n * (1 + 2 * n_times * n_clones), 1, what)


def _search(process, sources, feature_fn, settings: dict, out: Path, run: dict) -> None:
    """``--adaptive``: bisect for the window endpoints; a finished search with these settings is reused.

    ``run`` holds ``progress``, ``executor``, ``ray_address`` and ``ray_timeout`` (they do not change the
    result)."""
    settings = {"process": process.describe(), **settings, "n_sources": int(sources.shape[0])}
    path = out / SEARCH_FILE
    if path.is_file():
        stored = read_json(path, "--out: search result")
        if json.loads(json.dumps(settings)) == stored.get("settings"):
            if not isinstance(stored.get("result"), dict) or not _SEARCH_KEYS <= set(stored["result"]):
                raise ValueError(f"--out: {path} lacks the search result; the file is corrupt")
            _print_search(stored["result"], path)
            return
        raise ValueError(f"--out {out} holds a search with other settings; use another directory")
    from critwin.experiments.search import search_window

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        found = search_window(
            process,
            sources,
            feature_fn,
            delta=settings["delta"],
            resolution=settings["resolution"],
            ci_half_width=settings.get("ci_half_width"),
            seed=settings["seed"],
            batch=settings["probe_batch"],
            max_per_probe=settings["max_per_probe"],
            **run,
        )
    for warning in caught:  # a precision not reached: one line
        typer.echo(f"critwin: note: {warning.message}", err=True)
    result = {
        "t_after": found.t_after,
        "t_before": found.t_before,
        "t_after_bracket": list(found.t_after_bracket),
        "t_before_bracket": list(found.t_before_bracket),
        "t_after_ci": list(found.t_after_ci),
        "t_before_ci": list(found.t_before_ci),
        "base_rate": found.b,
        "nfe": found.nfe,
        "probes": found.probes,
    }
    if found.ci_half_width is not None:  # whether the requested precision was reached, kept with it
        result.update(ci_half_width=found.ci_half_width, ci_reached=found.ci_reached)
    atomic_write_json(path, {"settings": settings, "result": result})
    _print_search(json.loads(path.read_text())["result"], path)  # as a resumed run prints it


_SEARCH_KEYS = {"t_after", "t_before", "t_after_bracket", "t_before_bracket", "base_rate"}


def _print_table(result) -> None:
    agreement = result.agreement.tolist()
    typer.echo(f"{'requested_t':>12} {'realised_t':>11} {'step':>8} {'agreement':>10}")
    for i, t in enumerate(result.requested_times.tolist()):
        # Sigma-based schedulers (Euler) have fractional timesteps: print them as they are.
        step = "-" if result.steps is None or result.steps[i] < 0 else f"{result.steps[i].item():g}"
        typer.echo(f"{t:12.4g} {result.times[i].item():11.4g} {step:>8} {agreement[i]:10.3f}")


def _report_window(result, delta: float, seed: int, out: Path) -> None:
    """Window estimate (isotonic fit, bootstrap CIs) of the sweep, printed and saved as window.json."""
    from critwin.experiments.estimation import estimate_window

    try:
        # Percentiles of bootstrap replicates with infinite (censored) endpoints are nan: expected here.
        with np.errstate(invalid="ignore"):
            estimate = estimate_window(
                result, delta=delta, per_class=False, generator=torch.Generator().manual_seed(seed)
            )
    except ValueError as exc:
        typer.echo(f"critwin: note: no window estimate: {exc}", err=True)
        return
    atomic_write_json(out / "window.json", estimate.to_dict())
    if estimate.empty:
        typer.echo(f"window: not resolved on these times (base rate {estimate.b:.3g}); see window.json")
        return
    typer.echo(
        f"window (delta={delta:g}, base rate {estimate.b:.3g}): "
        f"t_after {format_ci(estimate.t_after, *estimate.t_after_ci)}, "
        f"t_before {format_ci(estimate.t_before, *estimate.t_before_ci)} (95% CIs)"
    )


def _check_precision(
    resolution: float | None, ci_half_width: float | None
) -> tuple[float | None, float | None]:
    """``--resolution`` (default 0.05 without --ci-half-width, else the search's lattice default: None)
    and ``--ci-half-width``, each > 0."""
    if ci_half_width is not None:
        ci_half_width = check_number(ci_half_width, "--ci-half-width (OU time)", low=0.0, closed="high")
    if resolution is None:
        return (0.05 if ci_half_width is None else None), ci_half_width
    return check_time(resolution, "--resolution", allow_zero=False), ci_half_width


def _print_search(result: dict, path: Path) -> None:
    # Stored results are strict JSON: an unresolved (infinite) endpoint reads back as a censored marker.
    for name in ("t_after", "t_before"):
        value = json_float(result[name])
        bracket = "[" + ", ".join(fmt_time(json_float(v)) for v in result[name + "_bracket"]) + "]"
        if name + "_ci" in result:  # searches stored before the intervals were kept have none
            low, high = (json_float(v) for v in result[name + "_ci"])
            typer.echo(f"{name:<8} = {format_ci(value, low, high)} (95% CI)  bracket {bracket}")
        else:
            typer.echo(f"{name:<8} = {fmt_time(value)}  bracket {bracket}")
    if "ci_reached" in result:
        verdict = (
            "reached" if result["ci_reached"] else "NOT reached (sample budget spent or an endpoint censored)"
        )
        typer.echo(f"requested half-width {result['ci_half_width']:g}: {verdict}")
    typer.echo(f"base rate {result['base_rate']:.3g}; wrote {path}")
