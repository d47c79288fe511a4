"""Quality numbers of a shapes text-to-image model for its card: caption adherence, prompt probes, copying.

Everything samples through the stock ``StableDiffusionPipeline.__call__`` (the saved DDIM scheduler, the
card's guidance scale and step count), i.e. exactly what a user of the directory gets.

- :func:`caption_adherence`: for every fully specified prompt (all 72 attribute combinations, worded
  ``"a red circle on a blue background with a mark"``), ``n_per_prompt`` samples; per attribute, the
  share of samples whose reader (:func:`~critwin.models.shapes.attribute_readers`) reads the prompt's
  value, with a 95% Wilson interval.
- :func:`prompt_histograms`: the attribute histograms of samples of one prompt (``"a circle"``: the
  biased model's stereotype).
- :func:`copying`: for member prompts, the RMS pixel distance of generations to their own training image
  and whether it is nearer than every other training image (a copy); for held-out prompts, the distance to
  the nearest training image.
"""

from __future__ import annotations

from typing import Any

import torch

from critwin._stats import wilson_bounds
from critwin._validation import check_positive_int, check_seed
from critwin.models.shapes.data import ATTRIBUTES
from critwin.models.shapes_t2i.captions import caption_text
from critwin.models.shapes_t2i.config import T2IConfig
from critwin.models.shapes_t2i.data import T2IData

__all__ = [
    "fully_specified_prompts",
    "generate",
    "caption_adherence",
    "prompt_histograms",
    "copying",
    "evaluate_t2i",
    "PROBE_PROMPTS",
]

PROBE_PROMPTS = ("a circle", "a shape")
"""Under-specified prompts whose attribute histograms every card records."""
_Z95 = 1.959963984540054


def fully_specified_prompts() -> tuple[list[str], dict[str, torch.Tensor]]:
    """The 72 fully specified prompts and their attribute labels (attribute -> (72,) int64)."""
    combos = [
        dict(zip(ATTRIBUTES, values, strict=True))
        for values in torch.cartesian_prod(*(torch.arange(len(v)) for v in ATTRIBUTES.values())).tolist()
    ]
    labels = {name: torch.tensor([c[name] for c in combos]) for name in ATTRIBUTES}
    return [caption_text(c) for c in combos], labels


@torch.no_grad()
def generate(
    pipe,
    prompts: list[str],
    guidance_scale: float,
    num_inference_steps: int,
    seed: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """Images ``(len(prompts), 3, 16, 16)`` in [-1, 1] from ``pipe(prompts, ...)`` in batches.

    One generator seeded with ``seed`` draws every batch's initial latents in turn, so the images depend
    on ``seed``, the prompts and ``batch_size``.
    """
    seed = check_seed(seed)
    batch_size = check_positive_int(batch_size, "batch_size")
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, len(prompts), batch_size):
        out = pipe(
            prompts[start : start + batch_size],
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            generator=generator,
            output_type="pt",
        )
        chunks.append(out.images.float().cpu() * 2 - 1)
    return torch.cat(chunks)


def _rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson_bounds(k / n, n, _Z95)
    return {"rate": k / n, "ci95": [low, high], "k": k, "n": n}


def caption_adherence(
    pipe,
    readers: dict,
    guidance_scale: float,
    num_inference_steps: int,
    n_per_prompt: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Per attribute, how often samples of fully specified prompts show the prompt's value.

    Returns
    -------
    dict with ``attributes`` (attribute -> ``{"rate", "ci95", "k", "n"}``; 95% Wilson interval),
    ``all_attributes`` (every attribute right at once), ``per_value`` (attribute -> value -> rate),
    ``n_samples``, ``n_prompts``, ``guidance_scale``, ``num_inference_steps``, ``example_prompt``.
    """
    seed = check_seed(seed)
    n_per_prompt = check_positive_int(n_per_prompt, "n_per_prompt")
    prompts, labels = fully_specified_prompts()
    repeated = [p for p in prompts for _ in range(n_per_prompt)]
    images = generate(pipe, repeated, guidance_scale, num_inference_steps, seed)
    n = len(repeated)
    right = {}
    per_value = {}
    for name in ATTRIBUTES:
        wanted = labels[name].repeat_interleave(n_per_prompt)
        right[name] = readers[name](images) == wanted
        per_value[name] = {
            value: right[name][wanted == k].double().mean().item() for k, value in enumerate(ATTRIBUTES[name])
        }
    every = torch.stack(list(right.values())).all(0)
    return {
        "attributes": {name: _rate(int(r.sum()), n) for name, r in right.items()},
        "all_attributes": _rate(int(every.sum()), n),
        "per_value": per_value,
        "n_samples": n,
        "n_prompts": len(prompts),
        "n_per_prompt": n_per_prompt,
        "guidance_scale": guidance_scale,
        "num_inference_steps": num_inference_steps,
        "example_prompt": prompts[0],
        "through": "diffusers.StableDiffusionPipeline.__call__ with the saved DDIMScheduler",
    }


def prompt_histograms(
    pipe, readers: dict, prompt: str, n: int, guidance_scale: float, num_inference_steps: int, seed: int = 0
) -> dict[str, Any]:
    """Attribute histograms (fractions per value, 95% Wilson intervals) of ``n`` samples of ``prompt``."""
    seed = check_seed(seed)
    images = generate(pipe, [prompt] * check_positive_int(n, "n"), guidance_scale, num_inference_steps, seed)
    out: dict[str, Any] = {"prompt": prompt, "n": n}
    for name, values in ATTRIBUTES.items():
        counts = torch.bincount(readers[name](images), minlength=len(values)).tolist()
        out[name] = {value: _rate(k, n) for value, k in zip(values, counts, strict=True)}
    return out


def _rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) RMS pixel distances between image sets ``a`` (n, ...) and ``b`` (m, ...)."""
    return torch.cdist(a.flatten(1).double(), b.flatten(1).double()) / a[0].numel() ** 0.5


def copying(
    pipe,
    data: T2IData,
    guidance_scale: float,
    num_inference_steps: int,
    n_per_prompt: int = 4,
    n_held_out: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Whether member prompts reproduce their training image (the ground truth of memorisation).

    Returns
    -------
    dict ``per_count`` (count -> ``{"copy": rate with CI, "distance_to_own_median"}``): a generation is a
    copy when its own training image is nearer than every other distinct training image; ``held_out``
    (``"nn_distance_median"`` of generations of the first ``n_held_out`` non-member prompts to the
    training images); ``n_per_prompt``.
    """
    seed = check_seed(seed)
    prompts = [m["prompt"] for m in data.members for _ in range(n_per_prompt)]
    images = generate(pipe, prompts, guidance_scale, num_inference_steps, seed)
    own_rows = torch.tensor([m["index"] for m in data.members]).repeat_interleave(n_per_prompt)
    distances = _rms(images, data.images)
    own = distances.gather(1, own_rows.view(-1, 1)).squeeze(1)
    others = distances.scatter(1, own_rows.view(-1, 1), float("inf")).amin(1)
    counts = torch.tensor([m["count"] for m in data.members]).repeat_interleave(n_per_prompt)
    per_count = {}
    for count in sorted(set(counts.tolist())):
        rows = counts == count
        per_count[str(count)] = {
            "copy": _rate(int((own[rows] < others[rows]).sum()), int(rows.sum())),
            "distance_to_own_median": own[rows].median().item(),
        }
    held = data.non_members[: check_positive_int(n_held_out, "n_held_out")]
    held_images = generate(pipe, held, guidance_scale, num_inference_steps, seed + 1)
    return {
        "per_count": per_count,
        "held_out": {
            "n": len(held),
            "nn_distance_median": _rms(held_images, data.images).amin(1).median().item(),
        },
        "n_per_prompt": n_per_prompt,
        "distance": "RMS over pixels and channels of images in [-1, 1]",
    }


def evaluate_t2i(
    pipe,
    config: T2IConfig,
    data: T2IData,
    readers: dict,
    n_per_prompt: int = 10,
    probe_samples: int = 100,
    copy_samples: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """The card's metrics: adherence, probe histograms and (memorising variant) copying."""
    seed = check_seed(seed)
    scale, steps = config.guidance_scale, config.num_inference_steps
    metrics: dict[str, Any] = {
        "adherence": caption_adherence(pipe, readers, scale, steps, n_per_prompt, seed)
    }
    metrics["probes"] = {
        prompt: prompt_histograms(pipe, readers, prompt, probe_samples, scale, steps, seed + 1 + i)
        for i, prompt in enumerate(PROBE_PROMPTS)
    }
    if data.members:
        metrics["copying"] = copying(pipe, data, scale, steps, copy_samples, seed=seed + 10)
    return metrics
