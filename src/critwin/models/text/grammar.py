"""The Random Hierarchy Model (Sclocchi, Favero & Wyart): a procedural language with a planted tree.

A string is generated top-down. The root is a *class* ``c`` in ``0..n_classes-1``. Every symbol at
level ``l`` (the class at level 0, one of ``vocab_size`` symbols below) is rewritten by one of its
``n_rules`` production rules, chosen uniformly, into ``branching`` symbols of level ``l + 1``; after
``depth`` rewritings the ``branching ** depth`` symbols are the tokens. The rules are drawn once from
``seed`` and are *unambiguous*: a tuple of children belongs to at most one parent at each level, so a
string parses bottom-up in exactly one way (or not at all), and its class, its level-1 symbols, ...
are functions of the string.

Levels (the features whose windows are measured), coarse to fine:

- ``"class"``: the root symbol (``n_classes`` values);
- ``"level1"``, ..., ``"level{depth-1}"``: the tuple of the ``branching ** l`` symbols at level ``l``
  (one value per tuple that occurs in the language);
- ``"string"``: the string itself (the leaves).

Each is a partition of the language's strings, refined by the next. :meth:`RandomHierarchy.parse` reads
every level's label from a string; a string outside the language gets the label
:meth:`RandomHierarchy.n_values` (one past the valid ones) at every level. All strings are enumerable
(``n_classes * n_rules ** ((branching ** depth - 1) / (branching - 1))`` of them, equally likely), so
the exact law is a mixture of Dirac strings (:meth:`RandomHierarchy.mixture`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any

import torch

from critwin._memory import check_memory
from critwin._validation import check_generator, check_positive_int, check_seed, check_token_ids

__all__ = ["RandomHierarchy"]


class RandomHierarchy:
    """A Random Hierarchy Model grammar (see the module notes).

    Parameters
    ----------
    n_classes : number of root classes (>= 2).
    vocab_size : symbols per level below the root, and tokens (>= 2).
    n_rules : production rules per symbol (``m``; >= 1).
    branching : children per rule (``s``; >= 2).
    depth : rewriting levels (>= 1); strings have ``branching ** depth`` tokens.
    seed : seed of the rules.

    Examples
    --------
    >>> g = RandomHierarchy(n_classes=2, vocab_size=4, n_rules=2, branching=2, depth=2, seed=0)
    >>> g.length, g.n_strings
    (4, 16)
    >>> strings, levels = g.sample(3, torch.Generator().manual_seed(0))
    >>> bool((g.parse(strings)["class"] == levels["class"]).all())
    True
    """

    def __init__(
        self,
        n_classes: int = 4,
        vocab_size: int = 8,
        n_rules: int = 2,
        branching: int = 2,
        depth: int = 3,
        seed: int = 0,
    ):
        self.n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", minimum=2)
        self.n_rules = check_positive_int(n_rules, "n_rules")
        self.branching = check_positive_int(branching, "branching", minimum=2)
        self.depth = check_positive_int(depth, "depth")
        self.seed = check_seed(seed)
        tuples = self.vocab_size**self.branching
        if max(self.n_classes, self.vocab_size) * self.n_rules > tuples:
            raise ValueError(
                f"n_rules={self.n_rules}: {max(self.n_classes, self.vocab_size)} symbols x {self.n_rules} "
                f"rules need that many distinct {self.branching}-tuples of {self.vocab_size} symbols "
                f"(only {tuples} exist)"
            )
        if self.length * math.log2(max(self.vocab_size, self.n_classes)) >= 62:
            raise ValueError(
                f"strings of {self.length} tokens over {self.vocab_size} symbols are too long to index"
            )
        if self.n_strings > 200_000:
            raise ValueError(f"the grammar has {self.n_strings} strings; keep it enumerable (<= 200000)")
        # one parent lookup over every tuple per level, and the permutation that draws the rules
        check_memory(
            8 * tuples * (self.depth + 1),
            f"the rules of a grammar with vocab_size={self.vocab_size}, branching={self.branching} and "
            f"depth={self.depth} (a table of vocab_size ** branching = {tuples} tuples per level)",
        )
        generator = torch.Generator().manual_seed(self.seed)
        self.rules: list[torch.Tensor] = []
        """Per level ``l``: (n_parents, n_rules, branching) long children of every rule."""
        self._parents: list[torch.Tensor] = []  # per level: (vocab ** branching,) parent of each tuple or -1
        for level in range(self.depth):
            parents = self.n_classes if level == 0 else self.vocab_size
            codes = torch.randperm(tuples, generator=generator)[: parents * self.n_rules]
            self.rules.append(
                self._decode(codes, self.branching).reshape(parents, self.n_rules, self.branching)
            )
            lookup = torch.full((tuples,), -1, dtype=torch.long)
            lookup[codes] = torch.arange(parents).repeat_interleave(self.n_rules)
            self._parents.append(lookup)

    # ------------------------------------------------------------------------------------ sizes
    @property
    def length(self) -> int:
        """Tokens per string, ``branching ** depth``."""
        return self.branching**self.depth

    @property
    def n_strings(self) -> int:
        """Number of strings of the language (every one has probability ``1 / n_strings``)."""
        internal = (self.branching**self.depth - 1) // (self.branching - 1)
        return self.n_classes * self.n_rules**internal

    @property
    def level_names(self) -> tuple[str, ...]:
        """``("class", "level1", ..., "level{depth-1}", "string")``, coarse to fine."""
        return ("class", *(f"level{level}" for level in range(1, self.depth)), "string")

    def n_values(self, level: str) -> int:
        """Number of valid labels of ``level`` (also the label of strings outside the language)."""
        return int(self._codes[self._check_level(level)].numel())

    def describe(self) -> dict[str, Any]:
        """The grammar's parameters and sizes (JSON-ready)."""
        return {
            "grammar": "random hierarchy model",
            "n_classes": self.n_classes,
            "vocab_size": self.vocab_size,
            "n_rules": self.n_rules,
            "branching": self.branching,
            "depth": self.depth,
            "seed": self.seed,
            "length": self.length,
            "n_strings": self.n_strings,
            "levels": {name: self.n_values(name) for name in self.level_names},
        }

    # ------------------------------------------------------------------------------- generation
    def _derive(self, classes: torch.Tensor, choices: Callable[[int, int], torch.Tensor]):
        """Symbols of every level from ``classes`` (n,), with ``choices(level, width)`` the rule indices."""
        symbols = [classes.reshape(-1, 1)]
        for level in range(self.depth):
            current = symbols[-1]
            rule = choices(level, current.shape[1])
            children = self.rules[level][current, rule]  # (n, width, branching)
            symbols.append(children.reshape(current.shape[0], -1))
        return symbols

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """``n`` strings drawn from the grammar.

        Returns
        -------
        strings : (n, length) long.  levels : {level name: (n,) long label}.
        """
        n = check_positive_int(n, "n")
        # the symbols of every level (at most 2 length per string in all) and their labels
        check_memory(
            8 * n * (2 * self.length + 2 * self.depth + 2),
            f"sample(n={n}) of strings of {self.length} tokens",
        )
        check_generator(generator)
        classes = torch.randint(0, self.n_classes, (n,), generator=generator)
        symbols = self._derive(
            classes, lambda level, width: torch.randint(0, self.n_rules, (n, width), generator=generator)
        )
        return symbols[-1], self._labels(symbols)

    @cached_property
    def _enumerated(self) -> list[torch.Tensor]:
        """Symbols of every level of every string, in a fixed order (class-major)."""
        internal = (self.branching**self.depth - 1) // (self.branching - 1)
        per_class = self.n_rules**internal
        index = torch.arange(per_class)
        # Rule choices as the mixed-radix digits of the string's index within its class.
        digits = torch.stack([(index // self.n_rules**k) % self.n_rules for k in range(internal)], 1)
        digits = digits.repeat(self.n_classes, 1)
        classes = torch.arange(self.n_classes).repeat_interleave(per_class)
        offsets = [0]
        for level in range(self.depth):
            offsets.append(offsets[-1] + self.branching**level)
        return self._derive(classes, lambda level, width: digits[:, offsets[level] : offsets[level] + width])

    def strings(self) -> torch.Tensor:
        """(n_strings, length) long: every string of the language, class-major."""
        return self._enumerated[-1]

    def partitions(self) -> dict[str, torch.Tensor]:
        """{level name: (n_strings,) long} label of every string of :meth:`strings` at every level."""
        return self._labels(self._enumerated)

    def weights(self) -> torch.Tensor:
        """(n_strings,) float64 probabilities of :meth:`strings` (uniform: every rule is equally likely)."""
        return torch.full((self.n_strings,), 1.0 / self.n_strings, dtype=torch.float64)

    def mixture(self, noise: str = "mask"):
        """The exact law: a ``CategoricalMixture`` of the Dirac strings of :meth:`strings`.

        ``noise`` is the mixture's forward process: ``"mask"`` (masked diffusion, clock kappa),
        ``"uniform"`` or ``"autoregressive"`` (clock: hidden positions at the end).
        """
        from critwin.mixtures.categorical import CategoricalMixture

        return CategoricalMixture.from_strings(
            self.strings(), self.weights(), vocab_size=self.vocab_size, noise=noise
        )

    # ---------------------------------------------------------------------------------- parsing
    @cached_property
    def _codes(self) -> dict[str, torch.Tensor]:
        """Per level name: sorted codes of the symbol tuples that occur in the language."""
        symbols = self._enumerated
        return {
            name: torch.unique(self._encode(s)) for name, s in zip(self.level_names, symbols, strict=True)
        }

    def _labels(self, symbols: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, level_symbols in zip(self.level_names, symbols, strict=True):
            out[name] = torch.searchsorted(self._codes[name], self._encode(level_symbols))
        return out

    def parse(self, tokens) -> dict[str, torch.Tensor]:
        """Every level's label of each string (bottom-up parse through the unambiguous rules).

        Parameters
        ----------
        tokens : (n, length) integer token ids in ``0..vocab_size-1``.

        Returns
        -------
        {level name: (n,) long}; strings outside the language get ``n_values(level)`` at every level.
        """
        tokens = check_token_ids(tokens, "tokens", self.length, self.vocab_size).cpu()
        symbols = [tokens]
        valid = torch.ones(tokens.shape[0], dtype=torch.bool)
        for level in reversed(range(self.depth)):
            groups = symbols[0].reshape(tokens.shape[0], -1, self.branching)
            parent = self._parents[level][self._tuple_code(groups.reshape(-1, self.branching))]
            parent = parent.reshape(tokens.shape[0], -1)
            valid &= (parent >= 0).all(1)
            symbols.insert(0, parent.clamp_min(0))
        labels = {}
        for name, level_symbols in zip(self.level_names, symbols, strict=True):
            codes = self._codes[name]
            code = self._encode(level_symbols)
            position = torch.searchsorted(codes, code).clamp_max(codes.numel() - 1)
            found = valid & (codes[position] == code)
            labels[name] = torch.where(found, position, torch.full_like(position, codes.numel()))
        return labels

    def valid(self, tokens) -> torch.Tensor:
        """(n,) bool: whether each string belongs to the language."""
        return self.parse(tokens)["string"] < self.n_strings

    def feature(self, level: str):
        """The feature ``f(tokens) -> (n,) labels`` of one level (for the experiments)."""
        from critwin.experiments.features import CallableFeature

        self._check_level(level)
        return CallableFeature(lambda x: self.parse(x)[level], name=f"rhm-{self.seed}:{level}")

    def features(self) -> dict[str, Any]:
        """{level name: feature} for every level, coarse to fine."""
        return {name: self.feature(name) for name in self.level_names}

    # ---------------------------------------------------------------------------------- helpers
    def _check_level(self, level) -> str:
        if level not in self.level_names:
            raise ValueError(f"level must be one of {', '.join(self.level_names)}; got {level!r}")
        return level

    def _encode(self, symbols: torch.Tensor) -> torch.Tensor:
        """(n, w) symbols -> (n,) integer codes in base ``max(vocab_size, n_classes)`` (they fit in int64:
        checked at construction)."""
        base = max(self.vocab_size, self.n_classes)
        weights = base ** torch.arange(symbols.shape[1] - 1, -1, -1, dtype=torch.long)
        return (symbols.long() * weights).sum(1)

    def _tuple_code(self, children: torch.Tensor) -> torch.Tensor:
        """(n, branching) children -> (n,) their rule code (base ``vocab_size``), the lookup index."""
        powers = self.vocab_size ** torch.arange(self.branching - 1, -1, -1, dtype=torch.long)
        return (children * powers).sum(1)

    def _decode(self, codes: torch.Tensor, width: int) -> torch.Tensor:
        """Inverse of :meth:`_tuple_code` (``width`` digits)."""
        powers = self.vocab_size ** torch.arange(width - 1, -1, -1, dtype=torch.long)
        return (codes.reshape(-1, 1) // powers) % self.vocab_size
