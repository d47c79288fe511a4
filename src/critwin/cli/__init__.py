"""The ``critwin`` command line. Each submodule in ``_COMMAND_MODULES`` registers its commands on ``app``."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from contextlib import contextmanager

import typer

import critwin

app = typer.Typer(
    name="critwin",
    help="Critical windows in diffusion models: theory, measurement, diagnostics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"critwin {critwin.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    """Critical windows in diffusion models: theory, measurement, diagnostics."""


# Modules are imported when the CLI starts; each defines commands with ``@app.command()``.
_COMMAND_MODULES: list[str] = [
    "critwin.cli.train",
    "critwin.cli.sweep",
    "critwin.cli.theory",
    "critwin.cli.experiments",
    "critwin.cli.demo",
    "critwin.cli.diagnostics",
]


def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def note(message, category=None, filename=None, lineno=None, file=None, line=None) -> None:
    """A library warning as one ``critwin: note: ...`` line on stderr (a ``warnings.showwarning``)."""
    text = str(message).strip().splitlines()
    print(f"critwin: note: {text[0] if text else category.__name__}", file=sys.stderr)


@contextmanager
def warnings_as_notes():
    """Within: every shown warning is one ``critwin: note:`` line, not a two-line warning with a path.

    diffusers' and transformers' own logger notices (e.g. the accelerate hint) are silenced through
    their verbosity variables, read when they are first imported (a user's setting wins).
    """
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    previous = warnings.showwarning
    warnings.showwarning = note
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line on stderr and exit with status 2; warnings are notes."""
    with warnings_as_notes():
        _register()
        try:
            app(args=argv, prog_name="critwin", standalone_mode=True)
        except (ValueError, FileNotFoundError) as exc:
            print(f"critwin: error: {exc}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
