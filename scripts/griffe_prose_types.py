"""Griffe extension for the API reference: prose after ``name :`` is a description, not a type.

critwin's numpy-style docstrings write ``x0 : (N, ...) samples in data space`` -- the text after the
colon describes the parameter. Griffe's numpy parser reads it as the parameter's *type*, which would
put the whole description in the "Type" column of the rendered table. Text that does not parse as a
Python expression (so it cannot be a type) is moved into the description, and the type falls back to
the annotation in the signature. Real types (``int``, ``torch.Tensor``, ``CloneResult``) stay.
Sphinx roles (``:class:`~critwin.x.Y```) are rendered as inline code (``Y``).

Loaded by ``mkdocs.yml`` (``extensions: [scripts/griffe_prose_types.py]``); docs build only.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import (
    DocstringAttribute,
    DocstringParameter,
    DocstringReturn,
    DocstringSectionAdmonition,
    DocstringSectionAttributes,
    DocstringSectionParameters,
    DocstringSectionReturns,
    DocstringSectionText,
    Extension,
    Object,
)

_SECTIONS = (DocstringSectionParameters, DocstringSectionAttributes, DocstringSectionReturns)
_ELEMENTS = (DocstringParameter, DocstringAttribute, DocstringReturn)
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|obj|exc|const):`(~?)([^`]+)`")


def _roles(text: str) -> str:
    """``:meth:`~a.b.c``` -> ```c```; ``:class:`a.B``` -> ```a.B```."""
    return _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


def _signature_annotation(obj: Object, name: str):
    parameters = getattr(obj, "parameters", None)
    if parameters is not None and name in parameters:
        return parameters[name].annotation
    return None


def _fix(obj: Object, sections: list, raw: str) -> list:
    for section in sections:
        if isinstance(section, DocstringSectionText):
            section.value = _roles(section.value)
        elif isinstance(section, DocstringSectionAdmonition):
            section.value.description = _roles(section.value.description)
        if not isinstance(section, _SECTIONS):
            continue
        for element in section.value:
            if not isinstance(element, _ELEMENTS):
                continue
            element.description = _roles(element.description)
            if not isinstance(element.annotation, str):
                continue  # an Expr: a parsed Python expression, i.e. a real type
            prose = element.annotation.strip()
            if isinstance(element, DocstringParameter):
                parameters = getattr(obj, "parameters", None)
                signature_default = (
                    parameters[element.name].default
                    if parameters is not None and element.name in parameters
                    else None
                )
                if element.value is not None and f"{prose}, default" in raw:
                    # "a mixture (with sampler, default exact) or ..." was split at ", default": undo it.
                    prose = f"{prose}, default {element.value}"
                    element.value = signature_default
            prose = _roles(prose)
            element.description = f"{prose}\n{element.description}".strip() if element.description else prose
            if isinstance(element, DocstringParameter):
                element.annotation = _signature_annotation(obj, element.name)
            elif isinstance(element, DocstringReturn) and getattr(obj, "returns", None) is not None:
                element.annotation = obj.returns
            else:
                element.annotation = None
    return sections


class ProseTypes(Extension):
    """Move unparsable "types" of numpy docstring entries into their descriptions."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is None or getattr(obj, "is_alias", False):
            return
        if docstring.parser is None:
            return
        # Docstring.parsed is a cached property: fill the cache with the corrected sections.
        docstring.__dict__["parsed"] = _fix(obj, docstring.parse(), docstring.value)
