"""Windows do not depend on the parameterisation: the same digits, trained as epsilon, v and flow models.

A critical window is a property of the data distribution, so models trained on the same data with
different parameterisations should show the same class window in OU time. Each run is one digits model
with one sampler, driven through the diffusers adapter on its own grid of OU times from the same held-out
digits and read by the shipped classifier; :func:`estimate_window` gives each window with bootstrap
intervals, and :func:`paired_t_half_difference` the paired difference of t½ between two runs (per digit
and pooled).

The samplers matter as much as the networks: DDPM (epsilon and v models) is stochastic, the flow
Euler sampler is a deterministic ODE, and a forward–reverse run through a deterministic map keeps more
of its source than one through the posterior. :func:`compared_runs` therefore pairs runs so that each
difference isolates one thing: the epsilon model with DDIM (a deterministic ODE sampler on the same
grid) against DDPM is the sampler alone; the flow model against epsilon-DDIM, and the v model against
epsilon-DDPM, are the parameterisation alone. Used by ``critwin demo`` (section 5) and
``benchmarks/bench_parameterisation.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from critwin._stats import interval_order
from critwin._validation import check_seed
from critwin.adapters.diffusers import scheduler_class
from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.models.classifier import classifier_feature
from critwin.models.digits import load_digits_model
from critwin.report.paired import paired_t_half_difference
from critwin.report.plan import REFERENCE, Pair, Run, compared_runs
from critwin.report.sections import (
    DemoSizes,
    DigitsSection,
    grid_times,
    window_dict,
)

__all__ = [
    "REFERENCE",
    "Run",
    "Pair",
    "ModelWindow",
    "InvarianceSection",
    "compared_runs",
    "measure_window",
    "compare_parameterisations",
    "bootstrap_generator",
    "invariance_section",
]

FEATURE_LABEL = "shipped digit classifier"


@dataclass
class ModelWindow:
    """One run's forward–reverse sweep and its window estimate."""

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
            **window_dict(est, self.process),
            "network_evaluations": self.fr.nfe,
        }


def measure_window(
    run: Run,
    x0: torch.Tensor,
    *,
    n_times: int,
    inference_steps: int,
    n_boot: int,
    seed: int,
    generator: torch.Generator,
    progress: bool = False,
) -> ModelWindow:
    """Forward–reverse of one run (model and sampler) and its window (delta 0.1).

    ``n_times`` OU times spread in log-SNR over the run's own grid (:func:`grid_times`); one run per
    source and time, read by the shipped classifier.
    """
    model = load_digits_model(run.model) if isinstance(run.model, str) else run.model
    scheduler = None if run.scheduler is None else model.scheduler_as(scheduler_class(run.scheduler))
    process = model.process(num_inference_steps=inference_steps, scheduler=scheduler)
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
    return ModelWindow(
        name=run.label,
        parameterisation=model.config.parameterisation,
        card_accuracy=accuracy,
        process=process,
        fr=fr,
        est=est,
    )


@dataclass
class InvarianceSection:
    """Each run's window, and per :class:`Pair` the paired t½ differences (per digit and ``"all"``)."""

    windows: dict[str, ModelWindow]
    pairs: list[Pair]
    differences: list[dict]

    def verdicts(self) -> list[str]:
        """Per pair, from the pooled difference's 95% interval (censored replicates kept as bounds, see
        :func:`paired_t_half_difference`) by the one tie rule (:func:`critwin._stats.interval_order`
        against 0): ``"differ"`` when it excludes 0 — also when its other end is a one-sided bound —,
        ``"agree"`` when it contains 0 with both ends finite, ``"undetermined"`` when it contains 0 and an
        end is infinite or missing (the censored replicates leave the difference unbounded)."""
        return [_verdict(diff["all"]["ci"]) for diff in self.differences]

    def summary(self) -> dict[str, Any]:
        return {
            "reference": next(iter(self.windows)),
            "runs": {name: w.summary() for name, w in self.windows.items()},
            "comparisons": [
                {
                    "run": pair.first,
                    "against": pair.second,
                    "isolates": pair.isolates,
                    "verdict": verdict,
                    "digits_agreeing": sum(_contains_zero(d["ci"]) for k, d in diff.items() if k != "all"),
                    "n_digits": len(diff) - 1,
                    "t_half_difference": diff,
                }
                for pair, diff, verdict in zip(self.pairs, self.differences, self.verdicts(), strict=True)
            ],
            "difference_interval": "paired bootstrap over sources, stratified by digit (percentile); "
            "'all': t½ pooled over digits; replicates with a censored t½ are kept as the bounds the "
            "censoring allows (an infinite end: a one-sided bound), their share in censored_share",
        }


def _verdict(ci) -> str:
    lo, hi = ci
    if interval_order(ci, (0.0, 0.0)) != 0:
        return "differ"
    finite = lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
    return "agree" if finite else "undetermined"


def _contains_zero(ci) -> bool:
    return _verdict(ci) == "agree"


def compare_parameterisations(
    x0: torch.Tensor,
    runs: list[Run],
    pairs: list[Pair],
    *,
    n_times: int,
    inference_steps: int,
    n_boot: int,
    seed: int,
    measured: dict[str, ModelWindow] | None = None,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> InvarianceSection:
    """Windows of ``runs`` from the sources ``x0``, and the paired t½ difference of each pair.

    Parameters
    ----------
    x0 : (N, 1, 8, 8) held-out digits, the sources of every sweep.
    runs : distinct runs (by label); the first is the reference of the report.
    pairs : labels of ``runs`` to difference.
    n_times, inference_steps, n_boot, seed : as :func:`measure_window`.
    measured : runs already measured from the same ``x0`` (label -> window), e.g. the demo's section 2.
    generator : the bootstrap generator (default: seeded with ``seed``). Each run measured here draws its
        bootstrap seed from it in turn, then the pairs do; see :func:`bootstrap_generator` for runs
        measured elsewhere.
    """
    labels = [run.label for run in runs]
    if not runs or len(set(labels)) != len(labels):
        raise ValueError(f"runs must be one or more runs with distinct labels, got {labels}")
    unknown = sorted(({p.first for p in pairs} | {p.second for p in pairs}) - set(labels))
    if unknown:
        raise ValueError(f"pairs name runs that are not in runs: {unknown}")
    g = torch.Generator().manual_seed(seed) if generator is None else generator
    windows = {}
    for run in runs:
        windows[run.label] = (measured or {}).get(run.label) or measure_window(
            run,
            x0,
            n_times=n_times,
            inference_steps=inference_steps,
            n_boot=n_boot,
            seed=seed,
            generator=g,
            progress=progress,
        )
    differences = [
        paired_t_half_difference(
            windows[p.first].fr, windows[p.second].fr, n_boot, g, names=(p.first, p.second), pooled=True
        )
        for p in pairs
    ]
    return InvarianceSection(windows, list(pairs), differences)


def bootstrap_generator(seed: int, runs_before: int) -> torch.Generator:
    """The bootstrap generator as :func:`compare_parameterisations` (seeded with ``seed``) holds it after
    measuring ``runs_before`` runs itself: each :func:`measure_window` draws one bootstrap seed from it.

    A run measured in another process with ``generator=bootstrap_generator(seed, i)`` (``i``: its place
    among the runs the call would measure) gets the bootstrap, and so the window and CIs, it would get
    inside one call; ``compare_parameterisations(..., measured=all_of_them,
    generator=bootstrap_generator(seed, n))`` then pairs them as that call would
    (``tests/test_report_schedule.py`` checks both against one call).
    """
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(runs_before):
        torch.randint(0, 2**31 - 1, (1,), generator=g)  # the draw of estimate_window(generator=g)
    return g


def invariance_section(
    sizes: DemoSizes,
    seed: int,
    digits: DigitsSection,
    progress: bool,
    measured: dict[str, ModelWindow] | None = None,
    generator: torch.Generator | None = None,
) -> InvarianceSection:
    """The demo's section: section 2's epsilon sweep as the reference, the other runs measured from the
    same sources with the same sizes (or taken from ``measured``, with ``generator`` as in
    :func:`compare_parameterisations`)."""
    reference = ModelWindow(
        name=REFERENCE,
        parameterisation=digits.model.config.parameterisation,
        card_accuracy=digits.model.card.get("conditional_accuracy"),
        process=digits.process,
        fr=digits.fr,
        est=digits.est,
    )
    runs, pairs = compared_runs()
    return compare_parameterisations(
        digits.sources,
        runs,
        pairs,
        n_times=sizes.fr_grid,
        inference_steps=sizes.inference_steps,
        n_boot=sizes.n_boot,
        seed=seed,
        measured={REFERENCE: reference, **(measured or {})},
        progress=progress,
        generator=generator,
    )
