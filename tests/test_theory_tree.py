"""The eps-mixture tree: expected shape and times on hand-built hierarchies, verification flags,
empty windows marked, JSON export, dendrogram, bad input."""

import json
import math

import pytest
import torch
from scipy.special import erfinv

from critwin.mixtures import GaussianMixture
from critwin.theory.tree import hierarchy

F64 = torch.float64


def _pair_merge_time(distance, eps):
    """inf{t : TV(N(0, I), N(delta e, I)) <= eps} for unit Gaussians: erf(a delta / (2 sqrt 2)) = eps."""
    return math.log(distance / (2 * math.sqrt(2) * erfinv(eps)))


def _two_level(within=4.0, between=200.0, d=3):
    e = torch.eye(d, dtype=F64)
    means = torch.stack(
        [
            between / 2 * e[0] + within / 2 * e[1],
            between / 2 * e[0] - within / 2 * e[1],
            -between / 2 * e[0] + within / 2 * e[2],
            -between / 2 * e[0] - within / 2 * e[2],
        ]
    )
    return GaussianMixture(means, weights=torch.tensor([0.2, 0.3, 0.25, 0.25], dtype=F64))


def test_two_level_mixture_has_the_expected_tree():
    eps = 0.1
    tree = hierarchy(_two_level(), eps, generator=torch.Generator().manual_seed(0))
    root = tree.root
    assert root.components == [0, 1, 2, 3]
    assert [c.components for c in root.children] == [[0, 1], [2, 3]]
    for node in root.children:
        assert [c.components for c in node.children] == [[i] for i in node.components]
        assert all(c.is_leaf and c.time == 0.0 for c in node.children)
        # Complete linkage on pairwise merge times: the node time is the pair's exact merge time.
        assert node.time == pytest.approx(_pair_merge_time(4.0, eps), abs=2e-4)
        assert node.merged and node.separated and not node.empty
        # Window of the cluster inside the root: separated until T_after, merged at T_before.
        assert node.window.t_after <= node.window.t_before and node.status == "non-empty"
    # The root merges the farthest pair (distance sqrt(200^2 + 2^2 + 2^2)).
    assert root.time == pytest.approx(_pair_merge_time(math.sqrt(200**2 + 8), eps), abs=2e-4)
    assert tree.depth == 2 and len(tree.leaves) == 4
    assert tree.find([2, 3]) is root.children[1]


def test_three_equidistant_components_form_one_multiway_node():
    # An equilateral triangle (side 4) far from a fourth component: the binary merge inside the
    # triangle is not separated at its own time, so it is dissolved into a 3-way node.
    h = 4.0 * math.sqrt(3) / 2
    means = torch.tensor([[0.0, 0.0], [4.0, 0.0], [2.0, h], [300.0, 0.0]], dtype=F64)
    tree = hierarchy(GaussianMixture(means), 0.1, windows=False)
    triangle = tree.find([0, 1, 2])
    assert triangle is not None and [c.components for c in triangle.children] == [[0], [1], [2]]
    assert [c.components for c in tree.root.children] == [[0, 1, 2], [3]]
    kept = hierarchy(GaussianMixture(means), 0.1, windows=False, collapse=False)
    binary = [n for n in kept.nodes if len(n.components) == 2]
    assert len(binary) == 1 and not binary[0].separated


def test_badly_separated_leaves_are_marked_empty():
    # Leaves 4 apart are never separated at eps = 0.1 (TV = erf(sqrt 2) < 0.99): empty, not hidden.
    tree = hierarchy(_two_level(), 0.1)
    leaf = tree.find([0])
    assert leaf is not None and not leaf.separated
    assert leaf.window.empty and leaf.empty and leaf.window.t_after == -math.inf
    assert "EMPTY" in tree.render()


def test_json_export_and_dendrogram(tmp_path):
    tree = hierarchy(_two_level(within=30.0, between=3000.0), 0.1)
    data = json.loads(tree.to_json())
    assert data["root"]["components"] == [0, 1, 2, 3]
    assert [c["components"] for c in data["root"]["children"]] == [[0, 1], [2, 3]]
    assert data["root"]["children"][0]["window"]["t_after"] is not None
    path = tmp_path / "tree.png"
    ax = tree.plot(path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.get_ylabel() == "OU time t"
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_single_component_and_bad_input():
    tree = hierarchy(GaussianMixture(torch.zeros(1, 2, dtype=F64)), 0.1)
    assert tree.root.components == [0] and tree.root.is_leaf
    with pytest.raises(ValueError, match="eps"):
        hierarchy(_two_level(), 1.0)
    with pytest.raises(ValueError, match="mixture"):
        hierarchy([[0.0]], 0.1)


def test_package_attribute_callable_whatever_the_import_order():
    # The function critwin.hierarchy lives in critwin.theory.tree, so importing the module first must not
    # shadow the contract `critwin.hierarchy(mixture, eps)`. Needs a fresh interpreter.
    import subprocess
    import sys

    code = (
        "import torch, critwin.theory.tree, critwin\n"
        "m = critwin.GaussianMixture(torch.tensor([[0.0], [50.0]], dtype=torch.float64))\n"
        "print(critwin.hierarchy(m, 0.1).root.components)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1]"
