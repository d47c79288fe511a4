"""Training a shapes text-to-image model: the VAE first (then frozen), then U-Net and text encoder jointly.

:func:`vae_steps` and :func:`training_steps` are generators of states (one per optimiser step);
:func:`train_t2i` runs both, evaluates the result (:mod:`.evaluation`), writes the pipeline directory
and its card, and is what ``critwin train shapes-t2i`` runs. All randomness comes from generators seeded
by ``config.seed`` (networks are initialised under forked, seeded global RNGs), so a run repeats bit for
bit at a fixed thread count.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from critwin.models._training import (
    History,
    TrainState,
    check_run,
    copy_module,
    init_models,
    optimiser_steps,
    run_with_progress,
)
from critwin.models.shapes.data import make_shapes
from critwin.models.shapes_t2i.captions import vocabulary
from critwin.models.shapes_t2i.config import T2IConfig
from critwin.models.shapes_t2i.data import T2IData
from critwin.models.shapes_t2i.pipeline import (
    assemble_pipeline,
    build_text_encoder,
    build_unet,
    build_vae,
    load_t2i_card,
    make_scheduler,
    save_pipeline,
)
from critwin.models.shapes_t2i.tokenizer import build_tokenizer

__all__ = [
    "Stopwatch",
    "vae_steps",
    "encode_latents",
    "tokenize",
    "noise_loss",
    "training_steps",
    "train_t2i",
]

_ENCODE_BATCH = 500


class Stopwatch:
    """Wall and CPU seconds of a stage, with the machine's load average at its start and end."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.load_start = os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.load_end = os.getloadavg()[0]

    def record(self) -> dict[str, float]:
        return {
            "wall_seconds": self.wall,
            "cpu_seconds": self.cpu,
            "load_average_1min_start": self.load_start,
            "load_average_1min_end": self.load_end,
        }


def vae_steps(config: T2IConfig) -> Iterator[TrainState]:
    """Train the ``AutoencoderKL`` on ``make_shapes(config.vae_n_train, seed=config.vae_data_seed)``.

    Loss: L1 + MSE of the reconstruction from a posterior sample, plus ``vae_kl_weight`` times the KL to
    the standard normal (SD's VAE adds perceptual and adversarial terms; 16x16 flat-colour images do not
    need them). The loop of every shipped model (:func:`~critwin.models._training.optimiser_steps`) with a
    50-step warm-up and cosine decay; the VAE keeps its own weights (``state.model``), not the EMA.
    """
    images = make_shapes(config.vae_n_train, seed=config.vae_data_seed).images
    generator = torch.Generator().manual_seed(config.seed)
    vae, ema_vae = init_models(lambda: build_vae(config), config.seed)
    schedule = SimpleNamespace(
        learning_rate=config.vae_learning_rate,
        warmup_steps=min(50, config.vae_steps),
        steps=config.vae_steps,
        ema_decay=config.ema_decay,
    )

    def loss_at() -> torch.Tensor:
        x = images[torch.randint(0, images.shape[0], (config.vae_batch_size,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        error = vae.decode(z).sample - x
        return error.abs().mean() + (error**2).mean() + config.vae_kl_weight * posterior.kl().mean()

    yield from optimiser_steps(schedule, vae, ema_vae, images, loss_at)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations ``(n, 4, 8, 8)`` of images ``(n, 3, 16, 16)`` (unscaled)."""
    means, stds = [], []
    for chunk in images.split(_ENCODE_BATCH):
        posterior = vae.encode(chunk).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """``(n, model_max_length)`` token ids, padded and truncated as the pipeline's ``encode_prompt``."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def noise_loss(config: T2IConfig, scheduler, prediction, noise, timesteps) -> torch.Tensor:
    """The noise-regression loss: plain MSE, or with ``config.snr_gamma > 0`` the Min-SNR-gamma weighting
    of Hang et al. (2023) for epsilon prediction (timestep ``t`` weighted ``min(SNR_t, gamma) / SNR_t``,
    which down-weights the nearly clean steps)."""
    per_sample = ((prediction - noise) ** 2).mean(dim=(1, 2, 3))
    if config.snr_gamma == 0:
        return per_sample.mean()
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    return (per_sample * torch.clamp(snr, max=config.snr_gamma) / snr).mean()


def training_steps(config: T2IConfig, data: T2IData, vae, tokenizer) -> Iterator[TrainState]:
    """Train U-Net and text encoder (or the U-Net alone) on the frozen VAE's latents, yielding every step.

    Each step draws a batch of training examples (pair ``i`` with probability ``counts[i] / sum(counts)``),
    a latent from each image's posterior (times the VAE's ``scaling_factor``), a uniform timestep and
    Gaussian noise; replaces each caption by the empty prompt with probability ``caption_dropout``; and
    regresses the noise (:func:`noise_loss`), as Stable Diffusion's training does. The loop is
    :func:`~critwin.models._training.optimiser_steps` on both networks at once (``state.model`` and
    ``state.ema_model`` are ``ModuleDict`` s of ``unet`` and ``text_encoder``).
    """
    generator = torch.Generator().manual_seed(config.seed + 1)
    mean, std = encode_latents(vae, data.images)
    scale = vae.config.scaling_factor
    ids = tokenize(tokenizer, data.captions)
    null = tokenize(tokenizer, [""])
    index = data.training_index()
    unet, ema_unet = init_models(lambda: build_unet(config), config.seed + 1)
    text_encoder, ema_text = init_models(lambda: build_text_encoder(config, tokenizer), config.seed + 2)
    if not config.train_text_encoder:
        text_encoder.requires_grad_(False).eval()  # no gradients: AdamW leaves it at its initialisation
    networks = nn.ModuleDict({"unet": unet, "text_encoder": text_encoder})
    averages = nn.ModuleDict({"unet": ema_unet, "text_encoder": ema_text})
    scheduler = make_scheduler(config, training=True)

    def loss_at() -> torch.Tensor:
        rows = index[torch.randint(0, index.numel(), (config.batch_size,), generator=generator)]
        latents = (mean[rows] + std[rows] * torch.randn(mean[rows].shape, generator=generator)) * scale
        dropped = torch.rand(config.batch_size, generator=generator) < config.caption_dropout
        tokens = torch.where(dropped.view(-1, 1), null, ids[rows])
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, config.num_train_timesteps, (config.batch_size,), generator=generator)
        states = text_encoder(tokens)[0]
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states=states).sample
        return noise_loss(config, scheduler, prediction, noise, timesteps)

    yield from optimiser_steps(config, networks, averages, data, loss_at)


def _run_stage(
    states, total: int, label: str, log_every: int, progress: bool, emit
) -> tuple[TrainState, dict]:
    history = History(log_every, 0, time.perf_counter())
    with Stopwatch() as watch:
        state = run_with_progress(states, total, label, history, progress, emit)
    return state, {"steps": total, **watch.record(), "history": history.entries}


def _set_scaling_factor(vae, config: T2IConfig) -> float:
    """SD's latent scaling: 1 / (standard deviation of the posterior means of the VAE's training images)."""
    mean, _ = encode_latents(vae, make_shapes(config.vae_n_train, seed=config.vae_data_seed).images)
    scale = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scale)
    return scale


def train_t2i(
    config: T2IConfig,
    name: str = "shapes-t2i",
    out_dir: str | os.PathLike | None = None,
    readers: dict | None = None,
    log_every: int = 100,
    evaluation: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
):
    """Train, evaluate and (optionally) save a shapes text-to-image model; ``critwin train shapes-t2i``.

    Parameters
    ----------
    config : the run (:data:`~critwin.models.shapes_t2i.config.PRESETS`).
    name : model name (the directory ``out_dir / name``).
    out_dir : where the pipeline directory goes; None to not save.
    readers : attribute readers (default: :func:`~critwin.models.shapes.attribute_readers`).
    log_every : steps between loss lines.
    evaluation : keyword arguments of :func:`~critwin.models.shapes_t2i.evaluation.evaluate_t2i`
        (sample sizes).
    progress : progress bars.  log : where log lines go (None: silent).

    Returns
    -------
    (pipe, card): the ``StableDiffusionPipeline`` (EMA weights) and its model card.

    Examples
    --------
    >>> from critwin.models.shapes_t2i import PRESETS
    >>> pipe, card = train_t2i(PRESETS["shapes-t2i-tiny"], log=None, progress=False,
    ...                        evaluation={"n_per_prompt": 1, "probe_samples": 4})  # doctest: +SKIP
    """
    from critwin.models.shapes.readers import attribute_readers
    from critwin.models.shapes_t2i.card import build_card
    from critwin.models.shapes_t2i.evaluation import evaluate_t2i

    if not isinstance(config, T2IConfig):
        raise ValueError(f"config must be a T2IConfig, got {type(config).__name__}")
    log_every, _, out_dir, emit = check_run(log_every, 0, out_dir, log)
    readers = attribute_readers() if readers is None else readers
    with tempfile.TemporaryDirectory() as files:
        tokenizer = build_tokenizer(Path(files), vocabulary(), config.max_tokens)
        emit(f"training the VAE of {name}: {config.vae_steps} steps")
        state, vae_record = _run_stage(
            vae_steps(config), config.vae_steps, f"{name} VAE", log_every, progress, emit
        )
        vae = state.model.eval().requires_grad_(False)
        vae_record["scaling_factor"] = _set_scaling_factor(vae, config)
        data = config.load_data()
        emit(
            f"training the U-Net and text encoder of {name}: {config.steps} steps on "
            f"{int(data.counts.sum())} pairs"
        )
        state, unet_record = _run_stage(
            training_steps(config, data, vae, tokenizer), config.steps, name, log_every, progress, emit
        )
        unet = copy_module(state.ema_model["unet"], lambda: build_unet(config))
        text_encoder = copy_module(
            state.ema_model["text_encoder"], lambda: build_text_encoder(config, tokenizer)
        )
        pipe = assemble_pipeline(vae, text_encoder, tokenizer, unet, config)
        emit(f"evaluating {name}")
        with Stopwatch() as watch:
            metrics = evaluate_t2i(pipe, config, data, readers, **(evaluation or {}))
        metrics["evaluation_time"] = watch.record()
        card = build_card(
            name, pipe, config, data, metrics, {"vae": vae_record, "unet_text_encoder": unet_record}
        )
        emit(_summary(metrics))
        if out_dir is not None:
            directory = save_pipeline(pipe, card, out_dir / name)
            card = load_t2i_card(directory)  # as written: with the weight files' SHA-256 and sizes
            emit(f"wrote {directory}")
    return pipe, card


def _summary(metrics: dict) -> str:
    adherence = metrics["adherence"]
    parts = [
        f"{a} {v['rate']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"
        for a, v in adherence["attributes"].items()
    ]
    return (
        f"adherence on fully specified prompts (guidance {adherence['guidance_scale']:g}, "
        f"{adherence['num_inference_steps']} DDIM steps, n={adherence['n_samples']}): " + "; ".join(parts)
    )
