"""Quality numbers of a digits DDPM for its model card (classifier accuracy, memorisation)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from critwin._validation import check_positive_int
from critwin.models.classifier import load_classifier
from critwin.models.data import NUM_CLASSES, DigitsData, memorisation_metrics
from critwin.models.digits.model import DigitsModel

__all__ = ["evaluate_digits_model"]


@torch.no_grad()
def evaluate_digits_model(
    model: DigitsModel,
    classifier=None,
    data: DigitsData | None = None,
    n_per_class: int = 50,
    n_unconditional: int = 500,
    num_inference_steps: int = 100,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Quality numbers for a model card.

    Parameters
    ----------
    model : the trained model.
    classifier : a :class:`~critwin.models.classifier.DigitClassifier` (default: the shipped one).
    data : the model's data split (default: ``model.training_data()``).
    n_per_class : conditional samples per digit.
    n_unconditional : unconditional samples (class histogram).
    num_inference_steps, guidance_scale : the sampler (DDPM, diffusers ``DDPMScheduler``).
    generator : seeds all sampling.

    Returns
    -------
    dict with ``conditional_accuracy`` (fraction of conditional samples that the classifier
    labels as the requested digit), its per-digit values and binomial standard error,
    ``unconditional_class_histogram`` (fractions over 0..9), and nearest-training-neighbour RMS
    distances of conditional samples and of the test images (``nn_distance_samples_*``,
    ``nn_distance_test_*``), plus ``copy_fraction``: the share of samples closer to a training
    digit than ``copy_threshold`` (a tenth of the median test-image distance).
    """
    n_per_class = check_positive_int(n_per_class, "n_per_class")
    n_unconditional = check_positive_int(n_unconditional, "n_unconditional", minimum=0)
    classifier = load_classifier() if classifier is None else classifier
    data = model.training_data() if data is None else data
    started = time.perf_counter()
    requested = torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)
    samples = model.sample(
        requested, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=generator
    )
    predicted = classifier.predict(samples)
    correct = (predicted == requested).double()
    accuracy = correct.mean().item()
    per_class = correct.reshape(NUM_CLASSES, n_per_class).mean(dim=1).tolist()

    metrics: dict[str, Any] = {
        "conditional_accuracy": accuracy,
        "conditional_accuracy_stderr": math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / correct.numel()),
        "conditional_accuracy_per_class": per_class,
        "n_conditional_samples": int(correct.numel()),
    }
    if n_unconditional > 0:
        free = model.sample(n=n_unconditional, num_inference_steps=num_inference_steps, generator=generator)
        counts = torch.bincount(classifier.predict(free), minlength=NUM_CLASSES)
        metrics["unconditional_class_histogram"] = (counts.double() / n_unconditional).tolist()
        metrics["unconditional_class_counts"] = counts.tolist()
        metrics["n_unconditional_samples"] = n_unconditional

    metrics.update(_memorisation_metrics(samples, data))
    metrics["sampler"] = {
        "scheduler": "diffusers.DDPMScheduler",
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "through": "critwin.adapters.diffusers.DiffusersProcess",
    }
    metrics["classifier_test_accuracy"] = (
        (getattr(classifier, "card", None) or {}).get("metrics", {}).get("test_accuracy")
    )
    metrics["evaluation_seconds"] = time.perf_counter() - started
    return metrics


def _memorisation_metrics(samples: torch.Tensor, data: DigitsData) -> dict[str, Any]:
    """Nearest-training-neighbour distances of ``samples`` and of the test images, and the copy share."""
    return memorisation_metrics(samples, data.train_images, data.test_images)
