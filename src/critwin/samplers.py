"""Reverse samplers on any denoiser, in OU time, with one signature (k-diffusion style).

Every sampler is ``sample_X(model, x, times, *, generator=None, callback=None, extra_args=None, ...)``:

- ``model``: an object with ``.denoise(x, t, **extra_args) -> x0_hat`` (every mixture is one) or a
  callable ``f(x, t, **extra_args) -> x0_hat``. The score follows as ``-(x - e^{-t} x0_hat) / (1 - e^{-2t})``.
- ``x``: the state at OU time ``times[0]``; ``times``: decreasing OU times; the return value is the
  state at ``times[-1]``.
- ``callback(i, t, x, x0_hat)`` is called at every step with the state before the step.

A step that ends at t = 0 returns the denoiser's x0_hat for the SDE and DDIM samplers (the usual
"denoise at the end": the score is singular at t = 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from critwin._validation import check_float_tensor, check_generator
from critwin.clock import TimeGrid, alpha_sigma, ou_coefficients
from critwin.mixtures import CategoricalMixture

__all__ = [
    "sample_ddim",
    "sample_ddpm",
    "sample_euler_maruyama",
    "sample_exponential",
    "sample_heun",
    "sample_exact",
    "SAMPLERS",
    "as_denoiser",
]


def as_denoiser(model) -> Callable[..., torch.Tensor]:
    """``f(x, t, **extra) -> x0_hat`` from a model with ``.denoise`` or a plain callable."""
    if hasattr(model, "denoise"):
        return model.denoise
    if callable(model):
        return model
    raise ValueError(f"model must have a .denoise(x, t) method or be callable, got {type(model).__name__}")


def _start(x, times, generator) -> tuple[torch.Tensor, list[float]]:
    """The checked initial state (a finite floating-point tensor: an integer state would truncate every
    step) and the validated grid (see :class:`critwin.clock.TimeGrid`) as Python floats."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor (the state at times[0]), got {type(x).__name__}")
    check_generator(generator)
    return check_float_tensor(x, "x"), TimeGrid(times).times.tolist()


def _noise(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _score_from_denoised(x, x0_hat, t: float) -> torch.Tensor:
    a, sigma = alpha_sigma(t)
    return -(x - a * x0_hat) / (sigma * sigma)


def _steps(model, x, times, callback, extra_args):
    """Yield ``(i, t, s, x0_hat)`` for each step, calling the denoiser and the callback once."""
    denoise = as_denoiser(model)
    extra = extra_args or {}
    for i, (t, s) in enumerate(zip(times[:-1], times[1:], strict=True)):
        x0_hat = denoise(x[0], t, **extra)
        if callback is not None:
            callback(i, t, x[0], x0_hat)
        yield i, t, s, x0_hat


def _denoised_at_end(model, x, times, generator, callback, extra_args, step) -> torch.Tensor:
    """The SDE and DDIM loop: ``x <- step(x, t, s, x0_hat)`` from every grid time ``t`` to the next ``s``,
    except that a step ending at ``s = 0`` returns the denoiser's ``x0_hat`` (the score is singular there)."""
    x, times = _start(x, times, generator)
    state = [x]
    for _, t, s, x0_hat in _steps(model, state, times, callback, extra_args):
        state[0] = x0_hat if s == 0.0 else step(state[0], t, s, x0_hat)
    return state[0]


def sample_ddim(
    model,
    x: torch.Tensor,
    times: Sequence[float],
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback=None,
    extra_args=None,
) -> torch.Tensor:
    """DDIM with stochasticity ``eta`` (0: deterministic DDIM; 1: DDPM ancestral sampling).

    From ``t`` to ``s < t``: ``x_s = a_s x0 + sqrt(sigma_s^2 - c^2) eps_hat + c z`` with
    ``c = eta * (sigma_s / sigma_t) * sqrt(1 - e^{-2(t - s)})``, the DDPM posterior standard deviation
    when ``eta = 1``.

    Examples
    --------
    Deterministic DDIM from exact draws of ``X_3`` of a two-Gaussian mixture to ``t = 0.001``
    (first order in the step: 200 steps keep its bias well inside the tolerance):

    >>> import math, torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=torch.float64))  # N(+-2, 1)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = mix.noised(3.0).sample(2000, generator=g)[0]  # exact draws of X_3
    >>> y = critwin.sample_ddim(mix, x, critwin.time_grid(3.0, 200, t_min=1e-3))
    >>> # X_0.001 has mean 0 and E[X^2] = 4 e^-0.002 + 1; 4 standard errors at n = 2000: 0.2 and 0.38
    >>> exact = 4 * math.exp(-2e-3) + 1
    >>> abs(y.mean().item()) < 0.2, abs((y**2).mean().item() - exact) < 0.38
    (True, True)
    >>> same = critwin.sample_ddim(mix, x, [3.0, 1.0, 0.0]) == critwin.sample_ddim(mix, x, [3.0, 1.0, 0.0])
    >>> bool(same.all())  # eta = 0 needs no generator
    True
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")

    def step(x, t, s, x0_hat):
        a_t, sig_t = alpha_sigma(t)
        a_s, sig_s = alpha_sigma(s)
        eps_hat = (x - a_t * x0_hat) / sig_t
        c = eta * sig_s / sig_t * math.sqrt(ou_coefficients(t - s)[1])
        c = min(c, sig_s)
        new = a_s * x0_hat + math.sqrt(max(sig_s * sig_s - c * c, 0.0)) * eps_hat
        if c > 0:
            new = new + c * _noise(new, generator)
        return new

    return _denoised_at_end(model, x, times, generator, callback, extra_args, step)


def sample_ddpm(model, x, times, *, generator=None, callback=None, extra_args=None) -> torch.Tensor:
    """DDPM ancestral sampling: :func:`sample_ddim` with ``eta = 1``.

    Examples
    --------
    From exact draws of ``X_3`` of a two-Gaussian mixture to ``t = 0.001`` (first order in the step):

    >>> import math, torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=torch.float64))  # N(+-2, 1)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = mix.noised(3.0).sample(2000, generator=g)[0]  # exact draws of X_3
    >>> y = critwin.sample_ddpm(mix, x, critwin.time_grid(3.0, 200, t_min=1e-3), generator=g)
    >>> # X_0.001 has mean 0 and E[X^2] = 4 e^-0.002 + 1; 4 standard errors at n = 2000: 0.2 and 0.38
    >>> exact = 4 * math.exp(-2e-3) + 1
    >>> abs(y.mean().item()) < 0.2, abs((y**2).mean().item() - exact) < 0.38
    (True, True)
    >>> a = critwin.sample_ddpm(mix, x, [3.0, 0.5], generator=torch.Generator().manual_seed(1))
    >>> b = critwin.sample_ddim(mix, x, [3.0, 0.5], eta=1.0, generator=torch.Generator().manual_seed(1))
    >>> bool((a == b).all())
    True
    """
    return sample_ddim(
        model, x, times, eta=1.0, generator=generator, callback=callback, extra_args=extra_args
    )


def sample_euler_maruyama(model, x, times, *, generator=None, callback=None, extra_args=None) -> torch.Tensor:
    """Euler–Maruyama on the reverse OU SDE ``dY = (Y + 2 grad log p_t(Y)) dtau + sqrt(2) dB``.

    Examples
    --------
    From exact draws of ``X_3`` of a two-Gaussian mixture to ``t = 0.001`` (first order in the step):

    >>> import math, torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=torch.float64))  # N(+-2, 1)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = mix.noised(3.0).sample(2000, generator=g)[0]  # exact draws of X_3
    >>> y = critwin.sample_euler_maruyama(mix, x, critwin.time_grid(3.0, 200, t_min=1e-3), generator=g)
    >>> # X_0.001 has mean 0 and E[X^2] = 4 e^-0.002 + 1; 4 standard errors at n = 2000: 0.2 and 0.38
    >>> exact = 4 * math.exp(-2e-3) + 1
    >>> abs(y.mean().item()) < 0.2, abs((y**2).mean().item() - exact) < 0.38
    (True, True)
    """

    def step(x, t, s, x0_hat):
        h = t - s
        drift = x + 2.0 * _score_from_denoised(x, x0_hat, t)
        return x + h * drift + math.sqrt(2.0 * h) * _noise(x, generator)

    return _denoised_at_end(model, x, times, generator, callback, extra_args, step)


def sample_exponential(model, x, times, *, generator=None, callback=None, extra_args=None) -> torch.Tensor:
    """Exponential integrator for the reverse OU SDE, the score frozen over each step.

    The linear part is solved exactly: ``Y_s = e^h Y_t + 2 (e^h - 1) score + sqrt(e^{2h} - 1) z``.

    Examples
    --------
    From exact draws of ``X_3`` of a two-Gaussian mixture to ``t = 0.001``; 50 steps suffice:

    >>> import math, torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=torch.float64))  # N(+-2, 1)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = mix.noised(3.0).sample(2000, generator=g)[0]  # exact draws of X_3
    >>> y = critwin.sample_exponential(mix, x, critwin.time_grid(3.0, 50, t_min=1e-3), generator=g)
    >>> # X_0.001 has mean 0 and E[X^2] = 4 e^-0.002 + 1; 4 standard errors at n = 2000: 0.2 and 0.38
    >>> exact = 4 * math.exp(-2e-3) + 1
    >>> abs(y.mean().item()) < 0.2, abs((y**2).mean().item() - exact) < 0.38
    (True, True)
    """

    def step(x, t, s, x0_hat):
        h = t - s
        score = _score_from_denoised(x, x0_hat, t)
        growth = math.expm1(h)
        return (
            (1.0 + growth) * x + 2.0 * growth * score + math.sqrt(math.expm1(2.0 * h)) * _noise(x, generator)
        )

    return _denoised_at_end(model, x, times, generator, callback, extra_args, step)


def sample_heun(model, x, times, *, generator=None, callback=None, extra_args=None) -> torch.Tensor:
    """Probability-flow ODE with Heun's method in the VE variables (Karras et al.).

    With ``y = x / a`` and ``sigma = sqrt(e^{2t} - 1)`` the flow is ``dy/dsigma = (y - x0_hat) / sigma``;
    the last step to sigma = 0 is an Euler step. Deterministic: ``generator`` is unused. Note that the
    ODE does not sample the forward-reverse posterior (docs/theory.md §4); it is here because users run it.

    Examples
    --------
    From exact draws of ``X_3`` of a two-Gaussian mixture to ``t = 0.001``; second order, 25 steps suffice.
    The ODE transports the marginal law of ``X_3`` to that of ``X_0.001``, so the moments match:

    >>> import math, torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=torch.float64))  # N(+-2, 1)
    >>> g = torch.Generator().manual_seed(0)
    >>> x = mix.noised(3.0).sample(2000, generator=g)[0]  # exact draws of X_3
    >>> y = critwin.sample_heun(mix, x, critwin.time_grid(3.0, 25, t_min=1e-3))
    >>> # X_0.001 has mean 0 and E[X^2] = 4 e^-0.002 + 1; 4 standard errors at n = 2000: 0.2 and 0.38
    >>> exact = 4 * math.exp(-2e-3) + 1
    >>> abs(y.mean().item()) < 0.2, abs((y**2).mean().item() - exact) < 0.38
    (True, True)
    """
    x, times = _start(x, times, generator)
    denoise = as_denoiser(model)
    extra = extra_args or {}
    state = [x]
    for _, t, s, x0_hat in _steps(model, state, times, callback, extra_args):
        a_t, sig_t = alpha_sigma(t)
        a_s, sig_s = alpha_sigma(s)
        ve_t, ve_s = sig_t / a_t, sig_s / a_s
        y = state[0] / a_t
        slope = (y - x0_hat) / ve_t
        y_next = y + (ve_s - ve_t) * slope
        if s > 0.0:
            x0_next = denoise(a_s * y_next, s, **extra)
            slope_next = (y_next - x0_next) / ve_s
            y_next = y + (ve_s - ve_t) * 0.5 * (slope + slope_next)
        state[0] = a_s * y_next
    return state[0]


def sample_exact(mixture, x, times, *, generator=None, callback=None, extra_args=None) -> torch.Tensor:
    """Exact reverse transitions of a mixture (``mixture.sample_reverse``): no discretisation error.

    The law of the output is exactly that of ``X_{times[-1]}`` given ``X_{times[0]} = x`` on any grid;
    ``callback`` (if given) costs one extra posterior-mean evaluation per step.

    A :class:`~critwin.mixtures.CategoricalMixture` takes token ids ``x`` (n, L) at level ``times[0]`` and
    ``times`` strictly decreasing levels on its clock (kappa in [0, 1], or numbers of hidden positions);
    ``callback(i, level, y, marginals)`` gets the posterior token marginals (n, L, V) of
    :meth:`~critwin.mixtures.CategoricalMixture.denoise`.

    Examples
    --------
    >>> import torch
    >>> from critwin import CategoricalMixture, sample_exact
    >>> m = CategoricalMixture.from_strings([[0, 1, 1, 0], [1, 1, 0, 0]], vocab_size=2)
    >>> y = torch.full((3, 4), m.mask_id)                  # everything masked (kappa = 1)
    >>> x = sample_exact(m, y, [1.0, 0.5, 0.0], generator=torch.Generator().manual_seed(0))
    >>> all(row in m.strings.tolist() for row in x.tolist())
    True
    """
    if isinstance(mixture, CategoricalMixture):
        return _sample_exact_discrete(mixture, x, times, generator, callback)
    if not hasattr(mixture, "sample_reverse"):
        raise ValueError(
            f"the exact sampler needs a mixture (an object with sample_reverse), got {type(mixture).__name__}"
        )
    x, times = _start(x, times, generator)
    for i, (t, s) in enumerate(zip(times[:-1], times[1:], strict=True)):
        if callback is not None:
            callback(i, t, x, mixture.denoise(x, t))
        if s == 0.0:
            x = mixture.sample_posterior(x, t, generator)[0]
        else:
            x = mixture.sample_reverse(x, t, s, generator)[0]
    return x


def _sample_exact_discrete(mixture: CategoricalMixture, y, times, generator, callback) -> torch.Tensor:
    """:func:`sample_exact` on a categorical mixture's levels (each checked by ``check_level``)."""
    check_generator(generator)
    levels = [
        mixture.check_level(t, "times")
        for t in torch.as_tensor(times, dtype=torch.float64).flatten().tolist()
    ]
    if len(levels) < 2 or any(b >= a for a, b in zip(levels[:-1], levels[1:], strict=True)):
        raise ValueError(
            f"times must be at least 2 strictly decreasing levels on the {mixture.clock!r} clock"
        )
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
        if callback is not None:
            callback(i, t, y, mixture.denoise(y, t))
        y = mixture.sample_reverse(y, t, s, generator)[0]
    return y


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "sde": sample_euler_maruyama,
    "sde_exp": sample_exponential,
    "heun": sample_heun,
    "exact": sample_exact,
}
