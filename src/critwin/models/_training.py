"""What every shipped DDPM's training shares (digits, shapes): configuration checks, schedule, EMA, logging.

- :class:`TrainState`: what a training generator yields after every step.
- :class:`TrainingConfig`: ``replace`` / ``to_dict`` / ``from_dict`` of a frozen dataclass config, and
  :meth:`TrainingConfig.check_training` (the U-Net size, the linear DDPM schedule and the optimiser).
- :class:`Presets`: a family's named configs, built (and so checked, the memory guard included) when
  looked up, not at import.
- :func:`ddpm_scheduler_kwargs`: the linear epsilon-prediction ``DDPMScheduler`` of a config.
- :func:`learning_rate_at` (linear warm-up, cosine decay), :func:`init_models` (seeded U-Net and its
  EMA copy), :func:`ema_update`, :func:`copy_module`, and :func:`optimiser_steps`, the training loop
  (a model gives only its batch loss).
- :class:`History` (loss lines, optional quick sample checks) and :func:`run_with_progress` (a rich
  progress bar around a generator of training states).
- :func:`training_record` and :func:`memorisation_comparison`: the ``training`` and ``comparison``
  entries of a model card.
- :class:`TrainedModel`: the U-Net, its config, card and name (base of ``DigitsModel``, ``ShapesModel``).
- :func:`check_out_dir`, :func:`timed_training`, :func:`save_model`, :func:`save_and_reload`,
  :func:`load_unet`: the driver's plumbing (output folder, timed run, weights + card on disk).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from critwin._memory import GRID_BYTES, check_memory, unet_bytes
from critwin._validation import check_positive_int, check_seed
from critwin.models._store import load_card, load_state_into, load_weights, save_weights, weights_paths

__all__ = [
    "TrainState",
    "TrainingConfig",
    "Presets",
    "ddpm_scheduler_kwargs",
    "learning_rate_at",
    "init_models",
    "ema_update",
    "optimiser_steps",
    "copy_module",
    "History",
    "run_with_progress",
    "training_record",
    "memorisation_comparison",
    "check_out_dir",
    "timed_training",
    "save_model",
    "save_and_reload",
    "load_unet",
    "TrainedModel",
]


@dataclass
class TrainState:
    """What a training generator yields after every optimiser step.

    Attributes
    ----------
    step : optimiser steps done so far (1 after the first).
    loss : this step's mean squared error.
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
    config: Any
    data: Any = field(repr=False)

    def __repr__(self) -> str:
        model = type(self.model).__name__
        if hasattr(self.model, "parameters"):
            model += f" ({sum(p.numel() for p in self.model.parameters())} parameters)"
        return (
            f"TrainState(step={self.step}, loss={self.loss:.4g}, learning_rate={self.learning_rate:.4g}, "
            f"model={model}, config={type(self.config).__name__})"
        )


class TrainingConfig:
    """Mixin of the frozen dataclass configs of the shipped DDPMs.

    Subclasses have the fields ``block_out_channels``, ``layers_per_block``, ``norm_num_groups``,
    ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``steps``, ``batch_size``,
    ``learning_rate``, ``warmup_steps`` and ``ema_decay``, and call :meth:`check_training` from
    ``__post_init__``.
    """

    def check_training(self, max_levels: int, image: str) -> None:
        """Validate the shared fields (ValueError naming the field); ``block_out_channels`` becomes a tuple.

        ``max_levels`` is the most resolutions the image allows (``image`` names it in the error).
        """
        channels = self.block_out_channels
        if isinstance(channels, (int, str)) or len(tuple(channels)) == 0:
            raise ValueError(f"block_out_channels must be a non-empty sequence of ints, got {channels!r}")
        channels = tuple(check_positive_int(c, "block_out_channels") for c in channels)
        object.__setattr__(self, "block_out_channels", channels)
        groups = check_positive_int(self.norm_num_groups, "norm_num_groups")
        if any(c % groups for c in channels):
            raise ValueError(
                f"block_out_channels {channels} must all be multiples of norm_num_groups={groups}"
            )
        if len(channels) > max_levels:
            raise ValueError(
                f"block_out_channels has {len(channels)} levels; {image} allows at most {max_levels}"
            )
        check_positive_int(self.layers_per_block, "layers_per_block")
        check_positive_int(self.num_train_timesteps, "num_train_timesteps", minimum=2)
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        if not (
            isinstance(self.learning_rate, (int, float))
            and math.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        check_positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        check_seed(self.seed, "seed")
        self.check_memory_needs()

    def check_memory_needs(self) -> None:
        """The memory guard on the sizes of a config (typed, or read from a model card): the network,
        its EMA copy, gradients and AdamW moments (5 copies of the weights) and a batch's activations."""
        image = self.unet_kwargs()["sample_size"]
        size = unet_bytes(self.block_out_channels, self.layers_per_block)
        batch = unet_bytes(self.block_out_channels, self.layers_per_block, image, self.batch_size) - size
        check_memory(
            5 * size + batch + GRID_BYTES * self.num_train_timesteps,
            f"a U-Net with block_out_channels={list(self.block_out_channels)}, layers_per_block="
            f"{self.layers_per_block} and batch_size={self.batch_size}",
        )

    def plain_unet_kwargs(self, image_shape: tuple[int, int, int], **extra) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.UNet2DModel`` for ``(channels, height, width)`` images.

        Plain ``DownBlock2D``/``UpBlock2D`` levels, one per entry of ``block_out_channels``; ``extra``
        adds family-specific arguments (``num_class_embeds`` for the class-conditional digits).
        """
        levels = len(self.block_out_channels)
        return dict(
            sample_size=image_shape[1],
            in_channels=image_shape[0],
            out_channels=image_shape[0],
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=self.norm_num_groups,
            **extra,
        )

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["block_out_channels"] = list(self.block_out_channels)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error (they signal a different version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}")
        return cls(**values)


class Presets(Mapping):
    """A family's named training configs, each built from its keyword arguments when it is looked up.

    Building a config runs its checks, the memory guard among them, so a preset is checked against the
    limit in force when it is used (``$CRITWIN_MEMORY_LIMIT`` or :func:`critwin.set_memory_limit`), and
    importing a model module never fails on a low limit (a spawned worker imports it under the limit it
    inherits). Each lookup returns a new, equal config.

    Parameters
    ----------
    build : the config class (or any callable taking the keyword arguments).
    presets : name -> keyword arguments of ``build``.

    Examples
    --------
    >>> from critwin.models.digits import PRESETS
    >>> PRESETS["tiny"].block_out_channels, "digits" in PRESETS
    ((8, 16), True)
    """

    def __init__(self, build: Callable[..., Any], presets: Mapping[str, Mapping[str, Any]]) -> None:
        self._build = build
        self._kwargs = {name: dict(kwargs) for name, kwargs in presets.items()}

    def __getitem__(self, name: str):
        return self._build(**self._kwargs[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._kwargs)

    def __len__(self) -> int:
        return len(self._kwargs)

    def __repr__(self) -> str:
        return f"Presets({getattr(self._build, '__name__', self._build)}: {', '.join(self._kwargs)})"


def ddpm_scheduler_kwargs(config) -> dict[str, Any]:
    """Keyword arguments of ``diffusers.DDPMScheduler`` (diffusers' defaults otherwise).

    Sampling starts at the last training timestep (``timestep_spacing="trailing"``, Lin et al. 2024): with
    diffusers' default "leading" spacing, 10 or 20 steps start at timestep 900 or 950, whose signal
    coefficient sqrt(alpha_bar) is 0.016 or 0.010 instead of 0.006 at 999 (a
    :class:`~critwin.adapters.diffusers.TerminalSNRWarning`). Training never reads the spacing.
    """
    return dict(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule="linear",
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        prediction_type="epsilon",
        timestep_spacing="trailing",
    )


def learning_rate_at(config, step: int) -> float:
    """Linear warm-up over ``config.warmup_steps`` then cosine decay to 0 at ``config.steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def init_models(build: Callable[[], torch.nn.Module], seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(model, ema_model)``: ``build()`` initialised from ``seed``, and a frozen copy for the EMA."""
    with torch.random.fork_rng(devices=[]):
        # diffusers initialises weights from the global RNG: fork it so the seed fixes the start
        # without touching the caller's random state.
        torch.manual_seed(seed)
        model = build()
    ema_model = copy_module(model, build).requires_grad_(False)
    return model.train(), ema_model


def ema_update(ema_params: list, params: list, step: int, ema_decay: float) -> None:
    """One EMA step after optimiser step ``step`` (0-based).

    The usual warm-up (decay grows from 0.1 towards ``ema_decay``) keeps early averages from being
    dominated by the random initialisation.
    """
    decay = min(ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def optimiser_steps(
    config, model: torch.nn.Module, ema_model: torch.nn.Module, data, loss_at: Callable[[], torch.Tensor]
) -> Iterator[TrainState]:
    """The training loop of every shipped model: ``config.steps`` AdamW steps (no weight decay) on the
    loss ``loss_at()`` of a fresh batch (it draws its own randomness), at the learning rate
    :func:`learning_rate_at`, each followed by the EMA update; yields the state after every step."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    params, ema_params = list(model.parameters()), list(ema_model.parameters())
    for step in range(config.steps):
        lr = learning_rate_at(config, step)
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss = loss_at()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        ema_update(ema_params, params, step, config.ema_decay)
        yield TrainState(
            step=step + 1,
            loss=loss.item(),
            learning_rate=lr,
            model=model,
            ema_model=ema_model,
            config=config,
            data=data,
        )


def copy_module(module: torch.nn.Module, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A new ``build()`` holding ``module``'s weights, in eval mode."""
    copy = build()
    copy.load_state_dict(module.state_dict())
    return copy.eval()


@dataclass
class History:
    """Loss lines every ``log_every`` steps, with ``quick_check(state)`` every ``eval_every`` steps.

    ``quick_check(state) -> (entries, text)`` adds ``entries`` to the logged entry and ``text`` to
    the line (a short sample-quality check of the EMA weights). States have ``step``, ``loss``,
    ``learning_rate`` and ``config.steps``.
    """

    log_every: int
    eval_every: int
    started: float
    quick_check: Callable[[Any], tuple[dict[str, float], str]] | None = None
    entries: list[dict[str, float]] = field(default_factory=list)
    running: float = 0.0
    count: int = 0

    def add(self, state) -> str | None:
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
        if self.quick_check is not None and self.eval_every and (state.step % self.eval_every == 0 or last):
            values, text = self.quick_check(state)
            entry.update(values)
            line += text
        self.entries.append(entry)
        return line


def run_with_progress(
    states: Iterable, total: int, name: str, history: History, progress: bool, emit: Callable[[str], None]
):
    """Run a generator of training ``states`` to the end, logging through a progress bar or ``emit``.

    Returns the last state.
    """
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
        task = bar.add_task("train", total=total, loss=float("nan"))
    # Lines go through the bar's console while it is shown, so they print above it.
    write = emit if bar is None else bar.console.log
    state = None
    with bar if bar is not None else contextlib.nullcontext():
        for state in states:
            if bar is not None:
                bar.update(task, advance=1, loss=state.loss)
            line = history.add(state)
            if line is not None:
                write(line)
    return state


def training_record(config, history: list[dict] | None, seconds: float | None) -> dict[str, Any]:
    """The ``training`` entry of a model card: steps, seed, batch, EMA, wall time, threads, loss history."""
    return {
        "steps": config.steps,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "weights": f"EMA (decay {config.ema_decay})",
        "seconds": seconds,
        "torch_threads": torch.get_num_threads(),
        "history": history or [],
    }


def memorisation_comparison(reference_card: dict, metrics: dict) -> dict[str, Any]:
    """The ``comparison`` entry of a memorising model's card: the main model's numbers beside its own."""
    ref = reference_card.get("metrics", {})
    return {
        "model": reference_card.get("name"),
        "nn_distance_samples_median": ref.get("nn_distance_samples_median"),
        "nn_distance_test_median": ref.get("nn_distance_test_median"),
        "copy_fraction": ref.get("copy_fraction"),
        "this_model_nn_distance_samples_median": metrics["nn_distance_samples_median"],
        "this_model_copy_fraction": metrics["copy_fraction"],
    }


def check_out_dir(out_dir: str | os.PathLike | None) -> Path | None:
    """``out_dir`` as a Path (None stays None); a file there is refused."""
    if out_dir is None:
        return None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out must be a directory, but {out_dir} is a file")
    return out_dir


def check_run(
    log_every, eval_every, out_dir: str | os.PathLike | None, log: Callable[[str], None] | None
) -> tuple[int, int, Path | None, Callable[[str], None]]:
    """The run settings every ``train_*`` engine takes, checked: ``(log_every, eval_every, out_dir, emit)``.

    ``log_every`` >= 1 and ``eval_every`` >= 0 (0: no quick checks) steps, ``out_dir`` as
    :func:`check_out_dir` gives it, and ``emit``, the log sink (``log``, or silent when it is None).
    """
    log_every = check_positive_int(log_every, "log_every")
    eval_every = check_positive_int(eval_every, "eval_every", minimum=0)
    return log_every, eval_every, check_out_dir(out_dir), log or (lambda _line: None)


def timed_training(
    steps: Callable[[Any, Any], Iterator], config, name: str, history: History, progress: bool, emit
) -> tuple[TrainState, Any, float]:
    """Load ``config``'s data and run ``steps(config, data)`` to the end: ``(last state, data, seconds)``."""
    data = config.load_data()
    history.started = started = time.perf_counter()
    state = run_with_progress(steps(config, data), config.steps, name, history, progress, emit)
    return state, data, time.perf_counter() - started


def save_model(model, directory) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (the model's EMA U-Net state dict) and ``<name>.json`` (its card)."""
    if not model.card:
        raise ValueError("model has no card; evaluate it and build one with build_card() before saving")
    return save_weights(model.name, model.unet.state_dict(), model.card, directory)


def save_and_reload(model, out_dir: Path, emit: Callable[[str], None]) -> dict:
    """:func:`save_model`, then the card as written (it gained the weight file's name and SHA-256)."""
    weights_file, card_file = save_model(model, out_dir)
    model.card = load_card(model.name, out_dir)
    emit(f"wrote {weights_file} and {card_file}")
    return model.card


def load_unet(name, directory, shipped: tuple[str, ...], config_class, build) -> tuple[Any, Any, dict]:
    """``(unet, config, card)`` of model ``name`` from ``directory`` (None: a shipped name of ``shipped``).

    ``config_class.from_dict(card["config"])`` rebuilds the configuration and ``build(config)`` the
    network, which receives the SHA-256-checked weights.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a model name such as {shipped}, got {name!r}")
    if directory is None and name not in shipped:
        raise ValueError(f"name must be one of the shipped models {list(shipped)}, got {name!r}")
    state_dict, card = load_weights(name, directory)
    try:
        config = config_class.from_dict(card["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model card of {name!r} has an invalid config: {exc}") from None
    unet = build(config)
    load_state_into(unet, state_dict, name, weights_paths(name, directory).weights)
    return unet, config, card


class TrainedModel:
    """A trained DDPM: the U-Net (eval mode, frozen), the config it was trained with, its card, its name.

    Parameters
    ----------
    unet : ``UNet2DModel`` built from ``config``.
    config : the run's configuration (with ``load_data()`` and ``to_dict()``).
    card : the model card (metrics, data), if loaded from disk.
    name : model name (file stem of its weights and card).
    """

    def __init__(self, unet, config, card: dict | None = None, name: str = "model"):
        self.unet = unet.eval().requires_grad_(False)
        self.config = config
        self.card = card or {}
        self.name = name

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def training_data(self):
        """The exact training data of this model."""
        return self.config.load_data()

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "parameters": self.num_parameters, "config": self.config.to_dict()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, parameters={self.num_parameters})"
