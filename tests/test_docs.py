"""The docs tooling: the generated CLI reference, the wheel's examples, and (when mkdocs is installed) a
strict build of the site. ``make docs`` is the real builder; these checks keep it from rotting."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

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
