"""Every command checks its options before it loads a model: a bad option is one line, exit 2.

The model must not be loaded first. ``diffusers`` is made unimportable in the subprocess (a package of
that name that raises on import comes first on the path), and ``sweep`` points ``--model`` at a
directory that does not exist: a command that loaded its model before checking options would fail
with another error.
"""

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    blocker = tmp_path_factory.mktemp("no_diffusers")
    (blocker / "diffusers").mkdir()
    (blocker / "diffusers" / "__init__.py").write_text(
        "raise ImportError('diffusers is blocked: the command loaded a model before checking options')\n"
    )
    paths = [str(blocker), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


# All cases run in ONE subprocess (one interpreter start instead of one per case): each calls the CLI's
# ``main`` in-process and reports its exit code and stderr.
RUNNER = """
import contextlib, io, json, sys
from critwin.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # a model loaded before the checks: diffusers is blocked
            code, err = "raised", io.StringIO(repr(exc))
    results.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""

FAIRNESS_PRIVACY_TRAIN = [
    (["fairness", "--candidates", "1"], "--candidates must be >= 2"),
    (["fairness", "--fork-time", "-1"], "--fork-time must be > 0"),
    (["fairness", "--target", "0.5,0.5"], "--target must be 10 non-negative probabilities"),
    (["privacy", "--members", "0"], "--members must be >= 1"),
    (["privacy", "--times", "0.1,-2"], "--times must be"),
    (["privacy", "--model", "digits", "--members", "5000"], "--members must be <= 1437"),
    (["train", "digits", "--steps", "0"], "--steps must be >= 1"),
    (["train", "digits", "--unconditional-samples", "-1"], "--unconditional-samples must be >= 0"),
]
SWEEP = [
    (["--dtype", "float8"], "--dtype must be one of float32, float16, bfloat16"),
    (["--feature", "nope"], "--feature must be one of"),
    (["--delta", "0.7"], "--delta must be < 0.5"),
]


def _sweep_argv(root, k, args):
    return ["sweep", "--model", str(root / "no-such-model"), "--out", str(root / f"o{k}"), *args]


@pytest.fixture(scope="module")
def outcomes(env, tmp_path_factory):
    """(exit code, stderr) of every case, and the folder the sweep cases were told to write to."""
    import json

    root = tmp_path_factory.mktemp("sweep")
    argvs = [args for args, _ in FAIRNESS_PRIVACY_TRAIN]
    argvs += [_sweep_argv(root, k, args) for k, (args, _) in enumerate(SWEEP)]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argvs)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), root


def _check(outcome, message):
    assert outcome["code"] == 2, outcome
    assert len(outcome["stderr"].strip().splitlines()) == 1, outcome["stderr"]
    assert message in outcome["stderr"]


@pytest.mark.parametrize("case", range(len(FAIRNESS_PRIVACY_TRAIN)))
def test_bad_option_is_reported_before_the_model_loads(outcomes, case):
    results, _ = outcomes
    _check(results[case], FAIRNESS_PRIVACY_TRAIN[case][1])


@pytest.mark.parametrize("case", range(len(SWEEP)))
def test_sweep_checks_options_before_the_model(outcomes, case):
    results, root = outcomes
    _check(results[len(FAIRNESS_PRIVACY_TRAIN) + case], SWEEP[case][1])
    assert not (root / f"o{case}").exists()
