"""The networks of a shapes text-to-image model, its ``StableDiffusionPipeline`` directory, and loading.

A saved model is a plain diffusers pipeline directory (``save_pretrained`` layout: ``model_index.json``,
``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``; no safety checker or feature
extractor), so ``diffusers.StableDiffusionPipeline.from_pretrained(DIR)`` loads and samples it without
critwin. critwin's model card sits beside the components as ``critwin_card.json`` (diffusers ignores it)
with the SHA-256 of every weight file. The shipped models are such directories under
``critwin/models/weights/<name>/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from critwin._io import (
    atomic_write_json,
    read_json,
    remove_stale_work_directories,
    replace_directory,
    safetensors_os_errors,
    work_directory,
)
from critwin.models._store import RETRAIN_COMMANDS, SHIPPED_WEIGHTS_DIR, file_sha256
from critwin.models.shapes_t2i.captions import check_prompt
from critwin.models.shapes_t2i.config import MODEL_NAMES, T2IConfig
from critwin.models.shapes_t2i.tokenizer import write_tokenizer_files

__all__ = [
    "CARD_FILE",
    "build_unet",
    "build_vae",
    "build_text_encoder",
    "make_scheduler",
    "assemble_pipeline",
    "save_pipeline",
    "model_directory",
    "is_t2i_directory",
    "load_t2i_card",
    "load_t2i_pipeline",
    "check_model_prompt",
    "config_of",
]

CARD_FILE = "critwin_card.json"
_WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
)


def build_unet(config: T2IConfig):
    """A freshly initialised ``UNet2DConditionModel`` (from the global RNG)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config.unet_kwargs())


def build_vae(config: T2IConfig):
    """A freshly initialised ``AutoencoderKL`` (from the global RNG)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config.vae_kwargs())


def build_text_encoder(config: T2IConfig, tokenizer):
    """A freshly initialised ``transformers.CLIPTextModel`` for ``tokenizer`` (from the global RNG)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(text_config)


def make_scheduler(config: T2IConfig, training: bool = False):
    """The saved sampler, a ``DDIMScheduler`` with Stable Diffusion's settings (``training``: the
    ``DDPMScheduler`` whose ``add_noise`` noises training latents; same schedule)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if training:
        return DDPMScheduler(**config.scheduler_kwargs())
    return DDIMScheduler(
        **config.scheduler_kwargs(), clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )


def assemble_pipeline(vae, text_encoder, tokenizer, unet, config: T2IConfig):
    """A ``StableDiffusionPipeline`` of the parts (eval mode, no safety checker)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=make_scheduler(config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def _no_library_progress_bars():
    """transformers' ``save_pretrained`` draws a "Writing model shards" bar: keep it off the terminal."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def save_pipeline(pipe, card: dict[str, Any], directory) -> Path:
    """Write the pipeline (``save_pretrained``, safetensors) and ``critwin_card.json`` into ``directory``.

    Written into a work directory beside it (``critwin._io.work_directory``) that then takes its place
    (``replace_directory``: at every moment ``directory`` is the old model or the new one), so an
    interrupted save or a full disk leaves no partial model and the previous one as it was; an OS error
    names ``directory``. The card gains ``weights_sha256`` and ``weights_bytes`` (file -> SHA-256 and
    size of each component's weights).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_directories(directory)
    work = work_directory(directory)
    try:
        with _no_library_progress_bars(), safetensors_os_errors():
            pipe.save_pretrained(work, safe_serialization=True)
        # Older transformers read a CLIPTokenizer from vocab.json + merges.txt: write them too.
        write_tokenizer_files(work / "tokenizer", card["vocabulary"])
        card = dict(card)
        card["weights_sha256"] = {name: file_sha256(work / name) for name in _WEIGHT_FILES}
        card["weights_bytes"] = {name: (work / name).stat().st_size for name in _WEIGHT_FILES}
        atomic_write_json(work / CARD_FILE, card)
        replace_directory(work, directory)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(directory)) from exc
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return directory


def model_directory(model) -> Path:
    """The pipeline directory of ``model``: a shipped name (:data:`MODEL_NAMES`) or a directory path.

    Raises ValueError naming ``model`` for anything else (a directory must hold ``critwin_card.json``).
    """
    if isinstance(model, str) and model in MODEL_NAMES:
        return SHIPPED_WEIGHTS_DIR / model
    if isinstance(model, (str, os.PathLike)) and is_t2i_directory(model):
        return Path(model)
    raise ValueError(
        f"model must be a shipped text-to-image model ({', '.join(MODEL_NAMES)}) or a directory written by "
        f"critwin train shapes-t2i (with {CARD_FILE}), got {model!r}"
    )


def is_t2i_directory(path) -> bool:
    """Whether ``path`` is a shapes text-to-image pipeline directory (holds ``critwin_card.json``)."""
    try:
        return (Path(path) / CARD_FILE).is_file() and (Path(path) / "model_index.json").is_file()
    except (TypeError, OSError):
        return False


def _retrain_hint(directory: Path) -> str:
    """How to recreate a model directory named like a shipped model (``critwin train NAME --out PARENT``)."""
    template = RETRAIN_COMMANDS.get(directory.name)
    return "" if template is None else f"; recreate it with `{template.format(dir=directory.parent)}`"


def load_t2i_card(model) -> dict[str, Any]:
    """The model card of a shipped name or a pipeline directory (config, adherence, prompt sets)."""
    directory = model_directory(model)
    if not (directory / CARD_FILE).is_file():
        raise FileNotFoundError(f"model card {directory / CARD_FILE} not found{_retrain_hint(directory)}")
    card = read_json(directory / CARD_FILE, "model card")
    if "config" not in card:
        raise ValueError(
            f"model card {directory / CARD_FILE} is corrupted (no 'config' entry){_retrain_hint(directory)}"
        )
    return card


def _check_weights(directory: Path, card: dict) -> None:
    for name, expected in card.get("weights_sha256", {}).items():
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found{_retrain_hint(directory)}")
        if file_sha256(path) != expected:
            raise ValueError(
                f"weights file {path} is corrupted (its SHA-256 does not match {directory / CARD_FILE})"
                f"{_retrain_hint(directory)}"
            )


def load_t2i_pipeline(model, device=None, dtype=None):
    """Load a shapes text-to-image model as a ``StableDiffusionPipeline`` (checking its weight files).

    Parameters
    ----------
    model : a shipped name (``"shapes-t2i-biased"``, ``"shapes-t2i-memorise"``) or a directory written
        by ``critwin train`` (``critwin train shapes-t2i`` writes the balanced one, which is not shipped).
    device, dtype : where and in which precision it runs (default: CPU, float32).

    Returns
    -------
    StableDiffusionPipeline with ``.critwin_card`` (the model card) set. The same directory loads without
    critwin: ``StableDiffusionPipeline.from_pretrained(DIR)``.

    Examples
    --------
    >>> pipe = load_t2i_pipeline("shapes-t2i-biased")
    >>> images = pipe("a red circle on a blue background with a mark", guidance_scale=3.0,
    ...               num_inference_steps=25, output_type="pt").images
    >>> tuple(images.shape), 0 <= float(images.min()) <= float(images.max()) <= 1
    ((1, 3, 16, 16), True)
    """
    from diffusers import StableDiffusionPipeline

    directory = model_directory(model)
    card = load_t2i_card(directory)
    _check_weights(directory, card)
    options = {} if dtype is None else {"torch_dtype": dtype}
    pipe = StableDiffusionPipeline.from_pretrained(
        directory, local_files_only=True, use_safetensors=True, **options
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device=device)
    pipe.critwin_card = card
    return pipe


def check_model_prompt(prompt, card: dict, name: str = "prompt") -> str:
    """``prompt`` if the model of ``card`` can read it (known words, within its tokenizer's limit)."""
    return check_prompt(prompt, card["config"]["max_tokens"], card.get("vocabulary"), name=name)


def config_of(card: dict) -> T2IConfig:
    """The :class:`T2IConfig` a card records."""
    try:
        return T2IConfig.from_dict(card["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"model card {card.get('name')!r} has an invalid config: {exc}") from None
