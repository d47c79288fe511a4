"""Training the digits DDPM: :func:`training_steps` (a generator of states) and :func:`train_digits`."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from critwin._validation import check_positive_int
from critwin.models._store import load_card
from critwin.models.classifier import load_classifier
from critwin.models.data import NUM_CLASSES, DigitsData
from critwin.models.digits.card import build_card
from critwin.models.digits.config import NULL_LABEL, DigitsConfig
from critwin.models.digits.evaluation import evaluate_digits_model
from critwin.models.digits.model import DigitsModel, build_unet, make_scheduler, save_digits_model

__all__ = ["TrainState", "training_pair", "training_steps", "train_digits"]


@dataclass
class TrainState:
    """What :func:`training_steps` yields after every optimiser step.

    Attributes
    ----------
    step : optimiser steps done so far (1 after the first).
    loss : this step's mean squared error against the parameterisation's target.
    learning_rate : the learning rate used for this step.
    model : the U-Net being trained (train mode).
    ema_model : the EMA of its weights (the model that gets evaluated and shipped).
    config : the run's configuration.
    data : the training data.
    """

    step: int
    loss: float
    learning_rate: float
    model: Any
    ema_model: Any
    config: DigitsConfig
    data: DigitsData = field(repr=False)


def _learning_rate(config: DigitsConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine decay to 0 at ``steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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
    with torch.random.fork_rng(devices=[]):
        # diffusers initialises weights from the global RNG: fork it so the seed fixes the start
        # without touching the caller's random state.
        torch.manual_seed(config.seed)
        model = build_unet(config)
    ema_model = build_unet(config)
    ema_model.load_state_dict(model.state_dict())
    ema_model.eval().requires_grad_(False)
    model.train()
    scheduler = make_scheduler(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    params = list(model.parameters())
    ema_params = list(ema_model.parameters())
    images, labels = data.train_images, data.train_labels
    n = labels.numel()

    for step in range(config.steps):
        lr = _learning_rate(config, step)
        for group in optimiser.param_groups:
            group["lr"] = lr
        batch = torch.randint(0, n, (config.batch_size,), generator=generator)
        x0 = images[batch]
        noise = torch.randn(x0.shape, generator=generator)
        noisy, timesteps, target = training_pair(config, scheduler, x0, noise, generator)
        dropped = torch.rand(config.batch_size, generator=generator) < config.label_dropout
        class_labels = torch.where(dropped, torch.full_like(labels[batch], NULL_LABEL), labels[batch])
        loss = nn.functional.mse_loss(model(noisy, timesteps, class_labels=class_labels).sample, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        # EMA with the usual warm-up (decay grows from 0.1 towards ema_decay) so early averages
        # are not dominated by the random initialisation.
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        yield TrainState(step + 1, loss.item(), lr, model, ema_model, config, data)


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
    """
    log_every = check_positive_int(log_every, "log_every")
    eval_every = check_positive_int(eval_every, "eval_every", minimum=0)
    eval_per_class = check_positive_int(eval_per_class, "eval_per_class")
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"out must be a directory, but {out_dir} is a file")
    classifier = load_classifier() if classifier is None else classifier
    emit = log or (lambda _line: None)
    data = config.load_data()
    started = time.perf_counter()
    history = _History(log_every, eval_every, eval_per_class, classifier, started)
    state = _run_steps(config, data, name, history, progress, emit)
    train_seconds = time.perf_counter() - started

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
        weights_file, card_file = save_digits_model(model, out_dir)
        # The card as written: it gained the weight file's name and SHA-256.
        model.card = card = load_card(name, out_dir)
        emit(f"wrote {weights_file} and {card_file}")
    return model, card


@dataclass
class _History:
    """Loss lines every ``log_every`` steps, each with a quick sample check every ``eval_every`` steps."""

    log_every: int
    eval_every: int
    eval_per_class: int
    classifier: Any
    started: float
    entries: list[dict[str, float]] = field(default_factory=list)
    running: float = 0.0
    count: int = 0

    def add(self, state: TrainState, name: str) -> str | None:
        """Record ``state``; the log line when this step closes a logging interval, else None."""
        self.running += state.loss
        self.count += 1
        last = state.step == state.config.steps
        if state.step % self.log_every and not last:
            return None
        entry = {
            "step": state.step,
            "loss": self.running / self.count,
            "learning_rate": state.learning_rate,
            "seconds": time.perf_counter() - self.started,
        }
        self.running, self.count = 0.0, 0
        line = f"step {entry['step']:>6}  loss {entry['loss']:.4f}  lr {entry['learning_rate']:.2e}"
        if self.eval_every and (state.step % self.eval_every == 0 or last):
            entry.update(self._quick_check(state, name))
            line += (
                f"  cond. accuracy (25 steps, n={NUM_CLASSES * self.eval_per_class}) "
                f"{entry['conditional_accuracy_quick']:.3f}"
                f"  NN dist {entry['nn_distance_samples_median']:.3f}"
            )
        self.entries.append(entry)
        return line

    def _quick_check(self, state: TrainState, name: str) -> dict[str, float]:
        probe = DigitsModel(_copy_unet(state.ema_model, state.config), state.config, name=name)
        quick = evaluate_digits_model(
            probe,
            self.classifier,
            state.data,
            n_per_class=self.eval_per_class,
            n_unconditional=0,
            num_inference_steps=25,
            generator=torch.Generator().manual_seed(state.config.seed),
        )
        return {
            "conditional_accuracy_quick": quick["conditional_accuracy"],
            "nn_distance_samples_median": quick["nn_distance_samples_median"],
        }


def _run_steps(
    config: DigitsConfig,
    data: DigitsData,
    name: str,
    history: _History,
    progress: bool,
    emit: Callable[[str], None],
) -> TrainState:
    """Run :func:`training_steps` to the end, logging through a progress bar or ``emit``."""
    bar = None
    if progress:
        bar = Progress(
            TextColumn(f"training {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            transient=True,
        )
        task = bar.add_task("train", total=config.steps, loss=float("nan"))
    # Lines go through the bar's console while it is shown, so they print above it.
    write = emit if bar is None else bar.console.log
    with bar if bar is not None else contextlib.nullcontext():
        for state in training_steps(config, data):
            if bar is not None:
                bar.update(task, advance=1, loss=state.loss)
            line = history.add(state, name)
            if line is not None:
                write(line)
    return state


def _copy_unet(unet, config: DigitsConfig):
    copy = build_unet(config)
    copy.load_state_dict(unet.state_dict())
    return copy
