"""critwin: critical windows in diffusion models.

One clock everywhere: OU time ``t`` with ``X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z``.

Public names are imported lazily so that ``import critwin`` stays fast and optional
dependencies (diffusers, matplotlib) load only when used.
"""

from __future__ import annotations

from critwin._lazy import lazy_exports

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
    "TVCurve": "critwin.divergence",
    "tv_gaussians": "critwin.divergence",
    "kl_gaussians": "critwin.divergence",
    "bhattacharyya_gaussians": "critwin.divergence",
    "hellinger_gaussians": "critwin.divergence",
    "tv_bounds_gaussians": "critwin.divergence",
    "pinsker_bound": "critwin.divergence",
    "overlap_bound": "critwin.divergence",
    "transition_times": "critwin.windows",
    "critical_window": "critwin.windows",
    "TransitionTimes": "critwin.windows",
    "Window": "critwin.windows",
    "theorem_bound": "critwin.windows",
    "window_two_gaussians": "critwin.closed_forms",
    "window_isotropic": "critwin.closed_forms",
    "log_concave_times": "critwin.closed_forms",
    "ClosedFormTimes": "critwin.closed_forms",
    "hierarchy": "critwin.tree",
    "Tree": "critwin.tree",
    "load_mixture": "critwin.io_mixture",
    "save_mixture": "critwin.io_mixture",
    "forward_reverse_tv": "critwin.experiments.validate",
    # experiments
    "ReverseProcess": "critwin.experiments.process",
    "MixtureProcess": "critwin.experiments.process",
    "forward_reverse": "critwin.experiments.forward_reverse",
    "clone": "critwin.experiments.cloning",
    "DiscreteProcess": "critwin.experiments.process",
    "ForwardReverseResult": "critwin.experiments.forward_reverse",
    "CloneResult": "critwin.experiments.cloning",
    "estimate_window": "critwin.experiments.estimation",
    "WindowEstimate": "critwin.experiments.estimation",
    "commitment_curve": "critwin.experiments.estimation",
    "susceptibility": "critwin.experiments.estimation",
    "search_window": "critwin.experiments.search",
    "SearchResult": "critwin.experiments.search",
    # models and adapters
    "DiffusersProcess": "critwin.adapters.diffusers",
    "from_pipeline": "critwin.adapters.diffusers",
    "load_local": "critwin.adapters.diffusers",
    "SourceSimilarity": "critwin.features",
    "DigitsModel": "critwin.models.digits",
    "load_digits_model": "critwin.models.digits",
    "train_digits": "critwin.models.digits",
    "load_classifier": "critwin.models.classifier",
    "classifier_feature": "critwin.models.classifier",
    "load_digits_data": "critwin.models.data",
    "nearest_neighbour_distance": "critwin.models.data",
    # diagnostics
    "membership_audit": "critwin.diagnostics.privacy",
    "rebalance": "critwin.diagnostics.fairness",
    "zero_shot_clip": "critwin.features",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports("critwin", _EXPORTS, globals())
