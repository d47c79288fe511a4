"""What results look like when printed: numbers rounded to what their intervals support, tables that
print as tables, one-line reprs of every public result."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re

import pytest
import torch

import critwin
from critwin._display import Table, ci_decimals, format_ci, format_number, short_repr


@pytest.mark.parametrize(
    "value, low, high, expected",
    [
        (2.9934, 2.81, 3.19, "3.0 [2.8, 3.2]"),  # half-width 0.19 -> one decimal
        (2.9934, 2.9811, 3.0019, "2.99 [2.98, 3.00]"),  # half-width 0.0104 -> two decimals
        (123.4, 80.0, 170.0, "120 [80, 170]"),  # half-width 45 -> tens
        (0.0423, 0.0284, 0.2318, "0.04 [0.03, 0.23]"),  # half-width 0.1, one significant digit of 0.04
        (1.997, 1.3226, math.inf, "2.0 [1.3, inf]"),  # censored above: 1.997 - 1.3226 = 0.67
        (1.997, 1.3226, None, "2.0 [1.3, inf]"),  # JSON's censored bound
        (0.5, 0.5, 0.5, "0.5 [0.5, 0.5]"),  # no width: four significant digits
    ],
)
def test_format_ci_rounds_to_the_leading_digit_of_the_half_width(value, low, high, expected):
    assert format_ci(value, low, high) == expected


def test_ci_decimals_by_hand():
    assert ci_decimals(2.9934, 2.81, 3.19) == 1
    assert ci_decimals(5.0, 4.0, 6.0) == 0
    assert ci_decimals(math.inf, 1.0, 2.0) is None and ci_decimals(1.0, math.nan, math.nan) is None
    assert format_number(1 / 3) == "0.3333" and format_number(7) == "7" and format_number(-math.inf) == "-inf"


def test_short_repr_folds_an_interval_into_its_estimate():
    text = short_repr("X", {"t": 2.9934, "t_ci": (2.81, 3.19), "n": 4, "s": "ok", "t_ci_unpaired": 1.0})
    assert text == "X(t=3.0 [2.8, 3.2], n=4, s=ok, t_ci_unpaired=1)"


def _columns(n: int) -> dict:
    return {
        "feature": [f"f{i}" for i in range(n)],
        "t_half": [0.1 + i / 7 for i in range(n)],
        "t_half_lo": [i / 7 for i in range(n)],
        "t_half_hi": [0.2 + i / 7 for i in range(n)],
        "t_peak": [None] * n,
    }


def test_table_prints_aligned_rows_and_stays_a_dict():
    columns = _columns(3)
    table = Table(columns)
    assert table == columns and json.loads(json.dumps(table)) == columns  # code sees the same dict
    lines = str(table).splitlines()
    assert lines[0].split() == ["feature", "t_half", "[CI]", "t_peak"]
    # t½ 0.1 [0, 0.2]: half-width 0.1 -> one decimal; columns start at the same offset on every line
    assert lines[1].split() == ["f0", "0.1", "[0.0,", "0.2]", "None"]
    assert len({line.index("t_peak") if i == 0 else line.index("None") for i, line in enumerate(lines)}) == 1
    assert repr(table) == str(table) and "<table>" in table._repr_html_()


def test_long_tables_print_their_ends():
    table = Table(_columns(100))
    lines = str(table).splitlines()
    assert len(lines) == 1 + 15 + 1 + 5 and "... 85 rows" in lines[16]
    assert lines[1].startswith("f0 ") and lines[-1].startswith("f99 ")


def test_to_pandas_keeps_the_exact_values():
    pd = pytest.importorskip("pandas")
    frame = Table(_columns(4)).to_pandas()
    assert isinstance(frame, pd.DataFrame) and frame["t_half"].tolist() == _columns(4)["t_half"]


@pytest.fixture(scope="module")
def results():
    means = torch.zeros(4, 16, dtype=torch.float64)
    means[:, 0] = torch.tensor([-120.0, -120.0, 120.0, 120.0])
    means[:, 1] = torch.tensor([-5.0, 5.0, -5.0, 5.0])
    mix = critwin.GaussianMixture(means)
    tree = critwin.hierarchy(mix, eps=0.1)
    x0, _ = mix.subset([0]).sample(60, generator=torch.Generator().manual_seed(0))
    fr = critwin.forward_reverse(
        mix, x0, times=[0.3, 1.5, 3.0, 5.0], feature="component", sampler="exact", seed=0
    )
    est = critwin.estimate_window(fr, n_boot=20)
    from critwin.diagnostics.fairness import rebalance
    from critwin.experiments.process import MixtureProcess

    g = torch.Generator().manual_seed(0)
    members, others = (torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (10, 20))
    return {
        "window": critwin.critical_window(mix, after=[0], before=[0, 1], eps=0.1),
        "times": critwin.transition_times(mix, [0], [0, 1], eps=0.1),
        "tree": tree,
        "node": tree.root.children[0],
        "tv": critwin.tv(mix.subset([0]), mix, 0.5),
        "forward_reverse": fr,
        "estimate": est,
        "mixture": mix,
        "schedule": critwin.DiscreteSchedule.linear(),
        "clone": critwin.clone(MixtureProcess(mix, "ddpm", n_steps=10), 6, [0.3, 0.8], 2, seed=0),
        "search": critwin.search_window(mix, x0, delta=0.1, resolution=0.5, t_range=(0.0, 6.0), seed=0),
        "rebalance": rebalance(mix, 12, "bayes", 4, 1.5, n_candidates=2, seed=0),
        "model": critwin.load_digits_model(),
        "diffusers_process": critwin.load_digits_model().process(20),
        "mixture_process": MixtureProcess(mix, "ddpm", n_steps=10),
        "audit": critwin.membership_audit(
            critwin.EmpiricalMixture(members), members, others, [0.05, 0.5], sampler="exact", fpr=0.1, seed=0
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["window", "times", "tree", "node", "tv", "forward_reverse", "estimate", "mixture", "schedule"]
    + ["clone", "search", "rebalance", "audit", "model", "diffusers_process", "mixture_process"],
)
def test_reprs_are_one_short_line(results, name):
    text = repr(results[name])
    # one line a reader takes in at a glance (Tree was 3,029 characters, its nodes nested inside)
    assert "\n" not in text and len(text) <= 160, text
    assert " object at 0x" not in text, text  # the default repr says nothing about the result
    assert not any(len(digits) > 5 for digits in _decimals(text)), text  # no unrounded floats


def _decimals(text: str) -> list[str]:
    return re.findall(r"\.(\d+)", text)


def test_window_repr_rounds_its_times_to_their_brackets(results):
    w = results["window"]
    assert f"t_after={format_ci(w.t_after, w.t_after_low, w.t_after_high)}" in repr(w)
    est = results["estimate"]
    assert f"t_half={format_ci(est.t_half, *est.t_half_ci)}" in repr(est)
    assert est.status == ("empty" if est.empty else "non-empty")


def _public_dataclasses():
    """Every dataclass a public module of critwin exports (``__all__``); the demo report's section
    records (critwin.report) are not results a user holds."""
    import importlib
    import pkgutil

    seen = {}
    for info in pkgutil.walk_packages(critwin.__path__, "critwin."):
        parts = info.name.split(".")[1:]
        if parts[0] == "report" or any(part.startswith("_") for part in parts):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # a module of an optional dependency that is not installed
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)  # a lazily loaded submodule's name: walked on its own
            if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
                seen[obj.__qualname__] = obj
    return seen


def test_every_public_dataclass_defines_its_own_repr():
    """A dataclass's generated repr prints every field: arrays, tensors and nested nodes (the digits
    data printed 9,264 characters on 152 lines)."""
    classes = _public_dataclasses()
    assert {"Window", "Tree", "WindowEstimate", "ShapesData", "RebalanceResult", "T2IData"} <= set(classes)
    missing = [name for name, cls in classes.items() if _generated_repr(cls) and not _scalar_fields(cls)]
    assert not missing, missing


def _generated_repr(cls) -> bool:
    """True when ``repr`` of ``cls`` is the one ``@dataclass`` wrote (not a hand-written one, own or
    inherited)."""
    owner = next(c for c in cls.__mro__ if "__repr__" in c.__dict__)
    params = getattr(owner, "__dataclass_params__", None)
    return params is not None and params.repr and "def __repr__" not in inspect.getsource(owner)


def _scalar_fields(cls) -> bool:
    """True when no field holds an array, tensor, list or nested result (a config of numbers, strings and
    small tuples: its generated repr is the call that rebuilds it, one line of a few hundred characters)."""
    bulky = re.compile(r"Tensor|ndarray|list|Any|Node|Result|Data")
    return not any(bulky.search(str(f.type)) for f in dataclasses.fields(cls))
