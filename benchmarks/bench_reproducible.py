"""The cost of ``CRITWIN_REPRODUCIBLE=1`` (MKL's strict CNR, oneDNN off) on the shipped networks.

MKL reads ``MKL_CBWR`` at its first call, so the setting cannot be switched inside one process: two
worker processes are started, one default and one reproducible, each on one thread, each loading the
shipped digits and shapes networks once. The parent then asks them in turn (default, reproducible,
default, ...) for the same forward–reverse sweep and keeps each one's best of three CPU times, so
both see the same load. The ratio is reproducible / default, measured in this run.

Usage: ``python benchmarks/bench_reproducible.py`` (or ``make bench``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPEATS = 3
# A small sweep of each network: the shape of `critwin sweep --model digits` and of the atlas's
# forward-reverse sweep on shapes, cut down to under a second each (batches of 32 and 16, as
# those commands' units).
WORKLOADS = {
    "digits": dict(steps=10, n=8, times=[0.3, 1.0, 2.0], n_per_time=4),
    "shapes": dict(steps=8, n=8, times=[0.3, 1.0, 2.0], n_per_time=2),
}


def _processes() -> dict:
    from critwin.models.digits import load_digits_model
    from critwin.models.shapes import load_shapes_model

    return {
        "digits": (load_digits_model("digits"), WORKLOADS["digits"]),
        "shapes": (load_shapes_model("shapes"), WORKLOADS["shapes"]),
    }


def brightness(x):
    """A cheap label (bright or dark image): the sweep's time goes to the network."""
    return (x.flatten(1).mean(1) > 0).long()


def worker() -> None:
    """Read workload names on stdin; answer each with its CPU seconds on stdout (one JSON line)."""
    from critwin._threads import apply_reproducible_env, set_threads

    apply_reproducible_env()
    set_threads(1)
    import torch

    from critwin.experiments.forward_reverse import forward_reverse

    models = _processes()

    def run(name: str) -> float:
        model, w = models[name]
        process = model.process(num_inference_steps=w["steps"])
        x0 = process.prior(w["n"], generator=torch.Generator().manual_seed(0))
        start = time.process_time()
        forward_reverse(
            process, x0, w["times"], n_per_time=w["n_per_time"], feature=brightness, seed=0, progress=False
        )
        return time.process_time() - start

    for name in models:  # warm-up: first calls allocate and pick kernels
        run(name)
    print(json.dumps({"ready": torch.backends.mkldnn.enabled}), flush=True)
    for line in sys.stdin:
        print(json.dumps({"seconds": run(line.strip())}), flush=True)


def _start(reproducible: bool) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["CRITWIN_REPRODUCIBLE"] = "1" if reproducible else "0"
    env.pop("MKL_CBWR", None)
    return subprocess.Popen(
        [sys.executable, __file__, "--worker"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _ask(proc: subprocess.Popen, name: str) -> float:
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())["seconds"]


def main() -> None:
    workers = {False: _start(False), True: _start(True)}
    try:
        onednn = {key: json.loads(proc.stdout.readline())["ready"] for key, proc in workers.items()}
        assert onednn == {False: True, True: False}, f"oneDNN on (default, reproducible): {onednn}"
        for name, w in WORKLOADS.items():
            best = {False: float("inf"), True: float("inf")}
            for _ in range(REPEATS):
                for key in (False, True):
                    best[key] = min(best[key], _ask(workers[key], name))
            sweep = (
                f"{name}: {w['n']} sources x {w['n_per_time']} at {len(w['times'])} times, {w['steps']} steps"
            )
            print(
                f"{sweep}: default {best[False]:.2f} s CPU, CRITWIN_REPRODUCIBLE=1 {best[True]:.2f} s "
                f"(ratio {best[True] / best[False]:.2f}; best of {REPEATS}, alternating, 1 thread)"
            )
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait(timeout=60)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        main()
