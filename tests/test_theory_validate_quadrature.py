"""`critwin validate`: the forward–reverse TV against its own quadrature (issue 10, sharper validation)."""

import math
from statistics import NormalDist

import torch

from critwin.mixtures import GaussianMixture
from critwin.theory.validate import forward_reverse_tv, forward_reverse_tv_quadrature

F64 = torch.float64
PHI = NormalDist().cdf


def _pair(distance=3.0, w0=0.3, d=3):
    means = torch.zeros(2, d, dtype=F64)
    means[1, 0] = distance
    return GaussianMixture(means, weights=torch.tensor([w0, 1 - w0], dtype=F64))


def test_quadrature_matches_closed_forms_at_both_ends():
    m = _pair()
    # T = 0: q_0 = p^{init}; TV(N(0,1), w0 N(0,1) + w1 N(D,1)) = w1 (2 Phi(D/2) - 1) in the span.
    value, err = forward_reverse_tv_quadrature(m, [0], [0, 1], 0.0)
    # The kink of |.| limits the trapezoid rule to ~1e-5 here; the reported error (coarse vs fine grid)
    # must cover the true error.
    assert abs(value - 0.7 * (2 * PHI(1.5) - 1)) <= err < 1e-3
    # T large: q_T -> p, and p is p^{target} when the target is every component.
    value, _ = forward_reverse_tv_quadrature(m, [0], [0, 1], 30.0)
    assert value < 1e-6
    # Rank > 1 has no quadrature here.
    assert forward_reverse_tv_quadrature(GaussianMixture(torch.eye(3, dtype=F64)), [0], [0, 1], 1.0) is None


def test_monte_carlo_curve_agrees_with_quadrature_and_a_shifted_curve_is_caught():
    m = _pair()
    g = torch.Generator().manual_seed(3)
    for t in (0.3, 1.0, 2.0):
        value, err = forward_reverse_tv_quadrature(m, [0], [0, 1], t)
        fr = forward_reverse_tv(m, [0], [0, 1], t, n_outer=4000, n_inner=48, generator=g)
        # 4 standard errors of the Monte Carlo (the quadrature's own error is ~1e-9).
        assert abs(fr["tv"] - value) <= 4 * fr["tv_se"] + err, (t, fr, value)
        # The curve read at a wrong time (T off by half an OU unit) is far outside that band: the check
        # detects errors of that size.
        wrong, _ = forward_reverse_tv_quadrature(m, [0], [0, 1], t + 0.5)
        assert abs(fr["tv"] - wrong) > 4 * fr["tv_se"] + err, (t, fr, wrong)
    assert math.isfinite(value)
