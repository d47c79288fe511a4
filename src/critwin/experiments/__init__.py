"""Experiments: reverse processes, forward–reverse, cloning, window estimation, adaptive search.

- ``process``: :class:`ReverseProcess` (the interface), :class:`MixtureProcess` (exact mixtures with
  critwin's samplers or exact posterior draws), :class:`DiscreteProcess` (DDIM/DDPM on a discrete VP
  schedule over any denoiser); :func:`as_process`, :func:`realise_times` (requested OU times on a
  process's grid) and the other input checks of the experiments.
- ``token_process``: processes over token sequences on a discrete clock (``process.clock``: ``"kappa"``
  masking level, ``"hidden"`` positions at the end): :class:`MaskedDiffusionProcess` (any callable
  ``logits = model(tokens_with_masks)``, MDLM's ancestral sampler), :class:`AutoregressiveProcess` (any
  causal LM callable), :class:`CategoricalProcess` (a ``CategoricalMixture`` sampled exactly).
- ``callable_process``: :class:`CallableProcess` (any callable denoiser, EDM/k-diffusion ``D(x, sigma)``
  or OU ``D(y, t)``, on a Karras grid) and :func:`karras_sigmas`.
- ``forward_reverse``: ``forward_reverse(model, x0, times, n_per_time, feature, sampler=None,
  generator=None, seed=None, out=DIR, cond=None) -> ForwardReverseResult``.
- ``cloning``: ``clone(model, n_trajectories, times, n_clones, feature, ...) -> CloneResult``.
- ``estimation``: ``estimate_window(result, delta=0.1, ...) -> WindowEstimate`` (Wilson and bootstrap
  CIs, isotonic fit, Blink's jump rule, per-class breakdown, susceptibility).
- ``search``: ``search_window(model, x0, feature, delta=0.1, resolution=0.05, ...) -> SearchResult``.
- ``features``: image features (:class:`SourceSimilarity`, :func:`zero_shot_clip` ...) and the one
  validator of feature outputs (:func:`apply_feature`).
- ``executor``: where a sweep's units run: :class:`LocalExecutor` (this process, the default) or
  :class:`RayExecutor` (Ray tasks; ``executor="ray"`` on every sweep, extra ``critwin[ray]``).
- ``checkpoint``: unit seeds, checkpoint directories (``config.json`` + ``units/``), resume checks.
- ``results``: :class:`ResultTable`, the base of the result classes, and their csv/JSON files.

This package is the public API of the experiments (the diagnostics use only these names and the public
modules). The function ``forward_reverse`` is not re-exported here: it would shadow its module
``critwin.experiments.forward_reverse``; import it from that module (or as ``critwin.forward_reverse``).
"""

from critwin.experiments.callable_process import CallableProcess, karras_sigmas
from critwin.experiments.checkpoint import (
    SweepStore,
    cached_unit,
    check_resumable,
    progress_bar,
    unit_generator,
)
from critwin.experiments.cloning import CloneResult, clone
from critwin.experiments.estimation import (
    CommitmentCurve,
    ConstantFeatureError,
    WindowEstimate,
    base_rate,
    commitment_curve,
    crossing_time,
    estimate_window,
    isotonic_decreasing,
    jump_rule,
    susceptibility,
    wilson_interval,
)
from critwin.experiments.executor import Executor, LocalExecutor, RayExecutor
from critwin.experiments.features import (
    CallableFeature,
    SourceSimilarity,
    ZeroShotClassifier,
    apply_feature,
    check_feature_output,
    feature_name,
    resolve_feature,
    zero_shot_clip,
)
from critwin.experiments.forward_reverse import ForwardReverseResult
from critwin.experiments.process import (
    DiscreteProcess,
    MixtureProcess,
    RealisedTimes,
    ReverseProcess,
    as_process,
    realise_times,
)
from critwin.experiments.results import ResultTable
from critwin.experiments.search import SearchResult, search_window
from critwin.experiments.token_process import (
    AutoregressiveProcess,
    CategoricalProcess,
    MaskedDiffusionProcess,
    TokenProcess,
)

__all__ = [
    "CallableProcess",
    "karras_sigmas",
    "SweepStore",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "cached_unit",
    "check_resumable",
    "progress_bar",
    "unit_generator",
    "CloneResult",
    "clone",
    "CommitmentCurve",
    "ConstantFeatureError",
    "WindowEstimate",
    "base_rate",
    "commitment_curve",
    "crossing_time",
    "estimate_window",
    "isotonic_decreasing",
    "jump_rule",
    "susceptibility",
    "wilson_interval",
    "CallableFeature",
    "SourceSimilarity",
    "ZeroShotClassifier",
    "apply_feature",
    "check_feature_output",
    "feature_name",
    "resolve_feature",
    "zero_shot_clip",
    "ForwardReverseResult",
    "DiscreteProcess",
    "MixtureProcess",
    "RealisedTimes",
    "ReverseProcess",
    "as_process",
    "realise_times",
    "ResultTable",
    "SearchResult",
    "search_window",
    "AutoregressiveProcess",
    "CategoricalProcess",
    "MaskedDiffusionProcess",
    "TokenProcess",
]
