"""Quality numbers of a shapes DDPM for its model card: attribute histograms, validity, memorisation."""

from __future__ import annotations

import time
from typing import Any

import torch

from critwin._validation import check_positive_int, check_seed
from critwin.models.data import memorisation_metrics
from critwin.models.shapes.data import (
    ATTRIBUTES,
    BACKGROUND_COLOURS,
    MARK_COLOUR,
    MARK_SIZE,
    SHAPE_COLOURS,
    ShapesData,
)
from critwin.models.shapes.model import ShapesModel
from critwin.models.shapes.readers import attribute_readers

__all__ = ["evaluate_shapes_model", "attribute_histograms", "validity"]

VALID_PIXEL_DISTANCE = 0.25
VALID_PIXEL_SHARE = 0.95
VALID_SHAPE_PROBABILITY = 0.9


def _tv(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return 0.5 * (p - q).abs().sum(-1)


def attribute_histograms(
    sample_labels: dict[str, torch.Tensor],
    data_labels: dict[str, torch.Tensor],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per attribute: the sample and data histograms, their total variation and a bootstrap CI.

    Parameters
    ----------
    sample_labels, data_labels : attribute -> (n,) / (N,) int64 labels (read from samples; the data's own).
    n_bootstrap : resamples of the samples for the 95% percentile interval of the TV.
    seed : seeds the resampling.

    Returns
    -------
    attribute -> ``{"values", "samples", "data", "tv", "tv_ci"}`` (histograms as fractions). The TV of an
    empirical histogram is biased upwards by about ``sqrt(K / n)`` / 2 even for a perfect model.
    """
    generator = torch.Generator().manual_seed(check_seed(seed))
    out = {}
    for name, values in ATTRIBUTES.items():
        k = len(values)
        labels = sample_labels[name]
        p = torch.bincount(labels, minlength=k).double() / labels.numel()
        q = torch.bincount(data_labels[name], minlength=k).double() / data_labels[name].numel()
        resampled = labels[
            torch.randint(0, labels.numel(), (n_bootstrap, labels.numel()), generator=generator)
        ]
        boot = torch.nn.functional.one_hot(resampled, k).double().mean(1)
        low, high = torch.quantile(_tv(boot, q), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        out[name] = {
            "values": list(values),
            "samples": p.tolist(),
            "data": q.tolist(),
            "tv": _tv(p, q).item(),
            "tv_ci": [low, high],
        }
    return out


def validity(
    images: torch.Tensor, labels: dict[str, torch.Tensor], shape_probability: torch.Tensor
) -> torch.Tensor:
    """Which images the readers explain: (n,) bool.

    An image is valid when at least 95% of its pixels lie within RMS distance 0.25 (per channel) of
    the colours its readings allow: a mix of the read background and shape colours (the segment
    between them; edges are anti-aliased), or, in the 2x2 mark corner, the mark's white; and the
    shape reader gives its label probability >= 0.9.
    """
    background = torch.tensor(list(BACKGROUND_COLOURS.values()))[labels["background"]].view(-1, 1, 3)
    colour = torch.tensor(list(SHAPE_COLOURS.values()))[labels["colour"]].view(-1, 1, 3)
    pixels = images.detach().float().cpu().flatten(2).transpose(1, 2)  # (n, P, 3)
    # Distance to the segment background -> colour: project, clamp to [0, 1].
    direction = colour - background
    share = ((pixels - background) * direction).sum(-1, keepdim=True) / (direction**2).sum(-1, keepdim=True)
    nearest = background + share.clamp(0, 1) * direction
    distance = ((pixels - nearest) ** 2).mean(-1).sqrt()  # (n, P)
    corner = torch.zeros(images.shape[2:], dtype=torch.bool)
    corner[:MARK_SIZE, :MARK_SIZE] = True
    to_mark = ((pixels - torch.tensor(MARK_COLOUR)) ** 2).mean(-1).sqrt()
    distance[:, corner.flatten()] = torch.minimum(distance, to_mark)[:, corner.flatten()]
    clean = (distance <= VALID_PIXEL_DISTANCE).double().mean(1)
    return (clean >= VALID_PIXEL_SHARE) & (shape_probability >= VALID_SHAPE_PROBABILITY)


def _read(images: torch.Tensor, readers: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    labels = {name: readers[name](images) for name in ATTRIBUTES}
    probabilities = readers["shape"].classifier.predict_proba(images)
    return labels, probabilities.gather(1, labels["shape"].view(-1, 1)).squeeze(1)


@torch.no_grad()
def evaluate_shapes_model(
    model: ShapesModel,
    readers: dict | None = None,
    data: ShapesData | None = None,
    n_samples: int = 1000,
    num_inference_steps: int = 100,
    n_test: int = 1000,
    generator: torch.Generator | None = None,
    memorisation: bool = True,
) -> dict[str, Any]:
    """Quality numbers for a model card.

    Parameters
    ----------
    model : the trained model.
    readers : :func:`~critwin.models.shapes.readers.attribute_readers` (default: with the shipped classifier).
    data : the model's training images (default: ``model.training_data()``).
    n_samples : unconditional samples (DDPM, ``num_inference_steps`` steps, through the adapter).
    n_test : held-out images (``model.config.load_held_out(n_test)``): validity reference and the
        memorisation scale.
    generator : seeds the sampling.
    memorisation : compute the nearest-training-neighbour numbers.

    Returns
    -------
    dict with ``attributes`` (:func:`attribute_histograms` of the samples' reader labels vs the training
    data's labels), ``max_tv``, ``valid_fraction`` of samples and of held-out images (:func:`validity`),
    and the memorisation numbers of :func:`~critwin.models.data.memorisation_metrics`.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    n_test = check_positive_int(n_test, "n_test")
    readers = attribute_readers() if readers is None else readers
    data = model.training_data() if data is None else data
    started = time.perf_counter()
    samples = model.sample(n_samples, num_inference_steps=num_inference_steps, generator=generator)
    labels, probability = _read(samples, readers)
    histograms = attribute_histograms(labels, data.attributes)
    test = model.config.load_held_out(n_test)
    test_labels, test_probability = _read(test.images, readers)
    metrics: dict[str, Any] = {
        "n_samples": n_samples,
        "attributes": histograms,
        "max_tv": max(h["tv"] for h in histograms.values()),
        "valid_fraction": validity(samples, labels, probability).double().mean().item(),
        "valid_fraction_held_out": validity(test.images, test_labels, test_probability)
        .double()
        .mean()
        .item(),
        "shape_probability_mean": probability.mean().item(),
    }
    if memorisation:
        metrics.update(memorisation_metrics(samples, data.images, test.images))
    metrics["sampler"] = {
        "scheduler": "diffusers.DDPMScheduler",
        "num_inference_steps": num_inference_steps,
        "through": "critwin.adapters.diffusers.DiffusersProcess",
    }
    metrics["evaluation_seconds"] = time.perf_counter() - started
    return metrics
