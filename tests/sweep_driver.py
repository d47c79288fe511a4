"""A forward–reverse sweep run as a separate driver process, killed mid-sweep and resumed (the
checkpoint tests of the local and Ray executors share it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# Usage: python driver.py OUT [EXECUTOR]. 6 times x 3 chunks of 40 samples: 18 units.
SCRIPT = textwrap.dedent(
    """
    import math, os, sys, time
    import torch
    from critwin.experiments.forward_reverse import forward_reverse
    from critwin.mixtures import GaussianMixture

    mu = torch.full((1, 2), 4.0 / math.sqrt(2), dtype=torch.float64)
    mixture = GaussianMixture(torch.cat([mu, -mu]))
    x0 = mixture.subset([0]).sample(30, generator=torch.Generator().manual_seed(1))[0]
    delay = float(os.environ.get("CRITWIN_TEST_DELAY", "0"))
    executor = sys.argv[2] if len(sys.argv) > 2 else "local"

    def feature(x):
        time.sleep(delay)  # makes the sweep slow enough to be killed mid-way
        return mixture.bayes_label(x)

    if executor == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    forward_reverse(mixture, x0, [0.2, 0.6, 1.0, 1.5, 2.0, 3.0], n_per_time=4, feature=feature,
                    sampler="sde", n_steps=20, seed=3, out=sys.argv[1], chunk_size=40, progress=False,
                    feature_label="bayes", executor=executor)
    """
)
N_UNITS = 18


def kill_mid_sweep(script: Path, out: Path, *args: str, min_units: int = 3, timeout: float = 120) -> int:
    """Start ``script OUT *args`` with a slow feature, SIGKILL it (and every process it started) once
    ``min_units`` units are written, and return how many units it left."""
    env = {**os.environ, "CRITWIN_TEST_DELAY": "0.4"}
    # A session of its own: the kill takes the driver and anything it started (a Ray cluster) at once.
    proc = subprocess.Popen([sys.executable, str(script), str(out), *args], env=env, start_new_session=True)
    units = out / "units"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if units.exists() and len(list(units.glob("*.npz"))) >= min_units:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return len(list(units.glob("*.npz")))
