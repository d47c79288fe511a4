"""A text-to-image pipeline audited prompt by prompt: embeddings, processes, network evaluations.

The prompt-level audits (:mod:`critwin.diagnostics.prompt_fairness`,
:mod:`critwin.diagnostics.prompt_privacy`) run a ``diffusers.StableDiffusionPipeline`` (tokenizer, text
encoder, VAE, UNet, scheduler) through exactly the path a user's checkpoint takes: the prompt is encoded
by the pipeline's own ``encode_prompt``, the unconditional branch of classifier-free guidance is the
embedding of the null prompt ``""`` (what the pipeline uses without a negative prompt), and sampling is
the diffusers adapter (:func:`critwin.adapters.diffusers.from_pipeline`), step for step the stock
pipeline.

Sampler. Cloning, rebalancing and the commitment signal need continuations that differ: the saved
``DDIMScheduler`` of Stable Diffusion is run with ``eta = 1`` (ancestral, DDPM-like noise at every step)
by every method alike; DDPM and Euler-ancestral schedulers are stochastic as they are. Deterministic
samplers are refused with a ValueError naming ``pipe``.

Network evaluations (NFEs) are counted as the rows that pass through the UNet (:meth:`PromptModel.counting`):
a guided step costs two rows per sample (conditional and unconditional branch), an unguided one (guidance
scale 1, or outside a guidance interval) one row. Every cost in the audits is this count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from critwin._validation import check_number, check_positive_int

__all__ = ["NULL_PROMPT", "PromptModel", "RowCounter", "check_prompts"]

NULL_PROMPT = ""
"""The unconditional prompt of classifier-free guidance (Stable Diffusion's default negative prompt)."""

_STOCHASTIC = ("DDPMScheduler", "EulerAncestralDiscreteScheduler")


@dataclass
class RowCounter:
    """UNet rows (network evaluations) counted while a :meth:`PromptModel.counting` block runs."""

    rows: int = 0


def check_prompts(prompts, name: str = "prompts", max_tokens: int | None = None, tokenizer=None) -> list[str]:
    """``prompts`` as a list of distinct, non-empty strings within the tokenizer's limit.

    Parameters
    ----------
    prompts : a sequence of strings.
    name : the argument's name in errors (a CLI option or file).
    max_tokens : the tokenizer's ``model_max_length`` (start and end tokens included).
    tokenizer : counts the tokens of each prompt (default: ``max_tokens`` is not checked).

    Returns
    -------
    list[str]

    Examples
    --------
    >>> check_prompts(["a circle", "a red circle"])
    ['a circle', 'a red circle']
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ValueError(f"{name} must be a list of prompts, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"{name} holds no prompts")
    seen: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{name}: prompt {i + 1} is empty (the empty prompt is the unconditional one)")
        if prompt in seen:
            raise ValueError(f"{name}: prompt {i + 1} {prompt!r} repeats prompt {seen[prompt] + 1}")
        seen[prompt] = i
        if tokenizer is not None and max_tokens is not None:
            count = len(tokenizer(prompt).input_ids)
            if count > max_tokens:
                raise ValueError(
                    f"{name}: prompt {i + 1} {prompt!r} has {count} tokens; the tokenizer's limit is "
                    f"{max_tokens} (start and end tokens included): the pipeline would truncate it silently"
                )
    return prompts


def _guidance(value) -> float:
    return check_number(value, "guidance_scale", low=0.0)


class PromptModel:
    """A Stable Diffusion pipeline with the settings every prompt-level audit shares.

    Parameters
    ----------
    pipe : a ``StableDiffusionPipeline`` with its tokenizer and text encoder.
    num_inference_steps : sampler steps (default: the model card's, else 25).
    guidance_scale : classifier-free guidance weight (default: the model card's, else 7.5, SD's).
    eta : DDIM's noise (1: ancestral; the default, see the module notes). Ignored by the stochastic
        DDPM and Euler-ancestral schedulers.
    name : recorded in results (default: the pipeline's path).

    Examples
    --------
    >>> from critwin.models.shapes_t2i.pipeline import load_t2i_pipeline
    >>> model = PromptModel(load_t2i_pipeline("shapes-t2i-biased"), num_inference_steps=10)
    >>> process = model.process(["a circle"] * 8)  # one row of prompt embeddings per sample
    >>> with model.counting() as counter:
    ...     x = process.decode(process.run(process.prior(8)))
    >>> counter.rows  # 8 samples x 10 steps x 2 branches
    160
    """

    def __init__(
        self,
        pipe,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        *,
        eta: float = 1.0,
        name: str | None = None,
    ):
        if getattr(pipe, "tokenizer", None) is None or getattr(pipe, "text_encoder", None) is None:
            raise ValueError("pipe must have a tokenizer and a text encoder (a StableDiffusionPipeline)")
        card = getattr(pipe, "critwin_card", None) or {}
        self.pipe = pipe
        self.card = card
        steps = card.get("num_inference_steps", 25) if num_inference_steps is None else num_inference_steps
        self.num_inference_steps = check_positive_int(steps, "num_inference_steps")
        scale = card.get("guidance_scale", 7.5) if guidance_scale is None else guidance_scale
        self.guidance_scale = _guidance(scale)
        scheduler = type(pipe.scheduler).__name__
        if scheduler == "DDIMScheduler":
            self.step_kwargs = {"eta": float(eta)}
            if not float(eta) > 0:
                raise ValueError(f"eta must be > 0 (continuations must differ), got {eta}")
        elif scheduler in _STOCHASTIC:
            self.step_kwargs = {}
        else:
            raise ValueError(
                f"pipe has a deterministic {scheduler}; the audits need a stochastic sampler: DDIM (run with "
                f"eta=1), DDPM or Euler-ancestral (e.g. pipe.scheduler = DDIMScheduler.from_config(...))"
            )
        self.name = name or card.get("name") or str(getattr(pipe, "name_or_path", "") or type(pipe).__name__)
        self._embeddings: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ prompts
    @property
    def max_tokens(self) -> int:
        """The tokenizer's limit (start and end tokens included)."""
        return int(self.pipe.tokenizer.model_max_length)

    def check(self, prompts, name: str = "prompts") -> list[str]:
        """:func:`check_prompts` with this model's tokenizer."""
        return check_prompts(prompts, name, self.max_tokens, self.pipe.tokenizer)

    @torch.no_grad()
    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompt embeddings ``(len(prompts), seq_len, dim)`` from the pipeline's ``encode_prompt``
        (each distinct prompt encoded once and cached)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._embeddings]
        if missing:
            encoded = self.pipe.encode_prompt(missing, self.device, 1, False)[0]
            self._embeddings.update(zip(missing, encoded.to("cpu"), strict=True))
        return torch.stack([self._embeddings[p] for p in prompts])

    def null_embedding(self) -> torch.Tensor:
        """``(1, seq_len, dim)`` embedding of :data:`NULL_PROMPT`, the unconditional branch."""
        return self.embed([NULL_PROMPT])

    # ------------------------------------------------------------------ sampling
    @property
    def device(self) -> torch.device:
        return next(self.pipe.unet.parameters()).device

    def process(self, prompts: str | Sequence[str], guidance_scale: float | None = None):
        """A :class:`~critwin.adapters.diffusers.DiffusersProcess` conditioned on ``prompts``: one prompt
        for every sample, or one per sample (a list as long as the batches it will run)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        # Deferred: the adapter imports diffusers (seconds); the CLI checks prompts files before that.
        from critwin.adapters.diffusers import from_pipeline

        scale = self.guidance_scale if guidance_scale is None else _guidance(guidance_scale)
        guided = scale > 1.0
        return from_pipeline(
            self.pipe,
            self.num_inference_steps,
            scale,
            prompt_embeds=self.embed(prompts),
            negative_prompt_embeds=self.null_embedding() if guided else None,
            step_kwargs=self.step_kwargs,
        )

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] ``(n, 3, H, W)`` -> scaled VAE latents (posterior mean), as training saw them."""
        vae = self.pipe.vae
        latents = vae.encode(images.to(self.device, dtype=vae.dtype)).latent_dist.mean
        return latents * vae.config.get("scaling_factor", 1.0)

    @contextmanager
    def counting(self) -> Iterator[RowCounter]:
        """Count the UNet rows (network evaluations) of everything run inside the block."""
        counter = RowCounter()

        def count(module, args, kwargs):
            sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
            counter.rows += int(sample.shape[0])

        handle = self.pipe.unet.register_forward_pre_hook(count, with_kwargs=True)
        try:
            yield counter
        finally:
            handle.remove()

    def describe(self) -> dict[str, Any]:
        """The settings recorded with every audit."""
        return {
            "model": self.name,
            "scheduler": type(self.pipe.scheduler).__name__,
            "step_kwargs": dict(self.step_kwargs),
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "null_prompt": NULL_PROMPT,
            "nfe": "UNet rows: a guided step costs 2 per sample, an unguided one 1",
        }
