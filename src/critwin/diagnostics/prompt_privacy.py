"""Prompt-level memorisation of a text-to-image model: critwin's window signal beside the peer detectors.

Protocol (docs/theory.md §8, as in the memorisation literature): members are training prompts, grouped by how
often their caption–image pair was duplicated in training; non-members are held-out prompts of the same
grammar; a third, disjoint set of held-out prompts (calibration) only sets each score's decision
threshold. For every score of :mod:`critwin.diagnostics.prompt_scores` and every duplication count (and
all members together) the audit reports

- ROC-AUC of members against the held-out non-members (Mann–Whitney, ties half) with its score interval
  (:func:`~critwin.diagnostics.privacy.auc_interval`: a percentile bootstrap under-covers with the 8
  members of one duplication count, most near 1), and
- the TPR at the threshold that a fraction ``fpr`` (1%) of the *calibration* prompts exceed, with the
  false-positive rate it realises on the held-out non-members (``n`` calibration prompts resolve rates
  down to ``1 / n``: a smaller requested ``fpr`` is raised to that, the smallest supported, and the
  audit records both), with the Clopper–Pearson interval of the members above the threshold
  (:func:`~critwin.diagnostics.privacy.tpr_at_fpr`): it covers the TPR *of the calibrated threshold*
  (the chance that a member exceeds it) at least at its level, whatever the group sizes; the
  threshold's own false-positive rate is the held-out FPR beside it, not exactly ``fpr``,

and the UNet evaluations the score spends per prompt. Membership is known by construction, so the
ground truth grades every score (no classifier is involved).

The TPR interval was a percentile bootstrap (all three sets resampled, the threshold recalibrated in
every replicate). With few members it under-covered: binormal scores, 2,000 draws per setting, nominal
0.95, 8 members, it covered the TPR of the calibrated threshold 0.654 and 0.193 at true TPR 0.9 and 0.99
(20 calibration scores, 5%), 0.238 at 0.99 (200, 1%), and 0.459 to 0.573 with 32 members at 0.99;
Clopper–Pearson covered 0.969 to 0.994 in all 16 settings (8 or 32 members, 20 or 200 calibration
scores, true TPR 0.1 to 0.99). It does not cover the TPR at a threshold of false-positive rate exactly
``fpr`` where the calibration set is small beside the members (32 members, 20 calibration scores: 0.68
to 0.74 at TPR 0.1 to 0.5): that estimand needs the calibration quantile's uncertainty as well.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._display import data_frame, html_summary, short_repr
from critwin._validation import check_eps, check_positive_int, check_seed
from critwin.diagnostics.privacy import auc_interval, roc_auc, tpr_at_fpr
from critwin.diagnostics.prompt_scores import (
    SECMI_TIMESTEP,
    commitment_scores,
    copy_distances,
    denoising_loss_scores,
    generate,
    wen_scores,
)

__all__ = ["PromptSets", "MemorisationAudit", "memorisation_audit", "SCORES", "score_table", "supported_fpr"]

SCORES = {
    "commitment": "critwin: commitment time t½ of the prompt's generations (cloning collapse)",
    "wen": "Wen et al. 2024: mean L2 norm of eps(x_T, c) - eps(x_T, null) at the first step",
    "loss": f"SecMI/PIA-style: minus the denoising loss of the prompt's own image at step {SECMI_TIMESTEP}",
    "copying": "ground truth of copying: minus the mean RMS distance of generations to their nearest "
    "training image",
}
"""The scores :func:`memorisation_audit` computes, in their table order."""

GRADED_BY = "membership ground truth (training vs held-out prompts)"


@dataclass(repr=False)
class PromptSets:
    """The prompts of a memorisation audit, and the images the image-based scores need.

    Attributes
    ----------
    members : training prompts.  counts : (M,) how often each member's pair was duplicated in training
        (0: unknown; such members count only in the all-members row).
    non_members : held-out prompts (the test negatives).  calibration : held-out prompts that only set
        thresholds (disjoint from both).
    images : optional (M + N + C, 3, H, W) image of every prompt in that order (members: their training
        image; held-out prompts: an image of the same caption) for the ``loss`` score.
    training_images : optional (T, 3, H, W) the training set, for the ``copying`` ground truth.

    Examples
    --------
    >>> import critwin
    >>> sets = critwin.PromptSets(
    ...     members=["a red circle", "a blue square"], counts=[1, 4], non_members=["a green star"],
    ...     calibration=["a red star", "a blue circle"],
    ... )
    >>> sets
    PromptSets(members=2, non_members=1, calibration=2, images=False)
    >>> members, non_members, calibration = sets.split([0.9, 0.8, 0.1, 0.2, 0.3])  # one score per prompt
    >>> members.tolist(), non_members.tolist(), calibration.tolist()
    ([0.9, 0.8], [0.1], [0.2, 0.3])
    """

    members: list[str]
    counts: list[int]
    non_members: list[str]
    calibration: list[str]
    images: torch.Tensor | None = None
    training_images: torch.Tensor | None = None

    def __post_init__(self):
        for name in ("members", "non_members", "calibration"):
            if not list(getattr(self, name)):
                raise ValueError(f"{name} must hold at least one prompt")
        if len(self.counts) != len(self.members):
            raise ValueError(
                f"counts must give one count per member ({len(self.members)}), got {len(self.counts)}"
            )
        groups = (set(self.members), set(self.non_members), set(self.calibration))
        if groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]:
            raise ValueError("members, non_members and calibration must be disjoint sets of prompts")
        if self.images is not None and self.images.shape[0] != len(self.prompts):
            raise ValueError(
                f"images must hold one image per prompt ({len(self.prompts)}), got {self.images.shape[0]}"
            )

    def __repr__(self) -> str:
        sizes = {"members": len(self.members), "non_members": len(self.non_members)}
        sizes.update(calibration=len(self.calibration), images=self.images is not None)
        return short_repr("PromptSets", sizes)

    @property
    def prompts(self) -> list[str]:
        """Every prompt: members, then non-members, then calibration."""
        return [*self.members, *self.non_members, *self.calibration]

    def split(self, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``values`` (one per prompt) as (members, non-members, calibration)."""
        values = np.asarray(values)
        m, n = len(self.members), len(self.non_members)
        return values[:m], values[m : m + n], values[m + n :]


def supported_fpr(fpr: float, n_calibration: int) -> float:
    """The false-positive rate a calibration set of ``n_calibration`` prompts can resolve: ``fpr``, or
    ``1 / n_calibration`` (the threshold at the second-largest calibration score) where ``fpr`` is smaller.

    Examples
    --------
    >>> supported_fpr(0.01, 200), supported_fpr(0.01, 40)
    (0.01, 0.025)
    """
    n_calibration = check_positive_int(n_calibration, "n_calibration", minimum=2)
    return max(float(fpr), 1.0 / n_calibration)


def _operating_point(member, negative, calibration, fpr: float, level: float) -> dict[str, Any]:
    with warnings.catch_warnings():
        # A small calibration set is reported (supported_fpr), not warned per row.
        warnings.simplefilter("ignore", UserWarning)
        return tpr_at_fpr(member, calibration, negative, fpr, level)


def score_table(scores, sets: PromptSets, fpr: float = 0.01, level: float = 0.95) -> list[dict[str, Any]]:
    """One score's rows: per duplication count and for all members, AUC and TPR at ``fpr`` with intervals.

    Parameters
    ----------
    scores : one score per prompt of ``sets.prompts`` (higher = more likely member).
    sets : the prompt sets.
    fpr : target false-positive rate (calibrated on ``sets.calibration``).
    level : confidence level of both intervals (the AUC's score interval, the TPR's Clopper–Pearson
        interval: module notes).

    Returns
    -------
    list of ``{"count", "members", "auc", "auc_ci", "tpr", "tpr_ci", "fpr_held_out", "threshold"}``
    (``count`` None for all members together).

    Examples
    --------
    >>> sets = PromptSets(["m1", "m2"], [1, 4], ["n1", "n2"], ["c1", "c2", "c3"])
    >>> rows = score_table([5.0, 6.0, 1.0, 2.0, 1.5, 0.5, 2.5], sets, fpr=0.4)
    >>> [(row["count"], row["auc"]) for row in rows]
    [(1, 1.0), (4, 1.0), (None, 1.0)]
    """
    member, negative, calibration = (np.asarray(v, dtype=float) for v in sets.split(scores))
    counts = np.asarray(sets.counts)
    # A count of 0 means unknown (a user's prompts file): such members enter the all-members row only.
    known = sorted(c for c in set(counts.tolist()) if c > 0)
    groups = [(int(c), counts == c) for c in known] + [(None, np.ones_like(counts, bool))]
    rows = []
    for count, mask in groups:
        pos = member[mask]
        op = _operating_point(pos, negative, calibration, fpr, level)
        auc = roc_auc(pos, negative)
        rows.append(
            {
                "count": count,
                "members": int(pos.size),
                "auc": auc,
                "auc_ci": list(auc_interval(auc, pos.size, negative.size, level)),
                "tpr": op["tpr"],
                "tpr_ci": list(op["tpr_ci"]),
                "fpr_held_out": op["fpr_held_out"],
                "threshold": float(op["threshold"]),
            }
        )
    return rows


@dataclass(repr=False)
class MemorisationAudit:
    """Result of :func:`memorisation_audit`.

    Attributes
    ----------
    scores : {score name: (P,) scores of ``sets.prompts``}.
    rows : {score name: :func:`score_table` rows}.
    nfe_per_prompt : {score name: UNet evaluations per prompt}.
    sets : the prompt sets (images not kept in :meth:`to_dict`).
    commitment : the :class:`~critwin.diagnostics.prompt_scores.CommitmentScores` (curves, threshold).
    fpr, level : target false-positive rate and confidence level.
    metadata : settings, model description, who graded (membership ground truth).
    """

    scores: dict[str, np.ndarray]
    rows: dict[str, list[dict[str, Any]]]
    nfe_per_prompt: dict[str, float]
    sets: PromptSets
    commitment: Any = None
    fpr: float = 0.01
    level: float = 0.95
    metadata: dict[str, Any] = field(default_factory=dict)

    def overall(self, score: str) -> dict[str, Any]:
        """The all-members row of ``score``."""
        return self.rows[score][-1]

    def summary(self) -> dict[str, Any]:
        return {name: round(self.overall(name)["auc"], 3) for name in self.rows} | {
            "members": len(self.sets.members),
            "non_members": len(self.sets.non_members),
            "calibration": len(self.sets.calibration),
        }

    def __repr__(self) -> str:
        return short_repr("MemorisationAudit", self.summary())

    def _repr_html_(self) -> str:
        return html_summary("MemorisationAudit", self.summary())

    def to_pandas(self):
        """One row per (score, duplication count) with AUC, TPR, their intervals and the NFEs per prompt."""
        records = [
            {"score": name, **row, "nfe_per_prompt": self.nfe_per_prompt[name]}
            for name, rows in self.rows.items()
            for row in rows
        ]
        return data_frame({key: [r[key] for r in records] for key in records[0]})

    def to_dict(self) -> dict[str, Any]:
        """Plain values; censored commitment times stay signed infinities (:func:`critwin._io.json_text`)."""
        out = {
            "graded_by": GRADED_BY,
            "fpr": self.fpr,
            "level": self.level,
            "scores_described": {name: SCORES[name] for name in self.rows},
            "table": self.rows,
            "nfe_per_prompt": self.nfe_per_prompt,
            "prompts": {
                "members": [
                    {"prompt": p, "count": int(c)}
                    for p, c in zip(self.sets.members, self.sets.counts, strict=True)
                ],
                "non_members": list(self.sets.non_members),
                "calibration": list(self.sets.calibration),
            },
            "scores": {name: values.tolist() for name, values in self.scores.items()},
            "metadata": self.metadata,
        }
        if self.commitment is not None:
            out["commitment"] = {
                "times": self.commitment.times.tolist(),
                "curves": self.commitment.curves.tolist(),
                "threshold": self.commitment.threshold,
                **self.commitment.metadata,
            }
        return out


def _check_scores(requested: Sequence[str], sets: PromptSets) -> list[str]:
    requested = list(requested)
    unknown = [s for s in requested if s not in SCORES]
    if unknown or not requested:
        raise ValueError(f"scores must be a non-empty selection of {', '.join(SCORES)}, got {requested!r}")
    if "loss" in requested and sets.images is None:
        raise ValueError("scores: 'loss' needs the image of every prompt (PromptSets.images)")
    if "copying" in requested and sets.training_images is None:
        raise ValueError("scores: 'copying' needs the training images (PromptSets.training_images)")
    return [s for s in SCORES if s in requested]


def memorisation_audit(
    model,
    sets: PromptSets,
    *,
    scores: Sequence[str] = tuple(SCORES),
    n_generations: int = 4,
    n_trajectories: int = 2,
    n_clones: int = 2,
    fork_times=None,
    commitment_guidance: float | None = 1.0,
    n_noise: int = 4,
    timestep: int = SECMI_TIMESTEP,
    fpr: float = 0.01,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> MemorisationAudit:
    """Every score of every prompt, and the comparison table (module notes).

    Parameters
    ----------
    model : a :class:`~critwin.diagnostics.prompt_sampling.PromptModel`.
    sets : the prompt sets (with images for ``loss``, training images for ``copying``).
    scores : which of :data:`SCORES` to compute (``copying`` reuses the commitment signal's generations
        when both are asked for and sampled at the model's guidance; otherwise it generates
        ``n_trajectories`` images per prompt at the model's guidance).
    n_generations : initial noises per prompt of the Wen score.
    n_trajectories, n_clones, fork_times : the commitment signal (:func:`commitment_scores`; its "same
        image" threshold is calibrated on the calibration prompts' generations).
    commitment_guidance : guidance scale of the commitment signal's trunks and continuations (default 1,
        the conditional law: :mod:`~critwin.diagnostics.prompt_scores` says why; None: the model's). The
        other scores use the model's.
    n_noise, timestep : the denoising loss (:func:`denoising_loss_scores`).
    fpr, level, seed : operating point (raised to :func:`supported_fpr` where the calibration set cannot
        resolve it), confidence level of the intervals (:func:`score_table`), seed of every draw.
    batch_size, progress : prompts per batch; progress bar of the commitment signal.

    Returns
    -------
    MemorisationAudit

    Examples
    --------
    The shipped ``shapes-t2i-memorise`` model, its 8 most duplicated members (64 copies each) against 16
    held-out prompts, scored by the cheapest score alone (Wen et al.'s, two UNet calls per generation);
    with 8 members the AUC's interval is wide:

    >>> import critwin
    >>> from critwin.diagnostics.prompt_shapes import card_prompt_sets
    >>> from critwin.models.shapes_t2i.pipeline import load_t2i_pipeline
    >>> model = critwin.PromptModel(load_t2i_pipeline("shapes-t2i-memorise"), num_inference_steps=5)
    >>> card = card_prompt_sets("shapes-t2i-memorise", with_images=False)  # the prompts its card records
    >>> sets = critwin.PromptSets(
    ...     card.members[24:], card.counts[24:], card.non_members[:16], card.calibration[:16]
    ... )
    >>> audit = critwin.memorisation_audit(model, sets, scores=("wen",), n_generations=2, fpr=0.1, seed=0)
    >>> audit
    MemorisationAudit(wen=0.438, members=8, non_members=16, calibration=16)
    >>> row = audit.overall("wen")
    >>> row["members"], bool(row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]), audit.nfe_per_prompt
    (8, True, {'wen': 4.0})
    """
    seed = check_seed(seed)
    requested = _check_scores(scores, sets)
    fpr_requested = check_eps(fpr, "fpr")
    if len(sets.calibration) < 2:  # one calibration score cannot set a threshold below an FPR of 1
        raise ValueError(f"sets.calibration must hold at least 2 prompts, got {len(sets.calibration)}")
    fpr = supported_fpr(fpr_requested, len(sets.calibration))
    level = check_eps(level, "level")
    prompts = sets.prompts
    calibration = slice(len(sets.members) + len(sets.non_members), len(prompts))
    values: dict[str, np.ndarray] = {}
    nfe: dict[str, float] = {}
    commitment = None
    if "commitment" in requested:
        commitment = commitment_scores(
            model,
            prompts,
            fork_times=fork_times,
            n_trajectories=n_trajectories,
            n_clones=n_clones,
            calibration=calibration,
            guidance_scale=commitment_guidance,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        values["commitment"], nfe["commitment"] = commitment.scores, commitment.nfe_per_prompt
    if "wen" in requested:
        values["wen"], nfe["wen"] = wen_scores(model, prompts, n_generations, seed, batch_size)
    if "loss" in requested:
        values["loss"], nfe["loss"] = denoising_loss_scores(
            model, prompts, sets.images, timestep, n_noise, seed, batch_size
        )
    if "copying" in requested:
        if commitment is not None and commitment.metadata["guidance_scale"] == model.guidance_scale:
            # the window signal's trunks are the prompt's generations at the model's guidance
            generations, nfe["copying"] = commitment.generations, commitment.nfe_trunks_per_prompt
        else:
            generations, nfe["copying"] = generate(model, prompts, n_trajectories, seed, batch_size)
        values["copying"] = copy_distances(generations, sets.training_images)
    ordered = {name: values[name] for name in requested}
    rows = {name: score_table(v, sets, fpr, level) for name, v in ordered.items()}
    return MemorisationAudit(
        scores=ordered,
        rows=rows,
        nfe_per_prompt={name: float(nfe[name]) for name in requested},
        sets=sets,
        commitment=commitment,
        fpr=fpr,
        level=level,
        metadata={
            "graded_by": GRADED_BY,
            "model": model.describe(),
            "n_generations": n_generations,
            "n_noise": n_noise,
            "timestep": timestep,
            "seed": seed,
            "fpr_requested": fpr_requested,
            "calibration_resolves_fpr": fpr == fpr_requested,
        },
    )
