""":class:`DiffusersProcess`: a diffusers UNet and scheduler as a critwin :class:`ReverseProcess`."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from diffusers.utils.torch_utils import randn_tensor

from critwin._files import fingerprint
from critwin._validation import (
    call_model,
    check_model_output,
    check_positive_int,
    check_sample_shape,
    check_time,
)
from critwin.adapters.diffusers.flow import flow_grid_times, flow_state, flow_state_scale, flow_time_s
from critwin.adapters.diffusers.guidance import (
    UNCOND_PREFIX,
    GuidedInputs,
    check_embeds,
    check_guidance,
    combine_guidance,
    double_batch,
    normalise_cond,
    prepare_guidance,
    split_cond,
    vae_decode,
    vae_encode,
)
from critwin.adapters.diffusers.schedule import (
    check_scheduler_config,
    denoise_timesteps,
    grid_times,
    inference_timesteps,
    predicted_x0,
    scheduler_kind,
    train_schedule,
    warn_terminal_snr,
)
from critwin.clock import alpha_bar as ou_alpha_bar
from critwin.clock import alpha_sigma, snr, ve_sigma
from critwin.experiments.process import Callback, ReverseProcess, check_prior_memory

__all__ = ["DiffusersProcess", "PriorDraw", "same_state"]

_STATE_SPACES = {"vp": "ou", "sigma": "sigma-scaled (x0 + sigma z)", "flow": "flow ((1 - s) x0 + s z)"}

# Scheduler config entries that describe() records.
_DESCRIBED_CONFIG = (
    "num_train_timesteps",
    "beta_schedule",
    "timestep_spacing",
    "steps_offset",
    "prediction_type",
    "rescale_betas_zero_snr",
    "set_alpha_to_one",
    "final_sigmas_type",
    "algorithm_type",
    "solver_order",
    "use_karras_sigmas",
    "interpolation_type",
    "shift",
    "use_dynamic_shifting",
    "base_shift",
    "max_shift",
)


def same_state(kept: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``x`` holds the values of the state ``kept`` (same shape, dtype and numbers; any device).

    How a process recognises a state it produced (a run's output, a prior draw) by value, never by
    the tensor object: an equal copy is the same state.

    Examples
    --------
    >>> import torch
    >>> state = torch.arange(4.0)
    >>> same_state(state, state.clone()), same_state(state, state + 1)
    (True, False)
    """
    if not isinstance(x, torch.Tensor) or x.shape != kept.shape or x.dtype != kept.dtype:
        return False
    return bool(torch.equal(x.to(kept.device), kept))


class PriorDraw(NamedTuple):
    """A prior draw as the stock pipeline makes it: ``state = noise * init_noise_sigma``."""

    state: torch.Tensor
    noise: torch.Tensor


class _Continuation(NamedTuple):
    """What the scheduler's history (multistep solvers) belongs to: the state a run returned (a copy)
    and the grid index it stopped at. A run from an equal state at that index continues it."""

    index: int
    state: torch.Tensor

    def continued_by(self, x: torch.Tensor, start: int) -> bool:
        return self.index == start and same_state(self.state, x)


def call_accepts(fn, name: str, explicit: bool = False) -> bool:
    """Whether ``fn`` takes a keyword ``name`` (or, unless ``explicit``, any keyword)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or not explicit and any(p.kind is p.VAR_KEYWORD for p in params.values())


class DiffusersProcess(ReverseProcess):
    """A diffusers UNet and scheduler on the scheduler's own grid of timesteps.

    Parameters
    ----------
    unet : a ``UNet2DModel``, ``UNet2DConditionModel`` or any module called as ``unet(x, timestep, **cond)``
        returning a tensor, a tuple or an object with ``.sample``.
    scheduler : a diffusers scheduler of a class in :data:`SUPPORTED_SCHEDULERS` (copied; the caller's
        object is never mutated).
    num_inference_steps : number of sampler steps ``L``.
    vae : optional ``AutoencoderKL`` for latent models: :meth:`encode` maps images in [-1, 1] to scaled
        latents, :meth:`decode` maps latents back.
    sample_shape : shape of one model-space sample; default ``(in_channels, sample_size, sample_size)``.
    cond, uncond : default conditioning for the conditional and unconditional branch: UNet keywords
        (``encoder_hidden_states``, ``class_labels``, ``text_embeds``, ``time_ids``, ...) or the pipeline
        names ``prompt_embeds``, ``pooled_prompt_embeds``, ``add_time_ids``. Tensors have the batch first
        (size 1 or the batch size).
    guidance_scale : classifier-free guidance weight ``g``: output ``uncond + g (cond - uncond)``; ``g = 1``
        uses the conditional branch only (no unconditional pass), any other ``g >= 0`` needs ``uncond``.
    guidance_rescale : the rescaling of Lin et al. (2023) as in Stable Diffusion pipelines (0 = off).
    step_kwargs : extra keywords for ``scheduler.step`` (``{"eta": 1.0}`` for DDIM, ``s_churn`` for Euler).
    model_id : name stored in :meth:`describe`.
    mu : dynamic-shift parameter of a flow-matching schedule (``use_dynamic_shifting=True``; required there).
    sigmas : explicit flow-matching sigmas for ``set_timesteps`` (Flux's ``linspace(1, 1/L, L)``).
    latent_layout : how the network's states relate to VAE latents: an object with ``pack(latents)`` and
        ``unpack(states)`` (Flux's 2x2 patches, :class:`~critwin.adapters.diffusers.flux.PackedLatents`);
        None: the states are the latents.

    Notes
    -----
    A learned-variance network (``2C`` output channels for ``C`` input channels, DiT and PixArt) steps the
    scheduler with its first ``C`` channels, as the DiT and PixArt pipelines do, unless the scheduler reads
    the variance itself (DDPM's ``variance_type="learned"``/``"learned_range"``).

    Multistep solvers (DPM-Solver++, UniPC) keep a history of model outputs; a run that starts at grid index
    ``i > 0`` restarts that history at low order (as diffusers' img2img does), so it is not the continuation
    of an uninterrupted run, unless it starts where the previous run of this process stopped, from a state
    equal to the one that run returned (compared by value: a copy continues too); then the history is kept
    and split runs equal one run. Single-step schedulers (DDPM, DDIM, Euler, Euler-ancestral) continue
    either way.

    Examples
    --------
    An untrained toy UNet with diffusers' DDPM scheduler (a trained one goes the same way):

    >>> import torch, critwin
    >>> from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    >>> unet = UNet2DModel(  # an untrained toy UNet
    ...     sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
    ...     down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4,
    ... )
    >>> process = critwin.DiffusersProcess(unet, DDPMScheduler(timestep_spacing="trailing"), 10)
    >>> process
    DiffusersProcess(model=UNet2DModel, scheduler=DDPMScheduler, clock=ou, steps=10, t_max=5.059, t_end=0)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = process.run(process.prior(2, generator=g), generator=g)
    >>> tuple(x.shape), process.nfe  # 10 UNet evaluations per sample
    ((2, 1, 8, 8), 20)
    """

    continuous = False

    def __init__(
        self,
        unet,
        scheduler,
        num_inference_steps: int,
        *,
        vae=None,
        sample_shape: tuple[int, ...] | None = None,
        cond: Mapping[str, Any] | None = None,
        uncond: Mapping[str, Any] | None = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        step_kwargs: Mapping[str, Any] | None = None,
        model_id: str | None = None,
        vae_batch_size: int = 16,
        mu: float | None = None,
        sigmas=None,
        latent_layout=None,
    ):
        self.kind = scheduler_kind(scheduler)
        self.num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps")
        self.unet = unet
        self.vae = vae
        self.vae_batch_size = check_positive_int(vae_batch_size, "vae_batch_size")
        self.scheduler = copy.deepcopy(scheduler)
        self.prediction_type = check_scheduler_config(
            self.scheduler.config, self.num_inference_steps, self.kind
        )
        self._set_kwargs = self._timestep_kwargs(mu, sigmas)
        self.latent_layout = latent_layout
        # Schedulers that read a learned variance get both halves of a 2C-channel output; others the first.
        self._drops_variance = self.scheduler.config.get("variance_type") not in ("learned", "learned_range")
        self._init_guidance(cond, uncond, guidance_scale, guidance_rescale, step_kwargs)
        self.model_id = model_id or self._model_id()
        self._unet_return_dict = call_accepts(getattr(unet, "forward", unet), "return_dict")
        # Transformers (SD3, DiT, Flux) take hidden_states= and a per-sample timestep, not UNet positionals.
        self._keyword_call = call_accepts(getattr(unet, "forward", unet), "hidden_states", explicit=True)
        self._step_generator = call_accepts(self.scheduler.step, "generator")
        self.sample_shape = (
            check_sample_shape(sample_shape) if sample_shape is not None else self._default_shape()
        )

        self._timesteps = inference_timesteps(self.scheduler, self.num_inference_steps, **self._set_kwargs)
        if self.kind == "flow":
            self._alphas_cumprod = None
            self._times, self._landing = flow_grid_times(self.scheduler)
        else:
            self._alphas_cumprod = self.scheduler.alphas_cumprod.detach().cpu().double()
            self._times, self._landing = grid_times(self.scheduler, self._timesteps, self._alphas_cumprod)
        self._train_times = None
        self._weights_fingerprint: str | None = None
        # Where the last run stopped and the state it returned: a run that starts there from an equal
        # state keeps the scheduler's history (multistep solvers), so split runs equal one run.
        self._continuation: _Continuation | None = None
        self.nfe = 0
        warn_terminal_snr(self._times[0].item(), self.step_label(0), stacklevel=2)

    def _timestep_kwargs(self, mu, sigmas) -> dict[str, Any]:
        """``set_timesteps`` keywords: ``mu`` for dynamically shifted flow schedules (required there) and
        explicit flow ``sigmas``."""
        kwargs = {} if sigmas is None else {"sigmas": self._check_sigmas(sigmas)}
        dynamic = bool(self.scheduler.config.get("use_dynamic_shifting", False))
        if mu is None:
            if dynamic:
                raise ValueError(
                    "mu is required: the scheduler uses dynamic shifting (use_dynamic_shifting=True); "
                    "from_pipeline computes it from the image size as the pipeline does"
                )
            return kwargs
        if not dynamic:
            raise ValueError("mu applies only to schedulers with use_dynamic_shifting=True")
        mu = float(mu)
        if not math.isfinite(mu):
            raise ValueError(f"mu must be a finite number, got {mu!r}")
        return {**kwargs, "mu": mu}

    def _check_sigmas(self, sigmas) -> list[float]:
        """Explicit flow sigmas: ``num_inference_steps`` decreasing values in (0, 1]."""
        if self.kind != "flow":
            raise ValueError("sigmas applies to flow-matching schedulers only")
        values = [float(v) for v in sigmas]
        ok = all(0.0 < v <= 1.0 for v in values) and all(
            a > b for a, b in zip(values[:-1], values[1:], strict=True)
        )
        if len(values) != self.num_inference_steps or not ok:
            raise ValueError(
                f"sigmas must be {self.num_inference_steps} (num_inference_steps) decreasing values in (0, 1]"
            )
        return values

    def _init_guidance(self, cond, uncond, guidance_scale, guidance_rescale, step_kwargs) -> None:
        self.guidance_scale = check_guidance(guidance_scale)
        self.guidance_rescale = float(guidance_rescale)
        if not 0.0 <= self.guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must lie in [0, 1], got {guidance_rescale}")
        self.step_kwargs = dict(step_kwargs or {})
        if "generator" in self.step_kwargs:
            raise ValueError("step_kwargs must not contain 'generator'; pass generator= to run()")
        self.cond = normalise_cond(cond or {}, "cond")
        self.uncond = normalise_cond(uncond or {}, "uncond")
        if any(k.startswith(UNCOND_PREFIX) for k in self.cond):
            raise ValueError("cond must not contain unconditional entries; pass them as uncond=")
        for branch, values in (("cond", self.cond), ("uncond", self.uncond)):
            check_embeds(self.unet, values.get("encoder_hidden_states"), branch)

    def _model_id(self) -> str:
        config = getattr(self.unet, "config", None)
        name = config.get("_name_or_path", "") if hasattr(config, "get") else ""
        return name or type(self.unet).__name__

    def _default_shape(self) -> tuple[int, ...]:
        config = getattr(self.unet, "config", None)
        if config is None or "in_channels" not in config or "sample_size" not in config:
            raise ValueError(
                "sample_shape is required when the unet has no config with in_channels/sample_size"
            )
        size = config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return check_sample_shape((config.in_channels, height, width), "the unet config's sample shape")

    # ------------------------------------------------------------------ grid and clock
    @property
    def times(self) -> torch.Tensor:
        return self._times

    @property
    def timesteps(self) -> torch.Tensor:
        """(L,) the scheduler's timesteps (what the UNet is told at each grid index)."""
        return self._timesteps

    def step_label(self, index: int) -> int | float | None:
        if not 0 <= index < self.num_inference_steps:
            return None
        value = self._timesteps[index].item()
        return int(value) if float(value).is_integer() else float(value)

    def realise(self, t) -> dict[str, Any]:
        """The grid point used for OU time ``t``: index, timestep, alpha_bar and realised OU time."""
        requested = check_time(t, "t")
        index, realised = self.locate(requested)
        return {
            "requested_t": requested,
            "index": index,
            "timestep": self.step_label(index),
            "alpha_bar": ou_alpha_bar(realised),
            "ou_time": realised,
        }

    def schedule_report(self) -> list[dict[str, Any]]:
        """One row per grid index: timestep, alpha_bar, VE sigma and OU time; ``lands_at`` for steps."""
        rows = []
        for i in range(self.num_inference_steps + 1):
            t = self._times[i].item()
            rows.append(
                {
                    "index": i,
                    "timestep": self.step_label(i),
                    "alpha_bar": ou_alpha_bar(t),
                    "sigma": ve_sigma(t),
                    "ou_time": t,
                    "lands_at": self._landing[i].item() if i < self.num_inference_steps else None,
                }
            )
        return rows

    @property
    def terminal_snr(self) -> float:
        """SNR of the first (noisiest) grid point; 0 only for zero-terminal-SNR schedules."""
        return snr(self._times[0].item())

    def _scale(self, index: int) -> float:
        """Scheduler-space state / OU state at grid index ``index`` (1 for VP schedulers)."""
        if self.kind == "vp":
            return 1.0
        t = self._times[index].item()
        if self.kind == "flow":
            return float(flow_state_scale(flow_time_s(t)))
        return math.exp(t)  # sqrt(1 + sigma^2) = e^{t}

    def to_ou(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Scheduler-space state at grid index ``index`` -> OU state."""
        index = self.grid.check_index(index)
        return x if self.kind == "vp" else x / self._scale(index)

    def from_ou(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """OU state at grid index ``index`` -> scheduler-space state."""
        index = self.grid.check_index(index)
        return x if self.kind == "vp" else x * self._scale(index)

    # ------------------------------------------------------------------ scheduler state
    @property
    def device(self) -> torch.device:
        """Device of the UNet's parameters (where :meth:`run` computes)."""
        try:
            return next(self.unet.parameters()).device
        except (AttributeError, StopIteration):
            return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        try:
            return next(self.unet.parameters()).dtype
        except (AttributeError, StopIteration):
            return torch.float32

    def _fresh_scheduler(self, begin: int, device) -> Any:
        self._continuation = None
        sched = self.scheduler
        sched.set_timesteps(self.num_inference_steps, device=device, **self._set_kwargs)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
        return sched

    def prior(
        self, n: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        """``n`` states at ``times[0]`` as the stock pipeline draws them: ``randn * init_noise_sigma``."""
        return self._draw_prior(n, generator, device, dtype).state

    def _draw_prior(self, n, generator, device, dtype) -> PriorDraw:
        n = check_positive_int(n, "n")
        check_prior_memory(n, self.sample_shape)
        sched = self._fresh_scheduler(0, device)
        noise = randn_tensor(
            (n, *self.sample_shape),
            generator=generator,
            device=torch.device(device or "cpu"),
            dtype=dtype or torch.float32,
        )
        # Flow schedulers have no init_noise_sigma: their prior is N(0, I) at s = 1.
        return PriorDraw(noise * getattr(sched, "init_noise_sigma", 1.0), noise)

    def add_noise(
        self, x0: torch.Tensor, index: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Noise model-space ``x0`` (B, *sample_shape) to exactly the level of grid index ``index``.

        Uses ``scheduler.add_noise`` with the scheduler started at ``index``; the index ``L`` (end of
        sampling) returns ``x0`` noised to ``times[L]`` (``x0`` itself when that is 0).
        """
        index = self.grid.check_index(index)
        self._check_sample(x0, "x0")
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if index == self.num_inference_steps:
            t = self._times[index].item()
            if t == 0.0:
                return x0.clone()
            a, s = alpha_sigma(t)
            return self.from_ou(a * x0 + s * noise, index)
        sched = self._fresh_scheduler(index, x0.device)
        timesteps = sched.timesteps[index : index + 1].repeat(x0.shape[0])
        if self.kind == "flow":
            return sched.scale_noise(x0, timesteps, noise)
        return sched.add_noise(x0, noise, timesteps)

    # ------------------------------------------------------------------ conditioning and the UNet
    def _check_sample(self, x: torch.Tensor, name: str) -> None:
        shape = ", ".join(map(str, self.sample_shape))
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a tensor of shape (batch, {shape})")
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"{name} must have shape (batch, {shape}), got {tuple(x.shape)}")

    def _guided_inputs(self, cond, batch: int, device) -> GuidedInputs:
        positive, negative, scale = split_cond(self.cond, self.uncond, cond, self.guidance_scale)
        return prepare_guidance(self.unet, positive, negative, scale, batch, device, self.dtype)

    def _unet(self, model_input: torch.Tensor, timestep, kwargs: dict) -> torch.Tensor:
        if model_input.dtype != self.dtype:
            model_input = model_input.to(self.dtype)
        # The network's own exception is a ModelError naming it and the step (the original its cause).
        model, where = f"network {self.model_id!r}", lambda: self._step_text(timestep)
        if self._keyword_call:
            if timestep.ndim == 0:
                timestep = timestep.expand(model_input.shape[0])  # as the SD3/DiT pipelines broadcast
            kwargs = {"hidden_states": model_input, "timestep": timestep, **kwargs}
            if self._unet_return_dict:
                kwargs["return_dict"] = False
            out = call_model(self.unet, model=model, where=where, **kwargs)
        elif self._unet_return_dict:
            out = call_model(
                self.unet, model_input, timestep, model=model, where=where, **kwargs, return_dict=False
            )
        else:
            out = call_model(self.unet, model_input, timestep, model=model, where=where, **kwargs)
        if isinstance(out, tuple) and out:
            out = out[0]
        out = getattr(out, "sample", out)
        return self._check_output(out, model_input, timestep)

    def _check_output(self, out, model_input: torch.Tensor, timestep) -> torch.Tensor:
        """The network's output where it enters the engine (:func:`check_model_output`): the input's
        shape (2C channels for a learned-variance network), a dtype as precise as the input's, finite."""
        shape = tuple(model_input.shape)
        if isinstance(out, torch.Tensor) and out.ndim > 1 and out.shape[1] == 2 * shape[1]:
            shape = (shape[0], 2 * shape[1], *shape[2:])
        return check_model_output(
            out,
            model=f"network {self.model_id!r}",
            where=lambda: self._step_text(timestep),
            shape=shape,
            dtype=model_input.dtype,
            device=model_input.device,
        )

    def _step_text(self, timestep) -> str:
        """``"timestep 781, grid index 3"`` (the grid index when the timestep is one of the grid's)."""
        value = timestep.flatten()[0].item() if isinstance(timestep, torch.Tensor) else timestep
        text = f"timestep {value:g}" if isinstance(value, (int, float)) else f"timestep {value!r}"
        match = torch.nonzero(self._timesteps.double().cpu() == float(value)).flatten()
        return text + (f", grid index {int(match[0])}" if match.numel() else "")

    def _guided_unet(self, x, timestep, inputs: GuidedInputs, scale_input=None) -> torch.Tensor:
        """The (guided) network output, computed exactly as the Stable Diffusion pipelines do.

        ``scale_input(model_input, timestep)`` is the scheduler's ``scale_model_input`` (sampling runs).
        """
        if inputs.guided:
            x, timestep = double_batch(x, timestep)
        model_input = x if scale_input is None else scale_input(x, timestep)
        out = self._unet(model_input, timestep, inputs.kwargs)
        return combine_guidance(out, inputs.scale, self.guidance_rescale) if inputs.guided else out

    # ------------------------------------------------------------------ sampling
    def run(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        cond: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Scheduler steps ``start .. stop-1`` from the scheduler-space state ``x`` at grid index ``start``.

        ``callback(i, times[i], x_i, x0_hat_i)`` is called before every step with the state at grid index
        ``i`` and the x̂₀ of the guided model output. ``cond`` overrides the default conditioning; keys with
        the prefix ``uncond_`` (or ``negative_prompt_embeds``) go to the unconditional branch, and
        ``guidance_scale`` sets the guidance weight.
        """
        delegated = self._delegate_run(x, start, stop, generator, callback, cond)
        if delegated is not None:
            return delegated
        start, stop = self.grid.check_span(start, stop)
        self._check_sample(x, "x")
        resume = self._continuation is not None and self._continuation.continued_by(x, start)
        # Engines may hand over CPU states (e.g. a prior drawn on the CPU); compute where the UNet lives.
        x = x.to(self.device)
        inputs = self._guided_inputs(cond, x.shape[0], x.device)
        sched = self.scheduler if resume else self._fresh_scheduler(start, x.device)
        scale_input = getattr(sched, "scale_model_input", None)  # flow schedulers have none
        step_kwargs = dict(self.step_kwargs)
        if self._step_generator:
            step_kwargs["generator"] = generator
        with torch.no_grad():
            for i in range(start, stop):
                timestep = sched.timesteps[i]
                out = self._variance_dropped(self._guided_unet(x, timestep, inputs, scale_input), x)
                if callback is not None:
                    self._report_step(callback, i, x, out)
                x = sched.step(out, timestep, x, **step_kwargs, return_dict=False)[0]
                self.nfe += int(x.shape[0])
        self._continuation = _Continuation(stop, x.detach().clone())
        return x

    def _delegate_run(self, x, start, stop, generator, callback, cond) -> torch.Tensor | None:
        """Hook for subclasses that run some calls another way (:class:`PipelineProcess`); None: not."""
        return None

    def _variance_dropped(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The mean half of a learned-variance output, unless the scheduler reads the variance."""
        channels = x.shape[1]
        if self._drops_variance and out.ndim > 1 and out.shape[1] == 2 * channels:
            return out[:, :channels]
        return out

    def _report_step(self, callback: Callback, i: int, x: torch.Tensor, out: torch.Tensor) -> None:
        t = self._times[i].item()
        # Learned-variance UNets emit 2C channels: the first C are the mean prediction.
        x0_hat = predicted_x0(out[:, : x.shape[1]], self.to_ou(x, i), t, self.prediction_type)
        callback(i, t, x, x0_hat)

    def denoise(self, x: torch.Tensor, t, timestep_mode: str = "nearest", **cond) -> torch.Tensor:
        """x̂₀ from the OU state ``x`` at OU time ``t`` (for critwin's own samplers).

        Parameters
        ----------
        x : (B, *sample_shape) or (B, prod(sample_shape)) OU state.
        t : OU time (float or (B,) tensor).
        timestep_mode : ``"nearest"`` feeds the nearest training timestep and reads x̂₀ at its OU time;
            ``"interpolate"`` feeds the fractional timestep whose log-sigma matches ``t`` (diffusers UNets
            embed real-valued timesteps) and reads x̂₀ at ``t`` itself.
        **cond : conditioning as in :meth:`run`.

        Returns
        -------
        x̂₀ with the shape of ``x``.
        """
        flat = x.ndim == 2 and len(self.sample_shape) != 1
        xs = x.reshape(x.shape[0], *self.sample_shape) if flat else x
        self._check_sample(xs, "x")
        tt = torch.as_tensor(t, dtype=torch.float64).flatten().cpu()
        if tt.numel() not in (1, xs.shape[0]):
            raise ValueError(
                f"t must be a scalar or hold one OU time per sample ({xs.shape[0]}), got {tt.numel()}"
            )
        if torch.isnan(tt).any() or (tt < 0).any():
            raise ValueError("t must be a non-negative OU time")
        timestep, t_used = self._denoise_timesteps(tt, timestep_mode)
        inputs = self._guided_inputs(cond, xs.shape[0], xs.device)
        timestep = timestep.to(xs.device)
        if timestep.numel() == 1:
            timestep = timestep.reshape(())
        # Flow transformers see the flow state (1 - s) x0 + s z, UNets the OU state itself.
        model_in = flow_state(xs, t_used) if self.kind == "flow" else xs
        with torch.no_grad():
            out = self._guided_unet(model_in, timestep, inputs)
        self.nfe += int(xs.shape[0])
        t_used = t_used if t_used.numel() > 1 else t_used.reshape(())
        x0 = predicted_x0(out.to(xs.dtype)[:, : xs.shape[1]], xs, t_used, self.prediction_type)
        return x0.reshape(x.shape)

    def _denoise_timesteps(self, tt: torch.Tensor, mode: str):
        """Network timestep(s) for OU times ``tt`` and the OU time(s) to read x̂₀ at."""
        if self.kind != "flow":
            return self._vp_denoise_timesteps(tt, mode)
        if mode not in ("nearest", "interpolate"):
            raise ValueError(f"timestep_mode must be 'nearest' or 'interpolate', got {mode!r}")
        # Flow models embed the continuous time s * num_train_timesteps, as the scheduler does: exact.
        timestep = (flow_time_s(tt) * self.scheduler.config.num_train_timesteps).float()
        return timestep, tt

    def _vp_denoise_timesteps(self, tt: torch.Tensor, mode: str):
        """:func:`denoise_timesteps`; ``t = inf`` is read at the last training step (zero-SNR schedules)."""
        train = self._train_schedule()
        pure = torch.isinf(tt)
        if not pure.any():
            return denoise_timesteps(train, tt, mode)
        if self._alphas_cumprod[-1].item() > 0.0:
            raise ValueError("t = inf (pure noise) needs a zero-terminal-SNR schedule (alpha_bar = 0)")
        last = train.ou_times.max()
        timestep, used = denoise_timesteps(train, torch.where(pure, last, tt), mode)
        timestep = torch.where(pure, torch.full_like(timestep, train.num_steps - 1), timestep)
        return timestep, torch.where(pure, tt, used)

    def _train_schedule(self):
        if self._train_times is None:
            self._train_times = train_schedule(self._alphas_cumprod, type(self.scheduler).__name__)
        return self._train_times

    # ------------------------------------------------------------------ latents
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, H, W) -> scaled VAE latents (posterior mean; packed by the
        ``latent_layout``); identity without a VAE."""
        if self.vae is None:
            return x
        latents = vae_encode(self.vae, x, self.vae_batch_size)
        return latents if self.latent_layout is None else self.latent_layout.pack(latents)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents (packed by the ``latent_layout``) -> images in [-1, 1] (unclipped); identity
        without a VAE."""
        if self.vae is None:
            return x
        latents = x if self.latent_layout is None else self.latent_layout.unpack(x)
        return vae_decode(self.vae, latents, self.vae_batch_size)

    # ------------------------------------------------------------------ provenance
    def weights_fingerprint(self) -> str:
        """Content hash of the UNet (and VAE) weights: names, dtypes, shapes and raw bytes.

        Exact bytes, not float sums: a sum depends on the thread count, so a resume under another
        ``torch.set_num_threads`` would be refused.
        """
        if self._weights_fingerprint is None:
            entries = {}
            for prefix, module in (("unet", self.unet), ("vae", self.vae)):
                if module is None or not hasattr(module, "state_dict"):
                    continue
                for name, tensor in module.state_dict().items():
                    entries[f"{prefix}.{name}"] = tensor.detach()
            self._weights_fingerprint = fingerprint(entries)
        return self._weights_fingerprint

    def describe(self) -> dict[str, Any]:
        config = self.scheduler.config
        return {
            "process": type(self).__name__,
            "model_id": self.model_id,
            "weights": self.weights_fingerprint(),
            "scheduler": type(self.scheduler).__name__,
            "scheduler_config": {k: config[k] for k in _DESCRIBED_CONFIG if k in config},
            "state_space": _STATE_SPACES[self.kind],
            "mu": self._set_kwargs.get("mu"),
            "sigmas": self._set_kwargs.get("sigmas"),
            "num_inference_steps": self.num_inference_steps,
            "grid_size": int(self._times.numel()),
            "guidance_scale": self.guidance_scale,
            "guidance_rescale": self.guidance_rescale,
            # Content hashes of the conditioning, so that a resumed sweep cannot mix prompts.
            "cond": fingerprint(self.cond) if self.cond else None,
            "uncond": fingerprint(self.uncond) if self.uncond else None,
            "latent": self.vae is not None,
            "terminal_snr": self.terminal_snr,
            "final_ou_time": self._times[-1].item(),
            "step_kwargs": {
                k: v for k, v in self.step_kwargs.items() if isinstance(v, (int, float, str, bool))
            },
            "schedule": self.schedule_report(),
        }
