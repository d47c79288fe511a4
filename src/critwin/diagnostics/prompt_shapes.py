"""The prompt-level audits on the shapes text-to-image models (``shapes-t2i``, ``-biased``, ``-memorise``):
who selects and who grades, the caption grammar's augmentation, the reference images, the card's prompts.

- Readers (:mod:`critwin.models.judges`): the ``shapes-selector`` CNN selects and measures the
  window; the analytic readers (background, colour, mark) and the ``shapes-classifier`` CNN (shape) grade.
- Augmentation (Fair Diffusion-style): the prompt's caption with the attribute's value named
  (``"a circle"`` -> ``"a circle on a grey background"``), through the grammar of
  :mod:`critwin.models.shapes_t2i.captions`.
- Quality: the KID in the shapes classifier's feature space to clean renderings of what the prompt names
  with every other attribute uniform (the distribution a fair model would draw), and caption adherence.
- Memorisation: the member prompts (with their duplication counts), non-member and calibration prompts the
  model card records; the members' training images, images of the held-out captions (rendered from the
  attributes they name, seeded), and the training set for the copying ground truth.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from critwin._io import read_json
from critwin.diagnostics.prompt_privacy import PromptSets
from critwin.diagnostics.prompt_quality import classifier_embedding
from critwin.diagnostics.prompt_sampling import PromptModel
from critwin.models._store import PIPELINE_MODELS, SHIPPED_WEIGHTS_DIR
from critwin.models.judges import selector_readers
from critwin.models.shapes import (
    ATTRIBUTES,
    IMAGE_SHAPE,
    attribute_readers,
    load_shape_classifier,
    make_shapes,
)

__all__ = [
    "CARD_FILE",
    "HELD_OUT_IMAGE_SEED",
    "shipped_prompt_models",
    "prompt_model_directory",
    "load_prompt_model",
    "shapes_readers",
    "specified_attributes",
    "augmenter",
    "reference_features",
    "card_prompt_sets",
]

CARD_FILE = "critwin_card.json"
HELD_OUT_IMAGE_SEED = 31_000
"""Seed of the images rendered for held-out captions (the loss score's non-member images)."""


def shipped_prompt_models() -> tuple[str, ...]:
    """Names of the shipped text-to-image pipelines (``weights/<name>/``)."""
    return tuple(PIPELINE_MODELS)


def prompt_model_directory(model: str | os.PathLike, option: str = "--model") -> Path:
    """The pipeline directory of a shipped name or a path; a ValueError naming ``option`` otherwise."""
    if isinstance(model, str) and model in shipped_prompt_models():
        directory = SHIPPED_WEIGHTS_DIR / model
        if not (directory / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{option} {model}: the shipped pipeline {directory} is missing; recreate it with "
                f"`critwin train {model} --threads 1 --out {SHIPPED_WEIGHTS_DIR}`"
            )
        return directory
    path = Path(model)
    if not (path / "model_index.json").is_file():
        names = ", ".join(shipped_prompt_models()) or "none shipped yet"
        raise ValueError(
            f"{option} must be a shipped text-to-image model ({names}) or a StableDiffusionPipeline "
            f"directory (with model_index.json), got {str(model)!r}"
        )
    return path


def model_card(directory: Path) -> dict[str, Any]:
    """The critwin model card beside the pipeline (``{}`` for a pipeline critwin did not train)."""
    card_file = Path(directory) / CARD_FILE
    return read_json(card_file, "model card") if card_file.is_file() else {}


def load_prompt_model(model, num_inference_steps=None, guidance_scale=None, option: str = "--model"):
    """A :class:`~critwin.diagnostics.prompt_sampling.PromptModel` of a shipped name or a directory, loaded
    from local files only (its card, if any, as ``pipe.critwin_card``)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from critwin.adapters.diffusers import load_local

    directory = prompt_model_directory(model, option)
    # Loading bars of diffusers and transformers are noise here: the audit shows its own progress.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    pipe = load_local(directory, text_encoder=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.critwin_card = model_card(directory)
    size = pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    if (pipe.vae.config.out_channels, size, size) != IMAGE_SHAPE:
        raise ValueError(
            f"{option} {model}: the shapes readers read {IMAGE_SHAPE} images; this pipeline makes "
            f"({pipe.vae.config.out_channels}, {size}, {size})"
        )
    name = pipe.critwin_card.get("name") or str(model)
    return PromptModel(pipe, num_inference_steps, guidance_scale, name=name)


def shapes_readers() -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(selectors, judges): attribute -> reader, the selector never one of the judges."""
    return selector_readers(), attribute_readers()


def specified_attributes(prompt: str) -> dict[str, int]:
    """Attribute -> label the caption names (the grammar of :mod:`critwin.models.shapes_t2i.captions`)."""
    from critwin.models.shapes_t2i import parse_caption

    return {name: value for name, value in parse_caption(prompt).values.items() if value is not None}


def augmenter(attribute: str) -> Callable[[str, int], str]:
    """``augment(prompt, value)``: the prompt's caption with ``attribute`` named as ``value``."""
    from critwin.models.shapes_t2i import caption_text, parse_caption

    def augment(prompt: str, value: int) -> str:
        meaning = parse_caption(prompt)
        return caption_text({**meaning.values, attribute: int(value)}, True, meaning.item)

    return augment


def reference_features(specified: dict[str, int], n: int = 1000, seed: int = 12_345, embed=None):
    """Features of ``n`` clean renderings of what the prompt names, every other attribute uniform, and the
    embedding that made them (default: the shapes classifier's penultimate layer)."""
    embed = classifier_embedding(load_shape_classifier()) if embed is None else embed
    bias = {
        name: tuple(float(k == value) for k in range(len(ATTRIBUTES[name])))
        for name, value in specified.items()
    }
    return embed(make_shapes(n, seed=seed, bias=bias).images).numpy(), embed


def _render_captions(prompts: list[str], seed: int) -> torch.Tensor:
    """One image of each fully specified caption, its geometry drawn from ``seed``."""
    from critwin.models.shapes.data import render_shapes

    labels = {name: [] for name in ATTRIBUTES}
    for prompt in prompts:
        values = specified_attributes(prompt)
        for name in ATTRIBUTES:
            if name not in values:
                raise ValueError(f"held-out prompt {prompt!r} leaves {name} open: no image to render")
            labels[name].append(values[name])
    tensors = {name: torch.tensor(v, dtype=torch.long) for name, v in labels.items()}
    return render_shapes(tensors, torch.Generator().manual_seed(seed))


def card_prompt_sets(model, with_images: bool = True) -> PromptSets:
    """The memorisation prompts a shipped (or critwin-trained) model's card records, as :class:`PromptSets`.

    With ``with_images``: each member's training image, a seeded rendering of each held-out caption
    (:data:`HELD_OUT_IMAGE_SEED`), and the training set (the copying ground truth), regenerated from the
    card's data configuration.
    """
    directory = prompt_model_directory(model)
    card = model_card(directory)
    memorisation = card.get("memorisation")
    if not memorisation:
        raise ValueError(
            f"--model {model}: its card records no member prompts; pass --members and --non-members files"
        )
    members = [m["prompt"] for m in memorisation["members"]]
    counts = [int(m["count"]) for m in memorisation["members"]]
    non_members, calibration = list(memorisation["non_members"]), list(memorisation["calibration"])
    if not with_images:
        return PromptSets(members, counts, non_members, calibration)
    from critwin.models.shapes_t2i import config_of

    data = config_of(card).load_data()
    rows = {caption: i for i, caption in enumerate(data.captions)}
    member_images = data.images[[rows[p] for p in members]]
    held_out = _render_captions(non_members + calibration, HELD_OUT_IMAGE_SEED)
    images = torch.cat([member_images, held_out])
    return PromptSets(members, counts, non_members, calibration, images=images, training_images=data.images)


def prompt_sets_from_files(members, non_members, calibration=None, counts=None, seed: int = 0) -> PromptSets:
    """Prompt sets from lists (a user's files): without ``calibration``, half of the non-members (a seeded
    split) calibrate the threshold; without ``counts``, every member's count is unknown (0)."""
    members, non_members = list(members), list(non_members)
    if calibration is None:
        if len(non_members) < 4:  # half of them calibrate, and a threshold needs 2 calibration scores
            raise ValueError("--non-members needs at least 4 prompts when no --calibration file is given")
        order = np.random.default_rng(seed).permutation(len(non_members))
        half = len(non_members) // 2
        calibration = [non_members[i] for i in order[:half]]
        non_members = [non_members[i] for i in sorted(order[half:])]
    if len(calibration) < 2:
        raise ValueError(f"--calibration needs at least 2 prompts, got {len(calibration)}")
    counts = [0] * len(members) if counts is None else list(counts)
    return PromptSets(members, counts, non_members, list(calibration))
