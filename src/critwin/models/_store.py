"""Weight files of the shipped models: ``<name>.safetensors`` beside a JSON model card ``<name>.json``.

The card records the configuration needed to rebuild the network, the data split, the training
run and the quality metrics, plus the SHA-256 of the weight file so that a truncated or corrupted
file is reported as such (with the command that retrains it) instead of failing deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from critwin._files import check_weights
from critwin._io import atomic_paths, json_text, save_safetensors

if TYPE_CHECKING:  # annotations only: the command line reads the registry below before torch loads
    import torch

SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# The shipped diffusion models (the one registry of their names: CLI choices, loaders, checks), with a
# one-line description for ``--help``.
SHIPPED_MODELS = {
    "digits": "class-conditional DDPM on the 8x8 digits (labels 0-9; 10 = null label, unconditional)",
    "digits-memorise": "the same network trained on 20 digits until it copies them (memorisation demo)",
    "digits-flow": "the digits model trained as rectified flow (velocity; FlowMatchEulerDiscreteScheduler)",
    "digits-v": "the digits model trained with v-prediction (same DDPM schedule)",
    "shapes": "unconditional DDPM on 16x16 procedural shapes (attributes background, shape, colour, mark)",
    "shapes-biased": "the same on shapes whose background is imbalanced 80/10/10 (fairness experiments)",
    "shapes-memorise": "the same network trained on 24 shapes images until it copies them (memorisation)",
    "shapes-t2i": "Stable Diffusion pipeline trained on captioned shapes (CLIP text encoder, VAE, U-Net)",
    "shapes-t2i-biased": "the same where 'a circle' (no background named) is on blue 80% of the time",
    "shapes-t2i-memorise": "the same with member captions duplicated 1, 4, 16, 64 times (memorisation)",
    "rhm-mdm": "masked-diffusion transformer on a Random Hierarchy Model language (8 tokens, 4 levels)",
    "rhm-ar": "autoregressive transformer on the same Random Hierarchy Model language",
}

# Shipped as diffusers pipeline directories ``weights/<name>/`` (StableDiffusionPipeline.from_pretrained),
# not as one ``<name>.safetensors`` file.
PIPELINE_MODELS = ("shapes-t2i", "shapes-t2i-biased", "shapes-t2i-memorise")
TEXT_MODELS = ("rhm-mdm", "rhm-ar")
"""The shipped text models (:data:`critwin.models.text.MODEL_NAMES`)."""

# How to recreate each shipped file; quoted in every "missing or corrupted" error.
RETRAIN_COMMANDS = {
    "digits": "critwin train digits --out {dir}",
    "digits-memorise": "critwin train digits-memorise --out {dir}",
    "digits-flow": "critwin train digits-flow --out {dir}",
    "digits-v": "critwin train digits-v --out {dir}",
    "digit-classifier": "critwin train classifier --out {dir}",
    "shapes": "critwin train shapes --threads 1 --out {dir}",
    "shapes-biased": "critwin train shapes-biased --threads 1 --out {dir}",
    "shapes-memorise": "critwin train shapes-memorise --threads 1 --out {dir}",
    "shapes-classifier": "critwin train shapes-classifier --threads 1 --out {dir}",
    "digit-judge": "critwin train digit-judge --threads 1 --out {dir}",
    "shapes-selector": "critwin train shapes-selector --threads 1 --out {dir}",
    "shapes-t2i": "critwin train shapes-t2i --threads 1 --out {dir}",
    "shapes-t2i-biased": "critwin train shapes-t2i-biased --threads 1 --out {dir}",
    "shapes-t2i-memorise": "critwin train shapes-t2i-memorise --threads 1 --out {dir}",
    "rhm-mdm": "critwin train rhm-mdm --threads 1 --out {dir}",
    "rhm-ar": "critwin train rhm-ar --threads 1 --out {dir}",
}


class WeightsPaths(NamedTuple):
    """The two files of a stored model: its weights (safetensors) and its card (JSON)."""

    weights: Path
    card: Path


def weights_paths(name: str, directory: str | os.PathLike | None = None) -> WeightsPaths:
    """The weights and card files of model ``name`` in ``directory`` (default: the shipped weights)."""
    directory = SHIPPED_WEIGHTS_DIR if directory is None else Path(directory)
    return WeightsPaths(directory / f"{name}.safetensors", directory / f"{name}.json")


def _retrain_hint(name: str, directory: Path) -> str:
    template = RETRAIN_COMMANDS.get(name)
    if template is None:
        return ""
    return f"; recreate it with `{template.format(dir=directory)}`"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(name: str, state_dict: dict[str, torch.Tensor], card: dict, directory) -> WeightsPaths:
    """Write ``state_dict`` (safetensors) and ``card`` (JSON) atomically; returns both paths.

    Both are written to temporary files and renamed only once both are complete (weights first), so
    a card on disk always describes a complete weight file; the card gains ``weights_file`` and
    ``weights_sha256``.
    """
    weights_file, card_file = weights_paths(name, directory)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items()}
    # Both files are complete before either replaces the old pair: a kill or a full disk while
    # writing leaves the previous weights and card, which agree with each other.
    with atomic_paths(weights_file, card_file) as (tmp_weights, tmp_card):
        save_safetensors(tensors, tmp_weights)
        card = dict(card)
        card["weights_file"] = weights_file.name
        card["weights_sha256"] = file_sha256(tmp_weights)
        tmp_card.write_text(json_text(card) + "\n")
    return WeightsPaths(weights_file, card_file)


def load_card(name: str, directory=None) -> dict:
    """Read the JSON model card of ``name``; clear errors for a missing or unreadable card."""
    weights_file, card_file = weights_paths(name, directory)
    hint = _retrain_hint(name, card_file.parent)
    if not card_file.is_file():
        raise FileNotFoundError(f"model card {card_file} of model {name!r} not found{hint}")
    try:
        card = json.loads(card_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model card {card_file} is corrupted ({exc}){hint}") from None
    if not isinstance(card, dict) or "config" not in card:
        raise ValueError(f"model card {card_file} is corrupted (no 'config' entry){hint}")
    return card


def load_weights(name: str, directory=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(state_dict, card)`` of ``name``, checking the file against the card's SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_file, card_file = weights_paths(name, directory)
    hint = _retrain_hint(name, weights_file.parent)
    card = load_card(name, directory)
    if not weights_file.is_file():
        raise FileNotFoundError(f"weights file {weights_file} of model {name!r} not found{hint}")
    expected = card.get("weights_sha256")
    if expected is not None and file_sha256(weights_file) != expected:
        raise ValueError(
            f"weights file {weights_file} is corrupted (its SHA-256 does not match the model card "
            f"{card_file}){hint}"
        )
    try:
        state_dict = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"weights file {weights_file} is corrupted ({exc}){hint}") from None
    return state_dict, card


def load_state_into(module: torch.nn.Module, state_dict: dict, name: str, weights_file: Path) -> None:
    """``module.load_state_dict(strict=True)`` with a readable error when the file does not fit, after
    :func:`critwin._files.check_weights` (the network's own dtypes, finite and plausible values)."""
    own = {key: value.dtype for key, value in module.state_dict().items()}
    check_weights({key: value for key, value in state_dict.items() if key in own}, weights_file, own)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "shape mismatch"
        raise ValueError(
            f"weights file {weights_file} does not fit the network its card describes ({first_line})"
            f"{_retrain_hint(name, weights_file.parent)}"
        ) from None


def move_network(network, device=None, dtype=None):
    """``network.to(...)`` with only what was asked (``device`` and ``dtype`` already checked): diffusers
    warns about float32 modules on any dtype argument to ``.to()``, None included."""
    placement = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    return network.to(**placement) if placement else network
