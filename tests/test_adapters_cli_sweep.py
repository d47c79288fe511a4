"""``critwin sweep`` on tiny random diffusers pipelines saved to disk: outputs, resume, errors."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from critwin.cli import main

# Tiny schedules with few leading steps start with signal left; that is reported, not under test here.
pytestmark = pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from diffusers import DDPMPipeline, DDPMScheduler, PNDMScheduler
    from safetensors.torch import save_file

    from tiny_models import tiny_stable_diffusion, tiny_unet

    root = tmp_path_factory.mktemp("models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_stable_diffusion(0).save_pretrained(root / "sd")
        DDPMPipeline(unet=tiny_unet(0), scheduler=PNDMScheduler()).save_pretrained(root / "pndm")
        DDPMPipeline(unet=tiny_unet(0), scheduler=DDPMScheduler(clip_sample=False)).save_pretrained(
            root / "ddpm"
        )
    g = torch.Generator().manual_seed(0)
    save_file(
        {
            "prompt_embeds": torch.randn(1, 5, 16, generator=g),
            "negative_prompt_embeds": torch.randn(1, 5, 16, generator=g),
        },
        str(root / "embeds.safetensors"),
    )
    save_file({"prompt_embeds": torch.randn(1, 5, 7, generator=g)}, str(root / "bad_embeds.safetensors"))
    (root / "corrupt.pt").write_bytes(b"not a checkpoint")
    return root


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _run(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_forward_reverse_on_a_pixel_ddpm_pipeline(model_dirs, tmp_path, capsys):
    from diffusers import DDPMScheduler

    out = tmp_path / "fr"
    code, stdout, err = _run(
        [
            "sweep",
            "--model",
            str(model_dirs / "ddpm"),
            "--out",
            str(out),
            "--steps",
            "5",
            "--times",
            "0,0.3,1.5",
            "--n",
            "3",
            "--n-per-time",
            "2",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    rows = _read(out / "table.csv")
    assert len(rows) == 3 * 3 * 2
    ac = DDPMScheduler().alphas_cumprod.double()
    for row in rows:
        if row["step"] not in ("", "None"):
            # The reported OU time is the exact noise level of the reported scheduler timestep.
            assert float(row["t"]) == pytest.approx(-0.5 * math.log(ac[int(row["step"])].item()), rel=1e-9)
    at_zero = [r for r in rows if float(r["requested_t"]) == 0.0]
    assert all(r["label"] == r["source_label"] for r in at_zero)  # t = 0 returns each source itself
    assert "realised_t" in stdout and (out / "sources.safetensors").is_file()
    assert (out / "window.json").is_file() and "window" in stdout
    window = json.loads((out / "window.json").read_text())
    if window["status"] != "empty":  # printed rounded to its intervals, as the saved numbers allow
        from critwin._display import format_ci

        def saved(value):  # a censored time is written {"value": null, "censored": "above"/"below"}
            if isinstance(value, dict):
                return math.inf if value.get("censored") == "above" else -math.inf
            return value

        for name in ("t_after", "t_before"):
            expected = format_ci(saved(window[name]), *(saved(v) for v in window[f"{name}_ci"]))
            assert f"{name} {expected}" in stdout, (name, expected, stdout)
    # DDPM's leading spacing with 5 steps starts at timestep 800, where the signal is not yet gone.
    assert "critwin: note: the schedule's first step (timestep 800)" in err


def _resume_argv(model_dirs, feature: str) -> list[str]:
    """A small guided SD sweep in 6 checkpointed units (2 times x 3 chunks), ``--out`` left to add."""
    return [
        "sweep", "--model", str(model_dirs / "sd"), "--prompt-embeds", str(model_dirs / "embeds.safetensors"),
        "--guidance", "3", "--steps", "4", "--times", "0.2,0.8", "--n", "3", "--n-per-time", "2",
        "--chunk-size", "2", "--feature", feature, "--no-progress",
    ]  # fmt: skip


def test_resume_after_interrupt_gives_the_same_table(model_dirs, tmp_path, capsys, monkeypatch):
    """A sweep interrupted mid-way (Ctrl-C inside the feature) and rerun equals an uninterrupted one."""
    module = tmp_path / "interrupting_feature.py"
    module.write_text(
        "import torch\n"
        "CALLS = {'n': 0, 'stop_at': None}\n"
        "def label(x):\n"
        "    CALLS['n'] += 1\n"
        "    if CALLS['stop_at'] is not None and CALLS['n'] >= CALLS['stop_at']:\n"
        "        raise KeyboardInterrupt\n"
        "    return (x.mean(dim=(1, 2, 3)) > x.mean()).long()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import interrupting_feature

    argv = _resume_argv(model_dirs, "interrupting_feature:label")
    clean = tmp_path / "clean"
    assert _run([*argv, "--out", str(clean)], capsys)[0] == 0
    resumed = tmp_path / "resumed"
    interrupting_feature.CALLS.update(n=0, stop_at=4)  # call 1 labels the sources; calls 2, 3 finish units
    assert _run([*argv, "--out", str(resumed)], capsys)[0] == 130  # typer's exit status for Ctrl-C
    assert not (resumed / "table.csv").exists()
    assert len(list((resumed / "units").glob("*.npz"))) == 2
    interrupting_feature.CALLS.update(stop_at=None)
    assert argv[-1] == "--no-progress"  # the rerun shows progress, as in a terminal, and says it resumed
    code, _, err = _run([*argv[:-1], "--progress", "--out", str(resumed)], capsys)
    assert code == 0 and f"forward-reverse: resumed: 2 of 6 units done ({resumed}" in err
    assert _read(resumed / "table.csv") == _read(clean / "table.csv")
    # Other settings in the same directory are refused instead of mixing results.
    code, _, err = _run([*argv, "--seed", "7", "--out", str(resumed)], capsys)
    assert code == 2 and "different settings" in err


def test_clone_and_adaptive_on_tiny_pipelines(model_dirs, tmp_path, capsys):
    code, _, err = _run(
        [
            "sweep",
            "--model",
            str(model_dirs / "sd"),
            "--prompt-embeds",
            str(model_dirs / "embeds.safetensors"),
            "--guidance",
            "2",
            "--steps",
            "4",
            "--experiment",
            "clone",
            "--times",
            "0.5,1.2",
            "--n",
            "2",
            "--n-clones",
            "2",
            "--scheduler",
            "euler-ancestral",
            "--out",
            str(tmp_path / "clone"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert len(_read(tmp_path / "clone" / "table.csv")) > 0
    argv = [
        "sweep",
        "--model",
        str(model_dirs / "ddpm"),
        "--steps",
        "4",
        "--adaptive",
        "--n",
        "4",
        "--probe-batch",
        "4",
        "--max-per-probe",
        "8",
        "--out",
        str(tmp_path / "search"),
        "--no-progress",
    ]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    assert "t_after" in stdout and (tmp_path / "search" / "search.json").is_file()
    # Rerunning finds the finished search and prints it again without recomputing.
    assert _run(argv, capsys)[1] == stdout

    # --ci-half-width: the search narrows its intervals and says whether it reached the request.
    precise = [*argv[:-3], "--ci-half-width", "0.5", "--out", str(tmp_path / "precise"), "--no-progress"]
    code, stdout, err = _run(precise, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "precise" / "search.json").read_text())["result"]
    assert result["ci_half_width"] == 0.5 and isinstance(result["ci_reached"], bool)
    # Reached: both intervals that narrow (finite); not reached: a note on stderr says which is not.
    if result["ci_reached"]:
        assert all(0.5 * (hi - lo) <= 0.5 for lo, hi in (result["t_after_ci"], result["t_before_ci"]))
    else:
        assert "not reached after" in err
    assert "95% CI" in stdout and "requested half-width 0.5: " in stdout


def test_text_prompt_equals_its_embeddings(tmp_path, capsys):
    """--prompt (tokenizer + text encoder in the model dir) equals --prompt-embeds of that prompt."""
    pytest.importorskip("transformers")
    from safetensors.torch import save_file

    from tiny_models import tiny_clip_tokenizer, tiny_stable_diffusion, tiny_text_encoder

    tokenizer = tiny_clip_tokenizer(tmp_path, model_max_length=16)
    pipe = tiny_stable_diffusion(0)
    pipe.register_modules(text_encoder=tiny_text_encoder(0, vocab_size=len(tokenizer)), tokenizer=tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.save_pretrained(tmp_path / "sd")
    positive, negative = pipe.encode_prompt("a cat", "cpu", 1, True, negative_prompt="blurry")
    save_file(
        {"prompt_embeds": positive, "negative_prompt_embeds": negative}, str(tmp_path / "e.safetensors")
    )
    common = [
        "sweep",
        "--model",
        str(tmp_path / "sd"),
        "--guidance",
        "3",
        "--steps",
        "4",
        "--times",
        "0.3,1",
        "--n",
        "2",
        "--n-per-time",
        "2",
        "--no-progress",
    ]
    code, _, err = _run(
        [*common, "--prompt", "a cat", "--negative-prompt", "blurry", "--out", str(tmp_path / "a")], capsys
    )
    assert code == 0, err
    code, _, err = _run(
        [*common, "--prompt-embeds", str(tmp_path / "e.safetensors"), "--out", str(tmp_path / "b")], capsys
    )
    assert code == 0, err
    assert _read(tmp_path / "a" / "table.csv") == _read(tmp_path / "b" / "table.csv")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "{root}/nowhere"], "does not exist"),
        (["--model", "{tmp}"], "not a diffusers pipeline directory"),
        (
            ["--model", "{root}/sd", "--prompt-embeds", "{root}/bad_embeds.safetensors", "--guidance", "1"],
            "must have shape (batch, seq_len, 16)",
        ),
        (
            ["--model", "{root}/sd", "--prompt-embeds", "{root}/embeds.safetensors", "--scheduler", "pndm"],
            "scheduler must be one of DDPMScheduler",
        ),
        (["--model", "{root}/sd", "--prompt", "a cat"], "needs a tokenizer and text encoder"),
        (["--model", "{root}/pndm"], "saved scheduler PNDMScheduler is not supported; pick one"),
        (["--model", "{root}/ddpm", "--times", "9"], "beyond the sampler's range"),
        (["--model", "{root}/ddpm", "--guidance", "3"], "needs a conditional model"),
        (["--model", "{root}/ddpm", "--times", "1", "--adaptive"], "exclusive"),
        (["--model", "{root}/ddpm", "--feature", "nope"], "--feature must be one of"),
        (["--model", "{root}/ddpm", "--x0", "{root}/corrupt.pt"], "could not read --x0 images"),
        (["--model", "{root}/ddpm", "--times", "0.1,abc"], "list of non-negative OU times, got 'abc'"),
    ],
)
def test_bad_input_exits_2_with_one_line(model_dirs, tmp_path, capsys, extra, message):
    args = [a.format(root=model_dirs, tmp=tmp_path) for a in extra]
    # --n sizes generated sources; with --x0 it would be ignored, and is refused.
    size = [] if "--x0" in extra else ["--n", "1"]
    code, _, err = _run(
        ["sweep", "--out", str(tmp_path / "o"), "--steps", "3", *size, "--no-progress", *args], capsys
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("critwin: error:")]
    assert len(lines) == 1 and message in lines[0], err


def test_guidance_without_negative_embeddings(model_dirs, tmp_path, capsys):
    from safetensors.torch import save_file

    only_positive = tmp_path / "pos.safetensors"
    save_file({"prompt_embeds": torch.zeros(1, 5, 16)}, str(only_positive))
    code, _, err = _run(
        [
            "sweep",
            "--model",
            str(model_dirs / "sd"),
            "--prompt-embeds",
            str(only_positive),
            "--guidance",
            "5",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2 and "without negative_prompt_embeds" in err


@pytest.mark.slow
def test_resume_after_sigkill(model_dirs, tmp_path):
    """The real thing: SIGKILL the CLI process mid-sweep, rerun, and compare with an uninterrupted run."""
    module = tmp_path / "slow_feature.py"
    module.write_text(
        "import time\n"
        "def label(x):\n"
        "    time.sleep(0.5)\n"
        "    return (x.mean(dim=(1, 2, 3)) > x.mean()).long()\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    argv = [sys.executable, "-m", "critwin.cli", *_resume_argv(model_dirs, "slow_feature:label")]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*argv, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list((killed / "units").glob("*.npz"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "table.csv").exists()
    subprocess.run([*argv, "--out", str(killed)], env=env, check=True, capture_output=True)
    subprocess.run([*argv, "--out", str(tmp_path / "clean")], env=env, check=True, capture_output=True)
    assert _read(killed / "table.csv") == _read(tmp_path / "clean" / "table.csv")


def test_sources_of_a_failed_sweep_are_not_reused_with_another_seed(
    model_dirs, tmp_path, capsys, monkeypatch
):
    """Issue 11: a sweep that failed after generating its sources, rerun with another --seed, used to reuse
    them. Now the sources are bound to their settings: the rerun is refused by name, never mixed."""
    module = tmp_path / "failing_feature.py"
    module.write_text(
        "CALLS = {'n': 0, 'fail': True}\n"
        "def label(x):\n"
        "    CALLS['n'] += 1\n"
        "    if CALLS['fail']:\n"
        "        raise ValueError('feature failed')\n"
        "    return (x.mean(dim=(1, 2, 3)) > x.mean()).long()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import failing_feature

    argv = ["sweep", "--model", str(model_dirs / "ddpm"), "--steps", "3", "--times", "0.5", "--n", "2"]
    argv += ["--n-per-time", "1", "--feature", "failing_feature:label", "--no-progress"]
    # A folder the failed run created goes with it (nothing to reuse) ...
    assert _run([*argv, "--out", str(tmp_path / "new")], capsys)[0] == 2
    assert not (tmp_path / "new").exists()
    # ... one that was there keeps what the run wrote (as after a kill): the sources, bound to settings.
    out = tmp_path / "o"
    out.mkdir()
    assert _run([*argv, "--out", str(out)], capsys)[0] == 2  # failed after the sources were written
    assert (out / "sources.safetensors").is_file() and not (out / "config.json").exists()
    failing_feature.CALLS["fail"] = False
    code, _, err = _run([*argv, "--seed", "5", "--out", str(out)], capsys)
    assert code == 2 and "'seed' differs: 0 there, 5 now" in err
    code, _, err = _run([*argv, "--steps", "4", "--out", str(out)], capsys)
    assert code == 2 and "differs" in err and "process" in err
    # With the original settings the run completes and equals a run in a fresh directory.
    assert _run([*argv, "--out", str(out)], capsys)[0] == 0
    assert _run([*argv, "--out", str(tmp_path / "fresh")], capsys)[0] == 0
    assert _read(out / "table.csv") == _read(tmp_path / "fresh" / "table.csv")


def test_sweep_refuses_a_foreign_out_and_ignored_options(model_dirs, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    base = ["sweep", "--model", str(model_dirs / "ddpm"), "--steps", "3", "--n", "1", "--no-progress"]
    code, _, err = _run([*base, "--out", str(tmp_path)], capsys)
    assert code == 2 and "not a critwin output directory" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".critwin") == ["mine.txt"]
    # A pixel-space model fixes the image size: --height is refused, not ignored.
    code, _, err = _run([*base, "--height", "7", "--out", str(tmp_path / "h")], capsys)
    assert code == 2 and "height and width apply to latent (VAE) pipelines only" in err


def test_weights_fingerprint_hashes_bytes_independent_of_threads():
    """Issue 11: the fingerprint summed floats, so a resume under another thread count was refused."""
    from diffusers import DDPMScheduler

    from critwin.adapters.diffusers import DiffusersProcess
    from tiny_models import tiny_unet

    unet = tiny_unet(0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = DiffusersProcess(unet, DDPMScheduler(), 4).weights_fingerprint()
        torch.set_num_threads(2)
        two = DiffusersProcess(unet, DDPMScheduler(), 4).weights_fingerprint()
    finally:
        torch.set_num_threads(threads)
    assert one == two
    # One weight nudged by one ulp changes it (a sum in float64 might not see it).
    with torch.no_grad():
        weight = next(unet.parameters())
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(float("inf")))
    assert DiffusersProcess(unet, DDPMScheduler(), 4).weights_fingerprint() != one
