"""Output directories of the experiments: exclusive writers, foreign directories, settings bound to
artefacts, temporary files of dead writers, corrupt artefacts (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from critwin._io import read_json, remove_stale_temp_files
from critwin.experiments.checkpoint import CLAIM_FILE, SweepStore, bound_tensors, claim_directory
from critwin.experiments.cloning import CloneResult
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from two_gaussian_oracle import two_gaussians

ARGS = dict(times=[0.3, 1.0], n_per_time=2, seed=7, sampler="sde", progress=False, n_steps=5)

HOLDER = textwrap.dedent(
    """
    import sys, time
    from critwin.experiments.checkpoint import claim_directory
    with claim_directory(sys.argv[1], "forward_reverse"):
        print("held", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def small():
    mixture = two_gaussians(4.0)
    x0, _ = mixture.sample(6, generator=torch.Generator().manual_seed(1))
    return mixture, x0


def _snapshot(root):
    """Every file's bytes; ``metadata.json`` without its provenance (UTC time of the last save)."""
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != CLAIM_FILE}
    for path in [p for p in files if p.name == "metadata.json"]:
        meta = json.loads(files[path])
        meta.pop("provenance", None)
        files[path] = json.dumps(meta).encode()
    return files


def _dead_pid() -> int:
    """The pid of a process that has exited (reaped): no live process has it."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(proc.stdout)


# ---------------------------------------------------------------------------------- concurrent writers
def test_second_writer_is_refused_with_the_holders_pid_and_a_dead_holder_frees_it(small, tmp_path):
    mixture, x0 = small
    out = tmp_path / "run"
    forward_reverse(mixture, x0, out=out, **ARGS)
    before = _snapshot(out)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"in use by pid {holder.pid}"):
            forward_reverse(mixture, x0, out=out, **ARGS)
        with pytest.raises(ValueError, match=f"in use by pid {holder.pid}"):
            ForwardReverseResult.load(out).save(out)
        assert _snapshot(out) == before  # the refused writer touched nothing
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the directory is usable again, results unchanged.
    again = forward_reverse(mixture, x0, out=out, **ARGS)
    assert _snapshot(out) == before
    assert torch.equal(again.labels, ForwardReverseResult.load(out).labels)


def test_claim_is_reentrant_within_a_process_and_released_after(tmp_path):
    with claim_directory(tmp_path / "d", "clone"):
        with claim_directory(tmp_path / "d", "clone"):
            pass
        with pytest.raises(ValueError, match="held for a 'clone' result, not 'forward_reverse'"):
            with claim_directory(tmp_path / "d", "forward_reverse"):
                pass
    assert read_json(tmp_path / "d" / CLAIM_FILE, "claim") == {"kind": "clone", "pid": os.getpid()}


# ------------------------------------------------------------------------------------ temporary files
def test_temp_files_of_dead_writers_only_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    files = {
        "dead": tmp_path / f".config.json.pid{dead}.abc123.tmp",
        "legacy": tmp_path / ".table.csv.k2j3h4.tmp",  # older critwin: no pid tag
        "alive": tmp_path / f".metadata.json.pid{alive}.zz99.tmp",
        "user": tmp_path / "notes.tmp",  # not a critwin temporary file (no leading dot)
    }
    for path in files.values():
        path.write_text("x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([files["dead"], files["legacy"]])
    assert files["alive"].exists() and files["user"].exists()


def test_resume_cleans_leftover_temp_files_of_a_killed_writer(small, tmp_path):
    mixture, x0 = small
    out = tmp_path / "run"
    forward_reverse(mixture, x0, out=out, **ARGS)
    dead = _dead_pid()
    leftovers = [
        out / f".config.json.pid{dead}.q1w2e3.tmp",
        out / "units" / f".t00000_c00000.npz.pid{dead}.a.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"partial")
    forward_reverse(mixture, x0, out=out, **ARGS)
    assert not any(path.exists() for path in leftovers)


# ----------------------------------------------------------------------------------- foreign folders
def test_foreign_directory_is_refused_and_left_untouched(small, tmp_path):
    mixture, x0 = small
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not a critwin output directory"):
        forward_reverse(mixture, x0, out=tmp_path, **ARGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CLAIM_FILE, "thesis.tex"]
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_result_of_another_kind_is_refused(small, tmp_path):
    mixture, x0 = small
    result = forward_reverse(mixture, x0, out=tmp_path / "fr", **ARGS)
    clone_dir = tmp_path / "clone"
    clone_dir.mkdir()
    (clone_dir / "metadata.json").write_text(json.dumps({"kind": "clone"}))  # an older critwin clone result
    with pytest.raises(ValueError, match="holds a critwin 'clone' result, not a 'forward_reverse' one"):
        result.save(clone_dir)
    with pytest.raises(ValueError, match="holds a critwin 'forward_reverse' result, not a 'clone' one"):
        with claim_directory(tmp_path / "fr", "clone"):
            pass


def test_out_that_is_a_file_is_refused(small, tmp_path):
    mixture, x0 = small
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="out must be a directory"):
        forward_reverse(mixture, x0, out=tmp_path / "f", **ARGS)


# ------------------------------------------------------------------------------ settings before files
def test_artefact_is_bound_to_its_settings_even_after_a_kill_before_it_was_written(tmp_path):
    calls = []

    def make(seed):
        calls.append(seed)
        return {"x0": torch.randn(3, 2, generator=torch.Generator().manual_seed(seed))}

    with claim_directory(tmp_path, "forward_reverse"):
        first = bound_tensors(tmp_path, "sources", {"seed": 0}, lambda: make(0), "out")
        # A rerun with the same settings reads the file; another seed is refused, naming the setting.
        assert torch.equal(
            bound_tensors(tmp_path, "sources", {"seed": 0}, lambda: make(9), "out")["x0"], first["x0"]
        )
        with pytest.raises(ValueError, match=r"'seed' differs: 0 there, 1 now"):
            bound_tensors(tmp_path, "sources", {"seed": 1}, lambda: make(1), "out")
        # Killed after the settings file, before the artefact: the rerun with other settings is refused too.
        (tmp_path / "sources.safetensors").unlink()
        with pytest.raises(ValueError, match="'seed' differs"):
            bound_tensors(tmp_path, "sources", {"seed": 1}, lambda: make(1), "out")
        assert calls == [0]
        again = bound_tensors(tmp_path, "sources", {"seed": 0}, lambda: make(0), "out")
    assert torch.equal(again["x0"], first["x0"]) and calls == [0, 0]


# ---------------------------------------------------------------------------------- corrupt artefacts
def _saved(small, tmp_path):
    mixture, x0 = small
    out = tmp_path / "run"
    forward_reverse(mixture, x0, out=out, **ARGS)
    return mixture, x0, out


def test_truncated_unit_names_the_file(small, tmp_path):
    mixture, x0, out = _saved(small, tmp_path)
    unit = sorted((out / "units").glob("*.npz"))[0]
    unit.write_bytes(unit.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"unit file {unit} is corrupt"):
        forward_reverse(mixture, x0, out=out, **ARGS)


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"text"', "\udcff"])
def test_corrupt_config_names_the_file(small, tmp_path, content):
    mixture, x0, out = _saved(small, tmp_path)
    (out / "config.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError, match="config.json .*corrupt"):
        forward_reverse(mixture, x0, out=out, **ARGS)


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("table.csv", "", "table.csv is not a critwin result table"),
        ("table.csv", "t,label\n1.0\n", "table.csv is not a critwin result table"),
        ("metadata.json", "[]", "metadata.json must hold a JSON object"),
        ("metadata.json", '{"kind": "forward_reverse"}', "do not form a valid forward_reverse result"),
    ],
)
def test_corrupt_result_files_name_the_file(small, tmp_path, file, content, message):
    _, _, out = _saved(small, tmp_path)
    (out / file).write_text(content)
    with pytest.raises(ValueError, match=message):
        ForwardReverseResult.load(out)


def test_store_refuses_other_settings_without_writing(tmp_path):
    SweepStore(tmp_path, {"kind": "clone", "seed": 1}).save("u", {"a": np.arange(3)})
    with pytest.raises(ValueError, match="'seed' differs: 1 there, 2 now"):
        SweepStore(tmp_path, {"kind": "clone", "seed": 2})
    assert np.array_equal(SweepStore(tmp_path, {"kind": "clone", "seed": 1}).load("u")["a"], np.arange(3))
    with pytest.raises(ValueError, match="holds a 'clone' result, not forward_reverse"):
        ForwardReverseResult.load(_clone_result_dir(tmp_path))


def _clone_result_dir(tmp_path):
    out = tmp_path / "c"
    CloneResult(
        requested_times=torch.tensor([0.5]),
        times=torch.tensor([0.5]),
        indices=torch.tensor([1]),
        steps=None,
        own_labels=torch.tensor([0, 1]),
        clone_labels=torch.tensor([[[0, 0], [1, 0]]]),
    ).save(out)
    return out


def test_truncated_safetensors_artefact_names_the_file(tmp_path):
    with claim_directory(tmp_path, "forward_reverse"):
        bound_tensors(tmp_path, "sources", {"seed": 0}, lambda: {"x0": torch.zeros(2, 3)}, "out")
        path = tmp_path / "sources.safetensors"
        path.write_bytes(path.read_bytes()[:20])
        with pytest.raises(ValueError, match=f"could not read sources .*{path.name}"):
            bound_tensors(tmp_path, "sources", {"seed": 0}, lambda: {"x0": torch.zeros(2, 3)}, "out")
