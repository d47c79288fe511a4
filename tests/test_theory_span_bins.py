"""The binned sure-bound bisection of :mod:`critwin.theory.span_bounds`: the bins bracket both TV
bounds of every task, and the bisection answered from them gives the brackets of the bisection on every
pair (today's path, the bins switched off), which hold the crossings of the bounds."""

import math

import numpy as np
import pytest
import torch

import critwin.theory.span_bounds as sb
from critwin.mixtures import GaussianMixture
from critwin.theory.span import SpanMixture
from critwin.theory.span_bounds import CrossingTask, bound_brackets, tv_bounds_at


def _mixture(kind: str, K: int, seed: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    weights = None
    if kind == "equidistant":  # random means in high dimension: a flat tree
        means = torch.randn(K, 100, generator=g, dtype=torch.float64)
    elif kind == "clustered":  # three clusters far apart, tight inside
        centres = 30.0 * torch.randn(3, 20, generator=g, dtype=torch.float64)
        means = centres[torch.arange(K) % 3] + torch.randn(K, 20, generator=g, dtype=torch.float64)
    else:  # a dense cloud in the plane, unequal weights (the ratio bins)
        means = 20.0 * torch.randn(K, 2, generator=g, dtype=torch.float64)
        weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.05
        weights[:3] = 0.0  # weight 0 (ratio inf): such pairs are left out of the bins (they add 0)
        weights = weights / weights.sum()
    return GaussianMixture(means, weights=weights)


def _tasks(K: int, seed: int, eps: float = 0.1) -> list[CrossingTask]:
    """A tree's tasks: each leaf's merge and separation against the rest, and random splits (sides of
    many components, so that the bins hold pairs of several weight ratios)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for a in rng.choice(np.arange(3, K), 12, replace=False):
        rest = [b for b in range(K) if b != a]
        tasks.append(CrossingTask([int(a)], rest, 1.0 - eps * eps, 1.0, True))
        tasks.append(CrossingTask([int(a)], rest, eps, 1.0 - 1.0 / K, False))
    for _ in range(8):
        perm = rng.permutation(K)
        cut = int(rng.integers(2, K // 3))
        A = [int(a) for a in perm[:cut] if a >= 3]  # the weights 0 (if any) in B only: see _mixture
        B = [int(b) for b in perm if b not in set(A)]
        tasks.append(CrossingTask(A, B, 1.0 - eps * eps, 1.0, True))
        tasks.append(CrossingTask(A, B, eps, float(rng.uniform(0.3, 1.0)), False))
    return tasks


def _holds(task: CrossingTask, value: float) -> bool:
    f = task.factor * value
    return f < task.level if task.separation else f <= task.level


@pytest.mark.parametrize("kind", ["equidistant", "clustered", "weighted cloud"])
@pytest.mark.parametrize("seed", [0, 1])
def test_bins_bracket_both_bounds_of_every_task(monkeypatch, kind, seed):
    K = 120
    monkeypatch.setattr(sb, "_BIN_ABOVE", 16)
    monkeypatch.setattr(sb, "_D_BINS", 8)
    span = SpanMixture(_mixture(kind, K, seed))
    tasks = _tasks(K, seed)
    sides = sb._sides(span, tasks)
    pairs = sb._pairs(span, sides)
    counts = torch.tensor([len(t.A) * len(t.B) for t in tasks])
    factor = torch.tensor([t.factor for t in tasks], dtype=torch.float64)
    bins = sb._bins(pairs, counts)
    assert bins is not None and bool((bins.row >= 0).all())
    active = np.ones(len(tasks), dtype=bool)
    for t in (0.0, 0.05, 0.3, 1.0, 2.5, 6.0):
        times = torch.full((len(tasks),), t, dtype=torch.float64)
        for upper in (False, True):
            exact = factor * sb.tv_bound_values(span, pairs, times, len(tasks), upper)
            low, high = bins.values(span, times, upper, active, factor)
            assert bool((low <= exact + 1e-12).all()) and bool((exact <= high + 1e-12).all())


@pytest.mark.parametrize("kind", ["equidistant", "clustered", "weighted cloud"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("d_bins", [4, 32])
def test_binned_bisection_gives_the_pair_bisection_brackets(monkeypatch, kind, seed, d_bins):
    K = 90 if kind == "weighted cloud" else 200
    span = SpanMixture(_mixture(kind, K, seed))
    tasks = _tasks(K, seed)
    calls = []
    take = sb._take
    monkeypatch.setattr(sb, "_take", lambda *a: calls.append(take(*a).owner.numel()) or take(*a))
    monkeypatch.setattr(sb, "_BIN_ABOVE", math.inf)  # today's path: every predicate from the pairs
    exact = bound_brackets(span, tasks, 1e-4)
    exact_fine = bound_brackets(span, tasks, 1e-4, fine=True)
    on_pairs, calls[:] = sum(calls), []
    monkeypatch.setattr(sb, "_BIN_ABOVE", 16)
    monkeypatch.setattr(sb, "_D_BINS", d_bins)  # coarse bins: many predicates fall back to the pairs
    binned = bound_brackets(span, tasks, 1e-4)
    assert binned == exact
    assert bound_brackets(span, tasks, 1e-4, fine=True) == exact_fine
    # the bins decided some predicates even here (coarse bins, few pairs, and ``fine`` bisects every
    # bracket to tol, where only the pairs decide)
    assert sum(calls) < on_pairs
    # sure: the upper bound has crossed at the top, the lower one not yet at the bottom
    open_ = [k for k, b in enumerate(binned) if not b.decided]
    assert open_
    tops = tv_bounds_at(span, [(tasks[k].A, tasks[k].B) for k in open_], [binned[k].high for k in open_])
    lows = [k for k in open_ if not binned[k].from_zero]
    bottoms = tv_bounds_at(span, [(tasks[k].A, tasks[k].B) for k in lows], [binned[k].low for k in lows])
    assert all(_holds(tasks[k], high) for k, (_, high) in zip(open_, tops, strict=True))
    assert not any(_holds(tasks[k], low) for k, (low, _) in zip(lows, bottoms, strict=True))


def test_pairs_are_every_task_s_product_row_major_with_its_weights_and_distances():
    """``_pairs`` against a loop over each task's A x B: owner, slots, D_ab and the normalised weights."""
    mix = _mixture("weighted cloud", 40, 3)
    span = SpanMixture(mix)
    tasks = _tasks(40, 3)[:5] + _tasks(40, 4)[-3:]
    sides = sb._sides(span, tasks)
    got = sb._pairs(span, sides)
    owner, slot_a, slot_b, dist, w, v = [], [], [], [], [], []
    first_a = first_b = 0
    for k, task in enumerate(tasks):
        A, B = list(task.A), list(task.B)
        W_a, W_b = float(span.weights[A].sum()), float(span.weights[B].sum())
        for i, a in enumerate(A):
            for j, b in enumerate(B):
                owner.append(k)
                slot_a.append(first_a + i)
                slot_b.append(first_b + j)
                dist.append(float(span.dist[a, b]))
                w.append(float(span.weights[a]) / W_a)
                v.append(float(span.weights[b]) / W_b)
        first_a, first_b = first_a + len(A), first_b + len(B)
    assert got.owner.tolist() == owner and got.slot_a.tolist() == slot_a and got.slot_b.tolist() == slot_b
    np.testing.assert_array_equal(got.dist.numpy(), dist)
    np.testing.assert_allclose(got.w.numpy(), w, rtol=1e-14, atol=0)
    np.testing.assert_allclose(got.v.numpy(), v, rtol=1e-14, atol=0)
