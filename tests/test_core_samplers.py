import math

import pytest
import torch

from critwin import SAMPLERS, GaussianMixture, sample_ddim, sample_euler_maruyama, sample_heun, time_grid

MIX = GaussianMixture(
    torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 4.0]], dtype=torch.float64),
    0.5,
    torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
)


def _label_freq(x):
    return torch.bincount(MIX.bayes_label(x), minlength=3).double() / x.shape[0]


@pytest.mark.parametrize("name", ["ddpm", "sde", "sde_exp", "heun", "exact"])
def test_reverse_from_t3_reproduces_weights_and_means(name):
    n = 20_000
    g = torch.Generator().manual_seed(0)
    x = MIX.noised(3.0).sample(n, g)[0]  # exact law at t = 3, so only the discretisation error remains
    out = SAMPLERS[name](MIX, x, time_grid(3.0, 150), generator=g)
    # proportion SE <= sqrt(0.25 / n) = 0.0035; 4 SE plus 0.01 for 150-step discretisation
    assert (_label_freq(out) - MIX.weights).abs().max() < 4 * math.sqrt(0.25 / n) + 0.01
    truth_mean = (MIX.weights[:, None] * MIX.means).sum(0)
    sd = torch.tensor([3.0, 3.0], dtype=torch.float64)  # marginal sd is below 3 in each coordinate
    assert ((out.mean(0) - truth_mean).abs() < 4 * sd / math.sqrt(n) + 0.05).all()


def test_forward_reverse_label_law_sde_agrees_with_exact_posterior_sampler():
    # Start in component 0, noise to T = 1.2, denoise with the full mixture's score (THEORY §3).
    n, T = 20_000, 1.2
    g = torch.Generator().manual_seed(1)
    x0 = MIX.subset([0]).sample(n, g)[0]
    xt = math.exp(-T) * x0 + math.sqrt(-math.expm1(-2 * T)) * torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )
    exact = _label_freq(MIX.sample_posterior(xt, T, g)[0])
    sde = _label_freq(sample_euler_maruyama(MIX, xt, time_grid(T, 200), generator=g))
    # two independent proportions: SE of the difference <= sqrt(2 * 0.25 / n)
    assert (exact - sde).abs().max() < 4 * math.sqrt(0.5 / n) + 0.01
    # and both equal E_y[pi_T(. | y)], the label-level law with no sampling of x at all
    expected = MIX.posterior(xt, T).mean(0)
    assert (exact - expected).abs().max() < 4 * math.sqrt(0.25 / n)


def test_discretisation_error_shrinks_with_steps():
    # A single Gaussian N(mu, c): reverse SDE and PF-ODE from the exact law at t = 2 end at N(mu, c).
    mix = GaussianMixture(torch.tensor([[2.0]], dtype=torch.float64), 0.25)
    n = 40_000
    errors = {}
    for steps in (5, 40):
        g = torch.Generator().manual_seed(2)
        x = mix.noised(2.0).sample(n, g)[0]
        out = sample_euler_maruyama(mix, x, time_grid(2.0, steps, spacing="uniform"), generator=g)
        errors[steps] = abs(out.var().item() - 0.25)
    assert errors[40] < errors[5]
    x = mix.noised(2.0).sample(n, torch.Generator().manual_seed(3))[0]
    out = sample_heun(mix, x, time_grid(2.0, 30))
    assert abs(out.mean().item() - 2.0) < 4 * 0.5 / math.sqrt(n) + 1e-3
    assert abs(out.var().item() - 0.25) < 0.01


def test_ddim_is_deterministic_and_ddpm_reproducible():
    x = MIX.noised(2.0).sample(100, torch.Generator().manual_seed(4))[0]
    grid = time_grid(2.0, 20)
    a = sample_ddim(MIX, x, grid)
    b = sample_ddim(MIX, x, grid)
    assert torch.equal(a, b)
    c = SAMPLERS["ddpm"](MIX, x, grid, generator=torch.Generator().manual_seed(5))
    d = SAMPLERS["ddpm"](MIX, x, grid, generator=torch.Generator().manual_seed(5))
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_ddpm_step_is_the_gaussian_posterior_given_x0_hat():
    # With a denoiser that always returns x0, DDPM (eta = 1) from t to s samples q(x_s | x_t, x0):
    # mean = a_s x0 + sqrt(sig_s^2 - c^2) (x_t - a_t x0)/sig_t, var c^2 with c the DDPM posterior sd.
    x0 = torch.tensor([[1.0]], dtype=torch.float64)
    t, s, n = 0.8, 0.3, 200_000
    a_t, a_s = math.exp(-t), math.exp(-s)
    var_s = 1 - a_s**2
    beta = 1 - (a_t / a_s) ** 2
    post_var = var_s * beta / (1 - a_t**2)  # DDPM posterior variance  (1-ab_s)/(1-ab_t) * beta_t
    post_mean_coef_x0 = a_s * beta / (1 - a_t**2)
    post_mean_coef_xt = (a_t / a_s) * var_s / (1 - a_t**2)
    xt = torch.full((n, 1), 0.4, dtype=torch.float64)
    out = sample_ddim(
        lambda x, t: x0.expand_as(x), xt, [t, s], eta=1.0, generator=torch.Generator().manual_seed(6)
    )
    mean = post_mean_coef_x0 * 1.0 + post_mean_coef_xt * 0.4
    assert abs(out.mean().item() - mean) < 5 * math.sqrt(post_var / n)
    assert abs(out.var().item() - post_var) < 5 * post_var * math.sqrt(2 / n)


def test_callback_sees_every_step():
    seen = []
    grid = time_grid(1.0, 7)
    x = torch.zeros(3, 2, dtype=torch.float64)
    sample_ddim(MIX, x, grid, callback=lambda i, t, x, x0: seen.append((i, t, x.shape, x0.shape)))
    assert [s[0] for s in seen] == list(range(7))
    assert [s[1] for s in seen] == grid[:-1].tolist()


def test_bad_times_and_models():
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ddim(MIX, x, [0.1, 0.5])
    with pytest.raises(ValueError, match="at least 2"):
        sample_ddim(MIX, x, [0.5])
    with pytest.raises(ValueError, match="non-negative"):
        sample_ddim(MIX, x, [0.5, -0.1])
    with pytest.raises(ValueError, match="model must"):
        sample_ddim(object(), x, [0.5, 0.0])
    with pytest.raises(ValueError, match="exact sampler needs a mixture"):
        SAMPLERS["exact"](lambda x, t: x, x, [0.5, 0.0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    mix = MIX.to(device="cuda")
    x = torch.randn(64, 2, dtype=torch.float64)
    torch.testing.assert_close(mix.score(x.cuda(), 0.7).cpu(), MIX.score(x, 0.7))
    out, _ = mix.sample_posterior(x.cuda(), 0.7, torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and torch.isfinite(out).all()
