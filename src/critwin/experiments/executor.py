"""How a sweep's units run: in this process (``"local"``) or as Ray tasks (``"ray"``).

A sweep plans its units (a name and the arguments of one call of a unit function), hands them to
:func:`run_units`, and assembles the results in its own canonical order. Units are seeded per unit
(:func:`~critwin.experiments.checkpoint.unit_generator`), so their results do not depend on where or in
which order they run: the Ray table is byte-identical to the local one. Only the driver touches the
checkpoint store: cached units are loaded, completed ones are saved atomically as they arrive, so a
killed driver resumes with nothing lost or duplicated, and a lost worker only costs a retried unit.

A unit function has the signature ``fn(shared, *args) -> dict[str, np.ndarray]``; ``shared`` holds what
every unit needs (the process, the encoded sources, the feature). On Ray it is put in the object store
once per sweep and each worker process deserialises it once (the model is held once per worker);
with a CUDA model every task takes one GPU.
"""

from __future__ import annotations

import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from critwin._threads import apply_reproducible_env, reproducible_env
from critwin._validation import check_number, check_positive_int

__all__ = [
    "EXECUTORS",
    "RAY_TIMEOUT",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "Runner",
    "resolve_executor",
    "run_units",
]

EXECUTORS = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'critwin[ray]'"
RAY_TIMEOUT = 30.0
"""Seconds :class:`RayExecutor` waits for a cluster at ``ray_address`` before one clear error."""

UnitFn = Callable[..., Mapping[str, np.ndarray]]
Job = tuple[Hashable, tuple]
"""``(key, args)``: one call ``fn(shared, *args)``."""


class Runner(ABC):
    """Runs unit functions against the ``shared`` object of one sweep (from :meth:`Executor.bind`)."""

    parallelism: int = 1
    """How many units may usefully run at once (sweeps size speculative or batched work by it)."""

    @abstractmethod
    def map_unordered(self, fn: UnitFn, jobs: Sequence[Job]) -> Iterator[tuple[Hashable, Any]]:
        """Yield ``(key, fn(shared, *args))`` for every job, in order of completion."""


class Executor(ABC):
    """Where the units of a sweep run."""

    name: str

    @abstractmethod
    def bind(self, shared: Any, *, gpu: bool = False):
        """Context manager yielding a :class:`Runner` for units that need ``shared``; ``gpu``: the
        sweep's model lives on a CUDA device."""


class _LocalRunner(Runner):
    def __init__(self, shared):
        self.shared = shared

    def map_unordered(self, fn, jobs):
        for key, args in jobs:
            yield key, fn(self.shared, *args)


class LocalExecutor(Executor):
    """Units run one after another in this process (the default)."""

    name = "local"

    @contextmanager
    def bind(self, shared, *, gpu=False):
        yield _LocalRunner(shared)


# -------------------------------------------------------------------------------------------- Ray
# Per worker process: the shared object of the sweep being run, keyed by its object id, so that a
# worker deserialises the model once per sweep and not once per unit.
_WORKER_SHARED: dict[str, Any] = {}


def _call_on_worker(fn, boxed_ref, args):
    import ray

    # Started with the driver's CRITWIN_REPRODUCIBLE and MKL_CBWR (runtime_env): oneDNN off here too.
    apply_reproducible_env()
    # The reference arrives boxed in a list so that Ray does not resolve it on every call.
    ref = boxed_ref[0]
    key = ref.hex()
    if key not in _WORKER_SHARED:
        _WORKER_SHARED.clear()  # a previous sweep's model: free it before loading this one
        _WORKER_SHARED[key] = ray.get(ref)
    return fn(_WORKER_SHARED[key], *args)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(
            f"executor='ray' needs Ray, which is not installed; install it with {RAY_INSTALL_HINT}"
        ) from None
    return ray


class _RayRunner(Runner):
    def __init__(self, ray, remote, boxed_ref, parallelism):
        self.ray, self.remote, self.boxed = ray, remote, boxed_ref
        self.parallelism = parallelism

    def map_unordered(self, fn, jobs):
        pending = {self.remote.remote(fn, self.boxed, args): key for key, args in jobs}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in done:
                    # Arrays come back as read-only views of the object store: copy them, so that
                    # callers get the same writable arrays as from the local executor.
                    unit = self.ray.get(ref)
                    yield pending.pop(ref), {name: np.array(value) for name, value in unit.items()}
        finally:
            # An abandoned map (an error, or a search that stopped early) does not leave work queued.
            for ref in pending:
                self.ray.cancel(ref)


class RayExecutor(Executor):
    """Units run as Ray tasks; a worker that dies mid-unit is replaced and its unit retried.

    Parameters
    ----------
    address : address of a running cluster to join (``ray.init(address=...)``); None starts a local
        one, unless Ray is already initialised in this process (then that cluster is used).
    num_cpus : CPUs of a local cluster started here (default: all of the machine's).
    max_retries : times a unit is resubmitted after its worker process died (>= 0).
    timeout : seconds to wait for the cluster at ``address`` (default :data:`RAY_TIMEOUT`): Ray itself
        retries an unreachable address forever; past this, one ValueError names the address.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        max_retries: int = 3,
        timeout: float = RAY_TIMEOUT,
    ):
        self.ray = _import_ray()
        if address is not None and not isinstance(address, str):
            raise ValueError(f"ray_address must be a string such as 'auto' or 'HOST:PORT', got {address!r}")
        self.address = address
        self.num_cpus = None if num_cpus is None else check_positive_int(num_cpus, "num_cpus")
        if isinstance(max_retries, bool) or not isinstance(max_retries, (int, np.integer)) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.max_retries = int(max_retries)
        self.timeout = check_number(timeout, "ray_timeout", low=0.0, closed="neither")

    def _connect(self):
        ray = self.ray
        if not ray.is_initialized():
            if self.address is not None:
                self._join(ray)
            else:
                # "local": a new cluster of our own, never one a `ray start` left on this machine.
                ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False)
        return ray

    def _join(self, ray) -> None:
        """``ray.init(address=...)`` within :attr:`timeout` seconds, else one ValueError naming the address.

        An unreachable ``HOST:PORT`` is seen by a TCP connect first; a port that answers but is not a
        Ray cluster makes ``ray.init`` wait forever, so it runs in a daemon thread that is given up on.
        """
        address, timeout = self.address, self.timeout
        hint = f"is a Ray cluster running there (ray start --head)? ray_timeout={timeout:g} s"
        endpoint = _host_port(address)
        if endpoint is not None:
            try:
                socket.create_connection(endpoint, timeout=timeout).close()
            except OSError as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
                raise ValueError(f"ray_address {address!r}: cannot connect ({reason}); {hint}") from None
        outcome: dict[str, BaseException | None] = {}

        def join() -> None:
            try:
                ray.init(address=address)
                outcome["error"] = None
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=join, name="critwin-ray-connect", daemon=True)
        thread.start()
        thread.join(timeout)
        if "error" not in outcome:
            raise ValueError(f"ray_address {address!r}: no Ray cluster answered within {timeout:g} s; {hint}")
        error = outcome["error"]
        if isinstance(error, ConnectionError):
            raise ValueError(f"ray_address {address!r}: {error}") from None
        if error is not None:
            raise error

    @contextmanager
    def bind(self, shared, *, gpu=False):
        ray = self._connect()
        resources = ray.cluster_resources()
        slots = resources.get("GPU", 0) if gpu else resources.get("CPU", 1)
        if gpu and slots < 1:
            # A task asking for a GPU on a cluster without one would wait forever.
            raise ValueError(
                "executor='ray': the model is on a CUDA device but the Ray cluster has no GPU; "
                "join a cluster with GPUs (ray_address=) or move the model to the CPU"
            )
        options = dict(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, max_retries=self.max_retries)
        env = reproducible_env()
        if env:
            # Workers of their own, started with these variables set (MKL reads MKL_CBWR at its first call).
            options["runtime_env"] = {"env_vars": env}
        remote = ray.remote(_call_on_worker).options(**options)
        ref = ray.put(shared)
        try:
            yield _RayRunner(ray, remote, [ref], max(1, int(slots)))
        finally:
            del ref


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` cluster address; None for ``auto``, ``local``, ``ray://...``."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "://" in address or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def resolve_executor(executor, ray_address=None, ray_timeout=None) -> Executor:
    """The :class:`Executor` for a sweep's ``executor=``, ``ray_address=`` and ``ray_timeout=`` arguments.

    ``executor`` is ``"local"``, ``"ray"`` or an :class:`Executor`; ``ray_address`` and ``ray_timeout``
    (seconds to wait for the cluster, default :data:`RAY_TIMEOUT`) only go with ``"ray"``. Raises
    ValueError naming the argument otherwise, and when Ray is asked for but missing.
    """
    ray_only = {"ray_address": ray_address, "ray_timeout": ray_timeout}
    given = [name for name, value in ray_only.items() if value is not None]
    if isinstance(executor, Executor):
        if given:
            raise ValueError(
                f"{given[0]}: pass the {given[0].removeprefix('ray_')} to the RayExecutor itself"
            )
        return executor
    if not isinstance(executor, str) or executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}; got {executor!r}")
    if executor == "local":
        if given:
            raise ValueError(f"{given[0]} is only used with executor='ray', got {ray_only[given[0]]!r}")
        return LocalExecutor()
    return RayExecutor(ray_address, timeout=RAY_TIMEOUT if ray_timeout is None else ray_timeout)


def run_units(runner: Runner, fn: UnitFn, jobs: Sequence[Job], store=None, advance=None) -> dict:
    """Every job's result, by key: loaded from ``store`` when it completed before, else run.

    New results are saved to ``store`` (a :class:`~critwin.experiments.checkpoint.SweepStore`, keys are
    the unit names) by this process as they complete, whatever the runner; ``advance(1)`` follows
    every unit.
    """
    results: dict = {}
    todo = []
    for key, args in jobs:
        if store is not None and store.has(key):
            results[key] = store.load(key)
            if advance is not None:
                advance(1)
        else:
            todo.append((key, args))
    for key, unit in runner.map_unordered(fn, todo):
        if store is not None:
            store.save(key, unit)
        results[key] = unit
        if advance is not None:
            advance(1)
    return results
