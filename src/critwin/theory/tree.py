"""The eps-mixture tree of a mixture (docs/theory.md §7, Blink Def. 8): diffusion as a hierarchical sampler.

Construction: the pairwise merge time ``tau_ij = inf{t : TV(p_t^i, p_t^j) <= eps}`` is non-increasing
in the TV, so "every pair of leaves under u is eps-close at T_u" holds exactly for
``T_u = max_{i,j in u} tau_ij``: agglomerative merging in order of merge time is complete linkage on
``tau``. Each node is then verified:

- *merged*: ``TV(p^i_{T_u}, p^j_{T_u}) <= eps`` for every pair of its components;
- *separated*: ``TV(p^{Subset(u)}_{T_u}, p^{rest}_{T_u}) >= 1 - eps^2`` (the root is vacuously separated).

Each check is decided from the interval of the TV (Monte Carlo confidence interval or quadrature error
bracket), not its point estimate: True, False, or None when the interval straddles the threshold
("undetermined"). Likewise each node's window has a three-valued ``status``; the dendrogram draws
non-empty windows blue, empty ones red and hatched, undetermined ones grey and cross-hatched.

An internal node that is not separated at its own time is not a level of the hierarchy (its merge is
indistinguishable from its parent's), so by default it is dissolved into its parent, which makes the
tree multi-way. Each non-root node carries the critical window of its subset inside its parent's
subset; nodes whose window is empty or undetermined are marked (never dropped). Monte Carlo (only when no
exact TV exists) is seeded with ``DEFAULT_SEED`` = 0 unless a ``torch.Generator`` is given.

A :class:`~critwin.mixtures.CategoricalMixture` gets the same tree on its own clock (kappa or hidden
positions, :class:`critwin.theory.discrete_times.CategoricalEngine`); ``Tree.clock`` and every node's
window say which.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from critwin._display import axes, format_number, set_label, short_repr
from critwin._io import PNG_SOFTWARE, atomic_path
from critwin._validation import check_eps, check_subset
from critwin.mixtures import CategoricalMixture, GaussianMixture
from critwin.theory.discrete_times import CLOCK_LABELS, CategoricalEngine, clock_of
from critwin.theory.tree_engines import SpanEngine, decide, gaussian_engine
from critwin.theory.windows import (
    Crossing,
    Window,
    check_search,
    window_from_times,
)

__all__ = ["Node", "Tree", "hierarchy", "merge_times"]


def _window_dict(window: Window) -> dict:
    """A node's window for JSON, without ``after``/``before``: the tree says them (the node's and its
    parent's components), and at K = 1000 repeating the parent's list per child made the file 18 MB."""
    return {k: v for k, v in window.to_dict().items() if k not in ("after", "before")}


def _json_float(t):
    return t if isinstance(t, float) and math.isfinite(t) else None


@dataclass(eq=False)
class Node:
    """A node of the eps-mixture tree.

    Attributes
    ----------
    components : sorted component indices under the node (``Subset(u)``).
    time : ``T_u`` (OU time at which its components are eps-merged; 0 for a leaf).
    children : child nodes (empty for a leaf).
    merged, separated : the two verified properties at ``time``: True, False, or None (undetermined:
        the TV's interval straddles the threshold).
    separation_tv : ``TV(p^{Subset(u)}, p^{rest})`` at ``time`` (None for the root), with
        ``separation_tv_low``/``separation_tv_high`` its interval.
    window : critical window of ``components`` inside the parent's (None for the root).
    """

    components: list[int]
    time: float
    children: list[Node] = field(default_factory=list)
    merged: bool | None = True
    separated: bool | None = True
    separation_tv: float | None = None
    separation_tv_low: float | None = None
    separation_tv_high: float | None = None
    window: Window | None = None
    parent: Node | None = field(default=None, repr=False)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def status(self) -> str:
        """The window's ``"non-empty"`` / ``"empty"`` / ``"undetermined"`` (the root: ``"non-empty"``)."""
        return "non-empty" if self.window is None else self.window.status

    @property
    def empty(self) -> bool:
        """True when the node's window is surely empty (``status == "empty"``)."""
        return self.status == "empty"

    def to_dict(self) -> dict:
        """JSON-ready dict of the subtree; the window's ``after``/``before`` sets are left out (they are
        this node's and its parent's ``components``)."""
        return {
            "components": list(self.components),
            "time": _json_float(self.time),
            "merged": self.merged,
            "separated": self.separated,
            "separation_tv": self.separation_tv,
            "separation_tv_low": self.separation_tv_low,
            "separation_tv_high": self.separation_tv_high,
            "window": None if self.window is None else _window_dict(self.window),
            "status": self.status,
            "empty": self.empty,
            "children": [c.to_dict() for c in self.children],
        }

    def __repr__(self) -> str:
        w = {} if self.window is None else {"window": list(self.window), "status": self.status}
        return short_repr("Node", {"components": set_label(self.components), "time": self.time, **w})

    def walk(self):
        """Pre-order iterator over this node and its descendants."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(eq=False)
class Tree:
    """An eps-mixture tree: ``root`` (all components), ``eps``, and helpers to print, export and draw.

    ``clock``: what the node times measure: ``"ou"`` (OU time), ``"kappa"`` or ``"hidden"`` (a
    CategoricalMixture's level).

    Examples
    --------
    >>> import torch, critwin
    >>> means = torch.tensor([[-120.0, -5.0], [-120.0, 5.0], [120.0, -5.0], [120.0, 5.0]])
    >>> tree = critwin.hierarchy(critwin.GaussianMixture(means.double()), eps=0.1)
    >>> print(tree)  # doctest: +ELLIPSIS
    {0,1,2,3}  T=6.863
    ├── {0,1}  T=3.684  window=[3.842, 6.161]
    │   ├── {0}  T=0  window=[...]
    ...
    """

    root: Node
    eps: float
    clock: str = "ou"

    @property
    def nodes(self) -> list[Node]:
        return list(self.root.walk())

    @property
    def leaves(self) -> list[Node]:
        return [n for n in self.root.walk() if n.is_leaf]

    @property
    def depth(self) -> int:
        def d(n):
            return 0 if n.is_leaf else 1 + max(d(c) for c in n.children)

        return d(self.root)

    def find(self, components) -> Node | None:
        """The node whose subset is exactly ``components`` (None if there is none)."""
        target = sorted(int(c) for c in components)
        return next((n for n in self.root.walk() if n.components == target), None)

    def __repr__(self) -> str:
        fields = {"eps": self.eps, "components": len(self.root.components), "nodes": len(self.nodes)}
        fields.update(depth=self.depth, root_time=self.root.time, clock=self.clock)
        return short_repr("Tree", fields)

    def to_dict(self) -> dict:
        return {"eps": self.eps, "clock": self.clock, "depth": self.depth, "root": self.root.to_dict()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self) -> str:
        """Indented text drawing of the tree with times, checks and windows."""
        lines: list[str] = []

        def label(n: Node) -> str:
            text = set_label(n.components) + f"  T={format_number(n.time)}"
            if n.window is not None:
                w = n.window
                text += f"  window=[{format_number(w.t_after)}, {format_number(w.t_before)}]"
                if w.status != "non-empty":
                    text += "  " + w.status.upper()
            flags = [
                name if ok is False else name + "?"
                for name, ok in (("not-merged", n.merged), ("not-separated", n.separated))
                if ok is not True
            ]
            if flags:
                text += "  (" + ", ".join(flags) + ")"
            return text

        def rec(n: Node, prefix: str, last: bool, top: bool):
            lines.append(label(n) if top else prefix + ("└── " if last else "├── ") + label(n))
            child_prefix = "" if top else prefix + ("    " if last else "│   ")
            for k, c in enumerate(n.children):
                rec(c, child_prefix, k == len(n.children) - 1, False)

        rec(self.root, "", True, True)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def plot(self, ax=None, path=None, max_leaves: int = 60):
        """Dendrogram with OU time on the vertical axis; each node's window is drawn as a band, the bands'
        legend beside the axes (right of them: it never covers the tree).

        Parameters
        ----------
        ax : matplotlib Axes (a new figure if None).  path : if given, save the figure there (PNG).
        max_leaves : above this many leaves the leaves are unlabelled, their edges thin and grey, their
            windows thin lines coloured by status, the root and its children are labelled with their
            sizes, and the figure width is capped.

        Returns
        -------
        The matplotlib Axes (its ``.figure`` is the figure).
        """
        many = len(self.leaves) > max_leaves
        if ax is None:
            ax = axes()
            ax.figure.set_size_inches(min(16.0, max(4.0, 0.6 * len(self.leaves) + 2)), 4.5)
        fig = ax.figure
        x_of = _leaf_positions(self)
        top = _top_time(self.nodes)
        _draw_edges(ax, self.nodes, x_of, many)
        for n in self.nodes:
            # With many leaves their windows are thin lines (a band would be thinner than a pixel).
            if n.window is not None and not (many and n.is_leaf):
                _window_band(ax, n.window, x_of[id(n)], top)
        if many:
            _leaf_window_lines(ax, self.leaves, x_of, top)
        shown = [n for n in self.nodes if not (many and n.is_leaf)]
        ax.scatter([x_of[id(n)] for n in shown], [n.time for n in shown], s=14, color="k", zorder=3)
        _label_leaves(ax, self, x_of, many)
        ax.set_xlabel("component")
        ax.set_ylabel(CLOCK_LABELS.get(self.clock, self.clock))
        ax.set_ylim(0, top)
        ax.set_title(f"eps-mixture tree (eps={self.eps:g}); bands: critical windows")
        # beside the axes: inside, the legend covered the top merge
        ax.legend(
            handles=_legend_handles(),
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
        )
        if path is not None:
            with atomic_path(path) as tmp:
                fig.savefig(
                    tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": PNG_SOFTWARE}
                )
        return ax


def _leaf_positions(tree: Tree) -> dict[int, float]:
    """x of every node (by ``id``): leaves at 0, 1, 2, ..., an internal node at its children's mean."""
    x_of = {id(leaf): float(k) for k, leaf in enumerate(tree.leaves)}

    def place(n: Node) -> float:
        if id(n) not in x_of:
            x_of[id(n)] = sum(place(c) for c in n.children) / len(n.children)
        return x_of[id(n)]

    place(tree.root)
    return x_of


def _top_time(nodes) -> float:
    """The top of the dendrogram's time axis: 10% above the largest finite node time or window end."""
    finite_times = [n.time for n in nodes if math.isfinite(n.time)]
    for n in nodes:
        w = n.window
        if w is not None:
            finite_times += [v for v in (w.t_after, w.t_before) if math.isfinite(v)]
    return max(finite_times + [1.0]) * 1.1


def _label_leaves(ax, tree: Tree, x_of, many: bool) -> None:
    """Leaf labels, or (with many leaves) none but the sizes of the root and its children."""
    if not many:
        ax.set_xticks([x_of[id(leaf)] for leaf in tree.leaves])
        ax.set_xticklabels([",".join(map(str, leaf.components)) for leaf in tree.leaves])
        return
    ax.set_xticks([])
    for n in [tree.root, *tree.root.children]:
        if not n.is_leaf:
            ax.annotate(
                f"{len(n.components)}",
                (x_of[id(n)], n.time),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )


def _draw_edges(ax, nodes, x_of, many: bool) -> None:
    """The dendrogram's edges as one line collection (thin and grey with many leaves)."""
    from matplotlib.collections import LineCollection

    segments = []
    for n in nodes:
        if n.children:
            xs = [x_of[id(c)] for c in n.children]
            segments.append([(min(xs), n.time), (max(xs), n.time)])
            segments += [[(x_of[id(c)], c.time), (x_of[id(c)], n.time)] for c in n.children]
    ax.add_collection(
        LineCollection(segments, colors="0.6" if many else "k", linewidths=0.3 if many else 1.2)
    )
    ax.set_xlim(-0.5, max(x_of.values(), default=0.0) + 0.5)


def _leaf_window_lines(ax, leaves, x_of, top: float) -> None:
    """Each leaf's window as a vertical line at the leaf, about as wide as the leaf's share of the axis."""
    from matplotlib.collections import LineCollection

    width = max(0.3, 0.8 * ax.figure.get_figwidth() * 72 / max(1, len(leaves)))  # points
    for status, (color, _, _) in _BAND_STYLE.items():
        segments = [
            [(x_of[id(n)], _finite(n.window.t_after, 0.0)), (x_of[id(n)], _finite(n.window.t_before, top))]
            for n in leaves
            if n.window is not None and n.window.status == status
        ]
        lines = LineCollection(segments, colors=color, linewidths=width, alpha=0.6, zorder=2)
        lines.set_label(f"_leaf windows: {status}")  # "_": not in the legend
        ax.add_collection(lines)


def _finite(t: float, default: float) -> float:
    return t if math.isfinite(t) else default


# window status -> (colour, hatch, legend label) of its band in the dendrogram
_BAND_STYLE = {
    "non-empty": ("tab:blue", None, "window"),
    "empty": ("tab:red", "//", "empty window"),
    "undetermined": ("0.5", "xx", "undetermined (CIs straddle)"),
}


def _window_band(ax, w: Window, x: float, top: float) -> None:
    import matplotlib.patches

    lo, hi = _finite(w.t_after, 0.0), _finite(w.t_before, top)
    color, hatch, _ = _BAND_STYLE[w.status]
    ax.add_patch(
        matplotlib.patches.Rectangle(
            (x - 0.18, min(lo, hi)),
            0.36,
            abs(hi - lo),
            facecolor=color,
            edgecolor=color,
            alpha=0.3,
            hatch=hatch,
            lw=0,
        )
    )


def _legend_handles():
    import matplotlib.patches

    return [
        matplotlib.patches.Patch(facecolor=c, edgecolor=c, alpha=0.3, hatch=h, label=label)
        for c, h, label in _BAND_STYLE.values()
    ]


_METHODS = ("auto", "exact", "fast")


def hierarchy(
    mixture: GaussianMixture,
    eps: float = 0.1,
    *,
    collapse: bool = True,
    windows: bool = True,
    n: int = 10000,
    generator: torch.Generator | None = None,
    tol: float = 1e-4,
    method: str = "auto",
    progress=None,
    refine: bool | None = None,
) -> Tree:
    """Build and verify the eps-mixture tree of ``mixture``.

    Parameters
    ----------
    mixture : GaussianMixture with K >= 1 components, or a CategoricalMixture (times are then levels on
        its ``clock``; methods ``"auto"`` or ``"exact"`` (every TV by enumeration)).
    eps : in (0, 1).
    collapse : dissolve internal nodes that are surely not separated at their own time (module notes).
    windows : compute each node's critical window (inside its parent).
    n, generator : Monte Carlo draws and generator where no exact TV exists (None: seeded with
        ``DEFAULT_SEED`` = 0, so the tree is the same on every call).
    tol : bisection tolerance in OU time, in (0, 1). With ``"fast"``, a Monte Carlo crossing stops at
        ``max(tol, 1/16 of its confidence bracket)`` (:mod:`critwin.theory.span_crossings`); sure brackets
        hold either way.
    method : ``"fast"`` (components sharing one isotropic covariance: closed-form pairwise merge times,
        sure bounds, Monte Carlo in the span of the means only where the bounds do not decide; never a
        (d, d) matrix), ``"exact"`` (pairwise bisection and a TV per check, any mixture), or ``"auto"``
        (``"fast"`` when it applies).
    progress : optional callable ``progress(stage, done, total)`` called as the work advances (stages
        ``"pairs"``, ``"verify"``, ``"windows"``).
    refine : with ``"fast"``, whether to bisect every window endpoint's Monte Carlo bracket to its
        resolution (True), or to refine an endpoint only while the status of a window it enters is
        undetermined (False): where the sure bounds decide every window it enters it keeps its sure
        bracket (method ``"bounds"``, value its middle, no Monte Carlo), else the Monte Carlo
        bracket that decided them (wider than the refined one, at the same confidence level:
        docs/theory.md §9). The tree is the same either way, and so is a status the sure bounds
        decide (one that Monte Carlo decides, up to its draws); ``False`` is 20x faster on a dense
        cloud of 1,500 components in d = 2. None (default): True up to ``REFINE_ALL_UP_TO``
        components, False above. Other methods always refine.

    Returns
    -------
    Tree whose ``root`` covers every component; nodes have ``.components``, ``.time``, ``.children``.

    Examples
    --------
    Two clusters 240 apart, each of two components 10 apart: the tree splits the clusters first (at
    the larger time), then each cluster into its components.

    >>> import torch, critwin
    >>> means = torch.tensor([[-120.0, -5.0], [-120.0, 5.0], [120.0, -5.0], [120.0, 5.0]])
    >>> tree = critwin.hierarchy(critwin.GaussianMixture(means.double()), eps=0.1)
    >>> [sorted(node.components) for node in tree.root.children]
    [[0, 1], [2, 3]]
    >>> [round(node.time, 1) for node in tree.root.children]
    [3.7, 3.7]
    """
    discrete = isinstance(mixture, CategoricalMixture)
    if not (discrete or isinstance(mixture, GaussianMixture)):
        raise ValueError(
            f"mixture must be a GaussianMixture or a CategoricalMixture, got {type(mixture).__name__}"
        )
    eps = check_eps(eps)
    check_search(tol, n, generator)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {type(progress).__name__}")
    kw = dict(n=n, generator=generator, tol=tol)
    if discrete:
        engine = CategoricalEngine(mixture, eps, kw, method)
    else:
        engine = gaussian_engine(mixture, eps, method, kw)
    refine = _check_refine(refine, engine.K)
    report = progress or (lambda stage, done, total: None)
    root, spreads = _complete_linkage(engine, report)
    _verify(root, spreads, engine, report)
    _dissolve(root, collapse)
    _link_parents(root)
    if windows:
        _attach_windows(root, engine, report, refine)
    clock = clock_of(mixture)
    for node in root.walk():
        if node.window is not None:
            node.window = replace(node.window, clock=clock)
    return Tree(root, eps, clock)


def merge_times(
    mixture: GaussianMixture,
    pairs,
    eps: float = 0.1,
    *,
    n: int = 10000,
    generator: torch.Generator | None = None,
    tol: float = 1e-4,
    method: str = "auto",
) -> list[tuple[float, float, float, str]]:
    """``T_end(A, B) = inf{t : TV(p_t^A, p_t^B) <= eps}`` for every pair ``A ⊆ B``, all at once, by the
    engine of :func:`hierarchy` (so with the brackets of its windows' merge times, before the separation
    condition of ``T_before`` is applied).

    A node's ``time`` is the largest merge time of two of its *components*, a sure upper bound on when
    its sub-mixtures merge (TV between mixtures <= the largest TV between components); this gives those.

    Parameters
    ----------
    mixture : GaussianMixture.
    pairs : sequence of ``(A, B)`` component lists with ``A ⊆ B`` (e.g. a node and its parent).
    eps, n, generator, tol, method : as :func:`hierarchy`.

    Returns
    -------
    list of ``(time, low, high, method)``, one per pair, as :func:`critwin.theory.windows.merge_time`.

    Examples
    --------
    >>> import torch
    >>> from critwin import GaussianMixture
    >>> gmm = GaussianMixture(torch.tensor([[-4.0, 0.0], [0.0, 0.0], [4.0, 0.0]]))
    >>> pairs = [([0], [0, 1, 2]), ([0, 1], [0, 1, 2])]
    >>> [round(t, 2) for t, *_ in merge_times(gmm, pairs, method="exact")]  # quadrature in the span
    [2.76, 2.04]
    >>> [low <= t <= high for t, low, high, _ in merge_times(gmm, pairs)]  # Monte Carlo brackets
    [True, True]
    """
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    eps = check_eps(eps)
    check_search(tol, n, generator)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    requests = []
    for A, B in pairs:
        A, B = check_subset(A, mixture.n_components, "A"), check_subset(B, mixture.n_components, "B")
        if not set(A) <= set(B):
            raise ValueError(f"pairs: A must be a subset of B, got A={A}, B={B}")
        requests.append((A, B))
    engine = gaussian_engine(mixture, eps, method, dict(n=n, generator=generator, tol=tol))
    return engine.times(requests, lambda done, total: None)


def _complete_linkage(engine, report) -> tuple[Node, dict[int, float]]:
    """Agglomerative merging in order of the pairwise values: complete linkage (a cluster's value is its
    largest pairwise one), by scipy's nearest-neighbour chain in O(K^2); infinite values (pairs that
    never merge) are linked last and keep their infinite value.

    Returns the root and, for every internal node (by ``id``), its largest pairwise value."""
    K = engine.K
    values = engine.linkage_values(report).to(torch.float64).cpu().numpy()
    nodes = [Node([i], 0.0) for i in range(K)]
    if K == 1:
        return nodes[0], {}
    finite = np.isfinite(values)
    never = 2.0 * float(np.abs(values[finite]).max(initial=0.0)) + 1.0
    merges = linkage(squareform(np.where(finite, values, never), checks=False), method="complete")
    spread = [0.0] * K  # largest pairwise value inside each cluster
    for a, b, height, _ in merges:
        ca, cb = nodes[int(a)], nodes[int(b)]
        value = math.inf if height >= never else max(float(height), spread[int(a)], spread[int(b)])
        nodes.append(
            Node(
                sorted(ca.components + cb.components), max(engine.time_of(value), ca.time, cb.time), [ca, cb]
            )
        )
        spread.append(value)
    return nodes[-1], {id(node): spread[k] for k, node in enumerate(nodes) if k >= K}


def _verify(root: Node, spreads: dict[int, float], engine, report) -> None:
    """Set ``merged`` and ``separated`` of every node from the TV intervals (module notes)."""
    K, tol = engine.K, engine.tol
    nodes = list(root.walk())
    for done, node in enumerate(nodes, 1):
        if len(node.components) > 1:
            # Evaluate just past T_u: T_u is a bisection midpoint, within tol of the exact crossing.
            node.merged = engine.merged(node.components, node.time + tol, spreads[id(node)])
        report("verify", done, 2 * len(nodes))
    # pre-order, so a parent comes before its children (the root, all of K, is never checked)
    checked, requests, parents, index = [], [], [], {}
    parent_of = {id(child): node for node in nodes for child in node.children}
    for node in nodes:
        if len(node.components) < K:  # against the rest (None: the complement, made where needed)
            index[id(node)] = len(checked)
            checked.append(node)
            requests.append((node.components, None, node.time))
            parents.append(index.get(id(parent_of.get(id(node))), -1))
    for node, est in zip(checked, engine.separations(requests, parents), strict=True):
        node.separation_tv, node.separation_tv_low, node.separation_tv_high = est
        node.separated = decide(est.low, est.high, 1.0 - engine.eps**2, above=True)
    report("verify", 2 * len(nodes), 2 * len(nodes))


def _dissolve(node: Node, collapse: bool) -> None:
    """Replace internal nodes that are surely not separated by their children (bottom-up)."""
    for child in node.children:
        _dissolve(child, collapse)
    kept: list[Node] = []
    for child in node.children:
        if collapse and not child.is_leaf and child.separated is False:
            kept.extend(child.children)
        else:
            kept.append(child)
    node.children = sorted(kept, key=lambda c: c.components)


def _link_parents(node: Node) -> None:
    for child in node.children:
        child.parent = node
        _link_parents(child)


REFINE_ALL_UP_TO = 100
"""Up to this many components, ``hierarchy(refine=None)`` refines every window endpoint (a few seconds
at most on a dense cloud in d = 2); above, only those whose windows' status needs it."""


def _check_refine(refine, K: int) -> bool:
    if refine is None:
        return K <= REFINE_ALL_UP_TO
    if not isinstance(refine, bool):
        raise ValueError(f"refine must be True, False or None, got {refine!r}")
    return refine


def _attach_windows(root: Node, engine, report, refine: bool = True) -> None:
    """The critical window of every non-root node inside its parent: one merge time (node in parent)
    and one separation time per node (the parent's is its own; the root's is +inf). Unless ``refine``,
    an engine that can (:class:`critwin.theory.tree_engines.SpanEngine`) refines a time only while a
    window it enters is undetermined."""
    nodes = [node for node in root.walk() if node.parent is not None]
    requests = [(node.components, node.parent.components) for node in nodes]
    requests += [(node.components, None) for node in nodes]
    progress = lambda done, total: report("windows", done, total)  # noqa: E731
    if refine or not isinstance(engine, SpanEngine):
        times = engine.times(requests, progress)
    else:
        position = {id(node): k for k, node in enumerate(nodes)}
        windows = [
            (k, None if node.parent is root else len(nodes) + position[id(node.parent)], len(nodes) + k)
            for k, node in enumerate(nodes)
        ]
        times = engine.times(requests, progress, windows=windows)
    merged = times[: len(nodes)]
    separated = dict(zip([id(n) for n in nodes], times[len(nodes) :], strict=True))
    infinite = Crossing(math.inf, math.inf, math.inf, "closed-form")
    for node, merge in zip(nodes, merged, strict=True):
        node.window = window_from_times(
            node.components,
            node.parent.components,
            engine.eps,
            merge,
            separated.get(id(node.parent), infinite),
            separated[id(node)],
        )
