"""The ``critwin`` command line. Each submodule in ``_COMMAND_MODULES`` registers its commands on ``app``."""

from __future__ import annotations

import importlib
import inspect
import io
import os
import re
import stat
import sys
import warnings
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

import click
import typer
import typer.core

from critwin._threads import THREADS_ENV, apply_reproducible_env, set_threads, threads_from_env
from critwin._version import __version__

# Recent typer vendors click as ``typer._click`` (its exceptions are not click's); older typer uses click.
_click = getattr(typer.core, "_click", click)


app = typer.Typer(
    name="critwin",
    help="Critical windows in diffusion models: theory, measurement, diagnostics.",
    no_args_is_help=True,
    add_completion=False,
    # click's plain help: rich markup would eat "[ray]" in "pip install 'critwin[ray]'" and print a
    # "<bool>" type beside every flag; click rewraps each paragraph to the terminal's width.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"critwin {__version__}")
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
    "critwin.cli.atlas",
    "critwin.cli.text",
]


_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data):`~?([^`]+)`")


def plain_help(text: str) -> str:
    """A command's docstring as help text: RST literals (````x````) and roles (``:func:`x```) as plain x.

    Examples
    --------
    >>> plain_help("Train ``digits`` (see :func:`critwin.train_digits`).")
    'Train digits (see critwin.train_digits).'
    """
    return _RST_ROLE.sub(r"\1", _RST_LITERAL.sub(r"\1", text))


def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)
    for info in app.registered_commands:  # the docstrings are RST (for the API docs); help is plain text
        info.help = plain_help(info.help or inspect.getdoc(info.callback) or "")
        info.short_help = info.short_help or first_sentence(info.help)


def first_sentence(text: str) -> str:
    r"""The first sentence of the first paragraph, on one line (``critwin --help`` lists commands with it;
    click would cut it at a fixed width with "...").

    Examples
    --------
    >>> first_sentence("Measure windows on a\nshipped model.  Writes --out.\n\nMore.")
    'Measure windows on a shipped model.'
    """
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


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


OUTPUT_HOLDS: ContextVar[ExitStack | None] = ContextVar("critwin_cli_output_holds", default=None)
"""Within :func:`main`: the stack that holds the locks of the running command's outputs until it ends
(``critwin.cli._common.hold_output``), so a second writer of the same output is refused at once."""


@contextmanager
def holding_outputs():
    """Hold every output the command claims (``hold_output``) until the block ends."""
    with ExitStack() as stack:
        token = OUTPUT_HOLDS.set(stack)
        try:
            yield stack
        finally:
            OUTPUT_HOLDS.reset(token)


STDOUT_NAME = "standard output"
"""How an OS error of writing the command's standard output (a full disk under ``> FILE``) names it."""


class WholeWrites(io.RawIOBase):
    """A raw stream on file descriptor ``fd`` whose ``write`` writes every byte or raises ``OSError``.

    Python's own standard output drops what a short write (a full disk) left unwritten and reports
    success; this one repeats ``os.write`` until all is written, so the next write's error is raised.
    """

    def __init__(self, fd: int):
        super().__init__()
        self._fd = fd
        self.discarding = False  # after an error has been reported: what is left is dropped

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.discarding:
            return len(view)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, STDOUT_NAME) from None
        return done


def _regular_file_descriptor(stream) -> int | None:
    try:
        fd = stream.fileno()
        return fd if isinstance(stream, io.TextIOWrapper) and stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


@contextmanager
def whole_stdout():
    """Within: standard output redirected to a file (``critwin ... --json > FILE``) is written through
    :class:`WholeWrites`, so a full disk is an ``OSError`` (one line, exit status 2) rather than a
    truncated file and exit status 0. Other standard outputs (a terminal, a pipe) are left as they are."""
    stream = sys.stdout
    fd = _regular_file_descriptor(stream)
    if fd is None:
        yield
        return
    stream.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(WholeWrites(fd)), encoding=stream.encoding, errors=stream.errors
    )
    try:
        yield
    finally:
        replaced, sys.stdout = sys.stdout, stream
        raw = replaced.buffer.raw
        try:
            replaced.flush()
        except OSError:  # already reported by _run; what is left cannot be written
            raw.discarding = True
        replaced.detach()  # leaves the descriptor open


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line on stderr and exit with status 2; warnings are notes."""
    with warnings_as_notes():
        _register()
        with holding_outputs(), whole_stdout():
            code = _run(argv)
    # As click's standalone mode: always leave through SystemExit (0 on success).
    sys.exit(code if isinstance(code, int) else 0)


def _run(argv: list[str] | None):
    """Run the app; user errors (bad options, ValueError, any OSError such as an unwritable path) print
    one line on stderr and exit with status 2."""
    try:
        apply_reproducible_env()  # before torch loads: MKL reads its setting at its first call
        if os.environ.get(THREADS_ENV):  # else torch's default; `critwin demo` chooses its own
            set_threads(threads_from_env())
        code = app(args=argv, prog_name="critwin", standalone_mode=False)
        sys.stdout.flush()  # a full disk under ``> FILE`` is an error of this command, reported below
        return code
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
