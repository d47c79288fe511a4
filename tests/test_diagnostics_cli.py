import json
import subprocess
import sys

import pytest


def _critwin(*args):
    return subprocess.run([sys.executable, "-m", "critwin", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args,message",
    [
        (["privacy", "--model", "sd"], "--model must be one of digits, digits-memorise"),
        (["privacy", "--times", "0.1,x"], "--times must be a comma-separated list"),
        (["privacy", "--members", "0"], "members must be >= 1"),
        (["fairness", "--target", "0.5,x"], "--target must be a comma-separated list"),
        (["fairness", "--candidates", "1", "--n", "4", "--steps", "2"], "--candidates must be >= 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = _critwin(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("critwin: error")]) == 1


def test_fairness_json_output(tmp_path):
    out = tmp_path / "fair.json"
    proc = _critwin("fairness", "--n", "40", "--steps", "10", "--json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    assert abs(sum(printed["after"]) - 1) < 1e-9 and printed["tv_after"] <= printed["tv_before"]
