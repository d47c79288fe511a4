"""Transition times and critical windows: closed-form oracles, brute-force grid search, the closed-form
windows of THEORY §5 containing the exact window on random mixtures, edge cases and bad input."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import erfinv

from critwin.mixtures import GaussianMixture
from critwin.theory.closed_forms import log_concave_times, window_isotropic, window_two_gaussians
from critwin.theory.divergence import tv
from critwin.theory.windows import critical_window, theorem_bound, transition_times

F64 = torch.float64


def _pm(norm, d=2, weights=None):
    mu = torch.zeros(d, dtype=F64)
    mu[0] = norm
    return GaussianMixture(torch.stack([mu, -mu]), weights=weights)


def _exact_two_gaussian_window(norm, eps, raw=False):
    """For N(+-mu, I)/2: TV(p_t^+, p_t^-) = erf(a|mu|/sqrt2) and TV(p_t^+, p_t) = erf(a|mu|/sqrt2)/2."""
    t_after = math.log(norm / (math.sqrt(2) * erfinv(1 - eps**2)))
    # TV(p_t^+, p_t) < 1/2 at every t, so for eps >= 1/2 the merge holds from t = 0.
    t_before = max(0.0, math.log(norm / (math.sqrt(2) * erfinv(2 * eps)))) if eps < 0.5 else 0.0
    return (t_after if (t_after >= 0 or raw) else -math.inf), t_before


@pytest.mark.parametrize("norm,eps", [(3.0, 0.1), (10.0, 0.05), (50.0, 0.2)])
def test_critical_window_two_gaussians_closed_form(norm, eps):
    w = critical_window(_pm(norm), [0], eps=eps, tol=1e-6)
    lower, upper = _exact_two_gaussian_window(norm, eps)
    assert w.t_after == pytest.approx(lower, abs=1e-5)  # bisection tolerance 1e-6, quadrature error ~1e-6
    assert w.t_before == pytest.approx(upper, abs=1e-4)
    assert w.status == "non-empty" and not w.empty and (w.lower, w.upper) == (w.t_after, w.t_before)
    assert w.t_after_low <= lower <= w.t_after_high and w.t_before_low <= upper <= w.t_before_high


def test_transition_times_match_brute_force_grid():
    # 1-D mixture of three unit Gaussians; TV curves by an independent numpy grid integral.
    pos = np.array([0.0, 1.5, 9.0])
    w = np.array([0.3, 0.2, 0.5])
    m = GaussianMixture(torch.tensor(pos[:, None], dtype=F64), weights=torch.tensor(w, dtype=F64))
    eps = 0.1
    x = np.linspace(-30, 40, 14001)
    dx = x[1] - x[0]

    def tv_at(t, wa, wb):
        a = math.exp(-t)
        comp = np.exp(-0.5 * (x[None, :] - a * pos[:, None]) ** 2) / math.sqrt(2 * math.pi)
        return 0.5 * np.abs((wa / wa.sum()) @ comp - (wb / wb.sum()) @ comp).sum() * dx

    grid = np.arange(0, 5, 0.004)
    init, target, rest = np.array([1.0, 0, 0]) * w, np.array([1.0, 1, 0]) * w, np.array([0, 0, 1.0]) * w
    merged = np.array([tv_at(t, init, target) for t in grid])
    separated = np.array([tv_at(t, target, rest) for t in grid])
    brute_end = grid[np.argmax(merged <= eps)]
    brute_start = grid[np.nonzero(separated >= 1 - eps**2)[0].max()]
    tt = transition_times(m, [0], [0, 1], eps, tol=1e-4)
    assert abs(tt.t_end - brute_end) <= 0.004 + 1e-4  # grid step + bisection tolerance
    assert abs(tt.t_start - brute_start) <= 0.004 + 1e-4
    assert tt.W == pytest.approx(0.5 / 0.5)
    assert tt.bound == pytest.approx(theorem_bound(eps, 1.0)) == pytest.approx(eps * (1 + 1 / math.sqrt(2)))
    t_end, t_start, bound = tt
    assert (t_end, t_start, bound) == (tt.t_end, tt.t_start, tt.bound)
    assert not hasattr(tt, "t_lower") and tt.status == "empty"  # T_end 0.856 > T_start 0.437


def test_monte_carlo_times_bracket_the_exact_time():
    m = _pm(4.0, d=3, weights=torch.tensor([0.3, 0.7], dtype=F64))
    exact = transition_times(m, [0], [0, 1], 0.1)
    mc = transition_times(
        m,
        [0],
        [0, 1],
        0.1,
        method="monte-carlo",
        n=20000,
        generator=torch.Generator().manual_seed(0),
        level=0.9999,
    )
    # level 0.9999: each pointwise band has z = 3.9, so the exact crossing lies inside the bracket.
    assert "monte-carlo" in mc.method
    assert mc.t_end_low <= exact.t_end <= mc.t_end_high
    assert mc.t_end_high - mc.t_end_low < 0.2


def test_bound_weights_and_edge_cases():
    m = _pm(3.0, weights=torch.tensor([0.25, 0.75], dtype=F64))
    tt = transition_times(m, [0], [0], 0.1)
    assert tt.t_end == 0.0 and tt.W == pytest.approx(3.0)
    assert tt.bound == pytest.approx(0.1 * (1 + 3 / math.sqrt(2)))
    full = transition_times(m, [0], [0, 1], 0.1)
    assert full.t_start == math.inf and not full.empty
    assert json.loads(json.dumps(full.to_dict()))["t_start"] is None
    # Badly separated: the fine set is never separated, the window is reported empty, not hidden.
    w = critical_window(_pm(1.0), [0], eps=0.1)
    assert w.empty and w.t_after == -math.inf and math.isfinite(w.t_before) and "not separated" in w.reason
    data = json.loads(json.dumps(w.to_dict()))
    assert data["t_after"] is None and data["status"] == "empty" and "lower" not in data


def test_window_empty_when_coarse_set_merges_first():
    # {0} merges into {0,1} only after {0,1} has stopped being separated from {2}: T_before = inf.
    m = GaussianMixture(torch.tensor([[0.0], [12.0], [20.0]], dtype=F64))
    w = critical_window(m, [0], [0, 1], 0.1)
    assert w.empty and w.t_before == math.inf and "S_before" in w.reason


def _planar_mixture(rng, K, d, rank):
    """K unit Gaussians whose means lie in a random affine subspace of dimension ``rank`` (1 or 2) of R^d,
    so every TV between sub-mixtures is an exact 1-D or 2-D quadrature (THEORY §4); unequal weights."""
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0] if d > 1 else np.ones((1, 1))
    scale = float(np.exp(rng.uniform(np.log(2), np.log(200))))
    coords = rng.standard_normal((K, basis.shape[1])) * scale
    means = torch.tensor(coords @ basis.T + rng.standard_normal(d), dtype=F64)
    return GaussianMixture(means, weights=torch.tensor(rng.dirichlet(np.full(K, 0.7)), dtype=F64))


def _tv_at(m, A, B, t):
    est = tv(m.subset(A), m.subset(B), max(0.0, t))
    assert est.method in ("closed-form", "quadrature")
    return est


def test_ex2_tight_forms_contain_the_exact_window_on_500_random_mixtures():
    # Containment is checked where it is decided: T_after >= closed t_after iff the separation at the closed
    # t_after is >= 1 - eps^2, and T_before <= closed t_before iff TV(p^i, p) <= eps there (both curves are
    # monotone). Exact span quadrature, bracket [low, high] (conservative, covers a fine quadrature).
    rng = np.random.default_rng(1)
    for case in range(500):
        K = int(rng.integers(2, 9))
        d = int(rng.choice([1, 2, 3, 16, 4096] if case % 50 == 0 else [1, 2, 3, 16]))
        m = _planar_mixture(rng, K, d, 1 if d == 1 or K == 2 or case % 2 else 2)
        eps, i = float(np.exp(rng.uniform(np.log(1e-3), np.log(0.9)))), int(rng.integers(0, K))
        if torch.cdist(m.means, m.means).add(torch.eye(K, dtype=F64)).min() < 1e-2:
            continue
        closed = window_isotropic(m.means, i, eps, weights=m.weights)
        rest = [j for j in range(K) if j != i]
        if closed.t_after >= 0:
            # 1e-9: for K = 2 the form is exact, equality up to float rounding of the normal quantile.
            assert _tv_at(m, [i], rest, closed.t_after).high >= 1 - eps**2 - 1e-9, (case, "t_after")
        assert _tv_at(m, [i], list(range(K)), closed.t_before).low <= eps, (case, "t_before")
        free = window_isotropic(m.means, i, eps)  # weight-free: a later (valid) t_before
        assert free.t_before >= closed.t_before - 1e-12 and free.t_after == closed.t_after


def test_ex2_tight_forms_on_general_position_large_d():
    # Means in general position (span K - 1 <= 7) in d up to 4096: Monte Carlo TV (n = 40000, level 0.999)
    # must not contradict containment beyond its interval.
    rng = np.random.default_rng(2)
    for K, d in ((3, 4096), (5, 256), (8, 64)):
        m = GaussianMixture(
            torch.tensor(rng.standard_normal((K, d)) * 4, dtype=F64),
            weights=torch.tensor(rng.dirichlet(np.ones(K)), dtype=F64),
        )
        eps = 0.1
        closed = window_isotropic(m.means, 0, eps, weights=m.weights)
        g = torch.Generator().manual_seed(0)
        sep = tv(m.subset([0]), m.subset(list(range(1, K))), closed.t_after, 40000, g, level=0.999)
        merged = tv(m.subset([0]), m, closed.t_before, 40000, g, level=0.999)
        assert sep.high >= 1 - eps**2 and merged.low <= eps


def test_ex2_tight_t_after_is_exact_for_two_components():
    # K = 2: 1 - TV(p^0_t, p^1_t) = 2 (1 - Phi(a D / 2)) = eps^2 exactly at the closed t_after.
    m = _pm(3.0)
    exact = critical_window(m, [0], eps=0.1, tol=1e-6)
    closed = window_isotropic(m.means, 0, 0.1)
    assert closed.t_after == pytest.approx(exact.t_after, abs=1e-5)  # bisection tol + quadrature error
    paper = window_isotropic(m.means, 0, 0.1, form="paper")
    assert paper.t_after < closed.t_after and paper.t_before > closed.t_before
    assert math.erf(math.sqrt(math.log(20))) < 0.99  # ln(K/eps) in Ex. 2 would not be sufficient


@pytest.mark.parametrize("eps", [1e-4, 0.01, 0.1, 0.3, 0.31, 0.5, 0.707, 0.8, 0.95, 0.999])
def test_ex1_theory_forms_valid_for_every_eps(eps):
    # Exact endpoints from erfinv (THEORY §5: TV(p^+, p^-) = erf(a|mu|/sqrt2), TV(p^+, p) = half of it).
    for norm in (1.5, 7.0, 60.0):
        t_after, t_before = _exact_two_gaussian_window(norm, eps, raw=True)  # raw: t_after may be < 0
        closed = window_two_gaussians([norm, 0.0], eps)
        assert closed.t_after <= t_after + 1e-12 and closed.t_before >= t_before - 1e-12
        expected = math.log(norm) + math.log(1 / eps) - 0.5 * math.log(2 * math.pi)
        assert closed.t_before == pytest.approx(max(0.0, expected))


def test_ex1_paper_form_refused_beyond_its_range():
    # At eps = 0.31 the paper's T_after = ln|mu| - ln ln(1/(2 eps^2)) has separation below 1 - eps^2.
    eps = 0.31
    x = math.log(1 / (2 * eps**2))
    assert math.erf(x / math.sqrt(2)) < 1 - eps**2
    with pytest.raises(ValueError, match="eps must be <= 0.305"):
        window_two_gaussians([3.0, 0.0], eps, form="paper")
    paper = window_two_gaussians([3.0, 0.0], 0.3, form="paper")
    t_after, t_before = _exact_two_gaussian_window(3.0, 0.3)
    assert paper.t_after <= t_after and paper.t_before >= t_before


@pytest.mark.parametrize("var", [1e-3, 1e-2, 1.0, 100.0])
def test_log_concave_t_end_bound_is_valid_for_narrow_and_wide_components(var):
    # The counter-example of issue 10 (var = 1e-3): exact T_end = 0.334 (span quadrature); the old bound
    # ln(D / (2 eps)) = 0.223 was below it; the new 1/2 ln(1 + D^2 / (4 eps^2)) = 0.4705 is above it.
    means = torch.tensor([[0.125, 0.0], [-0.125, 0.0]], dtype=F64)
    m = GaussianMixture(means, covs=var, weights=torch.tensor([0.02, 0.98], dtype=F64))
    exact = transition_times(m, [0], [0, 1], 0.1, tol=1e-6)
    bound = log_concave_times(m, [0], [0, 1], 0.1)
    assert bound.t_end_max == pytest.approx(0.5 * math.log(1 + 0.25**2 / (4 * 0.01)), abs=1e-12)
    assert exact.t_end <= bound.t_end_max
    if var == 1e-3:
        assert exact.t_end == pytest.approx(0.334, abs=1e-3) and math.log(0.25 / 0.2) < exact.t_end


def test_log_concave_bounds_on_random_mixtures():
    rng = np.random.default_rng(3)
    for _ in range(60):
        K = int(rng.integers(2, 6))
        m = _planar_mixture(rng, K, 3, 1)
        var = float(np.exp(rng.uniform(np.log(1e-3), np.log(10))))
        m = GaussianMixture(m.means, covs=var, weights=m.weights)
        eps, i = float(rng.uniform(0.01, 0.5)), int(rng.integers(0, K))
        lc = log_concave_times(m, [i], list(range(K)), eps)
        assert _tv_at(m, [i], list(range(K)), lc.t_end_max).low <= eps
        sep = log_concave_times(m, [i], [i], eps)
        if 0 <= sep.t_start_min < math.inf:
            assert _tv_at(m, [i], [j for j in range(K) if j != i], sep.t_start_min).high >= 1 - eps**2


def test_bad_input():
    m = _pm(3.0)
    for eps in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="eps"):
            critical_window(m, [0], eps=eps)
    with pytest.raises(ValueError, match="subset of before"):
        critical_window(m, [0, 1], [0], 0.1)
    with pytest.raises(ValueError, match="subset of before"):
        critical_window(m, [0], [0], 0.1)
    with pytest.raises(ValueError, match="unknown component 7"):
        critical_window(m, [7], eps=0.1)
    with pytest.raises(ValueError, match="empty"):
        critical_window(m, [], eps=0.1)
    with pytest.raises(ValueError, match="init must be a subset of target"):
        transition_times(m, [0, 1], [1], 0.1)
    with pytest.raises(ValueError, match="mixture"):
        transition_times("m", [0], [0], 0.1)
    with pytest.raises(ValueError, match="eps"):
        window_two_gaussians([1.0, 0.0], 0.8, form="paper")
    for tol in (0, -1e-3, float("nan"), float("inf"), "a"):
        with pytest.raises(ValueError, match="tol"):
            critical_window(m, [0], eps=0.1, tol=tol)
        with pytest.raises(ValueError, match="tol"):
            transition_times(m, [0], [0, 1], 0.1, tol=tol)
    with pytest.raises(ValueError, match="generator"):
        critical_window(m, [0], eps=0.1, generator=3)
    with pytest.raises(ValueError, match="form"):
        window_isotropic(m.means, 0, 0.1, form="x")


def test_monte_carlo_windows_are_deterministic_by_default():
    # A 3-D span forces Monte Carlo; generator=None must give the same window on every call (seed 0).
    m = GaussianMixture(torch.tensor([[0.0, 0, 0, 0], [6, 0, 0, 0], [0, 6, 0, 0], [0, 0, 6, 0]], dtype=F64))
    a = critical_window(m, [0], eps=0.2, n=2000, tol=1e-3)
    b = critical_window(m, [0], eps=0.2, n=2000, tol=1e-3)
    assert "monte-carlo" in a.method and a == b


def test_log_concave_times_wasserstein_paths_agree():
    # D_intra is a W2 distance: the diagonal shortcut and the Bures formula (full path) must agree, and
    # for non-commuting covariances the Bures term matches scipy's matrix square roots.
    from scipy.linalg import sqrtm

    means = torch.tensor([[0.0, 0.0], [3.0, 1.0], [40.0, 0.0]], dtype=F64)
    diag = torch.tensor([[1.0, 4.0], [2.0, 0.5], [1.0, 1.0]], dtype=F64)
    m_diag = GaussianMixture(means, covs=diag)
    m_full = GaussianMixture(means, covs=torch.diag_embed(diag))
    a, b = log_concave_times(m_diag, [0], [0, 1], 0.1), log_concave_times(m_full, [0], [0, 1], 0.1)
    assert a.t_end_max == pytest.approx(b.t_end_max, abs=1e-10)
    assert a.t_start_min == pytest.approx(b.t_start_min, abs=1e-10)
    c0 = np.array([[2.0, 0.8], [0.8, 1.0]])
    c1 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    r0 = sqrtm(c0)
    w2 = math.sqrt(10.0 + np.trace(c0 + c1 - 2 * sqrtm(r0 @ c1 @ r0)).real)
    m = GaussianMixture(means[:2], covs=torch.tensor(np.stack([c0, c1]), dtype=F64))
    assert log_concave_times(m, [0], [0, 1], 0.1).t_end_max == pytest.approx(
        0.5 * math.log1p(w2**2 / 0.04), abs=1e-9
    )


def test_window_status_is_three_valued_from_endpoint_intervals():
    # Point estimates T_after = 1.0 < T_before = 1.1 but intervals [0.9, 1.2] and [1.0, 1.3] overlap:
    # neither empty nor non-empty can be claimed. Disjoint intervals decide it either way.
    from critwin.theory.windows import window_from_times

    w = window_from_times(
        [0], [0, 1], 0.1, (1.1, 1.0, 1.3, "mc"), (math.inf,) * 3 + ("c",), (1.0, 0.9, 1.2, "mc")
    )
    assert w.status == "undetermined" and not w.empty and "overlap" in w.reason
    w = window_from_times(
        [0], [0, 1], 0.1, (2.0, 1.9, 2.1, "mc"), (math.inf,) * 3 + ("c",), (1.0, 0.9, 1.2, "mc")
    )
    assert w.status == "non-empty"
    w = window_from_times(
        [0], [0, 1], 0.1, (0.5, 0.4, 0.6, "mc"), (math.inf,) * 3 + ("c",), (1.0, 0.9, 1.2, "mc")
    )
    assert w.status == "empty" and w.empty


def test_dendrogram_draws_undetermined_windows_distinctly(tmp_path):
    from critwin.theory.tree import Node, Tree
    from critwin.theory.windows import window_from_times

    undetermined = window_from_times(
        [0], [0, 1], 0.1, (1.1, 1.0, 1.3, "mc"), (math.inf,) * 3 + ("c",), (1.0, 0.9, 1.2, "mc")
    )
    leaves = [Node([0], 0.0, window=undetermined), Node([1], 0.0)]
    tree = Tree(Node([0, 1], 2.0, leaves), 0.1)
    ax = tree.plot(path=tmp_path / "tree.png")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("undetermined" in label for label in labels) and (tmp_path / "tree.png").exists()
    assert "UNDETERMINED" in tree.render()
