"""The JSON model card of a digits DDPM."""

from __future__ import annotations

from typing import Any

import diffusers
import torch

from critwin._version import __version__
from critwin.models._training import memorisation_comparison, training_record
from critwin.models.data import DigitsData
from critwin.models.digits.config import NULL_LABEL
from critwin.models.digits.model import DigitsModel

__all__ = ["build_card"]


def build_card(
    model: DigitsModel,
    data: DigitsData,
    metrics: dict,
    history: list[dict] | None = None,
    train_seconds: float | None = None,
    reference_card: dict | None = None,
) -> dict:
    """The JSON model card of a digits model (``conditional_accuracy`` at the top level)."""
    card: dict[str, Any] = {
        "name": model.name,
        "kind": "digits-ddpm",
        "critwin_version": __version__,
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
        "conditional_accuracy": metrics["conditional_accuracy"],
        "parameters": model.num_parameters,
        "architecture": "diffusers.UNet2DModel, epsilon prediction, class-conditional (num_class_embeds=11, "
        f"label {NULL_LABEL} = null label for classifier-free guidance)",
        "config": model.config.to_dict(),
        "unet_config": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.unet_kwargs().items()
        },
        "scheduler_config": model.config.scheduler_kwargs(),
        "data": data.describe(),
        "training": training_record(model.config, history, train_seconds),
        "metrics": metrics,
    }
    if reference_card is not None:
        card["comparison"] = memorisation_comparison(reference_card, metrics)
    return card
