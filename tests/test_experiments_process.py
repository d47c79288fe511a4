"""ReverseProcess implementations: MixtureProcess and DiscreteProcess (noise-to-step mapping)."""

from __future__ import annotations

import math

import pytest
import torch

from critwin.clock import DiscreteSchedule
from critwin.experiments.callable_process import CallableProcess
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.process import DiscreteProcess, MixtureProcess
from two_gaussian_oracle import two_gaussians


class RecordingDenoiser:
    """Exact mixture denoiser that records every call (time and batch size)."""

    def __init__(self, mixture):
        self.mixture = mixture
        self.calls: list[tuple[float, int]] = []

    def denoise(self, x, t, **cond):
        self.calls.append((float(t), int(x.shape[0])))
        return self.mixture.denoise(x, t)


def test_mixture_process_add_noise_is_the_ou_map():
    process = MixtureProcess(two_gaussians(), "exact", n_steps=20, t_max=3.0)
    x0 = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    index = 7
    t = process.times[index].item()
    got = process.add_noise(x0, index, generator=torch.Generator().manual_seed(1))
    z = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # Hand-written OU map with the same noise: exact up to rounding.
    expected = math.exp(-t) * x0 + math.sqrt(1 - math.exp(-2 * t)) * z
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler", ["ddpm", "sde", "heun"])
def test_mixture_process_counts_every_denoiser_call(sampler):
    mixture = two_gaussians()
    process = MixtureProcess(mixture, sampler, n_steps=12, t_max=3.0)
    recorder = RecordingDenoiser(mixture)
    # An independent count: critwin.samplers run directly on a recording denoiser, same grid.
    from critwin.samplers import SAMPLERS

    x = process.prior(7, generator=torch.Generator().manual_seed(0))
    SAMPLERS[sampler](recorder, x, process.times[4:], generator=torch.Generator().manual_seed(1))
    process.run(x, start=4, generator=torch.Generator().manual_seed(1))
    assert process.nfe == sum(n for _, n in recorder.calls)


def test_mixture_process_exact_is_one_evaluation_per_sample():
    process = MixtureProcess(two_gaussians(), "exact", n_steps=50)
    x = process.prior(11, generator=torch.Generator().manual_seed(0))
    process.run(x, start=3, generator=torch.Generator().manual_seed(1))
    assert process.nfe == 11


def test_unknown_sampler_lists_the_known_ones():
    known = "sampler must be one of 'exact', 'ddpm', 'ddim', 'sde', 'sde_exp', 'heun'"
    with pytest.raises(ValueError, match=known):
        MixtureProcess(two_gaussians(), "euler")
    with pytest.raises(ValueError, match="'ddim', 'ddpm'"):
        DiscreteProcess(two_gaussians(), DiscreteSchedule.linear(), 10, sampler="heun")


def test_mixture_process_rejects_conditioning_and_bad_spans():
    process = MixtureProcess(two_gaussians(), "exact", n_steps=5)
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="cond"):
        process.run(x, cond={"y": torch.zeros(2)})
    with pytest.raises(ValueError, match="stop must be a grid index in 3..5"):
        process.run(x, start=3, stop=1)


@pytest.mark.parametrize("kind", ["mixture", "discrete", "callable"])
def test_every_process_checks_grid_indices_with_the_one_rule(kind):
    """TimeGrid.check_index/check_span: integers only (1.5 was truncated to 1 before), in range."""
    mixture = two_gaussians()
    process = {
        "mixture": lambda: MixtureProcess(mixture, "ddim", n_steps=5),
        "discrete": lambda: DiscreteProcess(mixture, DiscreteSchedule.linear(), 5),
        "callable": lambda: CallableProcess(lambda x, level: x, "ou", (2,), n_steps=5),
    }[kind]()
    last = process.times.numel() - 1
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"start must be an integer grid index in 0\.\.{last}, got 1\.5"):
        process.run(x, start=1.5)
    with pytest.raises(ValueError, match=rf"stop must be a grid index in 2\.\.{last}, got 1"):
        process.run(x, start=2, stop=1)
    with pytest.raises(ValueError, match=rf"index must be a grid index in 0\.\.{last}, got -1"):
        process.add_noise(x, -1)
    assert torch.equal(process.run(x, start=torch.tensor(last)), x)  # an integer tensor is an index


def _nearest_by_hand(schedule, timesteps, t):
    best, best_gap = None, math.inf
    for k in timesteps.tolist():
        gap = abs(-0.5 * math.log(schedule.alphas_cumprod[k].item()) - t)
        if gap < best_gap:
            best, best_gap = k, gap
    return best


@pytest.mark.parametrize(
    "schedule, spacing, offset",
    [
        (DiscreteSchedule.linear(), "leading", 0),
        (DiscreteSchedule.scaled_linear(), "leading", 1),
        (DiscreteSchedule.scaled_linear(), "trailing", 0),
    ],
)
def test_realised_step_is_the_nearest(schedule, spacing, offset):
    mixture = two_gaussians()
    process = DiscreteProcess(
        mixture, schedule, n_steps=25, spacing=spacing, steps_offset=offset, sample_shape=(2,)
    )
    requested = [0.03, 0.4, 0.77, 1.3, 2.2, 2.4]
    x0 = mixture.subset([0]).sample(3, generator=torch.Generator().manual_seed(0))[0]
    result = forward_reverse(process, x0, requested, seed=0, progress=False)
    for i, t in enumerate(requested):
        step = _nearest_by_hand(schedule, process.timesteps, t)
        assert int(result.steps[i]) == step
        ou_time = -0.5 * math.log(schedule.alphas_cumprod[step].item())
        assert result.times[i].item() == pytest.approx(ou_time, rel=1e-12)
        assert process.step_label(int(result.indices[i])) == step


def test_times_beyond_the_schedule_are_refused_with_the_range():
    schedule = DiscreteSchedule.scaled_linear()
    process = DiscreteProcess(two_gaussians(), schedule, n_steps=10, sample_shape=(2,))
    hi = schedule.ou_times[process.timesteps].max().item()
    x0 = torch.zeros(2, 2, dtype=torch.float64)
    message = rf"times\[1\]=3\.5 is beyond the sampler's range of OU times \[0, {hi:.4g}\]"
    with pytest.raises(ValueError, match=message):
        forward_reverse(process, x0, [1.0, 3.5], seed=0, progress=False)


def test_noising_at_step_k_then_denoising_starts_at_step_k():
    """DiscreteProcess against a hand-written DDIM loop in alpha_bar form (diffusers' formulas)."""
    mixture = two_gaussians()
    schedule = DiscreteSchedule.scaled_linear()
    recorder = RecordingDenoiser(mixture)
    process = DiscreteProcess(recorder, schedule, n_steps=20, steps_offset=1, sample_shape=(2,))
    t_request = 0.9
    index, realised = process.locate(t_request)
    k = process.step_label(index)
    x0 = torch.tensor([[2.5, 3.0], [-1.0, 0.5]], dtype=torch.float64)
    x_noised = process.add_noise(x0, index, generator=torch.Generator().manual_seed(5))
    out = process.run(x_noised, start=index)
    # The first denoiser call is at step k's own OU time: no off-by-one between noising and sampling.
    assert recorder.calls[0][0] == pytest.approx(realised, rel=1e-14)

    ac = schedule.alphas_cumprod
    noise = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x = ac[k].sqrt() * x0 + (1 - ac[k]).sqrt() * noise
    torch.testing.assert_close(x, x_noised, rtol=0, atol=1e-12)
    later = [s for s in process.timesteps.tolist() if s <= k]
    assert later[0] == k
    for j, step in enumerate(later):
        a_t = ac[step]
        a_prev = ac[later[j + 1]] if j + 1 < len(later) else torch.tensor(1.0, dtype=torch.float64)
        x0_hat = mixture.denoise(x, -0.5 * math.log(a_t.item()))
        eps = (x - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
        x = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-9)
    assert len(recorder.calls) == len(later)  # one denoiser call per remaining step
    assert process.nfe == 2 * len(later)


def test_ddpm_matches_a_hand_written_ancestral_loop():
    mixture = two_gaussians()
    schedule = DiscreteSchedule.linear()
    process = DiscreteProcess(mixture, schedule, n_steps=10, sampler="ddpm", sample_shape=(2,))
    x = torch.tensor([[0.3, -0.2], [1.0, 1.0]], dtype=torch.float64)
    out = process.run(x, start=4, generator=torch.Generator().manual_seed(9))
    ac = schedule.alphas_cumprod
    steps = process.timesteps.tolist()[4:]
    generator = torch.Generator().manual_seed(9)
    for j, step in enumerate(steps):
        a_t = ac[step]
        x0_hat = mixture.denoise(x, -0.5 * math.log(a_t.item()))
        if j + 1 == len(steps):
            x = x0_hat  # the last step lands on clean data (alpha_bar = 1: zero posterior variance)
            break
        a_prev = ac[steps[j + 1]]
        # DDPM posterior q(x_prev | x_t, x0_hat) with beta_t = 1 - a_t / a_prev (Ho et al. eq. 7).
        beta = 1 - a_t / a_prev
        mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0_hat
        mean = mean + ((a_t / a_prev).sqrt() * (1 - a_prev) / (1 - a_t)) * x
        var = (1 - a_prev) / (1 - a_t) * beta
        x = mean + var.sqrt() * torch.randn(x.shape, dtype=x.dtype, generator=generator)
    torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-9)


def test_timesteps_and_ddim_step_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
        clip_sample=False,
    )
    scheduler.set_timesteps(20)
    mixture = two_gaussians()
    schedule = DiscreteSchedule.from_alphas_cumprod(scheduler.alphas_cumprod.double(), "sd")
    process = DiscreteProcess(mixture, schedule, n_steps=20, steps_offset=1, sample_shape=(2,))
    assert process.timesteps.tolist() == scheduler.timesteps.tolist()
    index = 6
    x = torch.tensor([[0.4, -1.2], [2.0, 0.1]], dtype=torch.float64)
    ours = process.run(x, start=index)
    ac = scheduler.alphas_cumprod.double()
    y = x.clone()
    for step in scheduler.timesteps.tolist()[index:]:
        t = -0.5 * math.log(ac[step].item())
        eps = (y - ac[step].sqrt() * mixture.denoise(y, t)) / (1 - ac[step]).sqrt()
        y = scheduler.step(eps, step, y, eta=0.0).prev_sample
    # float32 scheduler constants: agreement to ~1e-5 relative.
    torch.testing.assert_close(ours, y.double(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "spacing, offset", [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)]
)
def test_timestep_spacings_match_diffusers(spacing, offset):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=offset
    )
    scheduler.set_timesteps(30)
    process = DiscreteProcess(
        two_gaussians(),
        DiscreteSchedule.linear(),
        n_steps=30,
        sampler="ddpm",
        spacing=spacing,
        steps_offset=offset,
        sample_shape=(2,),
    )
    assert process.timesteps.tolist() == scheduler.timesteps.tolist()
