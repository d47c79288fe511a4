"""Training a shapes DDPM: :func:`training_steps` (a generator of states) and :func:`train_shapes`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
from diffusers import DDPMScheduler
from torch import nn

from critwin._validation import check_positive_int
from critwin.models._training import (
    History,
    TrainState,
    check_run,
    copy_module,
    init_models,
    optimiser_steps,
    save_and_reload,
    timed_training,
)
from critwin.models.shapes.card import build_card
from critwin.models.shapes.config import ShapesConfig
from critwin.models.shapes.data import ShapesData
from critwin.models.shapes.evaluation import evaluate_shapes_model
from critwin.models.shapes.model import ShapesModel, build_unet
from critwin.models.shapes.readers import attribute_readers, evaluate_readers

__all__ = ["training_steps", "train_shapes"]


def training_steps(config: ShapesConfig, data: ShapesData | None = None) -> Iterator[TrainState]:
    """Train an unconditional shapes DDPM, yielding the state after every step.

    Each step draws a batch of training images, a uniform training timestep per image and Gaussian
    noise, noises with ``DDPMScheduler.add_noise`` and regresses the noise (MSE). All randomness comes
    from a generator seeded with ``config.seed``, so a run is reproducible.

    Parameters
    ----------
    config : the run (``config.steps`` steps are yielded).
    data : training images (default: ``config.load_data()``).

    Yields
    ------
    TrainState
    """
    if not isinstance(config, ShapesConfig):
        raise ValueError(f"config must be a ShapesConfig, got {type(config).__name__}")
    data = config.load_data() if data is None else data
    generator = torch.Generator().manual_seed(config.seed)
    model, ema_model = init_models(lambda: build_unet(config), config.seed)
    scheduler = DDPMScheduler(**config.scheduler_kwargs())
    images = data.images

    def loss_at() -> torch.Tensor:
        x0 = images[torch.randint(0, images.shape[0], (config.batch_size,), generator=generator)]
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, config.num_train_timesteps, (config.batch_size,), generator=generator)
        return nn.functional.mse_loss(
            model(scheduler.add_noise(x0, noise, timesteps), timesteps).sample, noise
        )

    yield from optimiser_steps(config, model, ema_model, data, loss_at)


def _quick_check(readers: dict, n_samples: int, name: str) -> Callable[[TrainState], tuple[dict, str]]:
    """A short sample check of the EMA weights (25 DDPM steps): worst attribute TV and NN distance."""

    def check(state: TrainState) -> tuple[dict, str]:
        probe = ShapesModel(
            copy_module(state.ema_model, lambda: build_unet(state.config)), state.config, name=name
        )
        quick = evaluate_shapes_model(
            probe,
            readers,
            state.data,
            n_samples=n_samples,
            num_inference_steps=25,
            n_test=n_samples,
            generator=torch.Generator().manual_seed(state.config.seed),
        )
        values = {
            "max_tv_quick": quick["max_tv"],
            "valid_fraction_quick": quick["valid_fraction"],
            "nn_distance_samples_median": quick["nn_distance_samples_median"],
        }
        text = (
            f"  max TV (25 steps, n={n_samples}) {quick['max_tv']:.3f}  valid {quick['valid_fraction']:.2f}"
            f"  NN dist {quick['nn_distance_samples_median']:.3f}"
        )
        return values, text

    return check


def train_shapes(
    config: ShapesConfig,
    name: str = "shapes",
    out_dir: str | os.PathLike | None = None,
    readers: dict | None = None,
    log_every: int = 100,
    eval_every: int = 500,
    eval_samples: int = 200,
    final_samples: int = 1000,
    num_inference_steps: int = 100,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    reference_card: dict | Callable[[], dict | None] | None = None,
) -> tuple[ShapesModel, dict]:
    """Train, evaluate and (optionally) save a shapes DDPM; the engine behind ``critwin train shapes``.

    Parameters
    ----------
    config : the run.
    name : model name (file stem of the weights and card).
    out_dir : directory for ``<name>.safetensors`` and ``<name>.json``; None to not save.
    readers : attribute readers (default: :func:`attribute_readers` with the shipped shape classifier).
    log_every : steps between loss lines.
    eval_every : steps between quick checks (``eval_samples`` samples, 25 DDPM steps); 0 disables them.
    final_samples, num_inference_steps : size of the final evaluation.
    progress : show a progress bar.
    log : where log lines go (None: silent).
    reference_card : the main model's card (or a zero-argument callable returning it, called after
        training) whose memorisation numbers the card quotes for comparison.

    Returns
    -------
    (model, card)
    """
    log_every, eval_every, out_dir, emit = check_run(log_every, eval_every, out_dir, log)
    eval_samples = check_positive_int(eval_samples, "eval_samples")
    readers = attribute_readers() if readers is None else readers
    history = History(log_every, eval_every, 0.0, _quick_check(readers, eval_samples, name))
    state, data, train_seconds = timed_training(training_steps, config, name, history, progress, emit)

    model = ShapesModel(copy_module(state.ema_model, lambda: build_unet(config)), config, name=name)
    emit(f"evaluating {name}: {final_samples} samples, {num_inference_steps} DDPM steps")
    metrics = evaluate_shapes_model(
        model,
        readers,
        data,
        n_samples=final_samples,
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(config.seed + 1),
    )
    if callable(reference_card):
        reference_card = reference_card()
    card = build_card(
        model, data, metrics, history.entries, train_seconds, reference_card, evaluate_readers(readers)
    )
    model.card = card
    emit(
        f"max attribute TV {metrics['max_tv']:.3f}; valid samples {metrics['valid_fraction']:.3f}; "
        f"NN distance of samples (median) {metrics['nn_distance_samples_median']:.3f} vs held-out images "
        f"{metrics['nn_distance_test_median']:.3f}"
    )
    if out_dir is not None:
        card = save_and_reload(model, out_dir, emit)
    return model, card
