"""Quality figures computed the same way for every fairness method: a kernel distance and caption adherence.

- :func:`kernel_distance` is the KID of Bińkowski et al. (2018): the unbiased estimate of the squared
  maximum mean discrepancy with the cubic polynomial kernel ``k(a, b) = (a . b / d + 1)^3`` between the
  features of the generated images and of reference images, in the feature space of a classifier
  (:func:`classifier_embedding`: the shapes classifier's penultimate layer). 0 when both laws agree (the
  unbiased estimate may fall slightly below 0). Its interval is ``KID +- z * se`` with ``se`` the
  jackknife standard error over the generated images (the reference is a fixed, seeded draw), so it
  always contains the estimate.
- :func:`caption_adherence`: the share of images whose attributes, read by the judges, are all those
  the prompt names, with a Wilson interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from scipy.stats import norm

from critwin.experiments import apply_feature
from critwin.experiments.estimation import wilson_interval

__all__ = ["kernel_distance", "classifier_embedding", "caption_adherence"]


def classifier_embedding(classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """The penultimate activations of a :class:`~critwin.models.classifier.DigitClassifier` (its head
    without the last layer): ``embed(x) -> (n, 64)`` for images ``(n, C, S, S)``."""

    @torch.no_grad()
    def embed(x: torch.Tensor) -> torch.Tensor:
        was_training = classifier.training
        classifier.eval()
        try:
            param = next(classifier.parameters())
            return classifier.head[:-1](classifier.features(x.to(param))).float().cpu()
        finally:
            classifier.train(was_training)

    return embed


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kernel_distance(features, reference, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Unbiased MMD² with the cubic polynomial kernel (KID) and its jackknife interval.

    Parameters
    ----------
    features : (n, d) features of the generated images (n >= 3).
    reference : (m, d) features of reference images (m >= 2).
    level : confidence level of the interval.

    Returns
    -------
    (kid, (lower, upper))

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> same, _ = kernel_distance(rng.normal(size=(200, 4)), rng.normal(size=(300, 4)))
    >>> shifted, _ = kernel_distance(rng.normal(size=(200, 4)) + 1.0, rng.normal(size=(300, 4)))
    >>> abs(same) < 0.05 < shifted
    True
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.shape[0] < 3 or y.shape[0] < 2:
        raise ValueError("features (n >= 3, d) and reference (m >= 2, d) must be 2-d with the same d")
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    np.fill_diagonal(kxx, 0.0)
    rows_xx, rows_xy = kxx.sum(1), kxy.sum(1)
    within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    kid = kxx.sum() / (n * (n - 1)) + within_y - 2 * kxy.sum() / (n * m)
    # Leave-one-out estimates (generated image i removed), from the row sums.
    loo = (
        (kxx.sum() - 2 * rows_xx) / ((n - 1) * (n - 2)) + within_y - 2 * (kxy.sum() - rows_xy) / ((n - 1) * m)
    )
    se = float(np.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum()))
    half = float(norm.ppf(0.5 + level / 2)) * se
    return float(kid), (float(kid) - half, float(kid) + half)


def caption_adherence(
    images: torch.Tensor, specified: Mapping[str, int], judges: Mapping, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """Share of ``images`` whose judged attributes are every value the prompt names, and its Wilson interval.

    Parameters
    ----------
    images : (n, ...) generated images.
    specified : attribute -> label the prompt names (empty: every image adheres).
    judges : attribute -> reader (independent of any selector).
    level : confidence level.
    """
    n = int(images.shape[0])
    ok = np.ones(n, dtype=bool)
    for name, value in specified.items():
        if name not in judges:
            raise ValueError(f"specified names {name!r}, which no judge reads ({', '.join(judges)})")
        ok &= apply_feature(judges[name], images)[0].numpy() == int(value)
    low, high = wilson_interval(ok.sum(), n, level)
    return float(ok.mean()), (float(low), float(high))
