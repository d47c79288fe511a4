"""clone on exact mixtures: agreement vs quadrature and theory bounds, prefix sharing, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from critwin.experiments.cloning import CloneResult, clone
from critwin.experiments.estimation import estimate_window
from two_gaussian_oracle import clone_truth, two_gaussians


def test_exact_agreement_matches_quadrature_and_crosses_half_inside_the_theory_window():
    m, eps = 6.0, 0.1
    mixture = two_gaussians(m)
    times = np.linspace(0.2, 4.0, 20)
    n = 2000
    result = clone(mixture, n, times, 2, seed=0, progress=False)
    assert result.agreement.shape == (20,) and result.clone_labels.shape == (20, n, 2)
    truth = np.array([clone_truth(t, m) for t in times])
    # The two clones of a trajectory are correlated; treating each trajectory as one unit with
    # variance <= c(1-c) gives a conservative SE; 4.5 SE over 20 points: family-wise rate < 1e-4.
    se = np.sqrt(truth * (1 - truth) / n)
    assert np.all(np.abs(result.agreement.numpy() - truth) <= 4.5 * se + 1e-3)
    # Normalised agreement r = 2c - 1 (base rate 1/2) crosses 1/2 between Blink Ex. 1's bounds.
    t_after = math.log(m) - math.log(math.log(1 / (2 * eps * eps)))
    t_before = math.log(m) + math.log(2) + math.log(1 / eps)
    estimate = estimate_window(result, n_boot=50, generator=torch.Generator().manual_seed(1))
    assert t_after < estimate.t_half_ci[0] <= estimate.t_half <= estimate.t_half_ci[1] < t_before
    exact_half = brentq(lambda t: 2 * clone_truth(t, m) - 1 - 0.5, 0.05, 8.0)
    assert abs(estimate.t_half - exact_half) <= (estimate.t_half_ci[1] - estimate.t_half_ci[0]) + 0.1
    assert estimate.b == pytest.approx(0.5, abs=0.03)  # own labels: sum q_k^2 with q ~ (1/2, 1/2)


def test_sde_cloning_agrees_with_exact():
    m, n = 6.0, 1500
    mixture = two_gaussians(m)
    times = [1.0, 1.8, 2.6]
    approx = clone(mixture, n, times, 2, sampler="sde", n_steps=40, t_max=4.0, seed=1, progress=False)
    truth = np.array([clone_truth(t, m) for t in times])
    # Conservative trajectory-level SE plus the 1/n_steps discretisation tolerance of forward_reverse.
    se = np.sqrt(truth * (1 - truth) / n)
    assert np.all(np.abs(approx.agreement.numpy() - truth) <= 4.5 * se + 1.0 / 40)


def test_one_trunk_pass_serves_every_fork():
    mixture = two_gaussians(4.0)
    N, C = 7, 3
    result = clone(
        mixture, N, [2.0, 0.5, 1.0], C, sampler="sde", n_steps=10, t_max=3.0, seed=0, progress=False
    )
    L = result.metadata["process"]["grid_size"] - 1
    # Euler–Maruyama: one denoiser call per step. Trunks walk the grid once (N * L); each fork's
    # continuations cost N * C * (L - index). Re-simulating the prefix per fork would add N * index.
    expected = N * L + sum(N * C * (L - int(i)) for i in result.indices)
    assert result.nfe == expected
    # Grid indices grow as reverse time runs down: t=2 is forked first, then t=1, then t=0.5.
    assert result.indices[0] < result.indices[2] < result.indices[1]
    torch.testing.assert_close(result.times, torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64))


def test_agreement_is_the_mean_of_the_table(tmp_path):
    mixture = two_gaussians(4.0)
    result = clone(mixture, 5, [0.5, 1.5], 4, seed=3, progress=False)
    columns = result.table()
    assert len(columns["label"]) == 2 * 5 * 4
    agree = np.array(columns["label"]) == np.array(columns["source_label"])
    np.testing.assert_allclose(agree.reshape(2, -1).mean(1), result.agreement.numpy())
    result.save(tmp_path)
    back = CloneResult.load(tmp_path)
    assert torch.equal(back.clone_labels, result.clone_labels)
    assert torch.equal(back.own_labels, result.own_labels)


def test_resume_is_identical_and_refuses_other_settings(tmp_path):
    mixture = two_gaussians(4.0)
    kwargs = dict(seed=5, progress=False, chunk_size=3, sampler="ddpm", n_steps=8)
    full = clone(mixture, 8, [0.4, 1.2], 2, out=tmp_path / "a", **kwargs)
    units = sorted((tmp_path / "a" / "units").glob("*.npz"))
    assert len(units) == 3 * (1 + 2)  # 3 chunks x (trunk + 2 forks)
    for path in units[1::2]:
        path.unlink()
    again = clone(mixture, 8, [0.4, 1.2], 2, out=tmp_path / "a", **kwargs)
    assert torch.equal(full.clone_labels, again.clone_labels)
    assert torch.equal(full.own_labels, again.own_labels)
    fresh = clone(mixture, 8, [0.4, 1.2], 2, out=tmp_path / "b", **kwargs)
    assert (tmp_path / "a" / "table.csv").read_bytes() == (tmp_path / "b" / "table.csv").read_bytes()
    assert torch.equal(fresh.clone_labels, full.clone_labels)
    with pytest.raises(ValueError, match="'n_clones' differs"):
        clone(mixture, 8, [0.4, 1.2], 3, out=tmp_path / "a", **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, [1.0], 2), "n_trajectories must be >= 1"),
        ((4, [1.0], 0), "n_clones must be >= 1"),
        ((4, [1.0, 0.0], 2), "times must be > 0"),
        ((4, [-1.0], 2), r"times\[0\] must be >= 0"),
        ((4, [1.0, 11.0], 2), r"times\[1\]=11 is beyond the sampler's range of OU times \[0, 10\]"),
    ],
)
def test_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        clone(two_gaussians(4.0), *args, seed=0, progress=False)
