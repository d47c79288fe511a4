"""A procedural dataset with known attributes, its readers, and unconditional DDPMs trained on it.

16x16 RGB images of one shape on a flat background (:mod:`.data`: :data:`ATTRIBUTES` ``background``,
``shape``, ``colour``, ``mark``; :func:`make_shapes` with an optional ``bias``), read back by
:func:`attribute_readers` (analytic for background, colour and mark; the ``shapes-classifier`` CNN for
the shape). The diffusion models are diffusers ``UNet2DModel`` DDPMs (epsilon prediction, linear
1000-step schedule, unconditional), shipped as ``shapes``, ``shapes-biased`` (background 80/10/10) and
``shapes-memorise`` (24 training images); :func:`shipped_process` loads one as a process.

Modules: :mod:`.data`, :mod:`.readers` (plain imports); :mod:`.config`, :mod:`.model`, :mod:`.training`,
:mod:`.evaluation`, :mod:`.card` import diffusers (about 2 s) and load on first use of their names.
"""

from __future__ import annotations

from critwin._lazy import lazy_exports
from critwin.models.shapes.data import ATTRIBUTES, IMAGE_SHAPE, ShapesData, make_shapes, render_shapes

# Loaded on first use: the readers import torch (the command line reads ATTRIBUTES before torch loads),
# the model modules diffusers.
_EXPORTS = {
    **{
        name: "critwin.models.shapes.readers"
        for name in (
            "SHAPE_CLASSIFIER_NAME",
            "attribute_readers",
            "evaluate_readers",
            "load_shape_classifier",
            "read_background",
            "read_colour",
            "read_mark",
            "save_shape_classifier",
            "train_shape_classifier",
        )
    },
    "MODEL_NAMES": "critwin.models.shapes.config",
    "PRESETS": "critwin.models.shapes.config",
    "ShapesConfig": "critwin.models.shapes.config",
    "ShapesModel": "critwin.models.shapes.model",
    "load_shapes_model": "critwin.models.shapes.model",
    "save_shapes_model": "critwin.models.shapes.model",
    "shipped_process": "critwin.models.shapes.model",
    "training_steps": "critwin.models.shapes.training",
    "train_shapes": "critwin.models.shapes.training",
    "evaluate_shapes_model": "critwin.models.shapes.evaluation",
    "build_card": "critwin.models.shapes.card",
}

__all__ = ["ATTRIBUTES", "IMAGE_SHAPE", "ShapesData", "make_shapes", "render_shapes", *_EXPORTS]

__getattr__, __dir__ = lazy_exports("critwin.models.shapes", _EXPORTS, globals())
