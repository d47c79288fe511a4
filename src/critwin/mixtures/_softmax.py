"""The in-place row softmax of :meth:`critwin.mixtures.GaussianMixture.score_and_posterior`, which
flushes negligible probabilities to exactly 0 and says whether any row needed dividing."""

from __future__ import annotations

import math

import torch

__all__ = ["softmax_rows_"]


def softmax_rows_(logits: torch.Tensor, peaks: torch.Tensor) -> bool:
    """Softmax of each row of ``logits`` in place; each row's largest logit written into ``peaks``.
    Returns True when every row summed to exactly 1 (each is then left undivided: one-hot rows always
    do), False when the rows were divided by their sums.

    Probabilities below twice the dtype's smallest normal number (relative to the row's largest) are set
    to exactly 0: ``exp`` is 10-50x slower where its result is subnormal or underflows (and subnormal
    operands can slow the GEMM that follows). The absolute change is below ``2 * tiny``
    (2.4e-38 in float32, 4.5e-308 in float64). A row of NaN stays NaN.
    """
    tiny = torch.finfo(logits.dtype).tiny
    torch.amax(logits, dim=1, out=peaks)
    logits.sub_(peaks.unsqueeze(1)).clamp_(min=math.log(tiny) + 0.5).exp_()
    torch.threshold_(logits, 2 * tiny, 0.0)
    sums = logits.sum(1, keepdim=True)
    if bool((sums == 1).all()):
        return True
    logits.div_(sums)
    return False
