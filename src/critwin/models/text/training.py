"""Training and evaluating a text model: :func:`training_steps`, :func:`evaluate_text_model`,
:func:`train_text_model` (the engine behind ``critwin train rhm-mdm`` / ``rhm-ar``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from critwin._validation import check_positive_int, check_seed
from critwin._version import __version__
from critwin.models._store import load_card
from critwin.models._training import (
    History,
    TrainState,
    check_run,
    copy_module,
    init_models,
    optimiser_steps,
    timed_training,
    training_record,
)
from critwin.models.text.config import TextConfig
from critwin.models.text.grammar import RandomHierarchy
from critwin.models.text.model import TextModel, build_network, save_text_model

__all__ = ["training_steps", "training_batch", "evaluate_text_model", "train_text_model", "EVAL_KAPPAS"]

EVAL_KAPPAS = (0.25, 0.5, 0.75)
"""Masking levels at which a masked-diffusion model's token predictions are compared with the exact
posterior in its card."""


def training_batch(config: TextConfig, grammar: RandomHierarchy, generator: torch.Generator):
    """One batch: ``(inputs (B, L) long, targets (B, L) long, where (B, L) bool)`` — the loss is the
    cross-entropy of the network's ``inputs`` logits against ``targets`` at ``where``.

    Masked diffusion: fresh strings, a masking level kappa ~ U(0, 1) per string, each token masked with
    probability kappa; the loss is on the masked tokens (the minimiser is the exact posterior of every
    masked token given the visible ones, at every kappa). Autoregressive: the strings shifted right
    behind the beginning-of-sequence id; the loss is on every token.
    """
    strings, _ = grammar.sample(config.batch_size, generator)
    mask_id = config.vocab_size
    if config.kind == "masked":
        kappa = torch.rand(config.batch_size, 1, generator=generator)
        where = torch.rand(strings.shape, generator=generator) < kappa
        return torch.where(where, torch.full_like(strings, mask_id), strings), strings, where
    bos = torch.full((config.batch_size, 1), mask_id, dtype=torch.long)
    inputs = torch.cat([bos, strings[:, :-1]], 1)
    return inputs, strings, torch.ones_like(strings, dtype=torch.bool)


def training_steps(config: TextConfig, grammar: RandomHierarchy | None = None) -> Iterator[TrainState]:
    """Train the network of ``config``, yielding the state after every optimiser step.

    All randomness (initialisation, strings, masks) comes from ``config.seed``: the same config gives
    the same weights (bit for bit with the same number of threads).
    """
    if not isinstance(config, TextConfig):
        raise ValueError(f"config must be a TextConfig, got {type(config).__name__}")
    grammar = config.load_data() if grammar is None else grammar
    generator = torch.Generator().manual_seed(config.seed)
    model, ema_model = init_models(lambda: build_network(config), config.seed)

    def loss_at() -> torch.Tensor:
        inputs, targets, where = training_batch(config, grammar, generator)
        return nn.functional.cross_entropy(model(inputs)[where], targets[where])

    yield from optimiser_steps(config, model, ema_model, grammar, loss_at)


def _tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(0.5 * (p - q).abs().sum())


def _prediction_tv(model: TextModel, n: int, generator: torch.Generator) -> dict[str, float]:
    """Mean TV between the network's token predictions and the exact posterior ones, by noise level."""
    grammar, process = model.grammar, model.process()
    strings, _ = grammar.sample(n, generator)
    out = {}
    if model.kind == "masked":
        mixture = grammar.mixture("mask")
        for kappa in EVAL_KAPPAS:
            y = mixture.noise_tokens(strings, kappa, generator)
            hidden = y == mixture.mask_id
            exact = mixture.denoise(y, kappa)[hidden]
            predicted = process.probabilities(y)[hidden]
            out[f"kappa={kappa:g}"] = float(0.5 * (exact - predicted).abs().sum(-1).mean())
        return out
    mixture = grammar.mixture("autoregressive")
    L = grammar.length
    for hidden in range(1, L + 1):
        y = mixture.noise_tokens(strings, hidden)
        exact = mixture.denoise(y, hidden)[:, L - hidden]
        predicted = torch.softmax(process.next_scores(y, L - hidden).double(), -1)
        out[f"hidden={hidden}"] = float(0.5 * (exact - predicted).abs().sum(-1).mean())
    return out


def evaluate_text_model(model: TextModel, n_samples: int = 2000, seed: int = 1) -> dict[str, Any]:
    """Quality numbers for the card: validity, per-level label frequencies against the exact ones,
    coverage, and the token predictions against the exact posterior.

    Returns
    -------
    ``{"n_samples", "valid_fraction", "level_tv" {level: TV}, "level_accuracy" {level: 1 - TV},
    "coverage", "prediction_tv" {level: mean TV}, "prediction_tv_mean", "seconds"}``. The TV of an
    empirical histogram of ``n`` draws over ``K`` values is biased upwards by about ``sqrt(K / n) / 2``
    even for a perfect model (``level_tv_floor``).
    """
    seed = check_seed(seed)
    n_samples = check_positive_int(n_samples, "n_samples")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    grammar = model.grammar
    samples = model.sample(n_samples, generator)
    labels = grammar.parse(samples)
    exact = grammar.partitions()
    level_tv, floor = {}, {}
    for name in grammar.level_names:
        k = grammar.n_values(name)
        p = torch.bincount(labels[name], minlength=k + 1).double() / n_samples
        q = torch.bincount(exact[name], minlength=k + 1).double() / exact[name].numel()
        level_tv[name] = _tv(p, q)
        floor[name] = 0.5 * (k / n_samples) ** 0.5
    valid = labels["string"] < grammar.n_strings
    predictions = _prediction_tv(model, min(n_samples, 1000), generator)
    return {
        "n_samples": n_samples,
        "valid_fraction": float(valid.double().mean()),
        "level_tv": level_tv,
        "level_tv_floor": floor,
        "level_accuracy": {name: 1.0 - tv for name, tv in level_tv.items()},
        "coverage": int(torch.unique(labels["string"][valid]).numel()) / grammar.n_strings,
        "prediction_tv": predictions,
        "prediction_tv_mean": sum(predictions.values()) / len(predictions),
        "seconds": time.perf_counter() - started,
    }


def build_card(model: TextModel, metrics: dict, history, timing: dict) -> dict[str, Any]:
    """The JSON model card (``valid_fraction`` and ``prediction_tv_mean`` at the top level)."""
    config = model.config
    kind = "masked diffusion (MDLM loss: cross-entropy on masked tokens, kappa ~ U(0, 1))"
    if model.kind == "autoregressive":
        kind = "autoregressive (next-token cross-entropy, causal attention)"
    return {
        "name": model.name,
        "kind": f"rhm-{config.kind}",
        "critwin_version": __version__,
        "torch_version": torch.__version__,
        "valid_fraction": metrics["valid_fraction"],
        "prediction_tv_mean": metrics["prediction_tv_mean"],
        "parameters": model.num_parameters,
        "architecture": f"critwin TokenTransformer (pre-norm, GELU); {kind}",
        "config": config.to_dict(),
        "network": config.network_kwargs(),
        "grammar": model.grammar.describe(),
        "data": "fresh strings of the grammar every batch (its whole law; no held-out split)",
        "training": {**training_record(config, history, timing["wall_seconds"]), **timing},
        "metrics": metrics,
    }


def _quick_check(name: str) -> Callable[[TrainState], tuple[dict, str]]:
    def check(state: TrainState) -> tuple[dict, str]:
        network = copy_module(state.ema_model, lambda: build_network(state.config))
        probe = TextModel(network, state.config, name=name)
        quick = evaluate_text_model(probe, n_samples=200, seed=state.config.seed + 2)
        values = {"valid_quick": quick["valid_fraction"], "prediction_tv_quick": quick["prediction_tv_mean"]}
        text = f"  valid {quick['valid_fraction']:.3f}  prediction TV {quick['prediction_tv_mean']:.4f}"
        return values, text

    return check


def train_text_model(
    config: TextConfig,
    name: str,
    out_dir: str | os.PathLike | None = None,
    log_every: int = 200,
    eval_every: int = 1000,
    final_samples: int = 2000,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> tuple[TextModel, dict]:
    """Train, evaluate and (optionally) save a text model.

    Parameters
    ----------
    config : the run.  name : model name (file stem).  out_dir : where to write; None to not save.
    log_every, eval_every : steps between loss lines and quick checks (0: none).
    final_samples : samples of the final evaluation.  progress : a progress bar.  log : log lines.

    Returns
    -------
    (model, card); the card records wall and CPU seconds of training and the load average around it.
    """
    log_every, eval_every, out_dir, emit = check_run(log_every, eval_every, out_dir, log)
    history = History(log_every, eval_every, 0.0, _quick_check(name))
    load_before, cpu_before = os.getloadavg(), time.process_time()
    state, grammar, wall = timed_training(training_steps, config, name, history, progress, emit)
    timing = {
        "wall_seconds": wall,
        "cpu_seconds": time.process_time() - cpu_before,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }
    model = TextModel(copy_module(state.ema_model, lambda: build_network(config)), config, name=name)
    emit(f"evaluating {name}: {final_samples} samples")
    metrics = evaluate_text_model(model, final_samples, seed=config.seed + 1)
    model.card = build_card(model, metrics, history.entries, timing)
    emit(
        f"valid samples {metrics['valid_fraction']:.3f}; level TV {metrics['level_tv']}; "
        f"token predictions vs exact posterior: mean TV {metrics['prediction_tv_mean']:.4f}"
    )
    if out_dir is not None:
        weights_file, card_file = save_text_model(model, out_dir)
        emit(f"wrote {weights_file} and {card_file}")
        model.card = load_card(name, out_dir)
    return model, model.card
