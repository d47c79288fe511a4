"""A real diffusion model that works offline: a class-conditional DDPM on the 8x8 digits.

The network is a diffusers ``UNet2DModel`` (8x8, one channel, epsilon prediction) with
``num_class_embeds = 11``: labels 0..9 are the digits and label 10 is the null label, used for
unconditional sampling and classifier-free guidance. It is trained with diffusers' 1000-step
linear ``DDPMScheduler`` (``add_noise``) and sampled with the same scheduler's ``step``; critwin's
experiments drive it through ``critwin.adapters.diffusers`` like any user's model.

Shipped models (``weights/``): ``digits`` (all training digits) and ``digits-memorise`` (20 training
digits, trained until its samples copy them); ``digits-flow`` and ``digits-v``: the ``digits`` network,
data and run with the rectified-flow (velocity ``z - x0``, ``FlowMatchEulerDiscreteScheduler``) and the
v-prediction objective (``DigitsConfig.parameterisation``), for the parameterisation-invariance check.
Each has a JSON model card with the configuration,
data split, training run and quality metrics (``conditional_accuracy`` and friends).

Modules: :mod:`.config` (:class:`DigitsConfig`, presets), :mod:`.model` (network, :class:`DigitsModel`,
loading and saving), :mod:`.training` (:func:`training_steps`, :func:`train_digits`),
:mod:`.evaluation` (:func:`evaluate_digits_model`), :mod:`.card` (:func:`build_card`).
"""

from __future__ import annotations

from critwin.models.digits.card import build_card
from critwin.models.digits.config import MODEL_NAMES, NULL_LABEL, PARAMETERISATIONS, PRESETS, DigitsConfig
from critwin.models.digits.evaluation import evaluate_digits_model
from critwin.models.digits.model import (
    DigitsModel,
    build_unet,
    load_digits_model,
    make_scheduler,
    save_digits_model,
    shipped_process,
)
from critwin.models.digits.training import TrainState, train_digits, training_pair, training_steps

__all__ = [
    "NULL_LABEL",
    "MODEL_NAMES",
    "PARAMETERISATIONS",
    "DigitsConfig",
    "PRESETS",
    "TrainState",
    "DigitsModel",
    "build_unet",
    "make_scheduler",
    "build_card",
    "training_pair",
    "training_steps",
    "train_digits",
    "evaluate_digits_model",
    "load_digits_model",
    "save_digits_model",
    "shipped_process",
]
