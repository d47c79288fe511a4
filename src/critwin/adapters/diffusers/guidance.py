"""Conditioning, classifier-free guidance and the VAE: what surrounds one UNet call.

- Conditioning dicts take UNet keywords (``encoder_hidden_states``, ``class_labels``, ``text_embeds``,
  ``time_ids``, ...) or the pipeline names (``prompt_embeds``, ``pooled_prompt_embeds``, ``add_time_ids``);
  :func:`normalise_cond` maps the latter to the former, :func:`batch_cond` checks, moves and repeats them.
- Classifier-free guidance: the unconditional and conditional branches run as one doubled batch
  (:func:`prepare_guidance` builds its keywords) and :func:`combine_guidance` mixes the two halves.
- VAE: :func:`vae_encode` / :func:`vae_decode` apply the latent ``scaling_factor`` / ``shift_factor``;
  :func:`vae_scale_factor` is the spatial down-sampling factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

# Conditioning keys users know from pipelines -> the UNet keyword they feed.
_ALIASES = {
    "prompt_embeds": "encoder_hidden_states",
    "negative_prompt_embeds": "uncond_encoder_hidden_states",
    "pooled_prompt_embeds": "text_embeds",
    "negative_pooled_prompt_embeds": "uncond_text_embeds",
    "add_time_ids": "time_ids",
    "negative_add_time_ids": "uncond_time_ids",
    "class_label": "class_labels",
    "negative_class_labels": "uncond_class_labels",
}
# SDXL-style UNets (and PixArt's micro-conditioning) take these inside ``added_cond_kwargs``.
_ADDED_COND_KEYS = ("text_embeds", "time_ids", "image_embeds", "resolution", "aspect_ratio")
UNCOND_PREFIX = "uncond_"


class GuidedInputs(NamedTuple):
    """UNet keywords for one call: both branches concatenated (uncond first) when ``guided``."""

    kwargs: dict[str, Any]
    guided: bool
    scale: float


# ---------------------------------------------------------------------------------------- conditioning
def check_guidance(guidance_scale) -> float:
    """``guidance_scale`` as a finite float >= 0."""
    try:
        value = float(guidance_scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scale must be a number >= 0, got {guidance_scale!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
    return value


def _config_get(unet):
    config = getattr(unet, "config", None)
    return config.get if hasattr(config, "get") else (lambda key, default=None: default)


def normalise_cond(cond: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Pipeline names -> UNet keywords; ``added_cond_kwargs`` flattened; ``uncond_`` dropped for uncond."""
    if not isinstance(cond, Mapping):
        raise ValueError(f"{name} must be a dict of conditioning tensors, got {type(cond).__name__}")
    out: dict[str, Any] = {}
    for key, value in cond.items():
        key = _ALIASES.get(key, key)
        if name == "uncond" and key.startswith(UNCOND_PREFIX):
            key = key[len(UNCOND_PREFIX) :]
        if key == "added_cond_kwargs" and isinstance(value, Mapping):
            out.update({_ALIASES.get(k, k): v for k, v in value.items()})
            continue
        out[key] = value
    return out


def split_cond(
    cond: Mapping[str, Any], uncond: Mapping[str, Any], extra: Mapping[str, Any] | None, scale: float
) -> tuple[dict, dict, float]:
    """Merge the defaults with per-call conditioning; return (conditional, unconditional, guidance_scale)."""
    extra = normalise_cond(extra or {}, "cond")
    scale = check_guidance(extra.pop("guidance_scale", scale))
    positive = dict(cond)
    negative = dict(uncond)
    for key, value in extra.items():
        if key.startswith(UNCOND_PREFIX):
            negative[key[len(UNCOND_PREFIX) :]] = value
        else:
            positive[key] = value
    return positive, negative, scale


def text_width(unet) -> int | None:
    """Width of the prompt embeddings a model takes: ``caption_channels`` (PixArt, projected to its
    ``cross_attention_dim``), ``cross_attention_dim`` (UNets) or ``joint_attention_dim`` (SD3, Flux); None
    for models without text conditioning."""
    get = _config_get(unet)
    for key in ("caption_channels", "cross_attention_dim", "joint_attention_dim"):
        if get(key) is not None:
            return get(key)
    return None


def class_count(unet) -> int | None:
    """Number of classes of a class-conditional model: ``num_class_embeds`` (UNets) or, for DiT
    (``norm_type="ada_norm_zero"``), ``num_embeds_ada_norm``; None otherwise."""
    get = _config_get(unet)
    if get("num_class_embeds") is not None:
        return get("num_class_embeds")
    return get("num_embeds_ada_norm") if get("norm_type") == "ada_norm_zero" else None


def class_labels_allowed(unet) -> int | None:
    """Rows of the class-embedding table: DiT's has one more than its classes, the null (unconditional)
    label ``num_embeds_ada_norm`` that its pipeline uses for guidance."""
    count = class_count(unet)
    return count + 1 if count is not None and _config_get(unet)("num_class_embeds") is None else count


def check_embeds(unet, value, branch: str) -> None:
    """Prompt embeddings must be (batch, seq_len, cross_attention_dim) for a text-conditional UNet."""
    if value is None:
        return
    width = text_width(unet)
    if width is None:
        raise ValueError(f"{branch} has prompt embeddings, but this UNet takes no text conditioning")
    if (
        not isinstance(value, torch.Tensor)
        or value.ndim != 3
        or (isinstance(width, int) and value.shape[-1] != width)
    ):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"prompt embeddings {branch}['encoder_hidden_states'] must have shape "
            f"(batch, seq_len, {width}), got {shape}"
        )


def _batch_value(value, key: str, batch: int, device, dtype, label: str):
    """One conditioning value on ``device`` with ``batch`` rows (size-1 batches repeated)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "class_labels":
        value = torch.full((batch,), int(value), dtype=torch.long)
    if not isinstance(value, torch.Tensor):
        return value
    if value.ndim == 0:
        value = value.reshape(1)
    if value.shape[0] not in (1, batch):
        raise ValueError(f"{label} has batch size {value.shape[0]}, expected 1 or {batch}")
    if value.shape[0] == 1 and batch > 1:
        value = value.repeat(batch, *([1] * (value.ndim - 1)))
    # Embeddings run in the UNet's precision (pipelines cast prompt_embeds); labels stay integer.
    return value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)


def batch_cond(unet, cond: dict[str, Any], batch: int, device, dtype, branch: str) -> dict[str, Any]:
    """Check shapes, move to device, repeat size-1 batches; nest SDXL keys into ``added_cond_kwargs``."""
    get = _config_get(unet)
    out: dict[str, Any] = {}
    added: dict[str, Any] = {}
    # SD3/Flux transformers take the pooled text embedding as pooled_projections, not added_cond_kwargs.
    pooled_key = "pooled_projections" if get("pooled_projection_dim") is not None else None
    for key, value in cond.items():
        if key == "text_embeds" and pooled_key:
            key = pooled_key
        label = f"{branch}[{key!r}]"
        value = _batch_value(value, key, batch, device, dtype, label)
        if key == "encoder_hidden_states":
            check_embeds(unet, value, branch)
        n_classes = class_labels_allowed(unet)
        if key == "class_labels" and isinstance(value, torch.Tensor) and n_classes is not None:
            if ((value < 0) | (value >= n_classes)).any():
                raise ValueError(f"{label} must hold class indices in 0..{n_classes - 1}")
        (added if key in _ADDED_COND_KEYS else out)[key] = value
    if added:
        out["added_cond_kwargs"] = added
    if text_width(unet) is not None and "encoder_hidden_states" not in out:
        raise ValueError(
            f"this model is text-conditional: {branch} needs prompt embeddings "
            "('prompt_embeds' / 'encoder_hidden_states' of shape (batch, seq_len, "
            f"{text_width(unet)}))"
        )
    return out


def _cat_cond(negative, positive, key):
    if isinstance(positive, torch.Tensor):
        if not isinstance(negative, torch.Tensor) or negative.shape[1:] != positive.shape[1:]:
            shape = tuple(negative.shape) if isinstance(negative, torch.Tensor) else type(negative).__name__
            raise ValueError(
                f"uncond[{key!r}] must match cond[{key!r}] in shape {tuple(positive.shape)}, got {shape}"
            )
        return torch.cat([negative, positive])
    if isinstance(positive, dict):
        return {k: _cat_cond(negative[k], positive[k], k) for k in positive}
    if negative != positive:
        raise ValueError(f"cond[{key!r}] is not a tensor, so uncond must give the same value")
    return positive


def prepare_guidance(unet, positive, negative, scale: float, batch: int, device, dtype) -> GuidedInputs:
    """UNet keywords for ``batch`` samples: the conditional branch alone for ``scale == 1``, otherwise
    the unconditional and conditional branches concatenated (in that order, as the SD pipelines do)."""
    positive = batch_cond(unet, positive, batch, device, dtype, "cond")
    if scale == 1.0:
        return GuidedInputs(positive, False, scale)
    if not negative:
        raise ValueError(
            f"guidance_scale={scale:g} needs unconditional conditioning: pass uncond= (negative prompt "
            "embeddings, or the null class label of a class-conditional model), or use guidance_scale=1"
        )
    negative = batch_cond(unet, negative, batch, device, dtype, "uncond")
    if set(negative) != set(positive):
        raise ValueError(
            "cond and uncond must provide the same keys for guidance, got "
            f"{sorted(positive)} and {sorted(negative)}"
        )
    return GuidedInputs({key: _cat_cond(negative[key], positive[key], key) for key in positive}, True, scale)


def double_batch(x: torch.Tensor, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model input and timestep(s) of a guided call: both branches of the batch."""
    return torch.cat([x] * 2), (timestep.repeat(2) if timestep.ndim else timestep)


def combine_guidance(out: torch.Tensor, scale: float, rescale: float) -> torch.Tensor:
    """Classifier-free guidance of a doubled-batch output ``[uncond; cond]``: ``uncond + g (cond - uncond)``,
    then the guidance rescale of Lin et al. (2023, Sec. 3.4) when ``rescale > 0`` (as the SD pipelines)."""
    out_uncond, out_cond = out.chunk(2)
    guided = out_uncond + scale * (out_cond - out_uncond)
    if rescale > 0.0:
        # Imported here: the SD pipeline module imports transformers, an optional dependency.
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

        guided = rescale_noise_cfg(guided, out_cond, guidance_rescale=rescale)
    return guided


# ------------------------------------------------------------------------------------------------- VAE
def vae_scale_factor(vae, default: int = 8) -> int:
    """Spatial down-sampling factor of the VAE (pixels per latent along an axis); ``default`` without one."""
    if vae is None:
        return default
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _latent_scale_shift(vae) -> tuple[float, float]:
    """The VAE's ``scaling_factor`` and ``shift_factor``: latents = (mean - shift) * scale."""
    config = vae.config
    return config.get("scaling_factor", 1.0), config.get("shift_factor", None) or 0.0


def _vae_batched(vae, fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``fn`` over batches of ``batch_size`` rows of ``x``, concatenated.

    Each batch moves to the VAE's device and dtype: sources arrive on the CPU in float32 (files, cached
    samples) while the VAE may run in float16 on CUDA, and only a batch at a time is moved.
    """
    device = next(vae.parameters()).device
    with torch.no_grad():
        return torch.cat([fn(part.to(device=device, dtype=vae.dtype)) for part in x.split(batch_size)])


def vae_encode(vae, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> scaled latents (posterior mean)."""
    scale, shift = _latent_scale_shift(vae)
    return _vae_batched(vae, lambda part: (vae.encode(part).latent_dist.mean - shift) * scale, x, batch_size)


def vae_decode(vae, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (unclipped)."""
    scale, shift = _latent_scale_shift(vae)
    return _vae_batched(
        vae, lambda part: vae.decode(part / scale + shift, return_dict=False)[0], x, batch_size
    )
