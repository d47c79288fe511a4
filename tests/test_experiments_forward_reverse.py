"""forward_reverse on exact mixtures: curves vs quadrature, samplers vs exact, inputs, resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from critwin.clock import DiscreteSchedule
from critwin.experiments.estimation import estimate_window
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.process import DiscreteProcess
from sweep_driver import N_UNITS, SCRIPT, kill_mid_sweep
from two_gaussian_oracle import fr_truth, two_gaussians


def sources(mixture, n, seed=1):
    return mixture.subset([0]).sample(n, generator=torch.Generator().manual_seed(seed))[0]


def test_exact_curve_matches_quadrature():
    m = 4.0
    mixture = two_gaussians(m)
    times = [0.5, 1.0, 1.5, 2.0, 3.0]
    n = 3000
    result = forward_reverse(mixture, sources(mixture, n), times, seed=0, progress=False)
    assert result.labels.shape == (5, n) and result.labels.dtype == torch.long
    assert result.source_labels.shape == (5, n)
    torch.testing.assert_close(result.times, torch.tensor(times, dtype=torch.float64))
    truth = np.array([fr_truth(t, m) for t in times])
    # Binomial SE per point; 4.5 SE keeps the family-wise false-alarm rate below 1e-4 for 5 points.
    # (Bayes labels of x0 ~ N(+mu, I) are + except with probability Phi(-4) = 3e-5: negligible.)
    se = np.sqrt(truth * (1 - truth) / n)
    assert np.all(np.abs(result.agreement.numpy() - truth) <= 4.5 * se + 1e-4)
    assert result.nfe == n * 5  # one exact posterior draw per sample and time


@pytest.mark.parametrize("sampler", ["ddpm", "sde"])
def test_discretised_samplers_agree_with_the_exact_sampler(sampler):
    m, n, n_steps = 4.0, 2000, 40
    mixture = two_gaussians(m)
    x0 = sources(mixture, n)
    times = [1.0, 2.0]
    exact = forward_reverse(mixture, x0, times, sampler="exact", seed=1, progress=False)
    approx = forward_reverse(
        mixture, x0, times, sampler=sampler, seed=2, progress=False, n_steps=n_steps, t_max=2.5
    )
    c_exact, c_approx = exact.agreement.numpy(), approx.agreement.numpy()
    truth = np.array([fr_truth(t, m) for t in times])
    # Two independent binomial estimates: SE of the difference sqrt(2) * SE; plus a discretisation
    # tolerance 1/n_steps (the measured bias is ~0.5/n_steps for ddpm on this grid, see
    # test_discretisation_error_shrinks_with_steps).
    se = np.sqrt(2 * truth * (1 - truth) / n)
    assert np.all(np.abs(c_approx - c_exact) <= 4.5 * se + 1.0 / n_steps)
    assert approx.nfe > 20 * exact.nfe  # many denoiser calls per sample vs one exact draw


def test_discretisation_error_shrinks_with_steps():
    m, n = 4.0, 10000
    mixture = two_gaussians(m)
    x0 = sources(mixture, n)
    truth = fr_truth(1.5, m)
    errors = []
    for n_steps in (6, 24, 96):
        result = forward_reverse(
            mixture, x0, [1.5], sampler="ddpm", seed=3, progress=False, n_steps=n_steps, t_max=1.5
        )
        errors.append(abs(result.agreement.item() - truth))
    # SE = 0.0044 at n = 10^4; the DDPM bias on this grid is about 0.4 / n_steps (0.06 at 6 steps).
    se = math.sqrt(truth * (1 - truth) / n)
    assert errors[2] <= 4 * se + 1.0 / 96
    assert errors[0] > errors[1] + 2 * se
    assert errors[0] > errors[2] + 4 * se


def test_window_estimate_lands_inside_the_theory_window():
    m, eps = 8.0, 0.1
    mixture = two_gaussians(m)
    times = np.linspace(0.1, 5.5, 28)
    result = forward_reverse(mixture, sources(mixture, 500), times, n_per_time=2, seed=4, progress=False)
    estimate = estimate_window(result, delta=0.1, n_boot=100, generator=torch.Generator().manual_seed(0))
    # Blink Ex. 1 (THEORY §5): sufficient-condition bounds computed here from the closed form.
    t_after_theory = math.log(m) - math.log(math.log(1 / (2 * eps * eps)))
    t_before_theory = math.log(m) + math.log(2) + math.log(1 / eps)
    assert t_after_theory <= estimate.t_after_ci[0] <= estimate.t_after <= estimate.t_after_ci[1]
    assert estimate.t_before_ci[0] <= estimate.t_before <= estimate.t_before_ci[1] <= t_before_theory
    # The exact crossings of r = (c - 1/2) / (1/2) from quadrature: within two CI half-widths plus half
    # a grid step (the isotonic interpolation error).
    step = times[1] - times[0]
    checks = [(0.9, estimate.t_after, estimate.t_after_ci), (0.1, estimate.t_before, estimate.t_before_ci)]
    for level, value, ci in checks:
        exact = brentq(lambda t, lv=level: 2 * fr_truth(t, m) - 1 - lv, 0.05, 8.0)
        assert abs(value - exact) <= (ci[1] - ci[0]) + step / 2
    # Sources all carry label + (|mu| = 8), so b = the fraction of + outputs at the largest time: a
    # binomial proportion over 1000 nearly independent outputs (SE <= 0.016); 4 SE.
    assert estimate.b == pytest.approx(fr_truth(times[-1], m), abs=4 * math.sqrt(0.25 / 1000))


# ------------------------------------------------------------------------------------- bad input
@pytest.fixture
def small():
    mixture = two_gaussians(4.0)
    return mixture, sources(mixture, 6)


@pytest.mark.parametrize(
    "times, message",
    [
        ([1.0, -0.5], r"times\[1\] must be >= 0"),
        ([float("nan")], r"times\[0\] must be finite"),
        ([float("inf")], r"times\[0\] must be finite"),
        ([1.0, 12.0], r"times\[1\]=12 is beyond the sampler's range of OU times \[0, 10\]"),
        ([], "at least one OU time"),
    ],
)
def test_bad_times(small, times, message):
    mixture, x0 = small
    with pytest.raises(ValueError, match=message):
        forward_reverse(mixture, x0, times, seed=0, progress=False)


def test_bad_arguments(small):
    mixture, x0 = small
    with pytest.raises(ValueError, match="n_per_time must be >= 1"):
        forward_reverse(mixture, x0, [1.0], n_per_time=0, seed=0, progress=False)
    known = "sampler must be one of 'exact', 'ddpm', 'ddim', 'sde', 'sde_exp', 'heun'"
    with pytest.raises(ValueError, match=known):
        forward_reverse(mixture, x0, [1.0], sampler="euler", seed=0, progress=False)
    with pytest.raises(
        ValueError, match="feature .* must return .* for n=6 inputs, got .* shape \\(6, 2, 1\\)"
    ):
        forward_reverse(mixture, x0, [1.0], feature=lambda x: x.unsqueeze(-1), seed=0, progress=False)
    with pytest.raises(ValueError, match="feature .* must return integer labels"):
        forward_reverse(mixture, x0, [1.0], feature=lambda x: x[:, 0], seed=0, progress=False)
    with pytest.raises(ValueError, match="for n=6 inputs"):
        forward_reverse(
            mixture, x0, [1.0], feature=lambda x: torch.zeros(3, dtype=torch.long), seed=0, progress=False
        )
    with pytest.raises(ValueError, match="softmax"):
        forward_reverse(mixture, x0, [1.0], feature=lambda x: x.abs() + 1, seed=0, progress=False)
    with pytest.raises(ValueError, match="x0 contains NaN"):
        forward_reverse(mixture, torch.full((2, 2), float("nan")), [1.0], seed=0, progress=False)
    with pytest.raises(ValueError, match=r"x0 must hold samples of shape \(2,\)"):
        forward_reverse(mixture, torch.zeros(3, 5, dtype=torch.float64), [1.0], seed=0, progress=False)
    with pytest.raises(ValueError, match="feature must be a callable, 'bayes' or 'component'"):
        forward_reverse(mixture, x0, [1.0], feature="colour", seed=0, progress=False)


def test_probability_features_give_argmax_labels(small):
    mixture, x0 = small

    def soft(x):
        return mixture.posterior(x, 0.3)

    result = forward_reverse(mixture, x0, [0.2, 1.0], n_per_time=3, feature=soft, seed=0, progress=False)
    assert result.probabilities.shape == (2, 18, 2)
    torch.testing.assert_close(result.labels, result.probabilities.argmax(-1))
    torch.testing.assert_close(result.source_labels[0], soft(x0).argmax(-1).repeat_interleave(3))


def test_same_generator_same_result(small):
    mixture, x0 = small
    runs = [
        forward_reverse(
            mixture,
            x0,
            [0.5, 1.5, 3.0],
            n_per_time=20,
            generator=torch.Generator().manual_seed(s),
            progress=False,
            sampler="sde",
            n_steps=10,
        ).labels
        for s in (5, 5, 6)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_conditioning_is_repeated_per_sample():
    class TargetDenoiser:
        """x0_hat = cond['target'] * cond['scale']: DDIM (eta = 0) then returns exactly that."""

        def denoise(self, x, t, target, scale):
            return (target * scale).expand_as(x)

    process = DiscreteProcess(TargetDenoiser(), DiscreteSchedule.linear(), n_steps=10, sample_shape=(1,))
    N, reps = 4, 3
    x0 = torch.zeros(N, 1, dtype=torch.float64)
    target = torch.arange(N, dtype=torch.float64).reshape(N, 1) + 1.0
    result = forward_reverse(
        process,
        x0,
        [0.5, 2.0],
        n_per_time=reps,
        feature=lambda x: x[:, 0].round().long(),
        seed=0,
        cond={"target": target, "scale": torch.tensor(2.0)},
        progress=False,
        chunk_size=5,
    )
    expected = (2 * (torch.arange(N) + 1)).repeat_interleave(reps)
    assert torch.equal(result.labels, expected.expand(2, -1))
    assert torch.equal(result.source_ids, torch.arange(N).repeat_interleave(reps))


# --------------------------------------------------------------------------------- checkpointing
def test_save_and_load_round_trip(small, tmp_path):
    mixture, x0 = small
    result = forward_reverse(mixture, x0, [0.0, 0.7, 2.0], n_per_time=2, seed=0, progress=False)
    result.save(tmp_path / "r")
    back = ForwardReverseResult.load(tmp_path / "r")
    assert torch.equal(back.labels, result.labels)
    assert torch.equal(back.source_labels, result.source_labels)
    torch.testing.assert_close(back.times, result.times)
    rows = result.rows()
    assert len(rows) == 3 * 12 and rows[0]["t"] == 0.0 and rows[-1]["source_id"] == 5
    header = (tmp_path / "r" / "table.csv").read_text().splitlines()[0]
    assert header == "t,requested_t,step,index,source_id,replicate,label,source_label"


def test_resume_after_lost_units_is_identical(small, tmp_path):
    mixture, x0 = small
    kwargs = dict(n_per_time=5, seed=7, progress=False, chunk_size=4, sampler="sde", n_steps=8)
    full = forward_reverse(mixture, x0, [0.3, 1.0, 2.5], out=tmp_path / "a", **kwargs)
    units = sorted((tmp_path / "a" / "units").glob("*.npz"))
    assert len(units) == 3 * 8
    for path in units[::2]:
        path.unlink()
    (tmp_path / "a" / "table.csv").unlink()
    again = forward_reverse(mixture, x0, [0.3, 1.0, 2.5], out=tmp_path / "a", **kwargs)
    assert torch.equal(full.labels, again.labels)
    # Unit seeds do not depend on which units ran before: a fresh directory gives the same table.
    fresh = forward_reverse(mixture, x0, [0.3, 1.0, 2.5], out=tmp_path / "b", **kwargs)
    assert (tmp_path / "a" / "table.csv").read_bytes() == (tmp_path / "b" / "table.csv").read_bytes()
    assert torch.equal(fresh.labels, full.labels)


def test_a_resumed_sweep_says_how_many_units_it_found(small, tmp_path, capsys):
    """A rerun printed nothing about the units it picked up: now one line, then the progress bar."""
    mixture, x0 = small
    kwargs = dict(n_per_time=5, seed=7, chunk_size=4, sampler="sde", n_steps=8)
    forward_reverse(mixture, x0, [0.3, 1.0], out=tmp_path, progress=False, **kwargs)
    units = sorted((tmp_path / "units").glob("*.npz"))
    assert len(units) == 2 * 8 and "resumed" not in capsys.readouterr().err  # first run: nothing found
    for path in units[:6]:
        path.unlink()
    forward_reverse(mixture, x0, [0.3, 1.0], out=tmp_path, progress=False, **kwargs)
    assert "resumed" not in capsys.readouterr().err  # progress=False: silent
    for path in units[:6]:
        path.unlink()
    forward_reverse(mixture, x0, [0.3, 1.0], out=tmp_path, progress=True, **kwargs)
    assert f"forward-reverse: resumed: 10 of 16 units done ({tmp_path})" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, setting",
    [
        ({"n_per_time": 3}, "n_per_time"),
        ({"seed": 8}, "seed"),
        ({"sampler": "ddpm"}, "process.sampler"),
        ({"times": [0.3, 1.1]}, "requested_times"),
        ({"feature": lambda x: (x[:, 0] > 0).long()}, "feature"),
    ],
)
def test_resume_with_different_settings_is_refused(small, tmp_path, change, setting):
    mixture, x0 = small
    args = dict(times=[0.3, 1.0], n_per_time=2, seed=7, sampler="sde", progress=False, n_steps=5)
    forward_reverse(mixture, x0, out=tmp_path, **args)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=f"'{setting}' differs"):
        forward_reverse(mixture, x0, out=tmp_path, **{**args, **change})
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing overwritten, nothing added


def test_out_needs_a_seed(small, tmp_path):
    mixture, x0 = small
    with pytest.raises(ValueError, match="out: a resumable sweep needs seed"):
        forward_reverse(mixture, x0, [1.0], out=tmp_path, progress=False)


def test_kill_and_resume_gives_an_identical_table(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    out = tmp_path / "killed"
    done = kill_mid_sweep(script, out)
    assert 3 <= done < N_UNITS and not (out / "table.csv").exists()  # killed mid-sweep
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(script), str(reference)], check=True)
    assert (out / "table.csv").read_bytes() == (reference / "table.csv").read_bytes()
    assert not list(out.rglob("*.tmp"))  # no partial file survives the resume
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["feature"] == "bayes"
    assert Path(out / "metadata.json").exists()


def test_progress_bar_does_not_change_results(small, capsys):
    mixture, x0 = small
    quiet = forward_reverse(mixture, x0, [0.5, 2.0], n_per_time=3, seed=9, progress=False)
    shown = forward_reverse(mixture, x0, [0.5, 2.0], n_per_time=3, seed=9, progress=True)
    assert torch.equal(quiet.labels, shown.labels)


def test_empirical_mixture_memorises_at_small_times():
    from critwin.mixtures import EmpiricalMixture

    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]], dtype=torch.float64)
    data = EmpiricalMixture(points)
    result = forward_reverse(data, points, [0.05, 6.0], n_per_time=500, seed=0, progress=False)
    # Nearest-point labels: at t = 0.05 the posterior keeps the source point unless the noise
    # (sd 0.31) crosses the 1.5 midline (P ~ 1e-6); at t = 6 the output is uniform over 4 points.
    assert result.agreement[0].item() == pytest.approx(1.0, abs=1e-3)
    assert result.agreement[1].item() == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / 2000))
