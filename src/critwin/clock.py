"""One clock for everything: OU time ``t``.

The forward process is ``X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z``. A schedule writing
``x = alpha * x0 + sigma * z`` carries the same information as OU time

    t = 1/2 * log(1 + sigma^2 / alpha^2),   alpha_bar = e^{-2t},   SNR = 1 / (e^{2t} - 1).

Functions accept Python floats or tensors and return the same kind (tensors keep their dtype;
use float64 for exact round trips).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch

from critwin._memory import GRID_BYTES, check_memory
from critwin._validation import check_number, check_positive_int, check_real_tensor, check_time

__all__ = [
    "ou_time",
    "alpha_bar",
    "snr",
    "log_snr",
    "ve_sigma",
    "flow_s",
    "alpha_sigma",
    "ou_coefficients",
    "noised_variance",
    "x0_from_prediction",
    "PREDICTIONS",
    "DiscreteSchedule",
    "time_grid",
    "karras_sigmas",
    "TimeGrid",
    "RANGE_RTOL",
]

RANGE_RTOL = 1e-9
"""Relative slack when checking a requested OU time against the largest time of a grid: a time read
back from a saved grid (float round trips through JSON, log-SNR or alpha_bar) must still count as
inside the range. The only range tolerance in critwin (an absolute ``RANGE_RTOL * 1e-3`` covers a
range of 0)."""


def _as_tensor(value) -> tuple[torch.Tensor, bool]:
    if isinstance(value, torch.Tensor):
        return value, True
    return torch.as_tensor(value, dtype=torch.float64), False


def _out(value: torch.Tensor, was_tensor: bool):
    if was_tensor:
        return value
    return value.item() if value.ndim == 0 else value


def ou_time(*, alpha_bar=None, snr=None, log_snr=None, sigma=None, flow_s=None, alpha_sigma=None):
    """OU time from exactly one noise-level description.

    Parameters
    ----------
    alpha_bar : VP/DDPM cumulative signal coefficient in (0, 1].
    snr : signal-to-noise ratio alpha^2/sigma^2 in (0, inf].
    log_snr : log of the SNR.
    sigma : VE/EDM noise level (alpha = 1), >= 0.
    flow_s : rectified-flow time s in [0, 1) (x = (1-s) x0 + s z).
    alpha_sigma : pair ``(alpha, sigma)`` of a general schedule.

    Returns
    -------
    OU time ``t`` (same shape as the input).

    Examples
    --------
    >>> round(ou_time(snr=1.0), 6), ou_time(sigma=0.0)
    (0.346574, 0.0)
    """
    given = {
        k: v
        for k, v in dict(
            alpha_bar=alpha_bar, snr=snr, log_snr=log_snr, sigma=sigma, flow_s=flow_s, alpha_sigma=alpha_sigma
        ).items()
        if v is not None
    }
    if len(given) != 1:
        raise ValueError(
            "ou_time takes exactly one of alpha_bar=, snr=, log_snr=, sigma=, flow_s=, alpha_sigma=; "
            f"got {sorted(given) or 'none'}"
        )
    ((name, value),) = given.items()
    if name == "alpha_sigma":
        return _ou_time_of_pair(value)
    was = isinstance(value, torch.Tensor)
    # Infinite levels are meaningful (snr = inf is t = 0, sigma = inf is pure noise); NaN is not.
    x = check_real_tensor(value, name, None if was else torch.float64, allow_inf=True)
    return _out(_OU_TIME_OF[name](x), was)


def _ou_time_of_pair(value):
    """OU time of a general schedule's pair ``(alpha, sigma)``: ``1/2 log(1 + sigma^2 / alpha^2)``."""
    try:
        a, s = value
    except (TypeError, ValueError):
        raise ValueError("alpha_sigma must be a pair (alpha, sigma)") from None
    was = isinstance(a, torch.Tensor)
    a = check_real_tensor(a, "alpha_sigma[0] (alpha)", None if was else torch.float64)
    # sigma = inf is pure noise (t = inf), as for sigma=; NaN never is.
    s = check_real_tensor(s, "alpha_sigma[1] (sigma)", a.dtype, allow_inf=True).to(device=a.device)
    if (a <= 0).any() or (s < 0).any():
        raise ValueError("alpha_sigma needs alpha > 0 and sigma >= 0")
    return _out(0.5 * torch.log1p((s / a) ** 2), was)


def _of_alpha_bar(x: torch.Tensor) -> torch.Tensor:
    if ((x <= 0) | (x > 1)).any():
        raise ValueError("alpha_bar must lie in (0, 1]")
    return -0.5 * torch.log(x)


def _of_snr(x: torch.Tensor) -> torch.Tensor:
    if (x <= 0).any():
        raise ValueError("snr must be > 0")
    return 0.5 * torch.log1p(1.0 / x)


def _of_log_snr(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.nn.functional.softplus(-x)


def _of_sigma(x: torch.Tensor) -> torch.Tensor:
    if (x < 0).any():
        raise ValueError("sigma must be >= 0")
    return 0.5 * torch.log1p(x * x)


def _of_flow_s(x: torch.Tensor) -> torch.Tensor:
    if ((x < 0) | (x >= 1)).any():
        raise ValueError("flow_s must lie in [0, 1)")
    return 0.5 * torch.log1p((x / (1.0 - x)) ** 2)


# Each one-number noise-level description: its domain check and its OU time (module docstring).
_OU_TIME_OF = {
    "alpha_bar": _of_alpha_bar,
    "snr": _of_snr,
    "log_snr": _of_log_snr,
    "sigma": _of_sigma,
    "flow_s": _of_flow_s,
}


def _check_non_negative(x: torch.Tensor, name: str) -> None:
    if torch.isnan(x).any() or (x < 0).any():
        raise ValueError(f"{name} must be a non-negative OU time")


def _check_in_range(x: torch.Tensor, lo: float, hi: float, name: str, owner: str) -> None:
    """Raise unless every OU time in ``x`` is at most ``hi`` (up to :data:`RANGE_RTOL`)."""
    beyond = x > hi * (1 + RANGE_RTOL) + RANGE_RTOL * 1e-3
    if beyond.any():
        flat = beyond.flatten()
        first = int(flat.nonzero()[0, 0].item())
        label = name if x.ndim == 0 else f"{name}[{first}]"
        raise ValueError(
            f"{label}={x.flatten()[first].item():.4g} is beyond the {owner}'s range of OU times "
            f"[{lo:.4g}, {hi:.4g}]"
        )


def _check_t(t) -> tuple[torch.Tensor, bool]:
    was = isinstance(t, torch.Tensor)
    x = check_real_tensor(t, "t", None if was else torch.float64, allow_inf=True)  # inf: pure noise
    _check_non_negative(x, "t")
    return x, was


def alpha_bar(t):
    """VP cumulative signal coefficient ``e^{-2t}``.

    Examples
    --------
    >>> import math, critwin
    >>> critwin.alpha_bar(1.0) == math.exp(-2.0)
    True
    """
    x, was = _check_t(t)
    return _out(torch.exp(-2.0 * x), was)


def snr(t):
    """Signal-to-noise ratio ``1 / (e^{2t} - 1)`` (inf at t = 0).

    Examples
    --------
    >>> import critwin
    >>> round(critwin.snr(1.0), 4), critwin.snr(0.0)
    (0.1565, inf)
    """
    x, was = _check_t(t)
    return _out(1.0 / torch.expm1(2.0 * x), was)


def log_snr(t):
    """``log SNR = -log(e^{2t} - 1)``.

    Examples
    --------
    >>> import math, critwin
    >>> round(critwin.log_snr(1.0), 4), round(math.log(critwin.snr(1.0)), 4)
    (-1.8546, -1.8546)
    """
    x, was = _check_t(t)
    return _out(-torch.log(torch.expm1(2.0 * x)), was)


def ve_sigma(t):
    """VE/EDM noise level ``sqrt(e^{2t} - 1)`` (the OU state divided by its signal coefficient).

    Examples
    --------
    >>> import critwin
    >>> round(critwin.ve_sigma(1.0), 4), round(critwin.ou_time(sigma=2.5277), 4)  # and back
    (2.5277, 1.0)
    """
    x, was = _check_t(t)
    return _out(torch.sqrt(torch.expm1(2.0 * x)), was)


def flow_s(t):
    """Rectified-flow time ``s`` with the same SNR: ``s / (1 - s) = ve_sigma(t)``.

    Examples
    --------
    >>> import critwin
    >>> s = critwin.flow_s(1.0)
    >>> round(s, 4), round(s / (1 - s), 4) == round(critwin.ve_sigma(1.0), 4)
    (0.7165, True)
    """
    r = ve_sigma(t)
    return r / (1.0 + r)


def alpha_sigma(t):
    """The OU pair ``(e^{-t}, sqrt(1 - e^{-2t}))`` (validated ``t``; floats in, floats out).

    Examples
    --------
    >>> import critwin
    >>> a, s = critwin.alpha_sigma(1.0)
    >>> round(a, 4), round(s, 4), round(a * a + s * s, 12)  # variance preserving
    (0.3679, 0.9299, 1.0)
    """
    x, was = _check_t(t)
    a, s2 = ou_coefficients(x)
    return _out(a, was), _out(torch.sqrt(s2), was)


def ou_coefficients(t):
    """``(e^{-t}, 1 - e^{-2t})``: the signal factor and noise variance at OU time ``t``.

    The one place these coefficients are computed. ``t`` is a Python float (floats out: the unchecked
    fast path used inside hot loops) or a tensor (tensors out, same shape); :func:`alpha_sigma` is the
    validated version returning the standard deviation.
    """
    lib = torch if isinstance(t, torch.Tensor) else math
    # expm1 keeps 1 - e^{-2t} accurate for small t, where the data is barely noised.
    return lib.exp(-t), -lib.expm1(-2.0 * t)


def noised_variance(var, t):
    """Variance ``e^{-2t} var + 1 - e^{-2t}`` of ``X_t`` along a direction where ``X_0`` has variance ``var``.

    Parameters
    ----------
    var : float or tensor (any shape) of variances (eigenvalues) of the clean data.
    t : OU time (float, unchecked).

    Returns
    -------
    Same kind and shape as ``var``.
    """
    a, s2 = ou_coefficients(t)
    return a * a * var + s2


PREDICTIONS = ("epsilon", "v_prediction", "sample")
"""What a denoising network may predict (diffusers' ``prediction_type`` names): the noise ``z``, the
velocity ``v = e^{-t} z - sqrt(1 - e^{-2t}) x0`` or the clean sample ``x0`` itself."""


def x0_from_prediction(output: torch.Tensor, x_ou: torch.Tensor, t, prediction_type: str) -> torch.Tensor:
    """x̂₀ from a network's ``epsilon``, ``v_prediction`` or ``sample`` output at OU time ``t``.

    The one conversion of a noise or velocity prediction to the clean sample.

    Parameters
    ----------
    output : (B, *shape) the prediction.
    x_ou : (B, *shape) OU state ``e^{-t} x0 + sqrt(1 - e^{-2t}) z``.
    t : OU time: a float or a (B,) tensor.
    prediction_type : one of :data:`PREDICTIONS`.

    Returns
    -------
    (B, *shape) x̂₀ in the dtype of ``x_ou``.
    """
    if prediction_type not in PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {prediction_type!r}")
    if prediction_type == "sample":
        return output
    signal, noise = alpha_sigma(torch.as_tensor(t, dtype=torch.float64))
    shape = (-1,) + (1,) * (x_ou.ndim - 1)
    signal = signal.to(device=x_ou.device, dtype=x_ou.dtype).reshape(shape) if signal.ndim else float(signal)
    noise = noise.to(device=x_ou.device, dtype=x_ou.dtype).reshape(shape) if noise.ndim else float(noise)
    if prediction_type == "epsilon":
        return (x_ou - noise * output) / signal
    return signal * x_ou - noise * output  # v = signal * eps - noise * x0


def time_grid(t_max: float, n_steps: int, t_min: float = 0.0, spacing: str = "edm", rho: float = 7.0):
    """A decreasing grid of ``n_steps + 1`` OU times from ``t_max`` to ``t_min`` (float64).

    ``spacing``: ``"uniform"`` in t, ``"log"`` uniform in log-SNR, or ``"edm"`` (Karras rho-spacing of
    the VE sigma, dense near the data). With ``t_min = 0`` the last point is exactly 0.

    Examples
    --------
    >>> import critwin
    >>> grid = critwin.time_grid(5.0, 4)  # EDM (Karras) spacing: dense near 0
    >>> len(grid), grid[0].item(), grid[-1].item(), bool((grid[1:] < grid[:-1]).all())
    (5, 5.0, 0.0, True)
    """
    t_max = check_time(t_max, "t_max", allow_zero=False)
    t_min = check_time(t_min, "t_min")
    n_steps = check_positive_int(n_steps, "n_steps")
    check_memory(GRID_BYTES * (n_steps + 1), f"time_grid(n_steps={n_steps})")
    if t_min >= t_max:
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
    u = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    if spacing == "uniform":
        return t_max + (t_min - t_max) * u
    if spacing == "edm":
        grid = ou_time(sigma=karras_sigmas(n_steps + 1, ve_sigma(t_min), ve_sigma(t_max), rho))
    elif spacing == "log":
        if t_min == 0.0:
            # log-SNR is unbounded at t = 0: space down to a small time, then end exactly at 0.
            grid = time_grid(t_max, n_steps - 1, min(1e-3, t_max / 10), "log") if n_steps > 1 else None
            return (
                torch.cat([grid, torch.zeros(1, dtype=torch.float64)])
                if grid is not None
                else torch.tensor([t_max, 0.0], dtype=torch.float64)
            )
        hi, lo = log_snr(t_max), log_snr(t_min)
        grid = ou_time(log_snr=hi + (lo - hi) * u)
    else:
        raise ValueError(f"spacing must be one of 'uniform', 'log', 'edm', got {spacing!r}")
    grid[0], grid[-1] = t_max, t_min
    return grid


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """The Karras et al. (EDM) noise levels: ``n`` VE sigmas from ``sigma_max`` down to ``sigma_min``.

    ``sigma_i = (sigma_max^(1/rho) + i / (n - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` for
    ``i = 0 .. n - 1``: uniform in ``sigma^(1/rho)``, dense near the data for large ``rho``. Unlike
    k-diffusion's ``get_sigmas_karras`` no final 0 is appended; OU times follow with
    ``ou_time(sigma=...)``.

    Parameters
    ----------
    n : number of noise levels, >= 2.
    sigma_min : smallest level, finite and >= 0.
    sigma_max : largest level, finite and > ``sigma_min``.
    rho : spacing exponent, finite and > 0 (EDM uses 7).

    Returns
    -------
    (n,) float64 decreasing sigmas; the ends are ``sigma_max`` and ``sigma_min`` up to rounding.

    Examples
    --------
    >>> import critwin
    >>> [round(s, 3) for s in critwin.karras_sigmas(4, 0.002, 80.0).tolist()]
    [80.0, 9.723, 0.47, 0.002]
    """
    n = check_positive_int(n, "n")
    if n < 2:
        raise ValueError(f"n must be >= 2 (both ends of the range), got {n}")
    check_memory(GRID_BYTES * n, f"karras_sigmas(n={n})")
    sigma_min = check_number(sigma_min, "sigma_min", low=0.0)
    sigma_max = check_number(sigma_max, "sigma_max", low=0.0, closed="neither")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    rho = check_number(rho, "rho", low=0.0, closed="neither")
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + (lo - hi) * u) ** rho


class TimeGrid:
    """A sampler's decreasing grid of OU times, and the one owner of requested OU times.

    Grid index ``i`` is the state at ``times[i]``; ``times[-1]`` is the end of sampling (0: clean data).
    Requested times are validated here once (finite, >= 0, at most the largest finite time from which
    the sampler can start, :attr:`finite_max`, up to :data:`RANGE_RTOL`) and mapped to grid indices.

    Parameters
    ----------
    times : (L+1,) strictly decreasing non-negative OU times, L >= 1 (sequence or tensor).
    name : argument name used in error messages.
    allow_inf : accept ``times[0] = inf`` (a zero-terminal-SNR schedule's pure-noise start).

    Attributes
    ----------
    times : (L+1,) float64 tensor.
    """

    def __init__(self, times, name: str = "times", *, allow_inf: bool = False):
        seq = torch.as_tensor(times, dtype=torch.float64).detach().cpu().flatten()
        if seq.numel() < 2:
            raise ValueError(f"{name} must hold at least 2 OU times (start and end), got {seq.numel()}")
        finite = torch.isfinite(seq[1:] if allow_inf else seq).all()
        if not finite or torch.isnan(seq[0]) or (seq < 0).any():
            raise ValueError(f"{name} must be finite, non-negative OU times")
        if not (seq[1:] < seq[:-1]).all():
            raise ValueError(f"{name} must be strictly decreasing (reverse time runs from noise to data)")
        self.times = seq

    def __len__(self) -> int:
        return self.times.numel()

    @property
    def t_max(self) -> float:
        """Largest OU time a request may name (where sampling starts)."""
        return self.times[0].item()

    def check_index(self, index, name: str = "index", low: int = 0) -> int:
        """``index`` as a grid index in ``low..L`` (``L = len(self) - 1``: the end of sampling).

        The one check of grid indices: every process's ``add_noise``, ``run`` and state conversions
        use it (integers only: a float, a bool or a non-integer tensor is refused, never truncated).

        Examples
        --------
        >>> TimeGrid([2.0, 1.0, 0.0]).check_index(2, "stop")
        2
        """
        last = len(self) - 1
        try:
            value = None if isinstance(index, bool) else operator.index(index)
        except TypeError:
            value = None
        if value is None:
            raise ValueError(f"{name} must be an integer grid index in {low}..{last}, got {index!r}")
        if not low <= value <= last:
            raise ValueError(f"{name} must be a grid index in {low}..{last}, got {value}")
        return value

    def check_span(self, start, stop=None) -> tuple[int, int]:
        """``(start, stop)`` grid indices of a run: ``0 <= start <= stop <= L`` (``stop`` None: ``L``).

        Examples
        --------
        >>> TimeGrid([2.0, 1.0, 0.0]).check_span(1)
        (1, 2)
        """
        start = self.check_index(start, "start")
        stop = len(self) - 1 if stop is None else self.check_index(stop, "stop", low=start)
        return start, stop

    unit = "OU time"
    """What one requested time is (error messages); a grid on another clock states its own."""

    def check_value(self, value, name: str) -> float:
        """One requested time, checked on this grid's clock (here an OU time: finite, >= 0)."""
        return check_time(value, name)

    def check(self, times, name: str = "times") -> torch.Tensor:
        """Validate requested OU times against this grid.

        Parameters
        ----------
        times : a number or a sequence/tensor of OU times, each finite, >= 0 and <= :attr:`t_max`.
        name : argument name for error messages (elements are named ``name[i]``).

        Returns
        -------
        (T,) float64 tensor, order preserved (a number gives T = 1).
        """
        scalar = isinstance(times, (int, float)) or (isinstance(times, torch.Tensor) and times.ndim == 0)
        values = [times] if scalar else times
        try:
            values = list(values.tolist() if hasattr(values, "tolist") else values)
        except TypeError:
            raise ValueError(
                f"{name} must be a sequence of {self.unit}s, got {type(times).__name__}"
            ) from None
        if len(values) == 0:
            raise ValueError(f"{name} must hold at least one {self.unit}")
        labels = [name] if scalar else [f"{name}[{i}]" for i in range(len(values))]
        out = torch.tensor(
            [self.check_value(v, label) for v, label in zip(values, labels, strict=True)], dtype=torch.float64
        )
        _check_in_range(out[0] if scalar else out, self.times[-1].item(), self.finite_max, name, "sampler")
        return out

    @property
    def finite_max(self) -> float:
        """Largest finite OU time of the grid: the end of the range of requests. A grid that starts at
        pure noise (``times[0] = inf``, flow and zero-terminal-SNR schedules) realises no finite time
        beyond its second point, so a request there is refused rather than run at that point."""
        return self.t_max if math.isfinite(self.t_max) else self.times[1].item()

    def nearest(self, requested: torch.Tensor, clean_end: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid indices and OU times of checked requests (from :meth:`check`).

        Every time goes to the nearest grid point that sampling can start from (never the final index);
        with ``clean_end``, t = 0 instead goes to the final index, realised as 0 (no sampling at all).

        Returns
        -------
        indices : (T,) long.  realised : (T,) float64.
        """
        start = self.times[:-1]
        indices = (requested.reshape(-1, 1) - start.reshape(1, -1)).abs().argmin(dim=1)
        realised = start[indices]
        if clean_end:
            clean = requested.reshape(-1) == 0.0
            indices[clean] = len(self) - 1
            realised[clean] = 0.0
        return indices, realised

    def refined(self, requested: torch.Tensor) -> TimeGrid:
        """This grid with every positive requested time as a grid point (and ending at 0).

        Base points within 1e-12 of a requested time are replaced by it, so the step density of the base
        grid is kept; the start ``times[0]`` stays.
        """
        positive = requested[requested > 0]
        keep = [g for g in self.times.tolist() if positive.numel() == 0 or (positive - g).abs().min() > 1e-12]
        merged = set(keep) | set(positive.tolist()) | {0.0, self.t_max}
        return TimeGrid(sorted(merged, reverse=True))


def _check_schedule_steps(num_steps) -> int:
    num_steps = check_positive_int(num_steps, "num_steps")
    check_memory(GRID_BYTES * num_steps, f"a schedule of num_steps={num_steps}")
    return num_steps


@dataclass(frozen=True)
class DiscreteSchedule:
    """A discrete VP schedule (diffusers convention: step k has ``alpha_bar[k] = prod_{i<=k} (1 - beta_i)``).

    Attributes
    ----------
    betas : (T,) float64 tensor.
    name : human-readable name.

    Examples
    --------
    DDPM's linear schedule; the OU time of step k is ``-ln(alpha_bar[k]) / 2``:

    >>> import math, critwin
    >>> schedule = critwin.DiscreteSchedule.linear()
    >>> schedule
    DiscreteSchedule(name=linear, num_steps=1000, ou_times=[5e-05, 5.059])
    >>> schedule.ou_times[0].item() == -0.5 * math.log(1 - 1e-4)
    True
    >>> step, t = schedule.nearest_step(1.0)  # the step nearest to OU time 1
    >>> step, round(t, 4)
    (442, 1.0002)
    """

    betas: torch.Tensor
    name: str = "custom"

    def __post_init__(self):
        betas = check_real_tensor(self.betas, "betas", torch.float64).flatten()
        if betas.numel() == 0 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a non-empty sequence with every value in (0, 1)")
        object.__setattr__(self, "betas", betas)

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000):
        """DDPM linear schedule (Ho et al.)."""
        num_steps = _check_schedule_steps(num_steps)
        return cls(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64), "linear")

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012, num_steps: int = 1000):
        """Stable Diffusion's scaled-linear schedule (linear in sqrt(beta))."""
        num_steps = _check_schedule_steps(num_steps)
        root = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64)
        return cls(root**2, "scaled_linear")

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        """Nichol & Dhariwal cosine schedule (betas clipped at ``max_beta``, as in diffusers)."""
        num_steps = _check_schedule_steps(num_steps)

        def f(u):
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)]
        return cls(torch.tensor(betas, dtype=torch.float64), "cosine")

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod, name: str = "custom"):
        """Schedule from cumulative products ``alpha_bar[k]`` (strictly decreasing, each in (0, 1))."""
        ac = check_real_tensor(alphas_cumprod, "alphas_cumprod", torch.float64).flatten()
        if ac.numel() == 0 or not ((ac > 0) & (ac < 1)).all() or not (ac[1:] < ac[:-1]).all():
            raise ValueError("alphas_cumprod must be a non-empty, strictly decreasing sequence in (0, 1)")
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        return cls(1 - ac / prev, name)

    def __repr__(self) -> str:
        # one line: the tensor of betas (1000 numbers) is left out; its ends say which schedule it is
        t = self.ou_times
        ends = f"[{t[0]:.4g}, {t[-1]:.4g}]"
        return f"DiscreteSchedule(name={self.name}, num_steps={self.num_steps}, ou_times={ends})"

    @property
    def num_steps(self) -> int:
        return self.betas.numel()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, 0)

    @property
    def ou_times(self) -> torch.Tensor:
        """(T,) OU time of every step, increasing with the step index."""
        return -0.5 * torch.log(self.alphas_cumprod)

    @property
    def terminal_snr(self) -> float:
        """SNR at the last step; non-zero means 'fully noised' still carries signal."""
        ac = self.alphas_cumprod[-1].item()
        return ac / (1 - ac)

    def nearest_step(self, t, steps=None):
        """Nearest step (in OU time) to the requested time(s).

        Parameters
        ----------
        t : float or tensor of OU times.
        steps : optional subset of allowed step indices (e.g. a sampler's ``timesteps``).

        Returns
        -------
        (step, realised_t): step indices (int or long tensor) and their OU times.
        """
        times = self.ou_times
        allowed = torch.arange(self.num_steps) if steps is None else torch.as_tensor(steps).long().flatten()
        if allowed.numel() == 0 or allowed.min() < 0 or allowed.max() >= self.num_steps:
            raise ValueError(f"steps must be indices in 0..{self.num_steps - 1}")
        query, was = _as_tensor(t)
        query = query.to(torch.float64)
        _check_non_negative(query, "t")
        _check_in_range(query, times[allowed].min().item(), times[allowed].max().item(), "t", "schedule")
        idx = (query.reshape(-1, 1) - times[allowed].reshape(1, -1)).abs().argmin(dim=1)
        step = allowed[idx].reshape(query.shape)
        realised = times[step]
        if was:
            return step, realised
        return int(
            step.item()
        ) if step.ndim == 0 else step, realised.item() if realised.ndim == 0 else realised
