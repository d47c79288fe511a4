"""The ``critwin`` command line. Each submodule in ``_COMMAND_MODULES`` registers its commands on ``app``."""

from __future__ import annotations

import importlib
import sys

import click
import typer
import typer.core

# Recent typer vendors click as ``typer._click`` (its exceptions are not click's); older typer uses click.
_click = getattr(typer.core, "_click", click)

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
    """Entry point: user errors (bad options, ValueError, and any OSError such as an unwritable path)
    print one line on stderr and exit with status 2."""
    _register()
    try:
        code = app(args=argv, prog_name="critwin", standalone_mode=False)
    except _click.exceptions.NoArgsIsHelpError as exc:
        # ``critwin`` or ``critwin COMMAND`` alone: the help, as click shows it.
        typer.echo(exc.ctx.get_help() if exc.ctx is not None else str(exc), err=True)
        sys.exit(2)
    except _click.exceptions.ClickException as exc:
        print(f"critwin: error: {error_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except (ValueError, OSError) as exc:
        print(f"critwin: error: {error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    # As click's standalone mode: always leave through SystemExit (0 on success).
    sys.exit(code if isinstance(code, int) else 0)


def error_line(exc: BaseException) -> str:
    """One line for a user error: the message, or for an OS error the path and its reason."""
    if isinstance(exc, OSError) and exc.filename is not None:
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else exc.filename
        return f"{target}: {exc.strerror or exc}"
    if isinstance(exc, _click.exceptions.ClickException):
        return " ".join(exc.format_message().split())
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    main()
