"""Adapters that turn third-party generative models into :class:`critwin.experiments.process.ReverseProcess`.

``critwin.adapters.diffusers`` wraps diffusers UNets, schedulers and pipelines. Submodules are imported on
demand so that ``import critwin.adapters`` does not import diffusers.
"""

from __future__ import annotations

__all__ = ["diffusers"]
