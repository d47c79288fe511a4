"""Independent readers: one reader selects or steers samples, another one grades them (docs/theory.md §8).

A diagnostic that selects samples with a classifier (:func:`critwin.rebalance`) reads its own choice
as a success by construction; a number graded by its own selector measures the selector, not the
model. Every fairness number critwin reports is therefore graded by a reader that shares neither
weights, training data nor architecture with the one that selected:

- digits: the shipped ``digit-classifier`` (:func:`~critwin.models.classifier.classifier_feature`,
  trained on the training split) selects; the ``digit-judge`` grades: the same kind of CNN with another
  width (8), trained only on the *test* split, so the two never saw the same image
  (its accuracy is measured on the training split, which it never saw).
- shapes: the ``shapes-selector`` selects: one small CNN of another architecture (two convolutions,
  one trunk, a head per attribute) trained on its own draw of the procedural data (``make_shapes``
  seed 3, disjoint from the shape reader's seed 1 and the evaluation seed 12345); the analytic readers
  (background, colour, mark) and the shipped ``shapes-classifier`` (shape) of
  :func:`~critwin.models.shapes.attribute_readers` grade.

Both networks are small and train in seconds (``critwin train digit-judge``, ``critwin train
shapes-selector``); their weights ship beside the other models'.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from critwin._validation import check_positive_int, check_seed
from critwin._version import __version__
from critwin.experiments.features import CallableFeature
from critwin.models._store import load_state_into, load_weights, save_weights, weights_paths
from critwin.models.classifier import DigitClassifier, load_classifier, save_classifier, train_classifier
from critwin.models.data import NUM_CLASSES, DigitsData, load_digits_data
from critwin.models.shapes.data import ATTRIBUTES, IMAGE_SHAPE, make_shapes

__all__ = [
    "DIGIT_JUDGE_NAME",
    "SHAPES_SELECTOR_NAME",
    "AttributeNet",
    "train_digit_judge",
    "evaluate_digit_judge",
    "load_digit_judge",
    "digit_judge_feature",
    "train_shapes_selector",
    "evaluate_shapes_selector",
    "save_shapes_selector",
    "load_shapes_selector",
    "selector_readers",
]

DIGIT_JUDGE_NAME = "digit-judge"
SHAPES_SELECTOR_NAME = "shapes-selector"
SELECTOR_DATA_SEED = 3
SELECTOR_NOISE = 0.15


# ------------------------------------------------------------------------------------------- digits
def train_digit_judge(
    data: DigitsData | None = None, epochs: int = 120, width: int = 8, seed: int = 0
) -> DigitClassifier:
    """A digit reader trained on the **test** split only (disjoint from the selector's training split).

    Parameters
    ----------
    data : the digits split (default :func:`load_digits_data`, the selector's split).
    epochs, width, seed : training sizes and seed (defaults: the shipped judge's).

    Returns
    -------
    DigitClassifier in eval mode.

    Examples
    --------
    >>> judge = train_digit_judge(epochs=1)
    >>> judge.width
    8
    """
    seed = check_seed(seed)
    data = load_digits_data() if data is None else data
    # The selector's recipe (Adam, cosine rate, random shifts) on the other side of the split.
    swapped = dataclasses.replace(
        data,
        train_images=data.test_images,
        train_labels=data.test_labels,
        test_images=data.train_images,
        test_labels=data.train_labels,
    )
    return train_classifier(swapped, epochs=epochs, batch_size=32, width=width, seed=seed)


def evaluate_digit_judge(model: DigitClassifier, data: DigitsData | None = None) -> dict:
    """Accuracy of the judge on the training split (images it never saw) and per digit."""
    data = load_digits_data() if data is None else data
    correct = model.predict(data.train_images) == data.train_labels
    per_class = [correct[data.train_labels == c].double().mean().item() for c in range(NUM_CLASSES)]
    return {
        "held_out_accuracy": correct.double().mean().item(),
        "held_out": "the training split (the judge is trained on the test split)",
        "held_out_accuracy_per_class": per_class,
        "n_held_out": int(data.train_labels.numel()),
    }


def save_digit_judge(model: DigitClassifier, directory, card_extra: dict | None = None) -> tuple[Path, Path]:
    """Write the judge's weights and card into ``directory``."""
    return save_classifier(model, directory, card_extra, name=DIGIT_JUDGE_NAME)


def load_digit_judge(directory: str | os.PathLike | None = None) -> DigitClassifier:
    """The digit judge (default: the shipped ``digit-judge`` weights) in eval mode."""
    return load_classifier(directory, name=DIGIT_JUDGE_NAME)


def digit_judge_feature(model: DigitClassifier | None = None) -> CallableFeature:
    """The judge as a feature named ``digit-judge``: images ``(n, 1, 8, 8)`` -> ``(n,)`` digits."""
    model = load_digit_judge() if model is None else model
    feature = CallableFeature(model.predict, name=DIGIT_JUDGE_NAME, n_classes=NUM_CLASSES)
    feature.classifier = model
    return feature


# ------------------------------------------------------------------------------------------- shapes
class AttributeNet(nn.Module):
    """Two 3x3 convolutions (16 -> 8 -> 4 pixels), a shared hidden layer and one head per attribute.

    Another architecture than :class:`~critwin.models.classifier.DigitClassifier` (the shape reader), so
    that the selector and the shape judge do not share their inductive biases.

    Parameters
    ----------
    width : channels of the first convolution (doubled in the second).
    """

    def __init__(self, width: int = 12):
        super().__init__()
        self.width = check_positive_int(width, "width")
        self.trunk = nn.Sequential(
            nn.Conv2d(IMAGE_SHAPE[0], width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (IMAGE_SHAPE[1] // 4) ** 2, 64),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(64, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute ``{name: (n, C_name)}`` of images ``(n, 3, 16, 16)`` in [-1, 1]."""
        hidden = self.trunk(x)
        return {name: head(hidden) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, attribute: str, batch_size: int = 4096) -> torch.Tensor:
        """Labels ``(n,)`` int64 of ``attribute`` for images ``(n, 3, 16, 16)``."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (n, {', '.join(map(str, IMAGE_SHAPE))}), got {shape}")
        images = x.detach().float().cpu()
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(part)[attribute].argmax(1) for part in images.split(batch_size)])
        finally:
            self.train(was_training)


def train_shapes_selector(
    n_train: int = 6000, epochs: int = 6, width: int = 12, seed: int = 0, data_seed: int = SELECTOR_DATA_SEED
) -> AttributeNet:
    """Train :class:`AttributeNet` on ``make_shapes(n_train, seed=data_seed)`` (Gaussian pixel noise of std
    0.15 added to every batch: generated images are never flat colours).

    Examples
    --------
    >>> net = train_shapes_selector(n_train=64, epochs=1)
    >>> sorted(net.heads)
    ['background', 'colour', 'mark', 'shape']
    """
    seed = check_seed(seed)
    data_seed = check_seed(data_seed, "data_seed")
    n_train = check_positive_int(n_train, "n_train")
    epochs = check_positive_int(epochs, "epochs")
    data = make_shapes(n_train, seed=data_seed)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # initial weights
        net = AttributeNet(width)
        optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
        steps = epochs * -(-n_train // 64)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
        net.train()
        for _ in range(epochs):
            for batch in torch.randperm(n_train, generator=generator).split(64):
                x = data.images[batch]
                x = x + SELECTOR_NOISE * torch.randn(x.shape, generator=generator)
                logits = net(x)
                loss = sum(
                    nn.functional.cross_entropy(logits[name], data.attributes[name][batch]) for name in logits
                )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
    return net.eval()


def evaluate_shapes_selector(net: AttributeNet, n: int = 4000, seed: int = 12345, noise: float = 0.0) -> dict:
    """Per-attribute accuracy on ``make_shapes(n, seed=seed)`` (held out), optionally with pixel noise."""
    seed = check_seed(seed)
    data = make_shapes(n, seed=seed)
    images = data.images
    if noise:
        images = images + noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return {
        name: (net.predict(images, name) == labels).double().mean().item()
        for name, labels in data.attributes.items()
    }


def save_shapes_selector(net: AttributeNet, directory, card_extra: dict | None = None) -> tuple[Path, Path]:
    """Write the selector's weights and card into ``directory``."""
    card = {
        "name": SHAPES_SELECTOR_NAME,
        "kind": SHAPES_SELECTOR_NAME,
        "critwin_version": __version__,
        "config": {"width": net.width},
        "input": f"(n, {', '.join(map(str, IMAGE_SHAPE))}) float images in [-1, 1]",
        "output": {name: list(values) for name, values in ATTRIBUTES.items()},
        "role": "selector (steers samples); never a judge of its own selection",
    }
    card.update(card_extra or {})
    return save_weights(SHAPES_SELECTOR_NAME, net.state_dict(), card, directory)


def load_shapes_selector(directory: str | os.PathLike | None = None) -> AttributeNet:
    """The shapes selector (default: the shipped ``shapes-selector`` weights) in eval mode."""
    state_dict, card = load_weights(SHAPES_SELECTOR_NAME, directory)
    try:
        net = AttributeNet(width=int(card["config"]["width"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"model card of {SHAPES_SELECTOR_NAME!r} has an invalid config: {exc}") from None
    load_state_into(net, state_dict, SHAPES_SELECTOR_NAME, weights_paths(SHAPES_SELECTOR_NAME, directory)[0])
    net.card = card
    return net.eval()


def selector_readers(net: AttributeNet | None = None) -> dict[str, CallableFeature]:
    """Every attribute as read by the selector: name -> feature named ``shapes-selector-<attribute>``.

    Parameters
    ----------
    net : the selector network (default :func:`load_shapes_selector`, the shipped weights).

    Returns
    -------
    dict in the order of :data:`~critwin.models.shapes.ATTRIBUTES`, each mapping images
    ``(n, 3, 16, 16)`` in [-1, 1] to ``(n,)`` int64 labels.
    """
    net = load_shapes_selector() if net is None else net

    def reader(name: str):
        return lambda x: net.predict(x, name)

    return {
        name: CallableFeature(reader(name), name=f"{SHAPES_SELECTOR_NAME}-{name}", n_classes=len(values))
        for name, values in ATTRIBUTES.items()
    }
