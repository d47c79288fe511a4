"""Divergences: Gaussian closed forms vs numerical integration, span quadrature vs independent
integration, Monte Carlo vs exact within 4 standard errors, monotonicity in t, bounds, bad input."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import erfinv

from critwin.mixtures import GaussianMixture
from critwin.theory.divergence import (
    Estimate,
    TVCurve,
    bhattacharyya_gaussians,
    component_tv,
    hellinger_gaussians,
    kl_gaussians,
    overlap_bound,
    pinsker_bound,
    tv,
    tv_bounds_gaussians,
    tv_gaussians,
)

F64 = torch.float64


def _grid_2d(pdf_p, pdf_q, lo=-12.0, hi=12.0, n=1201):
    """Independent 2-D Riemann sums of (1/2)|p - q| and sqrt(p q) on a square grid."""
    xs = np.linspace(lo, hi, n)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    p, q = pdf_p(pts), pdf_q(pts)
    cell = (xs[1] - xs[0]) ** 2
    return 0.5 * np.abs(p - q).sum() * cell, np.sqrt(p * q).sum() * cell


@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0, 2.5, 6.0])
def test_tv_gaussians_matches_1d_quadrature(delta):
    # TV of N(0,1) and N(delta,1) by adaptive quadrature (error ~1e-10).
    exact, _ = integrate.quad(
        lambda x: 0.5 * abs(stats.norm.pdf(x) - stats.norm.pdf(x, delta)),
        -20,
        20 + delta,
        points=[delta / 2],
        limit=200,
    )
    assert tv_gaussians([0.0], [delta]) == pytest.approx(exact, abs=1e-8)


def test_tv_gaussians_full_covariance_matches_2d_grid():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    m1, m2 = np.array([0.5, -0.2]), np.array([-0.7, 0.9])
    p = stats.multivariate_normal(m1, cov).pdf
    q = stats.multivariate_normal(m2, cov).pdf
    grid_tv, _ = _grid_2d(p, q)
    # The grid rule with step 0.02 has error O(h^2) ~ 1e-4 at the kink p = q.
    assert tv_gaussians(m1, m2, cov) == pytest.approx(grid_tv, abs=5e-4)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    d = 4
    A, B = torch.randn(d, d, generator=g, dtype=F64), torch.randn(d, d, generator=g, dtype=F64)
    c1, c2 = A @ A.T + 0.5 * torch.eye(d, dtype=F64), B @ B.T + 0.5 * torch.eye(d, dtype=F64)
    m1, m2 = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m1, c1), torch.distributions.MultivariateNormal(m2, c2)
    ).item()
    assert kl_gaussians(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-10)
    assert kl_gaussians(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-12)


def test_bhattacharyya_and_bounds_match_2d_grid():
    m1, c1 = np.array([0.0, 0.0]), np.array([[1.0, 0.3], [0.3, 0.8]])
    m2, c2 = np.array([1.2, -0.5]), np.array([[2.0, -0.4], [-0.4, 1.5]])
    grid_tv, grid_bc = _grid_2d(stats.multivariate_normal(m1, c1).pdf, stats.multivariate_normal(m2, c2).pdf)
    bc = bhattacharyya_gaussians(m1, c1, m2, c2)
    # sqrt(pq) is smooth, so the grid sum is accurate to ~1e-8.
    assert bc == pytest.approx(grid_bc, abs=1e-6)
    assert hellinger_gaussians(m1, c1, m2, c2) == pytest.approx(math.sqrt(1 - grid_bc), abs=1e-6)
    lower, upper = tv_bounds_gaussians(m1, c1, m2, c2)
    assert lower <= grid_tv + 5e-4 and grid_tv <= upper + 5e-4
    assert upper <= pinsker_bound(kl_gaussians(m1, c1, m2, c2)) + 1e-12


def _mixture_tv_1d(means, weights_p, weights_q, idx_p, idx_q, var=1.0):
    """TV of two 1-D mixtures by adaptive quadrature."""
    sd = math.sqrt(var)

    def dens(x, idx, w):
        return sum(wi * stats.norm.pdf(x, means[i], sd) for i, wi in zip(idx, w, strict=True))

    lo, hi = min(means) - 15 * sd, max(means) + 15 * sd
    val, _ = integrate.quad(
        lambda x: 0.5 * abs(dens(x, idx_p, weights_p) - dens(x, idx_q, weights_q)),
        lo,
        hi,
        limit=500,
        points=sorted(means),
    )
    return val


def test_span_quadrature_rank1_matches_scipy_in_5d():
    # Means on one line in d = 5: the span has dimension 1, so the TV is a 1-D integral along it.
    direction = torch.tensor([1.0, 2.0, -1.0, 0.5, 0.0], dtype=F64)
    direction = direction / direction.norm()
    pos = [0.0, 1.5, 4.0]
    w = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    m = GaussianMixture(torch.stack([p * direction + 3.0 for p in pos]), covs=2.0, weights=w)
    for t in (0.0, 0.4):
        a, v = math.exp(-t), 2.0 * math.exp(-2 * t) + 1 - math.exp(-2 * t)
        ref = _mixture_tv_1d([a * p for p in pos], [0.4, 0.6], [0.2, 0.3, 0.5], [0, 1], [0, 1, 2], var=v)
        est = tv(m.subset([0, 1]), m, t)
        assert est.method == "quadrature"
        assert est.value == pytest.approx(ref, abs=1e-5)  # lattice error estimate is ~1e-6 here


def test_span_quadrature_rank2_matches_independent_mc_in_6d():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 6, generator=g, dtype=F64) * 2.0
    w = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    m = GaussianMixture(means, weights=w)
    est = tv(m.subset([0]), m.subset([1, 2]), 0.2)
    assert est.method == "quadrature"
    # Independent estimate in the full 6-D space with scipy densities: E_{x~M} |p-q|/(p+q).
    rng = np.random.default_rng(1)
    a, s = math.exp(-0.2), math.sqrt(1 - math.exp(-0.4))
    mu = (a * means).numpy()
    n = 40000
    x_p = mu[0] + s * 0 + rng.standard_normal((n, 6))
    lab = rng.choice([1, 2], size=n, p=[0.6, 0.4])
    x_q = mu[lab] + rng.standard_normal((n, 6))
    x = np.concatenate([x_p, x_q])
    p = stats.multivariate_normal(mu[0], np.eye(6)).pdf(x)
    q = 0.6 * stats.multivariate_normal(mu[1], np.eye(6)).pdf(x) + 0.4 * stats.multivariate_normal(
        mu[2], np.eye(6)
    ).pdf(x)
    f = np.abs(p - q) / (p + q)
    ref = 0.5 * (f[:n].mean() + f[n:].mean())
    se = 0.5 * math.sqrt(f[:n].var() / n + f[n:].var() / n)
    assert abs(est.value - ref) < 4 * se


def test_monte_carlo_within_4_se_of_exact():
    g = torch.Generator().manual_seed(5)
    m = GaussianMixture(
        torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=F64),
        weights=torch.tensor([0.3, 0.3, 0.4], dtype=F64),
    )
    for t in (0.0, 0.5):
        exact = tv(m.subset([0, 1]), m, t)
        mc = tv(m.subset([0, 1]), m, t, n=20000, generator=g, method="monte-carlo")
        assert mc.method == "monte-carlo" and mc.stderr > 0
        assert abs(mc.value - exact.value) < 4 * mc.stderr
        assert mc.low <= mc.value <= mc.high


def test_full_space_monte_carlo_unequal_variances():
    # N(0, 1) vs N(1, 4) have no closed form: compare with 1-D quadrature.
    P = GaussianMixture(torch.tensor([[0.0]], dtype=F64), covs=1.0)
    Q = GaussianMixture(torch.tensor([[1.0]], dtype=F64), covs=4.0)
    t = 0.3
    a = math.exp(-t)
    vp, vq = a * a + 1 - a * a, 4 * a * a + 1 - a * a
    ref, _ = integrate.quad(
        lambda x: 0.5 * abs(stats.norm.pdf(x, 0, math.sqrt(vp)) - stats.norm.pdf(x, a, math.sqrt(vq))),
        -40,
        40,
        limit=400,
    )
    est = tv(P, Q, t, n=20000, generator=torch.Generator().manual_seed(0))
    assert est.method == "monte-carlo"
    assert abs(est.value - ref) < 4 * est.stderr


def test_tv_is_non_increasing_in_t():
    m = GaussianMixture(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]], dtype=F64))
    times = np.linspace(0, 4, 21)
    exact = [tv(m.subset([0]), m.subset([1, 2]), float(t)).value for t in times]
    assert all(b <= a + 1e-5 for a, b in zip(exact, exact[1:], strict=False))  # quadrature error ~1e-5
    curve = TVCurve(m.subset([0]), m, 20000, torch.Generator().manual_seed(0), method="monte-carlo")
    mc = [curve(float(t)).value for t in times]
    se = curve(0.0).stderr
    assert all(b <= a + 4 * se for a, b in zip(mc, mc[1:], strict=False))


def test_seed_reproducible():
    m = GaussianMixture(torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=F64) * 3)
    e1 = tv(m.subset([0]), m, 0.3, n=2000, generator=torch.Generator().manual_seed(7))
    e2 = tv(m.subset([0]), m, 0.3, n=2000, generator=torch.Generator().manual_seed(7))
    assert e1 == e2 and isinstance(e1, Estimate)
    # The generator does drive the draws: another seed gives another Monte Carlo estimate.
    e3 = tv(m.subset([0]), m, 0.3, n=2000, generator=torch.Generator().manual_seed(8))
    assert e1.method == "monte-carlo" and e3.value != e1.value


def test_overlap_bound_dominates_exact_overlap():
    m = GaussianMixture(torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 1.0], [5.0, -1.0]], dtype=F64))
    for t in (0.0, 0.5, 1.5):
        exact = tv(m.subset([0, 1]), m.subset([2, 3]), t).value
        assert 1 - exact <= overlap_bound(m, [0, 1], t) + 1e-5
    value, exact_flag = component_tv(m, 0, 2, 0.0)
    assert exact_flag and value == pytest.approx(math.erf(math.sqrt(17) / 2 / math.sqrt(2)))


def test_bad_input():
    m = GaussianMixture(torch.zeros(2, 3, dtype=F64))
    other = GaussianMixture(torch.zeros(1, 2, dtype=F64))
    with pytest.raises(ValueError, match="dimension"):
        tv(m, other)
    with pytest.raises(ValueError, match="P must be"):
        tv("x", m)
    with pytest.raises(ValueError, match="method"):
        tv(m, m, method="magic")
    with pytest.raises(ValueError, match="t must be"):
        tv(m, m, -1.0)
    with pytest.raises(ValueError, match="level"):
        tv(m, m, level=1.5)
    with pytest.raises(ValueError, match="closed-form"):
        tv(m, m.subset([0]), method="closed-form")
    with pytest.raises(ValueError, match="positive definite"):
        kl_gaussians([0.0], [[0.0]], [1.0], [[1.0]])


def test_dirac_mixture_at_t0_is_the_discrete_tv():
    from critwin.mixtures import EmpiricalMixture

    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [30.0, 0.0], [31.0, 1.0]], dtype=F64)
    e = EmpiricalMixture(pts)
    # The t -> 0+ limit: TV of discrete laws, 1/2 (2 |1/2 - 1/4| + 2 * 1/4) = 1/2 (atoms 1e6 sd apart).
    assert tv(e.subset([0, 1]), e, 0.0).value == pytest.approx(0.5, abs=1e-9)
    assert tv(e.subset([0]), e.subset([1]), 0.0).value == pytest.approx(1.0, abs=1e-12)
    # At t > 0 the atoms are unit Gaussians of variance 1 - e^{-2t}: the closed form.
    t = 0.3
    delta = math.exp(-t) / math.sqrt(1 - math.exp(-2 * t))
    assert tv(e.subset([0]), e.subset([1]), t).value == pytest.approx(math.erf(delta / 2 / math.sqrt(2)))


@pytest.mark.parametrize("target", [0.5, 0.99, 1 - 1e-4, 1 - 1e-8])
def test_monte_carlo_interval_covers_near_one(target):
    # Two unit Gaussians in 3-D forced through the Monte Carlo path: TV = erf(delta / (2 sqrt 2)) exactly.
    # The old estimator covered at 1 - 1e-4 in far fewer than 95% of seeds (z-scores ~300). 60 seeds
    # at level 0.95: a correct (or conservative) interval misses >= 9 times with probability < 1%.
    delta = 2 * math.sqrt(2) * float(erfinv(target))
    exact = math.erf(delta / (2 * math.sqrt(2)))
    P = GaussianMixture(torch.zeros(1, 3, dtype=F64))
    Q = GaussianMixture(torch.tensor([[delta, 0.0, 0.0]], dtype=F64))
    covered = 0
    for seed in range(60):
        est = tv(P, Q, 0.0, n=2000, generator=torch.Generator().manual_seed(seed), method="monte-carlo")
        covered += est.low <= exact <= est.high
        assert 0.0 <= est.low <= est.value <= est.high <= 1.0
    assert covered >= 52


def test_monte_carlo_full_space_coverage_unequal_variances():
    # N(0, 0.01) vs N(0.6, 1): TV by adaptive quadrature; the full-space path with 50 seeds.
    exact, _ = integrate.quad(
        lambda x: 0.5 * abs(stats.norm.pdf(x, 0, 0.1) - stats.norm.pdf(x, 0.6, 1.0)),
        -12,
        12,
        limit=400,
        points=[0.0, 0.6],
    )
    P = GaussianMixture(torch.zeros(1, 1, dtype=F64), covs=0.01)
    Q = GaussianMixture(torch.tensor([[0.6]], dtype=F64), covs=1.0)
    covered = sum(
        tv(P, Q, 0.0, n=2000, generator=torch.Generator().manual_seed(s)).low
        <= exact
        <= tv(P, Q, 0.0, n=2000, generator=torch.Generator().manual_seed(s)).high
        for s in range(50)
    )
    assert covered >= 43  # level 0.95: >= 8 misses in 50 has probability < 1%


def test_monte_carlo_draws_every_component_of_tiny_weight():
    # Q = (1 - 2e-7) N(0, I) + 2e-7 N(30 e1, I) vs P = N(0, I): TV = 2e-7 (the far component is disjoint
    # to e^{-56}). Plain sampling (n = 2000) never draws it and reported 0 with a zero-width interval;
    # stratified draws give it its exact weight.
    means = torch.tensor([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, 5.0, 0.0]], dtype=F64)
    m = GaussianMixture(means, weights=torch.tensor([0.5 - 1e-7, 1e-7, 0.5], dtype=F64))
    est = tv(
        m.subset([0]),
        m.subset([0, 1]),
        0.0,
        n=2000,
        generator=torch.Generator().manual_seed(0),
        method="monte-carlo",
    )
    exact = 1e-7 / 0.5  # the weight of component 1 inside the sub-mixture {0, 1}
    assert est.value == pytest.approx(exact, rel=1e-6) and est.low <= exact <= est.high


def test_quadrature_bracket_covers_finer_integration():
    # 110 random 1-D-span cases: the bracket must contain scipy's adaptive quadrature (error ~1e-12).
    rng = np.random.default_rng(0)
    misses, worst = 0, 0.0
    for _ in range(110):
        K = int(rng.integers(2, 5))
        pos, w = rng.normal(0, 3, K), rng.dirichlet(np.ones(K))
        S = sorted(rng.choice(K, int(rng.integers(1, K)), replace=False).tolist())
        means = torch.tensor(pos[:, None] * np.array([[1.0, 0.0, 0.0]]), dtype=F64)
        m = GaussianMixture(means, weights=torch.tensor(w, dtype=F64))
        t = float(rng.uniform(0, 1.5))
        est = tv(m.subset(S), m, t)
        a, wS = math.exp(-t), np.zeros(K)
        wS[S] = w[S] / w[S].sum()
        diff = wS - w
        ref, _ = integrate.quad(
            lambda x, diff=diff, c=a * pos: 0.5 * abs(diff @ stats.norm.pdf(x, c)),
            -40,
            40,
            points=sorted(a * pos),
            limit=500,
            epsabs=1e-12,
        )
        misses += not est.low <= ref <= est.high
        worst = max(worst, abs(est.value - ref))
    assert est.method == "quadrature" and misses == 0 and worst < 1e-5


def test_tv_curve_table_frame_and_plot_match_the_closed_form():
    """TVCurve.table/to_pandas/plot: the closed form 2 Phi(e^-t |mu1 - mu2| / 2) - 1 of two unit Gaussians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from critwin.mixtures import GaussianMixture
    from critwin.theory.divergence import TVCurve

    means = torch.tensor([[-1.5, 0.0], [1.5, 0.0]], dtype=torch.float64)
    P, Q = GaussianMixture(means[:1]), GaussianMixture(means[1:])
    curve = TVCurve(P, Q)
    times = [0.0, 0.5, 2.0]
    rows = curve.table(times)
    expected = [2 * norm.cdf(math.exp(-t) * 3.0 / 2) - 1 for t in times]
    assert rows["t"] == times and np.allclose(rows["tv"], expected, atol=1e-12)
    pytest.importorskip("pandas")
    assert np.allclose(curve.to_pandas(times)["tv"], expected, atol=1e-12)
    ax = curve.plot(times)
    assert ax.get_xlabel() == "OU time t" and np.allclose(ax.lines[0].get_ydata(), expected, atol=1e-12)
    plt.close(ax.figure)


def test_monte_carlo_tv_near_one_has_relative_precision():
    # Issue 21.3: two unit Gaussians with 1 - TV = 1e-8 (closed form 2 Phi(-delta/2)), n = 2e4 forced
    # Monte Carlo. Plain draws from M land in the overlap ~2e-4 times (ESS ~1.6, relative error ~12);
    # the pair strata of critwin.theory.mc_tv sample it directly.
    from scipy.stats import norm

    from critwin.theory.references import line_overlap

    delta = -2 * norm.ppf(0.5e-8)
    means = torch.zeros(2, 3, dtype=F64)
    means[1, 0] = delta
    e = tv(GaussianMixture(means[:1]), GaussianMixture(means[1:]), 0.0, n=20000, method="monte-carlo")
    # measured: ESS ~1300, relative half-width ~5% at 95% (se ~2.4%): 15% is > 6 standard errors
    assert e.ess > 500 and e.rel_precision < 0.1
    assert e.overlap == pytest.approx(1e-8, rel=0.15)
    assert 1 - e.high <= 1e-8 <= 1 - e.low  # seeded, so deterministic
    # mixtures of two components each on a line, against the exact piecewise integral
    x = torch.tensor([[0.0], [1.0], [12.0], [13.5]], dtype=F64)
    m = GaussianMixture(x, 1.0, torch.tensor([0.3, 0.2, 0.4, 0.1], dtype=F64))
    e = tv(m.subset([0, 1]), m.subset([2, 3]), 0.0, n=20000, method="monte-carlo")
    exact = line_overlap([0.0, 1.0], [0.6, 0.4], [12.0, 13.5], [0.8, 0.2])
    assert exact < 1e-7 and e.overlap == pytest.approx(exact, rel=0.15) and e.rel_precision < 0.1
    assert 1 - e.high <= exact <= 1 - e.low


def test_every_estimate_reports_its_precision():
    m = GaussianMixture(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.5, 2.0]], dtype=F64))
    closed = tv(m.subset([0]), m.subset([1]), 0.0)
    assert closed.method == "closed-form" and closed.rel_precision == 0.0
    assert closed.overlap == pytest.approx(math.erfc(3.0 / (2 * math.sqrt(2))), rel=1e-12)
    quad = tv(m.subset([0]), m, 0.2)
    assert quad.method == "quadrature" and 0 < quad.rel_precision < 1e-3
    mc = tv(m.subset([0]), m, 0.2, n=4000, method="monte-carlo")
    assert mc.ess > 200 and 0 < mc.rel_precision < 0.2
    # the relative precision is half the interval over the smaller of TV and 1 - TV
    half = 0.5 * (mc.high - mc.low)
    assert mc.rel_precision == pytest.approx(half / min(mc.value, mc.overlap))
    assert mc.value + mc.overlap == pytest.approx(1.0, abs=1e-12)
