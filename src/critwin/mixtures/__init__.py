"""Mixtures with exact diffusion: the laws the theory is about and the exact samplers of the engine.

``GaussianMixture`` (isotropic, diagonal or full covariances) and ``EmpiricalMixture`` (the Dirac
mixture of a finite data set) live in :mod:`critwin.mixtures.gaussian`; ``CategoricalMixture``
(mixtures of product-categorical laws over token sequences, with masking, uniform or autoregressive
noise) in :mod:`critwin.mixtures.categorical`.
"""

from critwin.mixtures.categorical import CategoricalMixture
from critwin.mixtures.gaussian import EmpiricalMixture, GaussianMixture

__all__ = ["GaussianMixture", "EmpiricalMixture", "CategoricalMixture"]
