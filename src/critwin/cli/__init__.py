"""The ``critwin`` command line. Each submodule in ``_COMMAND_MODULES`` registers its commands on ``app``."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from critwin._threads import THREADS_ENV, set_threads, threads_from_env

app = typer.Typer(
    name="critwin",
    help="Critical windows in diffusion models: theory, measurement, diagnostics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line on stderr and exit with status 2."""
    _register()
    try:
        if os.environ.get(THREADS_ENV):  # else torch's default; `critwin demo` chooses its own
            set_threads(threads_from_env())
        app(args=argv, prog_name="critwin", standalone_mode=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"critwin: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
