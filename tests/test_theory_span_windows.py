"""Every window of an eps-tree at once (critwin.theory.span_crossings): against the exact implementation on
small mixtures, against closed forms where the sure bounds decide, and its Monte Carlo path."""

import math

import numpy as np
import pytest
import torch
from torch import erfinv

from critwin.mixtures import GaussianMixture
from critwin.theory.span import SpanMixture
from critwin.theory.span_bounds import CrossingTask, bound_brackets
from critwin.theory.span_crossings import crossings
from critwin.theory.tree import hierarchy
from critwin.theory.windows import merge_time, separation_time
from test_theory_span import _clustered, _shape

F64 = torch.float64
TOL = 1e-3


def _overlap(a, b, end):
    """Whether two 95% brackets of the same time (independent draws) agree: they are at most the wider
    one's width apart (a 95% bracket is about 4 standard errors wide: missing by more than its width
    is a > 3.9 sigma event, about 1e-4 per endpoint, while ~5% of single endpoints miss by less),
    plus both bisection tolerances."""
    lo_a, hi_a = getattr(a, end + "_low"), getattr(a, end + "_high")
    lo_b, hi_b = getattr(b, end + "_low"), getattr(b, end + "_high")
    if not all(map(math.isfinite, (lo_a, hi_a, lo_b, hi_b))):
        return (lo_a, hi_a) == (lo_b, hi_b)  # -inf (never separated) or inf: both sure
    slack = 2 * TOL + max(hi_a - lo_a, hi_b - lo_b)
    return lo_b <= hi_a + slack and lo_a <= hi_b + slack


def _trees(m, n=4000, refine=False):
    kw = dict(n=n, tol=TOL)
    exact = hierarchy(m, 0.1, method="exact", generator=torch.Generator().manual_seed(0), **kw)
    fast = hierarchy(m, 0.1, method="fast", generator=torch.Generator().manual_seed(0), refine=refine, **kw)
    return exact, fast


@pytest.mark.parametrize(
    "seed,K,d,sigma2", [(0, 3, 2, 1.0), (1, 5, 10, 0.5), (2, 6, 50, 1.0), (3, 4, 3, 2.0), (4, 8, 20, 1.0)]
)
def test_fast_windows_equal_exact_within_brackets(seed, K, d, sigma2):
    exact, fast = _trees(_clustered(seed, K, d, sigma2))
    assert _shape(fast.root) == _shape(exact.root)
    for a, b in zip(exact.nodes, fast.nodes, strict=True):
        assert a.components == b.components
        if a.window is None:
            continue
        assert a.status == b.status or "undetermined" in (a.status, b.status)
        for end in ("t_after", "t_before"):
            assert _overlap(a.window, b.window, end), (a.components, end, a.window, b.window)
            # A time the bounds decide (a sure bracket, however wide: the windows' statuses need no
            # more) holds the exact one (closed form or quadrature there, within tol).
            if b.window.method == "bounds+closed-form" and "monte-carlo" not in a.window.method:
                low, high = getattr(b.window, end + "_low"), getattr(b.window, end + "_high")
                assert low - TOL <= getattr(a.window, end) <= high + TOL, (a.components, end, b.window)


def test_sure_bounds_decide_two_components_in_closed_form():
    # Two components: every TV is the pairwise erf(lam D / (2 sqrt 2)), so the bounds meet and no
    # Monte Carlo runs; the times solve (1 - w_0) erf(e^-t D / (2 sqrt 2)) = eps and erf(.) = 1 - eps^2.
    D, w0, eps = 12.0, 0.3, 0.1
    m = GaussianMixture(torch.tensor([[0.0, 0.0], [D, 0.0]], dtype=F64), 1.0, torch.tensor([w0, 1 - w0]))
    node = hierarchy(m, eps, tol=TOL).find([0])
    w = node.window
    assert w.method == "bounds+closed-form" and w.status == "non-empty"

    def crossing(tv):
        return math.log(D / (2 * math.sqrt(2) * float(erfinv(torch.tensor(tv, dtype=F64)))))

    for end, exact in (("t_before", crossing(eps / (1 - w0))), ("t_after", crossing(1 - eps**2))):
        low, high = getattr(w, end + "_low"), getattr(w, end + "_high")
        assert low <= exact <= high and high - low <= TOL
        assert getattr(w, end) == pytest.approx(exact, abs=TOL / 2)


def test_monte_carlo_where_the_bounds_do_not_decide():
    # Ten random means in d = 1000: all nearly equidistant, a flat tree; each leaf's separation from
    # the other nine is a sum of comparable overlaps, which the pairwise bounds cannot pin down. Every
    # window refined (the bounds decide the statuses already: by default no endpoint would be).
    g = torch.Generator().manual_seed(0)
    m = GaussianMixture(torch.randn(10, 1000, generator=g, dtype=F64))
    exact, fast = _trees(m, n=4000, refine=True)
    assert len(fast.root.children) == 10
    for a, b in zip(exact.nodes[1:], fast.nodes[1:], strict=True):
        assert "monte-carlo" in b.window.method
        assert a.status == b.status == "non-empty"
        for end in ("t_after", "t_before"):
            assert _overlap(a.window, b.window, end)


def test_crossings_with_set_valued_sides_match_the_exact_times():
    # Sets of several components on the small side (a log-sum-exp over them) and on the side drawn
    # from (A larger than B), against windows.merge_time / separation_time (their own draws).
    m = _clustered(7, 5, 3)
    span = SpanMixture(m, 4000)
    eps = 0.1
    tasks = [
        ([0, 2, 4], [1, 3], 1 - eps**2, 1.0, True),
        ([1], [0, 2, 3, 4], 1 - eps**2, 1.0, True),
        ([0], [2, 4], eps, 1 - float(m.weights[0] / m.weights[[0, 2, 4]].sum()), False),
    ]
    fast = crossings(span, tasks, TOL)
    kw = dict(n=40000, generator=torch.Generator().manual_seed(1), tol=TOL)
    exact = [separation_time(m, [0, 2, 4], eps, **kw), separation_time(m, [1], eps, **kw)]
    exact.append(merge_time(m, [0], [0, 2, 4], eps, **kw))
    for (t, low, high, _), (_, low_e, high_e, _) in zip(fast, exact, strict=True):
        assert low <= t <= high
        # as _overlap: at most the wider bracket's width apart, plus both tolerances
        slack = 2 * TOL + max(high - low, high_e - low_e)
        assert low <= high_e + slack and low_e <= high + slack


def test_crossings_at_the_ends_of_time():
    # Already merged at t = 0 (0), never separated (-inf), separated by bounds only past T_MAX: none.
    m = GaussianMixture(torch.tensor([[0.0], [0.01], [40.0]], dtype=F64))
    span = SpanMixture(m, 2000)
    tasks = [([0], [1], 0.1, 1.0, False), ([0], [1], 0.99, 1.0, True), ([0, 1], [2], 0.99, 1.0, True)]
    (merged, never, sep) = crossings(span, tasks, TOL)
    assert merged == (0.0, 0.0, 0.0, "bounds")
    assert never == (-math.inf, -math.inf, -math.inf, "bounds")
    # erf(e^-t 40 / (2 sqrt 2)) = 0.99 up to the 0.01 spread of {0, 1}: within the bracket
    exact = math.log(40.0 / (2 * math.sqrt(2) * float(erfinv(torch.tensor(0.99, dtype=F64)))))
    assert sep[1] - 0.01 <= exact <= sep[2] + 0.01


def test_large_tree_output_stays_readable(tmp_path):
    # 80 near-equidistant means: a flat tree. The JSON leaves out each window's after/before (the tree
    # says them), the text tree abbreviates long sets, and the plot draws every leaf window as a line.
    from matplotlib.collections import LineCollection

    g = torch.Generator().manual_seed(0)
    tree = hierarchy(GaussianMixture(torch.randn(80, 200, generator=g, dtype=F64)), 0.1, n=1000, tol=1e-2)
    assert len(tree.root.children) == 80
    leaf = tree.to_dict()["root"]["children"][0]
    assert leaf["components"] == [0] and {"after", "before"}.isdisjoint(leaf["window"])
    assert tree.render().splitlines()[0].startswith("{0,1,2,…,79} (80)  T=")
    ax = tree.plot(path=tmp_path / "tree.png")
    lines = {c.get_label(): c for c in ax.collections if isinstance(c, LineCollection)}
    by_status = {}
    for n in tree.leaves:
        by_status.setdefault(n.status, set()).add((n.window.t_after, n.window.t_before))
    assert sum(len(c.get_segments()) for label, c in lines.items() if "leaf windows" in label) == 80
    for status, windows in by_status.items():
        segments = lines[f"_leaf windows: {status}"].get_segments()
        assert {(float(s[0, 1]), float(s[1, 1])) for s in segments} == windows
    assert (tmp_path / "tree.png").read_bytes()[:4] == b"\x89PNG"


def test_complete_linkage_links_never_merging_pairs_last():
    from critwin.theory.tree import _complete_linkage

    class Engine:  # pairwise values with one component that never merges with the others
        K = 3

        def linkage_values(self, report):
            inf = math.inf
            return torch.tensor([[0.0, 1.5, inf], [1.5, 0.0, inf], [inf, inf, 0.0]], dtype=F64)

        def time_of(self, value):
            return value

    root, spreads = _complete_linkage(Engine(), lambda *a: None)
    assert root.time == math.inf and spreads[id(root)] == math.inf
    pair = next(c for c in root.children if len(c.components) == 2)
    assert pair.components == [0, 1] and pair.time == 1.5


def test_weighted_overlap_against_quadrature():
    from critwin.theory.span import weighted_overlap

    x = torch.linspace(-40.0, 60.0, 400_001, dtype=F64)
    phi = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    for delta, w, v in [
        (0.0, 0.3, 0.7),
        (0.5, 0.5, 0.5),
        (3.0, 0.9, 0.01),
        (12.0, 0.2, 0.6),
        (1e-9, 1.0, 0.4),
    ]:
        shifted = torch.exp(-0.5 * (x - delta) ** 2) / math.sqrt(2 * math.pi)
        # trapezoid rule on a 2.5e-4 grid: error far below 1e-9 for these smooth integrands
        expected = float(torch.trapezoid(torch.minimum(w * phi, v * shifted), x))
        got = float(weighted_overlap(*(torch.tensor(a, dtype=F64) for a in (delta, w, v))))
        assert got == pytest.approx(expected, abs=1e-9)


def _structured(G, S, L, d, scales=(1000.0, 40.0, 1.0), seed=0):
    """G groups x S subgroups x L leaves: means at three well separated scales (as the K = 1000 case of
    benchmarks/bench_hierarchy.py, ``structured``)."""
    g = torch.Generator().manual_seed(seed)
    top = scales[0] * torch.randn(G, d, generator=g, dtype=F64)
    mid = top.repeat_interleave(S, 0) + scales[1] * torch.randn(G * S, d, generator=g, dtype=F64)
    return GaussianMixture(
        mid.repeat_interleave(L, 0) + scales[2] * torch.randn(G * S * L, d, generator=g, dtype=F64)
    )


def test_structured_tree_has_its_three_levels_and_exact_windows():
    # 2 groups x 2 subgroups x 2 leaves in d = 20: the tree is the design (root, 2 groups, 4 pairs,
    # 8 leaves) and every window agrees with method="exact" within the brackets.
    exact, fast = _trees(_structured(2, 2, 2, 20))
    design = tuple(tuple(range(4 * g + 2 * s, 4 * g + 2 * s + 2)) for g in range(2) for s in range(2))
    assert fast.depth == 3 and len(fast.root.children) == 2
    assert [n.components for n in fast.root.children] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    pairs = tuple(tuple(n.components) for g in fast.root.children for n in g.children)
    assert pairs == design
    assert _shape(fast.root) == _shape(exact.root)
    for a, b in zip(exact.nodes[1:], fast.nodes[1:], strict=True):
        assert a.status == b.status or "undetermined" in (a.status, b.status)
        for end in ("t_after", "t_before"):
            assert _overlap(a.window, b.window, end), (a.components, end, a.window, b.window)


def test_far_components_are_left_out_with_a_sure_slack():
    # Collinear means (a 1-d span): 1 - TV(p^A, p^B) by quadrature, with and without the components
    # restrict leaves out; the difference lies in [0, slack] (module notes) and slack <= NEGLIGIBLE.
    from critwin.theory.span_bounds import NEGLIGIBLE, CrossingTask, restrict

    x = torch.tensor([[0.0], [3.0], [5.0], [80.0], [95.0], [300.0]], dtype=F64)
    m = GaussianMixture(x, 1.0, torch.tensor([0.1, 0.2, 0.15, 0.25, 0.2, 0.1], dtype=F64))
    span = SpanMixture(m, 2000)
    A, B, t = [0, 3, 4], [1, 2, 5], 0.5
    A2, B2, W_A, W_B, slack = restrict(span, [CrossingTask(A, B, 0.1, 1.0, False)], [t])[0]
    assert (A2.tolist(), B2.tolist()) == ([0], [1, 2]) and 0.0 < slack <= NEGLIGIBLE
    assert W_A == pytest.approx(0.55) and W_B == pytest.approx(0.45)
    lam = span.scale(t)
    grid = torch.linspace(-50.0, 400.0, 900_001, dtype=F64)

    def density(comps, mass):
        y = lam * x[comps, 0]  # whitened: unit variance around lam * mu
        dens = torch.exp(-0.5 * (grid[:, None] - y[None]) ** 2) / math.sqrt(2 * math.pi)
        return (dens * m.weights[comps] / mass).sum(1)

    # trapezoid on a 5e-4 grid: error far below the 1e-12 compared here
    full = float(torch.trapezoid(torch.minimum(density(A, W_A), density(B, W_B)), grid))
    kept = float(torch.trapezoid(torch.minimum(density(A2, W_A), density(B2, W_B)), grid))
    assert -1e-12 <= full - kept <= slack + 1e-12


def test_tv_values_cover_the_quadrature_tv():
    # tv_values (restricted pools) against the exact TV of collinear mixtures by quadrature: each 95%
    # interval (seed 0, so deterministic) contains it, as the estimate does.
    from critwin.theory.span_crossings import tv_values

    x = torch.tensor([[0.0], [1.5], [3.0], [60.0], [62.0]], dtype=F64)
    m = GaussianMixture(x)
    span = SpanMixture(m, 4000)
    tasks = [([0], [1, 2, 3, 4], 0.0), ([0, 1], [2, 3, 4], 0.3), ([3], [0, 1, 2, 4], 0.8)]
    grid = torch.linspace(-60.0, 130.0, 400_001, dtype=F64)
    for (A, B, t), (value, low, high) in zip(tasks, tv_values(span, tasks), strict=True):
        lam = span.scale(t)

        def density(comps, lam=lam):
            y = lam * x[comps, 0]
            return (torch.exp(-0.5 * (grid[:, None] - y[None]) ** 2) / math.sqrt(2 * math.pi)).mean(1)

        exact = 0.5 * float(torch.trapezoid((density(A) - density(B)).abs(), grid))
        assert low <= exact <= high and low <= value <= high, (A, B, t, exact, value, low, high)


def test_pooled_estimates_do_not_depend_on_the_groups_stacked_with_them():
    # Two far clusters of different sizes and weights: the pool stacks their groups in one bucket, the
    # one with fewer components padded with components of weight 0, the one with fewer draws with empty
    # rows. The first group's draws are the same with or without the other (drawn first from the same
    # seed), so its estimates must equal those of a pool of that group alone up to the float32
    # rounding of the density sums (~1e-7 relative).
    from critwin.theory.span_bounds import CrossingTask, restrict
    from critwin.theory.span_pool import Pool, group_tasks

    g = torch.Generator().manual_seed(3)
    near, far = torch.randn(3, 4, generator=g, dtype=F64), 200.0 + torch.randn(4, 4, generator=g, dtype=F64)
    weights = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.1, 0.25, 0.15], dtype=F64)
    m = GaussianMixture(torch.cat([near, far]), 1.0, weights)
    sides = [([1], [0, 2]), ([0, 1], [2]), ([4], [3, 5, 6]), ([3, 4], [5, 6])]
    times = [0.4, 0.2, 0.4, 0.2]
    shells = [CrossingTask(A, B, 0.0, 1.0, False) for A, B in sides]

    def pool(first, both):
        span = SpanMixture(m, 2000, torch.Generator().manual_seed(0))
        parts = dict(enumerate(restrict(span, shells, times)))
        groups = group_tasks(list(parts), list(parts.values()))
        assert [sorted(group.U) for group in groups] == [[0, 1, 2], [3, 4, 5, 6]]
        order = [groups[first], groups[1 - first]]
        return Pool(span, order if both else order[:1], parts), order[0].keys

    padded = set()
    for first in (0, 1):
        (stacked, keys), (alone, _) = pool(first, True), pool(first, False)
        assert len(stacked.buckets) == 1 and stacked.buckets[0].shape[0] == 2  # one bucket of both
        (size, rows), (own_size, own_rows) = stacked.buckets[0].shape[1:], alone.buckets[0].shape[1:]
        padded.add((size > own_size, rows > own_rows))
        for j, k in enumerate(keys):
            a, b = stacked.estimate([j], times[k])[0], alone.estimate([j], times[k])[0]
            assert 0.0 < b[1] < b[0] < b[2] < 1.0  # a Monte Carlo estimate with its interval
            assert abs(a - b).max() <= 1e-6, (k, a, b)
    assert padded == {(True, False), (False, True)}  # padded in components once, in rows once


@pytest.mark.parametrize("dim", [2, 6])
def test_low_rank_and_stored_draws_give_the_same_estimates(monkeypatch, dim):
    # The pool keeps a group's draws in low rank (coordinates and normals, one float64 product per
    # time) when its means span few dimensions, else as stored (|U|, rows) float32 terms; and it works
    # through the densities in pieces of rows. Both forms, and any piece size, read the same draws (the
    # same normals from the same seed), so their estimates must agree up to the float32 rounding of the
    # relative log-densities (~1e-6 in a density ratio): a wrong term in either form, or a piece whose
    # rows were lost or counted twice, moves them by far more than the 1e-5 allowed.
    from critwin.theory import span_pool
    from critwin.theory.span_bounds import CrossingTask, restrict

    g = torch.Generator().manual_seed(5)
    means = 3.0 * torch.randn(9, dim, generator=g, dtype=F64)
    weights = torch.rand(9, generator=g, dtype=F64) + 0.2
    weights = weights / weights.sum()
    m = GaussianMixture(means, 1.0, weights)
    sides = [([0], [1, 2, 3]), ([4, 5], [6, 7, 8]), ([2], [3]), ([0, 1, 2, 3], [4, 5, 6, 7, 8]), ([8], [7])]
    shells = [CrossingTask(A, B, 0.0, 1.0, False) for A, B in sides]

    def estimates(low_rank: int, pieces: int):
        monkeypatch.setattr(span_pool, "_LOW_RANK", low_rank)
        monkeypatch.setattr(span_pool, "_DENSITY_ELEMENTS", pieces)
        span = SpanMixture(m, 3000, torch.Generator().manual_seed(0))
        parts = dict(enumerate(restrict(span, shells, [2.0] * len(shells))))
        groups = span_pool.group_tasks(list(parts), list(parts.values()))
        pool = span_pool.Pool(span, groups, parts)
        assert {b.low_rank for b in pool.buckets} == {low_rank > 0}
        ks = list(range(len(shells)))
        return torch.from_numpy(np.stack([pool.estimate(ks, t) for t in (0.05, 0.3, 1.0)]))

    stored = estimates(-1, 1 << 24)
    assert ((stored[..., 1] < stored[..., 2]) & (stored[..., 1] > 0)).any()  # real Monte Carlo intervals
    for low_rank, pieces in ((-1, 50), (16, 1 << 24), (16, 50)):
        assert (estimates(low_rank, pieces) - stored).abs().max() <= 1e-5, (low_rank, pieces)


def test_windows_refined_only_as_far_as_their_status_needs():
    # refine=False against refine=True on the same mixture and seed: the same tree and
    # statuses; an endpoint the bounds decide keeps its sure bracket, which holds the refined bracket
    # (always inside the sure one); every endpoint holds the exact time (method="exact": closed
    # forms and quadrature on these pairs) within the brackets' 95% level.
    m = _structured(2, 2, 2, 20)
    kw = dict(n=4000, tol=TOL, method="fast")
    lazy = hierarchy(m, 0.1, generator=torch.Generator().manual_seed(0), refine=False, **kw)
    full = hierarchy(m, 0.1, generator=torch.Generator().manual_seed(0), refine=True, **kw)
    # refine=None (the default) is True up to REFINE_ALL_UP_TO components: 8 here
    default = hierarchy(m, 0.1, generator=torch.Generator().manual_seed(0), **kw)
    assert default.to_dict() == full.to_dict()
    with pytest.raises(ValueError, match="refine"):
        hierarchy(m, 0.1, refine="yes", **kw)
    assert _shape(lazy.root) == _shape(full.root)
    sure = 0
    for a, b in zip(full.nodes[1:], lazy.nodes[1:], strict=True):
        assert (a.components, a.time, a.separated) == (b.components, b.time, b.separated)
        assert a.status == b.status
        for end in ("t_after", "t_before"):
            low, high = getattr(b.window, end + "_low"), getattr(b.window, end + "_high")
            assert low <= getattr(b.window, end) <= high
            if b.window.method == "bounds" or b.window.method == "bounds+closed-form":
                sure += 1
                assert low <= getattr(a.window, end + "_low") and getattr(a.window, end + "_high") <= high
    assert sure > 0  # the case exercises sure-only windows


def test_a_crossing_left_unrefined_keeps_a_bracket_holding_the_refined_one():
    # crossings() with a rule that stops two merge tasks after a few rounds, against the same tasks
    # fully refined on the same draws (the rule keeps every task at the sure stage, so the pools
    # match). Every bracket stays inside its sure bracket; a stopped task's bracket holds the refined
    # Monte Carlo one where that lies strictly inside the sure bracket (not moved by honest_bracket: the
    # bisection only moves the ends inwards), and is wider; the tasks refined to the end are unchanged.
    m = _clustered(7, 5, 3)
    eps = 0.1
    merge = [1 - float(m.weights[k] / m.weights[[0, 2, 4]].sum()) for k in range(5)]
    tasks = [
        ([0, 2, 4], [1, 3], 1 - eps**2, 1.0, True),
        ([1], [0, 2, 3, 4], 1 - eps**2, 1.0, True),
        ([0], [2, 4], eps, merge[0], False),
        ([3], [0, 1, 2, 4], 1 - eps**2, 1.0, True),
        ([2], [0, 4], eps, merge[2], False),
    ]
    stopped = [2, 4]
    sure = bound_brackets(SpanMixture(m, 4000), [CrossingTask(*t) for t in tasks], TOL)
    full = crossings(SpanMixture(m, 4000), tasks, TOL)
    inside = [k for k in stopped if sure[k].low < full[k].low and full[k].high < sure[k].high]
    assert inside == stopped  # the case tests the containment of both
    for stop_after in (2, 4, 6):
        calls = []

        def needed(low, high, stop_after=stop_after, calls=calls):
            calls.append(1)
            keep = np.ones(len(low), dtype=bool)
            if len(calls) > stop_after:
                keep[stopped] = False
            return keep

        lazy = crossings(SpanMixture(m, 4000), tasks, TOL, needed=needed)
        assert len(calls) > stop_after
        for k, (a, b) in enumerate(zip(full, lazy, strict=True)):
            assert sure[k].low <= b.low <= b.time <= b.high <= sure[k].high
            if k in stopped:
                assert b.low <= a.low and a.high <= b.high, (stop_after, k, a, b)
                assert b.high - b.low > a.high - a.low
            else:  # refined to the end: the same bracket
                assert (a.low, a.high) == (b.low, b.high)
