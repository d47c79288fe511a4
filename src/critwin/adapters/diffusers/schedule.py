"""Scheduler <-> OU grid: which schedulers are supported, the OU time of every grid index, and the clock.

Grid index ``i < L`` is the state from which the scheduler's step ``i`` (at ``scheduler.timesteps[i]``)
starts and ``times[i]`` is the OU time of the noise level that step assumes: ``ou_time(alpha_bar=...)`` for
DDPM/DDIM, ``ou_time(sigma=sigmas[i])`` for schedulers with a sigma table. ``times[L]`` is where the last
step lands. See :mod:`critwin.adapters.diffusers` for the full story.
"""

from __future__ import annotations

import math
import warnings

import diffusers
import torch

from critwin.adapters.diffusers.flow import flow_x0
from critwin.clock import PREDICTIONS, DiscreteSchedule, log_snr, ou_time, snr, x0_from_prediction
from critwin.clock import alpha_bar as ou_alpha_bar

__all__ = [
    "PREDICTION_TYPES",
    "SUPPORTED_SCHEDULERS",
    "TerminalSNRWarning",
    "predicted_x0",
    "scheduler_class",
    "resolve_scheduler_class",
]

# Scheduler class -> space its samples live in ("vp": sqrt(ab) x0 + sqrt(1-ab) z; "sigma": x0 + sigma z;
# "flow": (1 - s) x0 + s z, see critwin.adapters.diffusers.flow).
SUPPORTED_SCHEDULERS: dict[str, str] = {
    "DDPMScheduler": "vp",
    "DDIMScheduler": "vp",
    "DPMSolverMultistepScheduler": "vp",
    "UniPCMultistepScheduler": "vp",
    "EulerDiscreteScheduler": "sigma",
    "EulerAncestralDiscreteScheduler": "sigma",
    "FlowMatchEulerDiscreteScheduler": "flow",
}

SCHEDULER_ALIASES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
}

# "flow": rectified-flow velocity z - x0 (the only parameterisation of flow-matching schedulers).
PREDICTION_TYPES = (*PREDICTIONS, "flow")

# Start-of-sampling signal coefficient sqrt(alpha_bar) above which we warn that "pure noise" is not.
_TERMINAL_SIGNAL_WARN = 0.01


class TerminalSNRWarning(UserWarning):
    """The first step of the schedule still carries signal (non-zero terminal SNR)."""


def scheduler_class(name: str):
    """A supported diffusers scheduler class from its name or an alias (``ddim``, ``euler``, ``dpm++``...)."""
    full = SCHEDULER_ALIASES.get(name.lower(), name) if isinstance(name, str) else name
    if full not in SUPPORTED_SCHEDULERS:
        raise ValueError(
            f"scheduler must be one of {', '.join(SUPPORTED_SCHEDULERS)} "
            f"(or {', '.join(SCHEDULER_ALIASES)}), "
            f"got {name!r}"
        )
    return getattr(diffusers, full)


def resolve_scheduler_class(scheduler, name: str = "scheduler"):
    """``None``, a supported scheduler class, or its name or alias (``"ddim"``) -> the class (or None).

    Raises ValueError naming ``name`` for anything else (a number, an unknown name, another class).
    """
    if scheduler is None:
        return None
    if isinstance(scheduler, str):
        return scheduler_class(scheduler)
    if isinstance(scheduler, type) and any(cls.__name__ in SUPPORTED_SCHEDULERS for cls in scheduler.__mro__):
        return scheduler
    raise ValueError(
        f"{name} must be None, a supported diffusers scheduler class or its name "
        f"({', '.join(SUPPORTED_SCHEDULERS)}, or {', '.join(SCHEDULER_ALIASES)}), got {scheduler!r}"
    )


def is_supported(scheduler) -> bool:
    """Whether ``scheduler`` is an instance of a class in :data:`SUPPORTED_SCHEDULERS` (or a subclass)."""
    return any(cls.__name__ in SUPPORTED_SCHEDULERS for cls in type(scheduler).__mro__)


def scheduler_kind(scheduler) -> str:
    """``"vp"`` or ``"sigma"``: the space the scheduler's samples live in; refuses unsupported schedulers."""
    for cls in type(scheduler).__mro__:
        if cls.__name__ in SUPPORTED_SCHEDULERS:
            return SUPPORTED_SCHEDULERS[cls.__name__]
    raise ValueError(
        f"scheduler {type(scheduler).__name__} is not supported; supported schedulers: "
        f"{', '.join(SUPPORTED_SCHEDULERS)} (e.g. DDIMScheduler.from_config(pipe.scheduler.config))"
    )


def check_scheduler_config(config, num_inference_steps: int, kind: str = "vp") -> str:
    """Refuse configurations the adapter cannot represent; return the prediction type."""
    if kind == "flow":
        if config.get("invert_sigmas", False):
            raise ValueError("flow-matching schedulers with invert_sigmas=True are not supported")
        prediction_type = "flow"
    else:
        prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"scheduler prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )
    if config.get("use_flow_sigmas", False):
        raise ValueError(
            "scheduler uses flow-matching sigmas (use_flow_sigmas=True), which are not supported"
        )
    if num_inference_steps > config.num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be <= the scheduler's num_train_timesteps="
            f"{config.num_train_timesteps}, got {num_inference_steps}"
        )
    return prediction_type


def inference_timesteps(scheduler, num_inference_steps: int, **set_kwargs) -> torch.Tensor:
    """``set_timesteps`` on ``scheduler`` and a CPU copy of its timesteps (one per step, no repeats).

    ``set_kwargs``: further ``set_timesteps`` keywords (``mu`` for dynamically shifted flow schedules).
    """
    scheduler.set_timesteps(num_inference_steps, **set_kwargs)
    timesteps = scheduler.timesteps.detach().cpu().clone()
    if timesteps.numel() != num_inference_steps:
        raise ValueError(
            f"scheduler produced {timesteps.numel()} timesteps for num_inference_steps="
            f"{num_inference_steps}; schedulers with repeated (multi-stage) timesteps are not supported"
        )
    return timesteps


def alpha_bar_time(alpha_bar: float) -> float:
    """OU time of ``alpha_bar``; ``inf`` for alpha_bar = 0 (zero-terminal-SNR rescaling: pure noise)."""
    # "+ 0.0" turns the -0.0 of log(1) into 0.0.
    return math.inf if alpha_bar <= 0.0 else float(ou_time(alpha_bar=min(float(alpha_bar), 1.0))) + 0.0


def grid_times(scheduler, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor):
    """OU time at each grid index (L+1,) and the OU time each step actually lands on (L,).

    ``scheduler`` has had ``set_timesteps(L)``; ``timesteps`` are its (L,) timesteps on the CPU.
    """
    n = timesteps.numel()
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and torch.as_tensor(sigmas).numel() == n + 1:
        times = ou_time(sigma=torch.as_tensor(sigmas).detach().cpu().double())
        return times, times[1:].clone()
    steps = [int(k) for k in timesteps.tolist()]
    landing = _landing_times(scheduler, steps, alphas_cumprod)
    times = [alpha_bar_time(alphas_cumprod[k].item()) for k in steps] + [landing[-1]]
    times_t = torch.tensor(times, dtype=torch.float64)
    landing_t = torch.tensor(landing, dtype=torch.float64)
    _warn_off_grid_landing(scheduler, steps, times_t, landing_t)
    return times_t, landing_t


def _landing_times(scheduler, steps: list[int], alphas_cumprod: torch.Tensor) -> list[float]:
    """OU time each alpha_bar step lands on: the previous timestep's level (DDIM: a fixed stride back)."""
    n = len(steps)
    final = float(getattr(scheduler, "final_alpha_cumprod", torch.tensor(1.0)))
    ddim = "DDIM" in type(scheduler).__name__
    landing = []
    for i, k in enumerate(steps):
        if ddim:
            # DDIM steps by a fixed stride, which can miss the next listed timestep (linspace spacing).
            prev = k - scheduler.config.num_train_timesteps // n
        else:
            prev = steps[i + 1] if i + 1 < n else -1
        landing.append(alpha_bar_time(alphas_cumprod[prev].item()) if prev >= 0 else alpha_bar_time(final))
    return landing


def _warn_off_grid_landing(scheduler, steps, times: torch.Tensor, landing: torch.Tensor) -> None:
    mismatch = (landing[:-1] - times[1:-1]).abs() > 1e-12
    if not mismatch.any():
        return
    bad = int(mismatch.nonzero()[0, 0])
    warnings.warn(
        f"{type(scheduler).__name__} with timestep_spacing={scheduler.config.get('timestep_spacing')!r} "
        f"and {len(steps)} steps lands between listed timesteps: step {bad} (timestep {steps[bad]}) ends "
        f"at OU time {landing[bad].item():.4g} but step {bad + 1} assumes {times[bad + 1].item():.4g}; "
        "schedule_report() lists every step",
        stacklevel=4,  # here -> grid_times -> DiffusersProcess.__init__ -> whoever built the process
    )


def warn_terminal_snr(first_time: float, first_label, stacklevel: int) -> None:
    """Warn (:class:`TerminalSNRWarning`) when the first grid point still carries signal."""
    start_signal = math.sqrt(ou_alpha_bar(first_time))
    if start_signal < _TERMINAL_SIGNAL_WARN:
        return
    warnings.warn(
        f"the schedule's first step (timestep {first_label}) has OU time "
        f"{first_time:.4g}: 'fully noised' states still carry signal (signal coefficient "
        f"{start_signal:.3g}, SNR {snr(first_time):.3g}); the prior N(0, I) "
        "is only approximately the law of the noised data there",
        TerminalSNRWarning,
        stacklevel=stacklevel + 1,
    )


def train_schedule(alphas_cumprod: torch.Tensor, name: str) -> DiscreteSchedule:
    """The training schedule as a :class:`DiscreteSchedule` (alpha_bar clamped: finite OU times)."""
    # Zero-terminal-SNR schedules end at alpha_bar = 0 (infinite OU time); clamp so steps stay finite.
    return DiscreteSchedule.from_alphas_cumprod(alphas_cumprod.clamp(min=1e-12), name=name)


def denoise_timesteps(train: DiscreteSchedule, t: torch.Tensor, mode: str):
    """The timestep(s) to feed the UNet for OU times ``t`` and the OU time(s) to read x̂₀ at.

    ``"nearest"``: the nearest training timestep and its OU time; ``"interpolate"``: the fractional
    timestep whose log-sigma matches ``t``, read at ``t`` itself.
    """
    if mode == "nearest":
        return train.nearest_step(t)
    if mode != "interpolate":
        raise ValueError(f"timestep_mode must be 'nearest' or 'interpolate', got {mode!r}")
    train_times = train.ou_times
    if (t > train_times.max()).any() or (t < train_times.min()).any():
        raise ValueError(
            f"t must lie within the training schedule's OU times [{train_times.min().item():.4g}, "
            f"{train_times.max().item():.4g}] for timestep_mode='interpolate'"
        )
    log_sigma = -0.5 * log_snr(train_times)  # increasing in the step index
    query = -0.5 * log_snr(t)
    return _interp(query, log_sigma, torch.arange(train.num_steps, dtype=torch.float64)).float(), t


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of increasing ``xp`` -> ``fp`` at ``x`` (all float64)."""
    idx = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    lo, hi = xp[idx - 1], xp[idx]
    w = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return fp[idx - 1] + w * (fp[idx] - fp[idx - 1])


def predicted_x0(model_output: torch.Tensor, x_ou: torch.Tensor, t, prediction_type: str) -> torch.Tensor:
    """Posterior-mean estimate of the clean sample from a network output.

    Parameters
    ----------
    model_output : (B, *shape) network output (epsilon, v or x0, after guidance).
    x_ou : (B, *shape) OU state ``e^{-t} x0 + sqrt(1 - e^{-2t}) z``.
    t : OU time: a float or a (B,) tensor.
    prediction_type : ``"epsilon"``, ``"v_prediction"``, ``"sample"``
        (:func:`critwin.clock.x0_from_prediction`) or ``"flow"`` (velocity ``z - x0``,
        :func:`critwin.adapters.diffusers.flow.flow_x0`).

    Returns
    -------
    (B, *shape) x̂₀ in the dtype of ``x_ou``.
    """
    if prediction_type == "flow":
        return flow_x0(model_output, x_ou, t)
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return x0_from_prediction(model_output, x_ou, t, prediction_type)
