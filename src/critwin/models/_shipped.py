"""``shipped_process(name)``: any shipped diffusion model of :data:`SHIPPED_MODELS` as a process."""

from __future__ import annotations

from critwin._validation import check_device, check_float_dtype, check_positive_int
from critwin.adapters.diffusers.schedule import resolve_scheduler_class
from critwin.models import digits, shapes, text
from critwin.models._store import PIPELINE_MODELS, SHIPPED_MODELS

__all__ = ["shipped_process"]


def shipped_process(
    name: str,
    num_inference_steps: int = 100,
    guidance_scale: float | None = None,
    class_label: int | None = None,
    scheduler=None,
    device=None,
    dtype=None,
):
    """A shipped model as a :class:`~critwin.ReverseProcess` through the diffusers adapter.

    Parameters
    ----------
    name : a key of :data:`SHIPPED_MODELS` (``"digits"``, ``"shapes"``, ...).
    num_inference_steps : sampler steps.
    guidance_scale, class_label : digits models only (default 1 and the null label: unconditional);
        the shapes models are unconditional and refuse them.
    scheduler : ``None`` (the training ``DDPMScheduler``), a supported diffusers scheduler class or its
        name or alias (``"DDIMScheduler"``, ``"ddim"``).
    device, dtype : where and in which precision the U-Net runs (default: CPU, float32).

    Returns
    -------
    DiffusersProcess (``sample_shape`` (1, 8, 8) for digits, (3, 16, 16) for shapes); for the text
    models (``rhm-mdm``, ``rhm-ar``) their token process (``num_inference_steps``: the kappa grid's
    steps of the masked-diffusion model; ``dtype`` ignored).
    """
    if not isinstance(name, str) or name not in SHIPPED_MODELS:
        raise ValueError(f"name must be one of the shipped models {list(SHIPPED_MODELS)}, got {name!r}")
    if name in PIPELINE_MODELS:
        raise ValueError(
            f"name {name!r} is a text-to-image pipeline: load it with "
            f"critwin.models.shapes_t2i.load_t2i_pipeline({name!r}) and pass it to "
            "critwin.adapters.diffusers.from_pipeline(pipe, prompt=...)"
        )
    num_inference_steps = check_positive_int(num_inference_steps, "num_inference_steps")
    device = None if device is None else check_device(device)
    if name in text.MODEL_NAMES:
        for option, value in (
            ("guidance_scale", guidance_scale),
            ("class_label", class_label),
            ("scheduler", scheduler),
        ):
            if value is not None:
                raise ValueError(f"{option} does not apply to the text model {name!r}")
        model = text.load_text_model(name)
        steps = num_inference_steps if model.kind == "masked" else None
        return model.process(steps, device=device)
    scheduler = resolve_scheduler_class(scheduler)
    dtype = None if dtype is None else check_float_dtype(dtype)
    if name in shapes.MODEL_NAMES:
        for option, value in (("guidance_scale", guidance_scale), ("class_label", class_label)):
            if value is not None:
                raise ValueError(f"{option} does not apply to {name!r}: the shapes models are unconditional")
        return shapes.shipped_process(
            name, num_inference_steps, scheduler=scheduler, device=device, dtype=dtype
        )
    if name in digits.MODEL_NAMES:
        return digits.shipped_process(
            name,
            num_inference_steps,
            1.0 if guidance_scale is None else guidance_scale,
            digits.NULL_LABEL if class_label is None else class_label,
            scheduler=scheduler,
            device=device,
            dtype=dtype,
        )
    raise ValueError(f"name must be one of the shipped models {list(SHIPPED_MODELS)}, got {name!r}")
