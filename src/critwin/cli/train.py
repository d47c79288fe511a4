"""``critwin train MODEL``: retrain the shipped digits and shapes models and classifiers reproducibly."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import typer

from critwin.cli import app
from critwin.cli._common import check_choice, check_counts, check_out_dir, reject_unused
from critwin.models._store import load_card, weights_paths
from critwin.models.classifier import (
    CLASSIFIER_NAME,
    evaluate_classifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from critwin.models.data import load_digits_data
from critwin.models.shapes import (
    SHAPE_CLASSIFIER_NAME,
    attribute_readers,
    evaluate_readers,
    load_shape_classifier,
    save_shape_classifier,
    train_shape_classifier,
)

SHAPE_CLASSIFIER_TRAIN = 8000

DIGITS = ("digits", "digits-memorise", "digits-flow", "digits-v", "digits-tiny")
SHAPES = ("shapes", "shapes-biased", "shapes-memorise", "shapes-tiny")
CLASSIFIERS = ("classifier", "shapes-classifier")
TRAINABLE = (*DIGITS, "classifier", *SHAPES, "shapes-classifier")


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
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, batches and noise."),
    eval_every: int = typer.Option(
        500, "--eval-every", help="Steps between quick sample-quality checks (0: none)."
    ),
    eval_samples: int = typer.Option(
        50, "--eval-samples", help="Final evaluation: conditional samples per digit (digits models)."
    ),
    unconditional_samples: int = typer.Option(
        None,
        "--unconditional-samples",
        help="Final evaluation: unconditional samples (class or attribute histograms; default 500 "
        "digits, 1000 shapes).",
    ),
    inference_steps: int = typer.Option(
        100, "--inference-steps", help="Sampler steps (the model's own scheduler) for evaluation samples."
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
    ``shapes-tiny``) or the ``shapes-classifier`` (the shape reader).

    Writes safetensors weights and a JSON model card (config, data, seed, metrics) into --out.
    """
    check_choice(model, "MODEL", TRAINABLE)
    check_out_dir(out)
    reject_unused(ctx, {"eval_samples": None if model in DIGITS else "applies only to the digits models"})
    check_counts(eval_every=eval_every, unconditional_samples=unconditional_samples, minimum=0)
    check_counts(eval_samples=eval_samples, inference_steps=inference_steps, threads=threads)
    if model in CLASSIFIERS:
        _check_classifier_options(steps, batch_size, learning_rate, epochs)
    else:
        _check_digits_options(steps, batch_size, learning_rate, epochs)
    if classifier_dir is not None and not classifier_dir.is_dir():
        raise ValueError(f"--classifier-dir must be a directory, got {classifier_dir}")
    if threads is not None:
        # Float summation order depends on the thread count; fix it to reproduce a run bit for bit.
        torch.set_num_threads(threads)
    if model in CLASSIFIERS:
        train_one = _train_classifier if model == "classifier" else _train_shape_classifier
        train_one(out, epochs, seed)
        return
    changes = {"seed": seed, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate}
    changes = {k: v for k, v in changes.items() if v is not None}
    run = dict(
        out=out,
        classifier_dir=classifier_dir,
        eval_every=eval_every,
        unconditional_samples=unconditional_samples,
        inference_steps=inference_steps,
        progress=progress,
    )
    if model in SHAPES:
        _train_shapes(model, changes, **run)
    else:
        _train_digits(model, changes, eval_samples=eval_samples, **run)


def _train_digits(model: str, changes: dict, *, out, classifier_dir, eval_samples, **run) -> None:
    # Deferred: critwin.models.digits imports diffusers (seconds); options are checked above.
    from critwin.models.digits import PRESETS, train_digits

    preset = PRESETS["tiny" if model == "digits-tiny" else model]
    config = preset.replace(**changes)
    classifier = _load_metrics_classifier(out, classifier_dir)
    # Read after training, so a main model trained meanwhile into the same --out is the reference.
    reference = (lambda: _reference_card(out, "digits")) if model == "digits-memorise" else None
    samples = run["unconditional_samples"]
    train_digits(
        config,
        name=model,
        out_dir=out,
        classifier=classifier,
        log_every=max(1, min(100, config.steps // 10)),
        eval_every=run["eval_every"],
        final_per_class=eval_samples,
        final_unconditional=500 if samples is None else samples,
        num_inference_steps=run["inference_steps"],
        progress=run["progress"],
        log=typer.echo,
        reference_card=reference,
    )


def _train_shapes(model: str, changes: dict, *, out, classifier_dir, **run) -> None:
    # Deferred: critwin.models.shapes' training imports diffusers (seconds); options are checked above.
    from critwin.models.shapes import PRESETS, train_shapes

    preset = PRESETS["tiny" if model == "shapes-tiny" else model]
    config = preset.replace(**changes)
    directory = _classifier_dir(out, classifier_dir, SHAPE_CLASSIFIER_NAME)
    readers = attribute_readers(load_shape_classifier(directory))
    reference = (lambda: _reference_card(out, "shapes")) if model == "shapes-memorise" else None
    samples = run["unconditional_samples"]
    train_shapes(
        config,
        name=model,
        out_dir=out,
        readers=readers,
        log_every=max(1, min(100, config.steps // 10)),
        eval_every=run["eval_every"],
        final_samples=1000 if samples is None else samples,
        num_inference_steps=run["inference_steps"],
        progress=run["progress"],
        log=typer.echo,
        reference_card=reference,
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
    data = load_digits_data()
    typer.echo(
        f"training the digit classifier: {epochs} epochs on {data.train_labels.numel()} digits, seed {seed}"
    )
    model = train_classifier(data, epochs=epochs, seed=seed)
    metrics = evaluate_classifier(model, data)
    described = data.describe()
    described.pop("train_indices")
    weights_file, card_file = save_classifier(
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
    model = train_shape_classifier(n_train=SHAPE_CLASSIFIER_TRAIN, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - started
    readers = attribute_readers(model)
    accuracy = evaluate_readers(readers)
    noisy = evaluate_readers(readers, noise=0.1)
    weights_file, card_file = save_shape_classifier(
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


def _classifier_dir(out: Path, classifier_dir: Path | None, name: str) -> Path | None:
    """Where the metrics classifier ``name`` comes from: --classifier-dir, else --out if it holds one, else
    the shipped weights (None)."""
    if classifier_dir is not None:
        return classifier_dir
    return out if weights_paths(name, out).card.is_file() else None


def _load_metrics_classifier(out: Path, classifier_dir: Path | None):
    return load_classifier(_classifier_dir(out, classifier_dir, CLASSIFIER_NAME))


def _reference_card(out: Path, name: str) -> dict | None:
    """The main model's card (from --out, else the shipped one) for the memorisation comparison."""
    for directory in (out, None):
        try:
            return load_card(name, directory)
        except (FileNotFoundError, ValueError):
            continue
    return None
