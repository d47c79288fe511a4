"""Issue 24: the pooled Monte Carlo of ``hierarchy(method="fast")`` (``critwin.theory.span_pool``, the
windows' crossings and the separation checks) against its source at a baseline git revision, both in
this process on the same mixture, alternating, one torch thread.

The mixture is ``bench_hierarchy``'s structured one: ``G^3 = K`` components in d = 1000, G groups (scale
1000) x G subgroups (40) x G leaves (1), eps = 0.1, n = 2000, tol = 1e-3. Prints the best CPU and wall
seconds of ``--repeat`` runs of each, the ratio, and how the two trees differ: the same nodes in the same
order (linkage), the largest difference of any node time, window endpoint or bracket end, and whether
every window status is the same. The draws are the same (the pool draws per group, before stacking), so
the trees differ only by float rounding. The load average is printed: on a shared machine compare the
CPU seconds. Usage: ``python benchmarks/bench_span_pool.py [--quick] [--K 1000] [--repeat 2] [--baseline
REV]`` (default K = 343, 125 with ``--quick`` or ``CRITWIN_BENCH_QUICK=1``; baseline ``7e34b92``, the
revision before issue 24's changes to the pool).
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from critwin.mixtures import GaussianMixture
from critwin.theory import span_crossings
from critwin.theory.tree import hierarchy

BASELINE = "7e34b92"
_POOL = "src/critwin/theory/span_pool.py"


def _arg(name: str, default):
    return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def structured(K: int, d: int = 1000) -> GaussianMixture:
    """``bench_hierarchy``'s structured mixture: G groups x G subgroups x G leaves, ``G = K^(1/3)``."""
    g = torch.Generator().manual_seed(0)
    G = round(K ** (1 / 3))
    means = torch.zeros(1, d, dtype=torch.float64)
    for scale in (1000.0, 40.0, 1.0):
        means = means.repeat_interleave(G, 0)
        means = means + scale * torch.randn(means.shape[0], d, generator=g, dtype=torch.float64)
    return GaussianMixture(means)


def baseline_pool(revision: str):
    """The ``Pool`` class of ``span_pool.py`` at ``revision`` (from ``git show``)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{revision}:{_POOL}"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "span_pool_baseline.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("span_pool_baseline", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.Pool


def _summary(tree) -> list[tuple]:
    """Per node (walk order): its components, then every time and bracket end, then the window status."""
    out = []
    for node in tree.root.walk():
        w = node.window
        times = [node.time, node.separation_tv, node.separation_tv_low, node.separation_tv_high]
        status = None
        if w is not None:
            times += [w.t_after, w.t_after_low, w.t_after_high, w.t_before, w.t_before_low, w.t_before_high]
            status = w.status
        out.append((tuple(node.components), times, status))
    return out


def _run(pool, mixture) -> tuple[float, float, list[tuple]]:
    previous = span_crossings.Pool
    span_crossings.Pool = pool
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        tree = hierarchy(mixture, 0.1, method="fast", windows=True, n=2000, tol=1e-3)
        return time.perf_counter() - wall, time.process_time() - cpu, _summary(tree)
    finally:
        span_crossings.Pool = previous


def _difference(a: list[tuple], b: list[tuple]) -> tuple[bool, float, bool]:
    """(same linkage, largest absolute difference of a time or bracket end, same window statuses)."""
    if [x[0] for x in a] != [y[0] for y in b]:
        return False, math.nan, False
    worst = 0.0
    for (_, ta, _), (_, tb, _) in zip(a, b, strict=True):
        for p, q in zip(ta, tb, strict=True):
            if p is not None and q is not None and p != q:
                worst = max(worst, abs(p - q))
    return True, worst, [x[2] for x in a] == [y[2] for y in b]


def main() -> None:
    quick = "--quick" in sys.argv or os.environ.get("CRITWIN_BENCH_QUICK") == "1"
    K, repeat = _arg("--K", 125 if quick else 343), _arg("--repeat", 1 if quick else 2)
    revision = _arg("--baseline", BASELINE)
    torch.set_num_threads(1)
    try:
        old = baseline_pool(revision)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"[span_pool] skipped: no baseline source at {revision} ({exc})")
        return
    mixture = structured(K)
    runs: dict[str, list] = {"baseline": [], "current": []}
    last = {}
    for r in range(repeat):
        order = [("baseline", old), ("current", span_crossings.Pool)]
        for name, pool in order if r % 2 == 0 else order[::-1]:
            wall, cpu, summary = _run(pool, mixture)
            runs[name].append((wall, cpu))
            last[name] = summary
    linkage, worst, statuses = _difference(last["baseline"], last["current"])
    best = {name: (min(w for w, _ in v), min(c for _, c in v)) for name, v in runs.items()}
    load = os.getloadavg()[0]
    print(f"[span_pool] structured K={K} d=1000, 1 thread, best of {repeat}, load average {load:.1f}")
    for name, (wall, cpu) in best.items():
        print(
            f"[span_pool] {name:>8} ({revision if name == 'baseline' else 'working tree'}): "
            f"{cpu:.2f} s CPU, {wall:.2f} s wall"
        )
    print(
        f"[span_pool] CPU ratio baseline/current {best['baseline'][1] / best['current'][1]:.2f}x; "
        f"same linkage {linkage}, same window statuses {statuses}, "
        f"largest time/bracket difference {worst:.1e}"
    )


if __name__ == "__main__":
    main()
