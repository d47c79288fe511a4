"""The eps-mixture tree of a mixture (THEORY §6, Blink Def. 8): diffusion as a hierarchical sampler.

Construction: the pairwise merge time ``tau_ij = inf{t : TV(p_t^i, p_t^j) <= eps}`` is non-increasing
in the TV, so "every pair of leaves under u is eps-close at T_u" holds exactly for
``T_u = max_{i,j in u} tau_ij``: agglomerative merging in order of merge time is complete linkage on
``tau``. Each node is then verified:

- *merged*: ``TV(p^i_{T_u}, p^j_{T_u}) <= eps`` for every pair of its components;
- *separated*: ``TV(p^{Subset(u)}_{T_u}, p^{rest}_{T_u}) >= 1 - eps^2`` (the root is vacuously separated).

An internal node that is not separated at its own time is not a level of the hierarchy (its merge is
indistinguishable from its parent's), so by default it is dissolved into its parent, which makes the
tree multi-way. Each non-root node carries the critical window of its subset inside its parent's
subset; nodes whose window is empty are marked (never dropped).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from critwin._validation import check_eps
from critwin.divergence import component_tv, tv
from critwin.mixtures import GaussianMixture
from critwin.windows import Window, merge_time, separation_time, window_from_times

__all__ = ["Node", "Tree", "hierarchy"]


def _fmt(t: float) -> str:
    return f"{t:.4g}" if math.isfinite(t) else ("inf" if t > 0 else "-inf")


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
    merged, separated : the two verified properties at ``time``.
    separation_tv : ``TV(p^{Subset(u)}, p^{rest})`` at ``time`` (None for the root).
    window : critical window of ``components`` inside the parent's (None for the root).
    """

    components: list[int]
    time: float
    children: list[Node] = field(default_factory=list)
    merged: bool = True
    separated: bool = True
    separation_tv: float | None = None
    window: Window | None = None
    parent: Node | None = field(default=None, repr=False)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def empty(self) -> bool:
        """True when the node's window is empty (the root has no window and is never empty)."""
        return self.window is not None and self.window.empty

    def to_dict(self) -> dict:
        return {
            "components": list(self.components),
            "time": _json_float(self.time),
            "merged": self.merged,
            "separated": self.separated,
            "separation_tv": self.separation_tv,
            "window": None if self.window is None else self.window.to_dict(),
            "empty": self.empty,
            "children": [c.to_dict() for c in self.children],
        }

    def walk(self):
        """Pre-order iterator over this node and its descendants."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(eq=False)
class Tree:
    """An eps-mixture tree: ``root`` (all components), ``eps``, and helpers to print, export and draw."""

    root: Node
    eps: float

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

    def to_dict(self) -> dict:
        return {"eps": self.eps, "depth": self.depth, "root": self.root.to_dict()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def render(self) -> str:
        """Indented text drawing of the tree with times, checks and windows."""
        lines: list[str] = []

        def label(n: Node) -> str:
            text = "{" + ",".join(map(str, n.components)) + "}" + f"  T={_fmt(n.time)}"
            if n.window is not None:
                w = n.window
                text += f"  window=[{_fmt(w.lower)}, {_fmt(w.upper)}]"
                if w.empty:
                    text += "  EMPTY"
            flags = [
                name for name, ok in (("not-merged", n.merged), ("not-separated", n.separated)) if not ok
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

    def plot(self, ax=None, path=None):
        """Dendrogram with OU time on the vertical axis; each node's window is drawn as a band.

        Parameters
        ----------
        ax : matplotlib Axes (a new figure if None).  path : if given, save the figure there (PNG).

        Returns
        -------
        The matplotlib Figure.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from critwin._io import atomic_path

        fig = ax.figure if ax is not None else plt.figure(figsize=(max(4.0, 0.6 * len(self.leaves) + 2), 4.5))
        ax = ax or fig.add_subplot(1, 1, 1)
        x_of: dict[int, float] = {}
        for k, leaf in enumerate(self.leaves):
            x_of[id(leaf)] = float(k)

        def place(n: Node) -> float:
            if id(n) not in x_of:
                x_of[id(n)] = sum(place(c) for c in n.children) / len(n.children)
            return x_of[id(n)]

        place(self.root)
        finite_times = [n.time for n in self.nodes if math.isfinite(n.time)]
        for n in self.nodes:
            w = n.window
            if w is not None:
                finite_times += [v for v in (w.lower, w.upper) if math.isfinite(v)]
        top = max(finite_times + [1.0]) * 1.1
        for n in self.nodes:
            x = x_of[id(n)]
            for c in n.children:
                ax.plot([x_of[id(c)], x_of[id(c)]], [c.time, n.time], color="k", lw=1.2)
            if n.children:
                xs = [x_of[id(c)] for c in n.children]
                ax.plot([min(xs), max(xs)], [n.time, n.time], color="k", lw=1.2)
            w = n.window
            if w is not None:
                lo = w.lower if math.isfinite(w.lower) else 0.0
                hi = w.upper if math.isfinite(w.upper) else top
                color = "tab:red" if w.empty else "tab:blue"
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        (x - 0.18, min(lo, hi)),
                        0.36,
                        abs(hi - lo),
                        color=color,
                        alpha=0.25,
                        hatch="//" if w.empty else None,
                        lw=0,
                    )
                )
        ax.scatter([x_of[id(n)] for n in self.nodes], [n.time for n in self.nodes], s=14, color="k", zorder=3)
        ax.set_xticks([x_of[id(leaf)] for leaf in self.leaves])
        ax.set_xticklabels([",".join(map(str, leaf.components)) for leaf in self.leaves])
        ax.set_xlabel("component")
        ax.set_ylabel("OU time t")
        ax.set_ylim(0, top)
        ax.set_title(f"eps-mixture tree (eps={self.eps:g}); bands: critical windows (red: empty)")
        if path is not None:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        return fig


def hierarchy(
    mixture: GaussianMixture,
    eps: float = 0.1,
    *,
    collapse: bool = True,
    windows: bool = True,
    n: int = 10000,
    generator: torch.Generator | None = None,
    tol: float = 1e-4,
) -> Tree:
    """Build and verify the eps-mixture tree of ``mixture``.

    Parameters
    ----------
    mixture : GaussianMixture with K >= 1 components.
    eps : in (0, 1).
    collapse : dissolve internal nodes that are not separated at their own time (see module notes).
    windows : compute each node's critical window (inside its parent).
    n, generator : Monte Carlo draws and generator where no exact TV exists.
    tol : bisection tolerance in OU time.

    Returns
    -------
    Tree whose ``root`` covers every component; nodes have ``.components``, ``.time``, ``.children``.
    """
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    eps = check_eps(eps)
    K = mixture.n_components
    kw = dict(n=n, generator=generator, tol=tol)
    tau = torch.zeros(K, K, dtype=torch.float64)
    for i in range(K):
        for j in range(i + 1, K):
            tau[i, j] = tau[j, i] = merge_time(mixture, [i], [j], eps, **kw)[0]

    # Complete linkage on tau: the merged cluster's time is the largest pairwise merge time inside it.
    clusters: list[Node] = [Node([i], 0.0) for i in range(K)]
    while len(clusters) > 1:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                ia, ib = clusters[a].components, clusters[b].components
                link = float(tau[ia][:, ib].max())
                if best is None or link < best[0]:
                    best = (link, a, b)
        link, a, b = best
        ca, cb = clusters[a], clusters[b]
        joined = Node(sorted(ca.components + cb.components), max(link, ca.time, cb.time), [ca, cb])
        clusters = [c for k, c in enumerate(clusters) if k not in (a, b)] + [joined]
    root = clusters[0]

    def pair_tv(i: int, j: int, t: float) -> float:
        value, exact = component_tv(mixture, i, j, t)
        return value if exact else tv(mixture.subset([i]), mixture.subset([j]), t, n, generator).value

    def verify(node: Node) -> None:
        comps = node.components
        if len(comps) > 1:
            # Evaluate just past T_u: T_u is a bisection midpoint, within tol of the exact crossing.
            t = node.time + tol
            node.merged = all(pair_tv(i, j, t) <= eps for i in comps for j in comps if i < j)
        rest = [j for j in range(K) if j not in comps]
        if rest:
            est = tv(mixture.subset(comps), mixture.subset(rest), node.time, n, generator)
            node.separation_tv = est.value
            node.separated = est.value >= 1.0 - eps * eps
        for child in node.children:
            verify(child)

    verify(root)

    def dissolve(node: Node) -> None:
        for child in node.children:
            dissolve(child)
        kept: list[Node] = []
        for child in node.children:
            if collapse and not child.is_leaf and not child.separated:
                kept.extend(child.children)
            else:
                kept.append(child)
        node.children = sorted(kept, key=lambda c: c.components)

    dissolve(root)

    def link_parents(node: Node) -> None:
        for child in node.children:
            child.parent = node
            link_parents(child)

    link_parents(root)

    if windows:
        separation_cache: dict[tuple[int, ...], tuple] = {}

        def separated(S):
            key = tuple(S)
            if key not in separation_cache:
                separation_cache[key] = separation_time(mixture, S, eps, **kw)
            return separation_cache[key]

        for node in root.walk():
            if node.parent is None:
                continue
            before = node.parent.components
            node.window = window_from_times(
                node.components,
                before,
                eps,
                merge_time(mixture, node.components, before, eps, **kw),
                separated(before),
                separated(node.components),
            )
    return Tree(root, eps)
