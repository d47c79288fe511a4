"""Flux (``FluxTransformer2DModel`` / ``FluxPipeline``) as a ``DiffusersProcess``.

Flux differs from SD3 in four ways, each reproduced here as ``FluxPipeline.__call__`` does it:

- its states are packed latents: 2x2 patches of the ``(C, H, W)`` VAE latents as ``H/2 * W/2`` tokens of
  ``4C`` channels (:class:`PackedLatents`; the process's ``sample_shape`` is ``(H/2 * W/2, 4C)``);
- the transformer takes text and image position ids (``txt_ids`` zeros, ``img_ids`` the patch grid) and
  the timestep divided by 1000 (:class:`FluxNetwork` adds them);
- guidance is a distilled embedding, ``guidance = guidance_scale`` per sample, on a single conditional
  pass (no unconditional branch; the pipeline's optional "true CFG" with a negative prompt runs two
  separate passes, which a batched unconditional branch would not match bit for bit: not reproduced);
- a text prompt goes through the pipeline's ``encode_prompt`` (CLIP pooled + T5 embeddings);
- the schedule is FlowMatchEuler with explicit sigmas ``linspace(1, 1/L, L)`` and the dynamic shift ``mu``
  of the packed sequence length.

The flow-matching clock (state ``(1 - s) x0 + s z``, OU time, x̂₀ = x - s v) is
:mod:`critwin.adapters.diffusers.flow`'s, as for SD3.
"""

from __future__ import annotations

import numpy as np
import torch

from critwin._validation import check_positive_int
from critwin.adapters.diffusers.flow import dynamic_shift_mu
from critwin.adapters.diffusers.guidance import vae_scale_factor

__all__ = ["FluxNetwork", "PackedLatents", "flux_setup"]

# FluxPipeline.default_sample_size: the latent size of its default image (1024 pixels at factor 8).
_DEFAULT_SAMPLE_SIZE = 128


class PackedLatents:
    """Flux's packing of ``(B, C, H, W)`` latents into ``(B, H/2 * W/2, 4C)`` tokens of 2x2 patches.

    Parameters
    ----------
    channels, height, width : the VAE latent shape (``height`` and ``width`` even).
    """

    def __init__(self, channels: int, height: int, width: int):
        self.channels, self.height, self.width = int(channels), int(height), int(width)

    @property
    def shape(self) -> tuple[int, int]:
        """The packed sample shape ``(H/2 * W/2, 4C)``."""
        return ((self.height // 2) * (self.width // 2), 4 * self.channels)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H/2 * W/2, 4C), as ``FluxPipeline._pack_latents``."""
        b, c, h, w = latents.shape
        x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // 2) * (w // 2), c * 4)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H/2 * W/2, 4C) -> (B, C, H, W), as ``FluxPipeline._unpack_latents``."""
        b, h, w, c = x.shape[0], self.height, self.width, self.channels
        latents = x.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return latents.reshape(b, c, h, w)

    def image_ids(self, device, dtype) -> torch.Tensor:
        """(H/2 * W/2, 3) position ids of the patches: (0, row, column), as the pipeline builds them."""
        ids = torch.zeros(self.height // 2, self.width // 2, 3)
        ids[..., 1] = ids[..., 1] + torch.arange(self.height // 2)[:, None]
        ids[..., 2] = ids[..., 2] + torch.arange(self.width // 2)[None, :]
        return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxNetwork(torch.nn.Module):
    """A ``FluxTransformer2DModel`` called as the adapter calls transformers, completed as ``FluxPipeline``.

    ``forward(hidden_states=, timestep=, encoder_hidden_states=, pooled_projections=, guidance=)`` takes
    the timestep in the scheduler's units (``s * 1000``) and passes ``timestep / 1000``, zero text ids
    and the patch grid's image ids.
    """

    def __init__(self, transformer, layout: PackedLatents):
        super().__init__()
        self.transformer = transformer
        self.layout = layout
        self.config = transformer.config

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        guidance: torch.Tensor | None = None,
        return_dict: bool = False,
    ):
        dtype, device = hidden_states.dtype, hidden_states.device
        text_ids = torch.zeros(encoder_hidden_states.shape[1], 3).to(device=device, dtype=dtype)
        return self.transformer(
            hidden_states=hidden_states,
            timestep=timestep.to(dtype) / 1000,
            guidance=guidance,
            pooled_projections=pooled_projections,
            encoder_hidden_states=encoder_hidden_states,
            txt_ids=text_ids,
            img_ids=self.layout.image_ids(device, dtype),
            return_dict=return_dict,
        )


def flux_setup(pipe, transformer, scheduler, num_inference_steps, guidance_scale, text, height, width):
    """The network and :class:`DiffusersProcess` keywords of a ``FluxPipeline`` (see :func:`from_pipeline`).

    Parameters
    ----------
    pipe : a ``FluxPipeline`` (or a :class:`LocalPipeline` of one): its ``vae`` and ``default_sample_size``.
    transformer : its ``FluxTransformer2DModel``.
    guidance_scale : the distilled guidance (used when the transformer has ``guidance_embeds``).
    text : ``prompt`` (encoded by the pipeline's text encoders), or ``prompt_embeds``
        (1 or B, seq_len, joint_attention_dim) T5 embeddings with ``pooled_prompt_embeds``
        (1 or B, pooled_projection_dim) pooled CLIP embeddings.
    height, width : image size in pixels (default: the pipeline's, 128 latent pixels).

    Returns
    -------
    network : the :class:`FluxNetwork`.
    kwargs : ``vae``, ``sample_shape``, ``cond``, ``mu``, ``sigmas``, ``latent_layout``.
    size : (height, width) in pixels.
    """
    num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps")
    prompt_embeds, pooled = _flux_text(pipe, text)
    vae = getattr(pipe, "vae", None)
    factor = vae_scale_factor(vae)
    size = getattr(pipe, "default_sample_size", _DEFAULT_SAMPLE_SIZE) * factor
    height, width = height or size, width or size
    if height % (2 * factor) or width % (2 * factor):
        raise ValueError(
            f"height and width must be multiples of {2 * factor} (VAE factor times the 2x2 packing) for "
            f"Flux, got {height}x{width}"
        )
    layout = PackedLatents(transformer.config.in_channels // 4, height // factor, width // factor)
    config = scheduler.config
    mu = dynamic_shift_mu(config, layout.shape[0]) if config.get("use_dynamic_shifting", False) else None
    cond = {"encoder_hidden_states": prompt_embeds, "text_embeds": pooled}
    if transformer.config.get("guidance_embeds", False):
        cond["guidance"] = torch.full([1], float(guidance_scale), dtype=torch.float32)
    kwargs = dict(
        vae=vae,
        sample_shape=layout.shape,
        cond=cond,
        mu=mu,
        sigmas=np.linspace(1.0, 1 / num_inference_steps, num_inference_steps),
        latent_layout=layout,
    )
    return FluxNetwork(transformer, layout), kwargs, (height, width)


def _flux_text(pipe, text: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled_prompt_embeds): given, or the prompt encoded as ``FluxPipeline`` does."""
    if text["prompt"] is None:
        if text["prompt_embeds"] is None or text["pooled_prompt_embeds"] is None:
            raise ValueError("Flux needs prompt= or prompt_embeds= with pooled_prompt_embeds=")
        return text["prompt_embeds"], text["pooled_prompt_embeds"]
    if text["prompt_embeds"] is not None or text["pooled_prompt_embeds"] is not None:
        raise ValueError("pass either prompt or prompt_embeds/pooled_prompt_embeds, not both")
    if any(getattr(pipe, name, None) is None for name in ("text_encoder", "text_encoder_2", "tokenizer")):
        raise ValueError(
            "prompt= needs the pipeline's tokenizers and text encoders (CLIP and T5), which this pipeline "
            "lacks; pass prompt_embeds= and pooled_prompt_embeds= instead"
        )
    with torch.no_grad():  # as the pipeline's __call__ (no graph; inference attention kernels)
        prompt_embeds, pooled, _ = pipe.encode_prompt(
            prompt=text["prompt"], prompt_2=None, device=pipe.device, num_images_per_prompt=1
        )
    return prompt_embeds, pooled
