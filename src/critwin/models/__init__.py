"""Shipped models that work offline: a digits DDPM, a memorising variant, and a digit classifier.

- :mod:`critwin.models.data`: the 8x8 digits (scikit-learn), a fixed stratified split, and the
  nearest-training-neighbour distance used as a memorisation check.
- :mod:`critwin.models.digits`: the class-conditional diffusers ``UNet2DModel`` DDPM (training loop,
  evaluation, model cards, :func:`load_digits_model`, sampling through the diffusers adapter).
- :mod:`critwin.models.classifier`: the CNN digit classifier and :func:`classifier_feature`.

Names are imported lazily (diffusers loads only when a model is used).
"""

from __future__ import annotations

from critwin._lazy import lazy_exports

_EXPORTS = {
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
    "DigitClassifier": "critwin.models.classifier",
    "train_classifier": "critwin.models.classifier",
    "load_classifier": "critwin.models.classifier",
    "classifier_feature": "critwin.models.classifier",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("critwin.models", _EXPORTS, globals())
