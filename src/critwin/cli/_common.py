"""Option parsing and checks shared by the CLI commands (not a command module).

Every command checks all of its options with these helpers before it loads a model or computes
anything, so a bad option costs a one-line error (exit 2 through :func:`critwin.cli.main`), not a
model load.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from critwin._io import check_replaceable, check_writable
from critwin._lazy import deferred_import
from critwin._validation import check_device, check_positive_int, check_time
from critwin.cli import OUTPUT_HOLDS

# Every command module imports this one: it must not import torch (``critwin --help`` and option
# errors come before any heavy import; tests/test_cli_startup.py checks it).
torch = deferred_import("torch", globals())

T = TypeVar("T")

DTYPES = ("float32", "float16", "bfloat16")
"""``--dtype`` choices: names of torch dtypes."""


def parse_list(
    text: str, option: str, convert: Callable[[str], T], what: str, *, distinct: bool = False
) -> list[T]:
    """Parse a comma-separated option value such as ``"0,2,3"`` with ``convert`` applied to each item.

    A ValueError names ``option`` and ``what`` it should hold when the list is empty or an item does not
    convert (``convert`` raises ValueError), and, with ``distinct``, when an item repeats (a set of names
    or indices given twice is a typo, never merged silently).
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{option} must be a comma-separated list of {what}, got {text!r}")
    values = []
    for part in parts:
        try:
            values.append(convert(part))
        except ValueError:
            raise ValueError(f"{option} must be a comma-separated list of {what}, got {part!r}") from None
    if distinct:
        repeated = sorted({str(v) for i, v in enumerate(values) if v in values[:i]})
        if repeated:
            raise ValueError(f"{option} names {', '.join(repeated)} more than once, got {text!r}")
    return values


def parse_times(text: str, option: str = "--times") -> list[float]:
    """Comma-separated distinct non-negative OU times."""
    return parse_list(
        text, option, lambda part: check_time(float(part), option), "non-negative OU times", distinct=True
    )


def check_counts(minimum: int = 1, **counts: int | None) -> None:
    """Each integer option ``--name`` (keyword ``name``, ``_`` for ``-``) is >= ``minimum``; None skips."""
    for name, value in counts.items():
        if value is not None:
            check_positive_int(value, "--" + name.replace("_", "-"), minimum=minimum)


def check_request_memory(**requests: tuple[str, float]) -> None:
    """The memory guard (``critwin._memory``) on sizes typed on the command line, before a model loads:
    each keyword names a request, ``(what, n_values)`` with ``n_values`` the float32 values it holds at
    least (with their noise: twice as many bytes are counted), so terabytes cost one line, not a load.

    ``steps=("--steps 10", 10)`` is special: a time grid of that many steps (``GRID_BYTES`` each).
    The engine checks again with the real sizes once they are known.
    """
    from critwin._memory import GRID_BYTES, check_memory

    for name, (what, n_values) in requests.items():
        per_value = GRID_BYTES if name == "steps" else 2 * 4
        check_memory(per_value * n_values, what)


def reject_unused(ctx, reasons: Mapping[str, str | None]) -> None:
    """Options given on the command line that this run would ignore are refused, not dropped silently.

    ``reasons`` maps a parameter name to why it does not apply here (None: it applies).
    """
    for name, reason in reasons.items():
        source = ctx.get_parameter_source(name)
        # By name: typer may vendor its own click, whose ParameterSource is another enum.
        if reason is not None and source is not None and source.name == "COMMANDLINE":
            raise ValueError(f"--{name.replace('_', '-')} {reason}")


def check_choice(value: str, option: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_out_dir(path: Path, option: str = "--out") -> Path:
    """An output directory: may be missing (it is created later), must not be a file, and must be
    writable (checked now, leaving nothing behind, so a bad path fails before any work)."""
    return check_writable(path, option, directory=True)


def check_out_file(path: Path | None, option: str = "--out", kind: str | None = None) -> Path | None:
    """An output file: may be missing, must not be a directory, and its folder must be writable; an
    existing file is replaced only when critwin wrote it as a ``kind`` output (JSON report or PNG).
    The file is then held (:func:`hold_output`) until the command ends."""
    if path is None:
        return None
    check_writable(path, option, directory=False)
    if kind is not None:
        check_replaceable(path, option, kind)
    hold_output(path, option)
    return path


def hold_output(path: Path | None, option: str = "--out") -> None:
    """Hold the output ``path`` (``claim_output``: a lock beside it) until the running command ends: a
    second critwin process writing the same path is refused ("in use by pid N") before any work.
    Outside :func:`critwin.cli.main` it holds nothing."""
    stack = OUTPUT_HOLDS.get()
    if stack is not None and path is not None:
        from critwin.experiments.checkpoint import claim_output  # the engine imports torch

        stack.enter_context(claim_output(path, option))


def parse_device_dtype(device: str, dtype: str) -> tuple[str, torch.dtype]:
    """``--device`` (a torch device; cuda needs CUDA present) and ``--dtype`` (a name in :data:`DTYPES`),
    as ``(device, torch dtype)``."""
    check_choice(dtype, "--dtype", list(DTYPES))
    check_device(device, "--device")
    return device, getattr(torch, dtype)


EXECUTOR_HELP = "Where the units run: local (this process) or ray (Ray tasks; pip install 'critwin[ray]')."
RAY_ADDRESS_HELP = "Ray cluster to join with --executor ray (default: start a local one)."
# The default is critwin.experiments.executor.RAY_TIMEOUT (not imported here: the engine imports torch).
RAY_TIMEOUT_HELP = "Seconds to wait for the --ray-address cluster (default 30)."


def executor_options(executor: str, ray_address: str | None, ray_timeout: float | None = None) -> dict:
    """``--executor``, ``--ray-address`` and ``--ray-timeout`` checked now (Ray present, the others only
    with ray); returns the keywords ``executor=``, ``ray_address=``, ``ray_timeout=`` to pass on."""
    from critwin.experiments.executor import EXECUTORS, resolve_executor  # the engine imports torch

    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    for option, value in (("--ray-address", ray_address), ("--ray-timeout", ray_timeout)):
        if value is not None and executor != "ray":
            raise ValueError(f"{option} needs --executor ray, got --executor {executor}")
    flags = {"executor": "--executor", "ray_address": "--ray-address", "ray_timeout": "--ray-timeout"}
    try:
        resolve_executor(executor, ray_address, ray_timeout)
    except ValueError as exc:  # Ray missing: the message says how to install it
        raise cli_error(exc, flags) from None
    return {"executor": executor, "ray_address": ray_address, "ray_timeout": ray_timeout}


def cli_error(exc: ValueError, flags: Mapping[str, str]) -> ValueError:
    """``exc`` from the library with its Python keywords (``name=`` or ``name=value``) written as the
    command's options (``flags``: keyword -> option), so that the one-line error names what to type."""

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        return f"{flags[name]} {value}".rstrip() if name in flags else match.group(0)

    return ValueError(re.sub(r"\b(\w+)=(\S*)", flag, str(exc)))


def fmt_time(value) -> str:
    """An OU time for a table: 4 decimals, ``inf``/``-inf``, and ``-`` for missing (None or NaN)."""
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"
