"""What both mixture families do with their component weights: the checks of given weights, the
properties read from the stored log-weights, and the renormalised weights of a sub-mixture."""

from __future__ import annotations

import torch

__all__ = ["WeightedComponents", "check_weight_sum", "renormalised"]


def check_weight_sum(w: torch.Tensor) -> float:
    """The sum of the weights ``w`` (K,); ValueError naming ``weights`` unless they are non-negative and
    sum to 1 (within 1e-5)."""
    if (w < 0).any():
        raise ValueError(f"weights must be non-negative, got a negative weight {w.min().item():.4g}")
    total = float(w.sum())
    if abs(total - 1.0) > 1e-5:
        raise ValueError(f"weights must sum to 1, got sum {total:.6g} (normalise them first)")
    return total


def renormalised(log_weights: torch.Tensor, components: list[int]) -> torch.Tensor:
    """The log-weights of the sub-mixture over ``components`` (``log_weights`` are theirs), normalised to
    sum to 1; ValueError when they all have zero weight."""
    if torch.isinf(log_weights).all():
        raise ValueError(f"components {components} all have zero weight; the sub-mixture is undefined")
    return log_weights - torch.logsumexp(log_weights, 0)


class WeightedComponents:
    """Mixin of the mixtures: the weight properties of the (K,) log-weights ``self._log_weights``."""

    _log_weights: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        """(K,) mixture weights."""
        return self._log_weights.exp()

    @property
    def log_weights(self) -> torch.Tensor:
        return self._log_weights

    @property
    def n_components(self) -> int:
        return self._log_weights.shape[0]
