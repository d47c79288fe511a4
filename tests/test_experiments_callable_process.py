"""CallableProcess (EDM / k-diffusion denoisers as a ReverseProcess) and the Karras sigma grid."""

from __future__ import annotations

import math

import pytest
import torch

import critwin
from critwin.clock import ou_time, time_grid
from critwin.experiments.callable_process import CallableProcess, karras_sigmas
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.process import MixtureProcess
from two_gaussian_oracle import two_gaussians


def ve_denoiser(mixture):
    """The mixture's exact denoiser written in VE variables: ``x = x0 + sigma z`` is the OU state
    ``x / sqrt(1 + sigma^2)`` at OU time ``log(1 + sigma^2) / 2``."""

    def denoise(x, sigma):
        return mixture.denoise(x / math.sqrt(1.0 + sigma * sigma), 0.5 * math.log1p(sigma * sigma))

    return denoise


def test_karras_sigmas_match_the_closed_formula():
    n, lo, hi, rho = 6, 0.002, 80.0, 7.0
    expected = [
        (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)
    ]
    got = karras_sigmas(n, lo, hi, rho)
    assert got.dtype == torch.float64 and got.shape == (n,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-13, atol=0)
    # rho = 1 is uniform in sigma.
    torch.testing.assert_close(
        karras_sigmas(5, 1.0, 3.0, rho=1.0), torch.tensor([3.0, 2.5, 2.0, 1.5, 1.0], dtype=torch.float64)
    )


def test_default_grid_is_karras_sigmas_as_ou_times_then_clean():
    process = CallableProcess(lambda x, s: x, sample_shape=(2,), n_steps=5, sigma_min=0.01, sigma_max=10.0)
    sig = karras_sigmas(5, 0.01, 10.0)
    expected = [0.5 * math.log1p(s * s) for s in sig.tolist()] + [0.0]
    torch.testing.assert_close(process.times, torch.tensor(expected, dtype=torch.float64), rtol=1e-13, atol=0)
    # time_grid's "edm" spacing is the same formula (one owner: karras_sigmas).
    grid = time_grid(float(process.times[0]), 4, float(process.times[-2]), "edm")
    torch.testing.assert_close(grid, process.times[:-1], rtol=1e-12, atol=0)


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.4, 1.3, 4.0])
def test_ve_denoiser_gives_the_mixture_denoiser(t):
    mixture = two_gaussians()
    y = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = mixture.denoise(y, t)
    ve = CallableProcess(ve_denoiser(mixture), parameterisation="ve", sample_shape=(2,))
    torch.testing.assert_close(ve.denoise(y, t), expected, rtol=1e-10, atol=1e-10)
    # k-diffusion convention: sigma as a (B,) tensor.
    batched = CallableProcess(lambda x, s: ve_denoiser(mixture)(x, float(s[0])), "ve", (2,), batch_level=True)
    torch.testing.assert_close(batched.denoise(y, t), expected, rtol=1e-10, atol=1e-10)
    # An OU-time denoiser is passed through untouched.
    ou = CallableProcess(mixture.denoise, parameterisation="ou", sample_shape=(2,))
    assert torch.equal(ou.denoise(y, t), expected)


def predicting_denoiser(mixture, parameterisation: str, prediction_type: str):
    """The mixture's exact posterior mean turned by hand into a noise or velocity prediction.

    VE: ``x = x0 + sigma z`` so ``z = (x - x0) / sigma``; OU: ``y = a x0 + s z`` so ``z = (y - a x0) / s``;
    ``v = a z - s x0`` with ``(a, s) = (e^{-t}, sqrt(1 - e^{-2t}))`` in both.
    """

    def predict(state, level):
        if parameterisation == "ve":
            t = 0.5 * math.log1p(level * level)
            x0 = mixture.denoise(state / math.sqrt(1.0 + level * level), t)
            z = (state - x0) / level
        else:
            t = level
            x0 = mixture.denoise(state, t)
            z = (state - math.exp(-t) * x0) / math.sqrt(-math.expm1(-2.0 * t))
        if prediction_type == "epsilon":
            return z
        return math.exp(-t) * z - math.sqrt(-math.expm1(-2.0 * t)) * x0

    return predict


@pytest.mark.parametrize("parameterisation", ["ve", "ou"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("t", [1e-2, 0.4, 3.0])
def test_noise_and_velocity_callables_give_the_mixture_denoiser(parameterisation, prediction_type, t):
    mixture = two_gaussians()
    y = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    predictor = predicting_denoiser(mixture, parameterisation, prediction_type)
    process = CallableProcess(predictor, parameterisation, (2,), prediction_type=prediction_type)
    # Round trip x0 -> z (or v) -> x0 in float64: a few ulps, amplified by 1 / a = e^t <= e^3 at most.
    torch.testing.assert_close(process.denoise(y, t), mixture.denoise(y, t), rtol=1e-10, atol=1e-10)
    assert process.with_times(process.times).prediction_type == prediction_type
    assert process.describe()["prediction_type"] == prediction_type


def test_noise_callable_forward_reverse_matches_the_mixture_process():
    mixture = two_gaussians()
    process = CallableProcess(
        predicting_denoiser(mixture, "ve", "epsilon"), "ve", (2,), n_steps=10, prediction_type="epsilon"
    )
    reference = MixtureProcess(mixture, "ddim", times=process.times)
    x0, _ = mixture.sample(30, generator=torch.Generator().manual_seed(1))
    x = process.add_noise(x0, 2, torch.Generator().manual_seed(2))
    # Same sampler, same grid; the x0 -> z -> x0 round trip costs rounding only.
    torch.testing.assert_close(process.run(x, start=2), reference.run(x, start=2), rtol=1e-9, atol=1e-9)


def test_batch_level_tensor_has_the_state_dtype_and_batch():
    seen = []

    def denoiser(x, sigma):
        seen.append(sigma)
        return torch.zeros_like(x)

    CallableProcess(denoiser, "ve", (3,), batch_level=True).denoise(torch.zeros(4, 3), 0.5)
    (sigma,) = seen
    assert sigma.shape == (4,) and sigma.dtype == torch.float32
    torch.testing.assert_close(sigma, torch.full((4,), math.sqrt(math.expm1(1.0))))


@pytest.mark.parametrize("sampler", ["ddpm", "heun"])
def test_forward_reverse_matches_the_mixture_process(sampler):
    # Not byte-identical: the VE round trip y * e^t / sqrt(1 + sigma^2) is y only up to a few ulps, so
    # trajectories agree to rounding (1e-10 over a 12-step grid) and the labels exactly.
    mixture = two_gaussians()
    process = CallableProcess(ve_denoiser(mixture), "ve", (2,), sampler=sampler, n_steps=12, sigma_max=20.0)
    reference = MixtureProcess(mixture, sampler, times=process.times)
    x0, _ = mixture.sample(40, generator=torch.Generator().manual_seed(1))
    times = [0.2, 0.8, 1.5]

    def feature(x):
        return (x.sum(dim=1) > 0).long()

    results = [
        forward_reverse(p, x0, times, 2, feature, seed=5, progress=False) for p in (process, reference)
    ]
    assert torch.equal(results[0].labels, results[1].labels)
    assert torch.equal(results[0].times, results[1].times)
    assert results[0].nfe == results[1].nfe > 0
    # The final states themselves, same seed.
    x = process.add_noise(x0, 3, torch.Generator().manual_seed(2))
    out = process.run(x, start=3, generator=torch.Generator().manual_seed(4))
    expected = reference.run(x, start=3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_callback_sees_process_grid_indices():
    mixture = two_gaussians()
    process = CallableProcess(ve_denoiser(mixture), "ve", (2,), n_steps=6)
    seen = []
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    process.run(x, start=2, callback=lambda i, t, state, x0: seen.append((i, t)))
    assert [i for i, _ in seen] == [2, 3, 4, 5]  # 6 levels + clean: grid indices 0..6
    assert [t for _, t in seen] == process.times[2:-1].tolist()


def test_describe_and_exports():
    process = CallableProcess(lambda x, s: x, "ou", (2,), sampler="ddim", eta=0.5)
    info = process.describe()
    assert info["process"] == "CallableProcess" and info["parameterisation"] == "ou"
    assert info["eta"] == 0.5 and info["t_max"] == pytest.approx(float(ou_time(sigma=80.0)))
    assert critwin.CallableProcess is CallableProcess and critwin.experiments.karras_sigmas is karras_sigmas


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"denoiser": 3.0}, "denoiser"),
        ({"parameterisation": "vp"}, "parameterisation"),
        ({"prediction_type": "eps"}, "prediction_type"),
        ({"sampler": "exact"}, "sampler"),
        ({"sigma_min": 5.0, "sigma_max": 5.0}, "sigma_min"),
        ({"sigma_min": -1.0}, "sigma_min"),
        ({"sigma_max": math.inf}, "sigma_max"),
        ({"rho": 0.0}, "rho"),
        ({"n_steps": 1}, "n_steps"),
        ({"eta": 0.5, "sampler": "ddpm"}, "eta"),
        ({"eta": 2.0}, "eta"),
        ({"times": [1.0, 0.5]}, "times"),
    ],
)
def test_bad_input_names_the_argument(kwargs, argument):
    arguments = {"denoiser": lambda x, s: x, "sample_shape": (2,)} | kwargs
    with pytest.raises(ValueError, match=argument):
        CallableProcess(**arguments)


def test_karras_sigmas_bad_input():
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(5, 1.0, 0.5)
    with pytest.raises(ValueError, match="n must"):
        karras_sigmas(1, 0.1, 1.0)
