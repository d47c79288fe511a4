"""``critwin train MODEL``: retrain the shipped digits and shapes models and classifiers reproducibly."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import typer

from critwin._lazy import deferred_import
from critwin._validation import parse_seed
from critwin.cli import app
from critwin.cli._common import check_choice, check_counts, check_out_dir, hold_output, reject_unused
from critwin.models._store import load_card, weights_paths

# Imported when training starts, after every option is checked (torch, the models).
torch = deferred_import("torch", globals())
classifiers = deferred_import("critwin.models.classifier", globals(), "classifiers")
readers_lib = deferred_import("critwin.models.shapes.readers", globals(), "readers_lib")
digits_data = deferred_import("critwin.models.data", globals(), "digits_data")

SHAPE_CLASSIFIER_TRAIN = 8000

DIGITS = ("digits", "digits-memorise", "digits-flow", "digits-v", "digits-tiny")
SHAPES = ("shapes", "shapes-biased", "shapes-memorise", "shapes-tiny")
T2I = (
    "shapes-t2i",
    "shapes-t2i-biased",
    "shapes-t2i-memorise",
    "shapes-t2i-tiny",
    "shapes-t2i-biased-tiny",
    "shapes-t2i-memorise-tiny",
)
CLASSIFIERS = ("classifier", "shapes-classifier", "digit-judge", "shapes-selector")
TEXT = ("rhm-mdm", "rhm-ar", "rhm-mdm-tiny", "rhm-ar-tiny")
TRAINABLE = (
    *DIGITS,
    "classifier",
    *SHAPES,
    "shapes-classifier",
    "digit-judge",
    "shapes-selector",
    *T2I,
    *TEXT,
)
NOT_FOR_TEXT = "does not apply to the text models"


@app.command("train")
def train(
    ctx: typer.Context,
    model: str = typer.Argument(..., help=f"What to train: one of {', '.join(TRAINABLE)}."),
    out: Path = typer.Option(
        Path("critwin-weights"), "--out", help="Directory for <name>.safetensors + <name>.json."
    ),
    steps: int = typer.Option(
        None, "--steps", help="Optimiser steps (diffusion models; default: the preset's)."
    ),
    batch_size: int = typer.Option(None, "--batch-size", help="Batch size (default: the preset's)."),
    learning_rate: float = typer.Option(
        None, "--learning-rate", help="Peak learning rate (default: the preset's)."
    ),
    epochs: int = typer.Option(
        None, "--epochs", help="Training epochs (classifiers only; default 60 digits, 8 shapes)."
    ),
    seed: str = typer.Option("0", "--seed", help="Seed of initialisation, batches and noise."),
    eval_every: int = typer.Option(
        500, "--eval-every", help="Steps between quick sample-quality checks (0: none)."
    ),
    eval_samples: int = typer.Option(
        None,
        "--eval-samples",
        help="Final evaluation: conditional samples per digit (digits models; default 50) or per fully "
        "specified prompt (shapes-t2i models; default 10).",
    ),
    unconditional_samples: int = typer.Option(
        None,
        "--unconditional-samples",
        help="Final evaluation: unconditional samples (class or attribute histograms; default 500 "
        "digits, 1000 shapes).",
    ),
    inference_steps: int = typer.Option(
        None,
        "--inference-steps",
        help="Sampler steps (the model's own scheduler) for evaluation samples (default 100; shapes-t2i: "
        "the preset's 25, recorded in the card as the model's default).",
    ),
    classifier_dir: Path = typer.Option(
        None,
        "--classifier-dir",
        help="Folder of the classifier used for metrics (default: --out if it "
        "holds one, else the shipped classifier).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    threads: int = typer.Option(
        None,
        "--threads",
        help="CPU threads for torch (the shipped weights were trained with 1; default: torch's).",
    ),
) -> None:
    """Train a digits model (``digits``, ``digits-memorise``, ``digits-flow``, ``digits-v``, ``digits-tiny``),
    the digit ``classifier``, a shapes DDPM (``shapes``, ``shapes-biased``, ``shapes-memorise``,
    ``shapes-tiny``), the ``shapes-classifier`` (the shape reader), an independent reader
    (:mod:`critwin.models.judges`: the ``digit-judge`` grades what the digit classifier selected, the
    ``shapes-selector`` selects while the analytic readers grade), a text-to-image pipeline
    (``shapes-t2i``, ``shapes-t2i-biased``, ``shapes-t2i-memorise`` and their ``-tiny`` versions), or a
    text model on the Random Hierarchy Model (``rhm-mdm`` masked diffusion, ``rhm-ar`` autoregressive;
    ``-tiny`` versions).

    Writes safetensors weights and a JSON model card (config, data, seed, metrics) into --out; a
    text-to-image model is the pipeline directory --out/NAME (with critwin_card.json).
    """
    seed = parse_seed(seed)
    check_choice(model, "MODEL", TRAINABLE)
    check_out_dir(out)
    t2i_only = "does not apply to the shapes-t2i models" if model in T2I else None
    reject_unused(
        ctx,
        {
            "eval_samples": None
            if model in DIGITS + T2I
            else "applies only to the digits and shapes-t2i models",
            "eval_every": t2i_only,
            "unconditional_samples": t2i_only,
        },
    )
    if model in TEXT:
        reject_unused(ctx, {"inference_steps": NOT_FOR_TEXT, "classifier_dir": NOT_FOR_TEXT})
    check_counts(eval_every=eval_every, unconditional_samples=unconditional_samples, minimum=0)
    check_counts(eval_samples=eval_samples, inference_steps=inference_steps, threads=threads)
    if model in CLASSIFIERS:
        _check_classifier_options(steps, batch_size, learning_rate, epochs)
    else:
        _check_digits_options(steps, batch_size, learning_rate, epochs)
    if classifier_dir is not None and not classifier_dir.is_dir():
        raise ValueError(f"--classifier-dir must be a directory, got {classifier_dir}")
    # The files of this model in --out (weights and card, replaced together): a second writer is refused.
    name = classifiers.CLASSIFIER_NAME if model == "classifier" else model
    hold_output(weights_paths(name, out).weights, "--out")
    if threads is not None:
        # Float summation order depends on the thread count; fix it to reproduce a run bit for bit.
        torch.set_num_threads(threads)
    if model in CLASSIFIERS:
        train_one = {
            "classifier": _train_classifier,
            "shapes-classifier": _train_shape_classifier,
            "digit-judge": _train_digit_judge,
            "shapes-selector": _train_shapes_selector,
        }[model]
        train_one(out, epochs, seed)
        return
    changes = {"seed": seed, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate}
    changes = {k: v for k, v in changes.items() if v is not None}
    run = dict(
        out=out,
        classifier_dir=classifier_dir,
        eval_every=eval_every,
        unconditional_samples=unconditional_samples,
        inference_steps=100 if inference_steps is None and model not in T2I else inference_steps,
        progress=progress,
    )
    if model in TEXT:
        _train_text(model, changes, **run)
    elif model in SHAPES:
        _train_shapes(model, changes, **run)
    elif model in T2I:
        _train_t2i(model, changes, eval_samples=eval_samples, **run)
    else:
        _train_digits(model, changes, eval_samples=50 if eval_samples is None else eval_samples, **run)


def _train_digits(model: str, changes: dict, *, out, classifier_dir, eval_samples, **run) -> None:
    # Deferred: critwin.models.digits imports diffusers (seconds); options are checked above.
    from critwin.models.digits import PRESETS, train_digits

    config = _preset(PRESETS, model, "digits", changes)
    classifier = _load_metrics_classifier(out, classifier_dir)
    samples = run["unconditional_samples"]
    train_digits(
        config,
        classifier=classifier,
        final_per_class=eval_samples,
        final_unconditional=500 if samples is None else samples,
        **_ddpm_run(model, "digits", config, out, run),
    )


def _train_shapes(model: str, changes: dict, *, out, classifier_dir, **run) -> None:
    # Deferred: critwin.models.shapes' training imports diffusers (seconds); options are checked above.
    from critwin.models.shapes import PRESETS, train_shapes

    config = _preset(PRESETS, model, "shapes", changes)
    directory = _classifier_dir(out, classifier_dir, readers_lib.SHAPE_CLASSIFIER_NAME)
    readers = readers_lib.attribute_readers(readers_lib.load_shape_classifier(directory))
    samples = run["unconditional_samples"]
    train_shapes(
        config,
        readers=readers,
        final_samples=1000 if samples is None else samples,
        **_ddpm_run(model, "shapes", config, out, run),
    )


def _preset(presets: dict, model: str, family: str, changes: dict):
    """The preset of ``model`` (``<family>-tiny`` is the preset ``"tiny"``) with the command-line changes."""
    return presets["tiny" if model == f"{family}-tiny" else model].replace(**changes)


def _log_every(config, most: int = 100) -> int:
    """Steps between loss lines: a tenth of the run, at least 1 and at most ``most``."""
    return max(1, min(most, config.steps // 10))


def _ddpm_run(model: str, family: str, config, out, run: dict) -> dict:
    """The keyword arguments ``train_digits`` and ``train_shapes`` share (``family``: ``"digits"`` or
    ``"shapes"``; its ``-memorise`` model quotes the main model's card)."""
    # Read after training, so a main model trained meanwhile into the same --out is the reference.
    reference = (lambda: _reference_card(out, family)) if model == f"{family}-memorise" else None
    return dict(
        name=model,
        out_dir=out,
        log_every=_log_every(config),
        eval_every=run["eval_every"],
        num_inference_steps=run["inference_steps"],
        progress=run["progress"],
        log=typer.echo,
        reference_card=reference,
    )


def _train_t2i(model: str, changes: dict, *, out, classifier_dir, eval_samples, **run) -> None:
    if importlib.util.find_spec("transformers") is None:
        raise ValueError(
            f"MODEL {model} needs transformers (its CLIP text encoder): pip install transformers"
        )
    # Deferred: the text-to-image modules import diffusers and transformers (seconds).
    from critwin.models.shapes_t2i import PRESETS, train_t2i

    if run["inference_steps"] is not None:
        changes = {**changes, "num_inference_steps": run["inference_steps"]}
    config = PRESETS[model].replace(**changes)
    directory = _classifier_dir(out, classifier_dir, readers_lib.SHAPE_CLASSIFIER_NAME)
    train_t2i(
        config,
        name=model,
        out_dir=out,
        readers=readers_lib.attribute_readers(readers_lib.load_shape_classifier(directory)),
        log_every=_log_every(config),
        evaluation={"n_per_prompt": 10 if eval_samples is None else eval_samples},
        progress=run["progress"],
        log=typer.echo,
    )


def _train_text(model: str, changes: dict, *, out, unconditional_samples, eval_every, progress, **_) -> None:
    from critwin.models.text import PRESETS, train_text_model

    config = PRESETS[model].replace(**changes)
    train_text_model(
        config,
        name=model,
        out_dir=out,
        log_every=_log_every(config, most=200),
        eval_every=eval_every,
        final_samples=2000 if unconditional_samples is None else unconditional_samples,
        progress=progress,
        log=typer.echo,
    )


def _check_digits_options(steps, batch_size, learning_rate, epochs) -> None:
    if epochs is not None:
        raise ValueError("--epochs applies only to the classifiers (diffusion models take --steps)")
    check_counts(steps=steps, batch_size=batch_size)
    if learning_rate is not None and not learning_rate > 0:
        raise ValueError(f"--learning-rate must be > 0, got {learning_rate}")


def _check_classifier_options(steps, batch_size, learning_rate, epochs: int | None) -> None:
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--learning-rate", learning_rate)):
        if value is not None:
            raise ValueError(f"{name} does not apply to the classifier (it takes --epochs and --seed)")
    check_counts(epochs=epochs)


def _train_classifier(out: Path, epochs: int | None, seed: int) -> None:
    epochs = 60 if epochs is None else epochs
    data = digits_data.load_digits_data()
    typer.echo(
        f"training the digit classifier: {epochs} epochs on {data.train_labels.numel()} digits, seed {seed}"
    )
    model = classifiers.train_classifier(data, epochs=epochs, seed=seed)
    metrics = classifiers.evaluate_classifier(model, data)
    described = data.describe()
    described.pop("train_indices")
    weights_file, card_file = classifiers.save_classifier(
        model,
        out,
        {
            "data": described,
            "training": {
                "epochs": epochs,
                "seed": seed,
                "optimiser": "Adam, cosine learning rate",
                "augmentation": "random shifts of -1/0/+1 pixel",
            },
            "metrics": metrics,
        },
    )
    typer.echo(
        f"test accuracy {metrics['test_accuracy']:.4f} (n={metrics['n_test']}); "
        f"wrote {weights_file} and {card_file}"
    )


def _train_shape_classifier(out: Path, epochs: int | None, seed: int) -> None:
    epochs = 8 if epochs is None else epochs
    typer.echo(
        f"training the shape reader: {epochs} epochs on {SHAPE_CLASSIFIER_TRAIN} shapes images, seed {seed}"
    )
    started = time.perf_counter()
    model = readers_lib.train_shape_classifier(n_train=SHAPE_CLASSIFIER_TRAIN, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    readers = readers_lib.attribute_readers(model)
    accuracy = readers_lib.evaluate_readers(readers)
    noisy = readers_lib.evaluate_readers(readers, noise=0.1)
    weights_file, card_file = readers_lib.save_shape_classifier(
        model,
        out,
        {
            "data": {"dataset": "make_shapes", "n_train": SHAPE_CLASSIFIER_TRAIN, "seed": 1},
            "training": {
                "epochs": epochs,
                "seed": seed,
                "optimiser": "Adam, cosine learning rate",
                "augmentation": "Gaussian pixel noise, std 0.1",
                "seconds": seconds,
                "torch_threads": torch.get_num_threads(),
            },
            "metrics": {
                "test_accuracy": accuracy["shape"],
                "n_test": 4000,
                "held_out": "make_shapes(4000, seed=12345)",
                "reader_accuracy": accuracy,
                "reader_accuracy_noise_0.1": noisy,
            },
        },
    )
    typer.echo(
        f"held-out reader accuracy {accuracy} (noise 0.1: {noisy}); wrote {weights_file} and {card_file}"
    )


def _train_digit_judge(out: Path, epochs: int | None, seed: int) -> None:
    from critwin.models.judges import evaluate_digit_judge, save_digit_judge, train_digit_judge

    epochs = 120 if epochs is None else epochs
    data = digits_data.load_digits_data()
    typer.echo(f"training the digit judge: {epochs} epochs on the {data.test_labels.numel()} test digits")
    started = time.perf_counter()
    model = train_digit_judge(data, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    metrics = evaluate_digit_judge(model, data)
    weights_file, card_file = save_digit_judge(
        model,
        out,
        {
            "role": "judge of what the digit-classifier selects (disjoint split, other width and seed)",
            "data": {
                "split_seed": data.seed,
                "trained_on": "test split",
                "n_train": int(data.test_labels.numel()),
            },
            "training": {
                "epochs": epochs,
                "batch_size": 32,
                "width": model.width,
                "seed": seed,
                "optimiser": "Adam, cosine learning rate",
                "augmentation": "random shifts of -1/0/+1 pixel",
                "seconds": seconds,
                "torch_threads": torch.get_num_threads(),
            },
            "metrics": metrics,
        },
    )
    typer.echo(
        f"held-out accuracy {metrics['held_out_accuracy']:.4f} (n={metrics['n_held_out']}); "
        f"wrote {weights_file} and {card_file}"
    )


def _train_shapes_selector(out: Path, epochs: int | None, seed: int) -> None:
    from critwin.models.judges import (
        SELECTOR_DATA_SEED,
        evaluate_shapes_selector,
        save_shapes_selector,
        train_shapes_selector,
    )

    epochs = 6 if epochs is None else epochs
    n_train = 6000
    typer.echo(f"training the shapes selector: {epochs} epochs on {n_train} shapes images, seed {seed}")
    started = time.perf_counter()
    net = train_shapes_selector(n_train=n_train, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    accuracy = evaluate_shapes_selector(net)
    noisy = evaluate_shapes_selector(net, noise=0.1)
    weights_file, card_file = save_shapes_selector(
        net,
        out,
        {
            "data": {"dataset": "make_shapes", "n_train": n_train, "seed": SELECTOR_DATA_SEED},
            "training": {
                "epochs": epochs,
                "seed": seed,
                "optimiser": "Adam, cosine learning rate",
                "augmentation": "Gaussian pixel noise, std 0.15",
                "seconds": seconds,
                "torch_threads": torch.get_num_threads(),
            },
            "metrics": {
                "held_out": "make_shapes(4000, seed=12345)",
                "accuracy": accuracy,
                "accuracy_noise_0.1": noisy,
            },
        },
    )
    typer.echo(f"held-out accuracy {accuracy} (noise 0.1: {noisy}); wrote {weights_file} and {card_file}")


def _classifier_dir(out: Path, classifier_dir: Path | None, name: str) -> Path | None:
    """Where the metrics classifier ``name`` comes from: --classifier-dir, else --out if it holds one, else
    the shipped weights (None)."""
    if classifier_dir is not None:
        return classifier_dir
    return out if weights_paths(name, out).card.is_file() else None


def _load_metrics_classifier(out: Path, classifier_dir: Path | None):
    return classifiers.load_classifier(_classifier_dir(out, classifier_dir, classifiers.CLASSIFIER_NAME))


def _reference_card(out: Path, name: str) -> dict | None:
    """The main model's card (from --out, else the shipped one) for the memorisation comparison."""
    for directory in (out, None):
        try:
            return load_card(name, directory)
        except (FileNotFoundError, ValueError):
            continue
    return None
