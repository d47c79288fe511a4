"""Every command that writes, on a full disk and in a read-only directory (issue 22): one line on stderr
naming the output, exit status 2, neither a partial nor a temporary file left, and the previous good
result as it was.

The previous result is written first by the same command; the failing run uses another seed, so that a
run that replaced some of its files and not the others would show. The full disk is ``RLIMIT_FSIZE`` in
a child process (the kernel refuses any write past half the size of the largest output file,
``EFBIG``: a full disk without a mount, for any user), so the command does all its work and fails only
when it writes its result. Where the tests may mount (root), a real tmpfs is also filled to the last
byte (``ENOSPC``) and remounted read-only (``EROFS``, which root cannot bypass as it bypasses
``chmod``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from critwin._io import result_contents
from critwin.cli import main

ROOT = Path(__file__).resolve().parents[1]
MIXTURE = str(ROOT / "examples" / "two_gaussians.yaml")

# name: (argv with {out} for the output and {work} for a folder of inputs, output name, slow)
SURFACES: dict[str, tuple[list[str], str, bool]] = {
    "hierarchy --out": (["hierarchy", MIXTURE, "--no-windows", "--out", "{out}"], "tree.json", False),
    "hierarchy --plot": (["hierarchy", MIXTURE, "--no-windows", "--plot", "{out}"], "tree.png", False),
    "estimate --out": (["estimate", "{work}/result", "--n-boot", "10", "--out", "{out}"], "e.json", False),
    "fairness --out": (["fairness", "--n", "4", "--steps", "2", "--out", "{out}"], "f.json", False),
    "privacy --out": (
        ["privacy", "--members", "2", "--nonmembers", "4", "--steps", "2", "--out", "{out}"],
        "p.json",
        False,
    ),
    "privacy prompts --out": (
        [
            "privacy",
            "--model",
            "{work}/pipe",
            "--members",
            "{work}/members.txt",
            "--non-members",
            "{work}/non_members.txt",
            "--steps",
            "2",
            "--scores",
            "wen",
            "--out",
            "{out}",
        ],
        "pp.json",
        False,
    ),
    "fairness prompts --out": (
        ["fairness", "--model", "{t2i}", "--prompt", "a circle", "--attribute", "background", "--n", "4"]
        + ["--steps", "2", "--out", "{out}"],
        "fp.json",
        True,
    ),
    "sweep --out": (
        ["sweep", "--model", "digits", "--steps", "3", "--times", "0.5,1", "--n", "2", "--n-per-time", "2"]
        + ["--no-progress", "--out", "{out}"],
        "sweep",
        False,
    ),
    "text --out": (
        ["text", "--model", "rhm-mdm", "--sources", "8", "--replicates", "2", "--boot", "10", "--no-theory"]
        + ["--out", "{out}"],
        "text",
        False,
    ),
    "train rhm-mdm-tiny --out": (["train", "rhm-mdm-tiny", "--no-progress", "--out", "{out}"], "w", False),
    "validate --out": (["validate", "--quick", "--out", "{out}"], "validate", True),
    "atlas --out": (["atlas", "--quick", "--no-progress", "--out", "{out}"], "atlas", True),
    "train digits-tiny --out": (["train", "digits-tiny", "--no-progress", "--out", "{out}"], "w", True),
    "train shapes-t2i-tiny --out": (
        ["train", "shapes-t2i-tiny", "--no-progress", "--out", "{out}"],
        "w",
        True,
    ),
    "demo --out": (["demo", "--quick", "--no-progress", "--workers", "1", "--out", "{out}"], "demo", True),
}
# The classifier and judge targets (one epoch: 20-40 s each on a shared CPU, twice per case).
for _model in ("classifier", "shapes-classifier", "digit-judge", "shapes-selector"):
    SURFACES[f"train {_model} --out"] = (
        ["train", _model, "--epochs", "1", "--no-progress", "--out", "{out}"],
        "w",
        True,
    )
STDOUT = ["hierarchy", MIXTURE, "--no-windows", "--json"]

LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write is EFBIG, not a kill
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from critwin.cli import main
    main(sys.argv[2:])
    """
)


def _params():
    return [
        pytest.param(name, marks=[pytest.mark.slow] if slow else [], id=name)
        for name, (_, _, slow) in SURFACES.items()
    ]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Inputs: a saved forward-reverse result (estimate) and a tiny text-to-image pipeline with prompts."""
    from critwin.experiments.forward_reverse import forward_reverse
    from tiny_models import tiny_stable_diffusion_with_text
    from two_gaussian_oracle import two_gaussians

    root = tmp_path_factory.mktemp("full_disk_inputs")
    mixture = two_gaussians(4.0)
    x0, _ = mixture.sample(4, generator=torch.Generator().manual_seed(0))
    forward_reverse(mixture, x0, [0.0, 1.0, 3.0], n_per_time=2, seed=0, progress=False).save(root / "result")
    (root / "tok").mkdir()
    tiny_stable_diffusion_with_text(root / "tok").save_pretrained(root / "pipe", safe_serialization=True)
    (root / "members.txt").write_text("aa\nbb\ncc\n")
    (root / "non_members.txt").write_text("dd\nee\nff\ngg\n")
    return root


@pytest.fixture(scope="module")
def t2i(tmp_path_factory):
    """A trained shapes-t2i-tiny pipeline (its card names the attributes the fairness readers grade)."""
    root = tmp_path_factory.mktemp("full_disk_t2i")
    with pytest.raises(SystemExit) as done:
        main(["train", "shapes-t2i-tiny", "--no-progress", "--out", str(root)])
    assert done.value.code == 0
    return root / "shapes-t2i-tiny"


def _argv(name: str, out: Path, work: Path, request=None) -> list[str]:
    argv = SURFACES[name][0]
    t2i_dir = request.getfixturevalue("t2i") if any("{t2i}" in a for a in argv) else None
    return [a.format(out=out, work=work, t2i=t2i_dir) for a in argv]


def _main(argv, capsys) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def _all_paths(folder: Path) -> set[str]:
    """Every name under ``folder``, hidden ones included (a temporary file or work directory left)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _error_lines(stderr: str) -> list[str]:
    """stderr less the ``critwin: note:`` lines (library warnings, which may come before the error)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("critwin: note:")]


def _previous(name: str, folder: Path, argv: list[str], capsys) -> tuple[Path, dict, set]:
    out = folder / SURFACES[name][1]
    code, err = _main([a.replace("{out}", str(out)) for a in argv], capsys)
    assert code == 0, err
    return out, result_contents(out), _all_paths(folder)


def _largest_file(out: Path) -> int:
    return max(p.stat().st_size for p in ([out] if out.is_file() else out.rglob("*")) if p.is_file())


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", _params())
def test_a_full_disk_while_writing_the_result_is_one_line_and_keeps_the_previous(
    name, work, tmp_path, capsys, request
):
    folder = tmp_path / "results"
    folder.mkdir()
    out = folder / SURFACES[name][1]
    argv = _argv(name, out, work, request)
    out, contents, paths = _previous(name, folder, argv, capsys)
    limit = max(_largest_file(out) // 2, 256)  # above the output lock's few bytes, below the result
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONDONTWRITEBYTECODE="1")
    # Another seed: a run that replaced some of the files and not the others would show (a resumable
    # sweep directory refuses other settings, so it reruns its own).
    again = argv if name == "sweep --out" else [*argv, "--seed", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), *again], capture_output=True, text=True, env=env
    )
    lines = _error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"critwin: error: {out}") and lines[0].endswith("File too large"), lines
    assert result_contents(out) == contents
    assert _all_paths(folder) == paths  # no temporary file or work directory left beside it


def test_a_full_disk_under_standard_output_is_one_line_and_exit_2(tmp_path):
    """``critwin ... --json > FILE``: Python's own stdout would drop the unwritten rest and exit 0."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONDONTWRITEBYTECODE="1")
    target = tmp_path / "tree.json"
    with open(target, "w") as stdout:
        proc = subprocess.run(
            [sys.executable, "-c", LIMITED, "100", *STDOUT],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["critwin: error: standard output: File too large"]
    # Without the limit the same command writes the whole JSON object to the file and exits 0.
    with open(target, "w") as stdout:
        done = subprocess.run([sys.executable, "-m", "critwin", *STDOUT], stdout=stdout, env=env)
    assert done.returncode == 0 and target.read_text().startswith("{") and target.stat().st_size > 100


# ------------------------------------------------------------------------ a real tmpfs: full, read-only
@pytest.fixture
def tmpfs(tmp_path):
    """A 32 MiB tmpfs (root only; skipped where mounting is not allowed), unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to its last byte."""
    with open(folder / ".filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    with open(folder / ".filler", "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass


FAST = [name for name, (_, _, slow) in SURFACES.items() if not slow]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("state", ["full", "read-only"])
@pytest.mark.parametrize("name", FAST)
def test_a_full_or_read_only_file_system_is_one_line_and_keeps_the_previous(
    name, state, work, tmpfs, capsys, request
):
    argv = _argv(name, tmpfs / SURFACES[name][1], work, request)
    out, contents, paths = _previous(name, tmpfs, argv, capsys)
    if state == "full":
        _fill(tmpfs)
        paths |= {".filler"}
        reason = "No space left on device"
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        reason = "Read-only file system"
    code, err = _main(argv if name == "sweep --out" else [*argv, "--seed", "1"], capsys)
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("critwin: error: ") and str(tmpfs) in lines[0] and reason in lines[0], lines
    assert result_contents(out) == contents
    assert _all_paths(tmpfs) == paths
