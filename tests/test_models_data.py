"""The digits data split and the nearest-neighbour distance (critwin.models.data)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from critwin.models.data import load_digits_data, nearest_neighbour_distance


@pytest.fixture(scope="module")
def raw():
    return load_digits()


def test_split_is_a_stratified_partition_scaled_to_unit_range(raw):
    data = load_digits_data(seed=0, test_fraction=0.2)
    train, test = data.train_indices.numpy(), data.test_indices.numpy()
    # A partition of all 1,797 images.
    assert np.intersect1d(train, test).size == 0
    assert np.union1d(train, test).size == len(raw.target) == 1797
    assert test.size == 360  # ceil(0.2 * 1797), scikit-learn's rounding of test_size
    # Pixel values 0..16 map to [-1, 1] by x / 8 - 1, checked image by image against the raw data.
    np.testing.assert_allclose(data.train_images[:, 0].numpy(), raw.images[train] / 8.0 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(data.test_labels.numpy(), raw.target[test])
    assert data.train_images.shape == (1437, 1, 8, 8) and data.train_images.dtype == torch.float32
    # Stratified: every digit's share of the test set is within one image of 20 % of its count.
    counts = np.bincount(raw.target, minlength=10)
    test_counts = np.bincount(raw.target[test], minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * counts) <= 1.0)


def test_split_is_reproducible_and_depends_on_the_seed():
    a, b, c = load_digits_data(seed=3), load_digits_data(seed=3), load_digits_data(seed=4)
    assert torch.equal(a.train_indices, b.train_indices)
    assert not torch.equal(a.train_indices, c.train_indices)


def test_subset_is_balanced_and_drawn_from_the_training_split(raw):
    full = load_digits_data(seed=0)
    subset = load_digits_data(seed=0, subset_size=23)
    assert subset.train_labels.numel() == 23
    # 23 = 2 per digit plus one extra for digits 0, 1, 2.
    assert torch.bincount(subset.train_labels, minlength=10).tolist() == [3, 3, 3] + [2] * 7
    assert set(subset.train_indices.tolist()) <= set(full.train_indices.tolist())
    assert torch.equal(subset.test_indices, full.test_indices)
    assert subset.describe()["subset_size"] == 23


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"test_fraction": "x"}, "test_fraction"),
        ({"subset_size": 5}, "subset_size"),
        ({"subset_size": 10_000}, "subset_size"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_split_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        load_digits_data(**kwargs)


def test_nearest_neighbour_distance_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(37, 1, 8, 8, generator=g) * 2 - 1
    images = torch.rand(11, 1, 8, 8, generator=g) * 2 - 1
    images[3] = reference[17]  # an exact copy
    distance, index = nearest_neighbour_distance(images, reference, chunk_size=4)
    for i in range(images.shape[0]):
        rms = [((images[i] - r) ** 2).mean().sqrt().item() for r in reference]
        assert index[i].item() == int(np.argmin(rms))
        assert distance[i].item() == pytest.approx(min(rms), rel=1e-6)
    assert distance[3].item() == 0.0 and index[3].item() == 17


def test_nearest_neighbour_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="per-image shape"):
        nearest_neighbour_distance(torch.zeros(2, 1, 8, 8), torch.zeros(3, 64))
    with pytest.raises(ValueError, match="reference"):
        nearest_neighbour_distance(torch.zeros(2, 64), torch.zeros(0, 64))
