"""Run every benchmark module (``benchmarks/bench_*.py``), each printing ratios against a baseline
measured in the same process. Usage: ``python benchmarks/run.py [name ...]``."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path


def main(selected: list[str]) -> int:
    here = Path(__file__).parent
    sys.path.insert(0, str(here))  # as when a module runs as a script: they share bench_core's timers
    modules = sorted(here.glob("bench_*.py"))
    if selected:
        modules = [m for m in modules if any(s in m.stem for s in selected)]
    for path in modules:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"\n=== {path.stem} ===", flush=True)
        start = time.perf_counter()
        module.main()
        print(f"--- {path.stem} took {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
