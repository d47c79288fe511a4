"""Measurement-engine benchmarks (issue 4).

1. Exact-posterior forward–reverse curve vs a 1000-step reverse SDE on a Gaussian mixture: denoiser
   (score) evaluations and the error of each curve against the Gauss–Hermite quadrature truth.
2. Adaptive window search vs a uniform grid at the same resolution on the exact model: NFEs and the
   endpoints each finds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import brentq

from critwin.clock import time_grid
from critwin.experiments.estimation import estimate_window
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.process import MixtureProcess
from critwin.experiments.search import search_window

# The quadrature truths live with the tests that check the engine against them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from two_gaussian_oracle import fr_truth, two_gaussians  # noqa: E402


def bench_exact_vs_sde(n: int = 600, m: float = 4.0, d: int = 4, steps: int = 1000) -> None:
    mixture = two_gaussians(m, d)
    x0 = mixture.subset([0]).sample(n, generator=torch.Generator().manual_seed(0))[0]
    times = [0.5, 1.0, 1.5, 2.0, 3.0]
    truth = np.array([fr_truth(t, m, n_nodes=120) for t in times])
    se = np.sqrt(truth * (1 - truth) / n)

    start = time.perf_counter()
    exact = forward_reverse(mixture, x0, times, sampler="exact", seed=1, progress=False)
    exact_s = time.perf_counter() - start
    exact_err = np.abs(exact.agreement.numpy() - truth)

    # A 1000-step reverse SDE (Euler–Maruyama, EDM spacing) from each T down to 0.
    start = time.perf_counter()
    sde_curve, sde_nfe = [], 0
    for i, t in enumerate(times):
        process = MixtureProcess(mixture, "sde", times=time_grid(t, steps))
        result = forward_reverse(process, x0, [t], seed=2 + i, progress=False)
        sde_curve.append(result.agreement.item())
        sde_nfe += result.nfe
    sde_s = time.perf_counter() - start
    sde_err = np.abs(np.array(sde_curve) - truth)

    print(
        f"[1] forward-reverse label curve, 2 Gaussians |mu|={m:g} in d={d}, {n} sources x {len(times)} times"
    )
    print(f"    {'T':>5} {'truth':>7} {'exact':>7} {'sde1000':>8} {'MC SE':>7}")
    for i, t in enumerate(times):
        c_exact = exact.agreement[i].item()
        print(f"    {t:5.2f} {truth[i]:7.4f} {c_exact:7.4f} {sde_curve[i]:8.4f} {se[i]:7.4f}")
    print(
        f"    exact posterior: {exact.nfe:>10,d} score evaluations, max |error| {exact_err.max():.4f}, "
        f"{exact_s:.2f} s"
    )
    print(
        f"    reverse SDE:     {sde_nfe:>10,d} score evaluations, max |error| {sde_err.max():.4f}, "
        f"{sde_s:.2f} s"
    )
    print(
        f"    ratio: SDE / exact score evaluations = {sde_nfe / exact.nfe:.0f}x (target >= 500x); "
        f"wall-time ratio {sde_s / exact_s:.0f}x; max error / max MC SE: exact "
        f"{exact_err.max() / se.max():.2f}, SDE {sde_err.max() / se.max():.2f}"
    )


def bench_search_vs_grid(m: float = 8.0, d: int = 2, resolution: float = 0.05, n: int = 512) -> None:
    mixture = two_gaussians(m, d)
    x0 = mixture.subset([0]).sample(n, generator=torch.Generator().manual_seed(1))[0]
    start = time.perf_counter()
    found = search_window(
        mixture,
        x0,
        delta=0.1,
        resolution=resolution,
        t_range=(0.0, 6.0),
        base_rate=0.5,
        max_per_probe=n,
        seed=0,
        progress=False,
    )
    search_s = time.perf_counter() - start
    grid = np.arange(resolution, 6.0 + 1e-9, resolution)
    start = time.perf_counter()
    dense = forward_reverse(mixture, x0, grid, seed=1, progress=False)
    estimate = estimate_window(dense, base_rate=0.5, n_boot=0, per_class=False)
    grid_s = time.perf_counter() - start
    exact = [
        brentq(lambda t, lv=lv: 2 * fr_truth(t, m, n_nodes=120) - 1 - lv, 0.01, 10.0) for lv in (0.9, 0.1)
    ]
    print(f"[2] window search to resolution {resolution:g} in OU time on [0, 6], {n} sources, delta = 0.1")
    print(f"    quadrature truth: t_after = {exact[0]:.3f}, t_before = {exact[1]:.3f}")
    print(
        f"    adaptive search:  t_after = {found.t_after:.3f}, t_before = {found.t_before:.3f}, "
        f"{found.nfe:,d} NFEs in {len(found.probes)} probes, {search_s:.2f} s"
    )
    print(
        f"    uniform grid:     t_after = {estimate.t_after:.3f}, t_before = {estimate.t_before:.3f}, "
        f"{dense.nfe:,d} NFEs on {grid.size} points x {n}, {grid_s:.2f} s"
    )
    print(f"    ratio: search / grid NFEs = {found.nfe / dense.nfe:.3f} (target <= 0.25)")


def main() -> None:
    bench_exact_vs_sde()
    bench_search_vs_grid()


if __name__ == "__main__":
    main()
