"""Hierarchies at scale: ``hierarchy(method="fast")`` (span of the means, closed-form pairs, sure bounds,
pooled Monte Carlo for the windows) against ``method="exact"`` (pairwise bisection, one TV per check),
on random isotropic means ``N(0, I_d)`` with eps = 0.1, n = 2000, tol = 1e-3, and on ``structured``
means: ``G^3 = K`` components, G groups (scale 1000) x G subgroups (40) x G leaves (1), a deep tree
(random means in high dimension are nearly equidistant, so their tree is flat).

Every measurement runs in a fresh interpreter (one torch thread), so its peak RSS is its own; the time
is the best of ``--repeat`` runs (default 2; 1 with ``--quick``). Prints time and peak RSS per size, the
ratio exact/fast where exact is feasible, the fitted exponent of time against K (tree only, and with
every node's window), time against d at K = 100 with windows, and the structured trees with every
window (time, peak RSS, depth, nodes, window statuses). Then, unless quick, the two scale goals,
each run as ``critwin hierarchy FILE --method fast --json`` from a mixture file (the command's defaults:
n = 10000, tol = 1e-4, seed 0; one torch thread): a dense cloud of K = 1,500 means ``N(0, 40^2 I_2)``
(most windows need Monte Carlo; goal 60 s) and K = 10,000 means ``N(0, I_100)`` (goal 120 s, 8 GB;
also with ``--no-windows``, the tree and its verification alone), with wall and CPU seconds, peak RSS
and the load average; a run past ``CRITWIN_BENCH_GOAL_TIMEOUT``
seconds (default 900) is stopped and reported unfinished. ``--quick`` (or ``CRITWIN_BENCH_QUICK=1``)
keeps to small sizes; ``--goals`` runs only the two goal rows. Usage: ``python benchmarks/run.py
hierarchy`` or ``python benchmarks/bench_hierarchy.py [--quick] [--repeat N] [--goals]``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_N, _TOL, _EPS = 2000, 1e-3, 0.1

# One measurement, run as ``python -c`` in a fresh process: prints {"seconds", "peak_gib", "nodes",
# "depth", "statuses"}.
_CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from critwin.mixtures import GaussianMixture
from critwin.theory.tree import hierarchy
K, d, method, windows, n, tol, eps, kind = json.loads(sys.argv[1])
g = torch.Generator().manual_seed(0)
if kind == "structured":  # G groups x G subgroups x G leaves at scales 1000, 40, 1
    G = round(K ** (1 / 3))
    means = torch.zeros(1, d, dtype=torch.float64)
    for scale in (1000.0, 40.0, 1.0):
        means = means.repeat_interleave(G, 0)
        means = means + scale * torch.randn(means.shape[0], d, generator=g, dtype=torch.float64)
else:
    means = torch.randn(K, d, generator=g, dtype=torch.float64)
m = GaussianMixture(means)
start = time.perf_counter()
tree = hierarchy(m, eps, method=method, windows=windows, n=n, tol=tol)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
statuses = {}
for node in tree.nodes[1:]:
    statuses[node.status] = statuses.get(node.status, 0) + 1
print(json.dumps({"seconds": seconds, "peak_gib": peak, "nodes": len(tree.nodes), "depth": tree.depth,
                  "statuses": statuses}))
"""


def _run(K: int, d: int, method: str, windows: bool, repeat: int, kind: str = "random"):
    """(best time in seconds, largest peak RSS in GiB, the last run's output) over ``repeat`` fresh
    processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    runs = []
    for _ in range(repeat):
        args = json.dumps([K, d, method, windows, _N, _TOL, _EPS, kind])
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, args], env=env, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return min(r["seconds"] for r in runs), max(r["peak_gib"] for r in runs), runs[-1]


GOAL_TIMEOUT = float(os.environ.get("CRITWIN_BENCH_GOAL_TIMEOUT", "900"))
"""Seconds (wall) after which a goal row's run is stopped and reported unfinished, so ``make bench`` ends."""


def _run_cli(K: int, d: int, scale: float, timeout: float = GOAL_TIMEOUT, windows: bool = True) -> dict:
    """``critwin hierarchy FILE --method fast --json`` (with ``--no-windows`` unless ``windows``) on ``K``
    means ``N(0, scale^2 I_d)`` (seed 0) in a fresh process: wall and CPU seconds, peak RSS (GiB), nodes,
    depth, window statuses, load average; ``finished`` False (and no tree) where it ran past ``timeout``
    seconds and was stopped."""
    import torch

    from critwin.io_mixture import save_mixture
    from critwin.mixtures import GaussianMixture

    g = torch.Generator().manual_seed(0)
    means = scale * torch.randn(K, d, generator=g, dtype=torch.float64)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mixture.json"
        save_mixture(GaussianMixture(means), path)
        command = [sys.executable, "-m", "critwin", "hierarchy", str(path), "--method", "fast", "--json"]
        command += [] if windows else ["--no-windows"]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        # stdout to a file and the child reaped by wait4 alone (communicate() would reap it first and
        # take its resource usage with it)
        with open(Path(tmp) / "stdout.json", "w") as sink:
            child = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.DEVNULL)
            finished = True
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > timeout:
                    child.kill()
                    _, status, usage = os.wait4(child.pid, 0)
                    finished = False
                    break
                time.sleep(0.2)
            child.returncode = status  # reaped here: keep Popen from waiting for it again
        stdout = (Path(tmp) / "stdout.json").read_text() if finished else None
        wall = time.perf_counter() - start
    measured = {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_gib": usage.ru_maxrss / 2**20}
    measured["load"] = (load + os.getloadavg()[0]) / 2
    if stdout is None:
        return {**measured, "finished": False}
    if status != 0:
        raise RuntimeError(f"critwin hierarchy failed on K={K} d={d} (wait status {status})")
    tree = json.loads(stdout)
    statuses: dict[str, int] = {}
    stack, nodes = [tree["root"]], 0
    while stack:
        node = stack.pop()
        nodes += 1
        stack.extend(node.get("children", []))
        if node is not tree["root"]:
            statuses[node["status"]] = statuses.get(node["status"], 0) + 1
    # ru_maxrss is in KiB on Linux
    return {**measured, "finished": True, "nodes": nodes, "depth": tree["depth"], "statuses": statuses}


def _fit(ks, times) -> float:
    return float(np.polyfit(np.log(ks), np.log(times), 1)[0])


def main(quick: bool | None = None, repeat: int | None = None) -> None:
    if quick is None:
        quick = "--quick" in sys.argv or os.environ.get("CRITWIN_BENCH_QUICK") == "1"
    if repeat is None:
        repeat = (
            int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else (1 if quick else 2)
        )
    print(f"threads=1 (one per process) n={_N} tol={_TOL} eps={_EPS} quick={quick} best of {repeat}")
    print(f"{'K':>6} {'d':>7} {'windows':>7} {'fast s':>8} {'peak GiB':>8} {'exact s':>8} {'ratio':>6}")
    tree_sizes = [10, 30, 100] if quick else [10, 30, 100, 300, 1000]
    window_sizes = [10, 30] if quick else [10, 30, 100, 300, 1000]
    dims = [10, 1000] if quick else [10, 100, 1000, 10_000, 100_000]
    curves = {"tree": ([], []), "windows": ([], [])}
    for windows, sizes in ((False, tree_sizes), (True, window_sizes)):
        for K in sizes:
            fast, peak, _ = _run(K, 1000, "fast", windows, repeat)
            feasible = K <= (10 if windows or quick else 30)
            exact = _run(K, 1000, "exact", windows, 1)[0] if feasible else math.nan
            ratio = exact / fast if feasible else math.nan
            print(
                f"{K:>6} {1000:>7} {windows!s:>7} {fast:>8.2f} {peak:>8.2f} {exact:>8.2f} {ratio:>6.1f}",
                flush=True,
            )
            key = "windows" if windows else "tree"
            curves[key][0].append(K)
            curves[key][1].append(fast)
    for key, (ks, times) in curves.items():
        print(f"time ~ K^{_fit(ks, times):.2f} ({key}, K = {ks[0]}..{ks[-1]})")
    K = 30 if quick else 100
    for d in dims:
        fast, peak, _ = _run(K, d, "fast", True, repeat)
        print(f"K={K} d={d:>7}: tree with windows {fast:.2f} s, peak RSS {peak:.2f} GiB", flush=True)
    for K in [8, 27] if quick else [8, 27, 125, 1000]:
        fast, peak, out = _run(K, 1000, "fast", True, repeat, "structured")
        print(
            f"structured K={K:>5} d=1000: tree with windows {fast:.2f} s, peak RSS {peak:.2f} GiB, "
            f"depth {out['depth']}, {out['nodes']} nodes, windows {out['statuses']}",
            flush=True,
        )
    if not quick:
        goals()


def goals() -> None:
    """The two goal rows (module notes), and the second's tree and verification alone (``--no-windows``:
    the stages before the windows): ``python benchmarks/bench_hierarchy.py --goals`` runs only these."""
    rows = (
        ("dense cloud", 1500, 2, 40.0, 60, True),
        ("random", 10_000, 100, 1.0, 120, True),
        ("random, tree and verification only", 10_000, 100, 1.0, 120, False),
    )
    for name, K, d, scale, goal, windows in rows:
        out = _run_cli(K, d, scale, windows=windows)
        flag = "" if windows else " --no-windows"
        head = f"{name} K={K} d={d} N(0, {scale:g}^2 I), critwin hierarchy --method fast{flag}: "
        ratio = f"{'more than ' if not out['finished'] else ''}{out['cpu'] / goal:.2f}x"
        cost = (
            f"{out['wall']:.1f} s wall, {out['cpu']:.1f} s CPU (goal {goal} s: {ratio}), "
            f"peak RSS {out['peak_gib']:.2f} GiB, load average {out['load']:.1f}"
        )
        if not out["finished"]:
            print(f"{head}NOT FINISHED, stopped after {cost} (CRITWIN_BENCH_GOAL_TIMEOUT)", flush=True)
            continue
        tree = f"depth {out['depth']}, {out['nodes']} nodes, windows {out['statuses']}"
        print(f"{head}{cost}, {tree}", flush=True)


if __name__ == "__main__":
    goals() if "--goals" in sys.argv else main()
