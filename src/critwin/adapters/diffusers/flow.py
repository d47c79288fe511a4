"""Rectified flow (``FlowMatchEulerDiscreteScheduler``: SD3, Flux, ...) on the OU clock.

A flow-matching state at time ``s`` is ``x_s = (1 - s) x0 + s z``: with ``alpha = 1 - s`` and ``sigma = s`` it
is the OU state at ``t = 1/2 log(1 + sigma^2 / alpha^2)`` (:func:`critwin.clock.ou_time` with ``flow_s``)
multiplied by ``sqrt(alpha^2 + sigma^2)``. ``s = 1`` (pure noise, where every flow schedule starts) is OU time
``inf`` with scale 1. The network predicts the velocity ``v = dx_s/ds = z - x0``, so
``x0_hat = x_s - s v``.
"""

from __future__ import annotations

import math

import torch

from critwin.clock import flow_s, ou_time

__all__ = [
    "dynamic_shift_mu",
    "flow_grid_times",
    "flow_ou_times",
    "flow_state",
    "flow_state_scale",
    "flow_time_s",
    "flow_x0",
]


def flow_ou_times(s: torch.Tensor) -> torch.Tensor:
    """OU times (float64) of flow times ``s`` in [0, 1]; ``s = 1`` is ``inf``."""
    s = torch.as_tensor(s).detach().cpu().double()
    if torch.isnan(s).any() or (s < 0).any() or (s > 1).any():
        raise ValueError("flow times s must lie in [0, 1]")
    pure = s >= 1.0
    finite = ou_time(flow_s=torch.where(pure, torch.zeros_like(s), s))
    return torch.where(pure, torch.full_like(s, math.inf), finite)


def flow_time_s(t) -> torch.Tensor:
    """Flow time ``s`` (float64) of OU time(s) ``t``; ``t = inf`` is ``s = 1``."""
    tt = torch.as_tensor(t, dtype=torch.float64)
    pure = torch.isinf(tt)
    return torch.where(pure, torch.ones_like(tt), flow_s(torch.where(pure, torch.zeros_like(tt), tt)))


def flow_state_scale(s) -> torch.Tensor:
    """Flow state / OU state at flow time ``s``: ``sqrt((1 - s)^2 + s^2)`` (float64)."""
    s = torch.as_tensor(s, dtype=torch.float64)
    return torch.sqrt((1.0 - s) ** 2 + s**2)


def _per_sample(value: torch.Tensor, like: torch.Tensor):
    """A float for a scalar, else a (B, 1, ...) tensor broadcasting against ``like``."""
    if not value.ndim:
        return float(value)
    return value.to(device=like.device, dtype=like.dtype).reshape((-1,) + (1,) * (like.ndim - 1))


def flow_state(x_ou: torch.Tensor, t) -> torch.Tensor:
    """The flow state ``(1 - s) x0 + s z`` of the OU state ``x_ou`` at OU time(s) ``t`` (float or (B,))."""
    return x_ou * _per_sample(flow_state_scale(flow_time_s(t)), x_ou)


def flow_x0(velocity: torch.Tensor, x_ou: torch.Tensor, t) -> torch.Tensor:
    """x̂₀ from a velocity prediction ``v = z - x0`` and the OU state ``x_ou`` at OU time ``t``.

    Parameters
    ----------
    velocity : (B, *shape) network output (after guidance).
    x_ou : (B, *shape) OU state.
    t : OU time, a float or a (B,) tensor (``inf`` allowed).

    Returns
    -------
    (B, *shape) x̂₀ in the dtype of ``x_ou``.
    """
    return flow_state(x_ou, t) - _per_sample(flow_time_s(t), x_ou) * velocity


def flow_grid_times(scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """OU time at each grid index (L+1,) and where each step lands (L,), from the scheduler's flow sigmas."""
    times = flow_ou_times(scheduler.sigmas)
    return times, times[1:].clone()


def dynamic_shift_mu(scheduler_config, image_seq_len: int) -> float:
    """The ``mu`` the SD3/Flux pipelines pass to ``set_timesteps`` under ``use_dynamic_shifting``.

    Linear in the number of latent patches between (``base_image_seq_len``, ``base_shift``) and
    (``max_image_seq_len``, ``max_shift``), with the pipelines' defaults.
    """
    base_len = scheduler_config.get("base_image_seq_len", 256)
    max_len = scheduler_config.get("max_image_seq_len", 4096)
    base_shift = scheduler_config.get("base_shift", 0.5)
    max_shift = scheduler_config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + base_shift - slope * base_len
