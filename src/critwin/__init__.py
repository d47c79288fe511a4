"""critwin: critical windows in diffusion models.

One clock everywhere: OU time ``t`` with ``X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z``.

Every public name is resolved on first use (PEP 562, see ``__getattr__``): ``import critwin`` imports
neither torch nor scipy, so the command line (``critwin --help``, option errors) starts at once, and
``critwin.GaussianMixture`` costs the import of its own module the first time it is read. ``_EXPORTS``
names the module of each public name (``tests/test_cli_startup.py`` checks that ``import critwin`` stays
light).
"""

from __future__ import annotations

from critwin._lazy import lazy_exports
from critwin._version import __version__

_MODULE_EXPORTS = {
    "critwin._memory": ("memory_limit", "set_memory_limit"),
    "critwin.clock": (
        "DiscreteSchedule",
        "alpha_bar",
        "alpha_sigma",
        "flow_s",
        "karras_sigmas",
        "log_snr",
        "ou_time",
        "snr",
        "time_grid",
        "ve_sigma",
    ),
    "critwin.mixtures": ("CategoricalMixture", "EmpiricalMixture", "GaussianMixture"),
    "critwin.samplers": (
        "SAMPLERS",
        "sample_ddim",
        "sample_ddpm",
        "sample_euler_maruyama",
        "sample_exact",
        "sample_exponential",
        "sample_heun",
    ),
    "critwin.io_mixture": ("load_mixture", "save_mixture"),
    "critwin.theory.divergence": (
        "Estimate",
        "TVCurve",
        "bhattacharyya_gaussians",
        "hellinger_gaussians",
        "kl_gaussians",
        "overlap_bound",
        "pinsker_bound",
        "tv",
        "tv_bounds_gaussians",
        "tv_gaussians",
    ),
    "critwin.theory.windows": (
        "TransitionTimes",
        "Window",
        "critical_window",
        "theorem_bound",
        "transition_times",
    ),
    "critwin.theory.tree": ("Tree", "hierarchy"),
    "critwin.theory.closed_forms": (
        "ClosedFormTimes",
        "log_concave_times",
        "window_isotropic",
        "window_two_gaussians",
    ),
    "critwin.theory.validate": ("forward_reverse_tv",),
    "critwin.theory.discrete": ("CategoricalTVCurve", "categorical_tv"),
    "critwin.theory.discrete_closed_forms": (
        "random_walk_modes",
        "window_prefix_split",
        "window_random_walk",
        "window_two_strings",
    ),
    "critwin.experiments.process": ("DiscreteProcess", "MixtureProcess", "ReverseProcess"),
    "critwin.experiments.callable_process": ("CallableProcess",),
    "critwin.experiments.forward_reverse": ("ForwardReverseResult", "forward_reverse"),
    "critwin.experiments.cloning": ("CloneResult", "clone"),
    "critwin.experiments.estimation": (
        "WindowEstimate",
        "commitment_curve",
        "estimate_window",
        "susceptibility",
    ),
    "critwin.experiments.search": ("SearchResult", "search_window"),
    "critwin.experiments.token_process": (
        "AutoregressiveProcess",
        "CategoricalProcess",
        "MaskedDiffusionProcess",
    ),
    "critwin.experiments.features": ("SourceSimilarity", "zero_shot_clip"),
    # These import diffusers (adapters, models) or the models (diagnostics): about 2 s more.
    "critwin.adapters.diffusers": ("DiffusersProcess", "from_pipeline", "load_local"),
    "critwin.models.digits": ("DigitsModel", "load_digits_model", "train_digits"),
    "critwin.models.classifier": ("classifier_feature", "load_classifier"),
    "critwin.models.data": ("load_digits_data", "nearest_neighbour_distance"),
    "critwin.diagnostics.privacy": ("membership_audit",),
    "critwin.diagnostics.fairness": ("rebalance",),
    "critwin.diagnostics.feature_atlas": ("AtlasResult", "atlas"),
    "critwin.diagnostics.prompt_sampling": ("PromptModel",),
    "critwin.diagnostics.prompt_fairness": ("prompt_fairness",),
    "critwin.diagnostics.prompt_privacy": ("PromptSets", "memorisation_audit"),
}

_EXPORTS = {name: module for module, names in _MODULE_EXPORTS.items() for name in names}
"""Every public name -> the module it lives in (imported when the name is first read)."""

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports("critwin", _EXPORTS, globals())
