"""Sweeps on Ray (issue 12): units/s of a forward–reverse sweep on the shipped digits model, executor
"local" vs "ray" (a local cluster of ``num_cpus=2``), and their ratio.

On a 2-core machine the point is correctness (the two tables are compared byte for byte); the ratio
reports Ray's overhead (cluster start excluded, shipping the model to the workers included). With
more cores or GPUs the same sweep spreads over them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

N_IMAGES = 36
TIMES = [0.1, 0.3, 0.6, 1.0, 1.5, 2.5]
CHUNK = 12  # 3 units per time: 18 units in all
REPEATS = 3


def _sweep(process, images, feature, executor: str, out: Path) -> float:
    """Seconds for one forward–reverse sweep written to ``out``."""
    from critwin.experiments.forward_reverse import forward_reverse

    start = time.perf_counter()
    forward_reverse(
        process,
        images,
        TIMES,
        feature=feature,
        seed=0,
        chunk_size=CHUNK,
        out=out,
        progress=False,
        executor=executor,
    )
    return time.perf_counter() - start


def main() -> None:
    try:
        import ray
    except ImportError:
        print("skipped: Ray is not installed (pip install 'critwin[ray]')")
        return
    from critwin import classifier_feature, load_digits_model
    from critwin.models.data import load_digits_data

    process = load_digits_model().process(num_inference_steps=20)
    images = load_digits_data().test_images[:N_IMAGES]
    feature = classifier_feature()
    n_units = len(TIMES) * -(-N_IMAGES // CHUNK)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init(num_cpus=2): {time.perf_counter() - start:.1f} s (not counted below)")
    best = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Warm-up: the workers start and import torch once.
            _sweep(process, images, feature, "ray", Path(tmp) / "warm")
            for executor in ("local", "ray"):
                runs = [
                    _sweep(process, images, feature, executor, Path(tmp) / f"{executor}{k}")
                    for k in range(REPEATS)
                ]
                best[executor] = min(runs)
            same = (Path(tmp) / "local0" / "table.csv").read_bytes() == (
                Path(tmp) / "ray0" / "table.csv"
            ).read_bytes()
    finally:
        ray.shutdown()
    print(
        f"forward-reverse on the digits model (20 steps), {N_IMAGES} test images x {len(TIMES)} times, "
        f"{n_units} units of {CHUNK} images; best of {REPEATS}; torch threads {torch.get_num_threads()}"
    )
    for executor, seconds in best.items():
        print(f"    {executor:>5}: {seconds:6.2f} s  {n_units / seconds:7.2f} units/s")
    print(f"    ray / local throughput: {best['local'] / best['ray']:.2f}x; tables identical: {same}")


if __name__ == "__main__":
    main()
