"""The independent references of critwin validate (critwin.theory.references): the exact rank-1 overlap
against scipy.integrate.quad, the numpy Monte Carlo against the two-Gaussian closed form, and their
independence from the code they check."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, special

from critwin.theory import references


@pytest.mark.parametrize("seed", range(6))
def test_line_overlap_equals_adaptive_quadrature(seed):
    rng = np.random.default_rng(seed)
    k_a, k_b = rng.integers(1, 4, 2)
    lam = rng.uniform(0.05, 3.0)
    c_a, c_b = lam * rng.uniform(0, 30, k_a), lam * rng.uniform(0, 30, k_b)
    w_a, w_b = rng.dirichlet(np.ones(k_a)), rng.dirichlet(np.ones(k_b))

    def integrand(x):
        # unit normal densities written out (scipy.stats.norm.pdf per point is 10x slower)
        p = (w_a * np.exp(-0.5 * (x - c_a) ** 2)).sum()
        q = (w_b * np.exp(-0.5 * (x - c_b) ** 2)).sum()
        return min(p, q) / math.sqrt(2 * math.pi)

    points = np.sort(np.concatenate([c_a, c_b]))
    exact, err = integrate.quad(
        integrand, points[0] - 40, points[-1] + 40, points=points, limit=500, epsabs=1e-14, epsrel=1e-10
    )
    got = references.line_overlap(c_a, w_a, c_b, w_b)
    # quad's own error estimate and tolerances (the piecewise integral itself is exact to ~1e-12)
    assert got == pytest.approx(exact, rel=1e-9, abs=err + 1e-13)


def test_line_overlap_keeps_digits_of_tiny_overlaps():
    # two unit Gaussians at distance delta: 1 - TV = erfc(delta / (2 sqrt 2)), here ~1e-30
    delta = 23.0
    got = references.line_overlap([0.0], [1.0], [delta], [1.0])
    assert got == pytest.approx(math.erfc(delta / (2 * math.sqrt(2))), rel=1e-10)


def test_monte_carlo_reference_covers_the_closed_form():
    # rank 2 forces Monte Carlo: p = N(0, I), q = N(m, I) in the plane; TV = erf(|m| / (2 sqrt 2))
    coords = np.array([[0.0, 0.0], [1.2, 0.9]])
    ref = references.reference_tv(coords, np.array([0.5, 0.5]), [0], [1], 0.0, n=100_000, seed=3)
    exact = special.erf(1.5 / (2 * math.sqrt(2)))
    assert ref.method == "monte-carlo (numpy)"
    # 4 standard errors each side: a miss has probability 6e-5
    assert ref.low <= exact <= ref.high and ref.high - ref.low < 0.02


def test_references_share_no_code_with_what_they_check():
    path = Path(references.__file__)
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not any(name and name.startswith("critwin") for name in imported), imported
