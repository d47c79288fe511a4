"""``critwin train``: end to end on a tiny model, and one clear error per kind of bad input."""

import json

import pytest
import torch

from critwin.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "mnist"], "MODEL must be one of"),
        (["train", "digits", "--steps", "-5"], "--steps must be >= 1"),
        (["train", "digits", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["train", "digits", "--learning-rate", "-0.1"], "--learning-rate must be > 0"),
        (["train", "digits", "--eval-samples", "0"], "--eval-samples must be >= 1"),
        (["train", "classifier", "--steps", "3"], "--steps does not apply"),
        (["train", "classifier", "--epochs", "0"], "--epochs must be >= 1"),
        (["train", "digits", "--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, capsys, tmp_path):
    code, _, err = run_cli(args + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_directory(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run_cli(["train", "digits-tiny", "--out", str(target)], capsys)
    assert code == 2 and "--out must be a directory" in err


def test_tiny_training_writes_weights_and_a_card_that_load(capsys, tmp_path):
    from critwin.models.digits import load_digits_model

    out = tmp_path / "weights"
    args = [
        "train",
        "digits-tiny",
        "--out",
        str(out),
        "--steps",
        "20",
        "--eval-every",
        "20",
        "--eval-samples",
        "2",
        "--unconditional-samples",
        "10",
        "--inference-steps",
        "25",
        "--seed",
        "3",
        "--no-progress",
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "step     10" in printed and "step     20" in printed and "conditional accuracy" in printed
    card = json.loads((out / "digits-tiny.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["digits-tiny.json", "digits-tiny.safetensors"]
    assert card["training"]["steps"] == 20 and card["config"]["seed"] == 3
    assert 0.0 <= card["conditional_accuracy"] <= 1.0
    assert card["metrics"]["n_conditional_samples"] == 20
    assert sum(card["metrics"]["unconditional_class_counts"]) == 10
    assert [entry["step"] for entry in card["training"]["history"]] == [2 * k for k in range(1, 11)]
    assert "conditional_accuracy_quick" in card["training"]["history"][-1]
    assert "conditional_accuracy_quick" not in card["training"]["history"][4]
    model = load_digits_model("digits-tiny", out)
    assert model.config.steps == 20 and model.card["weights_sha256"] == card["weights_sha256"]


def test_weights_and_card_are_replaced_together_or_not_at_all(tmp_path):
    from critwin.models._store import load_card, save_weights

    save_weights("m", {"w": torch.ones(3)}, {"config": {}, "n": 1}, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # The card cannot be written (a value JSON cannot hold) after the new weights were: the old pair stays.
    with pytest.raises((TypeError, ValueError)):
        save_weights("m", {"w": torch.zeros(3)}, {"config": {}, "n": object()}, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    save_weights("m", {"w": torch.zeros(3)}, {"config": {}, "n": 2}, tmp_path)
    assert load_card("m", tmp_path)["n"] == 2
