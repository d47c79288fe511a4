"""The real data behind the shipped models: scikit-learn's 8x8 handwritten digits.

``sklearn.datasets.load_digits`` ships inside the scikit-learn wheel (1,797 images, pixel values
0..16), so everything here works offline. Images are scaled to [-1, 1] (``x / 8 - 1``) and kept in
diffusers' layout ``(n, 1, 8, 8)``. The train/test split is stratified by digit and seeded, so the
same seed always gives the same split, and it is recorded in every model card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from critwin._lazy import deferred_import
from critwin._validation import check_positive_int, check_seed

# Imported on first use: the command line reads NUM_CLASSES for its help before torch loads.
np = deferred_import("numpy", globals(), "np")
torch = deferred_import("torch", globals())

__all__ = [
    "DigitsData",
    "load_digits_data",
    "nearest_neighbour_distance",
    "memorisation_metrics",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
]

IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10
_PIXEL_MAX = 16.0


@dataclass(frozen=True)
class DigitsData:
    """A train/test split of the digits.

    Attributes
    ----------
    train_images, test_images : (n, 1, 8, 8) float32 tensors in [-1, 1].
    train_labels, test_labels : (n,) int64 tensors of digits 0..9.
    train_indices, test_indices : (n,) int64 indices into ``sklearn.datasets.load_digits()``.
    seed, test_fraction, subset_size : how the split was drawn (``subset_size`` is None for all
        training images, else the balanced training subset kept).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    train_indices: torch.Tensor
    test_indices: torch.Tensor
    seed: int
    test_fraction: float
    subset_size: int | None = None

    def __repr__(self) -> str:
        train, test = ("x".join(map(str, x.shape)) for x in (self.train_images, self.test_images))
        return f"DigitsData(train_images={train}, test_images={test}, seed={self.seed})"

    def describe(self) -> dict:
        """JSON-serialisable description of the split (stored in model cards)."""
        return {
            "source": "sklearn.datasets.load_digits (8x8, pixel values 0..16, scaled to [-1, 1] as x/8 - 1)",
            "split_seed": self.seed,
            "test_fraction": self.test_fraction,
            "stratified": True,
            "subset_size": self.subset_size,
            "n_train": int(self.train_labels.numel()),
            "n_test": int(self.test_labels.numel()),
            "train_class_counts": torch.bincount(self.train_labels, minlength=NUM_CLASSES).tolist(),
            "test_class_counts": torch.bincount(self.test_labels, minlength=NUM_CLASSES).tolist(),
            # The full index list makes the split checkable without re-running scikit-learn's splitter.
            "train_indices": self.train_indices.tolist(),
        }


def load_digits_data(seed: int = 0, test_fraction: float = 0.2, subset_size: int | None = None) -> DigitsData:
    """Load the digits with a fixed stratified train/test split.

    Parameters
    ----------
    seed : seed of the split (and of the subset choice).
    test_fraction : fraction of images held out for testing, in (0, 1).
    subset_size : keep only this many training images, balanced over the ten digits
        (``subset_size // 10`` each, the remainder going to the lowest digits); used by the
        deliberately memorising model. The test set is unchanged.

    Returns
    -------
    DigitsData

    Examples
    --------
    >>> import critwin
    >>> data = critwin.load_digits_data()
    >>> tuple(data.train_images.shape), tuple(data.test_images.shape)
    ((1437, 1, 8, 8), (360, 1, 8, 8))
    >>> data.train_images.min().item(), data.train_images.max().item()
    (-1.0, 1.0)
    >>> small = critwin.load_digits_data(subset_size=50)  # 5 of each digit
    >>> small.train_labels.bincount().tolist(), len(small.test_labels)
    ([5, 5, 5, 5, 5, 5, 5, 5, 5, 5], 360)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    seed = check_seed(seed)
    try:
        test_fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}") from None
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / (_PIXEL_MAX / 2) - 1.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    all_indices = np.arange(labels.numel())
    train_idx, test_idx = train_test_split(
        all_indices, test_size=test_fraction, random_state=int(seed), stratify=bunch.target
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)

    if subset_size is not None:
        subset_size = check_positive_int(subset_size, "subset_size", minimum=NUM_CLASSES)
        if subset_size > train_idx.size:
            raise ValueError(f"subset_size must be <= {train_idx.size} (the training set), got {subset_size}")
        rng = np.random.default_rng(int(seed))
        per_class = [subset_size // NUM_CLASSES + (c < subset_size % NUM_CLASSES) for c in range(NUM_CLASSES)]
        chosen = []
        for digit, count in enumerate(per_class):
            pool = train_idx[bunch.target[train_idx] == digit]
            chosen.append(rng.choice(pool, size=count, replace=False))
        train_idx = np.sort(np.concatenate(chosen))

    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return DigitsData(
        train_images=images[train_t].contiguous(),
        train_labels=labels[train_t].contiguous(),
        test_images=images[test_t].contiguous(),
        test_labels=labels[test_t].contiguous(),
        train_indices=train_t,
        test_indices=test_t,
        seed=int(seed),
        test_fraction=test_fraction,
        subset_size=subset_size,
    )


def nearest_neighbour_distance(
    images: torch.Tensor, reference: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from every image to its nearest reference image (a memorisation check).

    The distance is the root-mean-square pixel difference, ``||x - r||_2 / sqrt(D)`` with ``D``
    pixels, so it is on the scale of one pixel in [-1, 1]: 0 means an exact copy, while a held-out
    test digit lies about 0.26 (median) from its nearest training digit.

    Parameters
    ----------
    images : (n, ...) tensor.
    reference : (N, ...) tensor with the same per-image shape (e.g. the training images).
    chunk_size : images compared per chunk (bounds memory at ``chunk_size * N`` distances).

    Returns
    -------
    (distance, index): (n,) float tensors of RMS distances and (n,) int64 indices into ``reference``.

    Examples
    --------
    >>> import torch, critwin
    >>> reference = torch.stack([torch.ones(4), 3 * torch.ones(4)])
    >>> distance, index = critwin.nearest_neighbour_distance(torch.zeros(1, 4), reference)
    >>> distance.tolist(), index.tolist()  # RMS distance to the all-ones image
    ([1.0], [0])
    >>> data = critwin.load_digits_data()
    >>> distance, index = critwin.nearest_neighbour_distance(data.train_images[:3], data.train_images)
    >>> distance.tolist(), index.tolist()  # a training digit is its own nearest neighbour
    ([0.0, 0.0, 0.0], [0, 1, 2])
    """
    if not isinstance(images, torch.Tensor) or images.ndim < 1 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty tensor with the batch dimension first")
    if not isinstance(reference, torch.Tensor) or reference.ndim < 1 or reference.shape[0] == 0:
        raise ValueError("reference must be a non-empty tensor with the batch dimension first")
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"images and reference must have the same per-image shape, got {tuple(images.shape[1:])} "
            f"and {tuple(reference.shape[1:])}"
        )
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    ref = reference.reshape(reference.shape[0], -1).to(device=flat.device, dtype=torch.float64)
    n_pixels = flat.shape[1]
    distances, indices = [], []
    for chunk in flat.split(chunk_size):
        # Direct differences (not the matmul expansion) so an exact copy gives exactly 0.
        d = torch.cdist(chunk, ref, compute_mode="donot_use_mm_for_euclid_dist")
        best, where = d.min(dim=1)
        distances.append(best)
        indices.append(where)
    distance = torch.cat(distances) / n_pixels**0.5
    return distance.to(images.dtype if images.is_floating_point() else torch.float32), torch.cat(indices)


def memorisation_metrics(
    samples: torch.Tensor, train: torch.Tensor, test: torch.Tensor
) -> dict[str, float | str]:
    """Nearest-training-neighbour distances of samples and of held-out images, and the copy share.

    Parameters
    ----------
    samples : (n, ...) generated images; train : (N, ...) training images; test : (m, ...) held-out
        images of the same distribution (their distances are the scale of "not a copy").

    Returns
    -------
    dict with RMS distances (:func:`nearest_neighbour_distance`) ``nn_distance_samples_mean/median``,
    ``nn_distance_test_mean/median``, their median ratio, ``copy_threshold`` (a tenth of the median
    test distance) and ``copy_fraction`` (the share of samples closer than it to a training image).
    """
    sample_nn, _ = nearest_neighbour_distance(samples, train)
    test_nn, _ = nearest_neighbour_distance(test, train)
    test_median = test_nn.median().item()
    threshold = 0.1 * test_median
    return {
        "nn_distance_metric": "RMS pixel distance in [-1, 1] to the nearest training image",
        "nn_distance_samples_mean": sample_nn.mean().item(),
        "nn_distance_samples_median": sample_nn.median().item(),
        "nn_distance_test_mean": test_nn.mean().item(),
        "nn_distance_test_median": test_nn.median().item(),
        # NaN when most held-out images coincide with training images (nothing to compare with).
        "nn_distance_ratio_median": sample_nn.median().item() / test_median if test_median > 0 else math.nan,
        "copy_threshold": threshold,
        "copy_fraction": (sample_nn < threshold).double().mean().item(),
    }
