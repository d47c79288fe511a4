"""A trained text model on the Random Hierarchy Model: its network, config, card, and its process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from critwin._memory import check_memory
from critwin._validation import check_device, check_positive_int
from critwin.experiments.token_process import AutoregressiveProcess, MaskedDiffusionProcess, TokenProcess
from critwin.models._store import save_weights
from critwin.models._training import load_unet
from critwin.models.text.config import MODEL_NAMES, TextConfig
from critwin.models.text.network import TokenTransformer

__all__ = ["TextModel", "build_network", "load_text_model", "save_text_model", "text_process"]


def build_network(config: TextConfig) -> TokenTransformer:
    """A freshly initialised network for ``config`` (initialised from the global RNG)."""
    return TokenTransformer(**config.network_kwargs())


class TextModel:
    """A trained masked-diffusion or autoregressive model of a :class:`RandomHierarchy` language.

    Parameters
    ----------
    network : :class:`~critwin.models.text.network.TokenTransformer` built from ``config``.
    config : the :class:`TextConfig` it was trained with.
    card : its model card, if loaded from disk.
    name : model name (file stem of its weights and card).
    """

    def __init__(
        self, network: TokenTransformer, config: TextConfig, card: dict | None = None, name: str = "rhm"
    ):
        self.network = network.eval().requires_grad_(False)
        self.config = config
        self.card = card or {}
        self.name = name
        self.grammar = config.load_data()

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def __repr__(self) -> str:
        return f"TextModel(name={self.name!r}, kind={self.kind}, parameters={self.num_parameters})"

    def process(self, n_steps: int | None = None, device=None) -> TokenProcess:
        """This model as a process: :class:`MaskedDiffusionProcess` (``n_steps`` kappa steps; default the
        config's ``sampler_steps``) or :class:`AutoregressiveProcess` (one step per token, sampling from the
        softmax; the beginning-of-sequence id is ``vocab_size``).

        Parameters
        ----------
        n_steps : masked diffusion only.
        device : where the network runs (it is moved there).
        """
        device = None if device is None else check_device(device)
        network = self.network.to(device) if device is not None else self.network
        V, L = self.config.vocab_size, self.grammar.length
        label = f"critwin/{self.name}"
        if self.kind == "masked":
            steps = self.config.sampler_steps if n_steps is None else check_positive_int(n_steps, "n_steps")
            return MaskedDiffusionProcess(
                network, L, V, n_steps=steps, sampler=self.config.sampler, name=label, device=device
            )
        if n_steps is not None:
            raise ValueError(
                f"n_steps does not apply to the autoregressive model {self.name!r} (one step per token)"
            )
        return AutoregressiveProcess(network, L, V, prompt=[V], name=label, device=device)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, batch_size: int = 2048
    ) -> torch.Tensor:
        """(n, L) long strings generated from the fully hidden state."""
        n = check_positive_int(n, "n")
        length = self.grammar.length
        check_memory(2 * 8 * n * length, f"sample(n={n}) of strings of {length} tokens")  # chunks and result
        process = self.process()
        chunks = []
        for start in range(0, n, batch_size):
            x = process.prior(min(batch_size, n - start))
            chunks.append(process.run(x, generator=generator))
        return torch.cat(chunks)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "parameters": self.num_parameters, "config": self.config.to_dict()}


def save_text_model(model: TextModel, directory) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (the network's EMA weights) and ``<name>.json`` (its card)."""
    if not model.card:
        raise ValueError("model has no card; train_text_model builds one before saving")
    return save_weights(model.name, model.network.state_dict(), model.card, directory)


def load_text_model(name: str = "rhm-mdm", directory: str | os.PathLike | None = None) -> TextModel:
    """Load a text model (``"rhm-mdm"``, ``"rhm-ar"``, or the stem of your own files in ``directory``).

    Returns
    -------
    TextModel in eval mode, with ``.card`` set (SHA-256-checked weights).
    """
    network, config, card = load_unet(name, directory, MODEL_NAMES, TextConfig, build_network)
    return TextModel(network, config, card=card, name=name)


def text_process(name: str, n_steps: int | None = None, device=None, directory=None) -> TokenProcess:
    """A shipped (or ``directory``'s) text model as its process (``critwin sweep --model rhm-mdm``)."""
    device = None if device is None else check_device(device)  # before the model loads
    return load_text_model(name, directory).process(n_steps, device=device)
