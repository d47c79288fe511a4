"""Progress in a Jupyter notebook: an HTML bar updated in place in the cell's output (no ipywidgets).

The default tests fake the kernel (``IPython.get_ipython()`` with a ``kernel``, and an
``IPython.display.display`` that records what it is given); the slow test runs a real notebook cell
through a kernel with nbclient when ipykernel and nbclient are installed.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from critwin import GaussianMixture, atlas, clone, forward_reverse
from critwin._display import NotebookProgress, in_notebook
from critwin.experiments.process import MixtureProcess


class _Handle:
    def __init__(self, log, first):
        self.log = log
        log.append(("display", first))

    def update(self, obj):
        self.log.append(("update", obj))


@pytest.fixture
def fake_kernel(monkeypatch):
    """An IPython module as a Jupyter kernel presents it; returns the log of displays and updates."""
    log = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    display = types.ModuleType("IPython.display")
    display.display = lambda obj, display_id=False: _Handle(log, obj) if display_id else None
    ipython.display = display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return log


def _bars(log):
    """Per bar (one display each): its description and final (done, total)."""
    out, current = [], None
    for kind, view in log:
        if kind == "display":
            current = [view.description, None]
            out.append(current)
        current[1] = (view.done, view.total)
    return out


def _mixture():
    return GaussianMixture(torch.tensor([[2.0, 0.0], [-2.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("shell", [None, types.SimpleNamespace()], ids=["plain-python", "ipython-terminal"])
def test_outside_a_kernel_is_no_notebook(shell, monkeypatch):
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert not in_notebook()
    monkeypatch.delitem(sys.modules, "IPython")
    assert not in_notebook()


def test_sweeps_draw_one_html_bar_each_in_a_notebook(fake_kernel):
    assert in_notebook()
    mix = _mixture()
    x0 = mix.sample(12, generator=torch.Generator().manual_seed(0))[0]
    forward_reverse(mix, x0, [0.2, 0.5, 1.0], chunk_size=4, seed=0, progress=True)
    clone(MixtureProcess(mix, "ddpm", n_steps=10), 6, [0.3, 0.8], 2, seed=0, progress=True)
    bars = _bars(fake_kernel)
    # forward-reverse: 3 times x 3 chunks of 4 sources = 9 units; every bar ends full.
    assert bars[0] == ["forward-reverse", (9, 9)]
    assert bars[1][0] == "cloning" and bars[1][1][0] == bars[1][1][1] > 0
    final = fake_kernel[-1][1]
    assert "<progress value='" in final._repr_html_() and "done in" in repr(final)


def test_atlas_shows_progress_by_default(fake_kernel):
    mix = _mixture()
    x, labels = mix.sample(200, generator=torch.Generator().manual_seed(1))
    process = MixtureProcess(mix, "exact", times=[2.0, 1.0, 0.5, 0.0])
    atlas(process, {"side": lambda v: (v[:, 0] < 0).long()}, data=(x, {"side": labels}), n_boot=0)
    names = [bar[0] for bar in _bars(fake_kernel)]
    # the sweep, the cloning sweep and the fitted mixture's like-for-like sweep
    assert names == ["forward-reverse", "cloning", "forward-reverse"]
    assert all(done == total for _, (done, total) in _bars(fake_kernel))


def test_redraws_are_throttled_but_the_end_is_always_shown(fake_kernel):
    now = [0.0]
    bar = NotebookProgress(1000, "work", min_interval=0.25, clock=lambda: now[0])
    for _ in range(999):
        bar.advance()  # no time passes: no redraw
    assert [kind for kind, _ in fake_kernel] == ["display"]
    now[0] = 1.0
    bar.advance()
    bar.close()
    assert [kind for kind, _ in fake_kernel] == ["display", "update", "update"]
    assert (fake_kernel[-1][1].done, fake_kernel[-1][1].total) == (1000, 1000)


def test_time_left_is_extrapolated_from_the_pace():
    from critwin._display import _BarView

    assert repr(_BarView("fit", 25, 100, 10.0)) == "fit: 25/100 (10 s elapsed, ~30 s left)"
    assert repr(_BarView("fit", 0, 100, 0.0)) == "fit: 0/100 (0 s elapsed)"
    assert repr(_BarView("fit", 100, 100, 75.0)) == "fit: 100/100 (done in 1:15)"


@pytest.mark.slow
def test_a_real_kernel_renders_the_bar(tmp_path):
    """A notebook cell runs a sweep with progress in a Jupyter kernel; its saved output holds the bar."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    cell = (
        "import torch, critwin\n"
        "mix = critwin.GaussianMixture(torch.tensor([[2.0, 0.0], [-2.0, 0.0]], dtype=torch.float64))\n"
        "x0 = mix.sample(8, generator=torch.Generator().manual_seed(0))[0]\n"
        "r = critwin.forward_reverse(mix, x0, [0.2, 1.0], chunk_size=4, seed=0)\n"
    )
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3").execute()
    outputs = book.cells[0].outputs
    shown = [o for o in outputs if o.get("output_type") == "display_data"]
    assert len(shown) == 1, outputs  # one bar, updated in place (no stderr text, no widget)
    html = shown[0]["data"]["text/html"]
    assert "<progress value='4' max='4'" in html and "forward-reverse" in html
    assert not [o for o in outputs if o.get("name") == "stderr"]
