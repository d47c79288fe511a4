"""Bad input to every CLI command: exit status 2, one line ``critwin: error: ...`` naming the option or
path, and no work done first (issue 11). Runs in-process through :func:`critwin.cli.main` (the same
error path as the ``critwin`` executable), so hundreds of cases take seconds; a model is never loaded
(``sweep`` points ``--model`` at a missing directory, checked only after every option).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from critwin.cli import main

ROOT = Path(__file__).resolve().parents[1]
MIXTURE = str(ROOT / "examples" / "two_gaussians.yaml")
NOWHERE = "{tmp}/no-such-model"


def _run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.err


def _expect_one_line_error(argv, capsys, needle):
    code, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("critwin: error: "), err
    assert needle in lines[0], err
    return lines[0]


NUMBERS = {"zero": "0", "negative": "-1", "text": "abc"}
PROBABILITY_LIKE = ["0", "1", "-0.5", "1.5", "nan", "inf"]

CASES: list[tuple[list[str], str]] = []

# window / hierarchy: eps in (0, 1), draws >= 1, component sets
for command, extra in (("window", ["--after", "0"]), ("hierarchy", [])):
    CASES += [([command, MIXTURE, *extra, "--eps", v], "--eps") for v in PROBABILITY_LIKE + ["x"]]
    CASES += [([command, MIXTURE, *extra, "--n", v], "--n") for v in NUMBERS.values()]
    CASES += [([command, MIXTURE, *extra, "--seed", "x"], "--seed")]
    CASES += [([command, "{tmp}/missing.yaml", *extra], "missing.yaml")]
    CASES += [([command, MIXTURE, *extra, "--bogus"], "--bogus")]
CASES += [(["window", MIXTURE, "--after", v], "--after") for v in ("", ",", "a", "0,x")]
CASES += [(["window", MIXTURE, "--after", "0", "--before", v], "--before") for v in ("", "b", "0,?")]
CASES += [(["window", MIXTURE], "--after")]
CASES += [(["hierarchy", MIXTURE, "--plot", "{tmp}"], "--plot")]

# validate
CASES += [(["validate", "--eps", v, "--out", "{tmp}/v"], "--eps") for v in PROBABILITY_LIKE]
CASES += [(["validate", "--out", "{file}"], "--out"), (["validate", "--seed", "1.5"], "--seed")]

# estimate
EST = ["estimate", "{result}"]
CASES += [([*EST, "--delta", v], "--delta") for v in ("0", "0.5", "0.7", "-0.1", "nan", "inf", "x")]
CASES += [([*EST, "--n-boot", v], "--n-boot") for v in ("-1", "1.5", "x")]
CASES += [([*EST, "--base-rate", v], "--base-rate") for v in ("1", "-0.1", "nan", "2", "x")]
CASES += [([*EST, "--level", v], "--level") for v in PROBABILITY_LIKE]
CASES += [([*EST, "--out", "{tmp}"], "--out"), (["estimate", "{tmp}/none"], "none")]

# privacy
CASES += [(["privacy", "--model", v], "--model") for v in ("nope", "digits-tiny", "")]
CASES += [(["privacy", "--members", v], "--members") for v in ("0", "-3", "5000", "x")]
CASES += [(["privacy", "--nonmembers", v], "--nonmembers") for v in ("0", "1", "100000", "x")]
CASES += [(["privacy", "--times", v], "--times") for v in ("", "-1", "abc", "0.1,nan", "0.1,inf", ",")]
CASES += [(["privacy", "--steps", v], "--steps") for v in NUMBERS.values()]
CASES += [(["privacy", "--replicates", v], "--replicates") for v in NUMBERS.values()]
CASES += [(["privacy", "--out", "{tmp}"], "--out"), (["privacy", "--seed", "x"], "--seed")]

# fairness
CASES += [(["fairness", "--fork-time", v], "--fork-time") for v in ("0", "-1", "nan", "inf", "x")]
CASES += [(["fairness", "--n", v], "--n") for v in NUMBERS.values()]
CASES += [(["fairness", "--candidates", v], "--candidates") for v in ("1", "0", "-2", "x")]
CASES += [(["fairness", "--steps", v], "--steps") for v in NUMBERS.values()]
CASES += [(["fairness", "--target", v], "--target") for v in ("0.5,0.5", "x", "", ",".join(["-0.1"] * 10))]
CASES += [(["fairness", "--out", "{tmp}"], "--out")]

# train
CASES += [(["train", v], "MODEL") for v in ("nope", "digits-huge")]
CASES += [
    (["train", "digits", f"--{o}", v], f"--{o}") for o in ("steps", "batch-size") for v in NUMBERS.values()
]
CASES += [(["train", "digits", "--learning-rate", v], "--learning-rate") for v in ("0", "-1", "nan", "x")]
CASES += [(["train", "classifier", "--epochs", v], "--epochs") for v in NUMBERS.values()]
CASES += [
    (["train", "classifier", f"--{o}", "3"], f"--{o}") for o in ("steps", "batch-size", "learning-rate")
]
CASES += [(["train", "digits", f"--{o}", "-1"], f"--{o}") for o in ("eval-every", "unconditional-samples")]
CASES += [
    (["train", "digits", f"--{o}", "0"], f"--{o}") for o in ("eval-samples", "inference-steps", "threads")
]
CASES += [(["train", "digits", "--classifier-dir", "{tmp}/none"], "--classifier-dir")]
CASES += [(["train", "digits", "--out", "{file}"], "--out")]

# demo
CASES += [(["demo", "--eps", v, "--out", "{tmp}/d"], "--eps") for v in ("0", "1", "nan", "x")]
CASES += [(["demo", "--out", "{file}"], "--out"), (["demo", "--out", "{foreign}"], "{foreign}")]

# sweep: every option is checked before the (missing) model is looked at
SW = ["sweep", "--model", NOWHERE, "--out", "{tmp}/o", "--no-progress"]
ADAPTIVE = [*SW, "--adaptive"]
CLONE = [*SW, "--experiment", "clone"]
CASES += [([*SW, "--experiment", v], "--experiment") for v in ("nope", "forward_reverse", "")]
for option in ("steps", "n", "n-per-time", "height", "width", "chunk-size"):
    CASES += [([*SW, f"--{option}", v], f"--{option}") for v in NUMBERS.values()]
CASES += [([*CLONE, "--n-clones", v], "--n-clones") for v in NUMBERS.values()]
# terabytes of tables: refused by the memory guard before the model loads
CASES += [([*SW, "--n-per-time", "1000000000000"], "--n-per-time 1000000000000 at 26 times would allocate")]
CASES += [([*SW, "--n", "1000000000000", "--times", "1"], "--n 1000000000000 sources")]
CASES += [([*CLONE, "--n-clones", "1000000000000"], "--n-clones 1000000000000 at 26 times would allocate")]
CASES += [([*ADAPTIVE, f"--{o}", "0"], f"--{o}") for o in ("probe-batch", "max-per-probe")]
CASES += [([*ADAPTIVE, "--resolution", v], "--resolution") for v in ("0", "-1", "nan", "inf")]
CASES += [([*ADAPTIVE, "--ci-half-width", v], "--ci-half-width") for v in ("0", "-1", "nan", "inf", "x")]
CASES += [([*SW, "--ci-half-width", "0.05"], "--ci-half-width")]
CASES += [([*SW, "--class-label", "-1"], "--class-label")]
CASES += [([*SW, "--class-label", "1", "--null-label", "-1"], "--null-label")]
CASES += [([*SW, "--guidance", v], "--guidance") for v in ("-1", "nan", "x")]
CASES += [([*SW, "--delta", v], "--delta") for v in ("0", "0.5", "2", "-0.1", "nan")]
CASES += [([*SW, "--device", v], "--device") for v in ("tpu", "foo", "meta", "xla")]
CASES += [([*SW, "--dtype", v], "--dtype") for v in ("float8", "int64", "")]
CASES += [([*SW, "--scheduler", v], "--scheduler") for v in ("nope", "pndm", "DDPMPipeline")]
CASES += [([*SW, "--times", v], "--times") for v in ("abc", "-1", "", "0.1,nan", "inf")]
CASES += [([*SW, "--feature", v], "--feature") for v in ("nope", "os:sep", "no_such_module_xyz:f", "os:nope")]
CASES += [([*SW, "--feature", "clip"], "--feature clip")]
CASES += [([*SW, "--x0", v], "--x0") for v in ("{tmp}/none.pt", "{file}")]
CASES += [([*SW, "--prompt-embeds", "{tmp}/none.safetensors"], "{tmp}/none.safetensors")]
CASES += [([*SW, "--prompt", "a", "--prompt-embeds", "{file}"], "--prompt-embeds")]
CASES += [([*SW, "--negative-prompt", "a"], "--negative-prompt")]
CASES += [([*SW, "--times", "1", "--adaptive"], "--adaptive"), ([*CLONE, "--adaptive"], "--adaptive")]
# options that this run would ignore are refused, not dropped
CASES += [([*SW, f"--{o}", "5"], f"--{o}") for o in ("probe-batch", "max-per-probe", "n-clones")]
CASES += [([*SW, "--resolution", "0.1"], "--resolution"), ([*CLONE, "--n-per-time", "2"], "--n-per-time")]
CASES += [([*ADAPTIVE, "--chunk-size", "4"], "--chunk-size"), ([*SW, "--labels", "a,b"], "--labels")]
CASES += [([*SW, "--clip-arch", "ViT-B-32"], "--clip-arch"), ([*SW, "--null-label", "0"], "--null-label")]
CASES += [([*SW, "--clip-weights", "{file}"], "--clip-weights")]
CASES += [
    ([*SW, "--out", "{file}"], "--out"),
    ([*SW, "--seed", "x"], "--seed"),
    ([*SW, "--bogus"], "--bogus"),
]
CASES += [([*SW, "--out", "{foreign}"], "{foreign}")]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "file").write_text("a regular file\n")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not critwin's")
    result = root / "result"
    from critwin.experiments.forward_reverse import forward_reverse
    from two_gaussian_oracle import two_gaussians

    mixture = two_gaussians(4.0)
    x0, _ = mixture.sample(4, generator=torch.Generator().manual_seed(0))
    forward_reverse(mixture, x0, [0.0, 1.0, 3.0], n_per_time=2, seed=0, progress=False).save(result)
    return {"tmp": str(root), "file": str(root / "file"), "foreign": str(foreign), "result": str(result)}


def _fill(items, paths):
    return [item.format(**paths) for item in items]


def test_the_suite_is_large_enough():
    assert len(CASES) >= 200


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_bad_input_is_one_line_naming_the_option(paths, capsys, argv, needle):
    # Nothing is loaded or computed before the error: the missing --model is never reached.
    line = _expect_one_line_error(_fill(argv, paths), capsys, needle.format(**paths))
    assert "no-such-model" not in line


# -------------------------------------------------------------------- unwritable outputs, every command
UNWRITABLE = [
    (["hierarchy", MIXTURE, "--plot", "{out}/tree.png"]),
    (["validate", "--quick", "--out", "{out}"]),
    (["sweep", "--model", NOWHERE, "--out", "{out}"]),
    (["estimate", "{result}", "--out", "{out}/estimate.json"]),
    (["privacy", "--out", "{out}/privacy.json"]),
    (["fairness", "--out", "{out}/fairness.json"]),
    (["train", "digits", "--out", "{out}"]),
    (["demo", "--out", "{out}"]),
]


@pytest.mark.parametrize("argv", UNWRITABLE, ids=[a[0] for a in UNWRITABLE])
@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_output_is_one_line_naming_the_path_before_any_work(paths, capsys, argv, where):
    # Tests run as root here, and chmod does not stop root: a path below a regular file, or inside
    # /proc, gives a real OSError for any user.
    out = f"{paths['file']}/sub" if where == "under-a-file" else "/proc/critwin-test/sub"
    if where == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    line = _expect_one_line_error([a.format(out=out, **paths) for a in argv], capsys, out.split("/sub")[0])
    assert "no-such-model" not in line


def test_an_os_error_mid_run_is_one_line_naming_the_path(paths, capsys, tmp_path):
    """The catch-all in main: an OSError that no check foresaw still becomes one line and status 2."""
    bad = tmp_path / "r"
    bad.mkdir()
    (bad / "table.csv").mkdir()  # a directory where a file is expected: open() raises IsADirectoryError
    (bad / "metadata.json").write_text(json.dumps({"kind": "forward_reverse"}))
    _expect_one_line_error(["estimate", str(bad)], capsys, str(bad / "table.csv"))


BAD_INDEX = {
    "list": ("[]", "must hold a JSON object"),
    "truncated": ('{"_class_name": "DDPM', "is not valid JSON"),
    "not-utf8": (b"\xff\xfe{}", "is not valid JSON"),
    "unknown-scheduler": (
        '{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], '
        '"scheduler": ["diffusers", "NoSuchScheduler"]}',
        "unknown scheduler class 'NoSuchScheduler'",
    ),
    "unknown-unet": (
        '{"_class_name": "DDPMPipeline", "unet": ["diffusers", "NoSuchUNet"], '
        '"scheduler": ["diffusers", "DDPMScheduler"]}',
        "could not load the diffusers model",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEX))
def test_corrupt_model_index_names_the_file(tmp_path, capsys, case):
    content, message = BAD_INDEX[case]
    model = tmp_path / "model"
    model.mkdir()
    index = model / "model_index.json"
    index.write_bytes(content if isinstance(content, bytes) else content.encode())
    if case == "unknown-unet":
        (model / "scheduler").mkdir()
        (model / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler"}')
    argv = ["sweep", "--model", str(model), "--out", str(tmp_path / "o"), "--no-progress"]
    line = _expect_one_line_error(argv, capsys, message)
    assert str(model) in line


# ------------------------------------------------------------------- output files critwin did not write
FILE_OUTPUTS = [
    (["hierarchy", MIXTURE, "--no-windows", "--out", "{target}"], "--out", "hierarchy"),
    (["hierarchy", MIXTURE, "--no-windows", "--plot", "{target}"], "--plot", "png"),
    (["estimate", "{result}", "--n-boot", "10", "--out", "{target}"], "--out", "estimate"),
    (
        ["privacy", "--members", "2", "--nonmembers", "4", "--steps", "2", "--out", "{target}"],
        "--out",
        "privacy",
    ),
    (["fairness", "--n", "4", "--steps", "2", "--out", "{target}"], "--out", "fairness"),
]


@pytest.mark.parametrize("argv, option, kind", FILE_OUTPUTS, ids=[k for _, _, k in FILE_OUTPUTS])
def test_a_file_critwin_did_not_write_is_never_replaced(paths, capsys, tmp_path, argv, option, kind):
    target = tmp_path / ("user.png" if kind == "png" else "user.json")
    target.write_text('{"my": "notes"}')
    line = _expect_one_line_error(
        _fill([a.replace("{target}", str(target)) for a in argv], paths), capsys, option
    )
    assert str(target) in line and f"not a critwin {kind} output" in line
    assert target.read_text() == '{"my": "notes"}'


def test_a_file_critwin_wrote_is_replaced_by_the_next_run(paths, capsys, tmp_path):
    out, plot = tmp_path / "tree.json", tmp_path / "tree.png"
    argv = ["hierarchy", MIXTURE, "--no-windows", "--out", str(out), "--plot", str(plot)]
    for _ in range(2):
        code, err = _run(argv, capsys)
        assert code == 0, err
    assert json.loads(out.read_text())["critwin"]["output"] == "hierarchy"


# ------------------------------------------------- fairness and privacy: refused before any model loads
HUGE = "1000000000000"
SEEDS = ["-1", "1.5", "a", "18446744073709551616", ""]
BEFORE_LOADING: list[tuple[list[str], str]] = []
for command, model in (("fairness", []), ("fairness", ["--model", "shapes", "--attribute", "shape"])):
    BEFORE_LOADING += [([command, *model, "--n", v], "--n") for v in ("0", "-3", "1e12", "x")]
    BEFORE_LOADING += [
        ([command, *model, "--n", HUGE], f"--n {HUGE} x --candidates 4 samples would allocate")
    ]
    BEFORE_LOADING += [
        ([command, *model, "--candidates", HUGE], f"--candidates {HUGE} samples would allocate")
    ]
    BEFORE_LOADING += [([command, *model, "--steps", v], "--steps") for v in ("0", "-1", "2.5", "x", HUGE)]
    BEFORE_LOADING += [
        ([command, *model, "--seed", v], "--seed must be an integer in [0, 2**63)") for v in SEEDS
    ]
BEFORE_LOADING += [(["fairness", "--model", "shapes", "--attribute", v], "--attribute") for v in ("x", "")]
BEFORE_LOADING += [(["fairness", "--model", "shapes-biased"], "--attribute is required")]
T2I_FAIR = ["fairness", "--model", "{pipe}", "--prompt", "a circle", "--attribute"]
BEFORE_LOADING += [([*T2I_FAIR, "nope"], "--attribute must be one of")]
BEFORE_LOADING += [([*T2I_FAIR, "background", "--n", v], "--n") for v in ("0", "-3", "1e12", HUGE)]
BEFORE_LOADING += [([*T2I_FAIR, "background", "--steps", v], "--steps") for v in ("0", HUGE)]
BEFORE_LOADING += [([*T2I_FAIR, "background", "--seed", v], "--seed") for v in SEEDS]
BEFORE_LOADING += [([*T2I_FAIR, "background", "--guidance", v], "--guidance") for v in ("nan", "-1")]
BEFORE_LOADING += [(["privacy", "--steps", HUGE], f"--steps {HUGE} would allocate")]
BEFORE_LOADING += [(["privacy", "--replicates", HUGE], f"--replicates {HUGE} x 60 images x 5 times")]
BEFORE_LOADING += [(["privacy", "--seed", v], "--seed") for v in SEEDS]
BEFORE_LOADING += [(["text", "--sources", HUGE], f"--sources {HUGE} x --replicates")]
BEFORE_LOADING += [(["text", "--boot", HUGE], f"--boot {HUGE} bootstrap replicates")]
PROMPTS = {
    "empty": (b"", "holds no prompts"),
    "not-utf8": (b"a circle\n\xff\xfe\n", "not UTF-8 text"),
    "duplicates": (b"a circle\na square\na circle\n", "prompt 3 'a circle' repeats prompt 1"),
    "too-long": (b"a circle\n" + b" ".join([b"circle"] * 40) + b"\n", "the tokenizer's limit is 16"),
}
T2I_PRIV = ["privacy", "--model", "{pipe}"]
for kind, (_, message) in PROMPTS.items():
    BEFORE_LOADING += [([*T2I_PRIV, "--members", f"{{{kind}}}", "--non-members", "{four}"], message)]
    BEFORE_LOADING += [([*T2I_PRIV, "--members", "{four}", "--non-members", f"{{{kind}}}"], message)]
    BEFORE_LOADING += [
        (
            [*T2I_PRIV, "--members", "{four}", "--non-members", "{four}", "--calibration", f"{{{kind}}}"],
            message,
        )
    ]
GOOD_PRIV = [*T2I_PRIV, "--members", "{four}", "--non-members", "{four}"]
BEFORE_LOADING += [
    ([*T2I_PRIV, "--members", "{four}", "--non-members", "{two}"], "--non-members needs at least 4")
]
BEFORE_LOADING += [([*GOOD_PRIV, "--calibration", "{one}"], "--calibration needs at least 2 prompts")]
BEFORE_LOADING += [
    ([*GOOD_PRIV, f"--{o}", HUGE], f"--{o} {HUGE}") for o in ("steps", "generations", "trajectories")
]
BEFORE_LOADING += [
    ([*GOOD_PRIV, "--steps", "0"], "--steps"),
    ([*GOOD_PRIV, "--guidance", "nan"], "--guidance"),
]
BEFORE_LOADING += [([*GOOD_PRIV, "--seed", v], "--seed") for v in SEEDS]


@pytest.fixture(scope="module")
def prompt_inputs(tmp_path_factory):
    """A tiny text-to-image pipeline directory (its tokenizer's limit: 16 tokens) and prompts files."""
    from tiny_models import tiny_stable_diffusion_with_text

    root = tmp_path_factory.mktemp("prompt_refusals")
    (root / "tok").mkdir()
    tiny_stable_diffusion_with_text(root / "tok").save_pretrained(root / "pipe", safe_serialization=True)
    files = {"pipe": str(root / "pipe")}
    contents = {kind: content for kind, (content, _) in PROMPTS.items()}
    contents.update(one=b"zz\n", two=b"a circle\na square\n", four=b"aa\nbb\ncc\ndd\n")
    for kind, content in contents.items():
        (root / f"{kind}.txt").write_bytes(content)
        files[kind] = str(root / f"{kind}.txt")
    return files


@pytest.fixture
def no_loading(monkeypatch):
    """Every model loader of fairness and privacy raises: a case that reaches one fails loudly."""
    import critwin.diagnostics.prompt_shapes as prompt_shapes
    import critwin.models.digits as digits
    import critwin.models.shapes as shapes

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the option was checked")

    for module, name in ((digits, "load_digits_model"), (shapes, "load_shapes_model")):
        monkeypatch.setattr(module, name, loaded)
    monkeypatch.setattr(prompt_shapes, "load_prompt_model", loaded)
    import critwin.cli.text as text_cli

    monkeypatch.setattr(text_cli, "load_text", loaded)


@pytest.mark.parametrize(
    "argv, needle", BEFORE_LOADING, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BEFORE_LOADING]
)
def test_fairness_and_privacy_refuse_before_loading_a_model(prompt_inputs, no_loading, capsys, argv, needle):
    _expect_one_line_error(_fill(argv, prompt_inputs), capsys, needle)
