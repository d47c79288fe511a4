"""The command line starts at once: help, version and option errors import neither torch nor scipy.

``import torch`` alone costs seconds; the CLI imports it (and the engine, scipy, diffusers) only in a
command's body, after the options are checked. Each case runs in a fresh interpreter and reports which
heavy modules were imported by the time it exited, so a new top-level import anywhere on the start-up
path (``critwin/__init__``, ``critwin.cli``, a command module, a registry it reads) fails here.
"""

import json
import subprocess
import sys

import pytest
import typer

from critwin.cli import _register, app

HEAVY = ("torch", "scipy", "sklearn", "diffusers", "transformers", "matplotlib")

# Runs each argv through the real entry point in one fresh interpreter; prints what each left behind.
RUNNER = """
import contextlib, io, json, sys
HEAVY = {heavy!r}
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as stdout:
        try:
            from critwin.cli import main
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
    out.append({{"argv": argv, "code": code, "stderr": err.getvalue(), "stdout": stdout.getvalue(),
                "heavy": sorted(m for m in HEAVY if m in sys.modules)}})
print(json.dumps(out))
"""


def _commands() -> list[str]:
    _register()
    return sorted(typer.main.get_command(app).commands)


USAGE_ERRORS = [
    ["--bogus"],  # unknown option of the group
    ["sweep", "--bogus"],  # unknown option of a command
    ["sweep", "--model", "digits"],  # a missing required option
    ["window", "examples/two_gaussians.yaml", "--after", "0", "--n", "many"],  # a value of the wrong type
    ["atlas", "--eps", "2"],  # a value outside its range, checked in the body before any heavy import
    ["hierarchy", "examples/two_gaussians.yaml", "--method", "slow"],
    ["demo", "--workers", "0", "--out", "/nonexistent-critwin-demo"],
    ["estimate", "."],  # no --delta problem: the directory is not a result (checked before the engine)
]


def _run(cases: list[list[str]]) -> list[dict]:
    code = RUNNER.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_help_version_and_every_commands_help_import_nothing_heavy():
    cases = [["--help"], ["--version"]] + [[name, "--help"] for name in _commands()]
    assert len(cases) >= 10  # the group, --version and every command
    for case in _run(cases):
        assert case["code"] == 0, case
        assert case["heavy"] == [], f"{case['argv']} imported {case['heavy']}"


def test_usage_errors_are_one_line_exit_2_before_any_heavy_import():
    for case in _run(USAGE_ERRORS):
        lines = case["stderr"].strip().splitlines()
        assert case["code"] == 2, case
        assert len(lines) == 1 and lines[0].startswith("critwin: error: "), case
        assert case["heavy"] == [], f"{case['argv']} imported {case['heavy']} before refusing"


def test_python_m_critwin_help_does_not_import_torch():
    # The real entry point in its own interpreter, checked with -X importtime (every import is listed).
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "critwin", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "critwin.cli" in imported  # the listing is real
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_import_critwin_imports_no_torch_until_a_name_is_used():
    code = (
        "import sys, critwin; before = 'torch' in sys.modules; critwin.GaussianMixture; "
        "print(before, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("argv", [["sweep", "--bogus"]])
def test_the_runner_sees_heavy_imports(argv, tmp_path):
    """The check can fail: a case that imports torch on purpose is reported as such."""
    script = RUNNER.format(heavy=HEAVY).replace("out = []", "import torch\nout = []")
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps([argv])], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout)[0]["heavy"] == ["torch"]
