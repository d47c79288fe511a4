"""Categorical mixture files (``kind: categorical``) and ``critwin window``/``hierarchy`` on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from critwin import CategoricalMixture, load_mixture, save_mixture, window_two_strings
from critwin.cli import main
from critwin.io_mixture import mixture_to_dict

ROOT = Path(__file__).resolve().parents[1]
TWO_STRINGS = str(ROOT / "examples" / "two_strings.json")


def _run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("noise", ["mask", "uniform", "autoregressive"])
def test_round_trip(tmp_path, suffix, noise):
    dirac = CategoricalMixture.from_strings([[0, 1, 2], [2, 2, 0]], [0.25, 0.75], vocab_size=4, noise=noise)
    probs = torch.tensor([[[0.5, 0.5], [0.1, 0.9]], [[1.0, 0.0], [0.3, 0.7]]], dtype=torch.float64)
    product = CategoricalMixture(probs, noise=noise)
    for m in (dirac, product):
        path = tmp_path / f"m{suffix}"
        save_mixture(m, path)
        back = load_mixture(path)
        assert isinstance(back, CategoricalMixture) and back.noise == noise and back.is_dirac == m.is_dirac
        assert torch.allclose(back.probs, m.probs, atol=1e-15) and torch.allclose(back.weights, m.weights)
    assert "strings" in mixture_to_dict(dirac) and "probs" in mixture_to_dict(product)


def test_the_example_file_is_example_3():
    m = load_mixture(TWO_STRINGS)
    assert m.is_dirac and m.length == 10 and int((m.strings[0] != m.strings[1]).sum()) == 10


BAD = [
    ({"kind": "discrete", "vocab_size": 2, "strings": [[0]]}, "mixture field 'kind' must be one of"),
    ({"kind": "categorical", "strings": [[0, 1]]}, "'vocab_size' must be an integer >= 1 (required)"),
    ({"kind": "categorical", "vocab_size": 2}, "exactly one of the fields 'strings' and 'probs'"),
    ({"kind": "categorical", "vocab_size": 2, "strings": [[0]], "probs": [[[1, 0]]]}, "exactly one"),
    (
        {"kind": "categorical", "vocab_size": 2, "strings": [[0, 2]]},
        "strings must hold token ids in [0, vocab_size)",
    ),
    ({"kind": "categorical", "vocab_size": 2, "strings": [[0, 1.5]]}, "'strings' must be integer token ids"),
    ({"kind": "categorical", "vocab_size": 2, "strings": [[0, 1], [0]]}, "rows of equal lengths"),
    ({"kind": "categorical", "vocab_size": 3, "probs": [[[0.5, 0.5]]]}, "(vocabulary mismatch)"),
    ({"kind": "categorical", "vocab_size": 2, "probs": [[[0.5, 0.6]]]}, "must sum to 1"),
    (
        {"kind": "categorical", "vocab_size": 2, "strings": [[0, 1]], "weights": [1, 1]},
        "'weights' must have 1",
    ),
    ({"kind": "categorical", "vocab_size": 2, "strings": [[0, 1]], "noise": "gauss"}, "noise must be one of"),
    ({"kind": "categorical", "vocab_size": 2, "strings": [[0, 1]], "means": [[0]]}, "unknown mixture field"),
]


@pytest.mark.parametrize("spec,needle", BAD)
def test_bad_files_name_the_field(tmp_path, spec, needle):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="mixture file") as info:
        load_mixture(path)
    assert needle in str(info.value)


def test_window_command_on_two_strings(capsys):
    code, out, err = _run(["window", TWO_STRINGS, "--after", "0", "--json"], capsys)
    assert code == 0, err
    win = json.loads(out)["window"]
    closed = window_two_strings(10, 0.1)
    assert win["clock"] == "kappa" and json.loads(out)["transition_times"]["clock"] == "kappa"
    assert abs(win["t_after"] - closed.t_after) < 1e-12 and abs(win["t_before"] - closed.t_before) < 1e-12
    code, out, _ = _run(["window", TWO_STRINGS, "--after", "0"], capsys)
    assert code == 0 and "kappa" in out and "0.6310" in out and "0.9779" in out


def test_hierarchy_command_on_two_strings(tmp_path, capsys):
    code, out, err = _run(["hierarchy", TWO_STRINGS, "--json", "--plot", str(tmp_path / "t.png")], capsys)
    assert code == 0, err
    tree = json.loads(out)
    assert tree["clock"] == "kappa" and tree["root"]["children"][0]["window"]["clock"] == "kappa"
    assert (tmp_path / "t.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["window", "{bad}", "--after", "0"], "strings must hold token ids"),
        (["hierarchy", TWO_STRINGS, "--method", "fast"], "method='fast' is for Gaussian mixtures"),
        (["window", TWO_STRINGS, "--after", "2"], "unknown component 2"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, needle):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "categorical", "vocab_size": 2, "strings": [[0, 3]]}))
    code, _, err = _run([a.replace("{bad}", str(bad)) for a in argv], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("critwin: error: ") and needle in lines[0], (
        err
    )


def test_the_discrete_docs_page_runs():
    """docs/discrete.md's Python blocks, run in order (they assert the engine against the closed forms)."""
    import re

    page = (ROOT / "docs" / "discrete.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", page, re.S))
    assert "window_two_strings" in code
    exec(compile(code, "docs/discrete.md", "exec"), {})
