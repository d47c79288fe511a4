"""Training the digits DDPM: :func:`training_steps` (a generator of states) and :func:`train_digits`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
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
from critwin.models.classifier import load_classifier
from critwin.models.data import NUM_CLASSES, DigitsData
from critwin.models.digits.card import build_card
from critwin.models.digits.config import NULL_LABEL, DigitsConfig
from critwin.models.digits.evaluation import evaluate_digits_model
from critwin.models.digits.model import DigitsModel, build_unet, make_scheduler

__all__ = ["TrainState", "training_pair", "training_steps", "train_digits"]


def training_pair(
    config: DigitsConfig, scheduler, x0: torch.Tensor, noise: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network input, network timestep and regression target of one batch (the loss's one formula).

    ``"epsilon"`` / ``"v_prediction"``: a uniform training step ``k`` per image, ``x = add_noise(x0, z, k)``,
    target ``z`` / ``scheduler.get_velocity(x0, z, k)`` (``sqrt(alpha_bar) z - sqrt(1 - alpha_bar) x0``).
    ``"flow"``: ``s ~ U(0, 1)`` per image (the uniform density of diffusers' flow-matching training
    scripts, ``weighting_scheme`` other than logit-normal/mode, kept continuous rather than snapped to the
    1000 training sigmas: the Euler sampler's sigmas are a continuous linspace); ``x = (1 - s) x0 + s z``,
    target velocity ``z - x0`` (so ``x0 = x - s v``, as :func:`critwin.adapters.diffusers.flow.flow_x0`
    reads it), timestep ``s * num_train_timesteps`` (what ``FlowMatchEulerDiscreteScheduler`` tells the
    network).

    Parameters
    ----------
    config : the run (its ``parameterisation``).
    scheduler : the training scheduler (:func:`make_scheduler`).
    x0 : (B, 1, 8, 8) clean images.
    noise : (B, 1, 8, 8) standard Gaussian noise.
    generator : draws the time of each image.

    Returns
    -------
    (noisy (B, 1, 8, 8), timesteps (B,), target (B, 1, 8, 8))
    """
    batch = x0.shape[0]
    if config.parameterisation == "flow":
        s = torch.rand(batch, generator=generator)
        s_image = s.view(-1, *([1] * (x0.ndim - 1)))
        return (1 - s_image) * x0 + s_image * noise, s * config.num_train_timesteps, noise - x0
    timesteps = torch.randint(0, config.num_train_timesteps, (batch,), generator=generator)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    if config.parameterisation == "v_prediction":
        return noisy, timesteps, scheduler.get_velocity(x0, noise, timesteps)
    return noisy, timesteps, noise


def training_steps(config: DigitsConfig, data: DigitsData | None = None) -> Iterator[TrainState]:
    """Train the digits model, yielding the state after every step (smalldiffusion style).

    Each step draws a batch of training digits, Gaussian noise and a time per image, noises the
    batch and picks the target as :func:`training_pair` does for ``config.parameterisation``, replaces
    each label by the null label with probability ``label_dropout``, and regresses the target (MSE).
    All randomness comes from a generator seeded with ``config.seed``, so a run is reproducible.

    Parameters
    ----------
    config : the run (``config.steps`` steps are yielded).
    data : training data (default: the split described by ``config``).

    Yields
    ------
    TrainState
    """
    if not isinstance(config, DigitsConfig):
        raise ValueError(f"config must be a DigitsConfig, got {type(config).__name__}")
    if data is None:
        data = config.load_data()
    generator = torch.Generator().manual_seed(config.seed)
    model, ema_model = init_models(lambda: build_unet(config), config.seed)
    scheduler = make_scheduler(config)
    images, labels = data.train_images, data.train_labels
    n = labels.numel()

    def loss_at() -> torch.Tensor:
        batch = torch.randint(0, n, (config.batch_size,), generator=generator)
        x0 = images[batch]
        noise = torch.randn(x0.shape, generator=generator)
        noisy, timesteps, target = training_pair(config, scheduler, x0, noise, generator)
        dropped = torch.rand(config.batch_size, generator=generator) < config.label_dropout
        class_labels = torch.where(dropped, torch.full_like(labels[batch], NULL_LABEL), labels[batch])
        return nn.functional.mse_loss(model(noisy, timesteps, class_labels=class_labels).sample, target)

    yield from optimiser_steps(config, model, ema_model, data, loss_at)


def train_digits(
    config: DigitsConfig,
    name: str = "digits",
    out_dir: str | os.PathLike | None = None,
    classifier=None,
    log_every: int = 100,
    eval_every: int = 500,
    eval_per_class: int = 10,
    final_per_class: int = 50,
    final_unconditional: int = 500,
    num_inference_steps: int = 100,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    reference_card: dict | Callable[[], dict | None] | None = None,
) -> tuple[DigitsModel, dict]:
    """Train, evaluate and (optionally) save a digits DDPM; the engine behind ``critwin train``.

    Parameters
    ----------
    config : the run.
    name : model name (file stem of the weights and card).
    out_dir : directory for ``<name>.safetensors`` and ``<name>.json``; None to not save.
    classifier : classifier for sample-quality logging and metrics (default: the shipped one).
    log_every : steps between loss lines.
    eval_every : steps between quick sample-quality checks (``eval_per_class`` samples per digit,
        25 DDPM steps, EMA weights); 0 disables them.
    final_per_class, final_unconditional, num_inference_steps : sizes of the final evaluation.
    progress : show a progress bar.
    log : where log lines go (None: silent).
    reference_card : another model's card whose nearest-neighbour numbers are copied into this
        card for comparison (the memorising model cites the main model's), or a zero-argument
        callable returning it (or None), called once training has finished.

    Returns
    -------
    (model, card)

    Examples
    --------
    Three optimiser steps of a tiny U-Net, nothing saved (the shipped model is ``DigitsConfig()``'s
    2000 steps, minutes on a CPU):

    >>> import critwin
    >>> from critwin.models.digits.config import DigitsConfig
    >>> config = DigitsConfig(
    ...     block_out_channels=(8,), norm_num_groups=4, steps=3, batch_size=8, warmup_steps=1
    ... )
    >>> model, card = critwin.train_digits(
    ...     config, eval_every=0, final_per_class=1, final_unconditional=10, num_inference_steps=2,
    ...     progress=False, log=None,
    ... )
    >>> model, card["config"]["steps"], "conditional_accuracy" in card["metrics"]
    (DigitsModel(name='digits', parameters=10945), 3, True)
    """
    log_every, eval_every, out_dir, emit = check_run(log_every, eval_every, out_dir, log)
    eval_per_class = check_positive_int(eval_per_class, "eval_per_class")
    classifier = load_classifier() if classifier is None else classifier
    history = History(log_every, eval_every, 0.0, _quick_check(classifier, eval_per_class, name))
    state, data, train_seconds = timed_training(training_steps, config, name, history, progress, emit)

    model = DigitsModel(_copy_unet(state.ema_model, config), config, name=name)
    emit(
        f"evaluating {name}: {final_per_class} samples per digit, {final_unconditional} unconditional, "
        f"{num_inference_steps} {config.scheduler_class_name} steps"
    )
    metrics = evaluate_digits_model(
        model,
        classifier,
        data,
        n_per_class=final_per_class,
        n_unconditional=final_unconditional,
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(config.seed + 1),
    )
    if callable(reference_card):
        reference_card = reference_card()
    card = build_card(model, data, metrics, history.entries, train_seconds, reference_card)
    model.card = card
    emit(
        f"conditional accuracy {metrics['conditional_accuracy']:.3f}; NN distance of samples (median) "
        f"{metrics['nn_distance_samples_median']:.3f} vs test images {metrics['nn_distance_test_median']:.3f}"
    )
    if out_dir is not None:
        card = save_and_reload(model, out_dir, emit)
    return model, card


def _quick_check(classifier, eval_per_class: int, name: str) -> Callable[[TrainState], tuple[dict, str]]:
    """A short sample check of the EMA weights (25 DDPM steps): conditional accuracy and NN distance."""

    def check(state: TrainState) -> tuple[dict, str]:
        probe = DigitsModel(_copy_unet(state.ema_model, state.config), state.config, name=name)
        quick = evaluate_digits_model(
            probe,
            classifier,
            state.data,
            n_per_class=eval_per_class,
            n_unconditional=0,
            num_inference_steps=25,
            generator=torch.Generator().manual_seed(state.config.seed),
        )
        values = {
            "conditional_accuracy_quick": quick["conditional_accuracy"],
            "nn_distance_samples_median": quick["nn_distance_samples_median"],
        }
        text = (
            f"  cond. accuracy (25 steps, n={NUM_CLASSES * eval_per_class}) "
            f"{values['conditional_accuracy_quick']:.3f}"
            f"  NN dist {values['nn_distance_samples_median']:.3f}"
        )
        return values, text

    return check


def _copy_unet(unet, config: DigitsConfig):
    return copy_module(unet, lambda: build_unet(config))
