import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import critwin.mixtures.gaussian as mixtures_module
from critwin import EmpiricalMixture, GaussianMixture

KINDS = ["iso", "diag", "full"]
TIMES = [0.0, 1e-3, 0.05, 0.4, 1.5, 6.0]


def reference(mixture, t):
    """torch.distributions' independent implementation of the noised law (THEORY §4)."""
    a, s2 = math.exp(-t), -math.expm1(-2 * t)
    covs = a * a * mixture.cov_matrices() + s2 * torch.eye(mixture.dim, dtype=mixture.dtype)
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(mixture.weights),
        torch.distributions.MultivariateNormal(a * mixture.means, covs),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_and_score_match_autograd_of_torch_distributions(kind, random_mixture):
    mix = random_mixture(kind, K=4, d=5, seed=1)
    g = torch.Generator().manual_seed(2)
    for t in TIMES:
        x = (2.0 * torch.randn(16, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
        ref = reference(mix, t).log_prob(x)
        (grad,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(mix.log_prob(x.detach(), t), ref.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(mix.score(x.detach(), t), grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_denoise_is_tweedie(kind, random_mixture):
    # Tweedie: E[X0 | X_t = x] = (x + (1 - e^{-2t}) score) / e^{-t}, a different route from the code's.
    mix = random_mixture(kind, K=3, d=4, seed=3)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for t in TIMES[1:]:
        a, s2 = math.exp(-t), -math.expm1(-2 * t)
        torch.testing.assert_close(mix.denoise(x, t), (x + s2 * mix.score(x, t)) / a, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_noised_moments_match_monte_carlo_of_forward_process(kind, random_mixture):
    mix = random_mixture(kind, K=3, d=3, seed=5)
    g = torch.Generator().manual_seed(6)
    n, t = 200_000, 0.7
    x0, _ = mix.sample(n, g)
    xt = math.exp(-t) * x0 + math.sqrt(-math.expm1(-2 * t)) * torch.randn(
        n, 3, generator=g, dtype=torch.float64
    )
    law = reference(mix, t)
    # Standard errors: sqrt(var / n) for the mean; sqrt(2 var^2 / n)-ish for covariances. 5 SE bounds.
    se_mean = (law.variance / n).sqrt()
    assert ((xt.mean(0) - law.mean).abs() < 5 * se_mean).all()
    noised = mix.noised(t)
    y, _ = noised.sample(n, g)
    cov_ref = torch.cov(xt.T)
    scale = cov_ref.diagonal().max()
    assert (torch.cov(y.T) - cov_ref).abs().max() < 10 * scale * math.sqrt(2 / n)
    torch.testing.assert_close(noised.log_prob(xt[:50]), law.log_prob(xt[:50]), rtol=1e-10, atol=1e-10)


def test_sample_posterior_matches_closed_form_gaussian():
    # One full-covariance component: X0 | X_t = y ~ N(C (S^-1 mu + (a/s2) y), C), C = (S^-1 + a^2/s2 I)^-1.
    g = torch.Generator().manual_seed(7)
    d = 3
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    S = A @ A.T + 0.5 * torch.eye(d, dtype=torch.float64)
    mu = torch.randn(1, d, generator=g, dtype=torch.float64)
    mix = GaussianMixture(mu, S.unsqueeze(0))
    t, y = 0.4, torch.randn(1, d, generator=g, dtype=torch.float64)
    a, s2 = math.exp(-t), -math.expm1(-2 * t)
    C = torch.linalg.inv(torch.linalg.inv(S) + (a * a / s2) * torch.eye(d, dtype=torch.float64))
    m = C @ (torch.linalg.solve(S, mu[0]) + (a / s2) * y[0])
    n = 200_000
    x0, labels = mix.sample_posterior(y.expand(n, d), t, g)
    assert (labels == 0).all()
    se = (C.diagonal() / n).sqrt()
    assert ((x0.mean(0) - m).abs() < 5 * se).all()
    assert (torch.cov(x0.T) - C).abs().max() < 6 * C.diagonal().max() * math.sqrt(2 / n)
    torch.testing.assert_close(mix.denoise(y, t)[0], m, rtol=1e-10, atol=1e-12)


def test_sample_posterior_matches_importance_sampling_in_1d():
    mix = GaussianMixture(
        torch.tensor([[-2.0], [0.5], [3.0]], dtype=torch.float64),
        torch.tensor([0.3, 0.8, 0.5], dtype=torch.float64),
        torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64),
    )
    g = torch.Generator().manual_seed(8)
    t, y = 0.6, 0.9
    a, s2 = math.exp(-t), -math.expm1(-2 * t)
    # Brute force: prior draws weighted by the likelihood N(y; a x0, s2).
    prior, prior_labels = mix.sample(2_000_000, g)
    logw = -0.5 * (y - a * prior[:, 0]) ** 2 / s2
    w = torch.softmax(logw, 0)
    is_mean = (w * prior[:, 0]).sum()
    is_var = (w * (prior[:, 0] - is_mean) ** 2).sum()
    is_labels = torch.zeros(3, dtype=torch.float64).index_add_(0, prior_labels, w)
    n = 400_000
    x0, labels = mix.sample_posterior(torch.full((n, 1), y, dtype=torch.float64), t, g)
    # MC error of the exact sampler dominates (ESS of the IS estimate ~ 2e6 * 0.3): 5 SE.
    se = math.sqrt(is_var / n) * 1.5
    assert abs(x0.mean().item() - is_mean.item()) < 5 * se
    assert abs(x0.var().item() - is_var.item()) < 0.02 * is_var.item()
    freq = torch.bincount(labels, minlength=3).double() / n
    assert (freq - is_labels).abs().max() < 5 * math.sqrt(0.25 / n) + 1e-3
    torch.testing.assert_close(
        mix.posterior(torch.tensor([[y]], dtype=torch.float64), t)[0], is_labels, atol=3e-3, rtol=0
    )


def test_sample_reverse_is_the_exact_bridge():
    # X_s | X_t for one isotropic Gaussian: jointly Gaussian with Cov(X_s, X_t) = e^{-(t-s)} Var(X_s).
    c, mu, s, t = 0.5, 1.5, 0.3, 1.1
    mix = GaussianMixture(torch.tensor([[mu]], dtype=torch.float64), c)
    var_s = math.exp(-2 * s) * c + (-math.expm1(-2 * s))
    var_t = math.exp(-2 * t) * c + (-math.expm1(-2 * t))
    cov = math.exp(-(t - s)) * var_s
    y = 0.2
    mean = math.exp(-s) * mu + cov / var_t * (y - math.exp(-t) * mu)
    var = var_s - cov * cov / var_t
    n = 200_000
    xs, _ = mix.sample_reverse(
        torch.full((n, 1), y, dtype=torch.float64), t, s, torch.Generator().manual_seed(9)
    )
    assert abs(xs.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(xs.var().item() - var) < 5 * var * math.sqrt(2 / n)
    with pytest.raises(ValueError, match="s must be smaller than t"):
        mix.sample_reverse(xs[:2], 0.5, 0.5)


def test_empirical_mixture_matches_brute_force_and_chunking(monkeypatch):
    g = torch.Generator().manual_seed(10)
    pts = torch.randn(500, 6, generator=g, dtype=torch.float64)
    emp = EmpiricalMixture(pts)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64)
    t = 0.3
    a, s2 = math.exp(-t), -math.expm1(-2 * t)
    logits = -0.5 * torch.cdist(x, a * pts) ** 2 / s2
    post = torch.softmax(logits, 1)
    torch.testing.assert_close(emp.posterior(x, t), post, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(emp.denoise(x, t), post @ pts, rtol=1e-9, atol=1e-10)
    full = (emp.log_prob(x, t), emp.score(x, t))
    monkeypatch.setattr(mixtures_module, "_CHUNK_ELEMENTS", 64)  # forces many component/row chunks
    torch.testing.assert_close(emp.log_prob(x, t), full[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(emp.score(x, t), full[1], rtol=1e-10, atol=1e-10)
    x0, labels = emp.sample_posterior(x, t, torch.Generator().manual_seed(1))
    torch.testing.assert_close(x0, pts[labels])
    idx, dist = emp.nearest(pts[[3, 17]] + 1e-3)
    assert idx.tolist() == [3, 17] and torch.allclose(
        dist, torch.full((2,), 1e-3 * math.sqrt(6), dtype=torch.float64), rtol=1e-6
    )
    with pytest.raises(ValueError, match="t must be > 0"):
        emp.log_prob(x, 0.0)


def test_empirical_mixture_scales_to_1e5_points_in_784_dims():
    g = torch.Generator().manual_seed(11)
    pts = torch.rand(100_000, 784, generator=g) * 2 - 1
    emp = EmpiricalMixture(pts)
    x = emp.noised(0.05).sample(8, g)[0]
    den = emp.denoise(x, 0.05)
    assert den.shape == (8, 784) and torch.isfinite(den).all()
    # at small t the posterior collapses onto the nearest point (t_C >> 0.05 here)
    nearest, _ = emp.nearest(x / math.exp(-0.05))
    assert torch.allclose(den, pts[nearest], atol=1e-3)


def test_float32_and_subset():
    mix = GaussianMixture(torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), weights=[0.5, 0.25, 0.25])
    assert mix.dtype == torch.float32 and mix.score(torch.zeros(3, 2), 0.5).dtype == torch.float32
    sub = mix.subset([2, 1])
    torch.testing.assert_close(sub.weights, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(sub.means, mix.means[[1, 2]])
    x, labels = mix.sample(10, torch.Generator().manual_seed(0))
    x2, labels2 = mix.sample(10, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(labels, labels2)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    K=st.integers(1, 6),
    d=st.sampled_from([1, 2, 7, 64, 10_000]),
    t=st.floats(1e-6, 50.0),
    seed=st.integers(0, 2**16),
)
def test_posterior_rows_sum_to_one_and_nothing_is_nan(kind, K, d, t, seed, random_mixture):
    if kind == "full" and d > 64:
        kind = "diag"
    mix = random_mixture(kind, K=K, d=d, seed=seed, dtype=torch.float32 if d > 64 else torch.float64)
    x = 3.0 * torch.randn(4, d, generator=torch.Generator().manual_seed(seed), dtype=mix.dtype)
    post = mix.posterior(x, t)
    assert torch.isfinite(post).all()
    torch.testing.assert_close(post.sum(-1), torch.ones(4, dtype=mix.dtype), rtol=1e-5, atol=1e-5)
    for value in (mix.score(x, t), mix.denoise(x, t), mix.log_prob(x, t)):
        assert torch.isfinite(value).all()
    x0, _ = mix.sample_posterior(x, t, torch.Generator().manual_seed(seed))
    assert torch.isfinite(x0).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(means=[[0.0, float("nan")]]), "means"),
        (dict(means=[0.0, 1.0]), "means"),
        (dict(means=[[0.0], [1.0]], weights=[0.7, 0.7]), "sum to 1"),
        (dict(means=[[0.0], [1.0]], weights=[1.5, -0.5]), "non-negative"),
        (dict(means=[[0.0], [1.0]], weights=[1.0]), "weights must have shape"),
        (dict(means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "positive semi-definite"),
        (dict(means=[[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
        (dict(means=[[0.0, 0.0]], covs=[[float("nan"), 1.0]]), "covs"),
        (dict(means=[[0.0, 0.0]], covs=[[1.0, 1.0, 1.0]]), "covs must be"),
        (dict(means=[[0.0]], covs=-1.0), "non-negative"),
    ],
)
def test_bad_construction_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_bad_calls_name_the_argument():
    mix = GaussianMixture(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="t must be >= 0"):
        mix.score(torch.zeros(1, 3), -0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        mix.score(torch.zeros(1, 2), 0.1)
    with pytest.raises(ValueError, match="empty"):
        mix.subset([])
    with pytest.raises(ValueError, match="unknown component 5"):
        mix.subset([0, 5])
    with pytest.raises(ValueError, match="n must be"):
        mix.sample(0)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_and_chunked_paths_agree_with_the_plain_ones(kind, random_mixture, monkeypatch):
    mix = random_mixture(kind, K=5, d=6, seed=12)
    x = 2 * torch.randn(30, 6, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    score, post = mix.score_and_posterior(x, 0.3)
    torch.testing.assert_close(score, mix.score(x, 0.3), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(post, mix.posterior(x, 0.3), rtol=1e-10, atol=1e-14)
    both = mix.score_and_denoise(x, 0.3)
    monkeypatch.setattr(mixtures_module, "_CHUNK_ELEMENTS", 40)  # several component and row chunks
    monkeypatch.setattr(mixtures_module, "_ROW_CHUNK", 7)
    torch.testing.assert_close(mix.score(x, 0.3), both[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mix.denoise(x, 0.3), both[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mix.log_prob(x, 0.3), reference(mix, 0.3).log_prob(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["iso", "diag"])
@pytest.mark.parametrize("block", [2**17, 3 * 7])  # one row block; blocks of 3 rows (d = 7)
def test_score_and_posterior_matches_torch_distributions_and_autograd(
    kind, block, random_mixture, monkeypatch
):
    """The fused row-block kernel against the slow exact path on the same inputs: the posterior from
    torch.distributions' component log densities, the score by autograd of the mixture's log density."""
    monkeypatch.setattr(mixtures_module, "_FUSED_ELEMENTS", block)
    mix = random_mixture(kind, K=6, d=7, seed=21)
    x = (
        2.5 * torch.randn(20, 7, generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    ).requires_grad_()
    for t in (0.05, 0.4, 2.0):
        law = reference(mix, t)
        (grad,) = torch.autograd.grad(law.log_prob(x).sum(), x)
        logits = law.component_distribution.log_prob(x.detach().unsqueeze(1)) + mix.log_weights
        score, post = mix.score_and_posterior(x.detach(), t)
        torch.testing.assert_close(post, torch.softmax(logits, -1), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_and_posterior_flushes_only_posteriors_below_twice_the_smallest_normal(dtype):
    """Means far apart make most responsibilities underflow: those below 2 * tiny (relative to the row's
    largest) come out exactly 0, every other one as the exact float64 softmax, the score unchanged."""
    g = torch.Generator().manual_seed(5)
    means = 14.0 * torch.randn(12, 4, generator=g, dtype=torch.float64)
    mix = GaussianMixture(means.to(dtype), torch.rand(12, generator=g, dtype=torch.float64).to(dtype) + 0.3)
    x = mix.noised(0.02).sample(300, torch.Generator().manual_seed(6))[0]
    exact = mix.to(torch.float64)
    logits = exact.component_log_prob(x.double(), 0.02) + exact.log_weights
    want = torch.softmax(logits, -1)
    score, post = mix.score_and_posterior(x, 0.02)
    tiny = torch.finfo(dtype).tiny
    relative = want / want.amax(1, keepdim=True)
    flushed = relative < 2 * tiny
    kept = relative > 4 * tiny  # between the two, rounding of the logits decides
    assert 100 < int(flushed.sum()) and int(kept.sum()) > 300  # the case exercises both sides
    assert bool((post[flushed] == 0).all())
    # Responsibilities down to 1e-30: float32 logits of points ~|x|^2 / v ~ 2e3 carry eps * 2e3 ~ 1e-4
    # absolute error, hence ~1e-4 relative error in each responsibility (1e-16 in float64).
    relerr = ((post.double() - want).abs() / want)[kept & (relative > 1e-30)]
    assert float(relerr.max()) < (1e-12 if dtype == torch.float64 else 1e-3)
    rtol = 1e-9 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(post.double().sum(1), torch.ones(300, dtype=torch.float64), rtol=rtol, atol=0)
    ref_score = exact.score(x.double(), 0.02)
    torch.testing.assert_close(score.double(), ref_score, rtol=rtol, atol=rtol * float(ref_score.abs().max()))


@pytest.mark.parametrize("kind", ["iso", "diag"])
def test_score_and_posterior_one_hot_blocks_match_the_exact_path(kind, monkeypatch):
    """Row blocks whose posteriors are all one-hot take the gather path, the others the GEMM: both against
    torch.distributions + autograd on the same points (blocks of 4 rows, some of each kind)."""
    d = 3
    monkeypatch.setattr(mixtures_module, "_FUSED_ELEMENTS", 4 * 5)  # 4 rows per block (K = 5 > d)
    g = torch.Generator().manual_seed(31)
    means = torch.tensor(
        [[0.0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100], [1.0, 0.5, 0]], dtype=torch.float64
    )
    covs = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    mix = GaussianMixture(
        means, covs if kind == "iso" else covs.unsqueeze(1) * torch.ones(5, d, dtype=torch.float64)
    )
    # Rows 0-7 near components 1-3 only (one-hot), rows 8-15 between components 0 and 4 (two nonzero).
    centres = torch.cat([means[1:4].repeat(3, 1)[:8], (0.5 * means[0] + 0.5 * means[4]).expand(8, d)])
    x = (centres + 0.3 * torch.randn(16, d, generator=g, dtype=torch.float64)).requires_grad_()
    t = 0.01
    law = reference(mix, t)
    (grad,) = torch.autograd.grad(law.log_prob(x).sum(), x)
    want = torch.softmax(law.component_distribution.log_prob(x.detach().unsqueeze(1)) + mix.log_weights, -1)
    one_hot = (want >= 2 * torch.finfo(torch.float64).tiny).sum(1) == 1
    assert bool(one_hot[:8].all()) and not bool(one_hot[8:].any())
    score, post = mix.score_and_posterior(x.detach(), t)
    torch.testing.assert_close(post, want, rtol=1e-9, atol=1e-300)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)


def test_score_and_posterior_one_hot_gather_needs_labels_exact_in_the_dtype():
    """float16 holds integers exactly only up to 2048: with K = 2100 components, p @ labels would name
    component 2048 for a row one-hot on component 2049, so such blocks must take the GEMM. Components
    8 e_i (identity covariances) at t = 0: the score at 8 e_k + 0.25 e_0 is exactly -0.25 e_0."""
    K = 2100
    means = 8.0 * torch.eye(K, dtype=torch.float16)
    rows = torch.tensor([2049, 2051, 2099])
    x = means[rows].clone()
    x[:, 0] += 0.25
    score, post = GaussianMixture(means).score_and_posterior(x, 0.0)
    assert torch.equal(post.argmax(1), rows) and bool((post.amax(1) == 1).all())  # one-hot rows
    want = torch.zeros(3, K, dtype=torch.float16)
    want[:, 0] = -0.25
    assert torch.equal(score, want)
