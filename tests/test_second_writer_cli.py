"""Two concurrent writers of one output (issue 22): for every command that writes, a second writer is
refused with one clear line naming the holder's pid, before it does any work, and writes nothing.

One holder process holds every output below at once, as a running critwin command would: resumable
run directories through ``claim_directory`` (of the kind the command writes), files and directories
replaced whole through ``claim_output``. Each command is then run in-process on the held output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from critwin.cli import main

MIXTURE = str(Path(__file__).resolve().parents[1] / "examples" / "two_gaussians.yaml")

HOLDER = textwrap.dedent(
    """
    import json, sys, time
    from contextlib import ExitStack
    from critwin.experiments.checkpoint import claim_directory, claim_output
    with ExitStack() as stack:
        for how, kind, path in json.loads(sys.argv[1]):
            stack.enter_context(claim_directory(path, kind) if how == "dir" else claim_output(path))
        print("held", flush=True)
        time.sleep(300)
    """
)

# (name, argv with {out}, how the output is held: ("dir", kind) or ("output", None), the held path
# relative to {out}'s folder when it is not {out} itself)
CASES = [
    ("hierarchy-out", ["hierarchy", MIXTURE, "--no-windows", "--out", "{out}"], ("output", None), None),
    ("hierarchy-plot", ["hierarchy", MIXTURE, "--no-windows", "--plot", "{out}"], ("output", None), None),
    ("sweep", ["sweep", "--model", "digits", "--out", "{out}"], ("dir", "forward_reverse"), None),
    ("validate", ["validate", "--quick", "--out", "{out}"], ("dir", "validate"), None),
    ("estimate", ["estimate", "{result}", "--out", "{out}"], ("output", None), None),
    ("fairness", ["fairness", "--model", "digits", "--out", "{out}"], ("output", None), None),
    ("privacy", ["privacy", "--model", "digits", "--out", "{out}"], ("output", None), None),
    ("text", ["text", "--model", "rhm-mdm", "--out", "{out}"], ("output", None), None),
    ("atlas", ["atlas", "--model", "shapes", "--quick", "--out", "{out}"], ("output", None), None),
    ("demo", ["demo", "--quick", "--out", "{out}"], ("output", None), None),
    ("train-digits", ["train", "digits-tiny", "--out", "{out}"], ("output", None), "digits-tiny.safetensors"),
    ("train-text", ["train", "rhm-mdm-tiny", "--out", "{out}"], ("output", None), "rhm-mdm-tiny.safetensors"),
]


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """Every case's output, held by one live process; yields ``(root, holder pid)``."""
    root = tmp_path_factory.mktemp("held")
    claims = []
    for name, _, (how, kind), inner in CASES:
        out = root / name / "out"
        claims.append([how, kind, str(out / inner if inner else out)])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, json.dumps(claims)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield root, holder.pid
    finally:
        holder.kill()
        holder.wait()


def _tree(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory):
    from critwin import GaussianMixture, forward_reverse

    mixture = GaussianMixture(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]))
    x0 = torch.tensor([[2.0, 0.1], [-2.0, 0.3]])
    out = tmp_path_factory.mktemp("result") / "fr"
    forward_reverse(mixture, x0, [0.0, 1.0], n_per_time=2, seed=0, progress=False, n_steps=3, out=out)
    return out


@pytest.mark.parametrize(("argv", "inner"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_a_second_writer_is_refused_in_one_line_and_writes_nothing(argv, inner, held, result_dir, capsys):
    root, pid = held
    name = next(c[0] for c in CASES if c[1] is argv)
    out = root / name / "out"
    before = _tree(root / name)
    with pytest.raises(SystemExit) as exc:
        main([a.format(out=out, result=result_dir) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("critwin: note:")]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("critwin: error: --"), err
    assert f"is in use by pid {pid}" in lines[0], err
    assert _tree(root / name) == before  # the refused writer touched nothing
