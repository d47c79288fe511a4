"""A small CNN digit classifier, trained on the real 8x8 digits: the ``feature`` for experiments.

The experiments ask "which digit did the sampler produce?"; :func:`classifier_feature` answers it
for a batch ``x`` of shape ``(n, 1, 8, 8)`` in [-1, 1] (the digits model's space). The shipped
weights are ``weights/digit-classifier.safetensors`` with a model card holding the test accuracy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from critwin._validation import check_finite, check_positive_int, check_seed
from critwin._version import __version__
from critwin.models._store import load_state_into, load_weights, save_weights, weights_paths
from critwin.models.data import IMAGE_SHAPE, NUM_CLASSES, DigitsData, load_digits_data

__all__ = [
    "CLASSIFIER_NAME",
    "DigitClassifier",
    "train_classifier",
    "fit_classifier",
    "evaluate_classifier",
    "save_classifier",
    "load_classifier",
    "classifier_feature",
    "as_images",
]

CLASSIFIER_NAME = "digit-classifier"


class DigitClassifier(nn.Module):
    """Three 3x3 convolutions (S -> S/2 -> S/4) and a two-layer head; logits over the classes.

    The defaults are the digit classifier (8x8 grey images, ten digits); the shapes models' shape
    reader is the same network on 16x16 RGB images (:mod:`critwin.models.shapes.readers`).

    Parameters
    ----------
    width : channels of the first convolution (doubled twice).
    dropout : dropout probability before the last layer (training only).
    in_channels, image_size, n_classes : input images ``(n, in_channels, image_size, image_size)``
        (``image_size`` a multiple of 4) and the number of logits.
    """

    def __init__(
        self,
        width: int = 16,
        dropout: float = 0.2,
        in_channels: int = IMAGE_SHAPE[0],
        image_size: int = IMAGE_SHAPE[1],
        n_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        width = check_positive_int(width, "width")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if check_positive_int(image_size, "image_size", minimum=4) % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        self.width = width
        self.dropout = float(dropout)
        self.image_shape = (check_positive_int(in_channels, "in_channels"), image_size, image_size)
        self.n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * width * (image_size // 4) ** 2, 64),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(64, self.n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, n_classes)`` of images ``x`` ``(n, *image_shape)`` in [-1, 1]."""
        return self.head(self.features(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Class probabilities ``(n, n_classes)`` float32 of images ``(n, *image_shape)``; digits also
        take (n, 8, 8) or (n, 64)."""
        images = as_images(x, "x", self.image_shape)
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        try:
            out = [
                self(chunk.to(device=param.device, dtype=param.dtype)).float().softmax(dim=1)
                for chunk in images.split(batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out).to(images.device)

    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Predicted classes ``(n,)`` int64 (shapes as :meth:`predict_proba`)."""
        return self.predict_proba(x, batch_size).argmax(dim=1)


def as_images(x, name: str, shape: tuple[int, ...] = IMAGE_SHAPE) -> torch.Tensor:
    """``x`` as a batch of images ``(n, *shape)``; for digits also from ``(n, 8, 8)`` or ``(n, 64)``.

    Parameters
    ----------
    x : tensor of images.
    name : argument name for the error message (ValueError when the shape does not fit).
    shape : shape of one image (default: the digits' ``(1, 8, 8)``).

    Examples
    --------
    >>> import torch
    >>> as_images(torch.zeros(5, 64), "x").shape
    torch.Size([5, 1, 8, 8])
    """
    x = _check_pixels(x, name, shape)
    if x.ndim == 4 and tuple(x.shape[1:]) == shape:
        return x
    if shape == IMAGE_SHAPE and x.ndim == 3 and tuple(x.shape[1:]) == IMAGE_SHAPE[1:]:
        return x.unsqueeze(1)
    if shape == IMAGE_SHAPE and x.ndim == 2 and x.shape[1] == 64:
        return x.reshape(-1, *IMAGE_SHAPE)
    expected = f"(n, {', '.join(map(str, shape))})"
    if shape == IMAGE_SHAPE:
        expected += ", (n, 8, 8) or (n, 64)"
    raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


def _check_pixels(x, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``x`` (a tensor or NumPy array) as floating-point pixels, every one finite.

    Integer images (0..255) and NaN or infinite pixels would each read as one label for every image:
    the readers refuse them like every other public function refuses bad input.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a tensor (or NumPy array) of images {shape}, got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be floating-point images in [-1, 1], got dtype {x.dtype} (convert 0..255 pixels "
            "with x / 127.5 - 1)"
        )
    check_finite(x, name)
    return x


def _random_shift(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Shift each image by -1, 0 or +1 pixel in each direction (background -1 fills the gap).

    Generated digits are not always centred like the scanned ones; this makes the classifier judge
    the digit's shape rather than its exact position.
    """
    n = images.shape[0]
    padded = nn.functional.pad(images, (1, 1, 1, 1), value=-1.0)
    offsets = torch.randint(0, 3, (n, 2), generator=generator)
    rows = (offsets[:, 0:1] + torch.arange(8)).reshape(n, 1, 8, 1).expand(n, 1, 8, 10)
    shifted = torch.gather(padded, 2, rows)
    cols = (offsets[:, 1:2] + torch.arange(8)).reshape(n, 1, 1, 8).expand(n, 1, 8, 8)
    return torch.gather(shifted, 3, cols)


def train_classifier(
    data: DigitsData | None = None,
    epochs: int = 60,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    width: int = 16,
    seed: int = 0,
) -> DigitClassifier:
    """Train :class:`DigitClassifier` on ``data.train_images`` (Adam, cosine learning rate, shifts).

    Parameters
    ----------
    data : the split to train on (default: :func:`load_digits_data` with seed 0).
    epochs, batch_size, learning_rate, width : training sizes.
    seed : seeds the initial weights, the batches, the augmentation and dropout.

    Returns
    -------
    DigitClassifier in eval mode.
    """
    seed = check_seed(seed)
    seed = check_seed(seed)
    data = load_digits_data() if data is None else data
    return fit_classifier(
        lambda: DigitClassifier(width=width),
        data.train_images,
        data.train_labels,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        augment=_random_shift,
    )


def fit_classifier(
    build: Callable[[], DigitClassifier],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> DigitClassifier:
    """Train ``build()`` with cross-entropy on ``(images, labels)`` (Adam, cosine learning rate).

    Parameters
    ----------
    build : makes the untrained network (called under the seeded global RNG: initial weights).
    images : (N, C, S, S) training images; labels : (N,) int64 classes.
    epochs, batch_size, learning_rate : training sizes.
    seed : seeds the initial weights, the batches, the augmentation and dropout.
    augment : ``augment(batch, generator) -> batch`` applied to each batch (None: none).

    Returns
    -------
    The trained network in eval mode.
    """
    epochs = check_positive_int(epochs, "epochs")
    seed = check_seed(seed)
    batch_size = check_positive_int(batch_size, "batch_size")
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        # nn.Module initialisation and dropout draw from the global RNG; fork it so training is
        # reproducible without disturbing the caller's random state.
        torch.manual_seed(seed)
        model = build()
        optimiser = torch.optim.Adam(model.parameters(), lr=float(learning_rate))
        n = labels.numel()
        steps_per_epoch = -(-n // batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * steps_per_epoch)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for batch in order.split(batch_size):
                x = images[batch] if augment is None else augment(images[batch], generator)
                loss = nn.functional.cross_entropy(model(x), labels[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
    return model.eval()


def evaluate_classifier(model: DigitClassifier, data: DigitsData | None = None) -> dict:
    """Accuracy on the test and training images, and per-digit test accuracy."""
    data = load_digits_data() if data is None else data
    predicted = model.predict(data.test_images)
    correct = predicted == data.test_labels
    per_class = [correct[data.test_labels == c].double().mean().item() for c in range(NUM_CLASSES)]
    return {
        "test_accuracy": correct.double().mean().item(),
        "train_accuracy": (model.predict(data.train_images) == data.train_labels).double().mean().item(),
        "test_accuracy_per_class": per_class,
        "n_test": int(data.test_labels.numel()),
    }


def save_classifier(
    model: DigitClassifier, directory, card_extra: dict | None = None, name: str = CLASSIFIER_NAME
) -> tuple[Path, Path]:
    """Write the classifier's weights and card (its shape, plus ``card_extra``) into ``directory``."""
    config = {"width": model.width, "dropout": model.dropout}
    if model.image_shape != IMAGE_SHAPE or model.n_classes != NUM_CLASSES:
        # The digit classifier's card keeps its original two fields.
        config.update(
            in_channels=model.image_shape[0], image_size=model.image_shape[1], n_classes=model.n_classes
        )
    card = {
        "name": name,
        "kind": name,
        "critwin_version": __version__,
        "config": config,
        "input": f"(n, {', '.join(map(str, model.image_shape))}) float images in [-1, 1]",
        "output": "logits over the digits 0..9"
        if name == CLASSIFIER_NAME
        else f"logits over {model.n_classes} classes",
    }
    card.update(card_extra or {})
    return save_weights(name, model.state_dict(), card, directory)


def load_classifier(
    directory: str | os.PathLike | None = None, name: str = CLASSIFIER_NAME
) -> DigitClassifier:
    """Load a classifier ``name`` (default: the shipped digit classifier) in eval mode.

    Examples
    --------
    The shipped classifier on the 360 held-out digits: 358 right, the test accuracy its card records.

    >>> import critwin
    >>> classifier = critwin.load_classifier()
    >>> data = critwin.load_digits_data()
    >>> right = (critwin.classifier_feature(classifier)(data.test_images) == data.test_labels).sum().item()
    >>> right, len(data.test_labels)
    (358, 360)
    """
    state_dict, card = load_weights(name, directory)
    config = card["config"]
    try:
        model = DigitClassifier(
            width=int(config["width"]),
            dropout=float(config.get("dropout", 0.0)),
            in_channels=int(config.get("in_channels", IMAGE_SHAPE[0])),
            image_size=int(config.get("image_size", IMAGE_SHAPE[1])),
            n_classes=int(config.get("n_classes", NUM_CLASSES)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"model card of {name!r} has an invalid config: {exc}") from None
    load_state_into(model, state_dict, name, weights_paths(name, directory).weights)
    model.card = card
    return model.eval()


def classifier_feature(
    classifier: DigitClassifier | None = None, probabilities: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The digit as an experiment feature: ``feature(x) -> labels`` (or class probabilities).

    Parameters
    ----------
    classifier : a trained classifier (default: the shipped one).
    probabilities : return softmax probabilities ``(n, 10)`` instead of labels, for estimators
        that use them; their argmax is the label.

    Returns
    -------
    ``feature(x)`` mapping images ``(n, 1, 8, 8)`` in [-1, 1] (or ``(n, 8, 8)``, ``(n, 64)``) to
    ``(n,)`` int64 digits 0..9, or ``(n, 10)`` float32 probabilities.

    Examples
    --------
    >>> import critwin
    >>> data = critwin.load_digits_data()
    >>> feature = critwin.classifier_feature()
    >>> feature(data.test_images[:6]).tolist(), data.test_labels[:6].tolist()  # read, true
    ([1, 4, 8, 6, 5, 9], [1, 4, 8, 6, 5, 9])
    >>> p = critwin.classifier_feature(probabilities=True)(data.test_images[:6])
    >>> tuple(p.shape), bool((p.argmax(1) == feature(data.test_images[:6])).all())
    ((6, 10), True)
    """
    model = load_classifier() if classifier is None else classifier

    def feature(x: torch.Tensor) -> torch.Tensor:
        return model.predict_proba(x) if probabilities else model.predict(x)

    feature.classifier = model
    feature.__qualname__ = "digit_classifier_probabilities" if probabilities else "digit_classifier"
    return feature


class ClassMeanReader:
    """Nearest class mean of the training digits: a digit reader independent of the CNN classifier.

    A second, structurally different reader to judge what the classifier selected (the fairness
    diagnostic): it shares no weights or training run with :class:`DigitClassifier`, costs nothing to
    build, and reads clean digits with about 90% accuracy (measured in the tests). Calling it maps
    images ``(n, 1, 8, 8)`` (or ``(n, 8, 8)``, ``(n, 64)``) to ``(n,)`` int64 digits.

    Parameters
    ----------
    data : the digits split whose training images give the means (default :func:`load_digits_data`).
    """

    name = "nearest-class-mean"

    def __init__(self, data: DigitsData | None = None):
        data = load_digits_data() if data is None else data
        images = data.train_images.reshape(data.train_images.shape[0], -1).double()
        self.means = torch.stack([images[data.train_labels == k].mean(0) for k in range(NUM_CLASSES)])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        images = as_images(x, "x")
        x = images.reshape(images.shape[0], -1).detach().cpu().double()
        return torch.cdist(x, self.means).argmin(1)
