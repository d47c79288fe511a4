"""Text-to-image models with the architecture of Stable Diffusion, trained by critwin on the shapes dataset.

A caption grammar (:mod:`.captions`: ``"a red circle on a blue background with a mark"``, ``"a circle"``,
``"a shape on grey"``) over the attributes of :mod:`critwin.models.shapes`; a word-level CLIP tokenizer
built offline (:mod:`.tokenizer`); caption–image pairs, optionally with a stereotype or with duplicated
member pairs (:mod:`.data`); a ``transformers.CLIPTextModel``, an ``AutoencoderKL`` (8x8x4 latents), a
``UNet2DConditionModel`` with cross-attention and classifier-free guidance by caption dropout, trained
by :func:`train_t2i` (:mod:`.training`) and saved as a plain ``StableDiffusionPipeline`` directory
(:mod:`.pipeline`). Shipped as ``shapes-t2i`` (balanced), ``shapes-t2i-biased`` ("a circle" is on blue
80% of the time) and ``shapes-t2i-memorise`` (members duplicated 1, 4, 16, 64 times); each card
(:func:`load_t2i_card`) records caption adherence, guidance scale, training time, seeds, the stereotype
and the member / non-member / calibration prompts.

The grammar, tokenizer and data modules are plain imports; the networks, training and evaluation import
diffusers and transformers and load on first use.
"""

from __future__ import annotations

from critwin._lazy import lazy_exports
from critwin.models.shapes_t2i.captions import (
    CaptionProbabilities,
    Meaning,
    caption_text,
    check_prompt,
    parse_caption,
    prompt_words,
    vocabulary,
)
from critwin.models.shapes_t2i.data import Memorisation, Stereotype, T2IData, make_pairs
from critwin.models.shapes_t2i.tokenizer import build_tokenizer, write_tokenizer_files

_EXPORTS = {
    "MODEL_NAMES": "critwin.models.shapes_t2i.config",
    "PRESETS": "critwin.models.shapes_t2i.config",
    "T2IConfig": "critwin.models.shapes_t2i.config",
    "CARD_FILE": "critwin.models.shapes_t2i.pipeline",
    "assemble_pipeline": "critwin.models.shapes_t2i.pipeline",
    "check_model_prompt": "critwin.models.shapes_t2i.pipeline",
    "config_of": "critwin.models.shapes_t2i.pipeline",
    "is_t2i_directory": "critwin.models.shapes_t2i.pipeline",
    "load_t2i_card": "critwin.models.shapes_t2i.pipeline",
    "load_t2i_pipeline": "critwin.models.shapes_t2i.pipeline",
    "model_directory": "critwin.models.shapes_t2i.pipeline",
    "train_t2i": "critwin.models.shapes_t2i.training",
    "caption_adherence": "critwin.models.shapes_t2i.evaluation",
    "fully_specified_prompts": "critwin.models.shapes_t2i.evaluation",
    "generate": "critwin.models.shapes_t2i.evaluation",
    "prompt_histograms": "critwin.models.shapes_t2i.evaluation",
}

__all__ = [
    "CaptionProbabilities",
    "Meaning",
    "Memorisation",
    "Stereotype",
    "T2IData",
    "build_tokenizer",
    "caption_text",
    "check_prompt",
    "make_pairs",
    "parse_caption",
    "prompt_words",
    "vocabulary",
    "write_tokenizer_files",
    *_EXPORTS,
]

__getattr__, __dir__ = lazy_exports("critwin.models.shapes_t2i", _EXPORTS, globals())
