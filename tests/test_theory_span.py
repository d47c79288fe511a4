"""Hierarchies at scale: the span reduction against the exact tree, closed forms against bisection,
the sure bounds against Monte Carlo, no (d, d) matrix, and the memory limit."""

import json
import math

import pytest
import torch
from torch import erfinv

import critwin
from critwin._memory import check_memory, memory_limit, set_memory_limit
from critwin.mixtures import GaussianMixture
from critwin.theory.divergence import component_tv, kl_gaussians, tv
from critwin.theory.span import SpanMixture
from critwin.theory.tree import hierarchy
from critwin.theory.windows import merge_time

F64 = torch.float64


def _clustered(seed, K=5, d=4, sigma2=1.0):
    """Random two-level clusters: tight pairs/triples far apart (complete linkage has no near ties)."""
    g = torch.Generator().manual_seed(seed)
    centres = 60.0 * torch.randn(2, d, generator=g, dtype=F64)
    means = centres[torch.arange(K) % 2] + 4.0 * torch.randn(K, d, generator=g, dtype=F64)
    weights = torch.rand(K, generator=g, dtype=F64) + 0.3
    return GaussianMixture(means, sigma2, weights / weights.sum())


def _shape(node):
    return (tuple(node.components), tuple(sorted(_shape(c) for c in node.children)))


@pytest.mark.parametrize("seed,sigma2", [(0, 1.0), (1, 0.5), (2, 2.0)])
def test_fast_tree_equals_exact_tree(seed, sigma2):
    m = _clustered(seed, sigma2=sigma2)
    kw = dict(windows=False, generator=torch.Generator().manual_seed(0))
    exact, fast = hierarchy(m, 0.1, method="exact", **kw), hierarchy(m, 0.1, method="fast", **kw)
    assert _shape(fast.root) == _shape(exact.root)
    for a, b in zip(exact.nodes, fast.nodes, strict=True):
        # exact times are bisection midpoints (within tol/2 = 5e-5 of the crossing); fast ones are closed form
        assert b.time == pytest.approx(a.time, abs=1e-4)
        assert b.merged == a.merged
        # the fast check is decided by sure bounds where they suffice: it may only resolve an undetermined one
        assert a.separated is None or b.separated == a.separated


def test_closed_form_merge_time_matches_bisection():
    m = _clustered(3, K=4, sigma2=0.7)
    span = SpanMixture(m)
    for i, j in [(0, 1), (0, 2), (1, 3)]:
        t = float(span.merge_time_of(span.sq_dist[i, j], 0.2))
        assert t == pytest.approx(merge_time(m, [i], [j], 0.2, tol=1e-6)[0], abs=1e-6)
        # and the pairwise TV there is eps (component_tv: the independent dense closed form)
        assert float(span.pair_tv(t)[i, j]) == pytest.approx(component_tv(m, i, j, t)[0], abs=1e-12)
        assert component_tv(m, i, j, t)[0] == pytest.approx(0.2, abs=1e-9)


def test_bounds_contain_the_tv():
    m = _clustered(4, K=6, d=3)
    span = SpanMixture(m)
    A, B = [0, 2], [1, 3, 5]
    for t in (0.5, 2.0, 3.5):
        low, high = span.bounds(A, B, t)
        est = tv(m.subset(A), m.subset(B), t, 40000)
        # sure bounds must contain the MC interval's point estimate up to its interval
        assert low <= est.high and est.low <= high
        mc = span.tv(A, B, t)
        assert abs(mc.value - est.value) <= 4 * math.hypot(mc.stderr, est.stderr) + 1e-3


def test_fast_windows_match_exact_within_brackets():
    m = _clustered(5, K=4, d=3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    exact = hierarchy(m, 0.1, method="exact", generator=g(), n=4000, tol=1e-3)
    fast = hierarchy(m, 0.1, method="fast", generator=g(), n=4000, tol=1e-3)
    for a, b in zip(exact.nodes, fast.nodes, strict=True):
        if a.window is None:
            continue
        assert a.status == b.status or "undetermined" in (a.status, b.status)
        for end in ("t_after", "t_before"):
            lo_a, hi_a = getattr(a.window, end + "_low"), getattr(a.window, end + "_high")
            lo_b, hi_b = getattr(b.window, end + "_low"), getattr(b.window, end + "_high")
            # two Monte Carlo brackets of the same time overlap (slack: bisection tolerance)
            assert lo_b <= hi_a + 2e-3 and lo_a <= hi_b + 2e-3


def test_high_dimension_stays_in_the_span():
    # d = 1e5, K = 8: a (d, d) float64 matrix would be 80 GB; with a 1 GiB limit any dense path is refused.
    g = torch.Generator().manual_seed(0)
    means = 3.0 * torch.randn(8, 100_000, generator=g, dtype=F64)
    set_memory_limit("1G")
    try:
        tree = hierarchy(GaussianMixture(means), 0.1, windows=False)
        assert sorted(tree.root.components) == list(range(8))
        # the pairwise closed form of the core also stays diagonal, and a dense path is refused up front
        assert component_tv(GaussianMixture(means), 0, 1)[1]
        with pytest.raises(ValueError, match=r"dense \(100000, 100000\) covariance.*about 224 GiB"):
            kl_gaussians(means[0], torch.ones(100_000, 1, dtype=F64), means[1], None)
    finally:
        set_memory_limit(None)


def test_memory_limit_api(monkeypatch):
    monkeypatch.setenv("CRITWIN_MEMORY_LIMIT", "2M")
    assert memory_limit() == 2 * 2**20
    with pytest.raises(ValueError, match=r"about 0.00391 GiB.*memory limit of 0.00195 GiB.*set_memory_limit"):
        check_memory(4 * 2**20, "a test array")
    critwin.set_memory_limit(10_000)
    assert memory_limit() == 10_000
    critwin.set_memory_limit(None)
    monkeypatch.setenv("CRITWIN_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="CRITWIN_MEMORY_LIMIT"):
        memory_limit()
    for bad in (0, -5, 1.5, True, "x"):
        with pytest.raises(ValueError, match="n_bytes"):
            set_memory_limit(bad)


def test_method_and_progress_validation():
    m = GaussianMixture(torch.tensor([[0.0], [9.0]], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64))
    with pytest.raises(ValueError, match="method"):
        hierarchy(m, 0.1, method="fast")
    with pytest.raises(ValueError, match="method"):
        hierarchy(m, 0.1, method="quick")
    with pytest.raises(ValueError, match="progress"):
        hierarchy(m, 0.1, progress=3)
    seen = []
    hierarchy(
        GaussianMixture(torch.tensor([[0.0], [50.0]], dtype=F64)), 0.1, progress=lambda *a: seen.append(a)
    )
    assert {s[0] for s in seen} == {"pairs", "verify", "windows"} and all(d <= t for _, d, t in seen)


def test_cli_hierarchy_progress_json_out_and_large_plot(tmp_path, capsys):
    from critwin.cli import main
    from critwin.io_mixture import save_mixture

    # 60 components on a line, 50 apart, no windows: progress on stderr, stdout stays one JSON object.
    means = 50.0 * torch.arange(60, dtype=F64).unsqueeze(1)
    path, out, png = tmp_path / "m.json", tmp_path / "tree.json", tmp_path / "tree.png"
    save_mixture(GaussianMixture(means), path)
    args = ["hierarchy", str(path), "--no-windows", "--json", "--out", str(out), "--plot", str(png)]
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert code in (0, None)
    printed = json.loads(captured.out)
    assert printed == json.loads(out.read_text())
    assert sorted(printed["root"]["components"]) == list(range(60))
    # complete linkage: the root merges the two ends, 50 * 59 apart: ln(D / (2 sqrt2 erfinv 0.1))
    assert printed["root"]["time"] == pytest.approx(
        math.log(2950 / (2 * math.sqrt(2) * float(erfinv(torch.tensor(0.1, dtype=F64))))), abs=1e-9
    )
    assert "hierarchy: verify" in captured.err and "hierarchy:" not in captured.out
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("K,d", [(40, 3), (12, 30)])
def test_span_coordinates_reproduce_the_means_geometry_in_either_basis(K, d):
    """More means than dimensions: the basis comes from the (d, d) scatter matrix; otherwise from the
    (K, K) Gram matrix. Either way the coordinates are an isometric image of the centred means: their
    inner products are the means' (and the rank is that of the span)."""
    g = torch.Generator().manual_seed(K)
    means = 3 * torch.randn(K, d, generator=g, dtype=torch.float64)
    span = SpanMixture(GaussianMixture(means, 1.0))
    centred = means - means.mean(0)
    assert span.coords.shape == (K, min(d, K - 1))
    torch.testing.assert_close(span.coords @ span.coords.T, centred @ centred.T, rtol=0, atol=1e-10 * K * d)


# A tree over 9 components (pre-order, a parent before its children): node k's parent is _PARENTS[k].
_NODES = [
    [0, 1, 2, 3, 4],
    [0, 1],
    [0],
    [1],
    [2, 3, 4],
    [2],
    [3, 4],
    [3],
    [4],
    [5, 6, 7, 8],
    [5, 6],
    [7, 8],
    [8],
]
_PARENTS = [-1, 0, 1, 1, 0, 4, 4, 6, 6, -1, 9, 9, 11]


def _pairwise_and_nested(m, times):
    from critwin.theory.span_bounds import complement, nested_tv_bounds, tv_bounds_at

    span = SpanMixture(m)
    K = m.n_components
    nested = torch.tensor(nested_tv_bounds(span, _NODES, _PARENTS, times), dtype=F64)
    pairwise = torch.tensor(tv_bounds_at(span, [(A, complement(A, K)) for A in _NODES], times), dtype=F64)
    return nested, pairwise


@pytest.mark.parametrize("t", [0.05, 0.6, 1.5, 3.0])
def test_nested_bounds_hold_and_are_never_tighter_than_the_pairwise_ones(t):
    """The per-subtree bounds of the verification contain the TV itself (quadrature in d = 2) and the
    pairwise bounds they stand in for, at every node against its complement."""
    g = torch.Generator().manual_seed(7)
    means = 2.5 * torch.randn(9, 2, generator=g, dtype=F64)
    weights = torch.rand(9, generator=g, dtype=F64) + 0.2
    m = GaussianMixture(means, 0.6, weights / weights.sum())
    times = [t] * len(_NODES)
    nested, pairwise = _pairwise_and_nested(m, times)
    assert (nested[:, 0] <= pairwise[:, 0] + 1e-15).all() and (nested[:, 1] >= pairwise[:, 1] - 1e-15).all()
    for (low, high), A in zip(nested.tolist(), _NODES, strict=True):
        rest = [j for j in range(9) if j not in A]
        exact = tv(m.subset(A), m.subset(rest), t, method="quadrature")
        # quadrature error ~1e-8 here; a bound that misses the TV misses it by far more
        assert low - 1e-7 <= exact.value <= high + 1e-7


def test_nested_bounds_equal_the_pairwise_ones_when_the_distances_are_equal():
    """Equal weights and equidistant means (a regular simplex): every ``a`` sees all of its complement at
    one distance, so Jensen's and the concavity step are equalities and the two bounds coincide."""
    m = GaussianMixture(4.0 * torch.eye(9, dtype=F64), 1.0)
    for t in (0.0, 0.4, 1.2):
        nested, pairwise = _pairwise_and_nested(m, [t] * len(_NODES))
        torch.testing.assert_close(nested, pairwise, rtol=0, atol=1e-11)


def test_nested_bounds_refuse_a_list_that_is_not_a_tree():
    from critwin.theory.span_bounds import nested_tv_bounds

    span = SpanMixture(GaussianMixture(torch.randn(5, 2, dtype=F64), 1.0))
    with pytest.raises(ValueError, match="parents"):
        nested_tv_bounds(span, [[0, 1], [0]], [-1, 1], [0.0, 0.0])  # a parent after its child
    with pytest.raises(ValueError, match="subset"):
        nested_tv_bounds(span, [[0, 1], [0, 2]], [-1, 0], [0.0, 0.0])  # not inside its parent
    with pytest.raises(ValueError, match="subset"):
        nested_tv_bounds(span, [[0, 1, 2], [0, 1], [1]], [-1, 0, 0], [0.0] * 3)  # overlapping siblings
    with pytest.raises(ValueError, match="outside"):
        nested_tv_bounds(span, [list(range(5))], [-1], [0.0])


def test_verification_by_subtrees_keeps_every_decision(monkeypatch):
    """The hierarchy with the per-subtree bounds forced (every size) against the pairwise ones: the same
    tree and decisions; the separation intervals only widen, each still containing the pairwise one."""
    from critwin.theory import span_bounds

    g = torch.Generator().manual_seed(3)
    m = GaussianMixture(torch.randn(60, 20, generator=g, dtype=F64), 1.0)
    pairwise = hierarchy(m, 0.1, windows=False, method="fast", generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(span_bounds, "_NESTED_ABOVE", -1)
    nested = hierarchy(m, 0.1, windows=False, method="fast", generator=torch.Generator().manual_seed(0))
    assert _shape(nested.root) == _shape(pairwise.root)
    for a, b in zip(pairwise.nodes, nested.nodes, strict=True):
        assert (a.merged, a.separated) == (b.merged, b.separated)
        if a.separation_tv_low is not None:
            assert b.separation_tv_low <= a.separation_tv_low + 1e-15
            assert b.separation_tv_high >= a.separation_tv_high - 1e-15


@pytest.mark.parametrize(
    "delta, w, v", [(0.7, 0.3, 0.5), (2.5, 0.05, 0.9), (0.0, 0.2, 0.4), (1.3, 0.0, 0.6), (1.3, 0.0, 0.0)]
)
def test_weighted_overlap_is_the_quadrature_of_the_smaller_density(delta, w, v):
    # int min(w N(0, 1), v N(delta, 1)) by the trapezoid rule on [-12, 12 + delta] (error ~1e-9); a
    # weight 0 on both sides is 0, not log(0/0) = NaN (which made a task's lower bound never hold)
    from critwin.theory.span import weighted_overlap

    x = torch.linspace(-12.0, 12.0 + delta, 400_001, dtype=torch.float64)
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    smaller = torch.minimum(w * normal.log_prob(x).exp(), v * normal.log_prob(x - delta).exp())
    exact = float(torch.trapezoid(smaller, x))
    got = float(weighted_overlap(*(torch.tensor(a, dtype=torch.float64) for a in (delta, w, v))))
    assert got == pytest.approx(exact, abs=1e-8)
