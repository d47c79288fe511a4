"""Prompt-level fairness of a text-to-image model: when a prompt's open attribute is decided, and four
ways to move it to a target on the same model, the same prompt and the same draws (docs/theory.md §8).

For a prompt that leaves an attribute open ("a circle": which background?) the methods are

- ``plain``: the pipeline's own sampling (classifier-free guidance at every step).
- ``augmentation`` (Fair Diffusion-style prompt editing): each sample's prompt gets the attribute's value
  appended, drawn uniformly (``augment(prompt, value)``, e.g. "a circle on a grey background"). Same cost.
- ``interval guidance`` (Kynkäänniemi et al. 2024): guidance is applied only at the steps whose noise
  level lies in ``(t_lo, t_hi]`` (OU time of the state the step starts from); every other step uses the
  conditional prediction alone (guidance scale 1, one UNet row instead of two), so what is guided is the
  noise prediction ``eps_u + g (eps_c - eps_u)`` of the steps inside the interval, with the same prompt.
  Fewer NFEs than plain sampling.
- ``window rebalancing`` (critwin): the attribute's window is measured for this prompt (cloning the
  prompt's own generations, read by the selector); every trajectory is generated unchanged down to the
  window's upper end ``t_before`` and there ``n_candidates`` continuations are drawn, of which the
  selector picks one per trajectory to reach the target (:func:`critwin.rebalance`). Where the window
  is still open at the schedule's first step (``t_before`` censored above: text-to-image schedules stop
  short of pure noise, and a global attribute such as the background is then decided by the initial
  noise), the candidates are independent generations from the prior instead. Extra NFEs: the
  continuations after the fork; the window measurement is a one-off per prompt, reported apart.

Every method starts from the same initial noises and draws (one seed), so sample ``i`` of a method and
sample ``i`` of plain sampling are paired. Graded by independent judges only (docs/audits.md, 'Who grades'):
the attribute's TV to the target with :func:`~critwin.diagnostics.fairness.tv_interval`, each other
attribute's TV between the method's and the plain samples with paired intervals (unchanged when every
per-value difference's interval holds 0), caption adherence and the KID to reference images
(:mod:`critwin.diagnostics.prompt_quality`), all computed the same way for every method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._validation import check_positive_int, check_seed, check_time
from critwin.diagnostics.fairness import (
    check_judge,
    check_target,
    paired_comparison,
    rebalance,
    total_variation,
    tv_interval,
)
from critwin.diagnostics.prompt_quality import caption_adherence, kernel_distance
from critwin.experiments import apply_feature
from critwin.experiments.cloning import clone
from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.process import grid_times

__all__ = [
    "METHODS",
    "KYNKAANNIEMI_INTERVAL",
    "PromptFairness",
    "prompt_fairness",
    "prompt_windows",
    "window_summary",
    "plain_samples",
    "augmented_samples",
    "interval_guided_samples",
]

METHODS = ("plain", "augmentation", "interval guidance", "window rebalancing")
KYNKAANNIEMI_INTERVAL = (0.038, 1.697)
"""Default guidance interval in OU time: Kynkäänniemi et al.'s EDM2 interval sigma in (0.28, 5.42],
mapped by ``t = 1/2 ln(1 + sigma^2)`` (docs/theory.md §1)."""


# ------------------------------------------------------------------------------------------- windows
def window_summary(estimate: WindowEstimate | None) -> dict[str, Any]:
    """Endpoints and ``t½`` with their bootstrap intervals; an interval that misses its estimate (a
    percentile interval of a censored or discrete statistic can) is widened to hold it, flagged.
    ``{"constant": True}`` for an attribute that never varies (no window)."""
    if estimate is None:
        return {"constant": True}
    out: dict[str, Any] = {"constant": False, "base_rate": float(estimate.b), "widened": []}
    for key in ("t_after", "t_before", "t_half"):
        value, (low, high) = float(getattr(estimate, key)), getattr(estimate, f"{key}_ci")
        if np.isfinite(value) and not (low <= value <= high):
            low, high = min(low, value), max(high, value)
            out["widened"].append(key)
        out[key], out[f"{key}_ci"] = value, [float(low), float(high)]
    out["times"], out["c"], out["r_fit"] = (
        estimate.times.tolist(),
        estimate.c.tolist(),
        estimate.r_fit.tolist(),
    )
    return out


def prompt_windows(
    model,
    prompt: str,
    readers: Mapping[str, Callable],
    *,
    n_trajectories: int = 32,
    n_clones: int = 2,
    fork_times=None,
    n_boot: int = 200,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, WindowEstimate | None], int]:
    """The window of the attribute each reader reads, for ``prompt``: one cloning sweep of the prompt's own
    generations read by every reader (docs/theory.md §5), and the UNet rows it spent.

    Parameters
    ----------
    model : a :class:`~critwin.diagnostics.prompt_sampling.PromptModel`.
    prompt : the prompt.  readers : name -> attribute reader (e.g. the selector and the judge).
    n_trajectories, n_clones : trunks and continuations per fork.
    fork_times : OU times of the forks (default: 6 grid times from 0.05 to the largest, log-spaced).
    n_boot, seed : bootstrap of the window's intervals; seed of the sweep.

    Returns
    -------
    ({name: WindowEstimate, or None when the attribute never varies among the generations}, UNet rows)
    """
    seed = check_seed(seed)
    process = model.process(prompt)
    times = (
        grid_times(process, 6, lo=0.05) if fork_times is None else fork_times
    )  # default: as prompt_fairness
    with model.counting() as counter:
        result = clone(
            process, n_trajectories, times, n_clones, feature=dict(readers), seed=seed, progress=progress
        )
    estimates = {}
    for name in readers:
        own = result.select(name).own_labels
        # An attribute that never varies among the prompt's generations has no window (base rate 1).
        varies = bool((own != own[0]).any())
        estimates[name] = (
            estimate_window(result, n_boot=n_boot, per_class=False, seed=seed, feature=name)
            if varies
            else None
        )
    return estimates, counter.rows


# ------------------------------------------------------------------------------------------- methods
def _run(process, n: int, seed: int, guided_steps=None) -> torch.Tensor:
    """``n`` images from the prior; steps outside ``guided_steps`` (a bool per step) run unguided."""
    generator = torch.Generator().manual_seed(seed)
    x = process.prior(n, generator=generator)
    if guided_steps is None:
        return process.decode(process.run(x, generator=generator)).cpu()
    start = 0
    steps = list(guided_steps)
    while start < len(steps):
        stop = start
        while stop < len(steps) and steps[stop] == steps[start]:
            stop += 1
        cond = None if steps[start] else {"guidance_scale": 1.0}
        x = process.run(x, start=start, stop=stop, generator=generator, cond=cond)
        start = stop
    return process.decode(x).cpu()


def plain_samples(model, prompt: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images of ``prompt`` as the pipeline samples them (guidance at every step)."""
    seed = check_seed(seed)
    return _run(model.process(prompt), n, seed)


def augmented_samples(
    model, prompt: str, n: int, augment: Callable[[str, int], str], n_values: int, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """Prompt augmentation: sample ``i`` is drawn with ``augment(prompt, v_i)``, ``v_i`` uniform over
    ``n_values`` values (seeded by ``seed``); returns the images and the prompts used."""
    seed = check_seed(seed)
    values = np.random.default_rng(seed).integers(0, n_values, n)
    prompts = [augment(prompt, int(v)) for v in values]
    model.check(list(dict.fromkeys(prompts)), "augmented prompts")
    return _run(model.process(prompts), n, seed), prompts


def interval_guided_samples(
    model, prompt: str, n: int, interval=KYNKAANNIEMI_INTERVAL, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """Guidance only at the steps whose starting noise level (OU time) lies in ``(low, high]``; returns the
    images and the (L,) guided flag of every step."""
    seed = check_seed(seed)
    low, high = (check_time(float(v), "interval") for v in interval)
    if not low < high:
        raise ValueError(f"interval must be (low, high) with low < high, got {tuple(interval)}")
    process = model.process(prompt)
    times = process.times[:-1].numpy()
    guided = (times > low) & (times <= high)
    return _run(process, n, seed, guided.tolist()), guided


# ------------------------------------------------------------------------------------------- grading
@dataclass(repr=False)
class PromptFairness:
    """Result of :func:`prompt_fairness`.

    Attributes
    ----------
    prompt, attribute, target : what was balanced, and toward what.
    rows : one dict per method (:data:`METHODS`): ``distribution``, ``tv`` and ``tv_ci`` to the target,
        ``others`` (per other attribute: :func:`~critwin.diagnostics.fairness.paired_comparison` against
        plain sampling), ``adherence``/``adherence_ci``, ``kid``/``kid_ci``, ``nfe`` (UNet rows),
        ``extra_nfe`` (against plain), ``graded_by``.
    windows : {reader name: :func:`window_summary`} of the attribute for this prompt.
    fork_time, fork_step : where the rebalancing forked (``inf``: from the prior).  window_nfe : UNet rows of
        the window measurement.
    samples : {method: images}.  metadata : settings, model, judges and selector.
    """

    prompt: str
    attribute: str
    target: np.ndarray
    rows: list[dict[str, Any]]
    windows: dict[str, dict[str, Any]]
    fork_time: float
    fork_step: Any
    window_nfe: int
    samples: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def row(self, method: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["method"] == method)

    def __repr__(self) -> str:
        tvs = ", ".join(f"{r['method']}: {r['tv']:.3f}" for r in self.rows)
        return f"PromptFairness({self.prompt!r}, {self.attribute}: TV to target {tvs})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "attribute": self.attribute,
            "target": self.target.tolist(),
            "table": self.rows,
            "windows": self.windows,
            "fork_time": self.fork_time,
            "fork_step": self.fork_step,
            "window_nfe": self.window_nfe,
            "metadata": self.metadata,
        }


def _grade(images, plain_images, attribute, judges, target, specified, reference, embed, level):
    """The figures of one method's images (the judges read everything)."""
    labels = {name: apply_feature(judge, images)[0].numpy() for name, judge in judges.items()}
    plain = {name: apply_feature(judge, plain_images)[0].numpy() for name, judge in judges.items()}
    values = labels[attribute]
    dist = np.bincount(values, minlength=target.size) / values.size
    others = {
        name: paired_comparison(plain[name], labels[name], level, getattr(judges[name], "n_classes", None))
        for name in judges
        if name != attribute
    }
    adherence, adherence_ci = caption_adherence(images, specified, judges, level)
    row = {
        "distribution": dist.tolist(),
        "tv": total_variation(dist, target),
        "tv_ci": list(tv_interval(values, target, level)),
        "others": others,
        "others_unchanged": all(o["unchanged"] for o in others.values()),
        "adherence": adherence,
        "adherence_ci": list(adherence_ci),
        "graded_by": {name: getattr(judge, "name", str(judge)) for name, judge in judges.items()},
    }
    if reference is not None and embed is not None:
        kid, kid_ci = kernel_distance(embed(images).numpy(), reference, level)
        row.update(kid=kid, kid_ci=list(kid_ci))
    return row


def _check_readers(attribute, selector, judges) -> dict[str, Any]:
    if not isinstance(judges, Mapping) or attribute not in judges:
        raise ValueError(f"judges must be a mapping attribute -> reader that includes {attribute!r}")
    for name, judge in judges.items():
        check_judge(judge, selector, f"judges[{name!r}]")
    return dict(judges)


def prompt_fairness(
    model,
    prompt: str,
    attribute: str,
    *,
    selector,
    judges: Mapping[str, Callable],
    n_classes: int,
    augment: Callable[[str, int], str] | None = None,
    specified: Mapping[str, int] | None = None,
    target=None,
    n: int = 200,
    n_candidates: int = 4,
    interval=KYNKAANNIEMI_INTERVAL,
    reference: np.ndarray | None = None,
    embed: Callable | None = None,
    window_trajectories: int = 32,
    window_clones: int = 2,
    fork_times=None,
    methods: Sequence[str] = METHODS,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> PromptFairness:
    """The four methods of the module notes, graded alike by independent judges.

    Parameters
    ----------
    model : a :class:`~critwin.diagnostics.prompt_sampling.PromptModel`.
    prompt : a prompt that leaves ``attribute`` open.  attribute : the attribute to balance.
    selector : the reader the rebalancing selects with (and measures the window with).
    judges : attribute -> independent reader (``attribute`` included); none may be the selector.
    n_classes : values of the attribute.
    augment : ``augment(prompt, value) -> prompt`` naming the value (None: no augmentation row).
    specified : attribute -> label the prompt names (caption adherence; default none).
    target : (C,) target distribution (default uniform).
    n : samples per method.  n_candidates : continuations per trajectory of the rebalancing.
    interval : OU-time interval of the interval guidance.
    reference, embed : reference features ``(m, d)`` and ``embed(images) -> (n, d)`` for the KID (None: no
        KID).
    window_trajectories, window_clones, fork_times : the window measurement (:func:`prompt_windows`).
    methods : which of :data:`METHODS` to run (``plain`` always runs: the others are paired with it).
    n_boot, level, seed : intervals and the seed of every draw.
    progress : progress bars.

    Returns
    -------
    PromptFairness
    """
    seed = check_seed(seed)
    n = check_positive_int(n, "n")
    target = check_target(target, n_classes)
    judges = _check_readers(attribute, selector, judges)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be among {', '.join(METHODS)}, got {unknown}")
    model.check([prompt], "prompt")
    specified = dict(specified or {})
    rows, samples = [], {}
    with model.counting() as counter:
        samples["plain"] = plain_samples(model, prompt, n, seed)
    costs = {"plain": counter.rows}
    fork_times = grid_times(model.process(prompt), 6, lo=0.05) if fork_times is None else list(fork_times)
    windows, window_nfe = prompt_windows(
        model,
        prompt,
        {"selector": selector, "judge": judges[attribute]},
        n_trajectories=window_trajectories,
        n_clones=window_clones,
        fork_times=fork_times,
        n_boot=n_boot,
        seed=seed,
        progress=progress,
    )
    estimate = windows["selector"]
    # A window still open at the largest fork (the schedule's first step), or an attribute the selector
    # never sees vary among clones of one initial noise: the initial noise decides, so the candidates
    # are independent generations (forking at the first step would only redraw what the noise decided).
    fork = math.inf if estimate is None or not np.isfinite(estimate.t_before) else float(estimate.t_before)
    fork_step = None
    for method in methods:
        if method == "plain":
            continue
        with model.counting() as counter:
            if method == "augmentation":
                if augment is None:
                    continue
                samples[method], _ = augmented_samples(model, prompt, n, augment, n_classes, seed)
            elif method == "interval guidance":
                samples[method], _ = interval_guided_samples(model, prompt, n, interval, seed)
            else:
                result = rebalance(
                    model.process(prompt),
                    n,
                    selector,
                    n_classes,
                    fork,
                    target=target,
                    n_candidates=n_candidates,
                    seed=seed,
                    intervals=False,
                    progress=progress,
                )
                samples[method], fork, fork_step = result.samples.cpu(), result.fork_time, result.fork_step
        costs[method] = counter.rows
    for method, images in samples.items():
        row = _grade(images, samples["plain"], attribute, judges, target, specified, reference, embed, level)
        rows.append(
            {"method": method, **row, "nfe": costs[method], "extra_nfe": costs[method] - costs["plain"]}
        )
    return PromptFairness(
        prompt=prompt,
        attribute=attribute,
        target=target,
        rows=rows,
        windows={name: window_summary(est) for name, est in windows.items()},
        fork_time=float(fork),
        fork_step=fork_step,
        window_nfe=window_nfe,
        samples=samples,
        metadata={
            "model": model.describe(),
            "selector": getattr(selector, "name", str(selector)),
            "judges": {name: getattr(judge, "name", str(judge)) for name, judge in judges.items()},
            "n": n,
            "n_candidates": n_candidates,
            "interval": [float(v) for v in interval],
            "specified": specified,
            "seed": seed,
            "level": level,
            "pairing": "every method starts from the same initial noises and draws (seed); sample i of a "
            "method is paired with sample i of plain sampling",
        },
    )
