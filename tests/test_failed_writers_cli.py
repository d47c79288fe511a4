"""A command that fails leaves no new empty or partial output folder behind (issue 22).

Every command with an output option is run, in-process through :func:`critwin.cli.main`, with its output
in a folder two levels below one that does not exist yet (``a/b/...``), and with an input that fails
*after* the output is claimed: a missing or invalid model, a malformed mixture or result directory, or a
request over a tiny memory limit. Each must exit 2 with one ``critwin: error:`` line, and the working
folder must be exactly as before: no ``a``, no lock file, no temporary work directory.
"""

from __future__ import annotations

import pytest

from critwin.cli import main

BAD_MIXTURE = "components: oops\n"

# (name, argv, memory limit or None, text that the error line must hold)
CASES = [
    ("sweep-missing-model", ["sweep", "--model", "{tmp}/no-such-model", "--out", "a/b/run"], None, "no-such"),
    ("sweep-empty-model-dir", ["sweep", "--model", "{tmp}/empty", "--out", "a/b/run"], None, "model_index"),
    ("sweep-shipped-typo", ["sweep", "--model", "shipped:nosuch", "--out", "a/b/run"], None, "nosuch"),
    ("hierarchy", ["hierarchy", "{tmp}/bad.yaml", "--out", "a/t.json", "--plot", "c/t.png"], None, "bad"),
    ("estimate", ["estimate", "{tmp}/empty", "--out", "a/b/e.json"], None, "metadata.json"),
    ("text", ["text", "--model", "{tmp}/empty", "--out", "a/b/t"], None, "--model"),
    ("privacy", ["privacy", "--model", "digits", "--out", "a/b/p.json"], "1000", "memory limit"),
    ("fairness", ["fairness", "--model", "digits", "--n", "99", "--out", "a/f.json"], "1000", "memory limit"),
    ("atlas", ["atlas", "--model", "shapes", "--out", "a/b/at"], "1000", "memory limit"),
    ("train", ["train", "digits-tiny", "--out", "a/b/w"], "1000", "memory limit"),
    ("text-memory", ["text", "--model", "rhm-mdm", "--out", "a/b/t"], "1000", "memory limit"),
    ("validate", ["validate", "--quick", "--out", "a/b/v"], "1000", "memory limit"),
    ("demo", ["demo", "--quick", "--no-progress", "--workers", "1", "--out", "a/d"], "1000", "memory"),
]


@pytest.mark.parametrize(("argv", "limit", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_failed_command_leaves_no_new_output_folder(argv, limit, needle, tmp_path, monkeypatch, capsys):
    fixtures = tmp_path / "fixtures"
    (fixtures / "empty").mkdir(parents=True)
    (fixtures / "bad.yaml").write_text(BAD_MIXTURE)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if limit is not None:
        monkeypatch.setenv("CRITWIN_MEMORY_LIMIT", limit)
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{tmp}", str(fixtures)) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("critwin: note:")]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("critwin: error: ") and needle in lines[0], err
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == []


def test_a_failed_sweep_into_an_existing_folder_keeps_the_folder(tmp_path, capsys):
    """The folder was the user's: it stays (empty again), only what this run made goes."""
    out = tmp_path / "mine"
    out.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--model", str(tmp_path / "no-such-model"), "--out", str(out)])
    assert exc.value.code == 2, capsys.readouterr().err
    assert out.is_dir()


def test_claim_directory_keeps_finished_units_and_removes_a_new_folder_without_them(tmp_path):
    from critwin.experiments.checkpoint import UNITS_DIR, claim_directory

    fresh = tmp_path / "x" / "fresh"
    with pytest.raises(RuntimeError, match="boom"), claim_directory(fresh, "forward_reverse"):
        (fresh / "config.json").write_text("{}")
        raise RuntimeError("boom")
    assert not (tmp_path / "x").exists()

    resumable = tmp_path / "y" / "resumable"
    with pytest.raises(RuntimeError, match="boom"), claim_directory(resumable, "forward_reverse"):
        (resumable / UNITS_DIR).mkdir()
        (resumable / UNITS_DIR / "t0000-c0000.npz").write_bytes(b"unit")
        raise RuntimeError("boom")
    assert (resumable / UNITS_DIR / "t0000-c0000.npz").read_bytes() == b"unit"

    interrupted = tmp_path / "z"
    with pytest.raises(KeyboardInterrupt), claim_directory(interrupted, "clone"):
        raise KeyboardInterrupt  # resumable, as after a kill: kept
    assert interrupted.is_dir()


def test_claim_output_removes_only_the_folders_it_made_and_only_when_empty(tmp_path):
    from critwin.experiments.checkpoint import claim_output

    target = tmp_path / "a" / "b" / "out.json"
    with pytest.raises(RuntimeError), claim_output(target):
        (tmp_path / "a" / "other.txt").write_text("someone else's")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "other.txt"]

    with claim_output(tmp_path / "c" / "ok.json") as path:
        path.write_text("{}")
    assert (tmp_path / "c" / "ok.json").read_text() == "{}"
