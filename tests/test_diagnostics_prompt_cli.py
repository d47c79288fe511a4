"""``critwin privacy`` / ``critwin fairness`` on a text-to-image pipeline directory (issue 20): prompts files
are checked before any network is loaded, and the comparison runs end to end on a tiny pipeline."""

from __future__ import annotations

import json
import types

import pytest

from critwin.cli import main
from tiny_models import tiny_stable_diffusion_with_text


def _critwin(capsys, *args):
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return types.SimpleNamespace(returncode=done.value.code, stdout=captured.out, stderr=captured.err)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    (root / "tok").mkdir()
    tiny_stable_diffusion_with_text(root / "tok").save_pretrained(root / "pipe", safe_serialization=True)
    return root / "pipe"


def _file(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "holds no prompts"),
        (b"\n  \n", "holds no prompts"),
        (b"a circle\n\xff\xfe broken\n", "not UTF-8 text"),
        (b"a circle\nab\na circle\n", "prompt 3 'a circle' repeats prompt 1"),
        (b"ab\na circle on a very long prompt\n", "has 26 tokens; the tokenizer's limit is 16"),
    ],
)
def test_bad_prompts_files_are_one_line_and_exit_2(capsys, tmp_path, pipeline_dir, content, message):
    members = _file(tmp_path, "members.txt", content)
    non_members = _file(tmp_path, "non.txt", b"xx\nyy\n")
    out = tmp_path / "audit.json"
    proc = _critwin(
        capsys,
        "privacy",
        "--model",
        str(pipeline_dir),
        "--members",
        members,
        "--non-members",
        non_members,
        "--out",
        str(out),
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("critwin: error: --members")
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--members", "MISSING", "--non-members", "N"], "--members MISSING: no such file"),
        (["--members", "M"], "--members and --non-members go together"),
        (["--times", "0.1"], "--times applies to the image models"),
        (["--members", "M", "--non-members", "N", "--scores", "wen,x"], "--scores must name scores among"),
        (["--members", "M", "--non-members", "M"], "--non-members needs at least 4 prompts"),
        (["--members", "M", "--non-members", "N", "--calibration", "O"], "--calibration needs at least 2"),
    ],
)
def test_bad_privacy_options_on_a_pipeline(capsys, tmp_path, pipeline_dir, args, message):
    files = {
        "O": _file(tmp_path, "o.txt", b"zz\n"),
        "M": _file(tmp_path, "m.txt", b"aa\nbb\n"),
        "N": _file(tmp_path, "n.txt", b"cc\ndd\nee\nff\n"),
    }
    args = [files.get(a, a) for a in args]
    proc = _critwin(capsys, "privacy", "--model", str(pipeline_dir), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")
def test_privacy_on_a_pipeline_directory_end_to_end(capsys, tmp_path, pipeline_dir):
    members = _file(tmp_path, "m.txt", b"aa\nbb\ncc\n")
    non_members = _file(tmp_path, "n.txt", b"dd\nee\nff\ngg\n")
    args = ["privacy", "--model", str(pipeline_dir), "--members", members, "--non-members", non_members]
    proc = _critwin(capsys, *args, "--steps", "3", "--scores", "wen,commitment,loss", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["graded_by"].startswith("membership ground truth")
    assert list(report["table"]) == ["commitment", "wen"] and "loss" in report["skipped"]
    assert report["nfe_per_prompt"]["wen"] == 8  # 4 generations x 2 branches at the first step
    # Without --calibration, half of the non-members calibrate (a seeded split), disjoint from the rest.
    prompts = report["prompts"]
    assert len(prompts["calibration"]) == 2 and not set(prompts["calibration"]) & set(prompts["non_members"])
    row = report["table"]["wen"][-1]
    assert row["count"] is None and row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]


def test_fairness_prompt_options(capsys, pipeline_dir):
    proc = _critwin(capsys, "fairness", "--model", str(pipeline_dir), "--attribute", "background")
    assert proc.returncode == 2 and "--prompt and --attribute are required" in proc.stderr
    proc = _critwin(capsys, "fairness", "--prompt", "a circle")
    assert proc.returncode == 2 and "--prompt applies to text-to-image models" in proc.stderr
    proc = _critwin(
        capsys,
        "fairness",
        "--model",
        str(pipeline_dir),
        "--prompt",
        "ab",
        "--attribute",
        "x",
        "--fork-time",
        "1",
    )
    assert proc.returncode == 2 and "--fork-time is measured per prompt" in proc.stderr
