"""Shipped text models with a known hierarchy: the Random Hierarchy Model and two transformers on it.

- :mod:`.grammar`: :class:`RandomHierarchy` (Sclocchi, Favero & Wyart): a planted tree class > level1 >
  ... > string; :meth:`~RandomHierarchy.parse` reads every level's label from a string (the features),
  :meth:`~RandomHierarchy.mixture` is the exact law (a ``CategoricalMixture`` of all strings).
- :mod:`.network`: :class:`TokenTransformer`, a small pre-norm transformer (bidirectional or causal).
- :mod:`.config`, :mod:`.model`, :mod:`.training`: :class:`TextConfig` and its presets, :class:`TextModel`
  (its ``process()`` is a :class:`~critwin.experiments.MaskedDiffusionProcess` or
  :class:`~critwin.experiments.AutoregressiveProcess`), :func:`load_text_model`,
  :func:`train_text_model`. Shipped: ``rhm-mdm`` (masked diffusion) and ``rhm-ar`` (autoregressive),
  both on the 256-string language of the default :class:`TextConfig`.

Plain PyTorch throughout (no diffusers, no transformers).
"""

from __future__ import annotations

from critwin.models.text.config import KINDS, MODEL_NAMES, PRESETS, TextConfig
from critwin.models.text.grammar import RandomHierarchy
from critwin.models.text.model import TextModel, build_network, load_text_model, save_text_model, text_process
from critwin.models.text.network import TokenTransformer
from critwin.models.text.training import evaluate_text_model, train_text_model, training_steps

__all__ = [
    "KINDS",
    "MODEL_NAMES",
    "PRESETS",
    "RandomHierarchy",
    "TextConfig",
    "TextModel",
    "TokenTransformer",
    "build_network",
    "evaluate_text_model",
    "load_text_model",
    "save_text_model",
    "text_process",
    "train_text_model",
    "training_steps",
]
