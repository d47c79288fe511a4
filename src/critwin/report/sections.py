"""The computations behind each section of ``critwin demo``: plain numbers, no plotting.

Each ``*_section`` function returns a dataclass holding what its figures need; its ``summary()`` is the
JSON-ready part that goes into ``summary.json``. Random draws happen here only (plotting draws
nothing), in a fixed order, so a seed fixes the whole report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from critwin._io import finite_or_none
from critwin.diagnostics.fairness import RebalanceResult, rebalance
from critwin.diagnostics.feature_atlas import AtlasResult, atlas
from critwin.diagnostics.privacy import MembershipAudit, calibration_size, membership_audit
from critwin.diagnostics.prompt_privacy import supported_fpr
from critwin.experiments.cloning import clone
from critwin.experiments.estimation import WindowEstimate, estimate_window
from critwin.experiments.features import apply_feature
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.process import MixtureProcess, grid_times
from critwin.mixtures import GaussianMixture
from critwin.models.classifier import classifier_feature
from critwin.models.digits import load_digits_model
from critwin.models.judges import digit_judge_feature
from critwin.models.shapes import attribute_readers, load_shapes_model, make_shapes
from critwin.report.paired import paired_t_half_difference
from critwin.report.plan import DemoSizes, shapes_available
from critwin.theory.tree import hierarchy
from critwin.theory.validate import forward_reverse_tv
from critwin.theory.windows import critical_window, transition_times

__all__ = [
    "DemoSizes",
    "hierarchical_mixture",
    "fitted_class_mixture",
    "theory_section",
    "digits_section",
    "digit_sources",
    "comparison_section",
    "diagnostics_section",
    "shapes_section",
    "shapes_available",
]

AUDIT_TIMES = (0.05, 0.15, 0.3, 0.6, 1.0, 1.8, 3.0)
"""OU times of the membership audits (section 4)."""
AUDIT_FPR = 0.01
"""False-positive rate the membership audits (section 4) ask for where their calibration set resolves it."""


# ---------------------------------------------------------------------------------------- 1. theory
def hierarchical_mixture(d: int = 16, within: float = 10.0, between: float = 240.0) -> GaussianMixture:
    """Four unit Gaussians: two clusters ``between`` apart, two components ``within`` apart in each."""
    means = torch.zeros(4, d, dtype=torch.float64)
    for k, (side, sub) in enumerate([(-1, -1), (-1, 1), (1, -1), (1, 1)]):
        means[k, 0] = side * between / 2
        means[k, 1] = sub * within / 2
    return GaussianMixture(means, weights=torch.tensor([0.3, 0.2, 0.25, 0.25], dtype=torch.float64))


@dataclass
class TheorySection:
    """The two-level mixture, its tree and windows, and the exact forward-reverse TV curve."""

    mixture: GaussianMixture
    eps: float
    tree: Any
    fine: Any
    coarse: Any
    window: Any
    grid: np.ndarray
    tv: np.ndarray
    se: np.ndarray
    labels: np.ndarray

    def summary(self) -> dict[str, Any]:
        fine, coarse, mix = self.fine, self.coarse, self.mixture
        inside = (self.grid >= fine.t_end) & (self.grid <= fine.t_start)
        return {
            "mixture": {"means": mix.means.tolist(), "weights": mix.weights.tolist(), "covs": "identity"},
            "eps": self.eps,
            "hierarchy": self.tree.to_dict(),
            "tree_text": self.tree.render(),
            "fine": {
                "t_end": finite_or_none(fine.t_end),
                "t_start": finite_or_none(fine.t_start),
                "bound": fine.bound,
            },
            "coarse": {
                "t_end": finite_or_none(coarse.t_end),
                "t_start": finite_or_none(coarse.t_start),
                "bound": coarse.bound,
            },
            "window_0_in_01": {
                "t_after": finite_or_none(self.window.t_after),
                "t_before": finite_or_none(self.window.t_before),
                "empty": bool(self.window.empty),
            },
            "curve": {"t": self.grid.tolist(), "tv": self.tv.tolist(), "se": self.se.tolist()},
            "bound_violations_beyond_3se": int(np.sum(inside & (self.tv - 3 * self.se > fine.bound))),
        }


def theory_section(sizes: DemoSizes, eps: float, generator: torch.Generator) -> TheorySection:
    mix = hierarchical_mixture()
    tree = hierarchy(mix, eps, generator=generator, tol=sizes.tol)
    fine = transition_times(mix, [0], [0, 1], eps, generator=generator, tol=sizes.tol)
    coarse = transition_times(mix, [0, 1], [0, 1, 2, 3], eps, generator=generator, tol=sizes.tol)
    window = critical_window(mix, after=[0], before=[0, 1], eps=eps, generator=generator, tol=sizes.tol)
    grid = np.linspace(0.0, 8.0, sizes.theory_grid)
    tv, se, labels = [], [], []
    for t_hat in grid:
        res = forward_reverse_tv(
            mix, [0], [0, 1], float(t_hat), n_outer=sizes.theory_outer, generator=generator
        )
        tv.append(res["tv"])
        se.append(res["tv_se"])
        labels.append(res["label_dist"].tolist())
    return TheorySection(
        mixture=mix,
        eps=eps,
        tree=tree,
        fine=fine,
        coarse=coarse,
        window=window,
        grid=grid,
        tv=np.array(tv),
        se=np.array(se),
        labels=np.array(labels),
    )


# ---------------------------------------------------------------------------------------- 2. digits
def step_of(process, t) -> Any:
    """The sampler step label at OU time ``t`` (None when missing or off the grid)."""
    if t is None or not math.isfinite(t):
        return None
    try:
        return process.step_label(process.locate(float(t)).index)
    except ValueError:
        return None


def window_dict(est: WindowEstimate, process) -> dict:
    out = {
        "t_after": finite_or_none(est.t_after),
        "t_before": finite_or_none(est.t_before),
        "t_half": finite_or_none(est.t_half),
        "t_after_ci": [finite_or_none(v) for v in est.t_after_ci],
        "t_before_ci": [finite_or_none(v) for v in est.t_before_ci],
        "t_half_ci": [finite_or_none(v) for v in est.t_half_ci],
        "base_rate": float(est.b),
        "empty": bool(est.empty),
        "jump_rule": {k: (v.item() if hasattr(v, "item") else v) for k, v in est.jump.items()},
    }
    if process is not None:
        out["steps"] = {k: step_of(process, out[k]) for k in ("t_after", "t_before", "t_half")}
    return out


@dataclass
class DigitsSection:
    """Forward-reverse and cloning on the shipped digits DDPM, and one digit re-generated ("strip")."""

    model: Any
    process: Any
    fr: Any
    est: WindowEstimate
    est_clone: WindowEstimate
    n_sources: int
    sources: torch.Tensor
    source: torch.Tensor
    strip_times: list[float]
    strip_rows: list[torch.Tensor] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        fr, est, est_clone, process = self.fr, self.est, self.est_clone, self.process
        order = np.argsort(fr.times.numpy(), kind="stable")  # ascending, like the curves
        return {
            "model": self.model.describe()["model"],
            "model_card_conditional_accuracy": self.model.card.get("conditional_accuracy"),
            "sampler": process.describe(),
            "times": fr.times.numpy()[order].tolist(),
            "steps": None if fr.steps is None else fr.steps.numpy()[order].tolist(),
            "forward_reverse": {"c": est.c.tolist(), "window": window_dict(est, process)},
            "cloning": {
                "times": est_clone.times.tolist(),
                "c": est_clone.c.tolist(),
                "window": window_dict(est_clone, process),
            },
            "per_class": {int(k): window_dict(v, process) for k, v in sorted(est.per_class.items())},
            "n_sources": self.n_sources,
        }


def digit_sources(data, per_class: int) -> torch.Tensor:
    """(10 per_class, 1, 8, 8) the first ``per_class`` held-out digits of each class, class by class: the
    sources of every digits sweep of the demo (sections 2, 3 and 5)."""
    picks = torch.cat([torch.nonzero(data.test_labels == k).flatten()[:per_class] for k in range(10)])
    return data.test_images[picks]


def digits_section(sizes: DemoSizes, seed: int, progress: bool) -> DigitsSection:
    model = load_digits_model()
    feature = classifier_feature()
    process = model.process(num_inference_steps=sizes.inference_steps)
    g = torch.Generator().manual_seed(seed)
    x0 = digit_sources(model.training_data(), sizes.fr_per_class)
    times = grid_times(process, sizes.fr_grid)
    label = "shipped digit classifier"
    fr = forward_reverse(
        process, x0, times, n_per_time=1, feature=feature, seed=seed, progress=progress, feature_label=label
    )
    est = estimate_window(fr, delta=0.1, n_boot=sizes.n_boot, generator=g)
    ascending = sorted(times)[:-1]  # forking at the very first grid point would share no prefix
    forks = np.unique(np.linspace(0, len(ascending) - 1, sizes.clone_forks).round().astype(int))
    cl = clone(
        process,
        sizes.clone_trajectories,
        [ascending[i] for i in forks],
        sizes.clone_children,
        feature=feature,
        seed=seed,
        progress=progress,
        feature_label=label,
    )
    est_clone = estimate_window(cl, delta=0.1, n_boot=sizes.n_boot, generator=g)
    strip_times = sorted(times[:: max(1, len(times) // 7)][:7])  # increasing noise, left to right
    source = x0[[3 * sizes.fr_per_class]]  # the first "3"
    rows = _regenerate(process, source, strip_times, replicates=3, generator=g)
    return DigitsSection(
        model=model,
        process=process,
        fr=fr,
        est=est,
        est_clone=est_clone,
        n_sources=int(x0.shape[0]),
        sources=x0,
        source=source,
        strip_times=strip_times,
        strip_rows=rows,
    )


def _regenerate(process, source, times, replicates: int, generator) -> list[torch.Tensor]:
    """``replicates`` copies of ``source`` noised to each OU time and denoised back (one row per time)."""
    rows = []
    for t in times:
        index, _ = process.locate(t)
        noised = process.add_noise(source.expand(replicates, -1, -1, -1), index, generator=generator)
        rows.append(process.decode(process.run(noised, start=index, generator=generator)))
    return rows


# ---------------------------------------------------------------------------------------- 3. comparison
def fitted_class_mixture(images: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3):
    """One full-covariance Gaussian per digit (pixel space, 64-d), weights = class frequencies."""
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    means, covs, weights = [], [], []
    for k in range(10):
        xs = flat[labels == k]
        means.append(xs.mean(0))
        covs.append(torch.cov(xs.T) + ridge * torch.eye(flat.shape[1], dtype=torch.float64))
        weights.append(xs.shape[0])
    w = torch.tensor(weights, dtype=torch.float64)
    return GaussianMixture(torch.stack(means), torch.stack(covs), w / w.sum()), flat


@dataclass
class ComparisonSection:
    """The fitted Gaussian mixture against the trained model, like for like and through the theorem.

    ``gmm_est``: the same forward–reverse estimator, classifier, sources and OU times as section 2, on
    the fitted mixture with its exact sampler. ``difference``: per digit, the network's t½ minus the
    mixture's, with a paired bootstrap interval. ``theory_per_class``: the theorem's sufficient windows
    (a different definition: conditions on TV, not crossings of r).
    """

    gmm_fr: ForwardReverseResult
    gmm_est: WindowEstimate
    difference: dict[int, dict]
    theory_per_class: dict[int, dict]
    speciation_time: float
    top_eigenvalue: float
    eps: float

    def summary(self) -> dict[str, Any]:
        est = self.gmm_est
        return {
            "like_for_like": {
                "sampler": "exact (fitted mixture)",
                "replicates_per_source": self.gmm_fr.n_per_time,
                "times": est.times.tolist(),
                "c": est.c.tolist(),
                "per_class": {int(k): window_dict(v, None) for k, v in sorted(est.per_class.items())},
                "t_half_difference": self.difference,
                "difference_interval": "paired bootstrap over sources, stratified by digit (percentile)",
            },
            "theory_per_class": self.theory_per_class,
            "speciation_time": self.speciation_time,
            "top_eigenvalue": self.top_eigenvalue,
            "eps": self.eps,
            "fit": "one full-covariance Gaussian per digit + 1e-3 I",
        }


def comparison_section(
    sizes: DemoSizes, eps: float, seed: int, digits: DigitsSection, progress: bool = False
) -> ComparisonSection:
    """``digits``: section 2, whose sources, OU times and classifier the like-for-like run reuses."""
    data = digits.model.training_data()
    gmm, flat = fitted_class_mixture(data.train_images, data.train_labels)
    g = torch.Generator().manual_seed(seed)
    gmm_fr = exact_forward_reverse(gmm, digits, sizes.gmm_replicates, seed, progress)
    gmm_est = estimate_window(gmm_fr, delta=0.1, n_boot=sizes.n_boot, generator=g)
    difference = paired_t_half_difference(digits.fr, gmm_fr, sizes.n_boot, g)
    theory = {}
    for k in sizes.gmm_classes:
        w = critical_window(gmm, after=[k], eps=eps, n=sizes.gmm_mc, generator=g, tol=max(sizes.tol, 1e-2))
        theory[k] = {
            "t_after": finite_or_none(w.t_after),
            "t_before": finite_or_none(w.t_before),
            "empty": bool(w.empty),
        }
    top_eig = torch.linalg.eigvalsh(torch.cov(flat.T)).max().item()
    return ComparisonSection(
        gmm_fr=gmm_fr,
        gmm_est=gmm_est,
        difference=difference,
        theory_per_class=theory,
        speciation_time=0.5 * math.log(top_eig),
        top_eigenvalue=top_eig,
        eps=eps,
    )


def exact_forward_reverse(gmm, digits: DigitsSection, replicates: int, seed: int, progress: bool):
    """Section 2's forward–reverse experiment with the fitted mixture in place of the network.

    Same sources (flattened to the mixture's 64 pixels), same realised OU times (the mixture's grid is
    made of them, so nothing is rounded), same classifier; the exact sampler has no discretisation.
    """
    times = sorted(float(t) for t in digits.fr.times)
    process = MixtureProcess(gmm, "exact", times=times[::-1] + [0.0])
    x0 = digits.sources.reshape(digits.sources.shape[0], -1).to(gmm.means.dtype)
    return forward_reverse(
        process,
        x0,
        times,
        n_per_time=replicates,
        feature=classifier_feature(),
        seed=seed,
        progress=progress,
        feature_label="shipped digit classifier",
    )


# ---------------------------------------------------------------------------------------- 4. diagnostics
@dataclass
class DiagnosticsSection:
    """Membership audits of the memorising and the main model, and a rebalancing at the window."""

    audits: dict[str, MembershipAudit]
    fair: RebalanceResult

    def summary(self) -> dict[str, Any]:
        return {
            "privacy": {
                k: {
                    "auc": a.auc,
                    "auc_ci": list(a.auc_ci),
                    "operating_point": a.operating_point,
                    "fpr_requested": AUDIT_FPR,
                    "graded_by": a.metadata.get("graded_by"),
                }
                for k, a in self.audits.items()
            },
            "fairness": self.fair.to_dict(),
        }


def diagnostics_section(sizes: DemoSizes, digits: dict, seed: int) -> DiagnosticsSection:
    """``digits``: the summary of section 2 (its measured window sets the fork time)."""
    audits = {}
    # The false-positive rate asked of the audits: 1%, or the smallest their calibration set resolves
    # (one in its number: 5% for the 20 calibration images of the full demo).
    fpr = supported_fpr(AUDIT_FPR, calibration_size(sizes.audit_nonmembers))
    for name in ("digits-memorise", "digits"):
        model = load_digits_model(name)
        data = model.training_data()
        audits[name] = membership_audit(
            model.process(num_inference_steps=sizes.inference_steps // 2),
            data.train_images[: sizes.audit_members],
            data.test_images[: sizes.audit_nonmembers],
            list(AUDIT_TIMES),
            n_per_time=2,
            fpr=fpr,
            seed=seed,
        )
    window = digits["forward_reverse"]["window"]
    fork = window["t_before"] if window["t_before"] is not None else 1.5
    fair = rebalance(
        load_digits_model().process(num_inference_steps=sizes.inference_steps),
        sizes.fair_n,
        classifier_feature(),
        10,
        fork,
        n_candidates=4,
        seed=seed,
        judge=digit_judge_feature(),  # graded by a reader independent of the selector
    )
    return DiagnosticsSection(audits, fair)


# ----------------------------------------------------------------------------- 5. coarse to fine
@dataclass
class ShapesSection:
    """When the attributes of the shipped shapes model are decided (:func:`critwin.atlas`), and one image
    re-generated from increasing noise.

    ``strip``: (T, R, 3, H, W) re-generations of ``source`` (R replicates) from each OU time of
    ``strip_times`` (ascending); ``strip_labels``: attribute -> (T, R) labels read on them;
    ``source_labels``: attribute -> the source's label.
    """

    atlas: AtlasResult
    source: torch.Tensor
    strip_times: list[float]
    strip: torch.Tensor
    strip_labels: dict[str, np.ndarray]
    source_labels: dict[str, int]

    def first_changes(self) -> dict[str, float | None]:
        """Per attribute, the smallest strip time at which a re-generation differs from the source."""
        out = {}
        for name, labels in self.strip_labels.items():
            changed = np.nonzero((labels != self.source_labels[name]).any(1))[0]
            out[name] = float(self.strip_times[changed[0]]) if changed.size else None
        return out

    def summary(self) -> dict[str, Any]:
        atlas = self.atlas.to_dict()
        return {
            "atlas": {k: v for k, v in atlas.items() if k != "metadata"},
            "strip": {
                "times": self.strip_times,
                "labels": {name: labels.tolist() for name, labels in self.strip_labels.items()},
                "source": self.source_labels,
                "first_change": self.first_changes(),
            },
        }


def shapes_section(sizes: DemoSizes, eps: float, seed: int, progress: bool) -> ShapesSection:
    """The atlas of the shipped ``shapes`` model (the theory is fitted to its training distribution:
    ``atlas_fit`` images drawn as its training set was) and the strip."""
    model = load_shapes_model("shapes")
    process = model.process(num_inference_steps=sizes.inference_steps)
    config = model.config
    data = make_shapes(min(sizes.atlas_fit, config.n_train), seed=config.data_seed, bias=config.bias or None)
    readers = attribute_readers()
    result = atlas(
        process,
        readers,
        data=data,
        n_times=sizes.atlas_times,
        n_sources=sizes.atlas_sources,
        n_per_time=sizes.atlas_replicates,
        n_trajectories=sizes.atlas_trajectories,
        n_clones=2,
        eps=eps,
        n_boot=sizes.n_boot,
        seed=seed,
        progress=progress,
        threads=None,  # run_demo chose them
    )
    # The source: a held-out image (another seed than the training data's).
    source = make_shapes(1, seed=seed + 1).images
    times = sorted(grid_times(process, sizes.strip_times))  # ascending, as every array of the summary
    generator = torch.Generator().manual_seed(seed)
    rows = _regenerate(process, source, times, sizes.strip_replicates, generator)
    strip = torch.stack(rows)
    flat = strip.reshape(-1, *strip.shape[2:])
    read = {name: apply_feature(f, flat).labels for name, f in readers.items()}
    labels = {name: value.numpy().reshape(len(times), -1) for name, value in read.items()}
    own = {name: int(apply_feature(f, source).labels[0]) for name, f in readers.items()}
    return ShapesSection(
        atlas=result,
        source=source,
        strip_times=times,
        strip=strip,
        strip_labels=labels,
        source_labels=own,
    )
