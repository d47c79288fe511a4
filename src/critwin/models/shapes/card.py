"""The JSON model card of a shapes DDPM."""

from __future__ import annotations

from typing import Any

import diffusers
import torch

from critwin._version import __version__
from critwin.models._training import memorisation_comparison, training_record
from critwin.models.shapes.data import ShapesData
from critwin.models.shapes.model import ShapesModel

__all__ = ["build_card"]


def build_card(
    model: ShapesModel,
    data: ShapesData,
    metrics: dict,
    history: list[dict] | None = None,
    train_seconds: float | None = None,
    reference_card: dict | None = None,
    readers: dict | None = None,
) -> dict:
    """The JSON model card of a shapes model (``max_tv`` and ``valid_fraction`` at the top level).

    ``readers`` (attribute -> held-out accuracy) is recorded as ``reader_accuracy``; ``reference_card``
    (the main model's card) adds its memorisation numbers as ``comparison``.
    """
    config = model.config
    card: dict[str, Any] = {
        "name": model.name,
        "kind": "shapes-ddpm",
        "critwin_version": __version__,
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
        "max_tv": metrics["max_tv"],
        "valid_fraction": metrics["valid_fraction"],
        "parameters": model.num_parameters,
        "architecture": "diffusers.UNet2DModel, epsilon prediction, unconditional, 16x16 RGB",
        "config": config.to_dict(),
        "unet_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.unet_kwargs().items()},
        "scheduler_config": config.scheduler_kwargs(),
        "data": data.describe(),
        "reader_accuracy": readers,
        "training": training_record(config, history, train_seconds),
        "metrics": metrics,
    }
    if reference_card is not None:
        card["comparison"] = memorisation_comparison(reference_card, metrics)
    return card
