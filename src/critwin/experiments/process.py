"""The one interface every experiment runs on: a model together with its sampler.

A :class:`ReverseProcess` is discretised on a decreasing grid of OU times ``times[0] > ... > times[L]``.
Grid index ``i`` is "the state after noising to ``times[i]``" and, equally, "the state from which
the sampler's step ``i`` starts": ``run(add_noise(x0, i), start=i)`` is the forward-reverse
experiment at ``times[i]`` with no off-by-one. Exact mixtures, critwin's own samplers on any
denoiser, and diffusers schedulers (``critwin.adapters.diffusers``) all implement it.

Requested OU times are validated and put on a process's grid by :func:`realise_times` (through the
process's :class:`~critwin.clock.TimeGrid`); the experiments' other input checks live here too.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from critwin._display import short_repr
from critwin._files import fingerprint
from critwin._memory import check_memory
from critwin._validation import (
    call_model,
    callable_name,
    check_float_tensor,
    check_model_output,
    check_positive_int,
    check_sample_shape,
)
from critwin.clock import TimeGrid, alpha_sigma, time_grid
from critwin.experiments.grid_times import RealisedTimes, grid_times, realise_times
from critwin.samplers import SAMPLERS, as_denoiser, sample_ddim

__all__ = [
    "grid_times",
    "ReverseProcess",
    "MixtureProcess",
    "DiscreteProcess",
    "RealisedTimes",
    "GridPoint",
    "Callback",
    "as_process",
    "realise_times",
    "check_sampler",
    "check_samples",
    "check_model_shape",
    "check_cond",
    "check_no_cond",
    "CountingDenoiser",
    "step_description",
    "check_prior_memory",
    "check_sweep_memory",
    "select_cond",
    "nfe_since",
    "ou_noise",
    "shift_callback",
    "register_mixture_process",
]

Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]
"""``callback(index, t, x, x0_hat)``: called at every grid index the sampler passes."""


class GridPoint(NamedTuple):
    """A point of a process's grid: its ``index`` and its OU time ``t`` (``times[index]``)."""

    index: int
    t: float


class ReverseProcess(ABC):
    """A generative model and its sampler on a grid of OU times.

    Attributes
    ----------
    sample_shape : shape of one sample in model space (e.g. ``(d,)`` or ``(C, H, W)``).
    continuous : whether the model accepts any OU time; such processes can be re-gridded with
        :meth:`with_times` so that requested times are realised exactly.
    nfe : running count of per-sample denoiser evaluations (``None`` when the process does not
        count them); experiments report the difference over each unit of work.

    Examples
    --------
    Every experiment takes one; :class:`MixtureProcess` is the exact one of a Gaussian mixture:

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> process = critwin.MixtureProcess(mix, "exact", n_steps=20, t_max=5.0)
    >>> isinstance(process, critwin.ReverseProcess), process.sample_shape, process.continuous
    (True, (1,), True)
    >>> point = process.locate(1.0)  # the grid point a request for OU time 1 runs at
    >>> point.index, round(point.t, 4)
    (9, 0.9046)
    >>> process.with_times([2.0, 1.0, 0.0])  # re-gridded so that t = 1 is realised exactly
    MixtureProcess(sampler=exact, clock=ou, steps=2, t_max=2, t_end=0)
    """

    sample_shape: tuple[int, ...] = ()
    clock: str = "ou"
    """What the grid's levels are: ``"ou"`` (OU time, docs/theory.md §1); token processes use ``"kappa"`` or
    ``"hidden"`` (:mod:`critwin.experiments.token_process`)."""
    continuous: bool = False
    nfe: int | None = None
    """Per-sample denoiser evaluations so far, for processes that count them (``None``: not counted)."""

    @property
    @abstractmethod
    def times(self) -> torch.Tensor:
        """(L+1,) float64 decreasing OU times; ``times[-1]`` is the end of sampling (0 = clean)."""

    @abstractmethod
    def add_noise(
        self, x0: torch.Tensor, index: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Exact forward noising of model-space ``x0`` (batch first) to ``times[index]``."""

    @abstractmethod
    def run(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        cond: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Run the sampler from grid index ``start`` to ``stop`` (default: the end, ``L``)."""

    def prior(
        self, n: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        """Draw ``n`` states at ``times[0]`` (standard normal for a fully noised VP/OU state)."""
        check_prior_memory(n, self.sample_shape)
        return torch.randn(
            (n, *self.sample_shape), generator=generator, device=device, dtype=dtype or torch.float32
        )

    @property
    def grid(self) -> TimeGrid:
        """:attr:`times` as a :class:`~critwin.clock.TimeGrid` (it validates requests against them)."""
        # A zero-terminal-SNR schedule starts at infinite OU time (pure noise).
        return TimeGrid(self.times, allow_inf=True)

    def locate(self, t) -> GridPoint:
        """The grid point whose OU time is nearest to ``t`` (never the final, clean index)."""
        grid = self.grid
        index, realised = grid.nearest(grid.check(t, "t"), clean_end=False)
        return GridPoint(int(index[0]), float(realised[0]))

    def step_label(self, index: int) -> int | None:
        """The model's own step number at grid index ``index`` (diffusers timestep), if any."""
        return None

    def with_times(self, times) -> ReverseProcess:
        """A copy sampled on another grid (continuous processes only)."""
        raise ValueError(f"{type(self).__name__} has a fixed grid; it cannot be re-gridded")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data space -> model space (identity; a VAE encoder for latent models)."""
        return x

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> data space, where features are read (identity; a VAE decoder for latents)."""
        return x

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable provenance (sampler, schedule, model id) stored with results."""
        return {"process": type(self).__name__, "grid_size": int(self.times.numel())}

    def __repr__(self) -> str:
        """One line: the model (if named), the sampler or scheduler, the clock and the grid's range."""
        fields: dict[str, Any] = {}
        if getattr(self, "model_id", None):
            fields["model"] = self.model_id
        if getattr(self, "scheduler", None) is not None:
            fields["scheduler"] = type(self.scheduler).__name__
        if isinstance(getattr(self, "sampler", None), str):
            fields["sampler"] = self.sampler
        times = self.times
        fields.update(clock=self.clock, steps=int(times.numel()) - 1)
        fields.update(t_max=float(times[0]), t_end=float(times[-1]))
        return short_repr(type(self).__name__, fields)


# --------------------------------------------------------------------------------------------------
# Concrete processes
# --------------------------------------------------------------------------------------------------

_MIXTURE_SAMPLERS = ("exact", "ddpm", "ddim", "sde", "sde_exp", "heun")
_DISCRETE_SAMPLERS = ("ddim", "ddpm")


def check_sampler(name, known, argument: str = "sampler") -> str:
    """Return ``name`` if it is one of ``known``; otherwise raise a ValueError listing them."""
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"{argument} must be one of {', '.join(repr(k) for k in known)}; got {name!r}")
    return name


def shift_callback(callback: Callback | None, start: int) -> Callback | None:
    """A sampler callback (step ``i`` of a sub-grid) reported at the process's grid index ``start + i``."""
    if callback is None:
        return None

    def step_callback(i, t, state, x0_hat):
        callback(start + i, t, state, x0_hat)

    return step_callback


def ou_noise(x0: torch.Tensor, t: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact OU noising ``e^{-t} x0 + sqrt(1 - e^{-2t}) z`` of ``x0`` (any shape) at time ``t``."""
    a, s = alpha_sigma(t)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return a * x0 + s * noise


def check_no_cond(cond, owner: str) -> None:
    """Refuse conditioning for a process ``owner`` that takes none (ValueError naming ``cond``)."""
    if cond:
        raise ValueError(f"cond: {owner} takes no conditioning, got keys {sorted(cond)}")


class CountingDenoiser:
    """A denoiser that adds its batch size to ``owner.nfe`` at every call (the NFE measure of every
    experiment) and checks what it returns (:func:`critwin._validation.check_model_output`: the state's
    shape, a floating dtype at least as precise as the state's, finite values); processes hand it to
    critwin's samplers. It is the seam where a denoiser's output enters the engine: an exception of the
    denoiser is raised as a ``ModelError`` naming it and the step, with the original as its cause.

    Parameters
    ----------
    owner : the process whose ``nfe`` counter grows (an ``int`` attribute).
    denoise : ``denoise(x, t, **extra) -> x0_hat`` on a batch ``x`` of shape ``(B, ...)``.
    name : how errors name the denoiser (default: its qualified name).
    check : check the output here (False where the owner checks the model's raw output itself).

    Examples
    --------
    >>> import torch
    >>> from critwin import GaussianMixture, MixtureProcess
    >>> process = MixtureProcess(GaussianMixture(torch.zeros(1, 2, dtype=torch.float64)))
    >>> counted = CountingDenoiser(process, process.mixture.denoise)
    >>> _ = counted(torch.zeros(3, 2, dtype=torch.float64), 0.5)
    >>> process.nfe
    3
    """

    def __init__(
        self,
        owner: ReverseProcess,
        denoise: Callable[..., torch.Tensor],
        name: str | None = None,
        check: bool = True,
    ):
        self.owner = owner
        self.fn = denoise
        self.name = name or f"denoiser {callable_name(denoise)!r}"
        self.check = check

    def __call__(self, x, t, **extra):
        where = functools.partial(step_description, self.owner, t)
        out = call_model(self.fn, x, t, model=self.name, where=where, **extra)
        if self.check:
            check_model_output(
                out, model=self.name, where=where, shape=x.shape, dtype=x.dtype, device=x.device
            )
        self.owner.nfe += int(x.shape[0])
        return out


def check_prior_memory(n, sample_shape, what: str = "") -> None:
    """The memory guard on a prior draw of ``n`` states of ``sample_shape`` (float32, with its noise);
    ``what`` names the request in the message (default: the prior draw of ``n``)."""
    n = check_positive_int(n, "n")
    what = what or f"a prior draw of n={n} states"
    check_memory(2 * 4 * n * math.prod(sample_shape), f"{what} of shape {tuple(sample_shape)}")


# Bytes of one unit's entry in a sweep's job list (its name, its arguments, its stored result's key).
_UNIT_BYTES = 512


def check_sweep_memory(n_labels: int, n_units: int, what: str) -> None:
    """The memory guard on a sweep's bookkeeping before it starts: ``n_labels`` long labels per feature
    in its result (with the assembly's copies: 3 tables) and a job list of ``n_units`` units."""
    check_memory(3 * 8 * n_labels + _UNIT_BYTES * n_units, what, "lower the sizes, or raise chunk_size")


def step_description(process: ReverseProcess, t) -> str:
    """``"OU time t=0.512, grid index 3"``: where a process's model was called, for error messages."""
    value = t.flatten()[0].item() if isinstance(t, torch.Tensor) and t.numel() else t
    try:
        value = float(value)
    except (TypeError, ValueError):
        return f"OU time t={t!r}"
    text = f"OU time t={value:.6g}"
    times = getattr(process, "times", None)
    if isinstance(times, torch.Tensor):
        close = torch.nonzero(torch.isclose(times, torch.tensor(value, dtype=times.dtype))).flatten()
        if close.numel():
            text += f", grid index {int(close[0])}"
    return text


class MixtureProcess(ReverseProcess):
    """A Gaussian/empirical mixture with its exact denoiser, sampled by one of critwin's samplers.

    Parameters
    ----------
    mixture : ``GaussianMixture`` or ``EmpiricalMixture`` (anything with the mixture API of DESIGN.md).
    sampler : one of ``"exact"`` (exact posterior / reverse transitions: one denoiser evaluation per
        call of :meth:`run`, no discretisation error), ``"ddpm"``, ``"ddim"``, ``"sde"``, ``"sde_exp"``,
        ``"heun"`` (``critwin.samplers`` on the mixture's exact ``denoise``).
    n_steps : number of sampler steps on the default grid from ``t_max`` to 0.
    t_max : largest OU time (the range of the process; requests beyond it are refused).
    eta : DDIM stochasticity (only for ``sampler="ddim"``; default 0).
    spacing : grid spacing passed to :func:`critwin.clock.time_grid`.
    times : explicit decreasing grid of OU times ending at 0 (overrides ``n_steps``/``t_max``/``spacing``).

    Notes
    -----
    :meth:`prior` draws from the exact noised mixture at ``times[0]`` (not N(0, I)), so that the only
    approximation left in an experiment is the sampler's discretisation. ``nfe`` counts per-sample
    denoiser evaluations; for ``"exact"`` one posterior draw counts as one evaluation.

    Examples
    --------
    Exact reverse transitions from the exact law at ``times[0]``: the samples have the law of the
    mixture ``N(-4, 1) / 2 + N(4, 1) / 2``, with ``E[X^2] = 17`` (and ``sd(X^2) = sqrt(66)``, so 4 standard
    errors at n = 1000 are 1.03):

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> process = critwin.MixtureProcess(mix, "exact", n_steps=20, t_max=5.0)
    >>> process
    MixtureProcess(sampler=exact, clock=ou, steps=20, t_max=5, t_end=0)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = process.run(process.prior(1000, generator=g), generator=g)
    >>> tuple(x.shape), bool(abs((x**2).mean() - 17) < 1.03), process.nfe  # one posterior draw each
    ((1000, 1), True, 1000)
    """

    continuous = True

    def __init__(
        self,
        mixture,
        sampler: str = "exact",
        n_steps: int = 200,
        t_max: float = 10.0,
        eta: float | None = None,
        spacing: str = "edm",
        times=None,
    ):
        for attribute in ("denoise", "sample_posterior", "sample_reverse", "means"):
            if not hasattr(mixture, attribute):
                raise ValueError(
                    f"mixture must be a GaussianMixture or EmpiricalMixture (missing .{attribute}), "
                    f"got {type(mixture).__name__}"
                )
        self.mixture = mixture
        self.sampler = check_sampler(sampler, _MIXTURE_SAMPLERS)
        if eta is not None and sampler != "ddim":
            raise ValueError(f"eta is only used by sampler='ddim', got eta={eta!r} with sampler={sampler!r}")
        if eta is not None:
            eta = float(eta)
            if not (0.0 <= eta <= 1.0) or eta != eta:
                raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        self.eta = eta
        if times is None:
            n_steps = check_positive_int(n_steps, "n_steps")
            self._times = time_grid(t_max, n_steps, 0.0, spacing)
            self.spacing = spacing
        else:
            self._times = TimeGrid(times).times
            if self._times[-1].item() != 0.0:
                raise ValueError(f"times must end at 0 (clean data), got {self._times[-1].item():.4g}")
            self.spacing = "custom"
        self.sample_shape = (int(mixture.means.shape[-1]),)
        self.nfe = 0
        self._denoise = CountingDenoiser(self, mixture.denoise, name=f"{type(mixture).__name__}.denoise")

    @property
    def times(self) -> torch.Tensor:
        return self._times

    def add_noise(self, x0, index, generator=None):
        return ou_noise(x0, self._times[self.grid.check_index(index)].item(), generator)

    def prior(self, n, generator=None, device=None, dtype=None):
        x, _ = self.mixture.noised(self._times[0].item()).sample(n, generator=generator)
        return x.to(device=device or x.device, dtype=dtype or x.dtype)

    def run(self, x, start=0, stop=None, generator=None, callback=None, cond=None):
        check_no_cond(cond, "MixtureProcess")
        start, stop = self.grid.check_span(start, stop)
        if stop == start:
            return x
        grid = self._times[start : stop + 1]
        step_callback = shift_callback(callback, start)
        if self.sampler == "exact":
            out = self._run_exact(x, grid, generator, step_callback)
            # The exact sampler's draw is this process's model output: checked like a denoiser's.
            where = f"OU times {grid[0].item():.6g} -> {grid[-1].item():.6g}"
            return check_model_output(out, model=self._denoise.name, where=where, shape=x.shape)
        knobs = {"eta": self.eta} if self.eta is not None else {}
        return SAMPLERS[self.sampler](
            self._denoise, x, grid, generator=generator, callback=step_callback, **knobs
        )

    def _run_exact(self, x, grid, generator, callback):
        if callback is None:
            # Exact in one draw from any time: one posterior evaluation per sample.
            self.nfe += int(x.shape[0])
            t, s = grid[0].item(), grid[-1].item()
            if s == 0.0:
                out, _ = self.mixture.sample_posterior(x, t, generator=generator)
            else:
                out, _ = self.mixture.sample_reverse(x, t, s, generator=generator)
            return out
        # A callback needs every grid point: exact transitions step by step.
        for i in range(grid.numel() - 1):
            t, s = grid[i].item(), grid[i + 1].item()
            x0_hat = self.mixture.denoise(x, t)
            self.nfe += int(x.shape[0])
            callback(i, t, x, x0_hat)
            if s == 0.0:
                x, _ = self.mixture.sample_posterior(x, t, generator=generator)
            else:
                x, _ = self.mixture.sample_reverse(x, t, s, generator=generator)
        return x

    def with_times(self, times):
        return MixtureProcess(self.mixture, self.sampler, eta=self.eta, times=times)

    def describe(self):
        mixture = self.mixture
        covs = getattr(mixture, "covs", None)
        return {
            "process": "MixtureProcess",
            "sampler": self.sampler,
            "eta": self.eta,
            "spacing": self.spacing,
            "grid_size": int(self._times.numel()),
            "t_max": float(self._times[0].item()),
            "grid_fingerprint": fingerprint(self._times),
            "model": {
                "kind": type(mixture).__name__,
                "n_components": int(mixture.means.shape[0]),
                "dim": int(mixture.means.shape[-1]),
                "fingerprint": fingerprint(mixture.means, covs, getattr(mixture, "weights", None)),
            },
        }


class DiscreteProcess(ReverseProcess):
    """DDIM / DDPM sampling of any denoiser on a discrete VP schedule (diffusers conventions).

    The sampler's timesteps are ``n_steps`` steps of ``schedule`` spaced as in diffusers
    (``"leading"``: ``k = i * (T // n_steps) + steps_offset``; ``"trailing"``:
    ``round(T - i * T / n_steps) - 1``; ``"linspace"``: rounded ``linspace(0, T - 1, n_steps)``),
    visited from the largest down. Grid index ``i`` is timestep ``timesteps[i]`` at its OU time
    ``schedule.ou_times[timesteps[i]]``; the final grid point is clean data (``alpha_bar = 1``, as
    diffusers' ``set_alpha_to_one``). A VP state at step k is exactly the OU state at its OU time,
    so noising at step k and the first denoising step share one time: no off-by-one.

    Parameters
    ----------
    denoiser : object with ``.denoise(x, t, **cond)`` or callable ``f(x, t, **cond) -> x0_hat`` taking
        OU time ``t`` (a network wrapper maps it back to its timestep with ``schedule.nearest_step``).
    schedule : :class:`critwin.clock.DiscreteSchedule`.
    n_steps : number of inference steps (<= ``schedule.num_steps``).
    sampler : ``"ddim"`` (deterministic unless ``eta > 0``) or ``"ddpm"`` (ancestral, DDIM with eta = 1).
    eta : DDIM stochasticity in [0, 1].
    spacing : ``"leading"``, ``"trailing"`` or ``"linspace"``.
    steps_offset : added to leading timesteps (Stable Diffusion uses 1).
    sample_shape : shape of one sample (for :meth:`prior`).

    Examples
    --------
    DDIM on DDPM's 1000-step linear schedule with 50 leading steps, on the exact denoiser of a
    two-Gaussian mixture (half the samples end near each mean; 4 standard errors at n = 1000: 0.063):

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> schedule = critwin.DiscreteSchedule.linear()
    >>> process = critwin.DiscreteProcess(mix, schedule, n_steps=50, sample_shape=(1,))
    >>> process
    DiscreteProcess(sampler=ddim, clock=ou, steps=50, t_max=4.869, t_end=0)
    >>> process.step_label(0), process.step_label(49)  # the schedule's timesteps, largest first
    (980, 0)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = process.run(process.prior(1000, generator=g).double(), generator=g)
    >>> bool(abs((x > 0).double().mean() - 0.5) < 0.063), process.nfe  # 50 evaluations per sample
    (True, 50000)
    """

    continuous = False

    def __init__(
        self,
        denoiser,
        schedule,
        n_steps: int = 50,
        sampler: str = "ddim",
        eta: float = 0.0,
        spacing: str = "leading",
        steps_offset: int = 0,
        sample_shape: tuple[int, ...] = (),
    ):
        self.denoiser = denoiser
        self._denoise = CountingDenoiser(self, as_denoiser(denoiser))
        self.schedule = schedule
        total = schedule.num_steps
        n_steps = check_positive_int(n_steps, "n_steps")
        if n_steps > total:
            raise ValueError(f"n_steps must be <= the schedule's {total} steps, got {n_steps}")
        self.sampler = check_sampler(sampler, _DISCRETE_SAMPLERS)
        eta = 1.0 if sampler == "ddpm" else float(eta)
        if not (0.0 <= eta <= 1.0):
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        self.eta = eta
        if spacing == "leading":
            steps = torch.arange(n_steps) * (total // n_steps) + int(steps_offset)
        elif spacing == "trailing":
            steps = torch.round(torch.arange(total, 0, -total / n_steps, dtype=torch.float64)).long() - 1
            steps = steps.flip(0)
        elif spacing == "linspace":
            steps = torch.round(torch.linspace(0, total - 1, n_steps, dtype=torch.float64)).long()
        else:
            raise ValueError(f"spacing must be one of 'leading', 'trailing', 'linspace', got {spacing!r}")
        if steps.min() < 0 or steps.max() >= total:
            raise ValueError(f"steps_offset={steps_offset} puts timesteps outside 0..{total - 1}")
        self.spacing = spacing
        self.steps_offset = int(steps_offset)
        self.timesteps = steps.flip(0).contiguous()  # decreasing, like diffusers
        ou = schedule.ou_times[self.timesteps]
        self._times = torch.cat([ou, torch.zeros(1, dtype=torch.float64)])
        self.sample_shape = check_sample_shape(sample_shape)
        self.nfe = 0

    @property
    def times(self) -> torch.Tensor:
        return self._times

    def step_label(self, index):
        index = int(index)
        return int(self.timesteps[index].item()) if index < self.timesteps.numel() else None

    def add_noise(self, x0, index, generator=None):
        index = self.grid.check_index(index)
        # The final grid point is clean data (alpha_bar = 1, as diffusers' set_alpha_to_one).
        steps = self.timesteps
        ab = self.schedule.alphas_cumprod[steps[index]].item() if index < steps.numel() else 1.0
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return ab**0.5 * x0 + (1.0 - ab) ** 0.5 * noise

    def run(self, x, start=0, stop=None, generator=None, callback=None, cond=None):
        start, stop = self.grid.check_span(start, stop)
        if stop == start:
            return x
        step_callback = shift_callback(callback, start)
        return sample_ddim(
            self._denoise,
            x,
            self._times[start : stop + 1],
            generator=generator,
            callback=step_callback,
            extra_args=dict(cond or {}),
            eta=self.eta,
        )

    def describe(self):
        return {
            "process": "DiscreteProcess",
            "sampler": self.sampler,
            "eta": self.eta,
            "schedule": self.schedule.name,
            "schedule_steps": int(self.schedule.num_steps),
            "schedule_fingerprint": fingerprint(self.schedule.betas),
            "n_steps": int(self.timesteps.numel()),
            "spacing": self.spacing,
            "steps_offset": self.steps_offset,
            "denoiser": getattr(self.denoiser, "name", None) or type(self.denoiser).__name__,
        }


# --------------------------------------------------------------------------------------------------
# Experiment inputs on a process
# --------------------------------------------------------------------------------------------------


_MIXTURE_PROCESSES: list[tuple[type, Callable[..., ReverseProcess]]] = []


def register_mixture_process(kind: type, factory: Callable[..., ReverseProcess]) -> None:
    """Let :func:`as_process` wrap a mixture of class ``kind`` as ``factory(mixture, sampler, n_steps,
    t_max, eta)`` (how :mod:`~critwin.experiments.token_process` runs a ``CategoricalMixture``)."""
    _MIXTURE_PROCESSES.append((kind, factory))


def as_process(model, sampler, n_steps=None, t_max=None, eta=None) -> ReverseProcess:
    """A :class:`ReverseProcess` from a process or a mixture (wrapped in :class:`MixtureProcess`).

    ``n_steps``, ``t_max`` and ``eta`` configure a mixture's sampler; a process has its own (passing
    them, or another ``sampler`` than its own, is a ValueError).
    """
    if isinstance(model, ReverseProcess):
        if n_steps is not None or t_max is not None or eta is not None:
            raise ValueError(
                "n_steps, t_max and eta configure a mixture's sampler; a ReverseProcess has its own"
            )
        own = model.describe().get("sampler")
        if sampler is not None and own is not None and sampler != own:
            raise ValueError(
                f"sampler={sampler!r} differs from the process's own sampler {own!r}; pass sampler=None"
            )
        return model
    for kind, factory in _MIXTURE_PROCESSES:
        if isinstance(model, kind):
            return factory(model, sampler, n_steps, t_max, eta)
    if hasattr(model, "sample_posterior") and hasattr(model, "denoise"):
        kwargs = {"sampler": "exact" if sampler is None else sampler, "eta": eta}
        if n_steps is not None:
            kwargs["n_steps"] = n_steps
        if t_max is not None:
            kwargs["t_max"] = t_max
        return MixtureProcess(model, **kwargs)
    raise ValueError(
        f"model must be a GaussianMixture, EmpiricalMixture or ReverseProcess, got {type(model).__name__}"
    )


def check_samples(x0, process, name: str = "x0") -> torch.Tensor:
    """``x0`` (array or tensor, batch first) as a non-empty, finite floating-point tensor (token ids for
    a process on a token clock: its ``check_tokens``)."""
    if getattr(process, "clock", "ou") != "ou":
        return process.check_tokens(x0, name)
    if isinstance(x0, np.ndarray):
        x0 = torch.from_numpy(x0)
    if not isinstance(x0, torch.Tensor) or x0.ndim == 0 or x0.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty tensor with the batch dimension first")
    return check_float_tensor(x0, name)


def check_model_shape(z0: torch.Tensor, process, name: str = "x0") -> torch.Tensor:
    """Check encoded samples against the process's ``sample_shape`` (when it declares one)."""
    shape = tuple(getattr(process, "sample_shape", ()) or ())
    if shape and tuple(z0.shape[1:]) != shape:
        raise ValueError(
            f"{name} must hold samples of shape {shape} (in model space), got {tuple(z0.shape[1:])}"
        )
    return z0


def check_cond(cond) -> dict[str, Any]:
    """``cond`` as a dict (empty for None); which tensors are per sample is decided by :func:`select_cond`."""
    if cond is None:
        return {}
    if not isinstance(cond, Mapping):
        raise ValueError(f"cond must be a dict of tensors, got {type(cond).__name__}")
    return dict(cond)


def select_cond(cond: Mapping[str, Any], rows: torch.Tensor, n_rows: int) -> dict[str, Any]:
    """Conditioning for the samples ``rows``: per-sample tensors (first dim ``n_rows``) are indexed."""
    out = {}
    for key, value in cond.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n_rows:
            out[key] = value[rows.to(value.device)]
        else:
            out[key] = value
    return out


def nfe_since(process, before: int | None) -> np.int64:
    """Per-sample denoiser evaluations of ``process`` since its counter read ``before`` (0 if uncounted)."""
    return np.int64(0 if before is None else process.nfe - before)
