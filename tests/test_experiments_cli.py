"""``critwin estimate`` on saved results."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from critwin.cli import main
from critwin.experiments.cloning import clone
from critwin.experiments.estimation import estimate_window
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.mixtures import GaussianMixture


def run_cli(args):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)


@pytest.fixture(scope="module")
def mixture():
    mu = torch.full((1, 2), 6.0 / math.sqrt(2), dtype=torch.float64)
    return GaussianMixture(torch.cat([mu, -mu]))


def test_estimate_reproduces_the_library_estimate(mixture, tmp_path, capsys):
    x0 = mixture.subset([0]).sample(200, generator=torch.Generator().manual_seed(0))[0]
    times = [0.3 * k for k in range(1, 16)]
    forward_reverse(mixture, x0, times, n_per_time=2, seed=1, out=tmp_path / "fr", progress=False)
    run_cli(
        [
            "estimate",
            str(tmp_path / "fr"),
            "--n-boot",
            "30",
            "--seed",
            "4",
            "--json",
            "--out",
            str(tmp_path / "w.json"),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    # Independent path: the saved table reloaded and estimated in-process with the same settings.
    expected = estimate_window(
        ForwardReverseResult.load(tmp_path / "fr"), n_boot=30, generator=torch.Generator().manual_seed(4)
    )
    assert printed["t_half"] == pytest.approx(expected.t_half)
    assert printed["t_before_ci"] == pytest.approx(list(expected.t_before_ci))
    assert json.loads((tmp_path / "w.json").read_text())["b"] == pytest.approx(expected.b)


def test_estimate_reads_clone_results(mixture, tmp_path, capsys):
    result = clone(mixture, 100, [0.5, 1.5, 2.5, 3.5], 2, seed=0, out=tmp_path / "cl", progress=False)
    run_cli(["estimate", str(tmp_path / "cl"), "--n-boot", "0"])
    text = capsys.readouterr().out
    first = f"{0.5:8.4f} {result.agreement[0].item():7.3f}"
    assert first in text and "t_half" in text and "jump rule" in text


def test_estimate_one_feature_of_a_multi_feature_result(mixture, tmp_path, capsys):
    x0 = mixture.sample(60, generator=torch.Generator().manual_seed(0))[0]
    features = {"bayes": "bayes", "second": lambda x: (x[:, 1] > 0).long()}
    forward_reverse(
        mixture, x0, [0.5, 1.5, 3.0], 2, feature=features, seed=1, out=tmp_path / "fr", progress=False
    )
    run_cli(["estimate", str(tmp_path / "fr"), "--n-boot", "20", "--feature", "second", "--json"])
    printed = json.loads(capsys.readouterr().out)
    expected = estimate_window(
        ForwardReverseResult.load(tmp_path / "fr").select("second"),
        n_boot=20,
        generator=torch.Generator().manual_seed(0),
    )
    assert printed["t_half"] == pytest.approx(expected.t_half) and printed["b"] == pytest.approx(expected.b)
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate", str(tmp_path / "fr"), "--n-boot", "0"])
    assert exit_info.value.code == 2
    assert "several features (bayes, second); pass --feature NAME" in capsys.readouterr().err


def test_estimate_errors_are_one_line_and_exit_2(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "critwin.cli", "estimate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "metadata.json not found" in run.stderr
