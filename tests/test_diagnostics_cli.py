import json
import types

import pytest

from critwin.cli import main


def _critwin(capsys, *args):
    """The CLI in-process (its ``main``, as the console script runs it): exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return types.SimpleNamespace(returncode=done.value.code, stdout=captured.out, stderr=captured.err)


@pytest.mark.parametrize(
    "args,message",
    [
        (["privacy", "--model", "sd"], "--model must be one of digits, digits-memorise"),
        (["privacy", "--times", "0.1,x"], "--times must be a comma-separated list"),
        (["privacy", "--members", "0"], "members must be >= 1"),
        (["fairness", "--target", "0.5,x"], "--target must be a comma-separated list"),
        (["fairness", "--candidates", "1", "--n", "4", "--steps", "2"], "--candidates must be >= 2"),
        (["fairness", "--model", "shapes-biased"], "--attribute is required with --model shapes-biased"),
        (["fairness", "--attribute", "background"], "--attribute applies to the shapes models"),
        (["fairness", "--model", "cats", "--attribute", "x"], "--model must be one of digits, shapes"),
        (["atlas", "--eps", "2"], "--eps must lie in (0, 1)"),
        (["atlas", "--sources", "0"], "--sources must be >= 1"),
        (["atlas", "--trajectories", "-1"], "--trajectories must be >= 0"),
        (["atlas", "--times", "1,x"], "--times must be a comma-separated list"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    proc = _critwin(capsys, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("critwin: error")]) == 1


def test_fairness_json_output(capsys, tmp_path):
    out = tmp_path / "fair.json"
    proc = _critwin(capsys, "fairness", "--n", "40", "--steps", "10", "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    assert abs(sum(printed["after"]) - 1) < 1e-9 and printed["tv_after"] <= printed["tv_before"]


def test_atlas_refuses_an_output_directory_it_did_not_write(capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    proc = _critwin(capsys, "atlas", "--out", str(tmp_path))
    assert proc.returncode == 2 and "is not an earlier critwin atlas" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
