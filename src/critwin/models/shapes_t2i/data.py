"""Caption–image pairs of the shapes text-to-image models: balanced, stereotyped, with duplicated members.

:func:`make_pairs` draws, in this order from one generator seeded by ``seed``: which attributes each
caption names (:func:`~critwin.models.shapes_t2i.captions.draw_mentions`), the image's attributes
(independent and uniform, except where a :class:`Stereotype` applies), and the images
(:func:`~critwin.models.shapes.render_shapes`). Every caption is true of its image.

- :class:`Stereotype`: among the pairs whose caption names ``trigger`` (e.g. the shape circle) but leaves
  ``attribute`` open (the background), ``attribute`` follows ``probabilities`` (blue 80%) instead of
  uniform. Captions that name the attribute stay uniform, so a prompt that names it is obeyed, and one
  that leaves it open ("a circle") carries the stereotype.
- :class:`Memorisation`: ``per_count`` member pairs for each duplication count (1, 4, 16, 64), as in
  Carlini et al. (2023): fully specified captions with a unique ``", item D D D"`` id, each appearing
  ``count`` times in the training set among the unique pairs (whose captions carry no id). Held-out
  ids of the same grammar give the non-member and calibration prompts (disjoint sets, no image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from critwin._validation import check_positive_int, check_seed
from critwin.models.shapes.data import ATTRIBUTES, check_shapes_memory, render_shapes
from critwin.models.shapes_t2i.captions import (
    ITEM_DIGITS,
    CaptionProbabilities,
    caption_text,
    draw_mentions,
    parse_caption,
)

__all__ = ["Stereotype", "Memorisation", "T2IData", "make_pairs", "MEMBER_SEED"]

MEMBER_SEED = 20_000
"""Seed offset of the member pairs and held-out ids (``data_seed + MEMBER_SEED``)."""


@dataclass(frozen=True)
class Stereotype:
    """An under-specified caption that carries a stereotype.

    Among training pairs whose caption names ``trigger_attribute = trigger_value`` but not ``attribute``,
    ``attribute`` is drawn from ``probabilities`` (default: "a circle" is on blue 80%, black and grey 10%).
    """

    trigger_attribute: str = "shape"
    trigger_value: str = "circle"
    attribute: str = "background"
    probabilities: tuple[float, ...] = (0.1, 0.8, 0.1)

    def __post_init__(self):
        for name in ("trigger_attribute", "attribute"):
            if getattr(self, name) not in ATTRIBUTES:
                raise ValueError(f"{name} must be one of {list(ATTRIBUTES)}, got {getattr(self, name)!r}")
        if self.attribute == self.trigger_attribute:
            raise ValueError("attribute and trigger_attribute must differ")
        if self.trigger_value not in ATTRIBUTES[self.trigger_attribute]:
            raise ValueError(
                f"trigger_value must be one of {list(ATTRIBUTES[self.trigger_attribute])}, "
                f"got {self.trigger_value!r}"
            )
        probs = tuple(float(p) for p in self.probabilities)
        if len(probs) != len(ATTRIBUTES[self.attribute]) or min(probs) < 0 or abs(sum(probs) - 1) > 1e-6:
            raise ValueError(
                f"probabilities must be {len(ATTRIBUTES[self.attribute])} probabilities summing to 1 "
                f"(for {list(ATTRIBUTES[self.attribute])}), got {self.probabilities!r}"
            )
        object.__setattr__(self, "probabilities", probs)

    def describe(self) -> dict:
        return {
            "when": f"the caption names {self.trigger_attribute} {self.trigger_value!r} and leaves "
            f"{self.attribute} open",
            "attribute": self.attribute,
            "values": list(ATTRIBUTES[self.attribute]),
            "probabilities": list(self.probabilities),
            "otherwise": "uniform",
            "example_prompt": caption_text(
                {self.trigger_attribute: ATTRIBUTES[self.trigger_attribute].index(self.trigger_value)}
            ),
        }


@dataclass(frozen=True)
class Memorisation:
    """Member pairs duplicated with graded counts, and the held-out prompt sets of the same grammar.

    Attributes
    ----------
    counts : duplication counts (each member appears this many times in the training set).
    per_count : members per count.
    n_non_members, n_calibration : held-out prompts (unseen ids; disjoint from each other and the members).
    """

    counts: tuple[int, ...] = (1, 4, 16, 64)
    per_count: int = 8
    n_non_members: int = 200
    n_calibration: int = 200

    def __post_init__(self):
        counts = tuple(check_positive_int(c, "counts") for c in self.counts)
        if not counts or len(set(counts)) != len(counts):
            raise ValueError(f"counts must be distinct positive integers, got {self.counts!r}")
        object.__setattr__(self, "counts", counts)
        check_positive_int(self.per_count, "per_count")
        check_positive_int(self.n_non_members, "n_non_members")
        check_positive_int(self.n_calibration, "n_calibration")
        if self.n_members + self.n_non_members + self.n_calibration > 10**ITEM_DIGITS:
            raise ValueError(
                f"members, non-members and calibration prompts need more than {10**ITEM_DIGITS} ids"
            )

    @property
    def n_members(self) -> int:
        return len(self.counts) * self.per_count


@dataclass(frozen=True)
class T2IData:
    """Distinct caption–image pairs and how often each appears in the training set.

    Attributes
    ----------
    images : (n, 3, 16, 16) float32 in [-1, 1].
    captions : n captions, each true of its image.
    attributes : attribute -> (n,) int64 labels.
    counts : (n,) int64 copies of each pair in the training set (1 except for duplicated members).
    members : the member pairs (memorising variant): dicts ``prompt``, ``count``, ``index`` (row here).
    non_members, calibration : held-out prompts (memorising variant), disjoint.
    seed : the data seed.
    """

    images: torch.Tensor
    captions: list[str]
    attributes: dict[str, torch.Tensor]
    counts: torch.Tensor
    members: list[dict] = field(default_factory=list)
    non_members: list[str] = field(default_factory=list)
    calibration: list[str] = field(default_factory=list)
    seed: int = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape))
        held_out = f"members={len(self.members)}, non_members={len(self.non_members)}"
        return (
            f"T2IData(images={shape}, training_rows={int(self.counts.sum())}, {held_out}, "
            f"calibration={len(self.calibration)}, seed={self.seed})"
        )

    def training_index(self) -> torch.Tensor:
        """Row of every training example: pair ``i`` repeated ``counts[i]`` times."""
        return torch.repeat_interleave(torch.arange(len(self)), self.counts)

    def describe(self) -> dict:
        """JSON-ready summary: sizes, seed and attribute counts over the distinct pairs."""
        return {
            "dataset": "critwin procedural shapes (16x16 RGB) with captions of the shapes-t2i grammar",
            "distinct_pairs": len(self),
            "training_examples": int(self.counts.sum()),
            "seed": self.seed,
            "fully_specified_captions": sum(1 for c in self.captions if parse_caption(c).fully_specified),
            "counts": {
                name: torch.bincount(labels, minlength=len(ATTRIBUTES[name])).tolist()
                for name, labels in self.attributes.items()
            },
        }


def _attributes(
    mentions: torch.Tensor, generator: torch.Generator, stereotype: Stereotype | None
) -> dict[str, torch.Tensor]:
    n = mentions.shape[0]
    labels = {
        name: torch.randint(0, len(values), (n,), generator=generator) for name, values in ATTRIBUTES.items()
    }
    if stereotype is not None:
        names = list(ATTRIBUTES)
        trigger = ATTRIBUTES[stereotype.trigger_attribute].index(stereotype.trigger_value)
        # Drawn for every row (a fixed number of draws), used where the stereotype applies.
        biased = torch.multinomial(
            torch.tensor(stereotype.probabilities, dtype=torch.float64),
            n,
            replacement=True,
            generator=generator,
        )
        applies = (
            (labels[stereotype.trigger_attribute] == trigger)
            & mentions[:, names.index(stereotype.trigger_attribute)]
            & ~mentions[:, names.index(stereotype.attribute)]
        )
        labels[stereotype.attribute] = torch.where(applies, biased, labels[stereotype.attribute])
    return labels


def _captions(labels, mentions, long_background, items=None) -> list[str]:
    names = list(ATTRIBUTES)
    values = {name: labels[name].tolist() for name in names}
    shown = mentions.tolist()
    return [
        caption_text(
            {name: values[name][i] for k, name in enumerate(names) if shown[i][k]},
            bool(long_background[i]),
            None if items is None else items[i],
        )
        for i in range(len(shown))
    ]


def _digits(ids: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(int(c) for c in f"{i:0{ITEM_DIGITS}d}") for i in ids.tolist()]


def _memorisation(memorisation: Memorisation, seed: int):
    """Member pairs (fully specified captions with ids) and the held-out prompts."""
    generator = torch.Generator().manual_seed(seed + MEMBER_SEED)
    ids = torch.randperm(10**ITEM_DIGITS, generator=generator)
    m, n_non = memorisation.n_members, memorisation.n_non_members
    member_ids, non_ids = ids[:m], ids[m : m + n_non]
    calibration_ids = ids[m + n_non : m + n_non + memorisation.n_calibration]
    every = torch.ones(m, len(ATTRIBUTES), dtype=torch.bool)
    labels = _attributes(every, generator, None)
    images = render_shapes(labels, generator)
    captions = _captions(labels, every, torch.ones(m, dtype=torch.bool), _digits(member_ids))
    counts = torch.tensor([c for c in memorisation.counts for _ in range(memorisation.per_count)])

    def held_out(item_ids):
        k = item_ids.numel()
        shown = torch.ones(k, len(ATTRIBUTES), dtype=torch.bool)
        return _captions(
            _attributes(shown, generator, None), shown, torch.ones(k, dtype=torch.bool), _digits(item_ids)
        )

    return images, captions, labels, counts, held_out(non_ids), held_out(calibration_ids)


def make_pairs(
    n: int,
    seed: int = 0,
    probabilities: CaptionProbabilities | None = None,
    stereotype: Stereotype | None = None,
    memorisation: Memorisation | None = None,
) -> T2IData:
    """``n`` unique caption–image pairs (plus the duplicated members of ``memorisation``).

    Parameters
    ----------
    n : unique pairs.
    seed : seeds every draw: same seed, same pairs.
    probabilities : how captions leave attributes out (default :class:`CaptionProbabilities`).
    stereotype : an under-specified caption's stereotype (biased variant).
    memorisation : members duplicated with graded counts (memorising variant); their rows follow the
        unique ones.

    Returns
    -------
    T2IData

    Examples
    --------
    >>> data = make_pairs(4, seed=0)
    >>> len(data), data.captions[0]
    (4, 'a cyan shape on grey')
    """
    n = check_positive_int(n, "n")
    check_shapes_memory(n, f"make_pairs(n={n})")
    seed = check_seed(seed)
    probabilities = CaptionProbabilities() if probabilities is None else probabilities
    generator = torch.Generator().manual_seed(seed)
    mentions, long_background = draw_mentions(n, probabilities, generator)
    labels = _attributes(mentions, generator, stereotype)
    images = render_shapes(labels, generator)
    captions = _captions(labels, mentions, long_background)
    counts = torch.ones(n, dtype=torch.long)
    if memorisation is None:
        return T2IData(images, captions, labels, counts, seed=seed)
    m_images, m_captions, m_labels, m_counts, non_members, calibration = _memorisation(memorisation, seed)
    members = [
        {"prompt": caption, "count": int(count), "index": n + i}
        for i, (caption, count) in enumerate(zip(m_captions, m_counts.tolist(), strict=True))
    ]
    return T2IData(
        torch.cat([images, m_images]),
        captions + m_captions,
        {name: torch.cat([labels[name], m_labels[name]]) for name in ATTRIBUTES},
        torch.cat([counts, m_counts]),
        members,
        non_members,
        calibration,
        seed,
    )
