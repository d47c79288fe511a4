"""The caption grammar of the shapes text-to-image models: captions true of an image, parsing, prompt checks.

A caption names some of an image's four attributes (:data:`~critwin.models.shapes.ATTRIBUTES`) and
leaves the rest open::

    a [COLOUR] (SHAPE | shape) [on a BACKGROUND background | on BACKGROUND] [with a mark | without a mark]
        [, item D D D]

``COLOUR`` is red, yellow or cyan; ``SHAPE`` circle, square, triangle or cross (``shape`` when the shape
is left open); ``BACKGROUND`` black, blue or grey. Examples: ``"a red circle on a blue background with
a mark"`` (fully specified), ``"a circle"``, ``"a shape on grey"``, ``"a cyan shape"``. The optional
``", item D D D"`` (three digit words) gives a caption a unique part: the memorising model's member
captions carry one (:mod:`critwin.models.shapes_t2i.data`). The empty caption ``""`` is the null
prompt of classifier-free guidance.

:class:`CaptionProbabilities` says how training captions are drawn (which attributes are left out);
:func:`caption_text` renders a meaning and :func:`parse_caption` reads one back; :func:`check_prompt`
refuses prompts with words outside :func:`vocabulary` or longer than the tokenizer's limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from critwin.models.shapes.data import ATTRIBUTES

__all__ = [
    "ITEM_WORD",
    "GENERIC_SHAPE",
    "ITEM_DIGITS",
    "MARK_PHRASES",
    "CaptionProbabilities",
    "Meaning",
    "caption_text",
    "parse_caption",
    "draw_mentions",
    "vocabulary",
    "prompt_words",
    "check_prompt",
]

GENERIC_SHAPE = "shape"
"""The noun of a caption that leaves the shape open ("a cyan shape")."""
ITEM_WORD = "item"
ITEM_DIGITS = 3
"""Digit words of an item id (``", item 4 1 7"``): 1000 ids."""
MARK_PHRASES = ("without a mark", "with a mark")
"""The phrase of each ``mark`` value (absent, present)."""
_ORDER = ("colour", "shape", "background", "mark")
# CLIP's pre-tokenizer on ASCII text: letter runs, single digits, runs of other non-space characters.
_WORD_PATTERN = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


@dataclass(frozen=True)
class Meaning:
    """What a caption says: attribute -> value label (or None when left open), and the item id.

    Attributes
    ----------
    values : attribute name -> label indexing ``ATTRIBUTES[name]``, or None where the caption is silent.
    item : the id's digits (``(4, 1, 7)``), or None.
    """

    values: dict[str, int | None]
    item: tuple[int, ...] | None = None

    @property
    def fully_specified(self) -> bool:
        return all(v is not None for v in self.values.values())

    def key(self) -> tuple:
        """A hashable form (equal meanings, whatever the wording, have equal keys)."""
        return tuple(self.values[name] for name in ATTRIBUTES), self.item


@dataclass(frozen=True)
class CaptionProbabilities:
    """How a training caption leaves attributes out.

    With probability ``fully_specified`` the caption names all four attributes; otherwise each attribute
    is named independently with probability ``mention``. So a caption is fully specified with probability
    ``fully_specified + (1 - fully_specified) * mention**4`` (0.4375 with the defaults) and a given
    attribute is named with probability ``fully_specified + (1 - fully_specified) * mention`` (0.7). A
    named background is worded ``"on a blue background"`` with probability ``long_background``, else
    ``"on blue"``.
    """

    fully_specified: float = 0.4
    mention: float = 0.5
    long_background: float = 0.5

    def __post_init__(self):
        for name in ("fully_specified", "mention", "long_background"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")

    @property
    def fully_specified_rate(self) -> float:
        """Probability that a caption names every attribute."""
        return self.fully_specified + (1.0 - self.fully_specified) * self.mention ** len(ATTRIBUTES)

    def to_dict(self) -> dict[str, float]:
        return {
            "fully_specified": self.fully_specified,
            "mention": self.mention,
            "long_background": self.long_background,
            "fully_specified_rate": self.fully_specified_rate,
        }


def draw_mentions(
    n: int, probabilities: CaptionProbabilities, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which attributes ``n`` captions name, and how their background is worded.

    Returns
    -------
    (mentions, long_background): (n, 4) bool in the order of ``ATTRIBUTES``, and (n,) bool.
    """
    full = torch.rand(n, generator=generator) < probabilities.fully_specified
    partial = torch.rand(n, len(ATTRIBUTES), generator=generator) < probabilities.mention
    long_background = torch.rand(n, generator=generator) < probabilities.long_background
    return full.view(-1, 1) | partial, long_background


def caption_text(
    values: Mapping[str, int | None], long_background: bool = True, item: Sequence[int] | None = None
) -> str:
    """The caption of a meaning: ``values`` attribute -> label (None or missing: left open).

    Examples
    --------
    >>> caption_text({"shape": 0, "colour": 0, "background": 1, "mark": 1})
    'a red circle on a blue background with a mark'
    >>> caption_text({"background": 2}, long_background=False)
    'a shape on grey'
    >>> caption_text({"shape": 3, "colour": 2, "background": 0, "mark": 0}, item=(4, 1, 7))
    'a cyan cross on a black background without a mark, item 4 1 7'
    """
    unknown = sorted(set(values) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"values names unknown attributes {unknown}; attributes are {list(ATTRIBUTES)}")
    label = {name: values.get(name) for name in ATTRIBUTES}
    for name, value in label.items():
        if value is not None and not (isinstance(value, int) and 0 <= value < len(ATTRIBUTES[name])):
            raise ValueError(
                f"values[{name!r}] must be a label in 0..{len(ATTRIBUTES[name]) - 1}, got {value!r}"
            )
    words = ["a"]
    if label["colour"] is not None:
        words.append(ATTRIBUTES["colour"][label["colour"]])
    words.append(GENERIC_SHAPE if label["shape"] is None else ATTRIBUTES["shape"][label["shape"]])
    if label["background"] is not None:
        background = ATTRIBUTES["background"][label["background"]]
        words += ["on", "a", background, "background"] if long_background else ["on", background]
    if label["mark"] is not None:
        words.append(MARK_PHRASES[label["mark"]])
    text = " ".join(words)
    if item is not None:
        digits = tuple(item)
        if len(digits) != ITEM_DIGITS or not all(isinstance(d, int) and 0 <= d <= 9 for d in digits):
            raise ValueError(f"item must be {ITEM_DIGITS} digits 0-9, got {item!r}")
        text += f", {ITEM_WORD} " + " ".join(str(d) for d in digits)
    return text


def prompt_words(prompt: str) -> list[str]:
    """The words of a prompt as the CLIP tokenizer splits it (lower-cased; digits one by one).

    Examples
    --------
    >>> prompt_words("A red circle, item 417")
    ['a', 'red', 'circle', ',', 'item', '4', '1', '7']
    """
    return _WORD_PATTERN.findall(prompt.lower())


def vocabulary() -> tuple[str, ...]:
    """Every word of the grammar (the tokenizer has one token per word), in a fixed order."""
    words = ["a", *ATTRIBUTES["colour"], *ATTRIBUTES["shape"], GENERIC_SHAPE, "on", "background"]
    words += list(ATTRIBUTES["background"])
    words += [w for phrase in MARK_PHRASES for w in phrase.split()]
    words += [",", ITEM_WORD, *(str(d) for d in range(10))]
    return tuple(dict.fromkeys(words))


def _expect(words: list[str], i: int, expected: Sequence[str], prompt: str) -> int:
    if words[i : i + len(expected)] != list(expected):
        raise ValueError(
            f"prompt {prompt!r} is not a caption of the grammar (expected {' '.join(expected)!r})"
        )
    return i + len(expected)


def parse_caption(prompt: str) -> Meaning:
    """What a caption of the grammar says (the inverse of :func:`caption_text`).

    Raises ValueError naming ``prompt`` for text outside the grammar.

    Examples
    --------
    >>> parse_caption("a cyan shape on grey").values
    {'background': 2, 'shape': None, 'colour': 2, 'mark': None}
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    words = prompt_words(prompt)
    values: dict[str, int | None] = dict.fromkeys(ATTRIBUTES)
    if not words:
        return Meaning(values)
    i = _expect(words, 0, ["a"], prompt)
    if i < len(words) and words[i] in ATTRIBUTES["colour"]:
        values["colour"] = ATTRIBUTES["colour"].index(words[i])
        i += 1
    if i < len(words) and words[i] in ATTRIBUTES["shape"]:
        values["shape"] = ATTRIBUTES["shape"].index(words[i])
    elif i >= len(words) or words[i] != GENERIC_SHAPE:
        raise ValueError(f"prompt {prompt!r} is not a caption of the grammar (expected a shape word)")
    i += 1
    if i < len(words) and words[i] == "on":
        long = i + 1 < len(words) and words[i + 1] == "a"
        i += 2 if long else 1
        if i >= len(words) or words[i] not in ATTRIBUTES["background"]:
            raise ValueError(f"prompt {prompt!r} is not a caption of the grammar (expected a background)")
        values["background"] = ATTRIBUTES["background"].index(words[i])
        i = _expect(words, i + 1, ["background"], prompt) if long else i + 1
    for label, phrase in enumerate(MARK_PHRASES):
        if words[i : i + len(phrase.split())] == phrase.split():
            values["mark"] = label
            i += len(phrase.split())
            break
    item = None
    if i < len(words):
        i = _expect(words, i, [",", ITEM_WORD], prompt)
        digits = words[i:]
        if len(digits) != ITEM_DIGITS or not all(d.isdigit() for d in digits):
            raise ValueError(
                f"prompt {prompt!r} is not a caption of the grammar (expected {ITEM_DIGITS} digits)"
            )
        item = tuple(int(d) for d in digits)
    return Meaning(values, item)


def check_prompt(prompt, max_tokens: int, words: Sequence[str] | None = None, name: str = "prompt") -> str:
    """``prompt`` if the model can read it: a string of known words within the tokenizer's limit.

    Parameters
    ----------
    prompt : the text.
    max_tokens : the tokenizer's ``model_max_length`` (start and end tokens included).
    words : the known words (default: :func:`vocabulary`).
    name : the argument's name in the error (``"--prompt"`` from the CLI).

    Raises
    ------
    ValueError
        naming ``name``, for a non-string, unknown words, or too many tokens (the stock pipeline would
        silently truncate them).

    Examples
    --------
    >>> check_prompt("a red circle", 20)
    'a red circle'
    """
    if not isinstance(prompt, str):
        raise ValueError(f"{name} must be a string, got {type(prompt).__name__}")
    known = set(vocabulary() if words is None else words)
    found = prompt_words(prompt)
    unknown = list(dict.fromkeys(w for w in found if w not in known))
    if unknown:
        raise ValueError(
            f"{name} {prompt!r} has words outside the model's vocabulary: {', '.join(map(repr, unknown))} "
            f"(known: {' '.join(sorted(known))})"
        )
    if len(found) + 2 > max_tokens:
        raise ValueError(
            f"{name} {prompt!r} has {len(found)} tokens; the tokenizer's limit is {max_tokens - 2} "
            f"({max_tokens} with the start and end tokens)"
        )
    return prompt
