"""Shipped models that work offline: digits and shapes DDPMs, memorising variants, and classifiers.

- :mod:`critwin.models.data`: the 8x8 digits (scikit-learn), a fixed stratified split, and the
  nearest-training-neighbour distance used as a memorisation check.
- :mod:`critwin.models.digits`: the class-conditional diffusers ``UNet2DModel`` DDPM (training loop,
  evaluation, model cards, :func:`load_digits_model`, sampling through the diffusers adapter).
- :mod:`critwin.models.classifier`: the CNN digit classifier and :func:`classifier_feature`.
- :mod:`critwin.models.shapes`: the procedural shapes dataset (:func:`~critwin.models.shapes.make_shapes`),
  its attribute readers and the unconditional shapes DDPMs (``shapes``, ``shapes-biased``,
  ``shapes-memorise``).
- :mod:`critwin.models.shapes_t2i`: text-to-image Stable Diffusion pipelines trained on captioned shapes
  (``shapes-t2i``, ``shapes-t2i-biased``, ``shapes-t2i-memorise``), shipped as pipeline directories that
  plain diffusers loads.

:data:`SHIPPED_MODELS` names the shipped diffusion models (``critwin sweep --model digits`` and
friends); :func:`shipped_process` loads one as a process. The digits DDPM names are imported lazily
(they import diffusers, about 2 s), and so are the
classifier and data names (torch); only the registry of names is a plain import.
"""

from __future__ import annotations

from critwin._lazy import lazy_exports
from critwin.models._store import SHIPPED_MODELS

# Loaded on first use: the classifier and the data import torch, the digits DDPM names diffusers too.
# (The registry of names above is plain: the command line reads it for its help before torch loads.)
_EXPORTS = {
    "DigitClassifier": "critwin.models.classifier",
    "classifier_feature": "critwin.models.classifier",
    "load_classifier": "critwin.models.classifier",
    "train_classifier": "critwin.models.classifier",
    "DigitsData": "critwin.models.data",
    "load_digits_data": "critwin.models.data",
    "nearest_neighbour_distance": "critwin.models.data",
    "DigitsConfig": "critwin.models.digits",
    "DigitsModel": "critwin.models.digits",
    "PRESETS": "critwin.models.digits",
    "NULL_LABEL": "critwin.models.digits",
    "training_steps": "critwin.models.digits",
    "train_digits": "critwin.models.digits",
    "evaluate_digits_model": "critwin.models.digits",
    "load_digits_model": "critwin.models.digits",
    "save_digits_model": "critwin.models.digits",
    "shipped_process": "critwin.models._shipped",
}

__all__ = [
    "DigitClassifier",
    "DigitsConfig",
    "DigitsData",
    "DigitsModel",
    "NULL_LABEL",
    "PRESETS",
    "SHIPPED_MODELS",
    "classifier_feature",
    "evaluate_digits_model",
    "load_classifier",
    "load_digits_data",
    "load_digits_model",
    "nearest_neighbour_distance",
    "save_digits_model",
    "shipped_process",
    "train_classifier",
    "train_digits",
    "training_steps",
]


__getattr__, __dir__ = lazy_exports("critwin.models", _EXPORTS, globals())
