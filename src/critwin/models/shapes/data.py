"""The procedural shapes dataset: 16x16 RGB images with known attributes at several spatial scales.

Each image is a flat ``background`` colour (the whole image), one ``shape`` (circle, square,
triangle or cross; a few pixels across, with a random size and position, anti-aliased: an edge pixel
mixes the two colours by the share it covers) painted in one ``colour``,
and a small ``mark``: a white 2x2 patch in the top-left corner, present or absent. Attributes are
drawn independently (uniform by default; ``bias`` makes any of them imbalanced). Everything is drawn
from one ``torch.Generator``, so a seed fixes the dataset.

Geometry (pixel-centre coordinates, pixel ``j`` has centre ``j + 0.5``): the shape's centre lies in
``8 +- 1`` and its half-size in ``[3.5, 4.75]``, so the shape covers only pixels 2..13 in both
directions; the border (rows and columns 0 and 15) shows only the background and the 2x2 mark corner
(rows and columns 0..1) only the background or the mark. The analytic readers
(:mod:`critwin.models.shapes.readers`) rely on this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from critwin._lazy import deferred_import
from critwin._memory import check_memory
from critwin._validation import check_positive_int, check_seed

# Imported on first use: the command line reads ATTRIBUTES for its help before torch loads.
torch = deferred_import("torch", globals())

__all__ = [
    "ATTRIBUTES",
    "BACKGROUND_COLOURS",
    "SHAPE_COLOURS",
    "MARK_COLOUR",
    "IMAGE_SHAPE",
    "MARK_SIZE",
    "ShapesData",
    "make_shapes",
    "render_shapes",
    "check_bias",
    "check_shapes_memory",
]

IMAGE_SHAPE = (3, 16, 16)
MARK_SIZE = 2
# Peak memory of drawing n images, in float32 images: the images, the float64 coverage planes and the
# colour tensors the drawing keeps at once (an upper bound, for the memory guard).
_DRAW_TEMPORARIES = 4
# Palettes in [-1, 1] RGB. Every pair of colours across both palettes and the mark is at least 0.8
# apart in each image's RGB space, so nearest-colour reading tolerates pixel noise of that order.
BACKGROUND_COLOURS = {
    "black": (-1.0, -1.0, -1.0),
    "blue": (-1.0, -0.4, 0.4),
    "grey": (-0.1, -0.1, -0.1),
}
SHAPE_COLOURS = {
    "red": (1.0, -0.8, -0.8),
    "yellow": (1.0, 1.0, -0.8),
    "cyan": (-0.8, 1.0, 1.0),
}
MARK_COLOUR = (1.0, 1.0, 1.0)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "background": tuple(BACKGROUND_COLOURS),
    "shape": ("circle", "square", "triangle", "cross"),
    "colour": tuple(SHAPE_COLOURS),
    "mark": ("absent", "present"),
}
"""Attribute names (in order) and the names of their values; label ``k`` is the ``k``-th name."""

CENTRE_JITTER = 1.0
SIZE_RANGE = (3.5, 4.75)
SUPERSAMPLE = 8
_CHUNK = 2048


@dataclass(frozen=True)
class ShapesData:
    """Images and their attributes.

    Attributes
    ----------
    images : (n, 3, 16, 16) float32 in [-1, 1].
    attributes : attribute name -> (n,) int64 labels (indices into :data:`ATTRIBUTES`).
    seed : the seed that drew them.
    bias : the marginals used (attribute -> probabilities); uniform for attributes not listed.
    """

    images: torch.Tensor
    attributes: dict[str, torch.Tensor]
    seed: int
    bias: dict[str, tuple[float, ...]]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape))
        return f"ShapesData(images={shape}, attributes={list(self.attributes)}, seed={self.seed})"

    def describe(self) -> dict:
        """JSON-ready summary: size, seed, marginals and the observed attribute counts."""
        return {
            "dataset": "critwin procedural shapes (16x16 RGB)",
            "n": len(self),
            "seed": self.seed,
            "marginals": {name: list(p) for name, p in self.bias.items()},
            "counts": {
                name: torch.bincount(labels, minlength=len(ATTRIBUTES[name])).tolist()
                for name, labels in self.attributes.items()
            },
        }


def check_bias(bias: Mapping | None) -> dict[str, tuple[float, ...]]:
    """Every attribute's marginal: ``bias``'s probabilities where given, uniform elsewhere.

    Raises ValueError naming ``bias`` for an unknown attribute, a wrong number of probabilities,
    negative or non-finite values, or probabilities that do not sum to 1 (within 1e-6).
    """
    if bias is not None and not isinstance(bias, Mapping):
        raise ValueError(f"bias must be a dict attribute -> probabilities, got {type(bias).__name__}")
    bias = dict(bias or {})
    unknown = sorted(set(bias) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"bias names unknown attributes {unknown}; attributes are {list(ATTRIBUTES)}")
    marginals = {}
    for name, values in ATTRIBUTES.items():
        if name not in bias:
            marginals[name] = tuple(1.0 / len(values) for _ in values)
            continue
        try:
            probs = tuple(float(p) for p in bias[name])
        except (TypeError, ValueError):
            raise ValueError(f"bias[{name!r}] must be a sequence of numbers, got {bias[name]!r}") from None
        if len(probs) != len(values):
            raise ValueError(
                f"bias[{name!r}] must give {len(values)} probabilities (for {list(values)}), got {len(probs)}"
            )
        if not all(math.isfinite(p) and p >= 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(f"bias[{name!r}] must be non-negative probabilities summing to 1, got {probs}")
        marginals[name] = probs
    return marginals


def _inside(shape: int, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Whether offsets ``(dx, dy)`` from the centre fall inside shape ``shape`` of half-size ``r``."""
    if shape == 0:  # circle
        return dx**2 + dy**2 <= r**2
    if shape == 1:  # square; half-side chosen so the four shapes cover comparable areas
        return torch.maximum(dx.abs(), dy.abs()) <= 0.8 * r
    if shape == 2:  # triangle: apex up at dy = -r, base at dy = +0.8 r, half-width r at the base
        return (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= (dy + r) / 1.8)
    arm = 0.35 * r  # cross
    return ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))


def _coverage(shape: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(n, H, W) share of each pixel covered by its image's shape (SUPERSAMPLE^2 points per pixel).

    Partial coverage (anti-aliased edges) makes the rendering continuous in the shape's centre and
    size, so no two images are exact copies.
    """
    height, width = IMAGE_SHAPE[1:]
    k = SUPERSAMPLE
    # Sub-pixel sample points; y grows downwards.
    ys = ((torch.arange(height * k, dtype=torch.float32) + 0.5) / k).view(1, -1, 1)
    xs = ((torch.arange(width * k, dtype=torch.float32) + 0.5) / k).view(1, 1, -1)
    coverage = torch.zeros(shape.numel(), height, width)
    for label in range(len(ATTRIBUTES["shape"])):
        for index in torch.nonzero(shape == label).flatten().split(_CHUNK):
            dx = xs - cx[index].float().view(-1, 1, 1)
            dy = ys - cy[index].float().view(-1, 1, 1)
            inside = _inside(label, dx, dy, r[index].float().view(-1, 1, 1)).float()
            coverage[index] = inside.view(-1, height, k, width, k).mean(dim=(2, 4))
    return coverage


def check_shapes_memory(n: int, what: str) -> None:
    """Refuse (the memory guard, :func:`critwin._memory.check_memory`) drawing ``n`` images that would
    not fit: the images and the temporaries of the drawing."""
    check_memory(_DRAW_TEMPORARIES * n * math.prod(IMAGE_SHAPE) * 4, what)


def make_shapes(
    n: int,
    *,
    seed: int = 0,
    bias: Mapping[str, tuple[float, ...]] | None = None,
) -> ShapesData:
    """Draw ``n`` shapes images with independent attributes.

    Parameters
    ----------
    n : number of images.
    seed : seeds every draw (one ``torch.Generator``): same seed, same images.
    bias : attribute -> probabilities of its values (e.g. ``{"background": (0.8, 0.1, 0.1)}``);
        attributes not listed are uniform.

    Returns
    -------
    ShapesData with ``images`` (n, 3, 16, 16) float32 in [-1, 1] and ``attributes`` name -> (n,) int64.
    """
    n = check_positive_int(n, "n")
    marginals = check_bias(bias)
    seed = check_seed(seed)
    check_shapes_memory(n, f"make_shapes(n={n})")
    generator = torch.Generator().manual_seed(seed)
    labels = {
        name: torch.multinomial(
            torch.tensor(p, dtype=torch.float64), n, replacement=True, generator=generator
        )
        for name, p in marginals.items()
    }
    return ShapesData(render_shapes(labels, generator), labels, seed, marginals)


def render_shapes(labels: Mapping[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """Images of given attributes, with a random centre and size per image drawn from ``generator``.

    Parameters
    ----------
    labels : every attribute of :data:`ATTRIBUTES` -> (n,) int64 labels.
    generator : draws the geometry ((n, 3) uniforms: centre x, centre y, half-size).

    Returns
    -------
    (n, 3, 16, 16) float32 images in [-1, 1] (what :func:`make_shapes` returns for these labels).

    Examples
    --------
    >>> labels = {name: torch.zeros(2, dtype=torch.long) for name in ATTRIBUTES}
    >>> render_shapes(labels, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 16, 16])
    """
    missing = [name for name in ATTRIBUTES if name not in labels]
    if missing:
        raise ValueError(f"labels must give every attribute; missing {missing}")
    n = labels["shape"].numel()
    for name, values in ATTRIBUTES.items():
        label = labels[name]
        if label.shape != (n,) or label.dtype != torch.long or ((label < 0) | (label >= len(values))).any():
            raise ValueError(f"labels[{name!r}] must be ({n},) int64 labels in 0..{len(values) - 1}")
    uniform = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    cx, cy = (8.0 + CENTRE_JITTER * (2 * uniform[:, i] - 1) for i in range(2))
    r = SIZE_RANGE[0] + (SIZE_RANGE[1] - SIZE_RANGE[0]) * uniform[:, 2]
    coverage = _coverage(labels["shape"], cx, cy, r).unsqueeze(1)
    background = torch.tensor(list(BACKGROUND_COLOURS.values()))[labels["background"]].view(n, 3, 1, 1)
    colour = torch.tensor(list(SHAPE_COLOURS.values()))[labels["colour"]].view(n, 3, 1, 1)
    images = torch.lerp(background, colour, coverage)
    marked = labels["mark"].bool().view(n, 1, 1, 1)
    corner = images[:, :, :MARK_SIZE, :MARK_SIZE]
    images[:, :, :MARK_SIZE, :MARK_SIZE] = torch.where(
        marked, torch.tensor(MARK_COLOUR).view(1, 3, 1, 1), corner
    )
    return images.float().contiguous()
