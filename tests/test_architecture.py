"""The layout DESIGN.md promises: layers import only downwards, no import cycles, no oversized files."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# DESIGN.md's layers, bottom to top; a module may import its own layer or any layer below.
LAYERS = [
    (
        "critwin._io",
        "critwin._files",
        "critwin._validation",
        "critwin._lazy",
        "critwin._version",
        "critwin._memory",
        "critwin._display",
        "critwin._threads",
    ),
    ("critwin.clock",),
    ("critwin.mixtures",),
    ("critwin.samplers",),
    (
        "critwin.gaussian_divergences",
        "critwin.divergence",
        "critwin.windows",
        "critwin.closed_forms",
        "critwin.span",
        "critwin.span_crossings",
        "critwin.tree",
        "critwin.io_mixture",
    ),
    ("critwin.experiments",),
    ("critwin.adapters", "critwin.models"),
    ("critwin.diagnostics",),
    ("critwin.report", "critwin.cli", "critwin.__main__", "critwin"),
]
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "critwin").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is in no layer of DESIGN.md"
    return rank


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found.update(n for n in names if n in modules)
    return found


def test_layers_import_only_downwards():
    modules = _modules()
    upward = [
        f"{name} -> {dep}"
        for name, path in modules.items()
        for dep in _imports(path, modules)
        if _layer(dep) > _layer(name)
    ]
    assert upward == []


def test_no_import_cycles():
    modules = _modules()
    # A package importing its own submodules (re-exports) is not a cycle edge.
    graph = {
        name: {d for d in _imports(path, modules) if d != name and not d.startswith(name + ".")}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_no_source_file_over_the_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
