import errno
import json
import math
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from critwin._io import atomic_path, atomic_paths, atomic_write_json, json_text, remove_stale_work_directories
from critwin.report.output import build_atomically


def test_json_is_strict_and_plain(tmp_path):
    obj = {"a": math.inf, "b": [1.0, float("nan")], "t": torch.tensor([1.5, -math.inf]), "n": np.float64(2.0)}
    text = json_text(obj)
    # Infinities keep their direction (censored endpoints); NaN is plain null.
    above, below = {"value": None, "censored": "above"}, {"value": None, "censored": "below"}
    assert json.loads(text) == {"a": above, "b": [1.0, None], "t": [1.5, below], "n": 2.0}
    atomic_write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text())["t"] == [1.5, below]


def test_atomic_write_leaves_nothing_on_failure_and_follows_the_umask(tmp_path):
    target = tmp_path / "result.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("done")
    finally:
        os.umask(old)
    assert target.read_text() == "done"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


# ------------------------------------------------------------- writers: full disks, kills, two writers
def test_os_error_of_a_write_names_the_output_and_leaves_the_previous_file(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("previous")
    # A full disk on write: the error names no file (errno only); it must name the user's output.
    with pytest.raises(OSError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_text() == "previous" and sorted(tmp_path.iterdir()) == [target]


def test_a_full_disk_in_a_child_process_leaves_the_previous_file(tmp_path):
    # RLIMIT_FSIZE makes the kernel refuse a write past 1 KiB (EFBIG): a full disk without a mount.
    target = tmp_path / "result.json"
    atomic_write_json(target, {"previous": True})
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        from critwin._io import atomic_write_text
        try:
            atomic_write_text({str(target)!r}, "y" * 100000)
        except OSError as exc:
            print(f"{{exc.filename}}: {{exc.strerror}}")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == f"{target}: File too large", proc.stderr
    assert json.loads(target.read_text()) == {"previous": True}
    assert sorted(tmp_path.iterdir()) == [target]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(proc.stdout)


def test_temp_files_and_work_directories_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".result.json.pid{dead}.ab12.tmp"
    live = tmp_path / f".result.json.pid{alive}.cd34.tmp"  # a running writer's: kept
    other = tmp_path / f".other.json.pid{dead}.ef56.tmp"  # another file's: not this writer's business
    for path in (stale, live, other):
        path.write_text("x")
    atomic_write_json(tmp_path / "result.json", {"a": 1})
    assert not stale.exists() and live.exists() and other.exists()
    # A report directory: a killed build's work directory goes, and an old result left aside between
    # the two renames of a non-Linux replace is put back when the result is missing.
    out = tmp_path / "report"
    (tmp_path / f".report.pid{dead}.xyz").mkdir()
    aside = tmp_path / f".report.pid{dead}.old"
    aside.mkdir()
    (aside / "a.txt").write_text("old")
    assert sorted(remove_stale_work_directories(out)) == sorted([tmp_path / f".report.pid{dead}.xyz", aside])
    assert (out / "a.txt").read_text() == "old"


def test_build_atomically_replaces_whole_and_a_failing_build_keeps_the_old(tmp_path):
    out = tmp_path / "report"

    def build(text):
        def write(work):
            (work / "a.txt").write_text(text)

        return write

    build_atomically(out, build("one"))
    build_atomically(out, build("two"))
    assert (out / "a.txt").read_text() == "two"

    def full(work):
        (work / "a.txt").write_text("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        build_atomically(out, full)
    assert info.value.filename == str(out) and (out / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_files_written_together_are_renamed_only_when_all_are_complete(tmp_path):
    weights, card = tmp_path / "m.safetensors", tmp_path / "m.json"
    weights.write_text("old weights")
    card.write_text("old card")
    with pytest.raises(RuntimeError):
        with atomic_paths(weights, card) as (tmp_weights, tmp_card):
            tmp_weights.write_text("new weights")
            raise RuntimeError("killed before the card")
    assert weights.read_text() == "old weights" and card.read_text() == "old card"
    with atomic_paths(weights, card) as (tmp_weights, tmp_card):
        tmp_weights.write_text("new weights")
        tmp_card.write_text("new card")
    assert weights.read_text() == "new weights" and card.read_text() == "new card"
    assert sorted(tmp_path.iterdir()) == [card, weights]


MIXTURE = str(Path(__file__).resolve().parents[1] / "examples" / "two_gaussians.yaml")
HOLDER = textwrap.dedent(
    """
    import sys, time
    from critwin.experiments.checkpoint import claim_output
    with claim_output(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_a_second_writer_of_one_output_file_is_refused_with_the_holders_pid(tmp_path):
    from critwin.cli import main

    out = tmp_path / "tree.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"in use by pid {holder.pid}"):
            build_atomically(out, lambda work: None)
        with pytest.raises(SystemExit) as code:
            main(["hierarchy", MIXTURE, "--no-windows", "--out", str(out)])
        assert code.value.code == 2 and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # The kernel freed the dead holder's lock: the same command now writes.
    with pytest.raises(SystemExit) as code:
        main(["hierarchy", MIXTURE, "--no-windows", "--out", str(out)])
    assert code.value.code == 0 and out.is_file()
    assert sorted(tmp_path.iterdir()) == [out]  # the lock goes with its holder


def test_a_full_disk_when_claiming_an_output_names_it_and_leaves_no_lock(tmp_path, monkeypatch):
    from critwin.experiments import checkpoint

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "write", full)
    out = tmp_path / "tree.json"
    with pytest.raises(ValueError, match=f"out {out}: cannot write there \\(No space left on device\\)"):
        with checkpoint.claim_output(out):
            pass
    with pytest.raises(ValueError, match="cannot write there"):
        with checkpoint.claim_directory(tmp_path / "run", "forward_reverse"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the new directory goes with its failed claim


def test_a_result_table_and_its_metadata_are_replaced_together(tmp_path):
    """A failure while writing metadata.json (here an object JSON cannot hold; a full disk alike) leaves
    the previous table.csv too, not a new table beside the old metadata."""
    from critwin.experiments.results import write_table

    write_table(tmp_path, {"t": [0.5], "label": [1]}, {"kind": "forward_reverse"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TypeError, match="cannot serialise"):
        write_table(tmp_path, {"t": [0.5, 1.0], "label": [0, 1]}, {"kind": object()})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
