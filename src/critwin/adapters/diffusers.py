"""Any diffusers UNet + scheduler (or a whole pipeline) as a critwin :class:`ReverseProcess`.

Grid and clock
--------------
After ``scheduler.set_timesteps(num_inference_steps)`` the scheduler visits ``L`` timesteps. Grid index
``i < L`` is the state from which the scheduler's step ``i`` (at ``scheduler.timesteps[i]``) starts, and
``times[i]`` is the OU time of the noise level that step assumes: ``ou_time(alpha_bar=alphas_cumprod[k])`` for
DDPM/DDIM (timestep ``k``), ``ou_time(sigma=sigmas[i])`` for schedulers that carry a sigma table (Euler,
Euler-ancestral, DPM-Solver++, UniPC; sigma is the ratio ``sqrt((1 - alpha_bar) / alpha_bar)``). ``times[L]``
is where the last step lands: OU time 0 unless ``set_alpha_to_one=False`` (DDIM: ``alphas_cumprod[0]``) or
``final_sigmas_type="sigma_min"`` says otherwise. ``add_noise(x0, i)`` noises to exactly that level and
``run(x, start=i)`` starts the scheduler at step ``i`` (``set_begin_index`` where the scheduler has it), so
``run(add_noise(x0, i), start=i)`` has no off-by-one.

State space
-----------
``add_noise``, ``run``, ``prior`` and the callback's ``x`` all use the scheduler's own scaling (what the
stock pipeline's ``latents`` hold), so trajectories are byte-identical to a hand-written ``scheduler.step``
loop. For VP schedulers (DDPM, DDIM, DPM-Solver++, UniPC) that is the OU state. For sigma schedulers (Euler,
Euler-ancestral) it is ``x = x0 + sigma z``; the OU state is ``x / sqrt(1 + sigma^2)`` (:meth:`to_ou`).
``denoise(x, t)`` (for critwin's own samplers) always takes the OU state.

Schedulers
----------
Supported (:data:`SUPPORTED_SCHEDULERS`): DDPM, DDIM, Euler, Euler-ancestral, DPM-Solver++ (multistep;
tested with ``dpmsolver++`` and ``sde-dpmsolver++``) and UniPC. Anything else is refused with
``ValueError: scheduler PNDMScheduler is not supported; supported schedulers: ...``; in particular
PNDM (Stable Diffusion 1.x's saved default), Heun/KDPM2 (two model calls per step: repeated timesteps),
LMS, DEIS, single-step DPM-Solver, EDM and flow-matching schedulers. Build a supported one from the same
config: ``DDIMScheduler.from_config(pipe.scheduler.config)``.

Usage
-----
::

    process = from_pipeline(pipe, num_inference_steps=50, guidance_scale=7.5,
                            prompt_embeds=pe, negative_prompt_embeds=ne)
    process.realise(1.0)  # grid index, timestep, alpha_bar and OU time actually used
    forward_reverse(process, images, times=[0.3, 1.0, 2.0], feature=SourceSimilarity(images), seed=0)
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from critwin._files import load_tensor_file
from critwin._validation import check_positive_int, check_time
from critwin.clock import DiscreteSchedule, alpha_sigma, log_snr, ou_time, snr, ve_sigma
from critwin.clock import alpha_bar as ou_alpha_bar
from critwin.experiments.process import Callback, ReverseProcess

__all__ = [
    "DiffusersProcess",
    "LocalPipeline",
    "PipelineProcess",
    "SUPPORTED_SCHEDULERS",
    "TerminalSNRWarning",
    "from_pipeline",
    "predicted_x0",
    "load_local",
    "load_prompt_embeds",
    "record_pipeline_trajectory",
    "scheduler_class",
]

# Scheduler class -> space its samples live in ("vp": sqrt(ab) x0 + sqrt(1-ab) z; "sigma": x0 + sigma z).
SUPPORTED_SCHEDULERS: dict[str, str] = {
    "DDPMScheduler": "vp",
    "DDIMScheduler": "vp",
    "DPMSolverMultistepScheduler": "vp",
    "UniPCMultistepScheduler": "vp",
    "EulerDiscreteScheduler": "sigma",
    "EulerAncestralDiscreteScheduler": "sigma",
}

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

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
# SDXL-style UNets take these inside ``added_cond_kwargs``.
_ADDED_COND_KEYS = ("text_embeds", "time_ids", "image_embeds")
_UNCOND_PREFIX = "uncond_"

# Start-of-sampling signal coefficient sqrt(alpha_bar) above which we warn that "pure noise" is not.
_TERMINAL_SIGNAL_WARN = 0.01


class TerminalSNRWarning(UserWarning):
    """The first step of the schedule still carries signal (non-zero terminal SNR)."""


def predicted_x0(model_output: torch.Tensor, x_ou: torch.Tensor, t, prediction_type: str) -> torch.Tensor:
    """Posterior-mean estimate of the clean sample from a network output.

    Parameters
    ----------
    model_output : (B, *shape) network output (epsilon, v or x0, after guidance).
    x_ou : (B, *shape) OU state ``e^{-t} x0 + sqrt(1 - e^{-2t}) z``.
    t : OU time: a float or a (B,) tensor.
    prediction_type : ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.

    Returns
    -------
    (B, *shape) x̂₀ in the dtype of ``x_ou``.
    """
    if prediction_type == "sample":
        return model_output
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    tt = torch.as_tensor(t, dtype=torch.float64)
    signal, noise = alpha_sigma(tt)
    shape = (-1,) + (1,) * (x_ou.ndim - 1)
    signal = signal.to(device=x_ou.device, dtype=x_ou.dtype).reshape(shape) if signal.ndim else float(signal)
    noise = noise.to(device=x_ou.device, dtype=x_ou.dtype).reshape(shape) if noise.ndim else float(noise)
    if prediction_type == "epsilon":
        return (x_ou - noise * model_output) / signal
    return signal * x_ou - noise * model_output  # v = signal * eps - noise * x0


def _scheduler_kind(scheduler) -> str:
    for cls in type(scheduler).__mro__:
        if cls.__name__ in SUPPORTED_SCHEDULERS:
            return SUPPORTED_SCHEDULERS[cls.__name__]
    raise ValueError(
        f"scheduler {type(scheduler).__name__} is not supported; supported schedulers: "
        f"{', '.join(SUPPORTED_SCHEDULERS)} (e.g. DDIMScheduler.from_config(pipe.scheduler.config))"
    )


def _alpha_bar_time(alpha_bar: float) -> float:
    # alpha_bar = 0 (zero-terminal-SNR rescaling) is infinitely far in OU time: pure noise.
    # "+ 0.0" turns the -0.0 of log(1) into 0.0.
    return math.inf if alpha_bar <= 0.0 else float(ou_time(alpha_bar=min(float(alpha_bar), 1.0))) + 0.0


def _call_accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


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

    Notes
    -----
    Multistep solvers (DPM-Solver++, UniPC) keep a history of model outputs; a run that starts at grid index
    ``i > 0`` restarts that history at low order (as diffusers' img2img does), so it is not the continuation
    of an uninterrupted run. Single-step schedulers (DDPM, DDIM, Euler, Euler-ancestral) are.
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
    ):
        self.kind = _scheduler_kind(scheduler)
        self.num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps")
        self.unet = unet
        self.vae = vae
        self.vae_batch_size = check_positive_int(vae_batch_size, "vae_batch_size")
        self.scheduler = copy.deepcopy(scheduler)
        config = self.scheduler.config
        self.prediction_type = config.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"scheduler prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if config.get("use_flow_sigmas", False):
            raise ValueError(
                "scheduler uses flow-matching sigmas (use_flow_sigmas=True), which are not supported"
            )
        if self.num_inference_steps > config.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be <= the scheduler's num_train_timesteps="
                f"{config.num_train_timesteps}, got {self.num_inference_steps}"
            )
        self.guidance_scale = self._check_guidance(guidance_scale)
        self.guidance_rescale = float(guidance_rescale)
        if not 0.0 <= self.guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must lie in [0, 1], got {guidance_rescale}")
        self.step_kwargs = dict(step_kwargs or {})
        if "generator" in self.step_kwargs:
            raise ValueError("step_kwargs must not contain 'generator'; pass generator= to run()")
        self.cond = self._normalise_cond(cond or {}, "cond")
        self.uncond = self._normalise_cond(uncond or {}, "uncond")
        if any(k.startswith(_UNCOND_PREFIX) for k in self.cond):
            raise ValueError("cond must not contain unconditional entries; pass them as uncond=")
        for branch, values in (("cond", self.cond), ("uncond", self.uncond)):
            self._check_embeds(values.get("encoder_hidden_states"), branch)
        self.model_id = model_id or self._model_id()
        self._unet_return_dict = _call_accepts(getattr(unet, "forward", unet), "return_dict")
        self._step_generator = _call_accepts(self.scheduler.step, "generator")
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else self._default_shape()

        self.scheduler.set_timesteps(self.num_inference_steps)
        self._timesteps = self.scheduler.timesteps.detach().cpu().clone()
        if self._timesteps.numel() != self.num_inference_steps:
            raise ValueError(
                f"scheduler produced {self._timesteps.numel()} timesteps for num_inference_steps="
                f"{self.num_inference_steps}; schedulers with repeated (multi-stage) timesteps are not "
                "supported"
            )
        self._alphas_cumprod = self.scheduler.alphas_cumprod.detach().cpu().double()
        self._times, self._landing = self._grid_times()
        self._train_times = None
        self._weights_fingerprint: str | None = None
        # The tensor returned by the last run and its stop index: a run that starts exactly there keeps
        # the scheduler's state (multistep history), so split runs equal one uninterrupted run.
        self._last_output: tuple[torch.Tensor, int] | None = None
        self.nfe = 0
        start_signal = math.sqrt(ou_alpha_bar(self._times[0].item()))
        if start_signal >= _TERMINAL_SIGNAL_WARN:
            warnings.warn(
                f"the schedule's first step (timestep {self.step_label(0)}) has OU time "
                f"{self._times[0].item():.4g}: 'fully noised' states still carry signal (signal coefficient "
                f"{start_signal:.3g}, SNR {self.terminal_snr:.3g}); the prior N(0, I) "
                "is only approximately the law of the noised data there",
                TerminalSNRWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ grid and clock
    def _grid_times(self) -> tuple[torch.Tensor, torch.Tensor]:
        """OU time at each grid index, and the OU time each step actually lands on."""
        sched = self.scheduler
        n = self.num_inference_steps
        sigmas = getattr(sched, "sigmas", None)
        if sigmas is not None and torch.as_tensor(sigmas).numel() == n + 1:
            sig = torch.as_tensor(sigmas).detach().cpu().double()
            times = ou_time(sigma=sig)
            return times, times[1:].clone()
        ac = self._alphas_cumprod
        steps = [int(k) for k in self._timesteps.tolist()]
        times = [_alpha_bar_time(ac[k].item()) for k in steps]
        landing = []
        name = type(sched).__name__
        final = float(getattr(sched, "final_alpha_cumprod", torch.tensor(1.0)))
        for i, k in enumerate(steps):
            if "DDIM" in name:
                # DDIM steps by a fixed stride, which can miss the next listed timestep (linspace spacing).
                prev = k - sched.config.num_train_timesteps // n
            else:
                prev = steps[i + 1] if i + 1 < n else -1
            landing.append(_alpha_bar_time(ac[prev].item()) if prev >= 0 else _alpha_bar_time(final))
        times.append(landing[-1])
        times_t = torch.tensor(times, dtype=torch.float64)
        landing_t = torch.tensor(landing, dtype=torch.float64)
        mismatch = (landing_t[:-1] - times_t[1:-1]).abs() > 1e-12
        if mismatch.any():
            bad = int(mismatch.nonzero()[0, 0])
            warnings.warn(
                f"{name} with timestep_spacing={sched.config.get('timestep_spacing')!r} and {n} steps lands "
                f"between listed timesteps: step {bad} (timestep {steps[bad]}) ends at OU time "
                f"{landing_t[bad].item():.4g} but step {bad + 1} assumes {times_t[bad + 1].item():.4g}; "
                "schedule_report() lists every step",
                stacklevel=3,
            )
        return times_t, landing_t

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

    def _check_index(self, index, name: str, allow_end: bool) -> int:
        top = self.num_inference_steps if allow_end else self.num_inference_steps - 1
        if isinstance(index, bool) or not isinstance(index, int) and not hasattr(index, "__index__"):
            raise ValueError(f"{name} must be an integer grid index in 0..{top}, got {index!r}")
        index = int(index)
        if not 0 <= index <= top:
            raise ValueError(f"{name} must be a grid index in 0..{top}, got {index}")
        return index

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
        return math.exp(t)  # sqrt(1 + sigma^2) = e^{t}

    def to_ou(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Scheduler-space state at grid index ``index`` -> OU state."""
        index = self._check_index(index, "index", allow_end=True)
        return x if self.kind == "vp" else x / self._scale(index)

    def from_ou(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """OU state at grid index ``index`` -> scheduler-space state."""
        index = self._check_index(index, "index", allow_end=True)
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
        self._last_output = None
        sched = self.scheduler
        sched.set_timesteps(self.num_inference_steps, device=device)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
        return sched

    def prior(
        self, n: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        """``n`` states at ``times[0]`` as the stock pipeline draws them: ``randn * init_noise_sigma``."""
        return self._draw_prior(n, generator, device, dtype)[0]

    def _draw_prior(self, n, generator, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.utils.torch_utils import randn_tensor

        n = check_positive_int(n, "n")
        sched = self._fresh_scheduler(0, device)
        noise = randn_tensor(
            (n, *self.sample_shape),
            generator=generator,
            device=torch.device(device or "cpu"),
            dtype=dtype or torch.float32,
        )
        return noise * sched.init_noise_sigma, noise

    def add_noise(
        self, x0: torch.Tensor, index: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Noise model-space ``x0`` (B, *sample_shape) to exactly the level of grid index ``index``.

        Uses ``scheduler.add_noise`` with the scheduler started at ``index``; the index ``L`` (end of
        sampling) returns ``x0`` noised to ``times[L]`` (``x0`` itself when that is 0).
        """
        from diffusers.utils.torch_utils import randn_tensor

        index = self._check_index(index, "index", allow_end=True)
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
        return sched.add_noise(x0, noise, timesteps)

    # ------------------------------------------------------------------ conditioning
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
        return (int(config.in_channels), int(height), int(width))

    @staticmethod
    def _check_guidance(guidance_scale) -> float:
        try:
            value = float(guidance_scale)
        except (TypeError, ValueError):
            raise ValueError(f"guidance_scale must be a number >= 0, got {guidance_scale!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        return value

    def _check_sample(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"{name} must be a tensor of shape (batch, {', '.join(map(str, self.sample_shape))})"
            )
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, self.sample_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def _normalise_cond(self, cond: Mapping[str, Any], name: str) -> dict[str, Any]:
        if not isinstance(cond, Mapping):
            raise ValueError(f"{name} must be a dict of conditioning tensors, got {type(cond).__name__}")
        out: dict[str, Any] = {}
        for key, value in cond.items():
            key = _ALIASES.get(key, key)
            if name == "uncond" and key.startswith(_UNCOND_PREFIX):
                key = key[len(_UNCOND_PREFIX) :]
            if key == "added_cond_kwargs" and isinstance(value, Mapping):
                out.update({_ALIASES.get(k, k): v for k, v in value.items()})
                continue
            out[key] = value
        return out

    def _split_cond(self, cond: Mapping[str, Any] | None) -> tuple[dict, dict, float]:
        """Merge defaults with per-call conditioning; return (conditional, unconditional, guidance_scale)."""
        extra = self._normalise_cond(cond or {}, "cond")
        scale = self._check_guidance(extra.pop("guidance_scale", self.guidance_scale))
        positive = dict(self.cond)
        negative = dict(self.uncond)
        for key, value in extra.items():
            if key.startswith(_UNCOND_PREFIX):
                negative[key[len(_UNCOND_PREFIX) :]] = value
            else:
                positive[key] = value
        return positive, negative, scale

    def _check_embeds(self, value, branch: str) -> None:
        if value is None:
            return
        config = getattr(self.unet, "config", None)
        width = config.get("cross_attention_dim") if hasattr(config, "get") else None
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
                f"(batch, seq_len, {width}), "
                f"got {shape}"
            )

    def _batch_cond(self, cond: dict[str, Any], batch: int, device, branch: str) -> dict[str, Any]:
        """Check shapes, move to device, repeat size-1 batches; nest SDXL keys into ``added_cond_kwargs``."""
        config = getattr(self.unet, "config", None)
        get = config.get if hasattr(config, "get") else (lambda k, d=None: d)
        out: dict[str, Any] = {}
        added: dict[str, Any] = {}
        for key, value in cond.items():
            label = f"{branch}[{key!r}]"
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "class_labels":
                value = torch.full((batch,), int(value), dtype=torch.long)
            if isinstance(value, torch.Tensor):
                if value.ndim == 0:
                    value = value.reshape(1)
                if value.shape[0] not in (1, batch):
                    raise ValueError(f"{label} has batch size {value.shape[0]}, expected 1 or {batch}")
                if value.shape[0] == 1 and batch > 1:
                    value = value.repeat(batch, *([1] * (value.ndim - 1)))
                # Embeddings run in the UNet's precision (pipelines cast prompt_embeds); labels stay integer.
                value = (
                    value.to(device=device, dtype=self.dtype)
                    if value.is_floating_point()
                    else value.to(device)
                )
            if key == "encoder_hidden_states":
                self._check_embeds(value, branch)
            if key == "class_labels" and isinstance(value, torch.Tensor):
                n_classes = get("num_class_embeds")
                if n_classes is not None and ((value < 0) | (value >= n_classes)).any():
                    raise ValueError(f"{label} must hold class indices in 0..{n_classes - 1}")
            if key in _ADDED_COND_KEYS:
                added[key] = value
            else:
                out[key] = value
        if added:
            out["added_cond_kwargs"] = added
        if get("cross_attention_dim") is not None and "encoder_hidden_states" not in out:
            raise ValueError(
                f"this UNet is text-conditional: {branch} needs prompt embeddings "
                "('prompt_embeds' / 'encoder_hidden_states' of shape (batch, seq_len, "
                f"{get('cross_attention_dim')}))"
            )
        return out

    def _guided_inputs(self, cond, batch, device):
        positive, negative, scale = self._split_cond(cond)
        positive = self._batch_cond(positive, batch, device, "cond")
        if scale == 1.0:
            return positive, None, scale
        if not negative:
            raise ValueError(
                f"guidance_scale={scale:g} needs unconditional conditioning: pass uncond= (negative prompt "
                "embeddings, or the null class label of a class-conditional model), or use guidance_scale=1"
            )
        negative = self._batch_cond(negative, batch, device, "uncond")
        if set(negative) != set(positive):
            raise ValueError(
                "cond and uncond must provide the same keys for guidance, got "
                f"{sorted(positive)} and {sorted(negative)}"
            )
        joined = {}
        for key in positive:
            joined[key] = _cat_cond(negative[key], positive[key], key)
        return joined, positive, scale

    def _unet(self, model_input: torch.Tensor, timestep, kwargs: dict) -> torch.Tensor:
        if model_input.dtype != self.dtype:
            model_input = model_input.to(self.dtype)
        if self._unet_return_dict:
            out = self.unet(model_input, timestep, **kwargs, return_dict=False)
        else:
            out = self.unet(model_input, timestep, **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        return getattr(out, "sample", out)

    def _model_output(self, x, timestep, sched, guided, scale):
        """The (guided) network output, computed exactly as the Stable Diffusion pipelines do."""
        joined, positive, _ = guided
        if positive is None:
            model_input = sched.scale_model_input(x, timestep)
            return self._unet(model_input, timestep, joined)
        model_input = sched.scale_model_input(torch.cat([x] * 2), timestep)
        out = self._unet(model_input, timestep, joined)
        out_uncond, out_cond = out.chunk(2)
        out = out_uncond + scale * (out_cond - out_uncond)
        if self.guidance_rescale > 0.0:
            out = _rescale_cfg(out, out_cond, self.guidance_rescale)
        return out

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
        start = self._check_index(start, "start", allow_end=True)
        stop = self.num_inference_steps if stop is None else self._check_index(stop, "stop", allow_end=True)
        if stop < start:
            raise ValueError(f"stop must be >= start, got start={start}, stop={stop}")
        self._check_sample(x, "x")
        resume = self._last_output is not None and self._last_output[0] is x and self._last_output[1] == start
        # Engines may hand over CPU states (e.g. a prior drawn on the CPU); compute where the UNet lives.
        x = x.to(self.device)
        guided = self._guided_inputs(cond, x.shape[0], x.device)
        scale = guided[2]
        sched = self.scheduler if resume else self._fresh_scheduler(start, x.device)
        step_kwargs = dict(self.step_kwargs)
        if self._step_generator:
            step_kwargs["generator"] = generator
        with torch.no_grad():
            for i in range(start, stop):
                timestep = sched.timesteps[i]
                out = self._model_output(x, timestep, sched, guided, scale)
                if callback is not None:
                    t = self._times[i].item()
                    x_ou = self.to_ou(x, i)
                    channels = x.shape[1]
                    # Learned-variance UNets emit 2C channels: the first C are the mean prediction.
                    x0_hat = predicted_x0(out[:, :channels], x_ou, t, self.prediction_type)
                    callback(i, t, x, x0_hat)
                x = sched.step(out, timestep, x, **step_kwargs, return_dict=False)[0]
                self.nfe += int(x.shape[0])
        self._last_output = (x, stop)
        return x

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
        train = self._train_schedule()
        if timestep_mode == "nearest":
            steps, realised = train.nearest_step(tt)
            timestep, t_used = steps, realised
        elif timestep_mode == "interpolate":
            train_times = train.ou_times
            if (tt > train_times.max()).any() or (tt < train_times.min()).any():
                raise ValueError(
                    f"t must lie within the training schedule's OU times [{train_times.min().item():.4g}, "
                    f"{train_times.max().item():.4g}] for timestep_mode='interpolate'"
                )
            log_sigma = -0.5 * log_snr(train_times)  # increasing in the step index
            query = -0.5 * log_snr(tt)
            timestep = _interp(query, log_sigma, torch.arange(train.num_steps, dtype=torch.float64)).float()
            t_used = tt
        else:
            raise ValueError(f"timestep_mode must be 'nearest' or 'interpolate', got {timestep_mode!r}")
        guided = self._guided_inputs(cond, xs.shape[0], xs.device)
        scale = guided[2]
        timestep = timestep.to(xs.device)
        if timestep.numel() == 1:
            timestep = timestep.reshape(())
        joined, positive, _ = guided
        with torch.no_grad():
            if positive is None:
                out = self._unet(xs, timestep, joined)
            else:
                both = timestep.repeat(2) if timestep.ndim else timestep
                out = self._unet(torch.cat([xs] * 2), both, joined)
                out_uncond, out_cond = out.chunk(2)
                out = out_uncond + scale * (out_cond - out_uncond)
                if self.guidance_rescale > 0.0:
                    out = _rescale_cfg(out, out_cond, self.guidance_rescale)
        self.nfe += int(xs.shape[0])
        t_used = t_used if t_used.numel() > 1 else t_used.reshape(())
        out = out.to(xs.dtype)
        x0 = predicted_x0(out[:, : xs.shape[1]], xs, t_used, self.prediction_type)
        return x0.reshape(x.shape)

    def _train_schedule(self) -> DiscreteSchedule:
        if self._train_times is None:
            # Zero-terminal-SNR schedules end at alpha_bar = 0 (infinite OU time); clamp so steps stay finite.
            ac = self._alphas_cumprod.clamp(min=1e-12)
            self._train_times = DiscreteSchedule.from_alphas_cumprod(ac, name=type(self.scheduler).__name__)
        return self._train_times

    # ------------------------------------------------------------------ latents
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, H, W) -> scaled VAE latents (posterior mean); identity without a VAE."""
        if self.vae is None:
            return x
        scale, shift = self._latent_scale_shift()
        return self._vae_batched(lambda part: (self.vae.encode(part).latent_dist.mean - shift) * scale, x)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents -> images in [-1, 1] (unclipped); identity without a VAE."""
        if self.vae is None:
            return x
        scale, shift = self._latent_scale_shift()
        return self._vae_batched(lambda part: self.vae.decode(part / scale + shift, return_dict=False)[0], x)

    def _latent_scale_shift(self) -> tuple[float, float]:
        """The VAE's ``scaling_factor`` and ``shift_factor``: latents = (mean - shift) * scale."""
        config = self.vae.config
        return config.get("scaling_factor", 1.0), config.get("shift_factor", None) or 0.0

    def _vae_batched(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn`` over batches of ``vae_batch_size`` rows of ``x`` (cast to the VAE's dtype), concatenated."""
        with torch.no_grad():
            return torch.cat([fn(part.to(self.vae.dtype)) for part in x.split(self.vae_batch_size)])

    def weights_fingerprint(self) -> str:
        """Cheap content hash of the UNet (and VAE) weights: name, shape, sum and sum of squares."""
        if self._weights_fingerprint is None:
            import hashlib

            digest = hashlib.sha256()
            for prefix, module in (("unet", self.unet), ("vae", self.vae)):
                if module is None or not hasattr(module, "state_dict"):
                    continue
                with torch.no_grad():
                    for name, tensor in module.state_dict().items():
                        values = tensor.detach().double()
                        stats = (
                            (values.sum().item(), (values * values).sum().item()) if values.numel() else ()
                        )
                        digest.update(f"{prefix}.{name}{tuple(tensor.shape)}{stats}".encode())
            self._weights_fingerprint = digest.hexdigest()[:16]
        return self._weights_fingerprint

    def describe(self) -> dict[str, Any]:
        config = self.scheduler.config
        keys = (
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
        )
        return {
            "process": type(self).__name__,
            "model_id": self.model_id,
            "weights": self.weights_fingerprint(),
            "scheduler": type(self.scheduler).__name__,
            "scheduler_config": {k: config[k] for k in keys if k in config},
            "state_space": "ou" if self.kind == "vp" else "sigma-scaled (x0 + sigma z)",
            "num_inference_steps": self.num_inference_steps,
            "grid_size": int(self._times.numel()),
            "guidance_scale": self.guidance_scale,
            "guidance_rescale": self.guidance_rescale,
            "cond": _fingerprint(self.cond) if self.cond else None,
            "uncond": _fingerprint(self.uncond) if self.uncond else None,
            "latent": self.vae is not None,
            "terminal_snr": self.terminal_snr,
            "final_ou_time": self._times[-1].item(),
            "step_kwargs": {
                k: v for k, v in self.step_kwargs.items() if isinstance(v, (int, float, str, bool))
            },
            "schedule": self.schedule_report(),
        }


def _fingerprint(values: Mapping[str, Any]) -> str:
    """Content hash of conditioning tensors/values (so a resumed sweep cannot mix prompts)."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(values):
        value = values[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            digest.update(_fingerprint(value).encode())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


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


def _rescale_cfg(guided: torch.Tensor, cond_out: torch.Tensor, rescale: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, Sec. 3.4): match the guided output's std to the conditional one."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

    return rescale_noise_cfg(guided, cond_out, guidance_rescale=rescale)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of increasing ``xp`` -> ``fp`` at ``x`` (all float64)."""
    idx = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    lo, hi = xp[idx - 1], xp[idx]
    w = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return fp[idx - 1] + w * (fp[idx] - fp[idx - 1])


# ---------------------------------------------------------------------- pipelines
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
    pipe : ``DDPMPipeline``/``DDIMPipeline`` (unconditional pixel UNet), ``StableDiffusionPipeline`` or
        ``StableDiffusionXLPipeline`` (or any pipeline with ``unet``, ``scheduler`` and optionally ``vae``).
    num_inference_steps : sampler steps.
    guidance_scale : classifier-free guidance weight; default 7.5 (SD), 5.0 (SDXL), 1 for unconditional
        and class-conditional pipelines.
    prompt, negative_prompt : text, encoded with the pipeline's own tokenizer/text encoder.
    prompt_embeds, negative_prompt_embeds : (1 or B, seq_len, cross_attention_dim) precomputed embeddings
        (no tokenizer needed). SDXL also needs the pooled embeddings.
    class_labels, null_class_label : class-conditional ``UNet2DModel``: the label(s) and the "null"
        label used as the unconditional branch.
    height, width : image size for latent pipelines (default: the UNet's sample size times the VAE factor).
    scheduler : replace the pipeline's scheduler
        (e.g. ``EulerDiscreteScheduler.from_config(pipe.scheduler.config)``).
    use_pipeline_call : return a :class:`PipelineProcess`, whose runs from the prior (cloning trunks,
        base-rate samples) go through the stock ``pipe(...)`` via ``callback_on_step_end``.

    Returns
    -------
    DiffusersProcess whose trajectories match ``pipe(...)`` step by step.
    """
    unet = getattr(pipe, "unet", None)
    if unet is None or getattr(pipe, "scheduler", None) is None:
        raise ValueError(f"pipe must have a unet and a scheduler, got {type(pipe).__name__}")
    scheduler = scheduler if scheduler is not None else pipe.scheduler
    vae = getattr(pipe, "vae", None)
    config = unet.config
    text_conditional = config.get("cross_attention_dim") is not None
    is_xl = config.get("addition_embed_type") == "text_time"
    cond: dict[str, Any] = {}
    uncond: dict[str, Any] = {}
    if guidance_scale is None:
        guidance_scale = (5.0 if is_xl else 7.5) if text_conditional else 1.0
    guidance_scale = DiffusersProcess._check_guidance(guidance_scale)
    # Stock SD pipelines switch guidance on only for guidance_scale > 1; mirror that.
    use_cfg = guidance_scale > 1.0
    if not use_cfg:
        guidance_scale = 1.0

    if text_conditional:
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either prompt or prompt_embeds, not both")
        if prompt is None and prompt_embeds is None:
            raise ValueError(f"{type(pipe).__name__} is text-conditional: pass prompt= or prompt_embeds=")
        has_text_encoder = getattr(pipe, "text_encoder", None) is not None and getattr(
            pipe, "tokenizer", None
        )
        needs_encoding = prompt is not None or (use_cfg and negative_prompt_embeds is None)
        if needs_encoding and not has_text_encoder:
            what = (
                "prompt="
                if prompt is not None
                else f"guidance_scale={guidance_scale:g} without negative_prompt_embeds"
            )
            raise ValueError(
                f"{what} needs the pipeline's tokenizer and text encoder, which this pipeline lacks; "
                "pass prompt_embeds= and negative_prompt_embeds= instead"
            )
        device = getattr(pipe, "device", torch.device("cpu"))
        if is_xl:
            if needs_encoding:
                (
                    prompt_embeds,
                    negative_prompt_embeds,
                    pooled_prompt_embeds,
                    negative_pooled_prompt_embeds,
                ) = pipe.encode_prompt(
                    prompt=prompt,
                    device=device,
                    num_images_per_prompt=1,
                    do_classifier_free_guidance=use_cfg,
                    negative_prompt=negative_prompt,
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_prompt_embeds,
                    pooled_prompt_embeds=pooled_prompt_embeds,
                    negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
                )
            if pooled_prompt_embeds is None or (use_cfg and negative_pooled_prompt_embeds is None):
                raise ValueError(
                    "SDXL needs pooled_prompt_embeds (and negative_pooled_prompt_embeds for guidance)"
                )
            vae_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8
            size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
            h = height or size * vae_factor
            w = width or size * vae_factor
            # SDXL's micro-conditioning: original size + crop top-left + target size (no crop, no resize).
            time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=prompt_embeds.dtype)
            expected = getattr(getattr(unet, "add_embedding", None), "linear_1", None)
            got = config.addition_time_embed_dim * time_ids.shape[1] + int(pooled_prompt_embeds.shape[-1])
            if expected is not None and expected.in_features != got:
                raise ValueError(
                    f"pooled_prompt_embeds has {pooled_prompt_embeds.shape[-1]} features; the UNet's added "
                    f"embedding expects {expected.in_features - config.addition_time_embed_dim * 6}"
                )
            cond.update(text_embeds=pooled_prompt_embeds, time_ids=time_ids)
            if use_cfg:
                uncond.update(text_embeds=negative_pooled_prompt_embeds, time_ids=time_ids)
        elif needs_encoding:
            prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(
                prompt,
                device,
                1,
                use_cfg,
                negative_prompt=negative_prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
            )
        cond["encoder_hidden_states"] = prompt_embeds
        if use_cfg:
            uncond["encoder_hidden_states"] = negative_prompt_embeds
    elif prompt is not None or prompt_embeds is not None:
        raise ValueError(
            f"{type(pipe).__name__} has no text conditioning; prompt/prompt_embeds cannot be used"
        )

    if config.get("num_class_embeds") is not None:
        if class_labels is None:
            raise ValueError("this UNet is class-conditional: pass class_labels=")
        cond["class_labels"] = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        if use_cfg:
            if null_class_label is None:
                raise ValueError(
                    f"guidance_scale={guidance_scale:g} needs null_class_label= (the unconditional label)"
                )
            uncond["class_labels"] = torch.as_tensor([null_class_label], dtype=torch.long)
    elif use_cfg and not text_conditional:
        raise ValueError(
            f"guidance_scale={guidance_scale:g} needs a conditional model; "
            f"{type(pipe).__name__} is unconditional"
        )

    sample_shape = None
    if vae is not None and (height is not None or width is not None):
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
        h, w = height or size * factor, width or size * factor
        if h % factor or w % factor:
            raise ValueError(f"height and width must be multiples of the VAE factor {factor}, got {h}x{w}")
        sample_shape = (int(config.in_channels), h // factor, w // factor)
    name = getattr(pipe, "name_or_path", None)
    if not name and hasattr(pipe, "config"):
        name = pipe.config.get("_name_or_path", None)
    kwargs = dict(
        vae=vae,
        sample_shape=sample_shape,
        cond=cond,
        uncond=uncond,
        guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale,
        step_kwargs=step_kwargs,
        model_id=name or type(pipe).__name__,
    )
    if not use_pipeline_call:
        return DiffusersProcess(unet, scheduler, num_inference_steps, **kwargs)
    if scheduler is not pipe.scheduler:
        raise ValueError(
            "use_pipeline_call=True runs the pipeline's own scheduler; set pipe.scheduler instead"
        )
    if step_kwargs:
        raise ValueError("use_pipeline_call=True cannot pass step_kwargs through the stock pipeline call")
    call_kwargs: dict[str, Any] = {"guidance_scale": guidance_scale, "guidance_rescale": guidance_rescale}
    if text_conditional:
        call_kwargs["prompt_embeds"] = cond["encoder_hidden_states"]
        if use_cfg:
            call_kwargs["negative_prompt_embeds"] = uncond["encoder_hidden_states"]
        if is_xl:
            call_kwargs["pooled_prompt_embeds"] = cond["text_embeds"]
            if use_cfg:
                call_kwargs["negative_pooled_prompt_embeds"] = uncond["text_embeds"]
    if height is not None or width is not None:
        call_kwargs.update(height=height, width=width)
    return PipelineProcess(pipe, call_kwargs, unet, scheduler, num_inference_steps, **kwargs)


class PipelineProcess(DiffusersProcess):
    """A :class:`DiffusersProcess` whose runs from its own prior draws go through the stock ``pipe(...)``.

    A run that starts at grid index 0 from the very tensor :meth:`prior` returned, with no callback and no
    per-run conditioning, calls the pipeline's unmodified ``__call__`` (``output_type="latent"``) and stops
    it after step ``stop - 1`` from ``callback_on_step_end`` (the pipeline's ``interrupt`` flag). Everything
    else — continuations from a mid-grid state (cloning forks), callbacks — runs the adapter's own loop,
    which reproduces the pipeline step for step (tested byte for byte). Build it with
    ``from_pipeline(pipe, ..., use_pipeline_call=True)``.

    Attributes
    ----------
    pipeline_calls : number of runs delegated to ``pipe(...)``.
    """

    def __init__(self, pipe, call_kwargs: dict[str, Any], *args, **kwargs):
        call = type(pipe).__call__ if callable(pipe) else None
        for name in ("callback_on_step_end", "latents"):
            if call is None or not _call_accepts(call, name):
                raise ValueError(
                    f"{type(pipe).__name__}.__call__ does not accept {name}=; use from_pipeline(pipe)"
                )
        super().__init__(*args, **kwargs)
        self.pipe = pipe
        self.call_kwargs = dict(call_kwargs)
        self.pipeline_calls = 0
        self._prior_draw: tuple[torch.Tensor, torch.Tensor] | None = None

    def prior(
        self, n: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        x, noise = self._draw_prior(n, generator, device, dtype)
        self._prior_draw = (x, noise)
        return x

    def run(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        cond: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        draw, self._prior_draw = self._prior_draw, None
        if start != 0 or callback is not None or cond or draw is None or draw[0] is not x:
            return super().run(x, start=start, stop=stop, generator=generator, callback=callback, cond=cond)
        stop = self.num_inference_steps if stop is None else self._check_index(stop, "stop", allow_end=True)
        if stop == 0:
            return x

        def interrupt_at_stop(pipeline, step, timestep, tensors):
            # Called after step ``step``: the latents are now at grid index step + 1.
            if step + 1 >= stop:
                pipeline._interrupt = True
            return {}

        kwargs = dict(self.call_kwargs)
        embeds = kwargs.get("prompt_embeds")
        if embeds is not None and embeds.shape[0] == 1 and x.shape[0] > 1:
            kwargs["num_images_per_prompt"] = x.shape[0]
        output = self.pipe(
            num_inference_steps=self.num_inference_steps,
            latents=draw[1].to(self.device),
            generator=generator,
            callback_on_step_end=interrupt_at_stop,
            callback_on_step_end_tensor_inputs=["latents"],
            output_type="latent",
            **kwargs,
        )
        self.pipeline_calls += 1
        self.nfe += int(x.shape[0]) * stop
        # The pipeline's scheduler holds the multistep history, not ours: a continuation starts afresh.
        self._last_output = None
        return output.images if hasattr(output, "images") else output[0]


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
    n : number of samples (``num_images_per_prompt`` of a single prompt).
    generator : drawn for the initial noise (as ``process.prior`` does) and passed to the pipeline.
    **call_kwargs : everything else for ``pipe(...)`` (``prompt_embeds``, ``guidance_scale``, ...);
        ``num_inference_steps`` is taken from ``process``.

    Returns
    -------
    states : (L+1, n, *sample_shape) the pipeline's latents at grid indices 0..L (scheduler space), so
        ``process.run(states[k], start=k)`` continues the stock trajectory from grid index ``k``.
    output : whatever ``pipe(...)`` returned (``output_type`` defaults to ``"latent"``).
    """
    from diffusers.utils.torch_utils import randn_tensor

    n = check_positive_int(n, "n")
    call = type(pipe).__call__ if callable(pipe) else None
    for name in ("callback_on_step_end", "latents"):
        if call is None or not _call_accepts(call, name):
            raise ValueError(f"{type(pipe).__name__}.__call__ does not accept {name}=; it cannot be recorded")
    for name in (
        "latents",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
        "num_inference_steps",
    ):
        if name in call_kwargs:
            raise ValueError(f"record_pipeline_trajectory sets {name} itself; do not pass it")
    device = getattr(pipe, "device", torch.device("cpu"))
    dtype = getattr(pipe.unet, "dtype", torch.float32)
    noise = randn_tensor((n, *process.sample_shape), generator=generator, device=device, dtype=dtype)
    states: list[torch.Tensor] = []

    def on_step_end(pipeline, step, timestep, tensors):
        # Called after step ``step``: these latents are the state at grid index step + 1.
        states.append(tensors["latents"].detach().clone())
        return {}

    if "prompt_embeds" in call_kwargs and call_kwargs["prompt_embeds"].shape[0] == 1 and n > 1:
        call_kwargs.setdefault("num_images_per_prompt", n)
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
    first = noise * pipe.scheduler.init_noise_sigma
    return torch.stack([first, *states]), output


# ---------------------------------------------------------------------- local model directories
_PIPELINES = ("DDPMPipeline", "DDIMPipeline", "StableDiffusionPipeline", "StableDiffusionXLPipeline")
_SCHEDULER_ALIASES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


class LocalPipeline:
    """The parts of a diffusers pipeline directory that :func:`from_pipeline` needs (no transformers)."""

    def __init__(self, path, class_name, unet, scheduler, vae=None, text_encoder=None, tokenizer=None):
        self.name_or_path = str(path)
        self.class_name = class_name
        self.unet, self.scheduler, self.vae = unet, scheduler, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def scheduler_class(name: str):
    """A supported diffusers scheduler class from its name or an alias (``ddim``, ``euler``, ``dpm++``...)."""
    import diffusers

    full = _SCHEDULER_ALIASES.get(name.lower(), name) if isinstance(name, str) else name
    if full not in SUPPORTED_SCHEDULERS:
        raise ValueError(
            f"scheduler must be one of {', '.join(SUPPORTED_SCHEDULERS)} "
            f"(or {', '.join(_SCHEDULER_ALIASES)}), "
            f"got {name!r}"
        )
    return getattr(diffusers, full)


def load_local(path, scheduler: str | None = None, device=None, dtype=None, text_encoder: bool = False):
    """Load a local diffusers pipeline directory (``save_pretrained`` layout); never downloads.

    Parameters
    ----------
    path : directory with ``model_index.json`` (DDPM/DDIM, Stable Diffusion or SDXL pipeline).
    scheduler : replace the saved scheduler by this supported class (name or alias), built from its config.
    device, dtype : where and in which precision the UNet and VAE run.
    text_encoder : load the full pipeline with its tokenizer and text encoder (for text prompts; needs
        transformers). Otherwise only UNet, scheduler and VAE are loaded.

    Returns
    -------
    The pipeline (``text_encoder=True``) or a :class:`LocalPipeline`; pass it to :func:`from_pipeline`.
    Weights are read from safetensors files only.
    """
    import json
    from pathlib import Path

    import diffusers

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"model path {root} does not exist")
    index_file = root / "model_index.json"
    if not root.is_dir() or not index_file.is_file():
        raise ValueError(f"model path {root} is not a diffusers pipeline directory (no model_index.json)")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index_file} is not valid JSON: {exc}") from None
    class_name = index.get("_class_name")
    if class_name not in _PIPELINES:
        raise ValueError(
            f"model path {root} holds a {class_name!r}; supported pipelines: {', '.join(_PIPELINES)}"
        )
    present = {k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[0] is not None}
    for required in ("unet", "scheduler"):
        if required not in present:
            raise ValueError(f"model path {root} has no {required} component")
    options: dict[str, Any] = dict(local_files_only=True)
    if dtype is not None:
        options["torch_dtype"] = dtype
    try:
        sched_cls = getattr(diffusers, index["scheduler"][1])
        saved_scheduler = sched_cls.from_pretrained(root, subfolder="scheduler", local_files_only=True)
        new_scheduler = (
            saved_scheduler
            if scheduler is None
            else scheduler_class(scheduler).from_config(saved_scheduler.config)
        )
        saved_name = type(new_scheduler).__name__
        if scheduler is None and not any(
            c.__name__ in SUPPORTED_SCHEDULERS for c in type(new_scheduler).__mro__
        ):
            raise ValueError(
                f"the saved scheduler {saved_name} is not supported; pick one built from its config "
                f"with scheduler= (CLI: --scheduler): {', '.join(_SCHEDULER_ALIASES)}"
            )
        if text_encoder:
            pipe_cls = getattr(diffusers, class_name)
            missing = {
                k: None for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[0] is None
            }
            pipe = pipe_cls.from_pretrained(
                root, use_safetensors=True, scheduler=new_scheduler, **missing, **options
            )
            if getattr(pipe, "tokenizer", None) is None or getattr(pipe, "text_encoder", None) is None:
                raise ValueError(
                    f"a text prompt needs a tokenizer and text encoder in {root}; pass prompt embeddings"
                )
            pipe.to(device=device)
            return pipe
        unet_cls = getattr(diffusers, index["unet"][1])
        unet = unet_cls.from_pretrained(root, subfolder="unet", use_safetensors=True, **options)
        vae = None
        if "vae" in present:
            vae = getattr(diffusers, index["vae"][1]).from_pretrained(
                root, subfolder="vae", use_safetensors=True, **options
            )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not load the diffusers model in {root}: {first}") from None
    unet = unet.to(device=device).eval()
    if vae is not None:
        vae = vae.to(device=device).eval()
    return LocalPipeline(root, class_name, unet, new_scheduler, vae)


_EMBED_KEYS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


def load_prompt_embeds(path) -> dict[str, torch.Tensor]:
    """Prompt embeddings from a ``.safetensors`` file or a ``.pt`` file (``torch.load(weights_only=True)``).

    The file holds a single tensor (the prompt embeddings) or tensors named ``prompt_embeds`` and
    optionally ``negative_prompt_embeds``, ``pooled_prompt_embeds``, ``negative_pooled_prompt_embeds``.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt embeddings file {path} does not exist")
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"prompt embeddings file must end in .safetensors or .pt, got {path.name}")
    data = load_tensor_file(path, "prompt embeddings")
    if isinstance(data, torch.Tensor):
        data = {"prompt_embeds": data}
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path} must hold a tensor or a dict of tensors named {', '.join(_EMBED_KEYS)}")
    unknown = sorted(set(data) - set(_EMBED_KEYS))
    if unknown:
        raise ValueError(
            f"{path} has unknown entries {unknown}; expected names among {', '.join(_EMBED_KEYS)}"
        )
    if "prompt_embeds" not in data:
        raise ValueError(f"{path} has no 'prompt_embeds' entry")
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        if key in data and data[key].ndim != 3:
            raise ValueError(
                f"{key} in {path} must have shape (batch, seq_len, dim), got {tuple(data[key].shape)}"
            )
    return dict(data)
