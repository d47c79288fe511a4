"""Lazy public names (PEP 562): ``import critwin`` stays fast, optional dependencies load on use."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in module ``exports[name]``.

    A resolved name is cached in the package ``namespace`` so later lookups are plain attribute reads.
    """

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__():
        return namespace["__all__"]

    return __getattr__, __dir__


class _DeferredModule:
    """Stand-in for a module bound at import time but imported on first attribute access.

    The first ``stand_in.attr`` imports the module and rebinds the global ``alias`` of ``namespace`` to it,
    so later lookups in that module are plain global reads of the real module (no indirection left).
    """

    def __init__(self, name: str, namespace: dict, alias: str) -> None:
        self._name, self._namespace, self._alias = name, namespace, alias

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        self._namespace[self._alias] = module
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def deferred_import(name: str, namespace: dict, alias: str | None = None):
    """``alias = deferred_import("torch", globals())`` in place of ``import torch as alias``.

    For modules the command line needs at start-up (option checks, registries of names, help texts):
    ``critwin --help`` and option errors must not pay for importing torch (seconds). Module-level code
    must not touch the stand-in (that would import at once); functions use it as the module.
    """
    alias = alias or name.rpartition(".")[2]
    return _DeferredModule(name, namespace, alias)
