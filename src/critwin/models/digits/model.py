"""The digits DDPM network (a diffusers ``UNet2DModel``), :class:`DigitsModel`, saving and loading."""

from __future__ import annotations

import os
from pathlib import Path

import diffusers
import torch
from diffusers import UNet2DModel

from critwin._validation import check_device, check_float_dtype, check_positive_int
from critwin.adapters.diffusers import SUPPORTED_SCHEDULERS, DiffusersProcess
from critwin.adapters.diffusers.schedule import resolve_scheduler_class
from critwin.models._store import move_network
from critwin.models._training import TrainedModel, load_unet, save_model
from critwin.models.data import IMAGE_SHAPE
from critwin.models.digits.config import MODEL_NAMES, NULL_LABEL, DigitsConfig

__all__ = [
    "DigitsModel",
    "build_unet",
    "make_scheduler",
    "load_digits_model",
    "save_digits_model",
    "shipped_process",
]


def build_unet(config: DigitsConfig):
    """A freshly initialised ``UNet2DModel`` for ``config`` (initialised from the global RNG)."""
    return UNet2DModel(**config.unet_kwargs())


def make_scheduler(config: DigitsConfig):
    """A new scheduler of the model's parameterisation with its training schedule.

    ``DDPMScheduler`` (epsilon or v-prediction) or ``FlowMatchEulerDiscreteScheduler`` (flow).
    """
    return getattr(diffusers, config.scheduler_class_name)(**config.scheduler_kwargs())


def _labels_for(labels, n: int, device, name: str = "class_labels") -> torch.Tensor:
    """``labels`` as an (n,) int64 tensor on ``device`` (None -> all null; a scalar is broadcast)."""
    if labels is None:
        return torch.full((n,), NULL_LABEL, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels, device=device)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integers 0..{NULL_LABEL}, got dtype {labels.dtype}")
    labels = labels.long()
    if labels.ndim == 0:
        labels = labels.expand(n)
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the batch, got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() > NULL_LABEL):
        raise ValueError(
            f"{name} must be digits 0..9 or the null label {NULL_LABEL}, got values in "
            f"[{labels.min().item()}, {labels.max().item()}]"
        )
    return labels


class DigitsModel(TrainedModel):
    """A trained digits DDPM: the U-Net, its configuration and its model card.

    Parameters
    ----------
    unet : ``UNet2DModel`` built from ``config``.
    config : the :class:`DigitsConfig` it was trained with.
    card : the model card (metrics, data split), if loaded from disk.
    name : model name (``"digits"``, ``"digits-memorise"``, ...).

    Examples
    --------
    The shipped model (what :func:`critwin.load_digits_model` returns), asked for four digits; the
    shipped classifier reads them back (the card's conditional accuracy is 0.98 at 100 steps):

    >>> import torch, critwin
    >>> model = critwin.load_digits_model()
    >>> model, model.config.block_out_channels, model.card["metrics"]["conditional_accuracy"]
    (DigitsModel(name='digits', parameters=898881), (32, 48, 64), 0.98)
    >>> g = torch.Generator().manual_seed(0)
    >>> images = model.sample([1, 4, 7, 9], num_inference_steps=25, generator=g)
    >>> tuple(images.shape), critwin.classifier_feature()(images).tolist()
    ((4, 1, 8, 8), [1, 4, 7, 9])
    """

    sample_shape = IMAGE_SHAPE

    def __init__(self, unet, config, card: dict | None = None, name: str = "digits"):
        super().__init__(unet, config, card, name)

    def make_scheduler(self):
        """A new scheduler with the training schedule (:func:`make_scheduler`)."""
        return make_scheduler(self.config)

    def scheduler_as(self, scheduler_cls):
        """A ``scheduler_cls`` built from the training scheduler's config (same schedule, other sampler).

        Flow-matching and DDPM schedules do not convert into each other: a flow model takes only flow
        schedulers, the DDPM models only the others (ValueError naming the scheduler).
        """
        trained = self.make_scheduler()
        kinds = {SUPPORTED_SCHEDULERS.get(name) for name in (type(trained).__name__, scheduler_cls.__name__)}
        if "flow" in kinds and len(kinds) > 1:
            raise ValueError(
                f"scheduler {scheduler_cls.__name__} cannot sample {self.name!r}, which was trained with "
                f"{type(trained).__name__} (flow matching and DDPM schedules do not convert)"
            )
        return scheduler_cls.from_config(trained.config)

    def process(
        self,
        num_inference_steps: int = 100,
        guidance_scale: float = 1.0,
        scheduler=None,
        class_label: int = NULL_LABEL,
    ):
        """This model as a :class:`critwin.ReverseProcess`, through the diffusers adapter.

        The U-Net goes through :class:`critwin.adapters.diffusers.DiffusersProcess` exactly as a
        user's model would. The default conditioning is ``class_label`` (default the null label:
        unconditional sampling); request digits per run with ``cond={"class_labels": labels}``.
        Classifier-free guidance uses the null label as the unconditional branch.

        Parameters
        ----------
        num_inference_steps : sampler steps (diffusers ``set_timesteps``).
        guidance_scale : classifier-free guidance weight ``w >= 0``; 1 is the plain conditional model.
        scheduler : a diffusers scheduler to sample with (default: the training scheduler).
        class_label : default digit 0..9, or :data:`NULL_LABEL` (10) for unconditional sampling.

        Returns
        -------
        DiffusersProcess with ``sample_shape == (1, 8, 8)``.
        """
        return DiffusersProcess(
            self.unet,
            self.make_scheduler() if scheduler is None else scheduler,
            num_inference_steps=check_positive_int(num_inference_steps, "num_inference_steps"),
            cond={"class_labels": int(_labels_for(class_label, 1, "cpu", "class_label")[0])},
            uncond={"class_labels": NULL_LABEL},
            guidance_scale=guidance_scale,
            model_id=f"critwin/{self.name}",
        )

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor | list[int] | None = None,
        n: int | None = None,
        num_inference_steps: int = 100,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        batch_size: int = 1024,
    ) -> torch.Tensor:
        """Generate digits: the training scheduler's own sampler driven through :meth:`process`.

        Parameters
        ----------
        labels : (n,) requested digits 0..9 (10 = unconditional); None for ``n`` unconditional samples.
        n : number of samples when ``labels`` is None.
        num_inference_steps : sampler steps (DDPM, or flow Euler, over the training range).
        guidance_scale : classifier-free guidance ``w >= 0``; 1 is plain conditional sampling.
        generator : seeds the initial noise and every step's noise.
        batch_size : samples per network call.

        Returns
        -------
        (n, 1, 8, 8) float32 images (the DDPM scheduler clips its clean-image estimate to [-1, 1]).
        """
        if labels is None:
            if n is None:
                raise ValueError(
                    "give either labels (requested digits) or n (number of unconditional samples)"
                )
            labels = torch.full((check_positive_int(n, "n"),), NULL_LABEL, dtype=torch.long)
        else:
            labels = torch.as_tensor(labels)
            if labels.ndim != 1 or labels.numel() == 0:
                raise ValueError(
                    f"labels must be a non-empty 1-D sequence of digits, got shape {tuple(labels.shape)}"
                )
            labels = _labels_for(labels, labels.numel(), "cpu")
        batch_size = check_positive_int(batch_size, "batch_size")
        process = self.process(num_inference_steps, guidance_scale)
        chunks = []
        for batch in labels.split(batch_size):
            x = process.prior(batch.numel(), generator=generator)
            chunks.append(process.run(x, generator=generator, cond={"class_labels": batch}))
        return torch.cat(chunks)


def save_digits_model(model: DigitsModel, directory) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (EMA U-Net state dict) and ``<name>.json`` (card) atomically."""
    return save_model(model, directory)


def load_digits_model(name: str = "digits", directory: str | os.PathLike | None = None) -> DigitsModel:
    """Load a digits DDPM.

    Parameters
    ----------
    name : ``"digits"`` (the main model) or ``"digits-memorise"`` (the memorising variant), or the
        stem of your own files in ``directory``.
    directory : folder with ``<name>.safetensors`` and ``<name>.json`` (default: the shipped weights).

    Returns
    -------
    DigitsModel in eval mode, with ``.card`` set.

    Examples
    --------
    >>> import critwin
    >>> model = critwin.load_digits_model()
    >>> model
    DigitsModel(name='digits', parameters=898881)
    >>> model.process(50)  # the reverse process the experiments run
    DiffusersProcess(model=critwin/digits, scheduler=DDPMScheduler, clock=ou, steps=50, t_max=5.059, t_end=0)
    """
    unet, config, card = load_unet(name, directory, MODEL_NAMES, DigitsConfig, build_unet)
    return DigitsModel(unet, config, card=card, name=name)


def shipped_process(
    name: str,
    num_inference_steps: int = 100,
    guidance_scale: float = 1.0,
    class_label: int = NULL_LABEL,
    scheduler=None,
    device=None,
    dtype=None,
):
    """A shipped model of :data:`critwin.models.SHIPPED_MODELS` as a process (what ``critwin sweep
    --model digits`` runs): :func:`load_digits_model` then :meth:`DigitsModel.process`.

    Parameters
    ----------
    name : a key of ``SHIPPED_MODELS``.
    num_inference_steps, guidance_scale, class_label : as :meth:`DigitsModel.process` (the null label
        :data:`NULL_LABEL` = 10 is unconditional and the unconditional branch of guidance).
    scheduler : ``None`` (the training scheduler) or a diffusers scheduler class
        (:meth:`DigitsModel.scheduler_as`).
    device, dtype : where and in which precision the U-Net runs (default: CPU, float32).

    Returns
    -------
    DiffusersProcess with ``sample_shape == (1, 8, 8)``.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of the shipped models {list(MODEL_NAMES)}, got {name!r}")
    scheduler = resolve_scheduler_class(scheduler)
    device = None if device is None else check_device(device)
    dtype = None if dtype is None else check_float_dtype(dtype)
    model = load_digits_model(name)
    move_network(model.unet, device, dtype)
    if scheduler is not None:
        scheduler = model.scheduler_as(scheduler)
    return model.process(num_inference_steps, guidance_scale, scheduler=scheduler, class_label=class_label)
