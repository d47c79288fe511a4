"""Hierarchies at scale: ``hierarchy(method="fast")`` (span of the means, closed-form pairs, sure bounds)
against ``method="exact"`` (the previous implementation: pairwise bisection, one TV per check), on random
isotropic means ``N(0, I_d)`` with eps = 0.1.

Prints time and peak RSS per size, the ratio exact/fast where exact is feasible, and the fitted exponent
of time against K (tree only, and with windows). ``--quick`` (or ``CRITWIN_BENCH_QUICK=1``) keeps to small
sizes. Usage: ``python benchmarks/run.py hierarchy`` or ``python benchmarks/bench_hierarchy.py [--quick]``.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time

import numpy as np
import torch

from critwin.mixtures import GaussianMixture
from critwin.tree import hierarchy


def _mixture(K: int, d: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(K, d, generator=g, dtype=torch.float64))


def _run(K, d, method, windows, n, tol):
    m = _mixture(K, d)
    start = time.perf_counter()
    tree = hierarchy(m, 0.1, method=method, windows=windows, n=n, tol=tol)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
    return elapsed, peak, tree


def _fit(ks, times) -> float:
    return float(np.polyfit(np.log(ks), np.log(times), 1)[0])


def main(quick: bool | None = None) -> None:
    if quick is None:
        quick = "--quick" in sys.argv or os.environ.get("CRITWIN_BENCH_QUICK") == "1"
    n, tol = 2000, 1e-3
    print(f"threads={torch.get_num_threads()} n={n} tol={tol} eps=0.1 quick={quick}")
    print(f"{'K':>6} {'d':>7} {'windows':>7} {'fast s':>8} {'peak GiB':>8} {'exact s':>8} {'ratio':>6}")
    tree_sizes = [10, 30, 100] if quick else [10, 30, 100, 300, 1000]
    window_sizes = [5, 10, 20] if quick else [5, 10, 20, 40]
    dims = [10, 1000, 100_000] if quick else [10, 100, 1000, 10_000, 100_000]
    curves = {"tree": ([], []), "windows": ([], [])}
    for windows, sizes in ((False, tree_sizes), (True, window_sizes)):
        for K in sizes:
            fast, peak, _ = _run(K, 1000, "fast", windows, n, tol)
            exact = _run(K, 1000, "exact", windows, n, tol)[0] if K <= (10 if windows else 20) else math.nan
            ratio = exact / fast if math.isfinite(exact) else math.nan
            print(f"{K:>6} {1000:>7} {windows!s:>7} {fast:>8.2f} {peak:>8.2f} {exact:>8.2f} {ratio:>6.1f}")
            key = "windows" if windows else "tree"
            curves[key][0].append(K)
            curves[key][1].append(fast)
    for key, (ks, times) in curves.items():
        print(f"time ~ K^{_fit(ks, times):.2f} ({key}, K = {ks[0]}..{ks[-1]})")
    for d in dims:
        fast, peak, _ = _run(20, d, "fast", False, n, tol)
        print(f"K=20 d={d:>7}: tree {fast:.2f} s, peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
