"""Coverage of the window brackets of ``hierarchy(method="fast")`` against exact times (tests/line_oracle.py).

A family of random collinear mixtures (K = 3..8 components on a line, a few clusters, weights from a
Dirichlet(0.7) so that some are ~1e-3, sigma^2 in {1, 0.25, 0.04}, eps in {0.05, 0.1, 0.2}): for every
non-root node, the brackets of its window's ``T_after`` (the separation time of the node) and
``T_before`` (its merge time into the parent while the parent is separated, +inf otherwise), and the
interval of its separation TV at its own time, against the same quantities computed exactly on the
line with numpy/scipy. ``python tests/tree_coverage.py [N]`` prints the table for N mixtures (400).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

import line_oracle
from critwin.mixtures import GaussianMixture
from critwin.theory.tree import hierarchy

VARIANCES = (1.0, 0.25, 0.04)
EPSILONS = (0.05, 0.1, 0.2)


def random_line_mixture(rng: np.random.Generator):
    """(positions (K,), weights (K,), sigma^2, eps): 1-3 clusters in [0, 200], spreads 0.3-10."""
    K = int(rng.integers(3, 9))
    clusters = rng.uniform(0.0, 200.0, int(rng.integers(1, 4)))
    spread = math.exp(rng.uniform(math.log(0.3), math.log(10.0)))
    x = clusters[rng.integers(0, clusters.size, K)] + spread * rng.standard_normal(K)
    w = rng.dirichlet(np.full(K, 0.7))
    w = np.maximum(w, 1e-4)
    return x, w / w.sum(), float(rng.choice(VARIANCES)), float(rng.choice(EPSILONS))


@dataclass
class Check:
    """One bracket against its exact value."""

    kind: str  # "t_after", "t_before" or "separation_tv"
    exact: float
    low: float
    high: float
    method: str
    mixture: int
    node: list = field(default_factory=list)

    @property
    def covered(self) -> bool:
        return self.low <= self.exact <= self.high

    @property
    def miss_widths(self) -> float:
        """Distance from the bracket to the exact value in bracket widths (0 when covered)."""
        if self.covered:
            return 0.0
        gap = self.low - self.exact if self.exact < self.low else self.exact - self.high
        width = self.high - self.low
        return math.inf if width <= 0 else gap / width


def _exact_checks(x, w, var, eps, tree, index: int) -> list[Check]:
    K = len(x)
    out = []
    sep = {}
    for node in tree.nodes:
        sep[id(node)] = line_oracle.separation_time(x, w, node.components, eps, var)
    for node in tree.nodes[1:]:
        win, parent = node.window, node.parent
        rest_parent = [j for j in parent.components if j not in node.components]
        merged = line_oracle.merge_time(x, w, node.components, rest_parent, eps, var)
        t_before = merged if merged <= sep[id(parent)] else math.inf
        out.append(Check("t_after", sep[id(node)], win.t_after_low, win.t_after_high, win.method, index))
        out.append(Check("t_before", t_before, win.t_before_low, win.t_before_high, win.method, index))
        out[-1].node = out[-2].node = node.components
        rest = [j for j in range(K) if j not in node.components]
        if rest and node.separation_tv_low is not None:
            lam = line_oracle.scale(node.time, var)
            exact = line_oracle.tv(x[node.components], w[node.components], x[rest], w[rest], lam)
            out.append(
                Check("separation_tv", exact, node.separation_tv_low, node.separation_tv_high, "", index)
            )
            out[-1].node = node.components
    return out


def study(n_mixtures: int = 400, seed: int = 0, n: int = 10000, tol: float = 1e-4) -> list[Check]:
    """Every check of ``n_mixtures`` random line mixtures (hierarchy seeded per mixture)."""
    rng = np.random.default_rng(seed)
    checks = []
    for k in range(n_mixtures):
        x, w, var, eps = random_line_mixture(rng)
        m = GaussianMixture(torch.tensor(x)[:, None], var, torch.tensor(w))
        tree = hierarchy(m, eps, method="fast", n=n, tol=tol, generator=torch.Generator().manual_seed(k))
        checks += _exact_checks(x, w, var, eps, tree, k)
    return checks


def summary(checks: list[Check]) -> dict:
    """Coverage per kind (and for Monte Carlo brackets), misses and their distance in bracket widths."""
    out = {}
    for kind in ("t_after", "t_before", "separation_tv"):
        for mc in (False, True):
            rows = [c for c in checks if c.kind == kind and (not mc or "monte-carlo" in c.method)]
            rows = [c for c in rows if not (c.exact == c.low == c.high)]  # exact infinities
            if not rows:
                continue
            misses = [c for c in rows if not c.covered]
            out[kind + (" (monte-carlo)" if mc else "")] = {
                "n": len(rows),
                "coverage": 1.0 - len(misses) / len(rows),
                "below": sum(1 for c in misses if c.exact < c.low),
                "above": sum(1 for c in misses if c.exact > c.high),
                "max_miss_widths": max((c.miss_widths for c in misses), default=0.0),
            }
    return out


if __name__ == "__main__":
    import json

    result = study(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
    print(json.dumps(summary(result), indent=1))
    for c in sorted(result, key=lambda c: -c.miss_widths)[:15]:
        if not c.covered:
            print(
                c.kind,
                c.mixture,
                c.node,
                c.method,
                f"exact {c.exact:.6f} [{c.low:.6f}, {c.high:.6f}]",
                f"{c.miss_widths:.2f} widths",
            )
