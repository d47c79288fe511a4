"""Issue 24's rows (kernel, CLI start, the atlas snippet of docs/models.md, full demo), each against a
baseline measured in this process: GEMM peak, ``import torch``, the network's own cost per image, the
one-process demo.

The hierarchy rows are ``bench_hierarchy.py``'s. ``CRITWIN_BENCH_QUICK=1`` skips the two long rows (the
atlas snippet, about 1 CPU-minute, and the full demo, about 4). On a shared machine wall times follow
the load; the CPU seconds are what a quiet core would take, and the demo's quiet two-core wall time is
estimated from its sections' CPU seconds with the runner's own schedule (``schedule.makespan``).
Usage: ``python benchmarks/run.py issue24``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from bench_core import gemm_case, interleaved_times

from critwin import GaussianMixture

QUICK = os.environ.get("CRITWIN_BENCH_QUICK") == "1"
K, D, N, T = 64, 256, 20_000, 0.8


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _subprocess(args) -> tuple[float, float, str]:
    """Wall and CPU seconds of a fresh interpreter running ``args``, and its stderr."""
    cpu, wall = _children_cpu(), time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - wall, _children_cpu() - cpu, done.stderr


def kernel_row(threads: int) -> None:
    """``score_and_posterior`` against the GEMM peak; the refusal of bad input and what a full scan costs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    mix = GaussianMixture(3 * torch.randn(K, D, generator=g), torch.rand(K, generator=g) + 0.5)
    x = mix.noised(T).sample(N, torch.Generator().manual_seed(1))[0]
    # At t = 3 the posteriors are spread (no row one-hot): every block takes the second GEMM.
    spread_x = mix.noised(3.0).sample(N, torch.Generator().manual_seed(1))[0]
    gemm, gflop = gemm_case()
    best = interleaved_times(
        {
            "peak": gemm,
            # Right after the 2048^2 GEMM has evicted the caches, then back to back as in a sampler's loop.
            "cold": lambda: mix.score_and_posterior(x, T),
            "ours": lambda: mix.score_and_posterior(x, T),
            "scanned": lambda: (torch.isfinite(x).all(), mix.score_and_posterior(x, T)),
            "spread": lambda: mix.score_and_posterior(spread_x, 3.0),
        }
    )
    peak = gflop / best["peak"]
    ours, scanned, spread = best["ours"], best["scanned"], best["spread"]
    share = 4 * N * D * K / ours / 1e9 / peak  # two (n x d)(d x K)-sized GEMMs
    bad = x.clone()
    bad[N // 2, 3] = float("nan")
    try:
        mix.score_and_posterior(bad, T)
        refused = "NOT refused"
    except ValueError as exc:
        refused = f"refused ({exc})"
    torch.set_num_threads(previous)
    print(
        f"[kernel] score_and_posterior n={N}, K={K}, d={D}, {threads} thread(s): "
        f"{ours * 1e3:.1f} ms = {100 * share:.0f}% of GEMM peak ({peak:.1f} GFLOP/s; goal >= 50%), "
        f"{100 * share * ours / best['cold']:.0f}% right after the peak's GEMM; "
        f"with a full isfinite scan of x first: {scanned / ours:.2f}x; NaN in x: {refused}; "
        f"at t = 3 (spread posteriors): {spread * 1e3:.1f} ms = {100 * share * ours / spread:.0f}%; "
        "best of 15 interleaved rounds"
    )


def cli_row() -> None:
    """``critwin --help`` (and a usage error) in a fresh interpreter against ``import torch``."""
    runs = {
        "import torch": ["-c", "import torch"],
        "critwin --help": ["-X", "importtime", "-m", "critwin", "--help"],
        "critwin sweep --help": ["-m", "critwin", "sweep", "--help"],
    }
    best = {}
    for label, args in runs.items():
        measured = [_subprocess(args) for _ in range(3)]
        best[label] = (min(m[0] for m in measured), min(m[1] for m in measured), measured[0][2])
    imported = {line.rsplit("|", 1)[-1].strip() for line in best["critwin --help"][2].splitlines()}
    torch_wall, torch_cpu, _ = best["import torch"]
    for label in ("critwin --help", "critwin sweep --help"):
        wall, cpu, _ = best[label]
        print(
            f"[cli] {label}: {wall:.2f} s wall, {cpu:.2f} s CPU = {cpu / torch_cpu:.2f}x the CPU of "
            f"`import torch` ({torch_cpu:.2f} s CPU, {torch_wall:.2f} s wall); best of 3"
        )
    print(f"[cli] torch imported by critwin --help: {'torch' in imported} (goal: False)")


def atlas_row() -> None:
    """The atlas snippet of docs/models.md, against the shapes network's cost per image measured here."""
    import critwin
    from critwin.models import shipped_process
    from critwin.models.shapes import attribute_readers, make_shapes

    torch.set_num_threads(1)
    process = shipped_process("shapes", 50)
    batch = torch.randn(96, 3, 16, 16)
    with torch.no_grad():
        start = time.process_time()
        for _ in range(3):
            process.unet(batch, torch.tensor(500))
        per_image = (time.process_time() - start) / (3 * 96)
    wall, cpu = time.perf_counter(), time.process_time()
    data = make_shapes(20000)
    result = critwin.atlas(shipped_process("shapes", 50), attribute_readers(), data=data, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    nfe = sum(v or 0 for v in result.metadata["nfe"].values())
    print(
        f"[atlas] docs/models.md snippet (make_shapes(20000) + atlas, 1 thread): {wall:.0f} s wall, "
        f"{cpu:.0f} s CPU "
        f"(goal <= 60 s); {nfe} network evaluations x {per_image * 1e3:.2f} ms CPU each = "
        f"{nfe * per_image:.0f} s: the snippet costs {cpu / (nfe * per_image):.2f}x its network evaluations"
    )


def demo_row() -> None:
    """``run_demo`` on two workers; its quiet two-core wall time from the sections' CPU seconds."""
    from critwin.report.demo import demo_sections, run_demo
    from critwin.report.schedule import makespan

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_demo(os.path.join(tmp, "demo"), progress=False, workers=2)
        wall = time.perf_counter() - start
    cpu = summary["section_cpu_seconds"]
    listed = demo_sections()
    two, one = makespan(listed, cpu, 2), makespan(listed, cpu, 1)
    per_section = ", ".join(f"{name} {seconds:.0f}" for name, seconds in cpu.items())
    print(f"[demo] full, 2 workers x 1 thread: {wall:.0f} s wall; CPU per section: {per_section} s")
    print(
        f"[demo] estimated quiet 2-core wall: {two:.0f} s + worker start (goal <= 120 s) = "
        f"{two / one:.2f}x the one-process {one:.0f} s"
    )


def main() -> None:
    for threads in sorted({1, torch.get_num_threads()}):
        kernel_row(threads)
    cli_row()
    if QUICK:
        print("[atlas] [demo] skipped (CRITWIN_BENCH_QUICK=1)")
        return
    atlas_row()
    demo_row()


if __name__ == "__main__":
    main()
