"""Window estimation: Wilson CIs, isotonic fit, crossings, bootstrap, jump rule, classes, susceptibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from critwin.experiments.cloning import CloneResult
from critwin.experiments.estimation import (
    base_rate,
    commitment_curve,
    crossing_time,
    estimate_window,
    isotonic_decreasing,
    jump_rule,
    susceptibility,
    wilson_interval,
)
from critwin.experiments.forward_reverse import ForwardReverseResult


def logistic_r(t, t0, width):
    return 1.0 / (1.0 + np.exp((np.asarray(t) - t0) / width))


def synthetic_result(times, r_of_source, n_sources, reps, b, rng, classes=None):
    """A ForwardReverseResult whose keep probability is c = b + (1 - b) r_i(t) for source i.

    Source labels are ``classes`` (default all 0); a non-kept output gets another label (class + 1).
    """
    T = len(times)
    classes = np.zeros(n_sources, dtype=int) if classes is None else np.asarray(classes)
    M = n_sources * reps
    ids = np.repeat(np.arange(n_sources), reps)
    prob = np.stack([b + (1 - b) * r_of_source(times, i) for i in range(n_sources)], 1)  # (T, N)
    kept = rng.random((T, M)) < prob[:, ids]
    source = classes[ids]
    labels = np.where(kept, source[None, :], source[None, :] + 1)
    return ForwardReverseResult(
        requested_times=torch.tensor(times, dtype=torch.float64),
        times=torch.tensor(times, dtype=torch.float64),
        indices=torch.arange(T),
        steps=None,
        labels=torch.tensor(labels, dtype=torch.long),
        source_labels=torch.tensor(source, dtype=torch.long).expand(T, M).clone(),
        source_ids=torch.tensor(ids, dtype=torch.long),
        n_per_time=reps,
    )


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (57, 200), (1, 1000)])
def test_wilson_matches_scipy(k, n):
    lower, upper = wilson_interval(k, n, 0.9)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
    assert lower == pytest.approx(ci.low, abs=1e-12) and upper == pytest.approx(ci.high, abs=1e-12)


def test_isotonic_matches_sklearn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    y = logistic_r(np.linspace(0, 5, 40), 2.5, 0.5) + rng.normal(0, 0.15, 40)
    w = rng.uniform(0.5, 3.0, 40)
    expected = IsotonicRegression(increasing=False).fit_transform(np.arange(40), y, sample_weight=w)
    np.testing.assert_allclose(isotonic_decreasing(y, w), expected, atol=1e-12)


def test_crossing_time_interpolates_and_censors():
    t = np.arange(0.0, 11.0, 2.0)
    line = 1 - t / 10
    assert crossing_time(t, line, 0.9) == pytest.approx(1.0)  # exact for a linear curve
    assert crossing_time(t, line, 0.25) == pytest.approx(7.5)
    assert crossing_time(t, line, -0.5) == math.inf  # never falls that far inside the range
    assert crossing_time(t, line, 1.5) == -math.inf  # already below at the smallest time


def test_jump_rule():
    t = np.arange(6.0)
    hit = jump_rule(t, [1.0, 0.98, 0.9, 0.3, 0.25, 0.2])
    assert hit["passes"] and (hit["t_lo"], hit["t_hi"]) == (2.0, 3.0)
    assert hit["size"] == pytest.approx(0.6)
    assert not jump_rule(t, [1.0, 0.6, 0.0, 0.0, 0.0, 0.0])["passes"]  # a second drop of 0.4 > 0.3
    assert not jump_rule(t, np.linspace(1, 0, 6))["passes"]  # smooth: largest drop 0.2


def test_base_rate_is_the_label_agreement_of_independent_draws():
    source = torch.tensor([0, 0, 0, 1])
    model = torch.tensor([0, 1, 1, 1, 2])
    assert base_rate(source, model) == pytest.approx(0.75 * 0.2 + 0.25 * 0.6)


def test_window_estimate_recovers_a_known_curve_with_calibrated_cis():
    t0, width, b = 2.0, 0.3, 0.3
    times = np.linspace(0.2, 4.0, 24)
    truth = {  # crossings of r = 1 / (1 + exp((t - t0) / width))
        "t_after": t0 + width * math.log(1 / 0.9 - 1),
        "t_before": t0 + width * math.log(1 / 0.1 - 1),
        "t_half": t0,
    }
    rng = np.random.default_rng(1)
    covered = {key: 0 for key in truth}
    errors = {key: [] for key in truth}
    repeats = 40
    for i in range(repeats):
        result = synthetic_result(times, lambda t, j: logistic_r(t, t0, width), 150, 2, b, rng)
        estimate = estimate_window(
            result, base_rate=b, n_boot=100, per_class=False, generator=torch.Generator().manual_seed(i)
        )
        for key, value in truth.items():
            lo, hi = getattr(estimate, key + "_ci")
            covered[key] += lo <= value <= hi
            errors[key].append(getattr(estimate, key) - value)
    for key in truth:
        # Nominal 95%: 40 repeats give >= 32 covered unless the true coverage is < ~90% (P < 1e-3 at 0.95).
        assert covered[key] >= 32, (key, covered[key])
        assert abs(np.mean(errors[key])) < 0.05  # bias well below the grid step 0.165


def test_estimated_base_rate_uses_the_largest_time():
    times = np.linspace(0.1, 6.0, 12)
    rng = np.random.default_rng(2)
    result = synthetic_result(times, lambda t, j: logistic_r(t, 2.0, 0.2), 300, 1, 0.4, rng)
    estimate = estimate_window(result, n_boot=0, per_class=False)
    # Largest time: outputs keep label 0 with probability 0.4; b = p_0 q_0 = 1 * q_0.
    assert estimate.b == pytest.approx(result.labels[-1].eq(0).double().mean().item())
    assert estimate.b == pytest.approx(0.4, abs=4 * math.sqrt(0.24 / 300))
    assert math.isnan(estimate.t_after_ci[0])  # no bootstrap requested


def test_per_class_breakdown_finds_each_class_window():
    times = np.linspace(0.1, 5.0, 30)
    classes = np.repeat([0, 2], 200)
    t0 = {0: 1.5, 2: 3.0}

    def r_of(t, i):
        return logistic_r(t, t0[int(classes[i])], 0.25)

    rng = np.random.default_rng(3)
    result = synthetic_result(times, r_of, 400, 1, 0.0, rng, classes=classes)
    reference = torch.tensor([0] * 50 + [2] * 50 + [5] * 100)  # q_0 = q_2 = 1/4
    estimate = estimate_window(
        result, reference_labels=reference, n_boot=50, generator=torch.Generator().manual_seed(0)
    )
    assert sorted(estimate.per_class) == [0, 2]
    for k in (0, 2):
        sub = estimate.per_class[k]
        assert sub.b == pytest.approx(0.25)
        # Generated with b = 0, so with b_k = 1/4 the normalised curve crosses 1/2 where
        # r_true = (1/2 (1 - 1/4) + 1/4) = 0.625: t0 + w log(1/0.625 - 1).
        expected = t0[k] + 0.25 * math.log(1 / 0.625 - 1)
        assert abs(sub.t_half - expected) <= (sub.t_half_ci[1] - sub.t_half_ci[0]) + 0.1
    assert estimate.b == pytest.approx(0.25)  # p = (1/2, 1/2) on classes {0, 2}; q_0 = q_2 = 1/4


def test_clone_base_rate_is_the_unbiased_pair_agreement():
    own = torch.tensor([0, 0, 0, 1, 1, 2])
    T, C = 3, 2
    rng = np.random.default_rng(0)
    labels = torch.tensor(rng.integers(0, 3, size=(T, 6, C)))
    result = CloneResult(
        requested_times=torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64),
        times=torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64),
        indices=torch.arange(3),
        steps=None,
        own_labels=own,
        clone_labels=labels,
    )
    estimate = estimate_window(result, n_boot=0, per_class=False)
    counts = np.array([3, 2, 1])
    assert estimate.b == pytest.approx((np.sum(counts**2) - 6) / (6 * 5))  # pairs of distinct trajectories
    curve = commitment_curve(result)
    np.testing.assert_allclose(curve.c, result.agreement.numpy())


def test_susceptibility_matches_the_between_source_variance():
    times = np.linspace(0.5, 4.5, 9)
    n_sources, reps = 300, 6
    centres = np.random.default_rng(4).uniform(1.5, 3.5, n_sources)

    def r_of(t, i):
        return logistic_r(t, centres[i], 0.2)

    result = synthetic_result(times, r_of, n_sources, reps, 0.0, np.random.default_rng(5))
    t_sorted, chi = susceptibility(result)
    exact = np.array([np.var([r_of(t, i) for i in range(n_sources)]) for t in times])
    # Per-source p_hat from 6 replicates: Var of the bias-corrected estimator <~ 1/(4 * 6 * 300); a
    # 0.03 tolerance is > 5 SE of the sample variance at these sizes.
    np.testing.assert_allclose(chi, exact, atol=0.03)
    assert 1.5 <= t_sorted[np.argmax(chi)] <= 3.5  # peaks inside the spread of transition times
    assert susceptibility(synthetic_result(times, r_of, 5, 1, 0.0, np.random.default_rng(0))) is None


def test_bad_estimation_input():
    result = synthetic_result(
        np.linspace(0, 1, 3), lambda t, i: logistic_r(t, 0.5, 0.1), 4, 1, 0.0, np.random.default_rng(0)
    )
    with pytest.raises(ValueError, match="delta must be < 0.5"):
        estimate_window(result, delta=0.6)
    with pytest.raises(ValueError, match=r"base_rate must lie in \[0, 1\)"):
        estimate_window(result, base_rate=1.0)
    with pytest.raises(ValueError, match="result must be a ForwardReverseResult or CloneResult"):
        estimate_window(object())


def test_censored_endpoints_are_infinite_not_nan():
    times = np.linspace(0.2, 2.0, 8)
    # r(2.0) = 1 / (1 + e^{0.2/0.3}) = 0.34 > delta: the curve never reaches 0.1 inside the range.
    rng = np.random.default_rng(0)
    result = synthetic_result(times, lambda t, i: logistic_r(t, 1.8, 0.3), 100, 1, 0.0, rng)
    with np.errstate(all="raise"):
        estimate = estimate_window(
            result, base_rate=0.0, n_boot=100, per_class=False, generator=torch.Generator().manual_seed(0)
        )
    assert estimate.t_before == math.inf and estimate.t_before_ci == (math.inf, math.inf)
    assert estimate.empty
    assert all(math.isfinite(v) for v in estimate.t_after_ci)


def test_a_constant_feature_is_a_typed_error():
    """Every output keeps the one label: b = 1 (computed by hand: p = q = (1,)), nothing to estimate.
    Callers skip such features by the type ConstantFeatureError (a ValueError), not by its message."""
    from critwin.experiments.estimation import ConstantFeatureError

    times = np.linspace(0.1, 2.0, 5)
    constant = synthetic_result(times, lambda t, i: np.ones_like(t), 4, 2, 0.0, np.random.default_rng(0))
    with pytest.raises(ConstantFeatureError, match="base rate is 1"):
        estimate_window(constant, n_boot=0)
    assert issubclass(ConstantFeatureError, ValueError)
    assert estimate_window(constant, base_rate=0.5, n_boot=0, per_class=False).b == 0.5
