"""Windows do not depend on the parameterisation: the same digits, trained as epsilon, v and flow models.

A critical window is a property of the data distribution, so models trained on the same data with
different parameterisations should show the same class window in OU time. Each shipped digits model is
run through the diffusers adapter with its own sampler (DDPM for epsilon and v-prediction, flow Euler for
rectified flow) on its own grid of OU times, from the same held-out digits; :func:`estimate_window` gives
each window with bootstrap intervals, and :func:`paired_t_half_difference` the paired difference of t½
to the epsilon model (per digit and pooled). Used by ``critwin demo`` (section 5) and
``benchmarks/bench_parameterisation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.models._store import SHIPPED_MODELS
from critwin.models.classifier import classifier_feature
from critwin.models.digits import DigitsModel, load_digits_model
from critwin.report.sections import DemoSizes, DigitsSection, finite, grid_times, paired_t_half_difference

__all__ = [
    "REFERENCE",
    "PARAMETERISED_MODELS",
    "ModelWindow",
    "InvarianceSection",
    "compared_models",
    "measure_window",
    "compare_parameterisations",
    "invariance_section",
]

REFERENCE = "digits"
"""The epsilon-prediction DDPM every other parameterisation is compared with."""

PARAMETERISED_MODELS = ("digits-flow", "digits-v")
"""The same network, data and training run with the rectified-flow and the v-prediction objective."""

FEATURE_LABEL = "shipped digit classifier"


def compared_models() -> tuple[str, ...]:
    """:data:`REFERENCE` then the models of :data:`PARAMETERISED_MODELS` that are shipped."""
    return (REFERENCE,) + tuple(name for name in PARAMETERISED_MODELS if name in SHIPPED_MODELS)


@dataclass
class ModelWindow:
    """One model's forward–reverse sweep and its window estimate."""

    name: str
    parameterisation: str
    card_accuracy: float | None
    process: Any
    fr: ForwardReverseResult
    est: WindowEstimate

    def summary(self) -> dict[str, Any]:
        est = self.est
        return {
            "parameterisation": self.parameterisation,
            "scheduler": type(self.process.scheduler).__name__,
            "card_conditional_accuracy": self.card_accuracy,
            "times": est.times.tolist(),
            "c": est.c.tolist(),
            "c_lower": est.c_lower.tolist(),
            "c_upper": est.c_upper.tolist(),
            "base_rate": float(est.b),
            "t_half": finite(est.t_half),
            "t_half_ci": [finite(v) for v in est.t_half_ci],
            "t_after": finite(est.t_after),
            "t_after_ci": [finite(v) for v in est.t_after_ci],
            "t_before": finite(est.t_before),
            "t_before_ci": [finite(v) for v in est.t_before_ci],
            "network_evaluations": self.fr.nfe,
        }


def measure_window(
    model: str | DigitsModel,
    x0: torch.Tensor,
    *,
    n_times: int,
    inference_steps: int,
    n_boot: int,
    seed: int,
    generator: torch.Generator,
    progress: bool = False,
) -> ModelWindow:
    """Forward–reverse on a digits model (or shipped model name) with its own sampler; its window (delta 0.1).

    ``n_times`` OU times spread in log-SNR over the model's own grid (:func:`grid_times`); one run per
    source and time, read by the shipped classifier.
    """
    model = load_digits_model(model) if isinstance(model, str) else model
    process = model.process(num_inference_steps=inference_steps)
    times = grid_times(process, n_times)
    fr = forward_reverse(
        process,
        x0,
        times,
        n_per_time=1,
        feature=classifier_feature(),
        seed=seed,
        progress=progress,
        feature_label=FEATURE_LABEL,
    )
    est = estimate_window(fr, delta=0.1, n_boot=n_boot, generator=generator)
    accuracy = model.card.get("conditional_accuracy")
    return ModelWindow(model.name, model.config.parameterisation, accuracy, process, fr, est)


@dataclass
class InvarianceSection:
    """Each model's window and the paired t½ differences to the first (per digit and ``"all"``)."""

    windows: dict[str, ModelWindow]
    differences: dict[str, dict]

    @property
    def reference(self) -> str:
        return next(iter(self.windows))

    def verdict(self) -> dict[str, str]:
        """Per compared model: ``"agree"`` when the pooled difference's 95% interval contains 0."""
        out = {}
        for name, diff in self.differences.items():
            lo, hi = diff["all"]["ci"]
            if lo is None or hi is None:
                out[name] = "undetermined"
            else:
                out[name] = "agree" if lo <= 0 <= hi else "differ"
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "models": {name: w.summary() for name, w in self.windows.items()},
            "t_half_difference": self.differences,
            "difference_interval": "paired bootstrap over sources, stratified by digit (percentile); "
            "'all': t½ pooled over digits",
            "verdict": self.verdict(),
            "digits_agreeing": {
                name: int(sum(_contains_zero(d["ci"]) for k, d in diff.items() if k != "all"))
                for name, diff in self.differences.items()
            },
        }


def _contains_zero(ci) -> bool:
    lo, hi = ci
    return lo is not None and hi is not None and lo <= 0 <= hi


def compare_parameterisations(
    x0: torch.Tensor,
    *,
    n_times: int,
    inference_steps: int,
    n_boot: int,
    seed: int,
    models: tuple | None = None,
    reference: ModelWindow | None = None,
    progress: bool = False,
) -> InvarianceSection:
    """Windows of ``models`` from the sources ``x0``, and their paired t½ differences to the first.

    Parameters
    ----------
    x0 : (N, 1, 8, 8) held-out digits, the sources of every sweep.
    n_times, inference_steps, n_boot, seed : as :func:`measure_window`.
    models : shipped model names or :class:`DigitsModel` objects (distinct names), the reference first;
        default :func:`compared_models`. Needs at least one.
    reference : the first model's sweep, already measured from the same ``x0`` (the demo's section 2).
    """
    models = compared_models() if models is None else tuple(models)
    names = [m if isinstance(m, str) else getattr(m, "name", None) for m in models]
    if not models or len(set(names)) != len(names):
        raise ValueError(f"models must be one or more models with distinct names, got {names}")
    if reference is not None and reference.name != names[0]:
        raise ValueError(f"reference is a sweep of {reference.name!r}, not of the first model {names[0]!r}")
    g = torch.Generator().manual_seed(seed)
    windows = {} if reference is None else {reference.name: reference}
    for name, model in zip(names, models, strict=True):
        if name not in windows:
            windows[name] = measure_window(
                model,
                x0,
                n_times=n_times,
                inference_steps=inference_steps,
                n_boot=n_boot,
                seed=seed,
                generator=g,
                progress=progress,
            )
    base = windows[names[0]].fr
    differences = {
        name: paired_t_half_difference(windows[name].fr, base, n_boot, g, names=(name, names[0]), pooled=True)
        for name in names[1:]
    }
    return InvarianceSection(windows, differences)


def invariance_section(
    sizes: DemoSizes, seed: int, digits: DigitsSection, progress: bool
) -> InvarianceSection:
    """The demo's section: section 2's epsilon sweep as the reference, the other shipped models measured
    from the same sources with the same sizes."""
    reference = ModelWindow(
        REFERENCE,
        digits.model.config.parameterisation,
        digits.model.card.get("conditional_accuracy"),
        digits.process,
        digits.fr,
        digits.est,
    )
    return compare_parameterisations(
        digits.sources,
        models=compared_models(),
        n_times=sizes.fr_grid,
        inference_steps=sizes.inference_steps,
        n_boot=sizes.n_boot,
        seed=seed,
        reference=reference,
        progress=progress,
    )
