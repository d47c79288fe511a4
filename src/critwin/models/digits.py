"""A real diffusion model that works offline: a class-conditional DDPM on the 8x8 digits.

The network is a diffusers ``UNet2DModel`` (8x8, one channel, epsilon prediction) with
``num_class_embeds = 11``: labels 0..9 are the digits and label 10 is the null label, used for
unconditional sampling and classifier-free guidance. It is trained with diffusers' 1000-step
linear ``DDPMScheduler`` (``add_noise``) and sampled with the same scheduler's ``step``; critwin's
experiments drive it through ``critwin.adapters.diffusers`` like any user's model.

Shipped models (``weights/``): ``digits`` (all training digits) and ``digits-memorise`` (20 training
digits, trained until its samples copy them). Each has a JSON model card with the configuration,
data split, training run and quality metrics (``conditional_accuracy`` and friends).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from critwin import __version__
from critwin._validation import check_positive_int
from critwin.models._store import load_state_into, load_weights, save_weights, weights_paths
from critwin.models.data import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    DigitsData,
    load_digits_data,
    nearest_neighbour_distance,
)

__all__ = [
    "NULL_LABEL",
    "MODEL_NAMES",
    "DigitsConfig",
    "PRESETS",
    "TrainState",
    "DigitsModel",
    "build_unet",
    "training_steps",
    "train_digits",
    "evaluate_digits_model",
    "load_digits_model",
    "save_digits_model",
]

NULL_LABEL = NUM_CLASSES
"""Class label meaning "no digit requested" (unconditional sampling, guidance's reference)."""

MODEL_NAMES = ("digits", "digits-memorise")


@dataclass(frozen=True)
class DigitsConfig:
    """Everything that defines one training run of the digits DDPM (stored in the model card).

    Attributes
    ----------
    block_out_channels, layers_per_block, norm_num_groups : U-Net size (channels per resolution).
    num_train_timesteps, beta_start, beta_end : the linear DDPM schedule.
    steps, batch_size, learning_rate, warmup_steps : AdamW with linear warm-up then cosine decay.
    ema_decay : decay of the exponential moving average of the weights (the shipped weights).
    label_dropout : probability of replacing a label by the null label (classifier-free guidance).
    split_seed, test_fraction, subset_size : the data split (``subset_size`` training digits kept).
    seed : seeds initialisation, batches, noise and label dropout.
    """

    block_out_channels: tuple[int, ...] = (32, 48, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    split_seed: int = 0
    test_fraction: float = 0.2
    subset_size: int | None = None
    seed: int = 0

    def __post_init__(self):
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
        if len(channels) > 4:
            raise ValueError(f"block_out_channels has {len(channels)} levels; an 8x8 image allows at most 4")
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
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.subset_size is not None:
            check_positive_int(self.subset_size, "subset_size", minimum=NUM_CLASSES)

    def replace(self, **changes) -> DigitsConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["block_out_channels"] = list(self.block_out_channels)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DigitsConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they signal a different version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"config has unknown keys {unknown}")
        values = dict(values)
        if "block_out_channels" in values:
            values["block_out_channels"] = tuple(values["block_out_channels"])
        return cls(**values)

    def unet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.UNet2DModel`` for this configuration."""
        levels = len(self.block_out_channels)
        return dict(
            sample_size=IMAGE_SHAPE[1],
            in_channels=IMAGE_SHAPE[0],
            out_channels=IMAGE_SHAPE[0],
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=self.norm_num_groups,
            num_class_embeds=NUM_CLASSES + 1,
        )

    def scheduler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.DDPMScheduler`` (diffusers' defaults otherwise)."""
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_schedule="linear",
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            prediction_type="epsilon",
        )


PRESETS: dict[str, DigitsConfig] = {
    # ~0.9 M parameters; the shipped model.
    "digits": DigitsConfig(),
    # Same network on 20 training digits (two per class), trained long enough to copy them.
    "digits-memorise": DigitsConfig(subset_size=20, steps=4000, batch_size=64),
    # A few-second run for tests and smoke checks.
    "tiny": DigitsConfig(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        steps=60,
        batch_size=32,
        warmup_steps=5,
        ema_decay=0.9,
        learning_rate=3e-3,
    ),
}


def build_unet(config: DigitsConfig):
    """A freshly initialised ``UNet2DModel`` for ``config`` (initialised from the global RNG)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**config.unet_kwargs())


def make_scheduler(config: DigitsConfig):
    """A new ``DDPMScheduler`` with the model's training schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**config.scheduler_kwargs())


def _labels_for(labels, n: int, device) -> torch.Tensor:
    """``labels`` as an (n,) int64 tensor on ``device`` (None -> all null; a scalar is broadcast)."""
    if labels is None:
        return torch.full((n,), NULL_LABEL, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels, device=device)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"class_labels must be integers 0..{NULL_LABEL}, got dtype {labels.dtype}")
    labels = labels.long()
    if labels.ndim == 0:
        labels = labels.expand(n)
    if labels.shape != (n,):
        raise ValueError(f"class_labels must have shape ({n},) to match the batch, got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() > NULL_LABEL):
        raise ValueError(
            f"class_labels must be digits 0..9 or the null label {NULL_LABEL}, got values in "
            f"[{labels.min().item()}, {labels.max().item()}]"
        )
    return labels


# --------------------------------------------------------------------------------------------
# the model


class DigitsModel:
    """A trained digits DDPM: the U-Net, its configuration and its model card.

    Parameters
    ----------
    unet : ``UNet2DModel`` built from ``config``.
    config : the :class:`DigitsConfig` it was trained with.
    card : the model card (metrics, data split), if loaded from disk.
    name : model name (``"digits"``, ``"digits-memorise"``, ...).
    """

    sample_shape = IMAGE_SHAPE

    def __init__(self, unet, config: DigitsConfig, card: dict | None = None, name: str = "digits"):
        self.unet = unet.eval().requires_grad_(False)
        self.config = config
        self.card = card or {}
        self.name = name

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def make_scheduler(self):
        """A new ``DDPMScheduler`` with the training schedule (diffusers' defaults otherwise)."""
        return make_scheduler(self.config)

    def training_data(self) -> DigitsData:
        """The exact data split this model was trained on."""
        c = self.config
        return load_digits_data(seed=c.split_seed, test_fraction=c.test_fraction, subset_size=c.subset_size)

    def process(self, num_inference_steps: int = 100, guidance_scale: float = 1.0, scheduler=None):
        """This model as a :class:`critwin.ReverseProcess`, through the diffusers adapter.

        The U-Net goes through :class:`critwin.adapters.diffusers.DiffusersProcess` exactly as a
        user's model would. The default conditioning is the null label (unconditional sampling);
        request digits per run with ``cond={"class_labels": labels}``. Classifier-free guidance uses
        the null label as the unconditional branch.

        Parameters
        ----------
        num_inference_steps : sampler steps (diffusers ``set_timesteps``).
        guidance_scale : classifier-free guidance weight ``w >= 0``; 1 is the plain conditional model.
        scheduler : a diffusers scheduler to sample with (default: the training ``DDPMScheduler``).

        Returns
        -------
        DiffusersProcess with ``sample_shape == (1, 8, 8)``.
        """
        from critwin.adapters.diffusers import DiffusersProcess

        return DiffusersProcess(
            self.unet,
            self.make_scheduler() if scheduler is None else scheduler,
            num_inference_steps=check_positive_int(num_inference_steps, "num_inference_steps"),
            cond={"class_labels": NULL_LABEL},
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
        """Generate digits: diffusers' ``DDPMScheduler`` driven through :meth:`process`.

        Parameters
        ----------
        labels : (n,) requested digits 0..9 (10 = unconditional); None for ``n`` unconditional samples.
        n : number of samples when ``labels`` is None.
        num_inference_steps : DDPM steps (spread over the 1000 training steps).
        guidance_scale : classifier-free guidance ``w >= 0``; 1 is plain conditional sampling.
        generator : seeds the initial noise and every step's noise.
        batch_size : samples per network call.

        Returns
        -------
        (n, 1, 8, 8) float32 images (the scheduler clips its clean-image estimate to [-1, 1]).
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

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "parameters": self.num_parameters, "config": self.config.to_dict()}


# --------------------------------------------------------------------------------------------
# training


@dataclass
class TrainState:
    """What :func:`training_steps` yields after every optimiser step.

    Attributes
    ----------
    step : optimiser steps done so far (1 after the first).
    loss : this step's mean squared epsilon error.
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


def training_steps(config: DigitsConfig, data: DigitsData | None = None) -> Iterator[TrainState]:
    """Train the digits DDPM, yielding the state after every step (smalldiffusion style).

    Each step draws a batch of training digits, a uniform training timestep per image and
    Gaussian noise, noises with ``DDPMScheduler.add_noise``, replaces each label by the null label
    with probability ``label_dropout``, and regresses the noise (MSE). All randomness comes from a
    generator seeded with ``config.seed``, so a run is reproducible.

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
        data = load_digits_data(
            seed=config.split_seed, test_fraction=config.test_fraction, subset_size=config.subset_size
        )
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
        timesteps = torch.randint(0, config.num_train_timesteps, (config.batch_size,), generator=generator)
        dropped = torch.rand(config.batch_size, generator=generator) < config.label_dropout
        class_labels = torch.where(dropped, torch.full_like(labels[batch], NULL_LABEL), labels[batch])
        noisy = scheduler.add_noise(x0, noise, timesteps)
        loss = nn.functional.mse_loss(model(noisy, timesteps, class_labels=class_labels).sample, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        # EMA with the usual warm-up (decay grows from 0.1 towards ema_decay) so early averages
        # are not dominated by the random initialisation.
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        yield TrainState(step + 1, loss.item(), lr, model, ema_model, config, data)


# --------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_digits_model(
    model: DigitsModel,
    classifier=None,
    data: DigitsData | None = None,
    n_per_class: int = 50,
    n_unconditional: int = 500,
    num_inference_steps: int = 100,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Quality numbers for a model card.

    Parameters
    ----------
    model : the trained model.
    classifier : a :class:`~critwin.models.classifier.DigitClassifier` (default: the shipped one).
    data : the model's data split (default: ``model.training_data()``).
    n_per_class : conditional samples per digit.
    n_unconditional : unconditional samples (class histogram).
    num_inference_steps, guidance_scale : the sampler (DDPM, diffusers ``DDPMScheduler``).
    generator : seeds all sampling.

    Returns
    -------
    dict with ``conditional_accuracy`` (fraction of conditional samples that the classifier
    labels as the requested digit), its per-digit values and binomial standard error,
    ``unconditional_class_histogram`` (fractions over 0..9), and nearest-training-neighbour RMS
    distances of conditional samples and of the test images (``nn_distance_samples_*``,
    ``nn_distance_test_*``), plus ``copy_fraction``: the share of samples closer to a training
    digit than ``copy_threshold`` (a tenth of the median test-image distance).
    """
    from critwin.models.classifier import load_classifier

    n_per_class = check_positive_int(n_per_class, "n_per_class")
    n_unconditional = check_positive_int(n_unconditional, "n_unconditional", minimum=0)
    classifier = load_classifier() if classifier is None else classifier
    data = model.training_data() if data is None else data
    started = time.perf_counter()
    requested = torch.arange(NUM_CLASSES).repeat_interleave(n_per_class)
    samples = model.sample(
        requested, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=generator
    )
    predicted = classifier.predict(samples)
    correct = (predicted == requested).double()
    accuracy = correct.mean().item()
    per_class = correct.reshape(NUM_CLASSES, n_per_class).mean(dim=1).tolist()

    metrics: dict[str, Any] = {
        "conditional_accuracy": accuracy,
        "conditional_accuracy_stderr": math.sqrt(max(accuracy * (1 - accuracy), 1e-12) / correct.numel()),
        "conditional_accuracy_per_class": per_class,
        "n_conditional_samples": int(correct.numel()),
    }
    if n_unconditional > 0:
        free = model.sample(n=n_unconditional, num_inference_steps=num_inference_steps, generator=generator)
        counts = torch.bincount(classifier.predict(free), minlength=NUM_CLASSES)
        metrics["unconditional_class_histogram"] = (counts.double() / n_unconditional).tolist()
        metrics["unconditional_class_counts"] = counts.tolist()
        metrics["n_unconditional_samples"] = n_unconditional

    sample_nn, _ = nearest_neighbour_distance(samples, data.train_images)
    test_nn, _ = nearest_neighbour_distance(data.test_images, data.train_images)
    threshold = 0.1 * test_nn.median().item()
    metrics.update(
        {
            "nn_distance_metric": "RMS pixel distance in [-1, 1] to the nearest training image",
            "nn_distance_samples_mean": sample_nn.mean().item(),
            "nn_distance_samples_median": sample_nn.median().item(),
            "nn_distance_test_mean": test_nn.mean().item(),
            "nn_distance_test_median": test_nn.median().item(),
            "nn_distance_ratio_median": sample_nn.median().item() / test_nn.median().item(),
            "copy_threshold": threshold,
            "copy_fraction": (sample_nn < threshold).double().mean().item(),
        }
    )
    metrics["sampler"] = {
        "scheduler": "diffusers.DDPMScheduler",
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "through": "critwin.adapters.diffusers.DiffusersProcess",
    }
    metrics["classifier_test_accuracy"] = (
        (getattr(classifier, "card", None) or {}).get("metrics", {}).get("test_accuracy")
    )
    metrics["evaluation_seconds"] = time.perf_counter() - started
    return metrics


# --------------------------------------------------------------------------------------------
# training driver, saving, loading


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
    from critwin.models.classifier import load_classifier

    log_every = check_positive_int(log_every, "log_every")
    eval_every = check_positive_int(eval_every, "eval_every", minimum=0)
    eval_per_class = check_positive_int(eval_per_class, "eval_per_class")
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"out must be a directory, but {out_dir} is a file")
    classifier = load_classifier() if classifier is None else classifier
    emit = log or (lambda _line: None)
    data = load_digits_data(
        seed=config.split_seed, test_fraction=config.test_fraction, subset_size=config.subset_size
    )
    history: list[dict[str, float]] = []
    running, count = 0.0, 0
    started = time.perf_counter()

    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn(f"training {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            transient=True,
        )
        task = bar.add_task("train", total=config.steps, loss=float("nan"))
        bar.start()
    state = None
    try:
        for state in training_steps(config, data):
            running += state.loss
            count += 1
            if bar is not None:
                bar.update(task, advance=1, loss=state.loss)
            if state.step % log_every == 0 or state.step == config.steps:
                entry = {
                    "step": state.step,
                    "loss": running / count,
                    "learning_rate": state.learning_rate,
                    "seconds": time.perf_counter() - started,
                }
                running, count = 0.0, 0
                if eval_every and (state.step % eval_every == 0 or state.step == config.steps):
                    probe = DigitsModel(_copy_unet(state.ema_model, config), config, name=name)
                    quick = evaluate_digits_model(
                        probe,
                        classifier,
                        data,
                        n_per_class=eval_per_class,
                        n_unconditional=0,
                        num_inference_steps=25,
                        generator=torch.Generator().manual_seed(config.seed),
                    )
                    entry["conditional_accuracy_quick"] = quick["conditional_accuracy"]
                    entry["nn_distance_samples_median"] = quick["nn_distance_samples_median"]
                history.append(entry)
                line = f"step {entry['step']:>6}  loss {entry['loss']:.4f}  lr {entry['learning_rate']:.2e}"
                if "conditional_accuracy_quick" in entry:
                    line += (
                        f"  cond. accuracy (25 steps, n={NUM_CLASSES * eval_per_class}) "
                        f"{entry['conditional_accuracy_quick']:.3f}"
                        f"  NN dist {entry['nn_distance_samples_median']:.3f}"
                    )
                if bar is not None:
                    bar.console.log(line)
                else:
                    emit(line)
    finally:
        if bar is not None:
            bar.stop()
    train_seconds = time.perf_counter() - started

    model = DigitsModel(_copy_unet(state.ema_model, config), config, name=name)
    emit(
        f"evaluating {name}: {final_per_class} samples per digit, {final_unconditional} unconditional, "
        f"{num_inference_steps} DDPM steps"
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
    card = build_card(model, data, metrics, history, train_seconds, reference_card)
    model.card = card
    emit(
        f"conditional accuracy {metrics['conditional_accuracy']:.3f}; NN distance of samples (median) "
        f"{metrics['nn_distance_samples_median']:.3f} vs test images {metrics['nn_distance_test_median']:.3f}"
    )
    if out_dir is not None:
        weights_file, card_file = save_digits_model(model, out_dir)
        model.card = card = _read_json(card_file)
        emit(f"wrote {weights_file} and {card_file}")
    return model, card


def _copy_unet(unet, config: DigitsConfig):
    copy = build_unet(config)
    copy.load_state_dict(unet.state_dict())
    return copy


def _read_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


def build_card(
    model: DigitsModel,
    data: DigitsData,
    metrics: dict,
    history: list[dict] | None = None,
    train_seconds: float | None = None,
    reference_card: dict | None = None,
) -> dict:
    """The JSON model card of a digits model (``conditional_accuracy`` at the top level)."""
    import diffusers

    card: dict[str, Any] = {
        "name": model.name,
        "kind": "digits-ddpm",
        "critwin_version": __version__,
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
        "conditional_accuracy": metrics["conditional_accuracy"],
        "parameters": model.num_parameters,
        "architecture": "diffusers.UNet2DModel, epsilon prediction, class-conditional (num_class_embeds=11, "
        f"label {NULL_LABEL} = null label for classifier-free guidance)",
        "config": model.config.to_dict(),
        "unet_config": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.unet_kwargs().items()
        },
        "scheduler_config": model.config.scheduler_kwargs(),
        "data": data.describe(),
        "training": {
            "steps": model.config.steps,
            "seed": model.config.seed,
            "batch_size": model.config.batch_size,
            "weights": f"EMA (decay {model.config.ema_decay})",
            "seconds": train_seconds,
            "torch_threads": torch.get_num_threads(),
            "history": history or [],
        },
        "metrics": metrics,
    }
    if reference_card is not None:
        ref = reference_card.get("metrics", {})
        card["comparison"] = {
            "model": reference_card.get("name"),
            "nn_distance_samples_median": ref.get("nn_distance_samples_median"),
            "nn_distance_test_median": ref.get("nn_distance_test_median"),
            "copy_fraction": ref.get("copy_fraction"),
            "this_model_nn_distance_samples_median": metrics["nn_distance_samples_median"],
            "this_model_copy_fraction": metrics["copy_fraction"],
        }
    return card


def save_digits_model(model: DigitsModel, directory) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (EMA U-Net state dict) and ``<name>.json`` (card) atomically."""
    if not model.card:
        raise ValueError("model has no card; evaluate it and build one with build_card() before saving")
    return save_weights(model.name, model.unet.state_dict(), model.card, directory)


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
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a model name such as {MODEL_NAMES}, got {name!r}")
    if directory is None and name not in MODEL_NAMES:
        raise ValueError(f"name must be one of the shipped models {list(MODEL_NAMES)}, got {name!r}")
    state_dict, card = load_weights(name, directory)
    try:
        config = DigitsConfig.from_dict(card["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model card of {name!r} has an invalid config: {exc}") from None
    unet = build_unet(config)
    load_state_into(unet, state_dict, name, weights_paths(name, directory)[0])
    return DigitsModel(unet, config, card=card, name=name)
