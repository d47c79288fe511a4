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


def _critwin(env, *args):
    return subprocess.run([sys.executable, "-m", "critwin", *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    "args, message",
    [
        (["fairness", "--candidates", "1"], "--candidates must be >= 2"),
        (["fairness", "--fork-time", "-1"], "--fork-time must be > 0"),
        (["fairness", "--target", "0.5,0.5"], "--target must be 10 non-negative probabilities"),
        (["privacy", "--members", "0"], "--members must be >= 1"),
        (["privacy", "--times", "0.1,-2"], "--times must be"),
        (["privacy", "--model", "digits", "--members", "5000"], "--members must be <= 1437"),
        (["train", "digits", "--steps", "0"], "--steps must be >= 1"),
        (["train", "digits", "--unconditional-samples", "-1"], "--unconditional-samples must be >= 0"),
    ],
)
def test_bad_option_is_reported_before_the_model_loads(env, args, message):
    proc = _critwin(env, *args)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dtype", "float8"], "--dtype must be one of float32, float16, bfloat16"),
        (["--feature", "nope"], "--feature must be one of"),
        (["--delta", "0.7"], "--delta must be < 0.5"),
    ],
)
def test_sweep_checks_options_before_the_model(env, tmp_path, args, message):
    proc = _critwin(
        env, "sweep", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "o"), *args
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "o").exists()
