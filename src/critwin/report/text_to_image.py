"""Demo section 8, "Text-to-image audits": the prompt-level fairness and memorisation tables on the shipped
Stable Diffusion pipelines trained on captioned shapes (:mod:`critwin.models.shapes_t2i`).

- Fairness (``shapes-t2i-biased``, where "a circle" without a named background is on blue 80% of the
  time in training): the background's window for several prompts (cloning, read by the analytic judge),
  and for "a circle" the four methods of :func:`critwin.diagnostics.prompt_fairness.prompt_fairness`
  on the same draws, graded by the judges (the shapes-selector CNN selects).
- Memorisation (``shapes-t2i-memorise``): the member prompts of every duplication count, held-out
  non-member and calibration prompts (subsets of the card's), and the four scores of
  :func:`critwin.diagnostics.prompt_privacy.memorisation_audit`, graded by membership itself.

Skipped while the weights are missing (``critwin train shapes-t2i-biased``, ``shapes-t2i-memorise``).
Computed, drawn and written into the page here (the other sections split these over ``sections``,
``figures`` and ``page``; one module keeps this one's parts together).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from critwin.clock import alpha_bar, snr  # noqa: E402
from critwin.diagnostics.prompt_fairness import (  # noqa: E402
    PromptFairness,
    prompt_fairness,
    prompt_windows,
    window_summary,
)
from critwin.diagnostics.prompt_privacy import MemorisationAudit, PromptSets, memorisation_audit  # noqa: E402
from critwin.diagnostics.prompt_shapes import (  # noqa: E402
    augmenter,
    card_prompt_sets,
    load_prompt_model,
    reference_features,
    shapes_readers,
    specified_attributes,
)
from critwin.models.shapes import ATTRIBUTES  # noqa: E402
from critwin.report import figures  # noqa: E402
from critwin.report.page import text_to_image_page  # noqa: E402
from critwin.report.plan import (  # noqa: E402
    FAIRNESS_MODEL,
    FAIRNESS_PROMPT,
    MEMORISATION_MODEL,
    text_to_image_available,
)

__all__ = [
    "FAIRNESS_MODEL",
    "MEMORISATION_MODEL",
    "FAIRNESS_PROMPT",
    "WINDOW_PROMPTS",
    "TextToImageSection",
    "text_to_image_available",
    "text_to_image_section",
    "plot_text_to_image",
    "text_to_image_page",
]

ATTRIBUTE = "background"
WINDOW_PROMPTS = ("a circle", "a red circle", "a circle with a mark", "a shape")
"""Prompts that leave the background open: the stereotyped one first."""


@dataclass
class TextToImageSection:
    """The fairness table of the fairness prompt, the windows of every prompt, the memorisation table."""

    fairness: PromptFairness
    windows: dict[str, dict[str, Any]]
    window_nfe: dict[str, int]
    memorisation: MemorisationAudit
    start: dict[str, float] | None = None

    def summary(self) -> dict[str, Any]:
        fair = self.fairness.to_dict()
        memo = self.memorisation.to_dict()
        memo.pop("scores")  # per-prompt values: in the CLI's JSON, not the demo summary
        return {
            "fairness": {"model": FAIRNESS_MODEL, **fair},
            "windows": {
                "model": FAIRNESS_MODEL,
                "attribute": ATTRIBUTE,
                "read_by": fair["metadata"]["judges"][ATTRIBUTE],
                "prompts": self.windows,
                "nfe": self.window_nfe,
            },
            "memorisation": {"model": MEMORISATION_MODEL, **memo},
            "start": self.start,
        }


def _subset(sets: PromptSets, n_non_members: int, n_calibration: int) -> PromptSets:
    """Every member, and the first prompts of the held-out sets (images and training set kept)."""
    m, n = len(sets.members), len(sets.non_members)
    non_members, calibration = sets.non_members[:n_non_members], sets.calibration[:n_calibration]
    keep = (
        list(range(m)) + list(range(m, m + len(non_members))) + list(range(m + n, m + n + len(calibration)))
    )
    images = None if sets.images is None else sets.images[keep]
    return PromptSets(sets.members, sets.counts, non_members, calibration, images, sets.training_images)


def sampling_start(process) -> dict[str, float]:
    """Where a process's sampling starts: its first timestep, OU time, signal coefficient and SNR."""
    t = float(process.times[0])
    return {
        "timestep": process.step_label(0),
        "ou_time": t,
        "signal": math.sqrt(alpha_bar(t)),
        "snr": float(snr(t)),
    }


def text_to_image_section(sizes, seed: int, progress: bool = False) -> TextToImageSection:
    """Both audits at the demo's sizes (``sizes``: :class:`~critwin.report.sections.DemoSizes`).

    The shipped pipelines keep Stable Diffusion's scaled-linear schedule, whose last training timestep
    still has signal coefficient 0.068 (0.118 at the first of 10 leading steps): every process built
    here would warn so (:class:`~critwin.adapters.diffusers.TerminalSNRWarning`). The section records
    where sampling starts (``start``) and the page states it instead.
    """
    from critwin.adapters.diffusers import TerminalSNRWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TerminalSNRWarning)  # stated on the page from ``start``
        return _text_to_image_section(sizes, seed, progress)


def _text_to_image_section(sizes, seed: int, progress: bool) -> TextToImageSection:
    model = load_prompt_model(FAIRNESS_MODEL, sizes.t2i_steps)
    start = sampling_start(model.process([FAIRNESS_PROMPT]))
    selectors, judges = shapes_readers()
    specified = specified_attributes(FAIRNESS_PROMPT)
    reference, embed = reference_features(specified, n=sizes.t2i_reference, seed=seed + 12_345)
    fairness = prompt_fairness(
        model,
        FAIRNESS_PROMPT,
        ATTRIBUTE,
        selector=selectors[ATTRIBUTE],
        judges=judges,
        n_classes=len(ATTRIBUTES[ATTRIBUTE]),
        augment=augmenter(ATTRIBUTE),
        specified=specified,
        n=sizes.t2i_fair_n,
        n_candidates=4,
        reference=reference,
        embed=embed,
        window_trajectories=sizes.t2i_window_trajectories,
        n_boot=sizes.n_boot,
        seed=seed,
        progress=progress,
    )
    windows = {FAIRNESS_PROMPT: fairness.windows["judge"]}
    window_nfe = {FAIRNESS_PROMPT: fairness.window_nfe}
    for prompt in WINDOW_PROMPTS[1:]:
        estimates, rows = prompt_windows(
            model,
            prompt,
            {"judge": judges[ATTRIBUTE]},
            n_trajectories=sizes.t2i_prompt_trajectories,
            n_boot=sizes.n_boot,
            seed=seed,
        )
        windows[prompt], window_nfe[prompt] = window_summary(estimates["judge"]), rows
    memo_model = load_prompt_model(MEMORISATION_MODEL, sizes.t2i_steps)
    sets = _subset(card_prompt_sets(MEMORISATION_MODEL), sizes.t2i_non_members, sizes.t2i_calibration)
    memorisation = memorisation_audit(
        memo_model,
        sets,
        n_generations=sizes.t2i_wen_generations,
        n_trajectories=2,
        n_clones=1,
        n_noise=sizes.t2i_loss_noise,
        seed=seed,
        progress=progress,
    )
    return TextToImageSection(fairness, windows, window_nfe, memorisation, start)


# ------------------------------------------------------------------------------------------- figures
def plot_text_to_image(section: TextToImageSection, directory: Path) -> list[str]:
    """The background's commitment curve per prompt, and each score's distribution per group."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for (prompt, window), style in zip(section.windows.items(), ("o-", "s--", "^:", "D-."), strict=False):
        if window.get("constant"):
            continue
        half = window["t_half"]
        label = f"'{prompt}' (t½ {half:.2f})" if np.isfinite(half) else f"'{prompt}' (t½ censored)"
        ax1.plot(window["times"], window["c"], style, ms=4, label=label)
    ax1.set_xscale("log")
    ax1.set_xlabel(r"OU time $t$ of the fork (noise level)")
    ax1.set_ylabel("P(continuation keeps the background)")
    ax1.set_title(f"When the background is decided ({FAIRNESS_MODEL})")
    ax1.legend(fontsize=8, loc="lower left")
    audit = section.memorisation
    names = list(audit.rows)
    counts = sorted(set(audit.sets.counts))
    groups = [(f"×{c}", np.asarray(audit.sets.counts) == c) for c in counts]
    for j, name in enumerate(names):
        member, negative, _ = audit.sets.split(audit.scores[name])
        values = [member[mask] for _, mask in groups] + [negative]
        finite = np.concatenate([v[np.isfinite(v)] for v in values]) if any(v.size for v in values) else []
        lo, hi = (np.min(finite), np.max(finite)) if len(finite) else (0.0, 1.0)
        scale = (hi - lo) or 1.0
        for k, v in enumerate(values):
            shown = np.clip((np.where(np.isfinite(v), v, np.where(v > 0, hi, lo)) - lo) / scale, 0, 1)
            x = j + (k - len(values) / 2) * 0.14 + np.linspace(-0.03, 0.03, max(v.size, 1))[: v.size]
            ax2.plot(
                x, shown, ".", ms=4, color=f"C{k}", label=(groups[k][0] if k < len(groups) else "non-members")
            )
    handles, labels = ax2.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    # beside the axes: inside, the legend covered scores
    placement = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}
    ax2.legend(unique.values(), unique.keys(), fontsize=8, title="members by\nduplication", **placement)
    ax2.set_xticks(range(len(names)), names)
    ax2.set_ylabel("score rescaled to [0, 1] (higher: more likely memorised)")
    ax2.set_title(f"Memorisation scores per prompt ({MEMORISATION_MODEL})")
    return [figures.save_figure(fig, directory, "t2i_audits.png")]
