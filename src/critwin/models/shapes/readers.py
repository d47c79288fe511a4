"""Attribute readers of shapes images: analytic where the pixels decide, a small CNN for the shape.

- ``background``: the nearest background colour to the per-channel median of the border pixels
  (rows and columns 0 and 15, without the 2x2 mark corner), which only ever show the background.
- ``colour``: each pixel of the inner region (rows and columns 2..13) takes its nearest colour among
  the background and shape palettes; the most frequent shape colour wins.
- ``mark``: the mean of the 2x2 corner patch is "present" when it is nearer the mark's white than
  every background colour.
- ``shape``: the ``shapes-classifier`` CNN (:class:`~critwin.models.classifier.DigitClassifier` on
  16x16 RGB, four classes), trained by ``critwin train shapes-classifier``.

On clean images from :func:`~critwin.models.shapes.data.make_shapes` the analytic readers are exact (by
the geometry described there; checked in the tests); palettes are at least 0.8 apart, so pixel noise
well below 0.4 does not change their reading. :func:`attribute_readers` wraps all four as
:class:`~critwin.experiments.features.CallableFeature` objects for ``forward_reverse(feature=...)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from critwin._validation import check_seed
from critwin._version import __version__
from critwin.experiments.features import CallableFeature
from critwin.models.classifier import (
    DigitClassifier,
    as_images,
    fit_classifier,
    load_classifier,
    save_classifier,
)
from critwin.models.shapes.data import (
    ATTRIBUTES,
    BACKGROUND_COLOURS,
    IMAGE_SHAPE,
    MARK_COLOUR,
    MARK_SIZE,
    SHAPE_COLOURS,
    make_shapes,
)

__all__ = [
    "SHAPE_CLASSIFIER_NAME",
    "read_background",
    "read_colour",
    "read_mark",
    "train_shape_classifier",
    "evaluate_readers",
    "save_shape_classifier",
    "load_shape_classifier",
    "attribute_readers",
]

SHAPE_CLASSIFIER_NAME = "shapes-classifier"
_BACKGROUNDS = torch.tensor(list(BACKGROUND_COLOURS.values()))
_SHAPE_COLOURS = torch.tensor(list(SHAPE_COLOURS.values()))
_INNER = slice(MARK_SIZE, IMAGE_SHAPE[1] - MARK_SIZE)


def _images(x) -> torch.Tensor:
    return as_images(x, "x", IMAGE_SHAPE).detach().float().cpu()


def _nearest(pixels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Index of the nearest palette colour of each RGB vector ``pixels`` (..., 3) -> (...)."""
    return ((pixels.unsqueeze(-2) - palette) ** 2).sum(-1).argmin(-1)


def _border(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, P) border pixels without the mark corner."""
    height, width = images.shape[2:]
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[[0, -1], :] = True
    mask[:, [0, -1]] = True
    mask[:MARK_SIZE, :MARK_SIZE] = False
    return images[:, :, mask]


def read_background(x: torch.Tensor) -> torch.Tensor:
    """Background labels ``(n,)`` int64 of images ``x`` ``(n, 3, 16, 16)`` in [-1, 1]."""
    border = _border(_images(x))
    return _nearest(border.median(dim=2).values, _BACKGROUNDS)


def read_colour(x: torch.Tensor) -> torch.Tensor:
    """Shape-colour labels ``(n,)`` int64: the most frequent shape colour of the inner pixels."""
    inner = _images(x)[:, :, _INNER, _INNER].flatten(2).transpose(1, 2)
    palette = torch.cat([_SHAPE_COLOURS, _BACKGROUNDS])
    nearest = _nearest(inner, palette)
    counts = torch.stack([(nearest == k).sum(1) for k in range(len(SHAPE_COLOURS))], dim=1)
    return counts.argmax(1)


def read_mark(x: torch.Tensor) -> torch.Tensor:
    """Mark labels ``(n,)`` int64 (1 = present): is the 2x2 corner nearer white than any background?"""
    corner = _images(x)[:, :, :MARK_SIZE, :MARK_SIZE].mean(dim=(2, 3))
    palette = torch.cat([_BACKGROUNDS, torch.tensor([MARK_COLOUR])])
    return (_nearest(corner, palette) == len(BACKGROUND_COLOURS)).long()


def _noise_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Add pixel noise (std 0.1): sampled images are never exactly flat colours."""
    return images + 0.1 * torch.randn(images.shape, generator=generator)


def train_shape_classifier(
    n_train: int = 8000,
    epochs: int = 8,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    width: int = 16,
    seed: int = 0,
    data_seed: int = 1,
) -> DigitClassifier:
    """Train the shape reader on ``make_shapes(n_train, seed=data_seed)`` with noise augmentation.

    Returns
    -------
    DigitClassifier on (n, 3, 16, 16) images with four classes (``ATTRIBUTES["shape"]``), in eval mode.
    """
    seed = check_seed(seed)
    data_seed = check_seed(data_seed, "data_seed")
    seed = check_seed(seed)
    data = make_shapes(n_train, seed=data_seed)
    n_shapes = len(ATTRIBUTES["shape"])
    return fit_classifier(
        lambda: DigitClassifier(width=width, in_channels=3, image_size=IMAGE_SHAPE[1], n_classes=n_shapes),
        data.images,
        data.attributes["shape"],
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        augment=_noise_augment,
    )


def evaluate_readers(readers: dict, n: int = 4000, seed: int = 12345, noise: float = 0.0) -> dict:
    """Accuracy of each reader on ``make_shapes(n, seed=seed)`` (held out), optionally with pixel noise.

    Returns
    -------
    dict attribute -> accuracy (fraction of images whose label is read back).
    """
    seed = check_seed(seed)
    data = make_shapes(n, seed=check_seed(seed))
    images = data.images
    if noise:
        images = images + noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return {
        name: (reader(images) == data.attributes[name]).double().mean().item()
        for name, reader in readers.items()
    }


def save_shape_classifier(
    model: DigitClassifier, directory, card_extra: dict | None = None
) -> tuple[Path, Path]:
    """Write the shape reader's weights and card into ``directory``."""
    card = {"classes": list(ATTRIBUTES["shape"]), "critwin_version": __version__}
    card.update(card_extra or {})
    return save_classifier(model, directory, card, name=SHAPE_CLASSIFIER_NAME)


def load_shape_classifier(directory: str | os.PathLike | None = None) -> DigitClassifier:
    """The shape reader (default: the shipped ``shapes-classifier`` weights) in eval mode."""
    return load_classifier(directory, name=SHAPE_CLASSIFIER_NAME)


def _check_shape_classifier(classifier) -> DigitClassifier:
    """A shape reader: a :class:`DigitClassifier` on (3, 16, 16) images with one logit per shape."""
    n_shapes = len(ATTRIBUTES["shape"])
    if not isinstance(classifier, DigitClassifier):
        raise ValueError(
            "classifier must be a DigitClassifier (load_shape_classifier() or train_shape_classifier()), "
            f"got {type(classifier).__name__}"
        )
    if classifier.image_shape != IMAGE_SHAPE or classifier.n_classes != n_shapes:
        raise ValueError(
            f"classifier must read {IMAGE_SHAPE} images into {n_shapes} shapes, got one for "
            f"{classifier.image_shape} images and {classifier.n_classes} classes"
        )
    return classifier


def attribute_readers(classifier: DigitClassifier | None = None) -> dict[str, CallableFeature]:
    """Every attribute's reader as an experiment feature (name -> ``feature(x) -> (n,) int64``).

    Parameters
    ----------
    classifier : the shape reader (default: :func:`load_shape_classifier`, the shipped weights).

    Returns
    -------
    dict ``"background"``, ``"shape"``, ``"colour"``, ``"mark"`` (the order of :data:`ATTRIBUTES`) ->
    :class:`~critwin.experiments.features.CallableFeature` named ``shapes-<attribute>`` that maps images
    ``(n, 3, 16, 16)`` in [-1, 1] to labels indexing ``ATTRIBUTES[attribute]``; the shape reader's
    ``.classifier`` is the network.
    """
    classifier = load_shape_classifier() if classifier is None else _check_shape_classifier(classifier)
    functions = {
        "background": read_background,
        "shape": lambda x: classifier.predict(_images(x)),
        "colour": read_colour,
        "mark": read_mark,
    }
    readers = {
        name: CallableFeature(functions[name], name=f"shapes-{name}", n_classes=len(values))
        for name, values in ATTRIBUTES.items()
    }
    # The network behind the shape reader (its probabilities measure the samples' validity).
    readers["shape"].classifier = classifier
    return readers
