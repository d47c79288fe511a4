"""Windows of a grammar's levels: exact (from its law), measured on the exact engine, and the theory's.

A language with a planted tree (:class:`~critwin.models.text.RandomHierarchy`) has an exact law, a
``CategoricalMixture`` of Dirac strings, whose levels (class > level1 > ... > string) are partitions of
its components. Three references for a network's measured windows:

- :func:`exact_commitment_curve`: the expectation of the forward–reverse commitment curve ``c(level)``
  with sources from the law and the exact posterior sampler, computed without Monte Carlo: masking
  hides a pattern ``M`` of positions with probability ``kappa^|M| (1 - kappa)^(L - |M|)``, so
  ``c(kappa) = sum_j kappa^j (1 - kappa)^(L - j) A_j`` with ``A_j`` the weighted posterior probability
  of the source's own label summed over the patterns of ``j`` hidden positions (every pattern is
  enumerated once, ``2^L`` of them); autoregression hides the last ``h`` positions. Its normalised
  ``r = (c - b) / (1 - b)`` with ``b = sum_k w_k^2`` crosses ``1 - delta``, ``delta`` and ``1/2`` at the
  estimator's ``t_after``, ``t_before`` and ``t_half`` (:func:`exact_crossings`);
- the same estimator on the exact engine's samples (a ``CategoricalProcess``: like for like);
- :func:`grammar_theory`: the theorem's windows of every level (``critical_window`` of a node inside
  its parent, from the theory's exact TV) and the merge level of every node into its parent, which
  orders the levels as the ε-tree of the atlas does.

:func:`text_atlas` is :func:`critwin.diagnostics.feature_atlas.atlas` on a text process with the
grammar's exact tree as its theory and the exact engine as its like-for-like run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from critwin._display import short_repr
from critwin._validation import check_delta, check_eps, check_positive_int, check_seed
from critwin.diagnostics.feature_atlas import AtlasResult, atlas, feature_estimates
from critwin.experiments.checkpoint import derive_seed
from critwin.experiments.estimation import crossing_time
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.token_process import CategoricalProcess
from critwin.mixtures.categorical import CategoricalMixture
from critwin.theory.discrete_times import merge_level
from critwin.theory.windows import critical_window

__all__ = [
    "ExactCurve",
    "exact_commitment_curve",
    "exact_commitment_curves",
    "exact_crossings",
    "level_nodes",
    "grammar_theory",
    "exact_process",
    "text_atlas",
    "MAX_PATTERN_LENGTH",
]

MAX_PATTERN_LENGTH = 16
"""Longest sequence whose ``2^L`` masking patterns :func:`exact_commitment_curve` enumerates."""


@dataclass
class ExactCurve:
    """The exact forward–reverse commitment curve of one partition (arrays (T,), levels increasing)."""

    levels: np.ndarray
    c: np.ndarray
    b: float
    clock: str

    @property
    def r(self) -> np.ndarray:
        """Normalised ``(c - b) / (1 - b)``."""
        return (self.c - self.b) / (1.0 - self.b)

    def __repr__(self) -> str:
        levels = len(self.levels)
        if levels:
            levels = f"{levels} in [{self.levels.min():g}, {self.levels.max():g}]"
        return short_repr("ExactCurve", {"clock": self.clock, "levels": levels, "b": self.b})


def _check_partition(mixture: CategoricalMixture, labels) -> torch.Tensor:
    if not isinstance(mixture, CategoricalMixture) or not mixture.is_dirac:
        raise ValueError(
            "mixture must be a CategoricalMixture of Dirac strings (CategoricalMixture.from_strings)"
        )
    if mixture.noise == "uniform":
        raise ValueError("mixture: the exact curve is enumerated for masking and autoregressive noise only")
    labels = torch.as_tensor(labels).long().reshape(-1)
    if labels.numel() != mixture.n_components or (labels < 0).any():
        raise ValueError(f"labels must hold one label >= 0 per component ({mixture.n_components})")
    return labels


def _own_label_mass(mixture, strings, hidden: torch.Tensor, level, partitions, K: int) -> dict:
    """Per partition: ``sum_k w_k P(label of the output = label of k | strings[k], ``hidden`` hidden)``,
    one value per block of ``K`` rows (the strings under one pattern) as an array."""
    y = torch.where(hidden, torch.full_like(strings, mixture.mask_id), strings)
    posterior = mixture.posterior(y, level)  # (B K, K), one evaluation for every partition
    weights = mixture.weights.repeat(strings.shape[0] // K)
    out = {}
    for name, (labels, onehot) in partitions.items():
        own = (posterior @ onehot).gather(1, labels.repeat(strings.shape[0] // K).reshape(-1, 1))[:, 0]
        out[name] = (weights * own).reshape(-1, K).sum(1).numpy()
    return out


def exact_commitment_curves(mixture: CategoricalMixture, partitions, levels) -> dict[str, ExactCurve]:
    """:func:`exact_commitment_curve` of several partitions ``{name: (K,) labels}`` at once (one posterior
    evaluation per masking pattern serves all of them)."""
    parts = {}
    for name, labels in dict(partitions).items():
        labels = _check_partition(mixture, labels)
        parts[name] = (labels, torch.nn.functional.one_hot(labels).double())
    values = torch.as_tensor(levels, dtype=torch.float64).reshape(-1).tolist()
    levels = sorted(float(mixture.check_level(v, "levels")) for v in values)
    strings, L = mixture.strings, mixture.length
    bases = {name: float(((onehot.T @ mixture.weights) ** 2).sum()) for name, (_, onehot) in parts.items()}
    K = strings.shape[0]
    if mixture.noise == "autoregressive":
        c = {name: [] for name in parts}
        for h in levels:
            hidden = torch.zeros_like(strings, dtype=torch.bool)
            hidden[:, L - int(h) :] = True
            for name, mass in _own_label_mass(mixture, strings, hidden, int(h), parts, K).items():
                c[name].append(float(mass[0]))
        return {
            name: ExactCurve(np.array(levels), np.array(c[name]), bases[name], "hidden") for name in parts
        }
    if L > MAX_PATTERN_LENGTH:
        raise ValueError(
            f"mixture: {L} positions have 2^{L} masking patterns (at most 2^{MAX_PATTERN_LENGTH})"
        )
    by_count = {name: np.zeros(L + 1) for name in parts}
    patterns = torch.tensor(list(itertools.product((False, True), repeat=L)))  # (2^L, L)
    per_call = max(1, 8192 // K)  # patterns per posterior evaluation (8192 rows at a time)
    for start in range(0, patterns.shape[0], per_call):
        block = patterns[start : start + per_call]
        hidden = block.repeat_interleave(K, 0)  # every string under every pattern of the block
        # Dirac strings: the posterior given a pattern does not depend on kappa in (0, 1).
        masses = _own_label_mass(mixture, strings.repeat(block.shape[0], 1), hidden, 0.5, parts, K)
        counts = block.sum(1).numpy()
        for name, mass in masses.items():
            np.add.at(by_count[name], counts, mass)
    kappa = np.array(levels)
    j = np.arange(L + 1)
    with np.errstate(invalid="ignore"):
        terms = kappa[:, None] ** j[None, :] * (1 - kappa[:, None]) ** (L - j)[None, :]
    terms = np.nan_to_num(terms, nan=1.0)  # 0^0 = 1 at kappa = 0 or 1
    return {name: ExactCurve(kappa, terms @ by_count[name], bases[name], "kappa") for name in parts}


def exact_commitment_curve(mixture: CategoricalMixture, labels, levels) -> ExactCurve:
    """The expected forward–reverse commitment curve of the partition ``labels`` (module notes).

    Parameters
    ----------
    mixture : Dirac ``CategoricalMixture`` with ``noise="mask"`` (levels kappa in [0, 1]) or
        ``"autoregressive"`` (integer hidden positions in 0..L).
    labels : (K,) long label of every component (e.g. :meth:`RandomHierarchy.partitions` of a level).
    levels : (T,) levels on the mixture's clock.

    Returns
    -------
    ExactCurve (levels sorted increasingly).

    Examples
    --------
    >>> two = CategoricalMixture.from_strings([[0, 0, 0], [1, 1, 0]], vocab_size=2)
    >>> curve = exact_commitment_curve(two, [0, 1], [0.0, 0.5, 1.0])
    >>> curve.r.round(4).tolist()        # r = TV = 1 - kappa^2 (docs/discrete.md, Example 3)
    [1.0, 0.75, 0.0]
    """
    return exact_commitment_curves(mixture, {"labels": labels}, levels)["labels"]


def exact_crossings(curve: ExactCurve, delta: float = 0.1) -> dict[str, float]:
    """``t_after``, ``t_before``, ``t_half``: where the exact ``r`` crosses ``1 - delta``, ``delta``, ``1/2``
    (linear interpolation between the curve's levels, as the estimator reads its fit)."""
    delta = check_delta(delta)
    r = np.minimum.accumulate(curve.r)  # exact curves are non-increasing; guard rounding
    return {
        "t_after": crossing_time(curve.levels, r, 1 - delta),
        "t_before": crossing_time(curve.levels, r, delta),
        "t_half": crossing_time(curve.levels, r, 0.5),
    }


def level_nodes(partitions: dict[str, torch.Tensor], component: int = 0) -> dict[str, dict[str, list[int]]]:
    """For every level (coarse to fine, in the dict's order): the node holding ``component`` and its
    parent (every component for the first level), as component lists."""
    out, parent = {}, list(range(next(iter(partitions.values())).numel()))
    for name, labels in partitions.items():
        node = (labels == labels[component]).nonzero()[:, 0].tolist()
        out[name] = {"node": node, "parent": parent}
        parent = node
    return out


def grammar_theory(grammar, noise: str = "mask", eps: float = 0.1, component: int = 0) -> dict[str, Any]:
    """The theorem's window of every level and its merge level, from the exact TV of the grammar's law.

    Level ``l``'s node is the one holding ``component``; its window is ``critical_window(after=node,
    before=parent)`` (Blink Def. 4) and ``t_merge`` the level where the node's law merges with its
    siblings' (``TV(p^node, p^(parent - node)) <= eps``: where the ε-tree joins the children of the
    parent, the level that splits them): a level is predicted to be decided before the next one (in
    generation) when its ``t_merge`` is larger, as in the atlas of a fitted Gaussian mixture.

    Returns
    -------
    ``{"clock", "eps", "attributes": {level: {"t_merge", "t_merge_bracket", "t_after", "t_before", "status",
    "components"}},
    "order": [...], "fit": ...}`` (the ``theory`` entry of an :class:`AtlasResult`).
    """
    eps = check_eps(eps)
    mixture = grammar.mixture(noise)
    attributes = {}
    for name, sets in level_nodes(grammar.partitions(), component).items():
        window = critical_window(mixture, sets["node"], sets["parent"], eps)
        siblings = sorted(set(sets["parent"]) - set(sets["node"]))
        merge = merge_level(mixture, sets["node"], siblings, eps)
        attributes[name] = {
            "t_merge": merge.time,
            "t_merge_bracket": [merge.low, merge.high],
            "t_after": window.t_after,
            "t_before": window.t_before,
            "status": window.status,
            "components": len(sets["node"]),
        }
    order = sorted(attributes, key=lambda n: -attributes[n]["t_merge"])
    return {
        "fit": "the grammar's exact law (a CategoricalMixture of its strings); no fit",
        "clock": mixture.clock,
        "eps": eps,
        "component": component,
        "attributes": attributes,
        "order": order,
    }


def exact_process(grammar, clock: str, times) -> CategoricalProcess:
    """The grammar's exact law as a process on ``clock`` whose grid holds ``times`` (nothing rounded)."""
    if clock == "kappa":
        positive = sorted({float(t) for t in times if t > 0}, reverse=True)
        grid = sorted(set(positive) | {1.0}, reverse=True) + [0.0]
        return CategoricalProcess(grammar.mixture("mask"), times=grid)
    if clock == "hidden":
        return CategoricalProcess(grammar.mixture("autoregressive"))
    raise ValueError(f"clock must be 'kappa' or 'hidden', got {clock!r}")


def text_atlas(
    process,
    grammar,
    *,
    x0: torch.Tensor | None = None,
    times=None,
    n_sources: int = 64,
    n_per_time: int = 4,
    n_trajectories: int = 32,
    n_clones: int = 2,
    cloning: bool = True,
    theory: bool = True,
    eps: float = 0.1,
    delta: float = 0.1,
    n_boot: int = 200,
    seed: int = 0,
    progress: bool = False,
) -> AtlasResult:
    """The feature atlas of a text model: every level of ``grammar`` measured on ``process``, the
    grammar's exact tree as the theory (:func:`grammar_theory`) and the exact engine like for like.

    Parameters
    ----------
    process : a token process (``TextModel.process()``) on the ``"kappa"`` or ``"hidden"`` clock.
    grammar : the :class:`~critwin.models.text.RandomHierarchy` the model was trained on.
    x0 : (N, L) source strings (default: ``n_sources`` strings drawn from the grammar with ``seed``).
    times : levels of the sweep (default: 9 kappa levels 0..1, or every count of hidden positions).
    n_sources, n_per_time, n_trajectories, n_clones, cloning, theory, eps, delta, n_boot, seed, progress :
        as in :func:`~critwin.diagnostics.feature_atlas.atlas`.

    Returns
    -------
    AtlasResult whose ``theory`` comes from the grammar and ``like_for_like`` from its exact law.
    """
    seed = check_seed(seed)
    clock = getattr(process, "clock", "ou")
    if clock not in ("kappa", "hidden"):
        raise ValueError(f"process must run on a token clock ('kappa' or 'hidden'), got {clock!r}")
    if getattr(process, "vocab_size", None) != grammar.vocab_size or process.length != grammar.length:
        raise ValueError(
            f"process: vocabulary/length {process.vocab_size}/{process.length} do not match the grammar's "
            f"{grammar.vocab_size}/{grammar.length} (vocabulary mismatch)"
        )
    if x0 is None:
        x0 = grammar.sample(check_positive_int(n_sources, "n_sources"), torch.Generator().manual_seed(seed))[
            0
        ]
    if times is None:
        times = [i / 8 for i in range(9)] if clock == "kappa" else list(range(grammar.length + 1))
    features = grammar.features()
    kw = dict(delta=delta, n_boot=n_boot, seed=seed, progress=progress)
    forks = [t for t in times if t > 0]
    result = atlas(
        process,
        features,
        x0=x0,
        times=times,
        n_per_time=n_per_time,
        n_trajectories=n_trajectories,
        n_clones=n_clones,
        clone_times=forks,
        cloning=cloning,
        theory=False,
        eps=eps,
        **kw,
    )
    if theory:
        result.theory = grammar_theory(grammar, "mask" if clock == "kappa" else "autoregressive", eps)
    exact = forward_reverse(
        exact_process(grammar, clock, times),
        x0,
        times,
        n_per_time,
        feature=features,
        seed=derive_seed(seed, "exact"),
        progress=progress,
    )
    result.like_for_like = feature_estimates(exact, features, delta, n_boot, seed)
    result.metadata.update(clock=clock, grammar=grammar.describe(), eps=eps)
    return result
