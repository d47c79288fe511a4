"""Privacy: memorised samples commit early (docs/theory.md §8).

A training image that a model memorised is regenerated from much larger noise levels than an image
it never saw: its forward–reverse commitment curve (the probability that the output stays closest to
its own source) stays near 1 up to a large OU time. The *commitment time* of a source — the OU time
where its isotonic curve falls to ``level`` (½) — is therefore a membership score. As for any
membership-inference claim (Carlini et al.; LANDSCAPE.md) it is reported as ROC-AUC with a confidence
interval and as the TPR at a false-positive rate calibrated on a *separate* set of non-members.

The AUC interval (:func:`auc_interval`) is a score interval, as Wilson's for a proportion: the AUCs
``theta`` that the estimate does not reject at the level, ``|auc - theta| <= z sd(theta)``, with the
Hanley–McNeil (1982) standard deviation *at* ``theta`` and the actual group sizes, the larger of its two
orientations. A percentile bootstrap of the AUC under-covers with few members, most near 1, where the
resamples of a few members vary less than new members would. In simulation (binormal scores, 8 members
against 200 non-members, 4,000 draws, nominal 0.95, Monte Carlo SE at most 0.007) the bootstrap covered
0.900, 0.842 and 0.755 at true AUC 0.64, 0.86 and 0.96, the score interval 0.968, 0.985 and 0.988, and
0.951 to 0.990 from AUC 0.04 to 0.99 (``tests/test_diagnostics_privacy.py``). Newcombe's (2006) method
5, the same construction with the mean group size in both terms, is about 9% narrower and covers those
three settings too (0.952 to 0.968) but sits at or just under its level elsewhere (0.947 at 8 members
against 100, AUC 0.64; 0.949 at 16 against 200), where this one covers 0.958 or more.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._display import axes, data_frame, html_summary, short_repr
from critwin._stats import clopper_pearson_bounds
from critwin._validation import check_eps, check_positive_int
from critwin.experiments import ForwardReverseResult, SourceSimilarity, crossing_time, isotonic_decreasing
from critwin.experiments.checkpoint import resolve_seed
from critwin.experiments.forward_reverse import forward_reverse

__all__ = [
    "commitment_times",
    "roc_auc",
    "auc_interval",
    "tpr_at_fpr",
    "calibration_size",
    "MembershipAudit",
    "membership_audit",
]


def commitment_times(result: ForwardReverseResult, level: float = 0.5) -> np.ndarray:
    """Per-source OU time where the isotonic fit of its commitment curve falls to ``level``.

    Parameters
    ----------
    result : a forward–reverse result (several replicates per source make the curve finer).
    level : in (0, 1).

    Returns
    -------
    (N,) float array: ``-inf`` where the source is lost already at the smallest time, ``+inf`` where
    it is kept at the largest.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    order = np.argsort(result.times.numpy())
    times = result.times.numpy()[order]
    kept = result.kept().numpy()[order].astype(float)  # (T, M)
    ids = result.source_ids.numpy()
    n_sources = int(ids.max()) + 1
    out = np.empty(n_sources)
    for source in range(n_sources):
        curve = kept[:, ids == source].mean(1)
        out[source] = crossing_time(times, isotonic_decreasing(curve), level)
    return out


def roc_auc(positives, negatives) -> float:
    """Mann–Whitney estimate of ``P(score_pos > score_neg) + P(tie)/2`` (infinite scores allowed).

    Equal to scikit-learn's ``roc_auc_score`` on the ranks of the scores (``tests`` check it), which
    refuses the infinite scores of censored commitment times and takes about 200 times as long on the
    audit's sizes (the bootstrap of a TPR interval recomputes rates thousands of times).
    """
    pos, neg = np.asarray(positives, dtype=float), np.asarray(negatives, dtype=float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("positives and negatives must both be non-empty")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def _hanley_mcneil_variance(theta, n_positives: int, n_negatives: int):
    """Hanley & McNeil's (1982) variance of the Mann–Whitney AUC at true AUC ``theta``, the larger of
    its two orientations.

    Hanley–McNeil: ``[theta (1 - theta) + (m - 1)(Q1 - theta^2) + (n - 1)(Q2 - theta^2)] / (m n)`` with
    ``Q1 = theta / (2 - theta)``, ``Q2 = 2 theta^2 / (1 + theta)`` (``m`` positives, ``n`` negatives),
    from exponential scores whose higher-scoring group spreads more. That model is not symmetric: it
    equals the model with the groups swapped only at ``theta = 1/2``, and with few positives it is too
    small below 1/2 (a score that ranks members low: simulated coverage 0.80 at AUC 0.04, 8 against 200).
    The larger of ``V(theta; m, n)`` and ``V(theta; n, m)`` (the same as ``V(1 - theta; m, n)``) is used.
    """

    def oriented(a: int, b: int):
        extra = (a - 1) * (1 - theta) / (2 - theta) + (b - 1) * theta / (1 + theta)
        return theta * (1 - theta) * (1 + extra) / (a * b)

    return np.maximum(oriented(n_positives, n_negatives), oriented(n_negatives, n_positives))


def auc_interval(auc: float, n_positives: int, n_negatives: int, level: float = 0.95) -> tuple[float, float]:
    """Score interval of a ROC-AUC estimated from ``n_positives`` positives and ``n_negatives`` negatives.

    The set of ``theta`` in [0, 1] with ``|auc - theta| <= z sqrt(V(theta))``, ``V`` the Hanley–McNeil
    variance at ``theta`` (:func:`_hanley_mcneil_variance`, either orientation's larger; ``z`` the
    two-sided normal quantile of ``level``): the Wilson construction with the AUC's variance in place of
    ``theta (1 - theta) / n``. As ``V`` vanishes at 0 and 1 the interval stays in [0, 1], is never empty,
    and keeps a lower end below 1 at ``auc = 1``. At ``theta = 1/2`` ``V`` is the exact null variance of
    the Mann–Whitney statistic, ``(m + n + 1) / (12 m n)``; ties (censored scores) make the true variance
    smaller, so the interval errs wide. Its ends are the extreme roots, found on a grid of 2,001 points
    and refined by bisection. Coverage: module notes.

    Parameters
    ----------
    auc : the estimate, in [0, 1] (:func:`roc_auc`).
    n_positives, n_negatives : group sizes (>= 1).
    level : confidence level in (0, 1).

    Returns
    -------
    (lower, upper), containing ``auc``.

    Examples
    --------
    >>> low, high = auc_interval(1.0, 8, 200)
    >>> round(low, 3), high
    (0.82, 1.0)
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    auc = float(auc)
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"auc must lie in [0, 1], got {auc}")
    m = check_positive_int(n_positives, "n_positives")
    n = check_positive_int(n_negatives, "n_negatives")
    z = float(norm.ppf(0.5 + check_eps(level, "level") / 2))

    def excess(theta):  # <= 0 inside the interval
        return np.abs(auc - theta) - z * np.sqrt(_hanley_mcneil_variance(theta, m, n))

    def end(a: float, b: float) -> float:
        """The root of ``excess`` nearest ``a`` on [a, b], where ``excess(a) >= 0 >= excess(b)``."""
        grid = np.linspace(a, b, 2001)
        values = excess(grid)
        i = int(np.argmax(values <= 0))  # the first grid point inside
        if i == 0:
            return float(a)
        return float(brentq(excess, grid[i - 1], grid[i])) if values[i] < 0 else float(grid[i])

    lower = end(0.0, auc) if auc > 0 else 0.0
    upper = end(1.0, auc) if auc < 1 else 1.0
    return min(lower, auc), max(upper, auc)


def tpr_at_fpr(
    positives, calibration_negatives, test_negatives, fpr: float = 0.01, level: float = 0.95
) -> dict[str, Any]:
    """Threshold at the ``1 - fpr`` quantile of calibration non-members; rates on held-out sets.

    With fewer than ``1 / fpr`` calibration non-members the quantile cannot resolve ``fpr`` (the
    threshold is their maximum, whose false-positive rate is about ``1 / (n + 1)``): a warning says so,
    and ``fpr_held_out`` (the realised rate on the held-out non-members) is the number to report.

    Parameters
    ----------
    positives : scores of the members (higher: more likely a member).
    calibration_negatives : non-members' scores that only set the threshold.
    test_negatives : held-out non-members' scores (may be empty: ``fpr_held_out`` is then NaN).
    fpr : target false-positive rate in (0, 1).
    level : confidence level of ``tpr_ci``.

    Returns
    -------
    dict with ``threshold``, ``tpr`` (the fraction of members above it), ``tpr_ci``, ``fpr_held_out``,
    ``target_fpr``, ``n_calibration``, ``n_held_out``. ``tpr_ci`` is the Clopper–Pearson interval
    (:func:`critwin._stats.clopper_pearson_bounds`) of the members above the threshold: it covers, at
    least at ``level`` whatever the score laws and the group sizes, the TPR *of this threshold* (the
    chance that a member's score exceeds it, given the calibration set). That threshold's own
    false-positive rate is not ``fpr`` but is estimated by ``fpr_held_out``; the TPR at a threshold of
    exactly ``fpr`` would need the calibration quantile's uncertainty as well, which with few
    calibration non-members (the threshold is one of their largest scores) is most of it.

    Examples
    --------
    >>> op = tpr_at_fpr([3.0, 2.5, 0.1, 4.0], [0.0, 0.5, 1.0, 1.5], [0.2, 1.8], fpr=0.25)
    >>> op["threshold"], op["tpr"], [round(end, 3) for end in op["tpr_ci"]]
    (1.0, 0.75, [0.194, 0.994])
    """
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    level = check_eps(level, "level")
    calib = np.sort(np.asarray(calibration_negatives, dtype=float))
    if calib.size == 0:
        raise ValueError("calibration_negatives must be non-empty")
    pos = np.asarray(positives, dtype=float)
    if pos.size == 0:
        raise ValueError("positives must be non-empty")
    if calib.size * fpr < 1.0 - 1e-9:  # not calib.size < 1 / fpr: 1 / (1 / 49) > 49 in floating point
        warnings.warn(
            f"{calib.size} calibration non-members cannot calibrate a false-positive rate of {fpr:g} "
            f"(needs at least {math.ceil(1.0 / fpr)}); read the held-out FPR instead",
            UserWarning,
            stacklevel=2,
        )
    # The smallest threshold that at most a fraction fpr of calibration non-members exceed.
    k = min(calib.size - 1, int(math.ceil((1.0 - fpr) * calib.size)) - 1)
    threshold = calib[max(k, 0)]
    neg = np.asarray(test_negatives, dtype=float)
    above = int((pos > threshold).sum())
    return {
        "threshold": float(threshold),
        "tpr": above / pos.size,
        "tpr_ci": clopper_pearson_bounds(above, pos.size, level),
        "fpr_held_out": float((neg > threshold).mean()) if neg.size else float("nan"),
        "target_fpr": fpr,
        "n_calibration": int(calib.size),
        "n_held_out": int(neg.size),
    }


@dataclass(repr=False)
class MembershipAudit:
    """Result of :func:`membership_audit`.

    Attributes
    ----------
    times : (T,) realised OU times.  member_curve, nonmember_curve : (T,) mean commitment curves.
    member_scores, calibration_scores, test_scores : commitment times of members, of the calibration
        non-members and of the held-out non-members.
    auc, auc_ci : ROC-AUC of members vs held-out non-members and its interval (:func:`auc_interval`).
    operating_point : threshold (from calibration non-members), TPR and held-out FPR.
    """

    times: np.ndarray
    member_curve: np.ndarray
    nonmember_curve: np.ndarray
    member_scores: np.ndarray
    calibration_scores: np.ndarray
    test_scores: np.ndarray
    auc: float
    auc_ci: tuple[float, float]
    operating_point: dict[str, float]
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        op = self.operating_point
        return {
            "auc": self.auc,
            "auc_ci": self.auc_ci,
            "tpr": op["tpr"],
            "target_fpr": op["target_fpr"],
            "fpr_held_out": op["fpr_held_out"],
            "members": int(self.member_scores.size),
            "calibration": int(self.calibration_scores.size),
            "held_out": int(self.test_scores.size),
        }

    def __repr__(self) -> str:
        return short_repr("MembershipAudit", self.summary())

    def _repr_html_(self) -> str:
        return html_summary("MembershipAudit", self.summary())

    def to_pandas(self):
        """One row per audited image: ``group`` (member, calibration, held_out) and its ``score``."""
        groups = {"member": self.member_scores, "calibration": self.calibration_scores}
        groups["held_out"] = self.test_scores
        return data_frame(
            {
                "group": [name for name, scores in groups.items() for _ in scores],
                "score": np.concatenate(list(groups.values())),
            }
        )

    def plot(self, ax=None):
        """Mean commitment curves of members and held-out non-members against OU time; returns the Axes."""
        ax = axes(ax)
        ax.plot(self.times, self.member_curve, "o-", ms=3, label="members")
        ax.plot(self.times, self.nonmember_curve, "s--", ms=3, label="non-members")
        ax.set_xlabel("OU time t")
        ax.set_ylabel("commitment c(t)")
        ax.set_title(f"ROC-AUC {self.auc:.3f}")
        ax.legend(loc="best", fontsize="small")
        return ax

    def to_dict(self) -> dict[str, Any]:
        """Plain values; censored commitment times (outside the measured range) keep their direction
        through :func:`critwin._io.json_text` (``{"value": null, "censored": "above"}``)."""
        return {
            "times": self.times.tolist(),
            "member_curve": self.member_curve.tolist(),
            "nonmember_curve": self.nonmember_curve.tolist(),
            "member_scores": self.member_scores.tolist(),
            "calibration_scores": self.calibration_scores.tolist(),
            "test_scores": self.test_scores.tolist(),
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "operating_point": self.operating_point,
            "metadata": self.metadata,
        }


def _check_batches(members, nonmembers, calibration_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    members = torch.as_tensor(members)
    nonmembers = torch.as_tensor(nonmembers)
    if members.ndim < 2 or members.shape[0] == 0:
        raise ValueError("members must be a non-empty batch (M, ...)")
    if nonmembers.ndim < 2 or nonmembers.shape[0] < 2 or nonmembers.shape[1:] != members.shape[1:]:
        raise ValueError("nonmembers must be a batch of at least 2 samples shaped like members")
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must lie in (0, 1), got {calibration_fraction}")
    return members, nonmembers


def _mean_curves(result: ForwardReverseResult, n_members: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times in increasing order and the mean commitment curves of members and of non-members."""
    kept = result.kept().double()
    is_member = result.source_ids < n_members
    order = np.argsort(result.times.numpy())
    member_curve = kept[:, is_member].mean(1).numpy()[order]
    return result.times.numpy()[order], member_curve, kept[:, ~is_member].mean(1).numpy()[order]


def calibration_size(n_nonmembers: int, calibration_fraction: float = 0.5) -> int:
    """How many of ``n_nonmembers`` (at least 2) non-members :func:`membership_audit` sets aside to
    calibrate its threshold: ``calibration_fraction`` of them, rounded, leaving at least one of each.

    Examples
    --------
    >>> calibration_size(40), calibration_size(8, 0.25), calibration_size(2, 0.9)
    (20, 2, 1)
    """
    return min(max(1, int(round(calibration_fraction * n_nonmembers))), n_nonmembers - 1)


def _split_scores(scores: np.ndarray, n_members: int, n_nonmembers: int, calibration_fraction: float, rng):
    """Member scores, and a random split of the non-members' into calibration and held-out test."""
    permuted = rng.permutation(n_nonmembers) + n_members
    n_calib = calibration_size(n_nonmembers, calibration_fraction)
    calib_ids, test_ids = permuted[:n_calib], permuted[n_calib:]
    return scores[:n_members], scores[calib_ids], scores[test_ids]


def membership_audit(
    model,
    members: torch.Tensor,
    nonmembers: torch.Tensor,
    times,
    *,
    n_per_time: int = 4,
    calibration_fraction: float = 0.5,
    threshold: float | None = None,
    level: float = 0.5,
    fpr: float = 0.01,
    sampler: str | None = None,
    seed: int | None = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    generator: torch.Generator | None = None,
    executor="local",
    ray_address: str | None = None,
    ray_timeout: float | None = None,
) -> MembershipAudit:
    """Membership inference by commitment time, calibrated on non-members.

    Parameters
    ----------
    model : a mixture (with ``sampler``) or any :class:`~critwin.ReverseProcess`.
    members : (M, ...) training samples.  nonmembers : (N, ...) samples the model never saw (N >= 2).
    times : OU times of the forward–reverse sweep.
    n_per_time : replicates per source and time.
    calibration_fraction : fraction of ``nonmembers`` used only to set the decision threshold.
    threshold : an output counts as "its own source" only within this L2 distance (None: nearest).
    level : commitment-curve level defining the commitment time.
    fpr : target false-positive rate of the operating point; the :func:`calibration_size` calibration
        non-members resolve rates down to one in their number
        (:func:`~critwin.diagnostics.prompt_privacy.supported_fpr`).
    sampler, cond, progress, executor, ray_address, ray_timeout : passed to
        :func:`critwin.forward_reverse` (``executor``: where the sweep's units run, ``"local"`` or
        ``"ray"``).
    seed, generator : base seed of the sweep and of the calibration split (``generator``
        gives it when ``seed`` is None, as in :func:`critwin.forward_reverse`; neither: seed 0, so the
        audit is deterministic by default).

    Returns
    -------
    MembershipAudit

    Examples
    --------
    The exact score of a finite training set (:class:`~critwin.mixtures.EmpiricalMixture`) memorises
    it: its members come back from small noise levels, held-out points never do.

    >>> import torch, critwin
    >>> g = torch.Generator().manual_seed(0)
    >>> members = torch.randn(20, 8, generator=g, dtype=torch.float64)
    >>> others = torch.randn(40, 8, generator=g, dtype=torch.float64)
    >>> model = critwin.EmpiricalMixture(members)
    >>> audit = critwin.membership_audit(model, members, others, [0.05, 0.2, 1.0], sampler="exact", fpr=0.05)
    >>> audit
    MembershipAudit(auc=1.00 [0.90, 1.00], tpr=1, target_fpr=0.05, fpr_held_out=0, members=20, ...)
    """
    members, nonmembers = _check_batches(members, nonmembers, calibration_fraction)
    seed = resolve_seed(seed, generator, default=0)
    sources = torch.cat([members, nonmembers.to(members.dtype)])
    feature = SourceSimilarity(sources, threshold=threshold)
    result = forward_reverse(
        model,
        sources,
        times,
        n_per_time=n_per_time,
        feature=feature,
        sampler=sampler,
        seed=seed,
        cond=cond,
        progress=progress,
        feature_label=feature.name,
        executor=executor,
        ray_address=ray_address,
        ray_timeout=ray_timeout,
    )
    scores = commitment_times(result, level)
    n_members = members.shape[0]
    rng = np.random.default_rng(seed)
    member_scores, calib_scores, test_scores = _split_scores(
        scores, n_members, nonmembers.shape[0], calibration_fraction, rng
    )
    auc = roc_auc(member_scores, test_scores)
    times, member_curve, nonmember_curve = _mean_curves(result, n_members)
    return MembershipAudit(
        times=times,
        member_curve=member_curve,
        nonmember_curve=nonmember_curve,
        member_scores=member_scores,
        calibration_scores=calib_scores,
        test_scores=test_scores,
        auc=auc,
        auc_ci=auc_interval(auc, member_scores.size, test_scores.size),
        operating_point=tpr_at_fpr(member_scores, calib_scores, test_scores, fpr),
        metadata={
            # Membership is known by construction (training vs held-out): no classifier grades the score.
            "graded_by": "membership ground truth (training vs held-out images)",
            "feature": feature.name,
            "level": level,
            "n_per_time": n_per_time,
            "seed": seed,
            "process": result.metadata.get("process"),
            "provenance": result.metadata.get("provenance"),
        },
    )
