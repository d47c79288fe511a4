"""Any callable denoiser as a :class:`~critwin.experiments.process.ReverseProcess` (EDM / k-diffusion).

An EDM or k-diffusion denoiser ``D(x, sigma)`` works in VE variables: ``x = x0 + sigma z`` and it returns
``x0_hat``. The OU state at time ``t`` is the same state rescaled, ``y = e^{-t} (x0 + sigma z)`` with
``sigma = sqrt(e^{2t} - 1)``, so ``E[x0 | y] = D(e^t y, sigma)``: critwin's samplers run on it in OU
time unchanged. A denoiser already written in OU variables, ``D(y, t)``, is used as it is.

A callable may also predict the noise ``z`` or the velocity ``v = e^{-t} z - sqrt(1 - e^{-2t}) x0``
instead of ``x0`` (``prediction_type``, diffusers' names); :func:`critwin.clock.x0_from_prediction`
turns its output into ``x0_hat`` (with ``x = x0 + sigma z``, ``x0 = x - sigma z``: the same formula).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from critwin._files import fingerprint
from critwin._memory import GRID_BYTES, check_memory
from critwin._validation import (
    call_model,
    callable_name,
    check_model_output,
    check_number,
    check_positive_int,
    check_sample_shape,
)
from critwin.clock import (
    PREDICTIONS,
    TimeGrid,
    alpha_sigma,
    karras_sigmas,
    ou_time,
    ve_sigma,
    x0_from_prediction,
)
from critwin.experiments.process import (
    CountingDenoiser,
    ReverseProcess,
    check_no_cond,
    check_sampler,
    ou_noise,
    shift_callback,
    step_description,
)
from critwin.samplers import SAMPLERS

__all__ = ["CallableProcess", "karras_sigmas", "PARAMETERISATIONS"]

PARAMETERISATIONS = ("ve", "ou")
"""Declared conventions of a callable denoiser: ``"ve"`` is ``D(x, sigma)`` with ``x = x0 + sigma z``
(EDM, k-diffusion); ``"ou"`` is ``D(y, t)`` with the OU state ``y`` at OU time ``t``. Both return x0_hat."""

_CALLABLE_SAMPLERS = ("ddpm", "ddim", "sde", "sde_exp", "heun")


class CallableProcess(ReverseProcess):
    """A callable denoiser with a declared parameterisation, sampled by one of critwin's samplers.

    The default grid is the EDM one: ``n_steps`` Karras noise levels from ``sigma_max`` down to
    ``sigma_min`` (:func:`karras_sigmas`), then clean data (sigma = 0), as OU times.

    Parameters
    ----------
    denoiser : callable ``D(x, level)`` on batches ``(B, *sample_shape)`` returning x0_hat (or the
        noise or velocity, see ``prediction_type``); ``level`` is the VE sigma (``parameterisation="ve"``)
        or the OU time (``"ou"``), a Python float unless ``batch_level``.
    parameterisation : ``"ve"`` or ``"ou"`` (see :data:`PARAMETERISATIONS`).
    prediction_type : what the callable returns: ``"sample"`` (x0_hat, the EDM convention), ``"epsilon"``
        (the noise ``z`` of the state) or ``"v_prediction"`` (``e^{-t} z - sqrt(1 - e^{-2t}) x0`` at the
        call's OU time ``t``), as in :data:`critwin.clock.PREDICTIONS`.
    sample_shape : shape of one sample (for :meth:`prior` and the experiments' shape check).
    sampler : ``"ddpm"``, ``"ddim"``, ``"sde"``, ``"sde_exp"`` or ``"heun"`` (``critwin.samplers``).
    n_steps : number of Karras noise levels on the default grid, >= 2 (the sampler takes one step per
        level, the last from ``sigma_min`` to the data).
    sigma_min : smallest nonzero noise level of the default grid (EDM: 0.002).
    sigma_max : largest noise level of the default grid (EDM: 80); it sets the process's range.
    rho : Karras spacing exponent (EDM: 7).
    eta : DDIM stochasticity in [0, 1] (only with ``sampler="ddim"``).
    batch_level : pass the level as a ``(B,)`` tensor in the state's dtype and device (the k-diffusion
        convention) instead of a float.
    times : explicit decreasing OU times ending at 0 (overrides the Karras grid).

    Notes
    -----
    :meth:`prior` draws N(0, I), the OU state at infinite time: at ``sigma_max = 80`` the signal
    coefficient is ``1 / sqrt(1 + 80^2)`` ~ 0.0125. ``nfe`` counts per-sample denoiser evaluations.

    Examples
    --------
    The exact VE denoiser of data ``N(0, 4)`` is ``D(x, sigma) = 4 x / (4 + sigma^2)``. The probability-flow
    ODE then maps every state by one factor, exactly ``2 sqrt(6401 / 6404) = 1.9995`` from
    ``sigma_max = 80``; Heun's 40 steps give 2.01:

    >>> import torch, critwin
    >>> process = critwin.CallableProcess(
    ...     lambda x, sigma: 4 * x / (4 + sigma**2), sample_shape=(1,), sampler="heun", n_steps=40
    ... )
    >>> process
    CallableProcess(sampler=heun, clock=ou, steps=40, t_max=4.382, t_end=0)
    >>> x = process.prior(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> gain = process.run(x) / x
    >>> round(gain.min().item(), 2), round(gain.max().item(), 2)
    (2.01, 2.01)
    """

    continuous = True

    def __init__(
        self,
        denoiser: Callable[..., torch.Tensor],
        parameterisation: str = "ve",
        sample_shape: tuple[int, ...] = (),
        sampler: str = "ddim",
        n_steps: int = 40,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        eta: float | None = None,
        batch_level: bool = False,
        times=None,
        prediction_type: str = "sample",
    ):
        if not callable(denoiser):
            raise ValueError(
                f"denoiser must be callable D(x, level) -> x0_hat, got {type(denoiser).__name__}"
            )
        self.denoiser = denoiser
        self.parameterisation = check_sampler(parameterisation, PARAMETERISATIONS, "parameterisation")
        self.prediction_type = check_sampler(prediction_type, PREDICTIONS, "prediction_type")
        self.sampler = check_sampler(sampler, _CALLABLE_SAMPLERS)
        if eta is not None and sampler != "ddim":
            raise ValueError(f"eta is only used by sampler='ddim', got eta={eta!r} with sampler={sampler!r}")
        self.eta = None if eta is None else check_number(eta, "eta", low=0.0, high=1.0)
        self.batch_level = bool(batch_level)
        self.sample_shape = check_sample_shape(sample_shape)
        if times is None:
            if check_positive_int(n_steps, "n_steps") < 2:
                raise ValueError(f"n_steps must be >= 2 (sigma_max and sigma_min), got {n_steps}")
            check_memory(
                GRID_BYTES * (n_steps + 1), f"a grid of n_steps={n_steps}"
            )  # named as the user typed
            # The last step goes from sigma_min to the data: sigma_min = 0 would be a zero-length step.
            check_number(sigma_min, "sigma_min", low=0.0, closed="neither")
            sigmas = karras_sigmas(n_steps, sigma_min, sigma_max, rho)
            times = torch.cat([ou_time(sigma=sigmas), torch.zeros(1, dtype=torch.float64)])
            self.grid_kind = {"sigma_min": float(sigma_min), "sigma_max": float(sigma_max), "rho": float(rho)}
        else:
            self.grid_kind = "custom"
        self._times = TimeGrid(times).times
        if self._times[-1].item() != 0.0:
            raise ValueError(f"times must end at 0 (clean data), got {self._times[-1].item():.4g}")
        self.nfe = 0
        self._name = f"denoiser {callable_name(denoiser)!r}"
        # The raw output is checked in _ou_denoise (before it becomes x0_hat), so not again here.
        self._denoise = CountingDenoiser(self, self._ou_denoise, name=self._name, check=False)

    def _ou_denoise(self, y: torch.Tensor, t: float) -> torch.Tensor:
        """``E[x0 | Y_t = y]`` from the callable, whatever its parameterisation and prediction."""
        if self.parameterisation == "ve":
            a, _ = alpha_sigma(t)
            x, level = y / a, ve_sigma(t)
        else:
            x, level = y, t
        if self.batch_level:
            level = torch.full((y.shape[0],), level, dtype=y.dtype, device=y.device)
        where = functools.partial(step_description, self, t)
        out = call_model(self.denoiser, x, level, model=self._name, where=where)
        check_model_output(out, model=self._name, where=where, shape=y.shape, dtype=y.dtype, device=y.device)
        return x0_from_prediction(out, y, t, self.prediction_type)

    def denoise(self, y: torch.Tensor, t: float) -> torch.Tensor:
        """The denoiser in OU variables: ``(B, *sample_shape)`` state at OU time ``t`` -> x0_hat."""
        return self._ou_denoise(y, t)

    @property
    def times(self) -> torch.Tensor:
        return self._times

    def add_noise(self, x0, index, generator=None):
        return ou_noise(x0, self._times[self.grid.check_index(index)].item(), generator)

    def run(self, x, start=0, stop=None, generator=None, callback=None, cond=None):
        check_no_cond(cond, "CallableProcess")
        start, stop = self.grid.check_span(start, stop)
        if stop == start:
            return x
        step_callback = shift_callback(callback, start)
        knobs = {"eta": self.eta} if self.eta is not None else {}
        return SAMPLERS[self.sampler](
            self._denoise,
            x,
            self._times[start : stop + 1],
            generator=generator,
            callback=step_callback,
            **knobs,
        )

    def with_times(self, times):
        return CallableProcess(
            self.denoiser,
            self.parameterisation,
            self.sample_shape,
            self.sampler,
            eta=self.eta,
            batch_level=self.batch_level,
            times=times,
            prediction_type=self.prediction_type,
        )

    def describe(self):
        return {
            "process": "CallableProcess",
            "sampler": self.sampler,
            "eta": self.eta,
            "parameterisation": self.parameterisation,
            "prediction_type": self.prediction_type,
            "grid": self.grid_kind,
            "grid_size": int(self._times.numel()),
            "t_max": float(self._times[0].item()),
            "grid_fingerprint": fingerprint(self._times),
            "denoiser": getattr(self.denoiser, "__name__", None) or type(self.denoiser).__name__,
        }
