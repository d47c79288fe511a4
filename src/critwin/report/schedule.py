"""Run the pieces of a report in worker processes: longest chain of work first.

A report is a list of :class:`Section` s. Each is a module-level function ``run(context, inputs)`` that
computes its part (and draws its figures into ``context.work``) and returns ``(summary, shared)``:
``summary`` is its JSON-ready entry, ``shared`` what the sections that name it in ``needs`` receive in
``inputs``. Sections draw their randomness from their own seeded generators, so the report does not
depend on which process ran which section or in which order (``tests/test_report_schedule.py`` checks a
two-worker run against the one-process run).

:func:`run_sections` keeps ``workers`` processes busy: whenever one is free it starts, among the
sections whose inputs are ready, the one heading the longest chain of estimated work (its own ``cost``
plus that of its longest chain of dependents) — longest first, with the dependency chains that would
otherwise finish last started early. A new section plugs in by appending it to the list.

The warnings a section raises are recorded in its process and raised again in the calling process
when the section finishes (:attr:`SectionRun.warnings`), so a worker's warnings reach the caller's
filters and display (the CLI's ``critwin: note:`` lines) and tests see them, as if it had run here.
"""

from __future__ import annotations

import concurrent.futures as futures
import math
import multiprocessing
import os
import pickle
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from critwin._memory import memory_limit, set_memory_limit
from critwin._threads import apply_reproducible_env, set_threads

__all__ = ["Section", "SectionRun", "run_sections", "priorities", "default_workers", "makespan"]


@dataclass(frozen=True)
class Section:
    """One independent piece of a report.

    Attributes
    ----------
    name : its name (unique; the key of its summary entry).
    run : ``run(context, inputs) -> (summary, shared)``, a module-level function (workers import it).
    cost : estimated CPU seconds at full sizes (only the order of the work depends on it).
    needs : names of the sections whose ``shared`` results ``run`` receives as ``inputs[name]``.
    """

    name: str
    run: Callable[[Any, Mapping[str, Any]], tuple[Any, Any]]
    cost: float
    needs: tuple[str, ...] = ()


class _Packed:
    """A section's ``shared`` result pickled in the worker that computed it: the calling process hands it
    on to the sections that need it without unpickling it (that would import the libraries of its
    classes there: diffusers, for the digits section's model)."""

    __slots__ = ("data",)

    def __init__(self, value: Any) -> None:
        self.data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self) -> Any:
        return pickle.loads(self.data)


@dataclass
class SectionRun:
    """What one section returned, the wall and CPU seconds it took in its process, and the warnings it
    raised there (``(category, message)`` pairs, in order, each distinct one once).

    ``shared`` from a worker process is unpickled here when first read (the report never reads it here).
    """

    summary: Any
    _shared: Any
    wall_seconds: float
    cpu_seconds: float
    warnings: tuple[tuple[type[Warning], str], ...] = ()

    @property
    def shared(self) -> Any:
        if isinstance(self._shared, _Packed):
            self._shared = self._shared.load()
        return self._shared


def priorities(sections: Sequence[Section]) -> dict[str, float]:
    """Per section: its cost plus the largest priority among the sections that need it."""
    by_name = {s.name: s for s in sections}
    if len(by_name) != len(sections):
        raise ValueError(f"sections must have distinct names, got {[s.name for s in sections]}")
    for s in sections:
        missing = [n for n in s.needs if n not in by_name]
        if missing:
            raise ValueError(f"section {s.name!r} needs unknown sections {missing}")
    dependents = {name: [s.name for s in sections if name in s.needs] for name in by_name}
    out: dict[str, float] = {}

    def visit(name: str, path: tuple[str, ...]) -> float:
        if name in path:
            raise ValueError(f"sections depend on each other in a cycle: {' -> '.join(path + (name,))}")
        if name not in out:
            chain = max((visit(d, path + (name,)) for d in dependents[name]), default=0.0)
            out[name] = by_name[name].cost + chain
        return out[name]

    for name in by_name:
        visit(name, ())
    return out


def _execute(section: Section, context, inputs: Mapping[str, Any], pack: bool = False) -> SectionRun:
    """Run one section (``pack``: in a worker, its ``shared`` result pickled for the caller to hand on)."""
    inputs = {name: value.load() if isinstance(value, _Packed) else value for name, value in inputs.items()}
    wall, cpu = time.perf_counter(), time.process_time()
    # Recorded under this process's filters (what they ignore stays ignored), each distinct one once.
    with warnings.catch_warnings(record=True) as caught:
        try:
            summary, shared = section.run(context, inputs)
        except Exception as error:  # the traceback of a worker's error does not say which section it ran
            error.add_note(f"(in report section {section.name!r})")
            raise
    raised = tuple(dict.fromkeys((w.category, str(w.message)) for w in caught))
    seconds = time.perf_counter() - wall, time.process_time() - cpu
    return SectionRun(summary, _Packed(shared) if pack else shared, *seconds, raised)


def _raise_again(run: SectionRun) -> None:
    for category, message in run.warnings:
        warnings.warn(message, category, stacklevel=3)


def _start_worker(threads: int | None, limit: int) -> None:
    apply_reproducible_env()  # a spawned worker inherits the environment, not torch's settings
    set_memory_limit(limit)  # nor critwin's: the caller's memory limit (set_memory_limit or $CRITWIN_...)
    if threads is not None:
        set_threads(threads)


def run_sections(
    sections: Sequence[Section],
    context,
    workers: int = 1,
    threads: int | None = 1,
    on_done: Callable[[str, SectionRun], None] | None = None,
) -> dict[str, SectionRun]:
    """Run every section once its inputs are ready; returns ``{name: SectionRun}`` in the given order.

    Parameters
    ----------
    sections : the sections (their ``needs`` must name sections of the list, without cycles).
    context : handed to every ``run`` (picklable when ``workers > 1``).
    workers : processes; 1 runs everything here, in priority order. More start fresh interpreters
        (``spawn``: no state of this process is inherited but torch's threads and the memory limit in
        force, :func:`critwin.set_memory_limit`), each running one section at a time.
    threads : torch intra-op threads of each worker (None: torch's default).
    on_done : ``on_done(name, run)`` in this process when a section finishes.

    Raises
    ------
    The first error of a section, noted with the section's name (after the sections already running
    finish; none is started after it).
    """
    rank = priorities(sections)
    pending = sorted(sections, key=lambda s: -rank[s.name])
    done: dict[str, SectionRun] = {}

    def ready() -> list[Section]:
        return [s for s in pending if all(n in done for n in s.needs)]

    def finish(section: Section, result: SectionRun) -> None:
        done[section.name] = result
        _raise_again(result)
        if on_done is not None:
            on_done(section.name, result)

    def inputs_of(section: Section) -> dict[str, Any]:
        return {n: done[n]._shared for n in section.needs}  # as returned: packed by a worker

    if workers <= 1:
        while pending:
            section = ready()[0]
            pending.remove(section)
            finish(section, _execute(section, context, inputs_of(section)))
        return {s.name: done[s.name] for s in sections}
    spawn = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=spawn,
        initializer=_start_worker,
        initargs=(threads, memory_limit()),
    ) as pool:
        running: dict[futures.Future, Section] = {}
        while pending or running:
            for section in ready()[: workers - len(running)]:
                pending.remove(section)
                running[pool.submit(_execute, section, context, inputs_of(section), True)] = section
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                finish(running.pop(future), future.result())  # a section's error is raised here, named
    return {s.name: done[s.name] for s in sections}


def makespan(sections: Sequence[Section], seconds: Mapping[str, float], workers: int) -> float:
    """Wall seconds of :func:`run_sections` on ``workers`` free cores if each section takes ``seconds``
    (e.g. the CPU seconds measured on a busy machine: a quiet machine's wall time), same policy."""
    rank = priorities(sections)
    pending = sorted(sections, key=lambda s: -rank[s.name])
    finished: dict[str, float] = {}
    free = [0.0] * max(1, workers)
    while pending:
        start = min(free)
        ready = [s for s in pending if all(finished.get(n, math.inf) <= start for n in s.needs)]
        if not ready:  # wait for the next section to finish
            free[free.index(start)] = min(t for t in finished.values() if t > start)
            continue
        section = ready[0]
        pending.remove(section)
        finished[section.name] = start + seconds[section.name]
        free[free.index(start)] = finished[section.name]
    return max(finished.values(), default=0.0)


def default_workers() -> int:
    """Two (the report's two long chains of work), or one on a single-core machine."""
    return max(1, min(2, os.cpu_count() or 1))
