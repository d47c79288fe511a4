"""The atlas's theory: a Gaussian mixture fitted to attribute-labelled data, its ε-tree, and each
attribute's merge time with its bracket (docs/theory.md §7).

One component per combination of attribute values, one shared isotropic variance (so the tree is
built with ``hierarchy(method="fast")``). Each internal node of the tree is a level; the attribute
that splits it is the one whose values differ between its children. An attribute's predicted decision
time is its levels' merge time — ``max`` over the children of ``T_end(child, level)``, bracketed —,
and the tree node's own time is kept beside it as ``t_bound``, an upper bound. Two attributes are
ordered only where their brackets are disjoint (:func:`critwin._stats.interval_order`), "tied"
otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from critwin._stats import interval_order, order_text
from critwin._validation import check_finite, check_labels
from critwin.mixtures import GaussianMixture
from critwin.theory.tree import Tree, hierarchy, merge_times

__all__ = [
    "MIXED",
    "AttributeData",
    "check_attribute_data",
    "fit_attribute_mixture",
    "tree_levels",
    "theory_prediction",
]

MIXED = "mixed"
"""Label of a tree level that no single attribute splits."""


class AttributeData(NamedTuple):
    """Checked attribute-labelled data: ``images`` (n, ...) and ``attributes`` ``{name: (n,) long}``."""

    images: torch.Tensor
    attributes: dict[str, torch.Tensor]


def check_attribute_data(data, names) -> AttributeData:
    """The images and the attributes ``names`` (those the theory needs) of ``data``: an object with
    ``.images`` and ``.attributes``, or such a pair."""
    if hasattr(data, "attributes") and hasattr(data, "images"):
        images, attributes = data.images, data.attributes
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, attributes = data
    else:
        raise ValueError(
            "data must have .images and .attributes (e.g. make_shapes(...)) or be a pair (images, "
            f"attributes), got {type(data).__name__}"
            + (f" of {len(data)} items" if isinstance(data, (tuple, list)) else "")
        )
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or not images.is_floating_point():
        raise ValueError("data: images must be a floating-point tensor (n, ...)")
    check_finite(images, "data: images")
    if not isinstance(attributes, Mapping):
        raise ValueError("data: attributes must be a mapping name -> (n,) integer labels")
    out = {}
    for name in names:
        if name not in attributes:
            raise ValueError(f"data: attributes has no {name!r}; it has {', '.join(map(repr, attributes))}")
        expected = f"data: attribute {name!r} must hold (n,) = ({images.shape[0]},) integer labels >= 0"
        try:
            labels = check_labels(attributes[name], "labels")
        except ValueError as exc:
            raise ValueError(f"{expected} ({exc})") from None
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{expected}, got shape {tuple(torch.as_tensor(attributes[name]).shape)}")
        out[name] = labels
    return AttributeData(images, out)


def fit_attribute_mixture(
    images, attributes: Mapping[str, torch.Tensor]
) -> tuple[GaussianMixture, torch.Tensor]:
    """One Gaussian per observed combination of ``attributes`` with one shared isotropic variance.

    Parameters
    ----------
    images : (n, ...) data.  attributes : {name: (n,) long} (at least one).

    Returns
    -------
    mixture : ``GaussianMixture`` (K, d) float64: combination means, ``sigma^2`` = pooled
        within-combination variance per coordinate, weights = combination frequencies.
    combos : (K, A) long attribute values of each component (columns in the order of ``attributes``).
    """
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    values = torch.stack([attributes[name] for name in attributes], 1)
    combos, inverse, counts = torch.unique(values, dim=0, return_inverse=True, return_counts=True)
    K, (n, d) = combos.shape[0], flat.shape
    if n <= K:
        raise ValueError(f"data: {n} images cannot fit {K} attribute combinations (need more images)")
    means = torch.zeros(K, d, dtype=torch.float64).index_add_(0, inverse, flat) / counts[:, None]
    # numpy's sum: its order does not depend on torch's thread count (torch's parallel sum's does)
    residual = np.square((flat - means[inverse]).numpy()).sum()
    variance = float(residual) / ((n - K) * d)
    if not variance > 0:
        raise ValueError("data: the images do not vary within attribute combinations (variance 0)")
    weights = counts.to(torch.float64) / n
    return GaussianMixture(means, torch.full((K,), variance, dtype=torch.float64), weights), combos


def tree_levels(tree: Tree, combos: torch.Tensor, names) -> list[dict[str, Any]]:
    """Every internal node of ``tree`` (pre-order, as ``tree.root.walk()``) as a level: ``t_bound`` (the
    node's time, a sure upper bound on its merge time), depth, size and the attribute that splits it
    (values pairwise disjoint between its children; :data:`MIXED` if none, ``a+b`` if several)."""
    levels = []

    def visit(node, depth):
        if node.is_leaf:
            return
        splits = []
        for a, name in enumerate(names):
            seen: set[int] = set()
            disjoint = True
            for child in node.children:
                child_values = set(combos[child.components, a].tolist())
                disjoint = disjoint and not (child_values & seen)
                seen |= child_values
            if disjoint:
                splits.append(name)
        levels.append(
            {
                "t_bound": node.time,
                "depth": depth,
                "components": len(node.components),
                "children": len(node.children),
                "attribute": "+".join(splits) if splits else MIXED,
                "separated": node.separated,
            }
        )
        for child in node.children:
            visit(child, depth + 1)

    visit(tree.root, 0)
    return levels


def theory_prediction(images, attributes, eps: float) -> tuple[dict[str, Any], GaussianMixture]:
    """The fitted mixture's ε-tree read attribute by attribute (see the module notes).

    Returns
    -------
    theory : ``{"fit", "components", "dim", "variance", "eps", "levels", "attributes", "order",
        "order_text", "ties"}``; per attribute ``t_merge`` (its merge time), ``t_merge_bracket``
        ``[low, high]``, ``t_bound`` (the tree's upper bound) and ``levels`` (how many it splits).
    mixture : the fitted :class:`GaussianMixture`.
    """
    gmm, combos = fit_attribute_mixture(images, attributes)
    names = list(attributes)
    # Not collapsed: every merge of the complete linkage is a level, whether or not the node passes the
    # strict separation check (TV >= 1 - eps^2), which is recorded per level.
    tree = hierarchy(gmm, eps, method="fast", windows=False, collapse=False)
    levels = tree_levels(tree, combos, names)
    nodes = [node for node in tree.root.walk() if not node.is_leaf]  # the levels' nodes, same order
    _level_merge_times(gmm, eps, nodes, levels, names)
    per_attribute = {name: _attribute_times(name, levels) for name in names}
    intervals = {n: v["t_merge_bracket"] for n, v in per_attribute.items() if v["t_merge"] is not None}
    order = sorted(intervals, key=lambda n: -per_attribute[n]["t_merge"])
    theory = {
        "fit": "one Gaussian per attribute combination, shared isotropic variance (pooled within)",
        "components": int(gmm.n_components),
        "dim": int(gmm.dim),
        "variance": float(gmm.covs[0]),
        "eps": eps,
        "merge_time": "a level's merge time is max over its children of T_end(child, level) = "
        "inf{t : TV(p_t^child, p_t^level) <= eps}, bracketed; t_bound is the tree node's time (largest "
        "pairwise component merge time), a sure upper bound on it. Levels left at t_merge null have a "
        "bound below their attribute's merge bracket: their merge time is surely smaller.",
        "levels": levels,
        "attributes": per_attribute,
        "order": order,
        "order_text": order_text(order, intervals),
        "ties": _ties(order, intervals),
    }
    return theory, gmm


def _level_merge_times(gmm, eps: float, nodes, levels, names) -> None:
    """Add ``t_merge``/``t_merge_low``/``t_merge_high``/``method`` to the levels an attribute splits.

    Only the levels that can hold their attribute's largest merge time are computed: first each
    attribute's level with the largest bound, then every level whose bound reaches the low end of its
    attribute's bracket so far (a level's merge time is at most its bound, so the others cannot matter).
    """
    for level in levels:
        level.update(t_merge=None, t_merge_low=None, t_merge_high=None, method=None)
    owned = {name: [k for k, lv in enumerate(levels) if name in lv["attribute"].split("+")] for name in names}
    first = {max(ks, key=lambda k: levels[k]["t_bound"]) for ks in owned.values() if ks}
    _compute_levels(gmm, eps, nodes, levels, sorted(first))
    more = set()
    for ks in owned.values():
        floor = max((levels[k]["t_merge_low"] for k in ks if levels[k]["t_merge"] is not None), default=None)
        if floor is not None:
            more |= {k for k in ks if levels[k]["t_merge"] is None and levels[k]["t_bound"] >= floor}
    _compute_levels(gmm, eps, nodes, levels, sorted(more))


def _compute_levels(gmm, eps: float, nodes, levels, which: list[int]) -> None:
    """The merge time of each level in ``which``: its children's merge times into it, all at once."""
    pairs = [(child.components, nodes[k].components) for k in which for child in nodes[k].children]
    results = iter(merge_times(gmm, pairs, eps, method="fast"))
    for k in which:
        merges = [next(results) for _ in nodes[k].children]
        levels[k].update(
            t_merge=max(m[0] for m in merges),
            t_merge_low=max(m[1] for m in merges),
            t_merge_high=max(m[2] for m in merges),
            method="+".join(sorted({m[3] for m in merges})),
        )


def _attribute_times(name: str, levels) -> dict[str, Any]:
    """An attribute's merge time (the largest of its levels', bracket ``[max lows, max highs]``) and its
    bound (the largest node time of its levels)."""
    mine = [lv for lv in levels if name in lv["attribute"].split("+")]
    merged = [lv for lv in mine if lv["t_merge"] is not None]
    if not merged:
        return {"t_merge": None, "t_merge_bracket": [None, None], "t_bound": None, "levels": len(mine)}
    return {
        "t_merge": max(lv["t_merge"] for lv in merged),
        "t_merge_bracket": [
            max(lv["t_merge_low"] for lv in merged),
            max(lv["t_merge_high"] for lv in merged),
        ],
        "t_bound": max(lv["t_bound"] for lv in mine),
        "levels": len(mine),
    }


def _ties(order: list[str], intervals: Mapping[str, Any]) -> list[list[str]]:
    """Every pair of ``order`` whose intervals overlap (:func:`critwin._stats.interval_order`)."""
    return [
        [a, b]
        for i, a in enumerate(order)
        for b in order[i + 1 :]
        if interval_order(intervals[a], intervals[b]) == 0
    ]
