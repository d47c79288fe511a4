"""The demo's section runner: longest chain first, dependencies respected, the same report on one process
or two, and section 5's runs measured apart give exactly the numbers of one call."""

from __future__ import annotations

import functools
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from critwin._memory import memory_limit, set_memory_limit
from critwin.report.demo import run_demo
from critwin.report.schedule import Section, makespan, priorities, run_sections


def _value(ctx, inputs, name):
    """A toy section: its own name and context, and what it received (in a worker process: importable)."""
    return {"name": name, "ctx": ctx, "got": sorted(inputs.items())}, name.upper()


def _toy(name, cost, needs=()):
    return Section(name, functools.partial(_value, name=name), cost, tuple(needs))


def _fail(ctx, inputs):
    raise ValueError("section exploded")


def _warn_twice(ctx, inputs):
    for _ in range(2):  # the same warning twice: recorded once
        warnings.warn("the schedule's first step still carries signal", RuntimeWarning, stacklevel=1)
    warnings.warn("a second, different note", UserWarning, stacklevel=1)
    return None, None


def _frozen_normal(ctx, inputs):
    import scipy.stats  # only in the worker

    return None, scipy.stats.norm(loc=2.0)


def _mean_of_input(ctx, inputs):
    return float(inputs["normal"].mean()), None


def _limit_here(ctx, inputs):
    return memory_limit(), None


TOYS = [
    _toy("a", 5.0),
    _toy("b", 1.0, ["a"]),
    _toy("c", 4.0),
    _toy("d", 2.0, ["b", "c"]),
    _toy("e", 3.5),
]


def test_priority_is_the_longest_chain_of_work_from_a_section():
    # a -> b -> d: 5 + 1 + 2; c -> d: 4 + 2; e alone: 3.5.
    assert priorities(TOYS) == {"a": 8.0, "b": 3.0, "c": 6.0, "d": 2.0, "e": 3.5}


def test_one_process_runs_ready_sections_longest_chain_first():
    order = []
    done = run_sections(TOYS, "ctx", workers=1, on_done=lambda name, run: order.append(name))
    assert order == ["a", "c", "e", "b", "d"]
    assert list(done) == ["a", "b", "c", "d", "e"]  # results in the listed order
    assert done["d"].summary["got"] == [("b", "B"), ("c", "C")]
    assert all(run.wall_seconds >= 0 and run.cpu_seconds >= 0 for run in done.values())


def test_makespan_follows_the_same_policy():
    # Two cores: a 0-5 | c 0-4, e 4-7.5 (b waits for a) | b 5-6 | d 6-8 (needs b, c): 8 s; one: the sum.
    seconds = {s.name: s.cost for s in TOYS}
    assert makespan(TOYS, seconds, 2) == 8.0
    assert makespan(TOYS, seconds, 1) == sum(seconds.values())
    assert makespan(TOYS, seconds, 5) == 8.0  # the chain a -> b -> d bounds it


def test_two_workers_give_what_one_process_gives():
    # threads=None: the workers need not import torch to run toy sections (a second each on a busy core).
    one = run_sections(TOYS, {"seed": 3}, workers=1)
    order = []
    two = run_sections(TOYS, {"seed": 3}, workers=2, threads=None, on_done=lambda n, r: order.append(n))
    assert {k: (v.summary, v.shared) for k, v in one.items()} == {
        k: (v.summary, v.shared) for k, v in two.items()
    }
    # Whatever the finishing order, every section finished after the sections it needs.
    assert sorted(order) == sorted(one)
    assert all(order.index(n) < order.index(s.name) for s in TOYS for n in s.needs)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_section_raises_its_error_naming_the_section(workers):
    sections = [_toy("a", 1.0), Section("bad", _fail, 2.0), _toy("after", 0.5, ["bad"])]
    finished = []
    with pytest.raises(ValueError, match="section exploded") as caught:
        run_sections(sections, None, workers=workers, threads=None, on_done=lambda n, r: finished.append(n))
    assert "(in report section 'bad')" in caught.value.__notes__
    assert "after" not in finished  # nothing that needs the failed section runs


def test_the_scheduling_process_imports_none_of_the_sections_libraries():
    # It lists the sections and writes the page; the workers import diffusers, transformers, scipy and
    # matplotlib (each process about 8 s of CPU): a third import there cost the demo that much again.
    code = (
        "import sys\n"
        "import critwin.report.demo as demo\n"
        "names = [s.name for s in demo.demo_sections()]\n"
        "heavy = ('diffusers', 'transformers', 'scipy', 'matplotlib', 'sklearn', 'critwin.experiments')\n"
        "print(len(names), sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) >= 8 and loaded.strip() == "[]", done.stdout


def test_a_shared_result_passes_through_the_caller_unpickled():
    # A worker's shared result reaches the sections that need it without being unpickled in the caller,
    # which would import its classes' library there (scipy here; diffusers for the digits section).
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_report_schedule as t\n"
        "from critwin.report.schedule import Section, run_sections\n"
        "listed = [Section('normal', t._frozen_normal, 2.0), "
        "Section('mean', t._mean_of_input, 1.0, ('normal',))]\n"
        "done = run_sections(listed, None, workers=2, threads=None)\n"
        "print(done['mean'].summary, 'scipy' in sys.modules)\n"
        "print(done['normal'].shared.mean(), 'scipy' in sys.modules)\n"  # read here: unpickled here
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["2.0 False", "2.0 True"], done.stdout


def test_workers_keep_the_callers_memory_limit():
    set_memory_limit("3M")  # set in this process only: a spawned worker would start at the default
    try:
        done = run_sections([Section("limit", _limit_here, 1.0)], None, workers=2, threads=None)
    finally:
        set_memory_limit(None)
    assert done["limit"].summary == 3 * 2**20


def test_a_low_limit_set_after_import_is_refused_by_a_section_not_by_a_workers_import(monkeypatch, tmp_path):
    # The demo's module (and with it every model's presets) was imported above, before the limit:
    # the spawned workers import it again under the limit they inherit. A preset checked at import
    # killed them there (BrokenProcessPool); checked at use, a section refuses with the guard's message.
    monkeypatch.setenv("CRITWIN_MEMORY_LIMIT", "1K")
    with pytest.raises(ValueError, match="above the memory limit of") as caught:
        run_demo(tmp_path / "report", quick=True, progress=False, workers=2)
    assert any(note.startswith("(in report section") for note in caught.value.__notes__)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sections_warnings_are_raised_again_in_the_calling_process(workers):
    # Two workers: the warnings are raised in a spawned process, whose stderr the caller cannot filter.
    sections = [Section("noisy", _warn_twice, 1.0), _toy("quiet", 0.5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = run_sections(sections, None, workers=workers, threads=None)
    assert done["noisy"].warnings == (
        (RuntimeWarning, "the schedule's first step still carries signal"),
        (UserWarning, "a second, different note"),
    )
    assert done["quiet"].warnings == ()
    assert [(w.category, str(w.message)) for w in caught] == list(done["noisy"].warnings)


@pytest.mark.parametrize(
    "listed, message",
    [
        ([_toy("a", 1.0, ["zz"])], "unknown sections"),
        ([_toy("a", 1.0, ["b"]), _toy("b", 1.0, ["a"])], "cycle"),
        ([_toy("a", 1.0), _toy("a", 2.0)], "distinct names"),
    ],
)
def test_bad_section_lists_are_refused(listed, message):
    with pytest.raises(ValueError, match=message):
        priorities(listed)


def test_section_5_runs_measured_apart_equal_one_call():
    """bootstrap_generator replays the generator of one compare_parameterisations call, so runs measured
    in other processes (and their pairing) give the very numbers of the single call."""
    import torch

    from critwin.models.digits import load_digits_model
    from critwin.report import invariance
    from critwin.report.sections import digit_sources

    x0 = digit_sources(load_digits_model().training_data(), 1)
    runs, pairs = invariance.compared_runs()
    sizes = dict(n_times=3, inference_steps=4, n_boot=6, seed=5)
    whole = invariance.compare_parameterisations(x0, runs, pairs, **sizes)
    apart = {
        run.label: invariance.measure_window(run, x0, generator=invariance.bootstrap_generator(5, i), **sizes)
        for i, run in enumerate(runs)
    }
    paired = invariance.compare_parameterisations(
        x0, runs, pairs, measured=apart, generator=invariance.bootstrap_generator(5, len(runs)), **sizes
    )
    assert paired.summary() == whole.summary()
    # ... and the replay is not vacuous: another generator state changes the bootstrap intervals.
    shifted = invariance.measure_window(runs[1], x0, generator=torch.Generator().manual_seed(99), **sizes)
    assert shifted.summary() != whole.windows[runs[1].label].summary()
