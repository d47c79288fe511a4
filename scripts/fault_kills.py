"""Fault figures of issue 22: SIGKILL at random moments during a writer, then a resumed (or repeated)
run compared byte for byte with an uninterrupted one; a full disk and a read-only directory.

    python scripts/fault_kills.py --kills 20 [--surface NAME ...] [--tmpfs DIR]

Surfaces: ``hierarchy`` (``critwin hierarchy --out FILE``), ``atlas`` (``critwin atlas --quick --out
DIR``), ``train`` (``critwin train digits-tiny --out DIR``): outputs replaced whole, so after a kill
the output is the previous one, the complete new one, or absent; ``forward_reverse`` and ``clone``
(``out=DIR`` of the API): resumable directories, so every file present after a kill is complete and
the next run resumes to the uninterrupted result.

``--tmpfs DIR`` (root only: mounts a 64 KiB tmpfs and a read-only one under DIR) adds the full-disk and
read-only checks. Prints one line per surface: kills, how many left the previous result intact, how
many left a temporary file after the next run, and whether the final result equals the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from critwin._io import result_contents

ROOT = Path(__file__).resolve().parents[1]
MIXTURE = str(ROOT / "examples" / "hierarchical.yaml")
FORWARD_REVERSE = """
import sys, torch
from critwin.experiments.forward_reverse import forward_reverse
from critwin.mixtures import GaussianMixture
mixture = GaussianMixture(torch.tensor([[-4.0], [4.0]]), torch.ones(2), torch.tensor([0.5, 0.5]))
x0, _ = mixture.sample(8, generator=torch.Generator().manual_seed(1))
forward_reverse(mixture, x0, [0.2, 0.5, 1.0, 2.0], n_per_time=4, seed=3, sampler="sde", n_steps=40,
                out=sys.argv[1], progress=False)
"""


def _hierarchy(out: Path) -> list[str]:
    return [sys.executable, "-m", "critwin", "hierarchy", MIXTURE, "--out", str(out)]


CLONE = """
import sys, torch
from critwin.experiments.cloning import clone
from critwin.mixtures import GaussianMixture
mixture = GaussianMixture(torch.tensor([[-4.0], [4.0]]), torch.ones(2), torch.tensor([0.5, 0.5]))
clone(mixture, 64, [0.2, 0.5, 1.0, 2.0], 8, sampler="sde", n_steps=100, seed=3, chunk_size=8,
      out=sys.argv[1], progress=False)
"""


def _forward_reverse(out: Path) -> list[str]:
    return [sys.executable, "-c", FORWARD_REVERSE, str(out)]


def _clone(out: Path) -> list[str]:
    return [sys.executable, "-c", CLONE, str(out)]


def _atlas(out: Path) -> list[str]:
    return [sys.executable, "-m", "critwin", "atlas", "--quick", "--no-progress", "--out", str(out)]


def _train(out: Path) -> list[str]:
    return [sys.executable, "-m", "critwin", "train", "digits-tiny", "--no-progress", "--out", str(out)]


# name: (command, output name, whether the output is a resumable directory)
SURFACES = {
    "hierarchy": (_hierarchy, "tree.json", False),
    "atlas": (_atlas, "atlas", False),
    "train": (_train, "weights", False),
    "forward_reverse": (_forward_reverse, "run", True),
    "clone": (_clone, "run", True),
}


def _temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if p.name.endswith(".tmp") or ".pid" in p.name]


def _run(cmd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def kills(surface: str, n: int, work: Path, env: dict, rng: random.Random) -> dict:
    make, name, resumable = SURFACES[surface]
    reference = work / f"reference-{name}"
    started = time.perf_counter()
    done = _run(make(reference), env)
    if done.returncode != 0:
        raise SystemExit(f"reference run failed: {done.stderr[-2000:]}")
    seconds = time.perf_counter() - started
    expected = result_contents(reference)
    out = work / name
    intact = leftovers = 0
    for _ in range(n):
        before = result_contents(out) if out.exists() else None
        proc = subprocess.Popen(make(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, seconds))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = result_contents(out) if out.exists() else None
        if not resumable:
            # An output replaced whole: the old one, the complete new one, or none yet (a directory
            # may exist empty, created before the first file was written).
            intact += after in (before, expected) or (before in (None, {}) and after in (None, {}))
        else:
            # A resumable directory: every file present is complete (the resume below reads them).
            intact += after is None or all(after.get(k) == v for k, v in after.items() if k in expected)
    resumed = _run(make(out), env)
    leftovers = len(_temporaries(work))
    equal = resumed.returncode == 0 and result_contents(out) == expected
    return {
        "surface": surface,
        "kills": n,
        "intact": intact,
        "temporaries_left": leftovers,
        "equal_to_uninterrupted": equal,
        "reference_seconds": round(seconds, 1),
    }


def disks(base: Path, env: dict) -> list[dict]:
    """A full 64 KiB tmpfs (holding a previous good result) and a read-only tmpfs."""
    full, readonly = base / "full", base / "readonly"
    results = []
    for path in (full, readonly):
        path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(readonly)], check=True)
    try:
        previous = full / "tree.json"
        previous.write_text('{"critwin": {"output": "hierarchy"}}\n')
        filler = full / "filler"
        try:
            with open(filler, "wb") as handle:  # fill the disk (closing it fails too)
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        except OSError:
            pass
        for label, cmd, target in (
            ("hierarchy full disk", _hierarchy(previous), previous),
            ("hierarchy read-only", _hierarchy(readonly / "tree.json"), readonly / "tree.json"),
            ("forward_reverse full disk", _forward_reverse(full / "run"), full / "run"),
        ):
            before = result_contents(target) if target.exists() else None
            done = _run(cmd, env)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            after = result_contents(target) if target.exists() else None
            results.append(
                {
                    "case": label,
                    "exit": done.returncode,
                    "stderr_lines": len(lines),
                    "last_line": lines[-1][:160] if lines else "",
                    "previous_intact": before == after
                    or (before is None and not any(after.values() if after else [])),
                    "temporaries_left": len(_temporaries(target.parent)),
                }
            )
    finally:
        subprocess.run(["umount", str(full)], check=False)
        subprocess.run(["umount", str(readonly)], check=False)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--surface", choices=sorted(SURFACES), action="append")
    parser.add_argument("--tmpfs", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    rng = random.Random(args.seed)
    for surface in args.surface or list(SURFACES):
        work = Path(tempfile.mkdtemp(prefix=f"critwin-kills-{surface}-"))
        try:
            print(json.dumps(kills(surface, args.kills, work, env, rng)), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.tmpfs is not None:
        for line in disks(args.tmpfs, env):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
