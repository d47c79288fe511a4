"""A small pre-norm transformer over token sequences, bidirectional (masked diffusion) or causal.

Plain PyTorch (``torch.nn.TransformerEncoderLayer``): the shipped text models need no extra dependency
and load in milliseconds. The same module is the masked-diffusion denoiser (inputs: the ``V`` tokens and
the mask id ``V``; outputs: logits of the ``V`` clean tokens at every position) and the autoregressive
language model (inputs: a beginning-of-sequence id ``V`` and the tokens; a causal mask; output ``j``
scores token ``j``).
"""

from __future__ import annotations

import torch
from torch import nn

from critwin._memory import check_memory, transformer_bytes
from critwin._validation import check_positive_int

__all__ = ["TokenTransformer"]


class TokenTransformer(nn.Module):
    """Token embedding + learned positions, ``layers`` pre-norm transformer blocks, a linear head.

    Parameters
    ----------
    n_inputs : input ids ``0..n_inputs-1`` (tokens plus the mask or beginning-of-sequence id).
    n_outputs : logits per position (the vocabulary).
    length : the most positions a call may hold.
    width, heads, layers : model width (a multiple of ``heads``), attention heads, blocks.
    causal : position ``j`` attends to positions ``<= j`` only (an autoregressive model).

    Examples
    --------
    >>> net = TokenTransformer(9, 8, length=8, width=16, heads=2, layers=1)
    >>> net(torch.zeros(3, 8, dtype=torch.long)).shape
    torch.Size([3, 8, 8])
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        length: int,
        width: int = 64,
        heads: int = 4,
        layers: int = 2,
        causal: bool = False,
    ):
        super().__init__()
        self.length = check_positive_int(length, "length")
        width, heads = check_positive_int(width, "width"), check_positive_int(heads, "heads")
        if width % heads:
            raise ValueError(f"width must be a multiple of heads, got width={width}, heads={heads}")
        self.causal = bool(causal)
        n_inputs, n_outputs = (
            check_positive_int(n_inputs, "n_inputs"),
            check_positive_int(n_outputs, "n_outputs"),
        )
        layers = check_positive_int(layers, "layers")
        check_memory(
            transformer_bytes(width, layers, n_inputs + n_outputs, self.length),
            f"a TokenTransformer of width={width}, layers={layers}, length={self.length}, "
            f"n_inputs={n_inputs} and n_outputs={n_outputs}",
        )
        self.embed = nn.Embedding(n_inputs, width)
        self.position = nn.Parameter(0.02 * torch.randn(self.length, width))
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, k) long ids, ``k <= length`` -> (n, k, n_outputs) logits."""
        k = tokens.shape[1]
        if k > self.length:
            raise ValueError(f"tokens has {k} positions; the network holds at most {self.length}")
        h = self.embed(tokens) + self.position[:k]
        mask = (
            nn.Transformer.generate_square_subsequent_mask(k, device=tokens.device) if self.causal else None
        )
        h = self.blocks(h, mask=mask, is_causal=self.causal)
        return self.head(self.norm(h))
