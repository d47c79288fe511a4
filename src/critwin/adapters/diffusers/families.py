"""Which kind of pipeline a denoising network belongs to, and the conditioning of the transformer
families that :mod:`~critwin.adapters.diffusers.pipeline` does not build itself.

- PixArt (``PixArtTransformer2DModel``, PixArt-α/Σ pipelines): T5 prompt embeddings (``caption_channels``
  wide) with their attention masks, classifier-free guidance as the pipeline does it, and the
  resolution/aspect-ratio micro-conditioning of the 1024-pixel models (``sample_size == 128``).
- DiT (``DiTTransformer2DModel``, ``DiTPipeline``): ``num_embeds_ada_norm`` classes; the unconditional
  branch is the extra null class ``num_embeds_ada_norm`` (the DiT pipeline's ``1000``).

Both emit a learned variance (``2C`` channels); :class:`DiffusersProcess` steps with the mean half.
"""

from __future__ import annotations

import torch

from critwin.adapters.diffusers.guidance import class_count, text_width

__all__ = ["FAMILY_GUIDANCE", "model_family", "null_class", "pixart_conditioning"]

FAMILY_GUIDANCE = {"sd": 7.5, "xl": 5.0, "sd3": 7.0, "pixart": 4.5, "dit": 4.0, "flux": 3.5}
"""Each pipeline's default ``guidance_scale`` (Flux: its distilled guidance, not classifier-free)."""


def model_family(net) -> str:
    """``"xl"``, ``"sd3"``, ``"flux"``, ``"pixart"``, ``"sd"`` (text via cross-attention), ``"dit"``,
    ``"class"`` (class-conditional UNet) or ``"uncond"``: how the network is conditioned."""
    get = net.config.get
    if get("addition_embed_type") == "text_time":
        return "xl"
    if get("guidance_embeds") is not None and get("axes_dims_rope") is not None:
        return "flux"
    if get("pooled_projection_dim") is not None:
        return "sd3"
    if get("caption_channels") is not None:
        return "pixart"
    if text_width(net) is not None:
        return "sd"
    if class_count(net) is not None:
        return "dit" if get("num_class_embeds") is None else "class"
    return "uncond"


def null_class(net, null_class_label: int | None) -> int | None:
    """The unconditional label: as given, else DiT's null class ``num_embeds_ada_norm``."""
    if null_class_label is not None or model_family(net) != "dit":
        return null_class_label
    return class_count(net)


def pixart_conditioning(pipe, net, text: dict, masks, use_cfg: bool, needs_encoding: bool, size):
    """(cond, uncond) of a PixArt transformer: prompt embeddings, attention masks, micro-conditioning.

    Parameters
    ----------
    pipe : the PixArt pipeline (its ``encode_prompt`` runs when ``needs_encoding``).
    net : its ``PixArtTransformer2DModel``.
    text : prompt, negative_prompt, prompt_embeds, negative_prompt_embeds (filled in when encoded).
    masks : (prompt_attention_mask, negative_prompt_attention_mask), each (B, seq_len) or None.
    use_cfg : whether the unconditional branch is needed.
    size : (height, width) in pixels.
    """
    mask, negative_mask = masks
    if needs_encoding:
        text["prompt_embeds"], mask, text["negative_prompt_embeds"], negative_mask = pipe.encode_prompt(
            text["prompt"],
            use_cfg,
            negative_prompt=text["negative_prompt"] or "",
            num_images_per_prompt=1,
            device=getattr(pipe, "device", torch.device("cpu")),
            prompt_embeds=text["prompt_embeds"],
            negative_prompt_embeds=text["negative_prompt_embeds"],
            prompt_attention_mask=mask,
            negative_prompt_attention_mask=negative_mask,
            clean_caption=True,  # the pipeline's __call__ default (skipped, with a warning, without bs4/ftfy)
        )
    if mask is None or (use_cfg and negative_mask is None):
        raise ValueError(
            "PixArt needs prompt_attention_mask with prompt_embeds (and negative_prompt_attention_mask "
            "with negative_prompt_embeds for guidance)"
        )
    extra = {}
    if getattr(net, "use_additional_conditions", False):
        # The 1024-pixel models embed the image size and aspect ratio (float, as the pipeline casts them).
        height, width = size
        extra = {
            "resolution": torch.tensor([[float(height), float(width)]]),
            "aspect_ratio": torch.tensor([[float(height / width)]]),
        }
    cond = {"encoder_hidden_states": text["prompt_embeds"], "encoder_attention_mask": mask, **extra}
    if not use_cfg:
        return cond, {}
    uncond = {
        "encoder_hidden_states": text["negative_prompt_embeds"],
        "encoder_attention_mask": negative_mask,
        **extra,
    }
    return cond, uncond
