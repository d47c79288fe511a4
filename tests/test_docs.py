"""The docs tooling: the generated CLI reference, the wheel's examples, and (when mkdocs is installed) a
strict build of the site. ``make docs`` is the real builder; these checks keep it from rotting."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen_cli_docs.py"


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _top_level_commands():
    """{name: [option strings]} of every command registered on the ``critwin`` app."""
    import typer

    gen = _gen_cli_docs()
    root = typer.main.get_command(gen.load_app())
    ctx = root.context_class(root, info_name="critwin")
    commands = {}
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        commands[name] = [opt for p in command.params for opt in (*p.opts, *p.secondary_opts)]
    return commands


def test_cli_reference_lists_every_command_and_option(tmp_path):
    target = tmp_path / "cli.md"
    assert _gen_cli_docs().main([str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    commands = _top_level_commands()
    # The commands the README documents; more may be added, none may silently disappear.
    documented = {"window", "hierarchy", "validate", "sweep", "estimate"}
    documented |= {"train", "privacy", "fairness", "demo"}
    assert documented <= set(commands)
    for name, options in commands.items():
        heading = f"### `critwin {name}` {{#critwin-{name}}}"
        assert heading in text, f"no section for critwin {name}"
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        assert f"Usage: critwin {name}" in section
        for option in options:
            if option.startswith("-"):
                assert option in section, f"critwin {name}: option {option} missing from the reference"
    assert "\x1b[" not in text  # no ANSI escapes
    # Deterministic: the same definitions give the same file.
    again = tmp_path / "again.md"
    _gen_cli_docs().main([str(again)])
    assert again.read_text(encoding="utf-8") == text


def test_wheel_ships_the_examples(tmp_path, monkeypatch):
    hatchling_build = pytest.importorskip(
        "hatchling.build", reason="hatchling is not installed: cannot build a wheel offline here"
    )
    monkeypatch.chdir(ROOT)  # PEP 517 hooks run in the project root
    name = hatchling_build.build_wheel(str(tmp_path))
    with zipfile.ZipFile(tmp_path / name) as wheel:
        names = set(wheel.namelist())
    examples = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_file())
    assert "critwin/examples/two_gaussians.yaml" in names
    for example in examples:
        assert f"critwin/examples/{example}" in names
    assert "critwin/cli/__init__.py" in names


def test_docs_build_strict(tmp_path):
    """mkdocs --strict on a copy of docs/ with a freshly generated CLI reference (skipped without mkdocs)."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]'; make docs)")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python is not installed")
    import shutil

    import yaml

    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    _gen_cli_docs().main([str(docs / "cli.md")])
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    config["site_dir"] = str(tmp_path / "site")
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT / p) for p in python["paths"]]
            options = python["options"]
            options["extensions"] = [str(ROOT / e) for e in options.get("extensions", [])]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    site = tmp_path / "site"
    for page in ("index.html", "theory.html", "cli.html", "api/index.html", "api/theory.html"):
        assert (site / page).is_file()
    # Opened from disk (file://), a link to a directory shows a listing: every local link names a file.
    for page in set(site.rglob("*.html")) - {site / "404.html"}:  # 404 is served by a web server only
        for target in re.findall(r'href="([^"#:]+)(?:#[^"]*)?"', page.read_text(encoding="utf-8")):
            assert (page.parent / target).is_file(), (page.relative_to(site), target)
    # The API reference opens on its main functions, linked into pages split by module (each well
    # under the single 933 KB page it replaces), with no table column of empty "Type" cells.
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert 'href="theory.html#critwin.theory.windows.critical_window"' in api
    for page in (site / "api").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert len(text) < 400_000 and ">Type<" not in text, page.name
        # One name per field (t_after, t_before, status): the aliases are not documented.
        aliases = re.findall(r'id="critwin\.[\w.]+\.(?:empty|lower|upper)"', text)
        assert not aliases, (page.name, aliases)
        # Every reference names something in the repository: no private spec, no issue numbers.
        prose = re.sub(r"<[^>]+>", " ", text)
        assert "THEORY" not in prose and not re.search(r"\bissue \d", prose), page.name


def _readme_python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.M | re.S)


def test_readme_example_runs_and_prints_the_exact_and_the_measured_window(capsys):
    """The README's one Python block, executed as written, against an independent computation.

    Along the axis of components 0 and 1 (means ±5) the fourth-level window is that of two unit Gaussians
    with |mu| = 5; the other cluster is 240 e^-t away (more than 12 sd for t <= 3), so it is negligible
    for the endpoints. T_before: TV(N(a), mixture of N(±a)) = Phi(a) - 1/2 = eps. T_after: the overlap
    of N(a) with the rest (weights 1/3 each) is at most eps^2, i.e. 1 - int min(phi(x-a), phi(x+a)/3)
    dx >= 1 - eps^2 (the far cluster adds < 1e-30). P(component kept) after noising to t: the mean, under
    N(e^-t mu_0, I), of component 0's posterior weight, here by Monte Carlo in the plane of the means.
    """
    from scipy import integrate, optimize, stats

    (block,) = _readme_python_blocks()
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    w, res = namespace["w"], namespace["res"]
    eps, mu = 0.1, 5.0

    t_before = math.log(mu / stats.norm.ppf(0.5 + eps))

    def overlap(a):
        return integrate.quad(
            lambda x: min(stats.norm.pdf(x - a), stats.norm.pdf(x + a) / 3), -30, 30, points=[0]
        )[0]

    t_after = math.log(mu / optimize.brentq(lambda a: overlap(a) - eps**2, 0.5, 10.0))
    assert w.status == "non-empty"
    assert w.t_before == pytest.approx(t_before, abs=2e-3) and w.t_after == pytest.approx(t_after, abs=2e-3)
    assert printed[0] == repr(w) and printed[0].startswith("Window(t_after=0.745 ")
    assert "status=non-empty" in printed[0]

    rng = np.random.default_rng(1)
    means = np.array([[-120.0, -5.0], [-120.0, 5.0], [120.0, -5.0], [120.0, 5.0]])
    for t, kept in zip([0.3, 1.5, 3.0, 5.0], res.agreement.tolist(), strict=True):
        a = math.exp(-t)
        y = a * means[0] + rng.standard_normal((400_000, 2))
        logits = a * y @ means.T - a**2 * (means**2).sum(1) / 2
        expected = np.mean(1 / np.exp(logits - logits[:, :1]).sum(1))
        # 500 Bernoulli round trips: 4 standard errors (at least 0.01), plus the reference's MC error
        assert abs(kept - expected) <= 4 * max(math.sqrt(expected * (1 - expected) / 500), 0.0025) + 0.005
    assert printed[-1].startswith("WindowEstimate(") and "t_after=" in printed[-1]


def test_readme_starts_a_newcomer_in_its_first_30_lines_and_every_link_resolves():
    """The README a newcomer reads for five minutes: the command to run within 30 lines, a Python
    example of at most 10 lines, and no link or image to a file the repository lacks (nor a reference
    to a private spec or to an issue number)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in "\n".join(text.splitlines()[:30])
    (block,) = _readme_python_blocks()
    assert len(block.strip().splitlines()) <= 10, block
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).is_file(), target
    assert "THEORY" not in text and not re.search(r"\bissue \d", text)


def test_the_docs_and_docstrings_name_nothing_a_reader_cannot_open():
    """No page of docs/ and no docstring or comment of the package cites the private spec ("THEORY")
    or an issue tracker number: references go to the pages in docs/."""
    files = [*(ROOT / "docs").rglob("*.md"), *(ROOT / "src").rglob("*.py")]
    offending = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "THEORY" in line or re.search(r"\bissue \d", line)
    ]
    assert not offending, offending
    # the sections the docstrings cite exist
    headings = re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "theory.md").read_text(encoding="utf-8"), re.M)
    cited = {
        int(n)
        for path in (ROOT / "src").rglob("*.py")
        for group in re.findall(r"docs/theory\.md (§[\d–§, ]+)", path.read_text(encoding="utf-8"))
        for n in re.findall(r"\d+", group)
    }
    assert cited and cited <= {int(h) for h in headings}, sorted(cited - {int(h) for h in headings})
