"""What ``critwin demo`` runs, without the libraries its sections load: the sizes, which sections' models
are shipped, section 5's runs, and the names the page states.

The process that schedules the sections and writes the page imports only this, :mod:`critwin.report.page`
and :mod:`critwin.report.schedule` (with torch): diffusers, transformers, scipy and matplotlib are
imported by the worker processes that compute the sections, not a third time by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from critwin.models._store import SHIPPED_MODELS, SHIPPED_WEIGHTS_DIR, TEXT_MODELS, weights_paths

__all__ = [
    "DemoSizes",
    "REFERENCE",
    "Run",
    "Pair",
    "compared_runs",
    "FAIRNESS_MODEL",
    "MEMORISATION_MODEL",
    "FAIRNESS_PROMPT",
    "shapes_available",
    "text_available",
    "text_to_image_available",
]

FAIRNESS_MODEL = "shapes-t2i-biased"
MEMORISATION_MODEL = "shapes-t2i-memorise"
FAIRNESS_PROMPT = "a circle"


@dataclass(frozen=True)
class DemoSizes:
    """Work sizes: ``full`` for ``critwin demo``, ``quick`` for tests."""

    fr_grid: int = 16
    fr_per_class: int = 24
    clone_trajectories: int = 96
    clone_children: int = 4
    clone_forks: int = 10
    inference_steps: int = 50
    n_boot: int = 200
    theory_grid: int = 24
    theory_outer: int = 2000
    gmm_mc: int = 2500  # theorem windows: 5000 draws moved no end by more than 0.025 and cost 20 s more
    gmm_replicates: int = 4
    gmm_classes: tuple[int, ...] = tuple(range(10))
    tol: float = 1e-3
    audit_members: int = 20
    audit_nonmembers: int = 40
    fair_n: int = 200
    atlas_sources: int = 48
    atlas_replicates: int = 2
    atlas_times: int = 8
    atlas_trajectories: int = 32
    atlas_fit: int = 20000  # images the theory is fitted to (the shipped model's whole training set)
    strip_times: int = 8
    strip_replicates: int = 3
    # Section 8 (text-to-image audits): sampler steps, samples per fairness method, KID reference images,
    # cloning trunks of the fairness prompt and of the other prompts, held-out prompts of the
    # memorisation table (every member is audited), Wen generations and loss noise draws per prompt.
    t2i_steps: int = 10
    t2i_fair_n: int = 48
    t2i_reference: int = 500
    t2i_window_trajectories: int = 16
    t2i_prompt_trajectories: int = 8
    t2i_non_members: int = 24
    t2i_calibration: int = 24
    t2i_wen_generations: int = 2
    t2i_loss_noise: int = 2

    @classmethod
    def quick(cls) -> DemoSizes:
        return cls(
            fr_grid=6,
            fr_per_class=3,
            clone_trajectories=10,
            clone_children=2,
            clone_forks=4,
            inference_steps=20,
            n_boot=30,
            theory_grid=8,
            theory_outer=400,
            gmm_mc=600,
            gmm_replicates=2,
            gmm_classes=(0, 1, 7),
            tol=2e-2,
            audit_members=6,
            audit_nonmembers=8,
            fair_n=30,
            atlas_sources=8,
            atlas_times=4,
            atlas_trajectories=4,
            atlas_fit=2000,
            strip_times=4,
            strip_replicates=2,
            t2i_steps=4,
            t2i_fair_n=12,
            t2i_reference=50,
            t2i_window_trajectories=4,
            t2i_prompt_trajectories=4,
            t2i_non_members=4,
            t2i_calibration=4,
        )


REFERENCE = "digits"
"""The epsilon-prediction DDPM (section 2 of the demo) every comparison starts from."""


@dataclass(frozen=True)
class Run:
    """One model (shipped name or :class:`~critwin.models.digits.DigitsModel`) with one sampler.

    ``scheduler``: None for the model's training scheduler, else a scheduler name or alias of
    :func:`critwin.adapters.diffusers.scheduler_class` (built from the training schedule).
    """

    model: Any
    scheduler: str | None = None

    @property
    def label(self) -> str:
        name = self.model if isinstance(self.model, str) else self.model.name
        return name if self.scheduler is None else f"{name}+{self.scheduler}"


@dataclass(frozen=True)
class Pair:
    """Two run labels to difference (``first`` minus ``second``) and what the difference isolates."""

    first: str
    second: str
    isolates: str


def compared_runs() -> tuple[list[Run], list[Pair]]:
    """The demo's and benchmark's runs and pairs, for the parameterised models that are shipped."""
    runs = [Run(REFERENCE), Run(REFERENCE, "ddim")]
    pairs = [Pair("digits+ddim", REFERENCE, "the sampler alone: deterministic DDIM vs stochastic DDPM")]
    if "digits-flow" in SHIPPED_MODELS:
        runs.append(Run("digits-flow"))
        pairs += [
            Pair("digits-flow", "digits+ddim", "the parameterisation alone (flow vs ε, both ODE samplers)"),
            Pair("digits-flow", REFERENCE, "as shipped: parameterisation and sampler (flow Euler vs DDPM)"),
        ]
    if "digits-v" in SHIPPED_MODELS:
        runs.append(Run("digits-v"))
        pairs.append(Pair("digits-v", REFERENCE, "the parameterisation alone (v vs ε, both DDPM)"))
    return runs, pairs


def shapes_available() -> bool:
    """Whether the shipped ``shapes`` model's weights are present (the section needs them)."""
    return all(path.exists() for path in weights_paths("shapes"))


def text_available() -> bool:
    """Whether both shipped text models' weights are present."""
    return all(path.exists() for name in TEXT_MODELS for path in weights_paths(name))


def text_to_image_available() -> bool:
    """Whether both shipped pipelines section 8 needs are present (their ``model_index.json``)."""
    return all(
        (SHIPPED_WEIGHTS_DIR / name / "model_index.json").is_file()
        for name in (FAIRNESS_MODEL, MEMORISATION_MODEL)
    )
