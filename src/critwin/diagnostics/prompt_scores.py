"""Per-prompt memorisation scores of a text-to-image model: critwin's window signal and the peer detectors.

Every score is "higher = more likely memorised" and every function returns the scores with the network
evaluations (UNet rows, :meth:`~critwin.diagnostics.prompt_sampling.PromptModel.counting`) it spent per
prompt. The peer detectors use draws common to all prompts (the same initial noises, the same noise
draws), so two prompts' scores differ by the prompts, not by the draws; every score is deterministic for
a given seed (and batch size).

- :func:`commitment_scores` (critwin, docs/theory.md §8): cloning collapse. ``n_trajectories`` generations of
  the prompt are forked at OU times ``fork_times``; a continuation *keeps* its trajectory's image when its
  final image lies within ``threshold`` (RMS over pixels) of the trajectory's own final image. The
  commitment curve ``c(t)`` (share kept) of a memorised prompt stays near 1 up to large ``t``: all its
  generations are one training image. The score is the OU time ``t½`` where the isotonic fit of ``c``
  falls to 1/2 (``+inf`` when it never does). No base-rate normalisation: for a memorised prompt the base
  rate itself is ~1, which is the signal. The trunks and continuations sample the *conditional* law
  (guidance scale 1 by default, whatever the model's): classifier-free guidance sharpens every prompt's
  law towards its mode, members' and non-members' alike, so under strong guidance every prompt's
  generations are "one image" and the signal has nothing to rank (on ``shapes-t2i-memorise`` at its
  card's scale 5, independent generations of a held-out prompt differ by RMS 0.030, the continuations
  of a member duplicated 64 times by 0.017–0.024; at scale 1, 0.067 against 0.015–0.024. The
  ROC-AUC of the x64 members in ``critwin privacy``'s defaults: 0.531 at scale 5, 0.885 at scale 1).
- :func:`wen_scores` (Wen et al., ICLR 2024): ``d = (1/n) sum_i ||eps(x_T^i, c) - eps(x_T^i, null)||_2`` at
  the first sampling step. The norm is the Euclidean (L2, Frobenius) norm of the *difference* of the two
  noise predictions, taken over all latent entries (channels x height x width) of one generation, then
  averaged over the ``n`` generations. Not the difference of the two norms, not the norm over the whole
  batch tensor (which is ``sqrt(n)`` times the quadratic mean), and without the guidance scale (which
  multiplies every score alike). Two UNet rows per generation.
- :func:`denoising_loss_scores` (loss / posterior-estimation attacks in the spirit of SecMI and PIA, Duan
  et al. 2023, Kong et al. 2024): the prompt's own image (the training image of a member, a held-out image
  of the same caption for a non-member) is encoded, noised to a fixed timestep with ``n_noise`` draws, and
  the model's noise prediction error ``mean (eps_hat - eps)^2`` is its loss; the score is minus the loss
  (training images are denoised better). One UNet row per draw.
- :func:`copy_distances` (the ground truth of copying): minus the mean, over a prompt's generations, of the
  RMS distance to the nearest training image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._validation import check_number, check_positive_int, check_seed
from critwin.experiments import crossing_time, isotonic_decreasing
from critwin.experiments.checkpoint import progress_bar
from critwin.experiments.process import grid_times, realise_times

__all__ = [
    "CommitmentScores",
    "commitment_scores",
    "wen_scores",
    "denoising_loss_scores",
    "copy_distances",
    "generate",
    "rms_distance",
    "SECMI_TIMESTEP",
]

SECMI_TIMESTEP = 100
"""Timestep (of 1000) of the denoising loss: SecMI's ``t_sec`` for DDPM-trained models."""


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square distance over pixels between paired images ``(n, ...)`` -> ``(n,)``."""
    return (a - b).flatten(1).pow(2).mean(1).sqrt()


def _batches(n: int, size: int):
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


@torch.no_grad()
def wen_scores(
    model, prompts, n_generations: int = 4, seed: int = 0, batch_size: int = 64
) -> tuple[np.ndarray, int]:
    """Wen et al.'s detection score of each prompt (module notes: which norm, and why).

    Parameters
    ----------
    model : a :class:`~critwin.diagnostics.prompt_sampling.PromptModel`.
    prompts : P prompts.
    n_generations : initial noises ``x_T`` per prompt (the same ones for every prompt).
    seed : seeds the noises.
    batch_size : prompts per UNet call.

    Returns
    -------
    (scores (P,) float64, UNet rows per prompt = 2 * n_generations)

    Examples
    --------
    >>> from critwin.diagnostics.prompt_sampling import PromptModel
    >>> from critwin.models.shapes_t2i.pipeline import load_t2i_pipeline
    >>> model = PromptModel(load_t2i_pipeline("shapes-t2i-biased"), num_inference_steps=10)
    >>> scores, nfe = wen_scores(model, ["a circle", "a red circle"], n_generations=2)
    >>> scores.shape, nfe
    ((2,), 4)
    """
    seed = check_seed(seed)
    prompts = list(prompts)
    n = check_positive_int(n_generations, "n_generations")
    process = model.process(prompts[0])
    noise = process.prior(n, generator=torch.Generator().manual_seed(seed)).to(model.device)
    timestep = process.timesteps[0]
    scheduler = process.scheduler
    x = scheduler.scale_model_input(noise, timestep) if hasattr(scheduler, "scale_model_input") else noise
    null = model.null_embedding().to(model.device)
    scores = []
    for lo, hi in _batches(len(prompts), batch_size):
        cond = model.embed([p for p in prompts[lo:hi] for _ in range(n)]).to(model.device)
        rows = cond.shape[0]
        inputs = x.repeat(hi - lo, 1, 1, 1)
        embeds = torch.cat([null.expand(rows, -1, -1), cond])
        out = model.pipe.unet(torch.cat([inputs, inputs]), timestep, encoder_hidden_states=embeds).sample
        uncond, conditional = out.chunk(2)
        norms = (conditional - uncond).flatten(1).norm(dim=1).double()
        scores.append(norms.view(hi - lo, n).mean(1).cpu())
    return torch.cat(scores).numpy(), 2 * n


@torch.no_grad()
def denoising_loss_scores(
    model,
    prompts,
    images: torch.Tensor,
    timestep: int = SECMI_TIMESTEP,
    n_noise: int = 4,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[np.ndarray, int]:
    """Minus the denoising loss of each prompt's own image at a fixed timestep (module notes).

    Parameters
    ----------
    model : a :class:`~critwin.diagnostics.prompt_sampling.PromptModel`.
    prompts : P prompts.  images : (P, 3, H, W) in [-1, 1], the image of each prompt.
    timestep : the training timestep ``k`` (noise ``x_k = sqrt(abar_k) z0 + sqrt(1 - abar_k) eps``).
    n_noise : noise draws per image (the same draws for every image).
    seed, batch_size : the draws' seed; images per UNet call.

    Returns
    -------
    (scores (P,) float64 = -mean squared error per latent entry, UNet rows per prompt = n_noise)
    """
    seed = check_seed(seed)
    prompts = list(prompts)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] != len(prompts):
        raise ValueError(f"images must be ({len(prompts)}, 3, H, W): one image per prompt")
    n_noise = check_positive_int(n_noise, "n_noise")
    alphas = model.pipe.scheduler.alphas_cumprod
    if not 0 <= int(timestep) < alphas.numel():
        raise ValueError(f"timestep must lie in 0..{alphas.numel() - 1}, got {timestep}")
    abar = alphas[int(timestep)].to(torch.float32)
    scores = []
    generator = torch.Generator().manual_seed(seed)
    noise = None
    for lo, hi in _batches(len(prompts), batch_size):
        z0 = model.encode_images(images[lo:hi])
        if noise is None:
            noise = torch.randn((n_noise, *z0.shape[1:]), generator=generator).to(z0)
        eps = noise.repeat(hi - lo, 1, 1, 1)
        z0 = z0.repeat_interleave(n_noise, 0)
        noised = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
        cond = model.embed([p for p in prompts[lo:hi] for _ in range(n_noise)]).to(z0.device)
        predicted = model.pipe.unet(noised, int(timestep), encoder_hidden_states=cond).sample
        loss = (predicted - eps).flatten(1).pow(2).mean(1).double().view(hi - lo, n_noise).mean(1)
        scores.append(-loss.cpu())
    return torch.cat(scores).numpy(), n_noise


@torch.no_grad()
def copy_distances(generations: torch.Tensor, training_images: torch.Tensor, chunk: int = 512) -> np.ndarray:
    """Minus the mean RMS distance of each prompt's generations to their nearest training image.

    Parameters
    ----------
    generations : (P, k, 3, H, W) images of each prompt.  training_images : (N, 3, H, W).

    Returns
    -------
    (P,) float64 (higher: closer to a training image, i.e. copied).
    """
    P, k = generations.shape[:2]
    flat = generations.reshape(P * k, -1).double()
    train = training_images.reshape(training_images.shape[0], -1).to(flat)
    d = flat.shape[1]
    nearest = torch.cat([torch.cdist(part, train).min(1).values for part in flat.split(chunk)]) / d**0.5
    return -nearest.view(P, k).mean(1).numpy()


@dataclass(repr=False)
class CommitmentScores:
    """Result of :func:`commitment_scores`.

    Attributes
    ----------
    scores : (P,) ``t½`` per prompt (``+inf``: kept at the largest fork, ``-inf``: lost at the smallest).
    times : (T,) realised fork OU times (ascending).  curves : (P, T) share of continuations kept.
    threshold : the RMS distance under which a continuation keeps its trajectory's image.
    generations : (P, k, 3, H, W) the trajectories' final images (the prompt's generations).
    nfe_per_prompt : UNet rows per prompt (trunks and continuations).
    nfe_trunks_per_prompt : those of the trunks alone (the cost of the generations).
    metadata : settings.
    """

    scores: np.ndarray
    times: np.ndarray
    curves: np.ndarray
    threshold: float
    generations: torch.Tensor
    nfe_per_prompt: float
    nfe_trunks_per_prompt: float
    metadata: dict[str, Any] = field(default_factory=dict)


def calibrated_threshold(generations: torch.Tensor) -> float:
    """Half the median RMS distance between two independent generations of a prompt: "the same image"
    means closer than a non-memorised prompt's generations usually are (pass the calibration prompts')."""
    if generations.ndim != 5 or generations.shape[1] < 2:
        raise ValueError("generations must be (P, k >= 2, ...) to calibrate the threshold")
    return 0.5 * float(rms_distance(generations[:, 0], generations[:, 1]).median())


def _trunks(model, prompts, k, indices, generator, batch_size, advance, guidance_scale=None):
    """States at the fork indices (per fork: (P*k, ...)) and the decoded finals (P, k, ...)."""
    rows = [p for p in prompts for _ in range(k)]
    states = {int(i): [] for i in indices}
    finals = []
    for lo, hi in _batches(len(rows), batch_size * k):
        process = model.process(rows[lo:hi], guidance_scale)
        x = process.prior(hi - lo, generator=generator)
        position = 0
        for i in sorted(states):
            x = process.run(x, start=position, stop=i, generator=generator)
            states[i].append(x.cpu())
            position = i
        x = process.run(x, start=position, generator=generator)
        finals.append(process.decode(x).cpu())
        advance(hi - lo)
    merged = {i: torch.cat(v) for i, v in states.items()}
    return merged, torch.cat(finals).view(len(prompts), k, *finals[0].shape[1:])


def _forks(model, prompts, k, m, states, finals, threshold, generator, batch_size, advance, guidance_scale):
    """(P, T) share of the ``m`` continuations per trajectory that keep its final image."""
    rows = [p for p in prompts for _ in range(k) for _ in range(m)]
    own = finals.reshape(len(prompts) * k, *finals.shape[2:]).repeat_interleave(m, 0)
    kept = np.zeros((len(prompts), len(states)))
    for column, i in enumerate(sorted(states)):
        start = states[i].repeat_interleave(m, 0)
        shares = []
        for lo, hi in _batches(len(rows), batch_size * k * m):
            process = model.process(rows[lo:hi], guidance_scale)
            x = process.decode(process.run(start[lo:hi].to(model.device), start=i, generator=generator)).cpu()
            shares.append((rms_distance(x, own[lo:hi]) <= threshold).double())
            advance(hi - lo)
        kept[:, column] = torch.cat(shares).view(len(prompts), k * m).mean(1).numpy()
    return kept


def generate(model, prompts, n: int, seed: int = 0, batch_size: int = 32) -> tuple[torch.Tensor, float]:
    """``n`` images of every prompt ``(P, n, 3, H, W)`` and the UNet rows spent per prompt."""
    seed = check_seed(seed)
    prompts = list(prompts)
    with model.counting() as counter:
        _, finals = _trunks(
            model,
            prompts,
            check_positive_int(n, "n"),
            [],
            torch.Generator().manual_seed(seed),
            batch_size,
            int,
        )
    return finals, counter.rows / len(prompts)


def commitment_scores(
    model,
    prompts,
    *,
    fork_times=None,
    n_trajectories: int = 2,
    n_clones: int = 2,
    threshold: float | None = None,
    calibration: slice | np.ndarray | None = None,
    guidance_scale: float | None = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> CommitmentScores:
    """critwin's window signal of each prompt: the commitment time of its generations (module notes).

    Parameters
    ----------
    model : a :class:`~critwin.diagnostics.prompt_sampling.PromptModel`.
    prompts : P prompts.
    fork_times : OU times of the forks (realised on the sampler's grid); default four grid times spread in
        log OU time from 0.15 to the sampler's largest (:func:`~critwin.experiments.process.grid_times`).
    n_trajectories, n_clones : generations per prompt (>= 2 to calibrate) and continuations per fork.
    threshold : RMS distance of "the same image"; default :func:`calibrated_threshold` of the prompts
        selected by ``calibration`` (all prompts when None; pass the calibration set's rows).
    guidance_scale : guidance of the trunks and continuations (default 1: the conditional law, module
        notes; None: the model's).
    seed, batch_size : seed of every draw; prompts per batch.
    progress : show a progress bar.

    Returns
    -------
    CommitmentScores

    Examples
    --------
    >>> from critwin.diagnostics.prompt_sampling import PromptModel
    >>> from critwin.models.shapes_t2i.pipeline import load_t2i_pipeline
    >>> model = PromptModel(load_t2i_pipeline("shapes-t2i-biased"), num_inference_steps=10)
    >>> result = commitment_scores(model, ["a circle", "a square"], fork_times=[0.5, 1.5])
    >>> result.scores.shape, result.curves.shape
    ((2,), (2, 2))
    """
    seed = check_seed(seed)
    prompts = list(prompts)
    k = check_positive_int(n_trajectories, "n_trajectories")
    m = check_positive_int(n_clones, "n_clones")
    scale = (
        model.guidance_scale
        if guidance_scale is None
        else check_number(guidance_scale, "guidance_scale", low=0)
    )
    probe = model.process(prompts[0], scale)
    fork_times = grid_times(probe, 4, lo=0.15) if fork_times is None else fork_times
    _, _, indices, realised, _ = realise_times(probe, fork_times, "fork_times")
    if (realised <= 0).any():
        raise ValueError("fork_times must be > 0: a fork at t = 0 is the finished sample")
    order = np.argsort(-indices.numpy())  # ascending OU time = descending grid index
    distinct = sorted(set(indices.tolist()))
    total = len(prompts) * k * (1 + m * len(distinct))
    with model.counting() as counter, progress_bar(total, "commitment", progress) as advance:
        generator = torch.Generator().manual_seed(seed)
        with model.counting() as trunk_counter:
            states, finals = _trunks(model, prompts, k, distinct, generator, batch_size, advance, scale)
        if threshold is None:
            chosen = finals if calibration is None else finals[calibration]
            threshold = calibrated_threshold(chosen)
        kept = _forks(
            model, prompts, k, m, states, finals, float(threshold), generator, batch_size, advance, scale
        )
    times = np.array([realised[j].item() for j in order])
    columns = [distinct.index(int(indices[j])) for j in order]
    curves = kept[:, columns]
    scores = np.array([crossing_time(times, isotonic_decreasing(c), 0.5) for c in curves])
    return CommitmentScores(
        scores=scores,
        times=times,
        curves=curves,
        threshold=float(threshold),
        generations=finals,
        nfe_per_prompt=counter.rows / len(prompts),
        nfe_trunks_per_prompt=trunk_counter.rows / len(prompts),
        metadata={
            "n_trajectories": k,
            "n_clones": m,
            "fork_times_requested": [float(t) for t in np.atleast_1d(fork_times)],
            "guidance_scale": scale,
            "seed": seed,
            "kept": f"final image within RMS {float(threshold):.4f} of its trajectory's own",
        },
    )
