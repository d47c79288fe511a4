"""v-prediction with a zero-terminal-SNR schedule (``rescale_betas_zero_snr=True``, trailing spacing).

The first grid point is pure noise (alpha_bar = 0 exactly: OU time ``inf``); the adapter must step from it
byte for byte as diffusers does and read x̂₀ = sqrt(ab) x - sqrt(1 - ab) v there without dividing by zero.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from critwin.adapters.diffusers import DiffusersProcess, TerminalSNRWarning
from tiny_models import tiny_unet

STEPS = 5


def _scheduler(cls=DDIMScheduler):
    return cls(
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        clip_sample=False,
    )


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(0)


@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_zero_snr_grid_starts_at_infinite_time(unet, cls):
    sched = _scheduler(cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TerminalSNRWarning)  # no signal left at the start: no warning
        process = DiffusersProcess(unet, sched, STEPS)
    assert sched.alphas_cumprod[-1].item() == 0.0
    assert process.timesteps[0].item() == 999  # trailing spacing starts at the last training step
    assert process.times[0].item() == math.inf and process.terminal_snr == 0.0
    ab = sched.alphas_cumprod.double()
    for i, k in enumerate(process.timesteps.tolist()[1:], start=1):
        assert process.times[i].item() == pytest.approx(-0.5 * math.log(ab[int(k)].item()), rel=1e-12)
    # Noising to grid index 0 leaves no trace of x0: exactly the noise.
    x0 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    noised = process.add_noise(x0, 0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(noised, torch.randn(x0.shape, generator=torch.Generator().manual_seed(3)))


def test_vpred_zero_snr_run_equals_hand_loop_and_x0_closed_form(unet):
    process = DiffusersProcess(unet, _scheduler(), STEPS)
    x = process.prior(2, torch.Generator().manual_seed(0))
    seen = {}
    final = process.run(x, callback=lambda i, t, xi, x0: seen.setdefault(i, (t, xi, x0)))
    sched = _scheduler()
    sched.set_timesteps(STEPS)
    y = x.clone()
    ab = sched.alphas_cumprod
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            v = unet(y, t).sample
            a = ab[int(t)]
            # The closed form x0 = sqrt(ab) x - sqrt(1 - ab) v, with ab read from the scheduler by hand.
            expected = a.sqrt() * y - (1 - a).sqrt() * v
            assert torch.isfinite(seen[i][2]).all()
            assert torch.allclose(seen[i][2], expected, atol=1e-6)
            y = sched.step(v, t, y, return_dict=False)[0]
    assert seen[0][0] == math.inf
    assert torch.equal(final, y)


def test_vpred_denoise_at_infinite_time_is_minus_v(unet):
    process = DiffusersProcess(unet, _scheduler(), STEPS)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    got = process.denoise(x, math.inf)
    with torch.no_grad():
        v = unet(x, torch.tensor(999)).sample
    # alpha_bar = 0: x0_hat = -v (the nearest training step to t = inf is the last one, 999).
    assert torch.isfinite(got).all()
    assert torch.allclose(got, -v, atol=1e-6)


@pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")
def test_infinite_time_needs_zero_terminal_snr(unet):
    process = DiffusersProcess(unet, DDIMScheduler(prediction_type="v_prediction"), STEPS)
    with pytest.raises(ValueError, match="needs a zero-terminal-SNR schedule"):
        process.denoise(torch.zeros(1, 3, 8, 8), math.inf)
