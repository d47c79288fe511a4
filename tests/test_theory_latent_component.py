"""feature="component": the latent component (exact sampler); "bayes": the Bayes label (issue 10, #4)."""

import math

import pytest
import torch
from scipy import integrate, stats

from critwin.experiments.cloning import clone
from critwin.experiments.forward_reverse import forward_reverse
from critwin.mixtures import GaussianMixture

F64 = torch.float64
MIX = GaussianMixture(torch.tensor([[2.0], [-2.0]], dtype=F64))  # N(+-2, 1), equal weights


def _kept_by_quadrature(t: float) -> float:
    """E_{y ~ p_t^+}[pi_t(+ | y)] with p_t^{+-} = N(+-2a, 1): pi_t(+ | y) = 1 / (1 + e^{-4 a y})."""
    a = math.exp(-t)
    value, _ = integrate.quad(lambda y: stats.norm.pdf(y, 2 * a) / (1 + math.exp(-4 * a * y)), -15, 15)
    return value


def test_component_agreement_is_probability_component_kept():
    x0, _ = MIX.sample(4000, generator=torch.Generator().manual_seed(1))
    res = forward_reverse(MIX, x0, [0.05], n_per_time=5, feature="component", seed=0, progress=False)
    expected = _kept_by_quadrature(0.05)
    assert expected == pytest.approx(0.957, abs=1e-3)
    # 20000 outcomes (4000 sources x 5): SE <= sqrt(0.957 * 0.043 / 4000) = 0.0032 even if replicates of a
    # source were perfectly correlated; 4 SE = 0.013 separates 0.957 from the Bayes-label value 0.978.
    assert float(res.agreement[0]) == pytest.approx(expected, abs=0.013)
    bayes = forward_reverse(MIX, x0, [0.05], n_per_time=5, feature="bayes", seed=0, progress=False)
    assert float(bayes.agreement[0]) > expected + 0.013


def test_component_refused_without_exact_sampler():
    x0, _ = MIX.sample(8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="bayes"):
        forward_reverse(MIX, x0, [0.5], feature="component", sampler="ddim", seed=0, progress=False)
    with pytest.raises(ValueError, match="bayes"):
        clone(MIX, 4, [0.5], 2, feature="component", sampler="sde", seed=0, progress=False)


def test_clone_component_is_the_latent_component():
    # A fork at t: the continuation keeps the trunk's final component with probability
    # E[sum_k pi_t(k | X_t)^2] (both draw it from the same posterior pi_t(. | X_t)), X_t ~ p_t.
    t = 0.4
    res = clone(MIX, 3000, [t], 4, feature="component", seed=0, progress=False, n_steps=40)
    a = math.exp(-t)

    def integrand(y):
        p = 1 / (1 + math.exp(-4 * a * y))
        density = 0.5 * (stats.norm.pdf(y, 2 * a) + stats.norm.pdf(y, -2 * a))
        return density * (p * p + (1 - p) ** 2)

    expected, _ = integrate.quad(integrand, -15, 15)
    # 12000 outcomes; SE <= sqrt(0.25 / 3000) = 0.009 (clones of a trunk correlated): 4 SE = 0.037.
    assert float(res.agreement[0]) == pytest.approx(expected, abs=0.037)
