"""critwin: critical windows in diffusion models.

One clock everywhere: OU time ``t`` with ``X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z``.

Public names are imported lazily so that ``import critwin`` stays fast and optional
dependencies (diffusers, matplotlib) load only when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # clock / schedules
    "ou_time": "critwin.clock",
    "alpha_bar": "critwin.clock",
    "snr": "critwin.clock",
    "log_snr": "critwin.clock",
    "ve_sigma": "critwin.clock",
    "flow_s": "critwin.clock",
    "alpha_sigma": "critwin.clock",
    "DiscreteSchedule": "critwin.clock",
    "time_grid": "critwin.clock",
    # mixtures
    "GaussianMixture": "critwin.mixtures",
    "EmpiricalMixture": "critwin.mixtures",
    # exact-score reverse samplers
    "sample_ddim": "critwin.samplers",
    "sample_ddpm": "critwin.samplers",
    "sample_euler_maruyama": "critwin.samplers",
    "sample_exponential": "critwin.samplers",
    "sample_heun": "critwin.samplers",
    "sample_exact": "critwin.samplers",
    "SAMPLERS": "critwin.samplers",
    # divergences, windows, hierarchy
    "Estimate": "critwin.divergence",
    "tv": "critwin.divergence",
    "transition_times": "critwin.windows",
    "critical_window": "critwin.windows",
    "hierarchy": "critwin.tree",
    # experiments
    "ReverseProcess": "critwin.experiments.process",
    "MixtureProcess": "critwin.experiments.process",
    "forward_reverse": "critwin.experiments.forward_reverse",
    "clone": "critwin.experiments.cloning",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'critwin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
