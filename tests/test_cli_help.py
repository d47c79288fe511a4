"""What ``critwin --help`` and ``critwin COMMAND --help`` print: plain text a newcomer can copy."""

from __future__ import annotations

import re

import pytest

from critwin.cli import _COMMAND_MODULES, app, main


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _command_names() -> list[str]:
    import importlib  # every command module, as main() registers them: a new command is checked too

    for name in _COMMAND_MODULES:
        importlib.import_module(name)
    return [info.name or info.callback.__name__ for info in app.registered_commands]


@pytest.mark.parametrize("command", _command_names())
def test_command_help_is_plain_text(capsys, command):
    text = _help(capsys, command)
    assert "``" not in text and ":func:" not in text  # RST of the docstring, shown literally before
    assert "<bool>" not in text  # a flag takes no value: no type placeholder beside it
    assert "│" not in text and "╭" not in text  # click's plain formatter, not rich panels
    # no reference a reader cannot follow: the private spec, tracker numbers, an undefined short name
    assert "THEORY" not in text and "Blink" not in text and not re.search(r"\bissue \d", text)
    # the description's paragraphs are whole: none stops mid-sentence, none starts inside one
    description = re.split(r"\n(?:Arguments|Options):", text.split("\n", 2)[2])[0]
    for paragraph in (" ".join(p.split()) for p in description.split("\n\n") if p.strip()):
        assert paragraph[-1] in ".:" and not paragraph[0].islower(), (command, paragraph)


def test_extras_survive_in_the_help(capsys):
    # rich markup took "[ray]" for a style tag and printed pip install 'critwin'
    assert "pip install 'critwin[ray]'" in " ".join(_help(capsys, "sweep").split())


def test_the_command_list_shows_whole_first_sentences(capsys):
    text = _help(capsys)
    listing = " ".join(text.split("Commands:")[1].split())
    assert "..." not in listing  # click cuts a long first line at a fixed width
    # every command's first sentence, rejoined across the wrap, appears whole
    assert (
        "Measure critical windows on a shipped model or a local diffusers model "
        "(Stable Diffusion, SDXL, DDPM)." in listing
    )
    for name in _command_names():
        assert re.search(rf"(^| ){re.escape(name)} \S", listing), name
