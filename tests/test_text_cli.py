"""Text models on the command line and in the report: train, sweep, atlas, text; bad input; the section.

Tiny models (a few optimiser steps) stand in for the shipped ones: what is checked is the plumbing (files,
clocks, one error line per bad input) and the comparison's bookkeeping (a run against itself differs by
exactly 0), not the models' quality (``test_models_text.py`` checks the shipped cards).
"""

from __future__ import annotations

import json

import pytest
import torch

from critwin.cli import main
from critwin.models.text import PRESETS, load_text_model, train_text_model
from critwin.report.text import TextSizes, compare_levels, paired_differences


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    dirs = {}
    for name in ("rhm-mdm-tiny", "rhm-ar-tiny"):
        dirs[name] = root / name
        train_text_model(
            PRESETS[name].replace(steps=4),
            name,
            dirs[name],
            eval_every=0,
            final_samples=20,
            progress=False,
            log=None,
        )
    return dirs


def test_train_writes_a_text_model_and_refuses_image_options(capsys, tmp_path):
    out = tmp_path / "w"
    code, stdout, _ = run_cli(
        [
            "train",
            "rhm-ar-tiny",
            "--steps",
            "3",
            "--out",
            str(out),
            "--no-progress",
            "--eval-every",
            "0",
            "--unconditional-samples",
            "20",
        ],
        capsys,
    )
    assert code == 0 and "wrote" in stdout
    assert load_text_model("rhm-ar-tiny", out).config.steps == 3
    code, _, err = run_cli(["train", "rhm-mdm-tiny", "--inference-steps", "5", "--out", str(out)], capsys)
    assert code == 2 and "--inference-steps does not apply to the text models" in err


def test_sweep_forward_reverse_clone_and_search_on_text_models(tiny_dirs, capsys, tmp_path):
    mdm, ar = str(tiny_dirs["rhm-mdm-tiny"]), str(tiny_dirs["rhm-ar-tiny"])
    args = [
        "sweep",
        "--model",
        mdm,
        "--out",
        str(tmp_path / "fr"),
        "--n",
        "6",
        "--n-per-time",
        "2",
        "--times",
        "0,0.5,1",
        "--no-progress",
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "clock kappa" in stdout and "class" in stdout
    metadata = json.loads((tmp_path / "fr" / "metadata.json").read_text())
    assert metadata["clock"] == "kappa" and set(metadata["feature"]) == {
        "class",
        "level1",
        "level2",
        "string",
    }
    code, stdout, err = run_cli(
        [
            "sweep",
            "--model",
            ar,
            "--out",
            str(tmp_path / "cl"),
            "--experiment",
            "clone",
            "--n",
            "4",
            "--feature",
            "class",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "cl" / "metadata.json").read_text())["clock"] == "hidden"
    code, stdout, err = run_cli(
        [
            "sweep",
            "--model",
            ar,
            "--out",
            str(tmp_path / "s"),
            "--adaptive",
            "--n",
            "4",
            "--probe-batch",
            "8",
            "--max-per-probe",
            "16",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "s" / "search.json").read_text())["clock"] == "hidden"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", "a cat"], "--prompt does not apply to the text models"),
        (["--feature", "colour"], "--feature must be a level of the grammar"),
        (["--times", "0.5,1.5"], r"times[1] (kappa, a masking level) must lie in [0, 1]"),
        (["--dtype", "float16"], "--dtype: the text models run in float32"),
    ],
)
def test_sweep_bad_input_on_a_text_model_is_one_line(tiny_dirs, extra, message, capsys, tmp_path):
    args = ["sweep", "--model", str(tiny_dirs["rhm-mdm-tiny"]), "--out", str(tmp_path / "o"), "--n", "2"]
    code, _, err = run_cli(args + extra + ["--no-progress"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_atlas_and_text_commands(tiny_dirs, capsys, tmp_path):
    args = [
        "atlas",
        "--model",
        str(tiny_dirs["rhm-ar-tiny"]),
        "--quick",
        "--boot",
        "5",
        "--json",
        "--no-progress",
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["metadata"]["clock"] == "hidden" and set(report["features"]) == {
        "class",
        "level1",
        "level2",
        "string",
    }
    assert report["theory"]["clock"] == "hidden" and "like_for_like" in report["features"]["class"]
    args = [
        "text",
        "--model",
        str(tiny_dirs["rhm-ar-tiny"]),
        "--sources",
        "6",
        "--replicates",
        "2",
        "--boot",
        "5",
        "--json",
        "--out",
        str(tmp_path / "t"),
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert [row["level"] for row in report["levels"]] == ["class", "level1", "level2", "string"]
    assert (tmp_path / "t" / "text.json").is_file() and (tmp_path / "t" / "text_levels.png").is_file()
    code, _, err = run_cli(["text", "--model", "shapes"], capsys)
    assert code == 2 and "--model must be a text model" in err


def test_a_run_against_itself_differs_by_zero(tiny_dirs):
    model = load_text_model("rhm-mdm-tiny", tiny_dirs["rhm-mdm-tiny"])
    comparison = compare_levels(model, TextSizes.quick(), seed=0)
    one = {name: comparison.exact.select(name) for name in comparison.levels}
    same = paired_differences(one, one, 20, seed=1)
    for name in comparison.levels:
        assert same[name]["t_half"]["difference"] == 0.0 and same[name]["t_half"]["ci"] == [0.0, 0.0]
    rows = comparison.rows()
    assert {row["clock"] for row in rows} == {"kappa"}
    # The exact curve at kappa = 0 keeps every level, at kappa = 1 keeps it with the base rate only.
    for curve in comparison.curves.values():
        assert curve.c[0] == pytest.approx(1.0) and curve.c[-1] == pytest.approx(curve.b)
    assert torch.all(comparison.network.times >= 0)


def test_the_text_docs_page_runs():
    """docs/text.md's Python blocks, run in order."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "text.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", page, re.S))
    assert "causal_lm_process" in code and "MaskedDiffusionProcess" in code
    exec(compile(code, "docs/text.md", "exec"), {})


@pytest.mark.parametrize("seed", ["-1", "abc", str(2**64)])
def test_text_refuses_a_bad_seed_by_the_one_rule(capsys, seed):
    code, out, err = run_cli(["text", "--model", "rhm-mdm", "--seed", seed], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("critwin: error: --seed must be an integer in [0, 2**63), got")
