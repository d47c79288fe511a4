import math

import numpy as np
import pytest
import torch

from critwin import EmpiricalMixture, GaussianMixture
from critwin.diagnostics.privacy import membership_audit, roc_auc, tpr_at_fpr

TIMES = [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2, 2.0]


def _data(d=8, n_members=20, n_non=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_members, d, generator=g, dtype=torch.float64),
        torch.randn(n_non, d, generator=g, dtype=torch.float64),
    )


def test_memorising_score_separates_members_and_matches_collapse_time():
    members, non = _data()
    audit = membership_audit(EmpiricalMixture(members), members, non, TIMES, sampler="exact", n_per_time=8)
    # The exact score of the training set only ever returns training points: a non-member is never
    # regenerated, while every member is kept at small t.
    assert audit.auc == 1.0 and audit.operating_point["tpr"] >= 0.9
    assert audit.member_curve[0] == 1.0 and audit.nonmember_curve.max() == 0.0
    # Biroli et al.'s collapse time for N Gaussian points in d dims, t_C = 1/2 ln(1 + 1/(N^{2/d} - 1)),
    # is asymptotic in N and d; at N = 20, d = 8 the median commitment time is within a factor 1.7.
    t_collapse = 0.5 * math.log(1 + 1 / (20 ** (2 / 8) - 1))
    assert 0.6 < np.median(audit.member_scores) / t_collapse < 1.7


def test_a_model_that_never_saw_the_members_leaks_nothing():
    members, non = _data(seed=1)
    population = GaussianMixture(torch.zeros(1, 8, dtype=torch.float64))  # the true data law
    audit = membership_audit(population, members, non, TIMES, sampler="exact", n_per_time=8, seed=3)
    # members and non-members are exchangeable: the bootstrap interval of the AUC contains 1/2
    assert audit.auc_ci[0] <= 0.5 <= audit.auc_ci[1]


def test_roc_auc_equals_sklearn_on_ranks_with_ties_and_censored_scores():
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    for _ in range(20):
        pos = rng.integers(0, 6, rng.integers(1, 30)).astype(float)  # small integers: many ties
        neg = rng.integers(0, 5, rng.integers(1, 30)).astype(float)
        pos[rng.random(pos.size) < 0.2] = np.inf  # censored above (kept at the largest time)
        neg[rng.random(neg.size) < 0.2] = -np.inf  # censored below
        labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        if labels.min() == labels.max():
            continue
        # sklearn refuses infinite scores; ranks keep the order and the ties, hence the AUC
        expected = roc_auc_score(labels, rankdata(np.r_[pos, neg]))
        assert roc_auc(pos, neg) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_and_operating_point_by_hand():
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert roc_auc([1.0], [1.0]) == 0.5
    assert roc_auc([1.0, 3.0], [2.0]) == 0.5
    op = tpr_at_fpr([5.0, 6.0, 1.0], [0.0, 1.0, 2.0, 3.0], [2.5, 10.0], fpr=0.25)
    # 3 of 4 calibration scores may not exceed the threshold -> threshold = 2.0
    assert op["threshold"] == 2.0 and op["tpr"] == 2 / 3 and op["fpr_held_out"] == 1.0


def test_bad_input():
    members, non = _data()
    with pytest.raises(ValueError, match="nonmembers"):
        membership_audit(EmpiricalMixture(members), members, non[:1], TIMES, sampler="exact")
    with pytest.raises(ValueError, match="calibration_fraction"):
        membership_audit(
            EmpiricalMixture(members), members, non, TIMES, sampler="exact", calibration_fraction=1.0
        )
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr([1.0], [1.0], [1.0], fpr=0.0)


def test_digits_memorising_model_is_flagged_and_the_main_model_much_less():
    from critwin import load_digits_model

    results = {}
    for name in ("digits-memorise", "digits"):
        model = load_digits_model(name)
        data = model.training_data()
        process = model.process(num_inference_steps=20)
        members = data.train_images[:16]
        non = data.test_images[:32]
        audit = membership_audit(
            process, members, non, [0.05, 0.3, 0.8, 1.5, 2.5], n_per_time=2, seed=0, n_boot=200
        )
        results[name] = audit
    assert results["digits-memorise"].auc >= 0.9
    assert results["digits"].auc < results["digits-memorise"].auc
