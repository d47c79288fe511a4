"""Parameterisation invariance of the class window (issue 13): a measurement, not a speed test.

The shipped digits models trained with the epsilon, v-prediction and rectified-flow objectives (same
U-Net, data and run) are each swept forward–reverse through the diffusers adapter with their own sampler
(DDPM, DDPM, flow Euler) on their own OU-time grid, from the same held-out digits, read by the shipped
classifier. Printed: each model's window (t½, T_after, T_before with 95% bootstrap intervals), the
paired difference of t½ to the epsilon model (pooled over digits, and how many digits' own intervals
contain 0), the verdict, and the network evaluations (NFEs) and seconds of each sweep.
"""

from __future__ import annotations

import time

import torch

from critwin._threads import set_threads
from critwin.models.data import load_digits_data
from critwin.report.invariance import compare_parameterisations, compared_models

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
    models = compared_models()
    start = time.perf_counter()
    section = compare_parameterisations(
        x0, models=models, n_times=N_TIMES, inference_steps=INFERENCE_STEPS, n_boot=N_BOOT, seed=SEED
    )
    seconds = time.perf_counter() - start
    summary = section.summary()
    print(
        f"class window per parameterisation: {x0.shape[0]} held-out digits x {N_TIMES} OU times, "
        f"{INFERENCE_STEPS} sampler steps, {N_BOOT} bootstrap draws ({seconds:.0f} s in all)"
    )
    print(
        f"    {'model':<12} {'param.':<13} {'acc.':>5} {'t_half':>6} {'95% CI':>16} {'T_after':>7} "
        f"{'95% CI':>16} {'T_before':>8} {'95% CI':>16} {'NFEs':>7}"
    )
    for name, m in summary["models"].items():
        print(
            f"    {name:<12} {m['parameterisation']:<13} {m['card_conditional_accuracy']:5.3f} "
            f"{_value(m['t_half'])} {_interval(m['t_half_ci'])} {_value(m['t_after'])} "
            f"{_interval(m['t_after_ci'])}  {_value(m['t_before'])} {_interval(m['t_before_ci'])} "
            f"{m['network_evaluations']:7d}"
        )
    for name, diff in summary["t_half_difference"].items():
        pooled = diff["all"]
        print(
            f"    t_half({name}) - t_half({summary['reference']}) = {_value(pooled['difference'])} "
            f"95% paired CI {_interval(pooled['ci'])} (censored draws {pooled['censored_share']:.2f}): "
            f"{summary['verdict'][name]}; {summary['digits_agreeing'][name]}/10 digits' intervals contain 0"
        )
        per_digit = "  ".join(f"{k}:{_value(d['difference']).strip()}" for k, d in diff.items() if k != "all")
        print(f"      per digit: {per_digit}")
    if len(models) == 1:
        print("    only the epsilon model is shipped: nothing to compare")


def main() -> None:
    previous = set_threads(1)
    try:
        bench_parameterisation()
    finally:
        set_threads(previous)


if __name__ == "__main__":
    main()
