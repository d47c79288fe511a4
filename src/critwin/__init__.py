"""critwin: critical windows in diffusion models.

One clock everywhere: OU time ``t`` with ``X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z``.

The core, theory and experiments are imported plainly. Names from the adapters, models and diagnostics
are resolved on first use (see ``__getattr__``): they import diffusers, which alone costs ~2 s.
"""

from __future__ import annotations

import importlib
import sys

from critwin._memory import memory_limit, set_memory_limit
from critwin._version import __version__
from critwin.clock import (
    DiscreteSchedule,
    alpha_bar,
    alpha_sigma,
    flow_s,
    log_snr,
    ou_time,
    snr,
    time_grid,
    ve_sigma,
)
from critwin.experiments.callable_process import CallableProcess, karras_sigmas
from critwin.experiments.cloning import CloneResult, clone
from critwin.experiments.estimation import WindowEstimate, commitment_curve, estimate_window, susceptibility
from critwin.experiments.features import SourceSimilarity, zero_shot_clip
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.process import DiscreteProcess, MixtureProcess, ReverseProcess
from critwin.experiments.search import SearchResult, search_window
from critwin.io_mixture import load_mixture, save_mixture
from critwin.mixtures import CategoricalMixture, EmpiricalMixture, GaussianMixture
from critwin.samplers import (
    SAMPLERS,
    sample_ddim,
    sample_ddpm,
    sample_euler_maruyama,
    sample_exact,
    sample_exponential,
    sample_heun,
)
from critwin.theory.closed_forms import (
    ClosedFormTimes,
    log_concave_times,
    window_isotropic,
    window_two_gaussians,
)
from critwin.theory.discrete import CategoricalTVCurve, categorical_tv
from critwin.theory.discrete_closed_forms import (
    random_walk_modes,
    window_prefix_split,
    window_random_walk,
    window_two_strings,
)
from critwin.theory.divergence import (
    Estimate,
    TVCurve,
    bhattacharyya_gaussians,
    hellinger_gaussians,
    kl_gaussians,
    overlap_bound,
    pinsker_bound,
    tv,
    tv_bounds_gaussians,
    tv_gaussians,
)
from critwin.theory.tree import Tree, hierarchy
from critwin.theory.validate import forward_reverse_tv
from critwin.theory.windows import TransitionTimes, Window, critical_window, theorem_bound, transition_times

# Resolved on first use: these modules import diffusers (adapters, models) or the models (diagnostics).
_LAZY = {
    "DiffusersProcess": "critwin.adapters.diffusers",
    "from_pipeline": "critwin.adapters.diffusers",
    "load_local": "critwin.adapters.diffusers",
    "DigitsModel": "critwin.models.digits",
    "load_digits_model": "critwin.models.digits",
    "train_digits": "critwin.models.digits",
    "load_classifier": "critwin.models.classifier",
    "classifier_feature": "critwin.models.classifier",
    "load_digits_data": "critwin.models.data",
    "nearest_neighbour_distance": "critwin.models.data",
    "membership_audit": "critwin.diagnostics.privacy",
    "rebalance": "critwin.diagnostics.fairness",
    "atlas": "critwin.diagnostics.feature_atlas",
    "AtlasResult": "critwin.diagnostics.feature_atlas",
}

__all__ = [
    "CallableProcess",
    "CategoricalMixture",
    "CategoricalTVCurve",
    "ClosedFormTimes",
    "CloneResult",
    "DiscreteProcess",
    "DiscreteSchedule",
    "EmpiricalMixture",
    "Estimate",
    "ForwardReverseResult",
    "GaussianMixture",
    "MixtureProcess",
    "ReverseProcess",
    "SAMPLERS",
    "SearchResult",
    "SourceSimilarity",
    "TVCurve",
    "TransitionTimes",
    "Tree",
    "Window",
    "WindowEstimate",
    "alpha_bar",
    "alpha_sigma",
    "bhattacharyya_gaussians",
    "categorical_tv",
    "clone",
    "commitment_curve",
    "critical_window",
    "estimate_window",
    "flow_s",
    "forward_reverse",
    "forward_reverse_tv",
    "hellinger_gaussians",
    "hierarchy",
    "karras_sigmas",
    "kl_gaussians",
    "load_mixture",
    "log_concave_times",
    "log_snr",
    "memory_limit",
    "ou_time",
    "overlap_bound",
    "pinsker_bound",
    "random_walk_modes",
    "sample_ddim",
    "sample_ddpm",
    "sample_euler_maruyama",
    "sample_exact",
    "sample_exponential",
    "sample_heun",
    "save_mixture",
    "search_window",
    "set_memory_limit",
    "snr",
    "susceptibility",
    "theorem_bound",
    "time_grid",
    "transition_times",
    "tv",
    "tv_bounds_gaussians",
    "tv_gaussians",
    "ve_sigma",
    "window_isotropic",
    "window_prefix_split",
    "window_random_walk",
    "window_two_gaussians",
    "window_two_strings",
    "zero_shot_clip",
    # resolved on first use (_LAZY)
    "AtlasResult",
    "atlas",
    "DiffusersProcess",
    "DigitsModel",
    "classifier_feature",
    "from_pipeline",
    "load_classifier",
    "load_digits_data",
    "load_digits_model",
    "load_local",
    "membership_audit",
    "nearest_neighbour_distance",
    "rebalance",
    "train_digits",
    "__version__",
]

_EAGER_MODULES = (
    "critwin._memory",
    "critwin.clock",
    "critwin.mixtures",
    "critwin.samplers",
    "critwin.theory.divergence",
    "critwin.theory.windows",
    "critwin.theory.tree",
    "critwin.io_mixture",
    "critwin.theory.closed_forms",
    "critwin.theory.validate",
    "critwin.theory.discrete",
    "critwin.theory.discrete_closed_forms",
    "critwin.experiments.process",
    "critwin.experiments.forward_reverse",
    "critwin.experiments.cloning",
    "critwin.experiments.estimation",
    "critwin.experiments.search",
    "critwin.experiments.features",
)

_EXPORTS = {
    name: module
    for module in _EAGER_MODULES
    for name in sys.modules[module].__all__
    if name in __all__ and globals()[name] is getattr(sys.modules[module], name)
} | _LAZY
"""Every public name -> the module it lives in (the plain imports above, then the lazy ones)."""


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'critwin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__():
    return __all__
