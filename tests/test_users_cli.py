"""Issue 15: shipped models on the CLI, statistics hygiene, notebook-friendly results, metadata, notes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import critwin  # noqa: E402
from critwin._io import json_float, json_text, provenance  # noqa: E402
from critwin.cli import _register, app, main, warnings_as_notes  # noqa: E402
from critwin.cli._common import cli_error  # noqa: E402
from critwin.diagnostics.fairness import rebalance  # noqa: E402
from critwin.diagnostics.privacy import MembershipAudit, tpr_at_fpr  # noqa: E402
from critwin.experiments.cloning import clone  # noqa: E402
from critwin.experiments.estimation import estimate_window  # noqa: E402
from critwin.experiments.results import SHARED_COLUMNS  # noqa: E402
from critwin.models.classifier import ClassMeanReader  # noqa: E402
from critwin.models.data import load_digits_data  # noqa: E402
from two_gaussian_oracle import two_gaussians  # noqa: E402

PROVENANCE_KEYS = {"critwin", "torch", "diffusers", "python", "device", "dtype", "utc", "call"}
SRC = Path(__file__).resolve().parents[1] / "src"


def _run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def clone_result():
    return clone(two_gaussians(4.0), 12, [0.1, 0.6, 1.2, 2.5], 3, seed=3, progress=False)


# ----------------------------------------------------------------------------------------- CLI (item 2)
def test_version_in_process_and_as_a_subprocess():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"critwin {critwin.__version__}"
    # The real entry point in a fresh interpreter: an option a shipped model lacks is one line, exit 2,
    # before any model is loaded.
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    argv = ["sweep", "--model", "digits", "--out", "o", "--prompt", "a cat"]
    proc = subprocess.run(
        [sys.executable, "-m", "critwin.cli", *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "critwin: error: --prompt does not apply to the shipped model 'digits' (8x8 digits, class labels)"
    ]


def test_sweep_help_documents_the_shipped_models_and_the_null_label():
    _register()
    output = CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"}).output
    text = " ".join(output.replace("│", " ").split())  # rich wraps and boxes the help
    assert "digits-memorise" in text
    assert "10 = the null label (unconditional; the default)" in text


def test_errors_name_cli_flags_not_python_keywords():
    flags = {
        "class_labels": "--class-label",
        "null_class_label": "--null-label",
        "guidance_scale": "--guidance",
    }
    message = "guidance_scale=7.5 needs null_class_label= (the unconditional label); see other=1"
    assert str(cli_error(ValueError(message), flags)) == (
        "--guidance 7.5 needs --null-label (the unconditional label); see other=1"
    )
    assert str(cli_error(ValueError("class-conditional: pass class_labels="), flags)) == (
        "class-conditional: pass --class-label"
    )


def test_feature_module_is_imported_from_the_current_directory_and_checked_first(
    tmp_path, capsys, monkeypatch
):
    (tmp_path / "myfeat_users_cli.py").write_text("NOT_A_FUNCTION = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    base = ["sweep", "--model", "digits", "--out", str(tmp_path / "o"), "--no-progress"]
    code, _, err = _run([*base, "--feature", "myfeat_users_cli:missing"], capsys)
    assert code == 2 and "has no attribute 'missing'" in err
    code, _, err = _run([*base, "--feature", "myfeat_users_cli:NOT_A_FUNCTION"], capsys)
    assert code == 2 and "not a function" in err
    assert not (tmp_path / "o").exists()  # checked before anything was generated


def test_sweep_on_the_shipped_digits_model_with_a_class_label(tmp_path, capsys):
    out = tmp_path / "digits"
    argv = ["sweep", "--model", "digits", "--out", str(out), "--class-label", "3", "--steps", "4"]
    code, stdout, err = _run(
        [*argv, "--n", "2", "--n-per-time", "1", "--times", "0,2", "--no-progress"], capsys
    )
    assert code == 0, err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["provenance"].keys() >= PROVENANCE_KEYS
    assert (meta["provenance"]["device"], meta["provenance"]["dtype"]) == ("cpu", "float32")
    # At t = 0 nothing is re-noised, so every output is its own source: agreement exactly 1.
    assert "1.000" in stdout.splitlines()[1]
    for line in err.splitlines():
        assert line.startswith("critwin: note: ")
    bad = ["sweep", "--model", "digits", "--out", str(tmp_path / "b"), "--class-label", "11", "--n", "1"]
    code, _, err = _run([*bad, "--steps", "2", "--no-progress"], capsys)
    assert code == 2 and "class_label must be digits 0..9 or the null label 10" in err


# ------------------------------------------------------------------------------------ warnings (item 6)
def test_warnings_become_one_note_line(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with warnings_as_notes():
            warnings.warn("first line\nsecond line", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "critwin: note: first line\n"
    assert os.environ.get("DIFFUSERS_VERBOSITY") == "error"


# --------------------------------------------------------------------------------- statistics (item 3)
def test_json_keeps_the_direction_of_censored_values():
    text = json_text({"a": math.inf, "b": -math.inf, "c": math.nan, "d": 1.5}, indent=None)
    assert json.loads(text) == {
        "a": {"value": None, "censored": "above"},
        "b": {"value": None, "censored": "below"},
        "c": None,
        "d": 1.5,
    }
    back = {k: json_float(v) for k, v in json.loads(text).items()}
    assert back["a"] == math.inf and back["b"] == -math.inf and math.isnan(back["c"]) and back["d"] == 1.5


def test_estimate_window_is_deterministic_by_default(clone_result):
    first, second = estimate_window(clone_result), estimate_window(clone_result)
    assert first.t_after_ci == second.t_after_ci and first.t_before_ci == second.t_before_ci
    seeded = estimate_window(clone_result, seed=0)  # the documented default seed
    assert seeded.t_before_ci == first.t_before_ci
    assert first.metadata["bootstrap_seed"] == 0
    assert first.metadata["provenance"].keys() >= PROVENANCE_KEYS


def test_calibration_smaller_than_one_over_fpr_warns_and_reports_the_realised_rate():
    calibration = np.arange(5.0)  # 5 < 1 / 0.05
    test = np.array([0.5, 4.5, 10.0, -1.0])
    with pytest.warns(UserWarning, match="cannot calibrate a false-positive rate of 0.05"):
        op = tpr_at_fpr([5.0, 3.0], calibration, test, fpr=0.05)
    # Threshold = the largest calibration score, 4: two of the four held-out scores exceed it.
    assert op["threshold"] == 4.0 and op["fpr_held_out"] == 0.5 and op["n_calibration"] == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tpr_at_fpr([5.0], np.arange(20.0), test, fpr=0.05)


def test_class_mean_reader_is_an_independent_digit_reader():
    data = load_digits_data()
    reader = ClassMeanReader(data)
    accuracy = (reader(data.test_images) == data.test_labels).double().mean().item()
    # Nearest-centroid on the 8x8 digits is a classical ~90% reader (scikit-learn's NearestCentroid
    # scores 0.90 on this data set); 0.85 leaves room for the split.
    assert accuracy > 0.85


def test_rebalance_records_the_judge_and_its_reading():
    mixture = two_gaussians(4.0)
    judge = lambda x: mixture.bayes_label(x)  # noqa: E731  (same rule as the selector: must agree)
    result = rebalance(mixture, 40, "bayes", 2, 0.8, n_candidates=3, seed=1, judge=judge)
    assert np.allclose(result.judged_after, result.after) and np.allclose(result.judged_before, result.before)
    assert result.tv_judged_after == pytest.approx(0.5 * np.abs(result.after - result.target).sum())
    assert result.metadata["feature"] == "bayes" and result.metadata["judge"] is not None
    assert result.metadata["fork_time_requested"] == 0.8 and result.metadata["seed"] == 1


# ----------------------------------------------------------------------------- notebook (items 4, 5)
def test_short_reprs_html_and_frames(clone_result):
    estimate = estimate_window(clone_result)
    for obj in (estimate, clone_result):
        text = repr(obj)
        assert "\n" not in text and len(text) <= 300
        assert obj._repr_html_().startswith("<table>")
    frame = clone_result.to_pandas()
    assert list(frame.columns) == list(SHARED_COLUMNS)
    assert len(frame) == clone_result.clone_labels.numel()
    curve = estimate.to_pandas()
    assert np.allclose(curve["c"], estimate.c) and list(curve["t"]) == list(estimate.times)


def test_cloning_and_forward_reverse_tables_share_column_names(clone_result, tmp_path):
    from critwin.experiments.forward_reverse import forward_reverse

    fr = forward_reverse(two_gaussians(4.0), torch.zeros(2, 2), [0.5], n_per_time=2, feature="component")
    assert list(fr.table()) == list(clone_result.table()) == list(SHARED_COLUMNS)
    assert fr.metadata["provenance"].keys() >= PROVENANCE_KEYS
    # Tables saved with the old cloning names still load.
    clone_result.save(tmp_path)
    table = (tmp_path / "table.csv").read_text().splitlines()
    header = table[0].replace("source_id", "trajectory").replace("replicate", "clone")
    (tmp_path / "table.csv").write_text("\n".join([header.replace("source_label", "own_label"), *table[1:]]))
    loaded = type(clone_result).load(tmp_path)
    assert torch.equal(loaded.own_labels, clone_result.own_labels)


def test_plots_return_axes(clone_result):
    estimate = estimate_window(clone_result)
    audit = MembershipAudit(
        times=np.array([0.1, 1.0]),
        member_curve=np.array([1.0, 0.8]),
        nonmember_curve=np.array([0.9, 0.2]),
        member_scores=np.array([2.0, math.inf]),
        calibration_scores=np.array([0.5]),
        test_scores=np.array([0.4, -math.inf]),
        auc=1.0,
        auc_ci=(1.0, 1.0),
        operating_point={"tpr": 1.0, "target_fpr": 0.05, "fpr_held_out": 0.0},
    )
    for obj in (estimate, audit):
        ax = obj.plot()
        assert isinstance(ax, Axes) and ax.get_xlabel() == "OU time t"
        matplotlib.pyplot.close(ax.figure)
    assert len(repr(audit)) <= 300
    assert list(audit.to_pandas()["group"]) == ["member", "member", "calibration", "held_out", "held_out"]
    censored = json.loads(json_text(audit.to_dict()))["member_scores"][1]
    assert censored == {"value": None, "censored": "above"}


def test_provenance_names_versions_device_dtype_and_time():
    record = provenance("cuda:0", torch.float16, call="critwin sweep")
    assert record.keys() == PROVENANCE_KEYS
    assert record["torch"] == torch.__version__ and record["dtype"] == "float16"
    assert record["device"] == "cuda:0" and record["call"] == "critwin sweep"
    assert record["utc"].endswith("+00:00")


# --------------------------------------------------------------------------------------- GPU path (9)
class _RecordingVAE(torch.nn.Module):
    """A VAE stand-in on the ``meta`` device that records what each decode call receives."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, device="meta"))
        self.config = {"scaling_factor": 2.0}
        self.seen = []

    @property
    def dtype(self):
        return self.weight.dtype

    def decode(self, x, return_dict=False):
        self.seen.append((x.device.type, x.dtype, x.shape[0]))
        return (x,)


def test_vae_batches_move_to_the_vae_device_and_dtype():
    from critwin.adapters.diffusers.guidance import vae_decode

    vae = _RecordingVAE()
    out = vae_decode(vae, torch.zeros(5, 4, 2, 2, dtype=torch.float64), batch_size=2)
    # CPU float64 sources reach a float32 VAE on another device in its device and dtype, 2 rows a call.
    assert vae.seen == [("meta", torch.float32, 2), ("meta", torch.float32, 2), ("meta", torch.float32, 1)]
    assert out.device.type == "meta" and out.shape == (5, 4, 2, 2)
