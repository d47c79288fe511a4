"""Adaptive window search vs a dense grid and the quadrature truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from critwin.clock import DiscreteSchedule
from critwin.experiments.estimation import estimate_window
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.process import DiscreteProcess
from critwin.experiments.search import search_window
from two_gaussian_oracle import fr_truth, two_gaussians


def test_adaptive_search_matches_dense_grid_with_a_quarter_of_the_nfes():
    m, delta, resolution = 8.0, 0.1, 0.05
    mixture = two_gaussians(m)
    x0 = mixture.subset([0]).sample(512, generator=torch.Generator().manual_seed(1))[0]
    found = search_window(
        mixture,
        x0,
        delta=delta,
        resolution=resolution,
        t_range=(0.0, 6.0),
        base_rate=0.5,
        seed=0,
        progress=False,
    )
    grid = np.arange(resolution, 6.0 + 1e-9, resolution)
    dense = forward_reverse(mixture, x0, grid, seed=1, progress=False)
    estimate = estimate_window(dense, delta=delta, base_rate=0.5, n_boot=0, per_class=False)
    assert found.nfe * 4 <= dense.nfe
    for level, searched, bracket, gridded in [
        (1 - delta, found.t_after, found.t_after_bracket, estimate.t_after),
        (delta, found.t_before, found.t_before_bracket, estimate.t_before),
    ]:
        exact = brentq(lambda t, lv=level: 2 * fr_truth(t, m) - 1 - lv, 0.05, 8.0)
        slope = abs(2 * (fr_truth(exact + 1e-4, m) - fr_truth(exact - 1e-4, m)) / 2e-4)  # |dr/dt|
        # A probe decides with <= 512 samples: SE of r = 2 SE(c) <= 2 * 0.5 / sqrt(512); 4 SE in t.
        tolerance = 4 * (1 / math.sqrt(512)) / slope
        assert bracket[1] - bracket[0] <= resolution
        assert abs(searched - exact) <= resolution / 2 + tolerance
        # The dense grid (one draw per time, isotonic fit) pools all points: same tolerance suffices.
        assert abs(gridded - exact) <= resolution / 2 + tolerance
        assert abs(searched - gridded) <= resolution + 2 * tolerance
    # The probes' Wilson intervals bracket the true crossings.
    for exact_level, ci in [(1 - delta, found.t_after_ci), (delta, found.t_before_ci)]:
        exact = brentq(lambda t, lv=exact_level: 2 * fr_truth(t, m) - 1 - lv, 0.05, 8.0)
        assert ci[0] <= exact <= ci[1]
        assert 0.0 <= ci[0] < ci[1] <= 6.0


def test_search_on_a_fixed_grid_stops_at_adjacent_steps():
    mixture = two_gaussians(6.0)
    schedule = DiscreteSchedule.linear()
    process = DiscreteProcess(mixture, schedule, n_steps=25, sampler="ddpm", sample_shape=(2,))
    x0 = mixture.subset([0]).sample(64, generator=torch.Generator().manual_seed(2))[0]
    found = search_window(
        process,
        x0,
        delta=0.1,
        resolution=1e-3,
        base_rate=0.5,
        batch=32,
        max_per_probe=128,
        seed=0,
        progress=False,
    )
    grid = sorted(process.times[:-1].tolist())
    for lo, hi in (found.t_after_bracket, found.t_before_bracket):
        assert lo in grid or lo == 0.0
        assert hi in grid
        position = grid.index(hi)
        assert lo == (grid[position - 1] if position > 0 else 0.0)  # adjacent grid points
    assert found.t_after < found.t_before
    probed = [p["t"] for p in found.probes]
    assert all(t in grid for t in probed)


def test_estimated_base_rate_counts_its_nfes():
    mixture = two_gaussians(6.0)
    x0 = mixture.subset([0]).sample(32, generator=torch.Generator().manual_seed(3))[0]
    found = search_window(
        mixture, x0, resolution=0.2, t_range=(0.0, 5.0), n_reference=2000, seed=1, progress=False
    )
    # b = p_+ q_+ with p_+ = 1: the model's + frequency, 1/2 within 4 SE of 2000 draws.
    assert found.b == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / 2000))
    assert found.nfe == 2000 + found.n_samples  # exact sampler: one evaluation per sample


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resolution": 0.0}, r"resolution \(OU time\) must lie in \[1e-06, inf\]"),
        ({"resolution": 1e-300}, r"resolution \(OU time\) must lie in \[1e-06, inf\]"),
        ({"t_range": (2.0, 1.0)}, "t_range must satisfy lo < hi"),
        ({"t_range": (0.0, 20.0)}, r"t_range\[1\]=20 is beyond the sampler's range of OU times \[0, 10\]"),
        ({"delta": 0.7}, "delta must be < 0.5"),
        ({"batch": 0}, "batch must be >= 1"),
    ],
)
def test_bad_search_input(kwargs, message):
    mixture = two_gaussians(4.0)
    with pytest.raises(ValueError, match=message):
        search_window(mixture, torch.zeros(3, 2, dtype=torch.float64), seed=0, progress=False, **kwargs)


def test_search_result_saves_and_loads(tmp_path):
    from critwin.experiments.search import SearchResult

    probes = [{"t": 0.5, "n": 64, "kept": 60, "c": 60 / 64, "lower": 0.85, "upper": 0.98}]
    result = SearchResult(
        t_after=0.25,
        t_before=math.inf,
        t_after_bracket=(0.0, 0.5),
        t_before_bracket=(4.5, 5.0),
        t_after_ci=(0.0, 0.5),
        t_before_ci=(4.0, 5.0),
        b=0.5,
        delta=0.1,
        resolution=0.5,
        probes=probes,
        nfe=64,
    )
    result.save(tmp_path)
    # Censored endpoints (inf) and bracket pairs survive the strict-JSON round trip.
    assert SearchResult.load(tmp_path) == result
    assert result.rows() == probes
    with pytest.raises(ValueError, match="holds a 'search' result, not forward_reverse"):
        ForwardReverseResult.load(tmp_path)
