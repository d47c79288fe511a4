"""The shapes DDPM network (an unconditional diffusers ``UNet2DModel``), :class:`ShapesModel`, loading."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from critwin._validation import check_device, check_float_dtype, check_positive_int
from critwin.adapters.diffusers import DiffusersProcess
from critwin.adapters.diffusers.schedule import resolve_scheduler_class
from critwin.models._store import move_network
from critwin.models._training import TrainedModel, load_unet, save_model
from critwin.models.shapes.config import MODEL_NAMES, ShapesConfig
from critwin.models.shapes.data import IMAGE_SHAPE

__all__ = ["ShapesModel", "build_unet", "load_shapes_model", "save_shapes_model", "shipped_process"]


def build_unet(config: ShapesConfig):
    """A freshly initialised ``UNet2DModel`` for ``config`` (initialised from the global RNG)."""
    return UNet2DModel(**config.unet_kwargs())


class ShapesModel(TrainedModel):
    """A trained shapes DDPM: the U-Net, its configuration and its model card.

    Parameters
    ----------
    unet : ``UNet2DModel`` built from ``config``.
    config : the :class:`ShapesConfig` it was trained with.
    card : the model card (metrics, data), if loaded from disk.
    name : model name (``"shapes"``, ``"shapes-biased"``, ``"shapes-memorise"``, ...).
    """

    sample_shape = IMAGE_SHAPE

    def __init__(self, unet, config, card: dict | None = None, name: str = "shapes"):
        super().__init__(unet, config, card, name)

    def make_scheduler(self):
        """A new ``DDPMScheduler`` with the training schedule (diffusers' defaults otherwise)."""
        return DDPMScheduler(**self.config.scheduler_kwargs())

    def process(self, num_inference_steps: int = 100, scheduler=None) -> DiffusersProcess:
        """This model as an unconditional :class:`critwin.ReverseProcess`, through the diffusers adapter.

        Parameters
        ----------
        num_inference_steps : sampler steps (diffusers ``set_timesteps``).
        scheduler : a diffusers scheduler to sample with (default: the training ``DDPMScheduler``).

        Returns
        -------
        DiffusersProcess with ``sample_shape == (3, 16, 16)``.
        """
        return DiffusersProcess(
            self.unet,
            self.make_scheduler() if scheduler is None else scheduler,
            num_inference_steps=check_positive_int(num_inference_steps, "num_inference_steps"),
            model_id=f"critwin/{self.name}",
        )

    @torch.no_grad()
    def sample(
        self,
        n: int,
        num_inference_steps: int = 100,
        generator: torch.Generator | None = None,
        batch_size: int = 1000,
    ) -> torch.Tensor:
        """``n`` samples: diffusers' ``DDPMScheduler`` driven through :meth:`process`.

        Returns
        -------
        (n, 3, 16, 16) float32 images (the scheduler clips its clean-image estimate to [-1, 1]).
        """
        n = check_positive_int(n, "n")
        batch_size = check_positive_int(batch_size, "batch_size")
        process = self.process(num_inference_steps)
        chunks = []
        for start in range(0, n, batch_size):
            x = process.prior(min(batch_size, n - start), generator=generator)
            chunks.append(process.run(x, generator=generator))
        return torch.cat(chunks)


def save_shapes_model(model: ShapesModel, directory) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (EMA U-Net state dict) and ``<name>.json`` (card) atomically."""
    return save_model(model, directory)


def load_shapes_model(name: str = "shapes", directory: str | os.PathLike | None = None) -> ShapesModel:
    """Load a shapes DDPM.

    Parameters
    ----------
    name : ``"shapes"``, ``"shapes-biased"`` or ``"shapes-memorise"``, or the stem of your own files
        in ``directory``.
    directory : folder with ``<name>.safetensors`` and ``<name>.json`` (default: the shipped weights).

    Returns
    -------
    ShapesModel in eval mode, with ``.card`` set.
    """
    unet, config, card = load_unet(name, directory, MODEL_NAMES, ShapesConfig, build_unet)
    return ShapesModel(unet, config, card=card, name=name)


def shipped_process(
    name: str,
    num_inference_steps: int = 100,
    scheduler=None,
    device=None,
    dtype=None,
    directory: str | os.PathLike | None = None,
) -> DiffusersProcess:
    """A shipped shapes model as an unconditional process (what ``critwin sweep --model shapes`` runs).

    Parameters
    ----------
    name : ``"shapes"``, ``"shapes-biased"`` or ``"shapes-memorise"``.
    num_inference_steps : sampler steps.
    scheduler : ``None`` (the training ``DDPMScheduler``) or a diffusers scheduler class, built from the
        training scheduler's config.
    device, dtype : where and in which precision the U-Net runs (default: CPU, float32).
    directory : load ``name`` from this folder instead of the shipped weights.

    Returns
    -------
    DiffusersProcess with ``sample_shape == (3, 16, 16)``.
    """
    scheduler = resolve_scheduler_class(scheduler)
    device = None if device is None else check_device(device)
    dtype = None if dtype is None else check_float_dtype(dtype)
    model = load_shapes_model(name, directory)
    move_network(model.unet, device, dtype)
    if scheduler is not None:
        scheduler = scheduler.from_config(model.make_scheduler().config)
    return model.process(num_inference_steps, scheduler=scheduler)
