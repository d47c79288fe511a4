"""The layout DESIGN.md promises: layers import only downwards, no import cycles, no oversized files."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# DESIGN.md's layers, bottom to top; a module may import its own layer or any layer below.
# The fifth layer holds two wings, theory and the engine (experiments), which never import each other
# (WINGS); the adapters and models above the engine never import the theory either.
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
        "critwin._stats",
    ),
    ("critwin.clock",),
    ("critwin.mixtures",),
    ("critwin.samplers", "critwin.io_mixture"),
    ("critwin.theory", "critwin.experiments"),
    ("critwin.adapters", "critwin.models"),
    ("critwin.diagnostics",),
    ("critwin.report", "critwin.cli", "critwin.__main__", "critwin"),
]
# importer prefix -> prefixes it must never import, whatever the layers allow.
FORBIDDEN = {
    "critwin.theory": ("critwin.experiments", "critwin.adapters", "critwin.models"),
    "critwin.experiments": ("critwin.theory",),
    "critwin.adapters": ("critwin.theory",),
    "critwin.models": ("critwin.theory",),
}
# Importers still allowed to take private names of other modules (the theory wing's own clean-up is
# another change; drop the entry when it lands).
PRIVATE_IMPORTS_ALLOWED = ()
ROOT_MODULES_MAX = 14
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
    return _imports_text(path.read_text(), modules)


def _imports_text(text: str, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(text)):
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


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _wing_violations(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} -> {dep}"
        for name, deps in edges.items()
        for importer, banned in FORBIDDEN.items()
        if _within(name, importer)
        for dep in deps
        if any(_within(dep, b) for b in banned)
    )


def test_wings_never_import_each_other():
    modules = _modules()
    assert _wing_violations({name: _imports(path, modules) for name, path in modules.items()}) == []


def test_wing_rule_can_fail():
    edges = {
        "critwin.experiments.search": {"critwin.theory.windows", "critwin.clock"},
        "critwin.models.shapes.data": {"critwin.theory"},
        "critwin.theory.tree": {"critwin.experiments.features", "critwin.mixtures"},
        "critwin.diagnostics.feature_atlas": {"critwin.theory.tree", "critwin.experiments"},
    }
    assert _wing_violations(edges) == [
        "critwin.experiments.search -> critwin.theory.windows",
        "critwin.models.shapes.data -> critwin.theory",
        "critwin.theory.tree -> critwin.experiments.features",
    ]


def test_package_root_is_small():
    """The core's files at the package root (the wings and the layers above are subpackages)."""
    root = sorted(p.name for p in (SRC / "critwin").glob("*.py"))
    assert len(root) <= ROOT_MODULES_MAX, root


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


def _private_imports(text: str) -> list[str]:
    """``module._name`` for every private name ``text`` imports from a critwin module (a public name
    from a private module, ``critwin._version.__version__``, is fine)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "critwin":
            found += [
                f"{node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


def test_no_private_name_imported_across_modules():
    offenders = {
        name: found
        for name, path in _modules().items()
        if not any(_within(name, allowed) for allowed in PRIVATE_IMPORTS_ALLOWED)
        and (found := _private_imports(path.read_text()))
    }
    assert offenders == {}


def test_private_import_rule_can_fail():
    text = "from critwin.experiments.process import _check_span, as_process\nimport critwin._io"
    assert _private_imports(text) == ["critwin.experiments.process._check_span"]
    assert _private_imports("from critwin._version import __version__\n") == []
