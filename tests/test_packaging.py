"""Packaging as a newcomer meets it: the licence the metadata names, project URLs, extras that exist
wherever the docs name them, and a `make demo` that installs only what the demo imports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the tested version)
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_file_is_the_mit_licence_the_metadata_names():
    assert PROJECT["license"] == {"text": "MIT"}
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_project_urls_are_absolute_https_addresses():
    urls = PROJECT["urls"]
    assert urls and all(re.fullmatch(r"https://\S+", url) for url in urls.values())
    # core metadata: a Project-URL label is at most 32 characters
    assert all(len(label) <= 32 for label in urls)


def _documented_extras() -> set[str]:
    """Every ``critwin[NAME]`` written in the README, the docs pages and the sources."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]
    found = set()
    for path in files:
        for group in re.findall(r"critwin\[([a-z0-9_,-]+)\]", path.read_text(encoding="utf-8")):
            found.update(group.split(","))
    return found


def test_every_documented_extra_exists():
    documented = _documented_extras()
    assert {"ray", "pandas"} <= documented  # the scan finds what the README and CLI help name
    assert documented <= set(PROJECT["optional-dependencies"]), documented


def _target(makefile: str, name: str) -> tuple[str, str]:
    """(prerequisites, recipe) of one Makefile target."""
    match = re.search(rf"^{re.escape(name)}:([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, flags=re.M)
    assert match, name
    return match.group(1), match.group(2)


def test_make_demo_installs_the_demo_extra_not_the_dev_toolchain():
    makefile = (ROOT / "Makefile").read_text()
    prerequisites, _ = _target(makefile, "demo")
    assert prerequisites.split() == ["$(DEMO_STAMP)"]
    _, install = _target(makefile, "$(DEMO_STAMP)")
    assert "-e '.[demo]'" in install and "[dev]" not in install
    dev_only = {"pytest", "hypothesis", "ruff", "ray", "pandas", "pytest-xdist", "hatchling"}
    demo = {re.split(r"[<>=\[ ]", req)[0] for req in PROJECT["optional-dependencies"]["demo"]}
    assert not demo & dev_only
