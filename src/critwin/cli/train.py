"""``critwin train MODEL``: retrain the shipped digits models and classifier reproducibly."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from critwin.cli import app
from critwin.cli._common import check_choice, check_counts, check_out_dir
from critwin.models._store import load_card, weights_paths
from critwin.models.classifier import (
    CLASSIFIER_NAME,
    evaluate_classifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from critwin.models.data import load_digits_data

TRAINABLE = ("digits", "digits-memorise", "digits-flow", "digits-v", "digits-tiny", "classifier")


@app.command("train")
def train(
    model: str = typer.Argument(..., help=f"What to train: one of {', '.join(TRAINABLE)}."),
    out: Path = typer.Option(
        Path("critwin-weights"), "--out", help="Directory for <name>.safetensors + <name>.json."
    ),
    steps: int = typer.Option(
        None, "--steps", help="Optimiser steps (digits models; default: the preset's)."
    ),
    batch_size: int = typer.Option(None, "--batch-size", help="Batch size (default: the preset's)."),
    learning_rate: float = typer.Option(
        None, "--learning-rate", help="Peak learning rate (default: the preset's)."
    ),
    epochs: int = typer.Option(60, "--epochs", help="Training epochs (classifier only)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, batches and noise."),
    eval_every: int = typer.Option(
        500, "--eval-every", help="Steps between quick sample-quality checks (0: none)."
    ),
    eval_samples: int = typer.Option(
        50, "--eval-samples", help="Final evaluation: conditional samples per digit."
    ),
    unconditional_samples: int = typer.Option(
        500, "--unconditional-samples", help="Final evaluation: unconditional samples (class histogram)."
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
    """Train a digits model (``digits``, ``digits-memorise``, ``digits-flow``, ``digits-v``, ``digits-tiny``)
    or the digit ``classifier``.

    Writes safetensors weights and a JSON model card (config, data split, seed, metrics) into --out.
    """
    check_choice(model, "MODEL", TRAINABLE)
    check_out_dir(out)
    check_counts(eval_every=eval_every, unconditional_samples=unconditional_samples, minimum=0)
    check_counts(eval_samples=eval_samples, inference_steps=inference_steps, threads=threads)
    if model == "classifier":
        _check_classifier_options(steps, batch_size, learning_rate, epochs)
    else:
        _check_digits_options(steps, batch_size, learning_rate)
    if classifier_dir is not None and not classifier_dir.is_dir():
        raise ValueError(f"--classifier-dir must be a directory, got {classifier_dir}")
    if threads is not None:
        # Float summation order depends on the thread count; fix it to reproduce a run bit for bit.
        torch.set_num_threads(threads)
    if model == "classifier":
        _train_classifier(out, epochs, seed)
        return
    # Deferred: critwin.models.digits imports diffusers (seconds); options are checked above.
    from critwin.models.digits import PRESETS, train_digits

    changes = {"seed": seed, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate}
    preset = PRESETS["tiny" if model == "digits-tiny" else model]
    config = preset.replace(**{k: v for k, v in changes.items() if v is not None})
    classifier = _load_metrics_classifier(out, classifier_dir)
    # Read after training, so a main model trained meanwhile into the same --out is the reference.
    reference = (lambda: _reference_card(out)) if model == "digits-memorise" else None
    train_digits(
        config,
        name=model,
        out_dir=out,
        classifier=classifier,
        log_every=max(1, min(100, config.steps // 10)),
        eval_every=eval_every,
        final_per_class=eval_samples,
        final_unconditional=unconditional_samples,
        num_inference_steps=inference_steps,
        progress=progress,
        log=typer.echo,
        reference_card=reference,
    )


def _check_digits_options(steps, batch_size, learning_rate) -> None:
    check_counts(steps=steps, batch_size=batch_size)
    if learning_rate is not None and not learning_rate > 0:
        raise ValueError(f"--learning-rate must be > 0, got {learning_rate}")


def _check_classifier_options(steps, batch_size, learning_rate, epochs: int) -> None:
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--learning-rate", learning_rate)):
        if value is not None:
            raise ValueError(f"{name} does not apply to the classifier (it takes --epochs and --seed)")
    check_counts(epochs=epochs)


def _train_classifier(out: Path, epochs: int, seed: int) -> None:
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


def _load_metrics_classifier(out: Path, classifier_dir: Path | None):
    if classifier_dir is not None:
        return load_classifier(classifier_dir)
    if weights_paths(CLASSIFIER_NAME, out)[1].is_file():
        return load_classifier(out)
    return load_classifier()


def _reference_card(out: Path) -> dict | None:
    """The main model's card (from --out, else the shipped one) for the memorisation comparison."""
    for directory in (out, None):
        try:
            return load_card("digits", directory)
        except (FileNotFoundError, ValueError):
            continue
    return None
