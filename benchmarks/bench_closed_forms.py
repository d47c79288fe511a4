"""Slack of the closed-form windows (THEORY §5, ``critwin.theory.closed_forms``) against exact windows.

Random isotropic mixtures (K in 2..8, unequal weights, means on a random line or plane of R^16 so that
every TV is an exact span quadrature) and eps in [0.01, 0.3]. For each case and form, the slack is
``T_after(exact) - t_after(closed)`` and ``t_before(closed) - T_before(exact)`` in OU units (>= 0 when
the closed form is sufficient, up to the bisection tolerance 1e-3). Prints median / 90% / max; also the
log-concave ``t_end_max`` against the exact ``T_end``. Usage: ``python benchmarks/run.py closed_forms``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from critwin.mixtures import GaussianMixture
from critwin.theory.closed_forms import log_concave_times, window_isotropic
from critwin.theory.windows import critical_window, transition_times

N_CASES = 40  # ~2 min on one core (2-D span quadratures dominate)


def _case(rng):
    K = int(rng.integers(2, 9))
    rank = 1 if K == 2 or rng.random() < 0.5 else 2
    basis = np.linalg.qr(rng.standard_normal((16, rank)))[0]
    coords = rng.standard_normal((K, rank)) * float(np.exp(rng.uniform(np.log(3), np.log(100))))
    means = torch.tensor(coords @ basis.T, dtype=torch.float64)
    weights = torch.tensor(rng.dirichlet(np.full(K, 0.7)), dtype=torch.float64)
    return GaussianMixture(means, weights=weights), float(rng.uniform(0.01, 0.3)), int(rng.integers(0, K))


def _row(name, values) -> str:
    v = np.asarray(values)
    stats = (np.median(v), np.percentile(v, 90), v.max(), v.min())
    return f"{name:<34} " + " ".join(f"{x:>8.3f}" for x in stats) + f" {len(v):>5d}"


def main() -> None:
    rng = np.random.default_rng(0)
    slack = {
        k: [] for k in ("tight T_after", "tight T_before", "paper T_after", "paper T_before", "LC T_end")
    }
    for _ in range(N_CASES):
        m, eps, i = _case(rng)
        exact = critical_window(m, [i], eps=eps, tol=1e-3)
        for form in ("tight", "paper"):
            kw = {"weights": m.weights} if form == "tight" else {}
            closed = window_isotropic(m.means, i, eps, form=form, **kw)
            if math.isfinite(exact.t_after) and closed.t_after >= 0:
                slack[f"{form} T_after"].append(exact.t_after - closed.t_after)
            slack[f"{form} T_before"].append(closed.t_before - exact.t_before)
        t_end = transition_times(m, [i], list(range(m.n_components)), eps, tol=1e-3).t_end
        slack["LC T_end"].append(
            log_concave_times(m, [i], list(range(m.n_components)), eps).t_end_max - t_end
        )
    print(
        f"{'slack (OU units), closed vs exact':<34} {'median':>8} {'90%':>8} {'max':>8} {'min':>8} {'n':>5}"
    )
    for name, values in slack.items():
        print(_row(name, values))


if __name__ == "__main__":
    main()
