"""Parameterisation invariance of the class window (issue 13): a measurement, not a speed test.

The shipped digits models trained with the epsilon, v-prediction and rectified-flow objectives (same
U-Net, data and run) are each swept forward–reverse through the diffusers adapter with their own sampler
(DDPM, DDPM, flow Euler; the epsilon model also with deterministic DDIM) on their own OU-time grid, from
the same held-out digits, read by the shipped classifier (:func:`critwin.report.invariance.compared_runs`).
Printed: each run's window (t½, T_after, T_before with 95% bootstrap intervals) and NFEs, then per pair
the paired difference of t½ (pooled over digits, and how many digits' own intervals contain 0), what
it isolates, and the verdict. Bootstrap draws with a censored t½ (outside the measured times) are kept
in the paired interval as the bounds the censoring allows (an infinite end is a one-sided bound); their
share is printed beside it (THEORY §9).
"""

from __future__ import annotations

import time

import torch

from critwin._threads import set_threads
from critwin.models.data import load_digits_data
from critwin.report.invariance import compare_parameterisations, compared_runs

PER_CLASS = 30  # held-out digits per class (the test split has 35-37)
N_TIMES = 16
INFERENCE_STEPS = 50
N_BOOT = 300
SEED = 0


def _interval(ci) -> str:
    lo, hi = ci
    return "[  n/a ,  n/a ]" if lo is None or hi is None else f"[{lo:6.3f}, {hi:6.3f}]"


def _value(v) -> str:
    return "  n/a " if v is None else f"{v:6.3f}"


def bench_parameterisation() -> None:
    data = load_digits_data()
    picks = torch.cat([torch.nonzero(data.test_labels == k).flatten()[:PER_CLASS] for k in range(10)])
    x0 = data.test_images[picks]
    runs, pairs = compared_runs()
    start = time.perf_counter()
    section = compare_parameterisations(
        x0, runs, pairs, n_times=N_TIMES, inference_steps=INFERENCE_STEPS, n_boot=N_BOOT, seed=SEED
    )
    seconds = time.perf_counter() - start
    summary = section.summary()
    print(
        f"class window per parameterisation: {x0.shape[0]} held-out digits x {N_TIMES} OU times, "
        f"{INFERENCE_STEPS} sampler steps, {N_BOOT} bootstrap draws ({seconds:.0f} s in all)"
    )
    print(
        f"    {'run':<12} {'param.':<13} {'sampler':<31} {'acc.':>5} {'t_half':>6} {'95% CI':>16} "
        f"{'T_after':>7} {'95% CI':>16} {'T_before':>8} {'95% CI':>16} {'NFEs':>7}"
    )
    for name, m in summary["runs"].items():
        print(
            f"    {name:<12} {m['parameterisation']:<13} {m['scheduler']:<31} "
            f"{m['card_conditional_accuracy']:5.3f} {_value(m['t_half'])} {_interval(m['t_half_ci'])} "
            f"{_value(m['t_after'])} {_interval(m['t_after_ci'])}  {_value(m['t_before'])} "
            f"{_interval(m['t_before_ci'])} {m['network_evaluations']:7d}"
        )
    for c in summary["comparisons"]:
        pooled = c["t_half_difference"]["all"]
        print(
            f"    t_half({c['run']}) - t_half({c['against']}) = {_value(pooled['difference'])} "
            f"(bounds {_interval(pooled['difference_bounds'])}), 95% paired CI {_interval(pooled['ci'])} "
            f"(censored draws kept as bounds: {pooled['censored_share']:.2f}): "
            f"{c['verdict']}; {c['digits_agreeing']}/{c['n_digits']} digits' intervals contain 0 "
            f"[{c['isolates']}]"
        )
        per_digit = "  ".join(
            f"{k}:{_value(d['difference']).strip()}" for k, d in c["t_half_difference"].items() if k != "all"
        )
        print(f"      per digit: {per_digit}")


def main() -> None:
    previous = set_threads(1)
    try:
        bench_parameterisation()
    finally:
        set_threads(previous)


if __name__ == "__main__":
    main()
