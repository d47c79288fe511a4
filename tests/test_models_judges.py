"""The shipped independent readers (issue 21.5): who selects and who grades."""

import torch

from critwin.models.classifier import classifier_feature
from critwin.models.data import load_digits_data
from critwin.models.judges import (
    digit_judge_feature,
    evaluate_shapes_selector,
    load_digit_judge,
    load_shapes_selector,
    selector_readers,
    train_shapes_selector,
)
from critwin.models.shapes import attribute_readers, make_shapes


def test_digit_judge_never_saw_the_selectors_images_and_reads_them():
    judge = load_digit_judge()
    data = load_digits_data()
    card = judge.card
    assert card["data"]["trained_on"] == "test split" and judge.width != classifier_feature().classifier.width
    # Measured on the 1437 training digits it never saw: 0.965 in the card; the binomial sd is 0.005.
    accuracy = (judge.predict(data.train_images) == data.train_labels).double().mean().item()
    assert accuracy == card["metrics"]["held_out_accuracy"] and accuracy > 0.95
    assert digit_judge_feature(judge).name == "digit-judge"


def test_shapes_selector_reads_held_out_images_and_differs_from_the_judges():
    net = load_shapes_selector()
    # Exact on 4000 held-out clean images in the card; 500 fresh noisy ones (another seed) here: a
    # reader that erred 1% of the time would miss more than 0.98 with probability < 0.02.
    data = make_shapes(500, seed=999)
    noisy = data.images + 0.1 * torch.randn(data.images.shape, generator=torch.Generator().manual_seed(0))
    selectors, judges = selector_readers(net), attribute_readers()
    for name, labels in data.attributes.items():
        assert (selectors[name](noisy) == labels).double().mean() > 0.98
        assert selectors[name].name != judges[name].name
    assert net.card["data"]["seed"] not in (1, 12345)  # disjoint from the shape reader's and the test draw


def test_shapes_selector_training_is_deterministic():
    a, b = train_shapes_selector(n_train=64, epochs=1), train_shapes_selector(n_train=64, epochs=1)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert set(evaluate_shapes_selector(a, n=32)) == {"background", "shape", "colour", "mark"}
