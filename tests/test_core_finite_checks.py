"""NaN/inf in the points given to a mixture are refused from a cheap summary, never silently scored.

The hot paths (``score_and_posterior``, ``score``/``denoise`` at every sampler step, ``log_prob`` in
the Monte Carlo TV) no longer scan all of ``x`` for NaN/inf before the work: each method checks an
(n,) summary it computes anyway (the log density of each row under the heaviest component, the
log-sum-exp, the Gumbel maximum, the nearest distance) and scans ``x`` only when that summary is not
finite. These tests put one bad coordinate somewhere in a batch spanning several row chunks and ask
every method, every covariance kind and both dtypes for a ValueError naming the argument; finite
points whose squares overflow (a non-finite summary from good input) are still accepted.
"""

import math

import numpy as np
import pytest
import torch

import critwin.mixtures.gaussian as gaussian_module
from critwin import EmpiricalMixture, sample_euler_maruyama, tv
from critwin._validation import check_finite_from

KINDS = ("iso", "diag", "full")
BAD = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
N, D = 23, 3

METHODS = {
    "log_prob": lambda m, x: m.log_prob(x, 0.4),
    "posterior": lambda m, x: m.posterior(x, 0.4),
    "component_log_prob": lambda m, x: m.component_log_prob(x, 0.4),
    "score": lambda m, x: m.score(x, 0.4),
    "denoise": lambda m, x: m.denoise(x, 0.4),
    "score_and_posterior": lambda m, x: m.score_and_posterior(x, 0.4),
    "score_and_denoise": lambda m, x: m.score_and_denoise(x, 0.4),
    "bayes_label": lambda m, x: m.bayes_label(x),
    "sample_posterior": lambda m, x: m.sample_posterior(x, 0.4, torch.Generator().manual_seed(0)),
    "sample_reverse": lambda m, x: m.sample_reverse(x, 0.4, 0.1, torch.Generator().manual_seed(0)),
}
ARGUMENT = {"sample_posterior": "y", "sample_reverse": "y"}


@pytest.fixture
def small_chunks(monkeypatch):
    """Row chunks of 5 (of 23 rows) and component chunks of 2: the bad row sits in a middle chunk."""
    monkeypatch.setattr(gaussian_module, "_ROW_CHUNK", 5)
    monkeypatch.setattr(gaussian_module, "_CHUNK_ELEMENTS", 2 * 64 * D)


def _points(dtype, row=None, col=None, value=None):
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(3), dtype=dtype)
    if row is not None:
        x[row, col] = value
    return x


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("bad", sorted(BAD))
def test_one_bad_coordinate_is_refused_by_name(kind, dtype, method, bad, random_mixture, small_chunks):
    mix = random_mixture(kind, K=4, d=D, seed=1, dtype=dtype)
    x = _points(dtype, row=12, col=1, value=BAD[bad])
    with pytest.raises(ValueError, match=rf"^{ARGUMENT.get(method, 'x')} contains NaN or infinite"):
        METHODS[method](mix, x)


@pytest.mark.parametrize("bad", sorted(BAD))
def test_empirical_mixture_nearest_refuses_bad_points(bad):
    emp = EmpiricalMixture(torch.randn(40, D, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"^x contains NaN or infinite"):
        emp.nearest(_points(torch.float32, row=7, col=0, value=BAD[bad]))
    with pytest.raises(ValueError, match=r"^x contains NaN or infinite"):
        emp.score(_points(torch.float32, row=7, col=0, value=BAD[bad]), 0.3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_finite_points_whose_squares_overflow_are_accepted(kind, method, random_mixture, small_chunks):
    # |x|^2 of a float32 coordinate 1e20 overflows to inf: the summary is not finite, the scan of x
    # finds nothing, and the call goes on as it did before the cheap check (no error).
    mix = random_mixture(kind, K=4, d=D, seed=1, dtype=torch.float32)
    METHODS[method](mix, _points(torch.float32, row=4, col=2, value=1e20))


@pytest.mark.parametrize("kind", KINDS)
def test_clean_points_give_the_results_of_the_full_check(kind, random_mixture, small_chunks):
    """Same numbers as the path that scans x first (check_finite before, summary check off)."""
    mix = random_mixture(kind, K=4, d=D, seed=2)
    x = _points(torch.float64)
    fast = mix.score_and_posterior(x, 0.4)
    torch.testing.assert_close(fast[0], mix.score(x, 0.4), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast[1], mix.posterior(x, 0.4), rtol=1e-10, atol=1e-14)
    # The posterior of the fused path against the textbook softmax of the component log densities.
    logits = mix.component_log_prob(x, 0.4) + mix.log_weights
    torch.testing.assert_close(fast[1], torch.softmax(logits, -1), rtol=1e-10, atol=1e-14)


def test_check_finite_from_scans_only_on_a_bad_summary(monkeypatch):
    calls = []
    monkeypatch.setattr("critwin._validation.check_finite", lambda x, name: calls.append(name))
    x = torch.ones(4, 2)
    check_finite_from(torch.zeros(4), x, "x")
    assert calls == []
    check_finite_from(torch.tensor([0.0, float("-inf")]), x, "x")
    assert calls == ["x"]


def test_sampler_step_on_a_state_that_turned_nan_is_refused(random_mixture):
    # The state is checked once at the start; a denoiser that returns NaN makes the next state NaN,
    # which the mixture's denoise (called at every step) refuses from its log-sum-exp.
    mix = random_mixture("iso", K=3, d=D, seed=4)
    calls = []

    def spoiled(x, t):
        calls.append(t)
        out = mix.denoise(x, t)
        return out.fill_(float("nan")) if len(calls) == 1 else out

    with pytest.raises(ValueError, match=r"^x contains NaN or infinite"):
        sample_euler_maruyama(spoiled, _points(torch.float64), [1.0, 0.6, 0.3, 0.0])
    assert len(calls) == 2  # refused at the second step, before any result


def _grid_tv(P, Q, t, half_width=9.0, m=601):
    """0.5 * integral |p_t - q_t| on a (m x m) grid, densities from scipy (independent of critwin)."""
    from scipy.stats import multivariate_normal

    a, s2 = math.exp(-t), 1 - math.exp(-2 * t)
    axis = np.linspace(-half_width, half_width, m)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)

    def density(mix):
        covs = mix.cov_matrices().numpy()
        return sum(
            w * multivariate_normal(a * mu, a * a * c + s2 * np.eye(2)).pdf(grid)
            for w, mu, c in zip(mix.weights.numpy(), mix.means.numpy(), covs, strict=True)
        )

    return 0.5 * np.abs(density(P) - density(Q)).sum() * (axis[1] - axis[0]) ** 2


def test_tv_monte_carlo_through_the_cheap_check_matches_the_integral(random_mixture):
    # Full covariances: Monte Carlo TV evaluates log_prob (cheap check) on its own draws. Against the
    # grid integral within 4 of its standard errors (a two-sided miss has probability 6e-5) plus the
    # grid's own error (a 0.03 step on smooth densities: far below 1e-3).
    mix = random_mixture("full", K=3, d=2, seed=5)
    g = torch.Generator().manual_seed(7)
    mc = tv(mix.subset([0]), mix, 0.3, n=20000, generator=g, method="monte-carlo")
    assert mc.method == "monte-carlo"
    assert abs(mc.value - _grid_tv(mix.subset([0]), mix, 0.3)) <= 4 * mc.stderr + 1e-3
