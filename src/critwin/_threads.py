"""CPU thread settings, chosen deliberately instead of torch's default of one thread per core.

critwin's CPU work (the demo, small mixtures, the 8x8 digits model) is many small tensor operations.
With several intra-op threads every operation ends at an OpenMP barrier; when another process holds
one of the cores, the thread that is descheduled holds up the others, which spin-wait (GNU OpenMP's
default) for a scheduler slice. CPU time then grows with the load instead of the wall time growing
in proportion to it. One intra-op thread has no barrier to wait at, so the slowdown is proportional
to the load. Larger models may ask for more threads (``CRITWIN_THREADS`` or a command's option).

Processes started by ``make test``/``make demo`` and by the test suite also get ``OMP_NUM_THREADS=1``
and ``OMP_WAIT_POLICY=PASSIVE`` in their environment (they must be set before torch is imported, so
the Makefile and ``tests/conftest.py`` set them, not this module).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from critwin._lazy import deferred_import
from critwin._validation import check_positive_int

torch = deferred_import("torch", globals())  # the command line reads CRITWIN_THREADS before torch loads

__all__ = [
    "REPRODUCIBLE_ENV",
    "THREADS_ENV",
    "apply_reproducible_env",
    "make_reproducible",
    "reproducible_env",
    "set_threads",
    "threads_from_env",
    "using_threads",
]

THREADS_ENV = "CRITWIN_THREADS"
"""Environment variable: intra-op threads of the ``critwin`` command (default 1)."""


REPRODUCIBLE_ENV = "CRITWIN_REPRODUCIBLE"
"""Environment variable: ``1`` makes results independent of the number of threads (see
:func:`make_reproducible`)."""


def make_reproducible() -> None:
    """Use kernels whose results do not depend on the number of intra-op threads.

    By default a network's output on a small batch (below about 16 images here) depends on the thread
    count in its last bits: oneDNN's convolutions and MKL's matrix products split their reductions by
    thread, so 1 and 2 threads give source images that differ by ~1e-6 and output files that differ
    in their fingerprints (labels and windows agreed in every run measured). This sets MKL's strict
    conditional numerical reproducibility (``MKL_CBWR=AUTO,STRICT``, unless already set; it must be
    set before MKL's first call, so before torch loads in a fresh process) and turns oneDNN off (the
    reference convolutions run instead). Sums that critwin computes itself are thread-independent
    already. Results on another CPU kind may still differ (its kernels differ).

    It also sets ``CRITWIN_REPRODUCIBLE=1`` in this process's environment, so that worker processes
    started from it (the demo's, Ray's: :func:`reproducible_env`) apply it too.
    """
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    os.environ[REPRODUCIBLE_ENV] = "1"
    torch.backends.mkldnn.enabled = False


def reproducible_env() -> dict[str, str]:
    """The environment variables a worker process needs to run as reproducibly as this one: with
    ``CRITWIN_REPRODUCIBLE=1`` here, ``CRITWIN_REPRODUCIBLE`` and ``MKL_CBWR`` (which MKL reads at its
    first call, so they must be set when the worker starts: Ray's ``runtime_env``); else none."""
    if os.environ.get(REPRODUCIBLE_ENV, "").strip() != "1":
        return {}
    return {REPRODUCIBLE_ENV: "1", "MKL_CBWR": os.environ.get("MKL_CBWR", "AUTO,STRICT")}


def apply_reproducible_env() -> bool:
    """:func:`make_reproducible` when ``CRITWIN_REPRODUCIBLE`` is ``1`` (``0`` or unset: not); returns
    whether it was applied."""
    value = os.environ.get(REPRODUCIBLE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{REPRODUCIBLE_ENV} must be 0 or 1, got {value!r}")
    if value == "1":
        make_reproducible()
    return value == "1"


def threads_from_env(default: int = 1) -> int:
    """Intra-op threads named by ``CRITWIN_THREADS`` (a positive integer), else ``default``."""
    value = os.environ.get(THREADS_ENV)
    if value is None or not value.strip():
        return default
    try:
        return check_positive_int(int(value), THREADS_ENV)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}") from None


def set_threads(threads: int) -> int:
    """Use ``threads`` torch intra-op threads (OpenMP and MKL follow); returns the previous number."""
    threads = check_positive_int(threads, "threads")
    previous = torch.get_num_threads()
    if threads != previous:
        torch.set_num_threads(threads)
    return previous


@contextmanager
def using_threads(threads: int | None):
    """Within: ``threads`` torch intra-op threads (None: torch's setting is left alone); restored after."""
    previous = None if threads is None else set_threads(threads)
    try:
        yield
    finally:
        if previous is not None:
            set_threads(previous)
