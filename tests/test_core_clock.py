import math

import pytest
import torch

import critwin
from critwin.clock import (
    DiscreteSchedule,
    TimeGrid,
    alpha_bar,
    alpha_sigma,
    flow_s,
    log_snr,
    noised_variance,
    ou_coefficients,
    ou_time,
    snr,
    time_grid,
    ve_sigma,
)

T = torch.tensor([1e-6, 1e-3, 0.1, 0.5, 1.0, 3.0, 10.0], dtype=torch.float64)


def test_definitions_match_the_ou_process():
    # X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z  =>  alpha_bar = e^{-2t}, SNR = e^{-2t} / (1 - e^{-2t}).
    a, s = alpha_sigma(T)
    torch.testing.assert_close(a, torch.exp(-T), rtol=1e-15, atol=0)
    torch.testing.assert_close(s * s + a * a, torch.ones_like(T), rtol=1e-14, atol=0)
    torch.testing.assert_close(alpha_bar(T), a * a, rtol=1e-14, atol=0)
    torch.testing.assert_close(snr(T), a * a / (s * s), rtol=1e-12, atol=0)
    torch.testing.assert_close(log_snr(T), torch.log(a * a / (s * s)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ve_sigma(T), s / a, rtol=1e-12, atol=0)
    # rectified flow x = (1 - u) x0 + u z has sigma/alpha = u / (1 - u)
    u = flow_s(T)
    torch.testing.assert_close(u / (1 - u), s / a, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "key,forward",
    [("alpha_bar", alpha_bar), ("snr", snr), ("log_snr", log_snr), ("sigma", ve_sigma), ("flow_s", flow_s)],
)
def test_round_trips_are_exact_in_float64(key, forward):
    back = ou_time(**{key: forward(T)})
    torch.testing.assert_close(back, T, rtol=1e-9, atol=1e-15)


def test_alpha_sigma_pairs_and_scalars():
    assert math.isclose(ou_time(alpha_sigma=(0.6, 0.8)), -math.log(0.6), rel_tol=1e-12)
    # VE: x = x0 + sigma z has the same SNR as OU time 1/2 log(1 + sigma^2)
    assert math.isclose(ou_time(sigma=2.0), 0.5 * math.log(5.0), rel_tol=1e-14)
    assert isinstance(ou_time(alpha_bar=0.5), float)
    assert critwin.ou_time is ou_time


def test_ou_time_needs_exactly_one_keyword():
    with pytest.raises(ValueError, match="exactly one"):
        ou_time()
    with pytest.raises(ValueError, match="exactly one"):
        ou_time(alpha_bar=0.5, snr=1.0)
    with pytest.raises(ValueError, match="alpha_bar"):
        ou_time(alpha_bar=1.5)
    with pytest.raises(ValueError, match="flow_s"):
        ou_time(flow_s=1.0)
    with pytest.raises(ValueError, match="t must be"):
        alpha_bar(-1.0)


def test_ddpm_linear_steps_match_hand_computed_alpha_bar():
    sched = DiscreteSchedule.linear()
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    prod = 1.0
    for k, beta in enumerate(betas):
        prod *= 1.0 - beta
        if k in (0, 1, 10, 250, 500, 999):
            assert math.isclose(sched.ou_times[k].item(), -0.5 * math.log(prod), rel_tol=1e-10)
    # DDPM's last step is about OU time 5 (alpha_bar ~ 4e-5): well past every window of unit-scale data
    assert 4.9 < sched.ou_times[-1].item() < 5.2


def test_scaled_linear_and_cosine_schedules():
    sd = DiscreteSchedule.scaled_linear()
    beta_k = (0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * 500 / 999) ** 2
    assert math.isclose(sd.betas[500].item(), beta_k, rel_tol=1e-12)
    # Stable Diffusion's schedule does not reach zero terminal SNR: "fully noised" keeps signal.
    assert sd.terminal_snr > 1e-3
    cos = DiscreteSchedule.cosine(1000)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert math.isclose(cos.alphas_cumprod[399].item(), f(400 / 1000) / f(0), rel_tol=1e-9)
    assert (cos.ou_times.diff() > 0).all()


def test_nearest_step_is_nearest_in_ou_time():
    sched = DiscreteSchedule.linear()
    g = torch.Generator().manual_seed(0)
    query = torch.rand(200, generator=g, dtype=torch.float64) * sched.ou_times[-1]
    step, realised = sched.nearest_step(query)
    brute = (query[:, None] - sched.ou_times[None, :]).abs().argmin(1)
    assert torch.equal(step, brute)
    torch.testing.assert_close(realised, sched.ou_times[brute])
    # restricted to a sampler's timesteps
    allowed = torch.arange(999, -1, -100)
    step, realised = sched.nearest_step(1.0, steps=allowed)
    assert step in allowed.tolist()
    assert all(abs(realised - 1.0) <= abs(sched.ou_times[k].item() - 1.0) for k in allowed.tolist())
    with pytest.raises(ValueError, match="beyond the schedule's range"):
        sched.nearest_step(6.0)


def test_time_grid_spacings():
    for spacing in ("uniform", "log", "edm"):
        grid = time_grid(3.0, 50, spacing=spacing)
        assert grid.numel() == 51 and grid[0] == 3.0 and grid[-1] == 0.0
        assert (grid.diff() < 0).all()
    with pytest.raises(ValueError, match="spacing"):
        time_grid(3.0, 10, spacing="cubic")
    with pytest.raises(ValueError, match="n_steps"):
        time_grid(3.0, 0)


def test_schedule_rejects_bad_betas():
    with pytest.raises(ValueError, match="betas"):
        DiscreteSchedule(torch.tensor([0.1, 1.2]))


def test_time_grid_checks_requests_once_and_maps_them_to_indices():
    grid = TimeGrid([2.0, 1.0, 0.5, 0.0])
    requested = grid.check([0.9, 0.0, 2.0 * (1 + 1e-12)])
    indices, realised = grid.nearest(requested)
    # Nearest start points by hand: 0.9 -> 1.0 (index 1); t = 0 is the clean end; 2(1+1e-12) -> 2.0.
    assert indices.tolist() == [1, 3, 0]
    assert realised.tolist() == [1.0, 0.0, 2.0]
    # Without the clean end, t = 0 starts from the smallest positive grid time.
    assert grid.nearest(grid.check(0.0), clean_end=False)[0].tolist() == [2]
    refined = grid.refined(grid.check([0.9, 0.5 + 1e-13]))
    # 0.9 is added; 0.5 is replaced by the request within 1e-12 of it; start and clean end stay.
    assert refined.times.tolist() == [2.0, 1.0, 0.9, 0.5 + 1e-13, 0.0]
    with pytest.raises(ValueError, match=r"times\[1\] must be >= 0"):
        grid.check([1.0, -1.0])
    with pytest.raises(ValueError, match=r"t_fork=2.1 is beyond the sampler's range of OU times \[0, 2\]"):
        grid.check(2.1, "t_fork")
    with pytest.raises(ValueError, match="must be finite"):
        grid.check([math.nan])
    with pytest.raises(ValueError, match="strictly decreasing"):
        TimeGrid([1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        TimeGrid([math.inf, 1.0, 0.0])
    assert TimeGrid([math.inf, 1.0, 0.0], allow_inf=True).nearest(torch.tensor([50.0]))[0].tolist() == [1]


def test_noised_variance_is_the_variance_of_the_ou_state():
    # Var(e^{-t} X_0 + sqrt(1 - e^{-2t}) Z) = e^{-2t} var + 1 - e^{-2t}, by hand at t = 0.5, var = 3.
    expected = math.exp(-1.0) * 3.0 + 1.0 - math.exp(-1.0)
    assert noised_variance(3.0, 0.5) == pytest.approx(expected, rel=1e-14)
    a, s2 = ou_coefficients(torch.tensor([0.5], dtype=torch.float64))
    assert a.item() == pytest.approx(math.exp(-0.5), rel=1e-14)
    assert s2.item() == pytest.approx(1 - math.exp(-1.0), rel=1e-14)
