"""Transition times and critical windows: closed-form oracles, brute-force grid search, the closed-form
windows of THEORY §5 containing the exact window on random mixtures, edge cases and bad input."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import erfinv

from critwin.mixtures import GaussianMixture
from critwin.windows import (
    critical_window,
    log_concave_times,
    theorem_bound,
    transition_times,
    window_isotropic,
    window_two_gaussians,
)

F64 = torch.float64


def _pm(norm, d=2, weights=None):
    mu = torch.zeros(d, dtype=F64)
    mu[0] = norm
    return GaussianMixture(torch.stack([mu, -mu]), weights=weights)


def _exact_two_gaussian_window(norm, eps):
    """For N(+-mu, I)/2: TV(p_t^+, p_t^-) = erf(a|mu|/sqrt2) and TV(p_t^+, p_t) = erf(a|mu|/sqrt2)/2."""
    t_after = math.log(norm / (math.sqrt(2) * erfinv(1 - eps**2)))
    t_before = max(0.0, math.log(norm / (math.sqrt(2) * erfinv(2 * eps))))
    return (t_after if t_after >= 0 else -math.inf), t_before


@pytest.mark.parametrize("norm,eps", [(3.0, 0.1), (10.0, 0.05), (50.0, 0.2)])
def test_critical_window_two_gaussians_closed_form(norm, eps):
    w = critical_window(_pm(norm), [0], eps=eps, tol=1e-6)
    lower, upper = _exact_two_gaussian_window(norm, eps)
    assert w.lower == pytest.approx(lower, abs=1e-5)  # bisection tolerance 1e-6, quadrature error ~1e-6
    assert w.upper == pytest.approx(upper, abs=1e-4)
    assert not w.empty and (w.t_after, w.t_before) == (w.lower, w.upper)


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
    assert (tt.t_lower, tt.t_upper) == (tt.t_end, tt.t_start)


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
    assert w.empty and w.lower == -math.inf and math.isfinite(w.upper) and "not separated" in w.reason
    assert json.loads(json.dumps(w.to_dict()))["lower"] is None


def test_window_empty_when_coarse_set_merges_first():
    # {0} merges into {0,1} only after {0,1} has stopped being separated from {2}: T_before = inf.
    m = GaussianMixture(torch.tensor([[0.0], [12.0], [20.0]], dtype=F64))
    w = critical_window(m, [0], [0, 1], 0.1)
    assert w.empty and w.upper == math.inf and "S_before" in w.reason


def test_exact_window_inside_closed_forms_on_random_mixtures():
    rng = np.random.default_rng(0)
    checked = 0
    # Blink Ex. 1 (valid for eps <= 0.3, see window_two_gaussians).
    for _ in range(140):
        norm = float(np.exp(rng.uniform(np.log(1.5), np.log(60))))
        eps = float(rng.uniform(0.01, 0.3))
        d = int(rng.integers(1, 5))
        direction = rng.standard_normal(d)
        mu = torch.tensor(norm * direction / np.linalg.norm(direction), dtype=F64)
        exact = critical_window(GaussianMixture(torch.stack([mu, -mu])), [0], eps=eps, tol=1e-3)
        closed = window_two_gaussians(mu, eps)
        assert exact.upper <= max(0.0, closed.upper) + 1e-3  # exact times are >= 0
        if closed.lower >= 0:
            assert exact.lower >= closed.lower - 1e-3
        checked += 1
    # Blink Ex. 2 and the log-concave bounds: K components on a random line (exact 1-D span quadrature).
    for _ in range(70):
        K = int(rng.integers(2, 5))
        d = int(rng.integers(1, 4))
        eps = float(rng.uniform(0.01, 0.3))
        direction = rng.standard_normal(d)
        pos = np.sort(rng.uniform(0, 1, K)) * float(np.exp(rng.uniform(np.log(3), np.log(80))))
        means = torch.tensor(pos[:, None] * direction / np.linalg.norm(direction), dtype=F64)
        if torch.cdist(means, means).add(torch.eye(K, dtype=F64)).min() < 1e-3:
            continue
        weights = torch.tensor(rng.dirichlet(np.full(K, 2.0)), dtype=F64)
        m = GaussianMixture(means, weights=weights / weights.sum())
        i = int(rng.integers(0, K))
        exact = critical_window(m, [i], eps=eps, tol=1e-3)
        closed = window_isotropic(means, i, eps)
        assert exact.upper <= max(0.0, closed.upper) + 1e-3  # exact times are >= 0
        if closed.lower >= 0:
            assert exact.lower >= closed.lower - 1e-3
        lc_merge = log_concave_times(m, [i], list(range(K)), eps)
        lc_sep = log_concave_times(m, [i], [i], eps)
        assert exact.upper <= lc_merge.t_end_upper + 1e-3
        if lc_sep.t_start_lower >= 0:
            assert exact.lower >= lc_sep.t_start_lower - 1e-3
        checked += 1
    assert checked >= 200


def test_theory_spec_ex2_lower_endpoint_is_not_sufficient():
    # THEORY §5 writes ln(K/eps) in Ex. 2's T_after; at that time TV = erf(sqrt(ln(K/eps))) < 1 - eps^2
    # for K = 2, eps = 0.1, so the exact T_after is earlier (documented deviation: ln(K/eps^2)).
    m = _pm(3.0)
    exact = critical_window(m, [0], eps=0.1)
    assert math.erf(math.sqrt(math.log(20))) < 0.99
    assert exact.lower < window_isotropic(m.means, 0, 0.1, strict_spec=True).lower
    assert exact.lower >= window_isotropic(m.means, 0, 0.1).lower


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
        window_two_gaussians([1.0, 0.0], 0.8)


def test_log_concave_times_wasserstein_paths_agree():
    # D_intra is a W2 distance: the diagonal shortcut and the Bures formula (full path) must agree, and
    # for non-commuting covariances the Bures term matches scipy's matrix square roots.
    from scipy.linalg import sqrtm

    means = torch.tensor([[0.0, 0.0], [3.0, 1.0], [40.0, 0.0]], dtype=F64)
    diag = torch.tensor([[1.0, 4.0], [2.0, 0.5], [1.0, 1.0]], dtype=F64)
    m_diag = GaussianMixture(means, covs=diag)
    m_full = GaussianMixture(means, covs=torch.diag_embed(diag))
    a, b = log_concave_times(m_diag, [0], [0, 1], 0.1), log_concave_times(m_full, [0], [0, 1], 0.1)
    assert a.t_end_upper == pytest.approx(b.t_end_upper, abs=1e-10)
    assert a.t_start_lower == pytest.approx(b.t_start_lower, abs=1e-10)
    c0 = np.array([[2.0, 0.8], [0.8, 1.0]])
    c1 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    r0 = sqrtm(c0)
    w2 = math.sqrt(10.0 + np.trace(c0 + c1 - 2 * sqrtm(r0 @ c1 @ r0)).real)
    m = GaussianMixture(means[:2], covs=torch.tensor(np.stack([c0, c1]), dtype=F64))
    assert log_concave_times(m, [0], [0, 1], 0.1).t_end_upper == pytest.approx(math.log(w2 / 0.2), abs=1e-9)
