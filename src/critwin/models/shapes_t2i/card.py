"""The JSON model card of a shapes text-to-image model (``critwin_card.json`` in its pipeline directory)."""

from __future__ import annotations

from typing import Any

import torch

from critwin._version import __version__
from critwin.models.shapes_t2i.captions import vocabulary
from critwin.models.shapes_t2i.config import T2IConfig
from critwin.models.shapes_t2i.data import T2IData

__all__ = ["build_card"]


def _parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _plain(value):
    """Configs as JSON-ready values (tuples as lists, frozen dicts as dicts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _memorisation(data: T2IData, config: T2IConfig) -> dict[str, Any] | None:
    if config.memorisation is None:
        return None
    return {
        "design": "member pairs (fully specified caption + unique ', item D D D' id) duplicated with graded "
        "counts among unique pairs whose captions carry no id (Carlini et al. 2023); non-member and "
        "calibration prompts: the same grammar with ids never used in training, disjoint sets",
        "counts": list(config.memorisation.counts),
        "per_count": config.memorisation.per_count,
        "members": [{"prompt": m["prompt"], "count": m["count"]} for m in data.members],
        "non_members": list(data.non_members),
        "calibration": list(data.calibration),
    }


def build_card(
    name: str, pipe, config: T2IConfig, data: T2IData, metrics: dict, training: dict[str, dict]
) -> dict[str, Any]:
    """The card: adherence at the top level, then config, components, data, prompt sets, training, metrics.

    ``training`` holds the ``vae`` and ``unet_text_encoder`` stage records (steps, wall and CPU seconds,
    load averages, loss history).
    """
    import diffusers
    import transformers

    adherence = metrics["adherence"]
    parts = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
    stages = list(training.values())
    return {
        "name": name,
        "kind": "shapes-t2i",
        "critwin_version": __version__,
        "diffusers_version": diffusers.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "adherence": {a: v["rate"] for a, v in adherence["attributes"].items()},
        "adherence_ci95": {a: v["ci95"] for a, v in adherence["attributes"].items()},
        "guidance_scale": config.guidance_scale,
        "num_inference_steps": config.num_inference_steps,
        "architecture": "diffusers.StableDiffusionPipeline: CLIPTokenizer (word level) + CLIPTextModel + "
        "AutoencoderKL (16x16 RGB <-> 8x8x4) + UNet2DConditionModel (cross-attention) + DDIMScheduler; "
        "epsilon prediction, classifier-free guidance with the empty prompt",
        "parameters": {
            **{k: _parameters(v) for k, v in parts.items()},
            "total": sum(map(_parameters, parts.values())),
        },
        "config": config.to_dict(),
        "unet_config": _plain(dict(pipe.unet.config)),
        "vae_config": _plain(dict(pipe.vae.config)),
        "text_encoder_config": {
            k: getattr(pipe.text_encoder.config, k)
            for k in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
            )
        },
        "scheduler_config": _plain(dict(pipe.scheduler.config)),
        "tokenizer": {
            "model_max_length": pipe.tokenizer.model_max_length,
            "tokens": len(pipe.tokenizer),
            "built": "offline: word-level BPE merges learned on the caption vocabulary",
        },
        "vocabulary": list(vocabulary()),
        "captions": {
            **config.captions.to_dict(),
            "null_prompt": "",
            "caption_dropout": config.caption_dropout,
            "examples": data.captions[:8],
        },
        "text_encoder_training": "jointly with the U-Net" if config.train_text_encoder else "frozen at init",
        "stereotype": None if config.stereotype is None else config.stereotype.describe(),
        "memorisation": _memorisation(data, config),
        "data": data.describe(),
        "training": {
            **training,
            "wall_seconds": sum(s["wall_seconds"] for s in stages),
            "cpu_seconds": sum(s["cpu_seconds"] for s in stages),
            "torch_threads": torch.get_num_threads(),
            "seeds": {
                "seed": config.seed,
                "data_seed": config.data_seed,
                "vae_data_seed": config.vae_data_seed,
            },
            "weights": f"EMA (decay {config.ema_decay}) of U-Net and text encoder; the VAE's own weights",
        },
        "metrics": metrics,
    }
