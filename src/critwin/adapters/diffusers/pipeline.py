"""Processes from whole diffusers pipelines: :func:`from_pipeline`, :class:`PipelineProcess` and
:func:`record_pipeline_trajectory` (the stock ``pipe(...)`` recorded at every grid index).

:func:`from_pipeline` builds the conditioning per kind of model: text (Stable Diffusion), text with SDXL's
added conditioning (pooled embeddings and micro-conditioning time ids), class labels, or none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from critwin._validation import check_model_output, check_positive_int
from critwin.adapters.diffusers.families import FAMILY_GUIDANCE, model_family, null_class, pixart_conditioning
from critwin.adapters.diffusers.flow import dynamic_shift_mu
from critwin.adapters.diffusers.flux import flux_setup
from critwin.adapters.diffusers.guidance import check_guidance, class_count, text_width, vae_scale_factor
from critwin.adapters.diffusers.process import DiffusersProcess, PriorDraw, call_accepts, same_state

__all__ = ["PipelineProcess", "from_pipeline", "record_pipeline_trajectory"]

# What SDXL's ``encode_prompt`` returns, in order.
_EMBED_KEYS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)
# Embedding keywords of the pipelines' ``__call__`` (one row per prompt).
_CALL_EMBEDS = (*_EMBED_KEYS, "prompt_attention_mask", "negative_prompt_attention_mask")
# UNet keyword -> the pipeline's ``__call__`` keyword (the negative one is "negative_" + it).
_CALL_NAMES = {"encoder_hidden_states": "prompt_embeds", "text_embeds": "pooled_prompt_embeds"}


def from_pipeline(
    pipe,
    num_inference_steps: int = 50,
    guidance_scale: float | None = None,
    *,
    prompt: str | list[str] | None = None,
    negative_prompt: str | list[str] | None = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    pooled_prompt_embeds: torch.Tensor | None = None,
    negative_pooled_prompt_embeds: torch.Tensor | None = None,
    prompt_attention_mask: torch.Tensor | None = None,
    negative_prompt_attention_mask: torch.Tensor | None = None,
    class_labels=None,
    null_class_label: int | None = None,
    height: int | None = None,
    width: int | None = None,
    scheduler=None,
    guidance_rescale: float = 0.0,
    step_kwargs: Mapping[str, Any] | None = None,
    use_pipeline_call: bool = False,
) -> DiffusersProcess:
    """A :class:`DiffusersProcess` from a diffusers pipeline's components.

    Parameters
    ----------
    pipe : ``DDPMPipeline``/``DDIMPipeline`` (unconditional pixel UNet), ``StableDiffusionPipeline``,
        ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline``, ``PixArtAlphaPipeline``/
        ``PixArtSigmaPipeline``, ``DiTPipeline`` or ``FluxPipeline`` (or any pipeline with a ``unet`` or
        ``transformer``, a ``scheduler`` and optionally a ``vae``).
    num_inference_steps : sampler steps.
    guidance_scale : classifier-free guidance weight; default 7.5 (SD), 5.0 (SDXL), 7.0 (SD3), 4.5
        (PixArt), 4.0 (DiT), 1 for unconditional and class-conditional UNet pipelines. For Flux, the
        distilled guidance embedding (default 3.5; no unconditional branch).
    prompt, negative_prompt : text, encoded with the pipeline's own tokenizer/text encoder.
    prompt_embeds, negative_prompt_embeds : (1 or B, seq_len, cross_attention_dim) precomputed embeddings
        (no tokenizer needed). SDXL, SD3 and Flux also need the pooled embeddings.
    prompt_attention_mask, negative_prompt_attention_mask : (1 or B, seq_len) masks of PixArt's T5
        embeddings (required with ``prompt_embeds`` there).
    class_labels, null_class_label : class-conditional ``UNet2DModel`` or DiT: the label(s) and the
        "null" label used as the unconditional branch (DiT: default ``num_embeds_ada_norm``, its pipeline's
        null class).
    height, width : image size for latent pipelines (default: the UNet's sample size times the VAE factor).
    scheduler : replace the pipeline's scheduler
        (e.g. ``EulerDiscreteScheduler.from_config(pipe.scheduler.config)``).
    use_pipeline_call : return a :class:`PipelineProcess`, whose runs from the prior (cloning trunks,
        base-rate samples) go through the stock ``pipe(...)`` via ``callback_on_step_end``.

    Returns
    -------
    DiffusersProcess whose trajectories match ``pipe(...)`` step by step.

    Examples
    --------
    An untrained toy UNet stands in for your pipeline (a ``StableDiffusionPipeline`` loaded with
    ``from_pretrained`` goes the same way):

    >>> import critwin
    >>> from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    >>> unet = UNet2DModel(
    ...     sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
    ...     down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4,
    ... )
    >>> pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(timestep_spacing="trailing"))
    >>> process = critwin.from_pipeline(pipe, num_inference_steps=10)
    >>> process
    DiffusersProcess(model=DDPMPipeline, scheduler=DDPMScheduler, clock=ou, steps=10, t_max=5.059, t_end=0)
    >>> point = process.locate(1.0)  # the step a request for OU time 1 runs at
    >>> point.index, round(point.t, 3), process.step_label(point.index)
    (6, 0.817, 399)
    """
    unet = denoiser(pipe)
    if unet is None or getattr(pipe, "scheduler", None) is None:
        raise ValueError(f"pipe must have a unet (or transformer) and a scheduler, got {type(pipe).__name__}")
    scheduler = scheduler if scheduler is not None else pipe.scheduler
    config = unet.config
    text_conditional = text_width(unet) is not None
    family = model_family(unet)
    masks = (prompt_attention_mask, negative_prompt_attention_mask)
    if family != "pixart" and any(mask is not None for mask in masks):
        raise ValueError(f"prompt_attention_mask applies to PixArt pipelines only, not {type(pipe).__name__}")
    if family == "flux":
        if negative_prompt is not None or negative_prompt_embeds is not None:
            raise ValueError(
                "Flux's true CFG (a negative prompt) is not supported; use its distilled guidance"
            )
        if step_kwargs or class_labels is not None or guidance_rescale:
            raise ValueError("Flux takes no step_kwargs, class_labels or guidance_rescale")
        text = {
            "prompt": prompt,
            "prompt_embeds": prompt_embeds,
            "pooled_prompt_embeds": pooled_prompt_embeds,
        }
        return _flux_process(
            pipe, scheduler, num_inference_steps, guidance_scale, text, (height, width), use_pipeline_call
        )
    guidance_scale = _effective_guidance(guidance_scale, family)
    text = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "prompt_embeds": prompt_embeds,
        "negative_prompt_embeds": negative_prompt_embeds,
        "pooled_prompt_embeds": pooled_prompt_embeds,
        "negative_pooled_prompt_embeds": negative_pooled_prompt_embeds,
    }
    if text_conditional:
        cond, uncond = _text_conditioning(pipe, text, guidance_scale, family, (height, width), masks)
    elif prompt is not None or prompt_embeds is not None:
        raise ValueError(
            f"{type(pipe).__name__} has no text conditioning; prompt/prompt_embeds cannot be used"
        )
    else:
        cond, uncond = {}, {}
    _add_class_conditioning(pipe, class_labels, null_class_label, guidance_scale, cond, uncond)
    vae = getattr(pipe, "vae", None)
    sample_shape = _latent_shape(config, vae, height, width)
    kwargs = dict(
        vae=vae,
        sample_shape=sample_shape,
        mu=_flow_mu(scheduler, config, sample_shape),
        cond=cond,
        uncond=uncond,
        guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale,
        step_kwargs=step_kwargs,
        model_id=_pipeline_name(pipe),
    )
    if not use_pipeline_call:
        return DiffusersProcess(unet, scheduler, num_inference_steps, **kwargs)
    return _pipeline_process(pipe, scheduler, num_inference_steps, kwargs, height, width)


def _flux_process(pipe, scheduler, num_inference_steps, guidance_scale, text, size, use_pipeline_call):
    """:func:`from_pipeline` for a Flux pipeline (distilled guidance, packed latents: see ``flux``)."""
    guidance = FAMILY_GUIDANCE["flux"] if guidance_scale is None else check_guidance(guidance_scale)
    network, kwargs, size = flux_setup(
        pipe, denoiser(pipe), scheduler, num_inference_steps, guidance, text, *size
    )
    kwargs.update(model_id=_pipeline_name(pipe), guidance_rescale=0.0)
    if not use_pipeline_call:
        return DiffusersProcess(network, scheduler, num_inference_steps, **kwargs)
    return _pipeline_process(pipe, scheduler, num_inference_steps, kwargs, *size, network, guidance)


def denoiser(pipe):
    """The pipeline's denoising network: its ``unet``, else its ``transformer`` (SD3, DiT, PixArt)."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else getattr(pipe, "transformer", None)


def _flow_mu(scheduler, config, sample_shape) -> float | None:
    """``mu`` of a dynamically shifted flow schedule, from the number of latent patches (as SD3/Flux do)."""
    if not scheduler.config.get("use_dynamic_shifting", False):
        return None
    height, width = sample_shape[1:] if sample_shape is not None else (config.sample_size,) * 2
    patch = config.get("patch_size", 1) or 1
    return dynamic_shift_mu(scheduler.config, (height // patch) * (width // patch))


def _effective_guidance(guidance_scale, family: str) -> float:
    """The pipeline default when None; 1 (guidance off) for any weight <= 1, as the SD pipelines do."""
    if guidance_scale is None:
        guidance_scale = FAMILY_GUIDANCE.get(family, 1.0)
    guidance_scale = check_guidance(guidance_scale)
    # Stock SD pipelines switch guidance on only for guidance_scale > 1; mirror that.
    return guidance_scale if guidance_scale > 1.0 else 1.0


def _pipeline_name(pipe) -> str:
    name = getattr(pipe, "name_or_path", None)
    if not name and hasattr(pipe, "config"):
        name = pipe.config.get("_name_or_path", None)
    return name or type(pipe).__name__


def _pixel_size(config, vae, height, width) -> tuple[int, int, int]:
    """Image height and width (default: the UNet's sample size times the VAE factor) and that factor."""
    factor = vae_scale_factor(vae)
    size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
    return height or size * factor, width or size * factor, factor


def _latent_shape(config, vae, height, width) -> tuple[int, int, int] | None:
    """The latent sample shape for an explicit image size (None: the UNet's own sample size)."""
    if vae is None and (height is not None or width is not None):
        # A pixel-space UNet fixes the image size: an ignored height/width would be a silent surprise.
        raise ValueError(
            f"height and width apply to latent (VAE) pipelines only; this pixel-space model generates "
            f"images of size {config.sample_size}, got height={height}, width={width}"
        )
    if vae is None or (height is None and width is None):
        return None
    h, w, factor = _pixel_size(config, vae, height, width)
    if h % factor or w % factor:
        raise ValueError(f"height and width must be multiples of the VAE factor {factor}, got {h}x{w}")
    return (int(config.in_channels), h // factor, w // factor)


# ------------------------------------------------------------------------------- conditioning per kind
@torch.no_grad()  # as the pipelines' __call__: no graph, and the same (inference) attention kernels
def _text_conditioning(pipe, text: dict, guidance_scale: float, family, size, masks) -> tuple[dict, dict]:
    """(cond, uncond) of a text-conditional network: prompt embeddings (SDXL, SD3: plus pooled and added
    conditioning; PixArt: attention masks)."""
    use_cfg = guidance_scale > 1.0
    if text["prompt"] is not None and text["prompt_embeds"] is not None:
        raise ValueError("pass either prompt or prompt_embeds, not both")
    if text["prompt"] is None and text["prompt_embeds"] is None:
        raise ValueError(f"{type(pipe).__name__} is text-conditional: pass prompt= or prompt_embeds=")
    needs_encoding = text["prompt"] is not None or (use_cfg and text["negative_prompt_embeds"] is None)
    if needs_encoding and not (
        getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "tokenizer", None)
    ):
        what = (
            "prompt="
            if text["prompt"] is not None
            else f"guidance_scale={guidance_scale:g} without negative_prompt_embeds"
        )
        raise ValueError(
            f"{what} needs the pipeline's tokenizer and text encoder, which this pipeline lacks; "
            "pass prompt_embeds= and negative_prompt_embeds= instead"
        )
    device = getattr(pipe, "device", torch.device("cpu"))
    if family == "xl":
        return _sdxl_conditioning(pipe, text, needs_encoding, use_cfg, device, size)
    if family == "pixart":
        net = denoiser(pipe)
        h, w, _ = _pixel_size(net.config, getattr(pipe, "vae", None), *size)
        return pixart_conditioning(pipe, net, text, masks, use_cfg, needs_encoding, (h, w))
    if family == "sd3":
        return _sd3_conditioning(pipe, text, needs_encoding, use_cfg, device)
    if needs_encoding:
        text["prompt_embeds"], text["negative_prompt_embeds"] = pipe.encode_prompt(
            text["prompt"],
            device,
            1,
            use_cfg,
            negative_prompt=text["negative_prompt"],
            prompt_embeds=text["prompt_embeds"],
            negative_prompt_embeds=text["negative_prompt_embeds"],
        )
    cond = {"encoder_hidden_states": text["prompt_embeds"]}
    uncond = {"encoder_hidden_states": text["negative_prompt_embeds"]} if use_cfg else {}
    return cond, uncond


def _pooled_embeds(pipe, text: dict, needs_encoding: bool, use_cfg: bool, device, family: str, **extra):
    """Encode the prompt where needed (filling ``text``); return the pooled and negative pooled embeddings."""
    if needs_encoding:
        encoded = pipe.encode_prompt(
            device=device, num_images_per_prompt=1, do_classifier_free_guidance=use_cfg, **extra, **text
        )
        text.update(zip(_EMBED_KEYS, encoded, strict=True))
    pooled, negative_pooled = text["pooled_prompt_embeds"], text["negative_pooled_prompt_embeds"]
    if pooled is None or (use_cfg and negative_pooled is None):
        raise ValueError(
            f"{family} needs pooled_prompt_embeds (and negative_pooled_prompt_embeds for guidance)"
        )
    return pooled, negative_pooled


def _sdxl_conditioning(pipe, text: dict, needs_encoding: bool, use_cfg: bool, device, size):
    """(cond, uncond) of an SDXL UNet: prompt embeddings, pooled embeddings and the time ids."""
    pooled, negative_pooled = _pooled_embeds(pipe, text, needs_encoding, use_cfg, device, "SDXL")
    unet = pipe.unet
    config = unet.config
    h, w, _ = _pixel_size(config, getattr(pipe, "vae", None), *size)
    # SDXL's micro-conditioning: original size + crop top-left + target size (no crop, no resize).
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=text["prompt_embeds"].dtype)
    expected = getattr(getattr(unet, "add_embedding", None), "linear_1", None)
    got = config.addition_time_embed_dim * time_ids.shape[1] + int(pooled.shape[-1])
    if expected is not None and expected.in_features != got:
        raise ValueError(
            f"pooled_prompt_embeds has {pooled.shape[-1]} features; the UNet's added "
            f"embedding expects {expected.in_features - config.addition_time_embed_dim * 6}"
        )
    cond = {"text_embeds": pooled, "time_ids": time_ids, "encoder_hidden_states": text["prompt_embeds"]}
    if not use_cfg:
        return cond, {}
    uncond = {
        "text_embeds": negative_pooled,
        "time_ids": time_ids,
        "encoder_hidden_states": text["negative_prompt_embeds"],
    }
    return cond, uncond


def _sd3_conditioning(pipe, text: dict, needs_encoding: bool, use_cfg: bool, device):
    """(cond, uncond) of an SD3 transformer: prompt embeddings and pooled projections."""
    pooled, negative_pooled = _pooled_embeds(
        pipe, text, needs_encoding, use_cfg, device, "SD3", prompt_2=None, prompt_3=None
    )
    cond = {"encoder_hidden_states": text["prompt_embeds"], "text_embeds": pooled}
    if not use_cfg:
        return cond, {}
    return cond, {"encoder_hidden_states": text["negative_prompt_embeds"], "text_embeds": negative_pooled}


def _add_class_conditioning(pipe, class_labels, null_class_label, guidance_scale, cond, uncond) -> None:
    """Class labels (and the null label for guidance) of a class-conditional UNet or DiT, added to
    cond/uncond."""
    net = denoiser(pipe)
    if class_count(net) is None:
        if guidance_scale > 1.0 and text_width(denoiser(pipe)) is None:
            raise ValueError(
                f"guidance_scale={guidance_scale:g} needs a conditional model; "
                f"{type(pipe).__name__} is unconditional"
            )
        return
    if class_labels is None:
        raise ValueError("this model is class-conditional: pass class_labels=")
    cond["class_labels"] = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
    null_class_label = null_class(net, null_class_label)
    if guidance_scale > 1.0:
        if null_class_label is None:
            raise ValueError(
                f"guidance_scale={guidance_scale:g} needs null_class_label= (the unconditional label)"
            )
        uncond["class_labels"] = torch.as_tensor([null_class_label], dtype=torch.long)


def _pipeline_process(
    pipe, scheduler, num_inference_steps, kwargs, height, width, network=None, distilled=None
) -> PipelineProcess:
    """A :class:`PipelineProcess` (``kwargs``: the :class:`DiffusersProcess` keywords from_pipeline built;
    ``network``: the network to call, default the pipeline's; ``distilled``: Flux's guidance_scale)."""
    if scheduler is not pipe.scheduler:
        raise ValueError(
            "use_pipeline_call=True runs the pipeline's own scheduler; set pipe.scheduler instead"
        )
    if kwargs.get("step_kwargs"):
        raise ValueError("use_pipeline_call=True cannot pass step_kwargs through the stock pipeline call")
    call_kwargs = _pipeline_call_kwargs(
        kwargs["cond"],
        kwargs.get("uncond", {}),
        kwargs.get("guidance_scale", 1.0) if distilled is None else distilled,
        kwargs["guidance_rescale"],
        height,
        width,
    )
    if not call_accepts(type(pipe).__call__, "guidance_rescale"):
        if call_kwargs.pop("guidance_rescale"):
            raise ValueError(f"{type(pipe).__name__} has no guidance_rescale; use guidance_rescale=0")
    network = denoiser(pipe) if network is None else network
    return PipelineProcess(pipe, call_kwargs, network, scheduler, num_inference_steps, **kwargs)


def _pipeline_call_kwargs(cond, uncond, guidance_scale, guidance_rescale, height, width) -> dict[str, Any]:
    """Keywords for the stock ``pipe(...)`` that reproduce the process's conditioning."""
    call_kwargs: dict[str, Any] = {"guidance_scale": guidance_scale, "guidance_rescale": guidance_rescale}
    for key, name in _CALL_NAMES.items():
        if key in cond:
            call_kwargs[name] = cond[key]
        if key in uncond:
            call_kwargs[f"negative_{name}"] = uncond[key]
    if height is not None or width is not None:
        call_kwargs.update(height=height, width=width)
    return call_kwargs


def _embeds_per_sample(call_kwargs: dict[str, Any], n: int) -> dict[str, Any]:
    """The call keywords with one-row embeddings repeated to ``n`` rows: SD3 and Flux do not repeat given
    embeddings per image (their ``num_images_per_prompt`` repeats only what they encode themselves)."""
    out = dict(call_kwargs)
    for key in _CALL_EMBEDS:
        value = out.get(key)
        if isinstance(value, torch.Tensor) and value.shape[0] == 1 and n > 1:
            out[key] = value.repeat(n, *([1] * (value.ndim - 1)))
    return out


def _check_pipe_call(pipe, consequence: str) -> None:
    """``pipe.__call__`` must accept ``callback_on_step_end`` and ``latents``."""
    call = type(pipe).__call__ if callable(pipe) else None
    for name in ("callback_on_step_end", "latents"):
        if call is None or not call_accepts(call, name):
            raise ValueError(f"{type(pipe).__name__}.__call__ does not accept {name}=; {consequence}")


# ------------------------------------------------------------------------------------ the stock call
class PipelineProcess(DiffusersProcess):
    """A :class:`DiffusersProcess` whose runs from its own prior draws go through the stock ``pipe(...)``.

    A run that starts at grid index 0 from the state :meth:`prior` last returned (or an equal copy), with no
    callback and no per-run conditioning, calls the pipeline's unmodified ``__call__``
    (``output_type="latent"``) and stops it after step ``stop - 1`` from ``callback_on_step_end`` (the
    pipeline's ``interrupt`` flag). Everything else — continuations from a mid-grid state (cloning forks),
    callbacks — runs the adapter's own loop, which reproduces the pipeline step for step (tested byte for
    byte). Build it with ``from_pipeline(pipe, ..., use_pipeline_call=True)``.

    Attributes
    ----------
    pipeline_calls : number of runs delegated to ``pipe(...)``.
    """

    def __init__(self, pipe, call_kwargs: dict[str, Any], *args, **kwargs):
        _check_pipe_call(pipe, "use from_pipeline(pipe)")
        super().__init__(*args, **kwargs)
        self.pipe = pipe
        self.call_kwargs = dict(call_kwargs)
        self.pipeline_calls = 0
        # The latest prior draw (a copy): a run from an equal state goes through the stock call.
        self._prior_draw: PriorDraw | None = None

    def prior(
        self, n: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        draw = self._draw_prior(n, generator, device, dtype)
        self._prior_draw = PriorDraw(draw.state.clone(), draw.noise)
        return draw.state

    def _delegate_run(self, x, start, stop, generator, callback, cond) -> torch.Tensor | None:
        """The stock ``pipe(...)`` for a plain run of this process's own latest prior draw."""
        draw, self._prior_draw = self._prior_draw, None
        if start != 0 or callback is not None or cond or draw is None or not same_state(draw.state, x):
            return None
        start, stop = self.grid.check_span(start, stop)
        if stop == 0:
            return x

        def interrupt_at_stop(pipeline, step, timestep, tensors):
            # Called after step ``step``: the latents are now at grid index step + 1.
            if step + 1 >= stop:
                pipeline._interrupt = True
            return {}

        kwargs = _embeds_per_sample(self.call_kwargs, x.shape[0])
        output = self.pipe(
            num_inference_steps=self.num_inference_steps,
            latents=draw.noise.to(self.device),
            generator=generator,
            callback_on_step_end=interrupt_at_stop,
            callback_on_step_end_tensor_inputs=["latents"],
            output_type="latent",
            **kwargs,
        )
        self.pipeline_calls += 1
        self.nfe += int(x.shape[0]) * stop
        # The pipeline's scheduler holds the multistep history, not ours: a continuation starts afresh.
        self._continuation = None
        latents = output.images if hasattr(output, "images") else output[0]
        return check_model_output(
            latents,
            model=f"pipeline {self.model_id!r}",
            where=f"a run of grid indices 0..{stop}",
            shape=x.shape,
        )


def record_pipeline_trajectory(
    pipe,
    process: DiffusersProcess,
    n: int = 1,
    generator: torch.Generator | None = None,
    **call_kwargs,
) -> tuple[torch.Tensor, Any]:
    """Run the stock ``pipe(...)`` and record its latents at every grid index via ``callback_on_step_end``.

    Parameters
    ----------
    pipe : a pipeline whose ``__call__`` accepts ``latents``, ``callback_on_step_end`` and
        ``output_type`` (Stable Diffusion, SDXL, ...); its scheduler must match ``process``'s.
    process : the :class:`DiffusersProcess` the trajectory is continued with (e.g. ``from_pipeline(pipe)``).
    n : number of samples: ``num_images_per_prompt`` of a ``prompt`` string; one-row embeddings are
        repeated to ``n`` rows (SD3 and Flux do not repeat given embeddings themselves).
    generator : drawn for the initial noise (as ``process.prior`` does) and passed to the pipeline.
    **call_kwargs : everything else for ``pipe(...)`` (``prompt_embeds``, ``guidance_scale``, ...);
        ``num_inference_steps`` is taken from ``process``.

    Returns
    -------
    states : (L+1, n, *sample_shape) the pipeline's latents at grid indices 0..L (scheduler space), so
        ``process.run(states[k], start=k)`` continues the stock trajectory from grid index ``k``.
    output : whatever ``pipe(...)`` returned (``output_type`` defaults to ``"latent"``).
    """
    n = check_positive_int(n, "n")
    _check_pipe_call(pipe, "it cannot be recorded")
    for name in (
        "latents",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
        "num_inference_steps",
    ):
        if name in call_kwargs:
            raise ValueError(f"record_pipeline_trajectory sets {name} itself; do not pass it")
    device = getattr(pipe, "device", torch.device("cpu"))
    dtype = getattr(denoiser(pipe), "dtype", torch.float32)
    noise = randn_tensor((n, *process.sample_shape), generator=generator, device=device, dtype=dtype)
    states: list[torch.Tensor] = []

    def on_step_end(pipeline, step, timestep, tensors):
        # Called after step ``step``: these latents are the state at grid index step + 1.
        states.append(tensors["latents"].detach().clone())
        return {}

    if "prompt" in call_kwargs:
        call_kwargs.setdefault("num_images_per_prompt", n)
    elif "num_images_per_prompt" not in call_kwargs:
        call_kwargs = _embeds_per_sample(call_kwargs, n)
    call_kwargs.setdefault("output_type", "latent")
    output = pipe(
        num_inference_steps=process.num_inference_steps,
        latents=noise,
        generator=generator,
        callback_on_step_end=on_step_end,
        callback_on_step_end_tensor_inputs=["latents"],
        **call_kwargs,
    )
    pipe_steps = pipe.scheduler.timesteps.detach().cpu()
    if pipe_steps.shape != process.timesteps.shape or not torch.equal(
        pipe_steps.to(process.timesteps.dtype), process.timesteps
    ):
        raise ValueError(
            "the pipeline's scheduler timesteps differ from process's; build process with from_pipeline(pipe)"
        )
    # The pipeline multiplies user latents by init_noise_sigma before its first step (prepare_latents).
    first = noise * getattr(pipe.scheduler, "init_noise_sigma", 1.0)
    return torch.stack([first, *states]), output
