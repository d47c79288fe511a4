"""The Random Hierarchy Model grammar, the text transformers, their training, cards and shipped weights.

The parser is checked against brute force (every string over the vocabulary parsed by hand-rolled
recursion on the rules), the shipped weights against their cards.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from critwin.models._store import weights_paths
from critwin.models.text import (
    MODEL_NAMES,
    PRESETS,
    RandomHierarchy,
    TokenTransformer,
    evaluate_text_model,
    load_text_model,
    train_text_model,
)


def tiny() -> RandomHierarchy:
    return RandomHierarchy(n_classes=2, vocab_size=3, n_rules=2, branching=2, depth=2, seed=1)


def derive(grammar, level, symbol):
    """Every string derivable from ``symbol`` at ``level``, by recursion on the rules (brute force)."""
    if level == grammar.depth:
        return [(symbol,)]
    out = []
    for rule in grammar.rules[level][symbol].tolist():
        for parts in itertools.product(*(derive(grammar, level + 1, child) for child in rule)):
            out.append(tuple(t for part in parts for t in part))
    return out


def test_the_language_is_what_the_rules_derive_and_parse_inverts_it():
    g = tiny()
    language = {s: c for c in range(g.n_classes) for s in derive(g, 0, c)}
    assert len(language) == g.n_strings == 2 * 2 ** (1 + 2)  # unambiguous: no string derived twice
    every = torch.tensor(list(itertools.product(range(g.vocab_size), repeat=g.length)))
    labels = g.parse(every)
    valid = labels["string"] < g.n_strings
    assert {tuple(s) for s in every[valid].tolist()} == set(language)
    for s, label in zip(every[valid].tolist(), labels["class"][valid].tolist(), strict=True):
        assert label == language[tuple(s)]
    for name in g.level_names:  # strings outside the language get one label past the valid ones
        assert (labels[name][~valid] == g.n_values(name)).all()


def test_levels_are_nested_partitions_and_samples_parse_to_their_derivation():
    g = RandomHierarchy(n_classes=2, vocab_size=8, n_rules=2, seed=0)
    parts = g.partitions()
    assert [g.n_values(n) for n in g.level_names] == [2, 4, 16, 256]
    for coarse, fine in itertools.pairwise(g.level_names):
        pairs = torch.unique(torch.stack([parts[fine], parts[coarse]], 1), dim=0)
        assert pairs.shape[0] == g.n_values(fine)  # every fine label lies in one coarse label
    strings, levels = g.sample(200, torch.Generator().manual_seed(0))
    parsed = g.parse(strings)
    assert all(torch.equal(parsed[n], levels[n]) for n in g.level_names)
    own = g.parse(g.strings())["string"]
    assert torch.equal(own, parts["string"]) and torch.equal(own.sort().values, torch.arange(g.n_strings))
    mixture = g.mixture("autoregressive")
    assert mixture.n_components == 256 and mixture.clock == "hidden"


def test_grammar_bad_inputs():
    with pytest.raises(ValueError, match="n_rules=9"):
        RandomHierarchy(n_classes=2, vocab_size=2, n_rules=9, branching=2)
    g = tiny()
    with pytest.raises(ValueError, match=r"tokens must have shape \(n, 4\)"):
        g.parse(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens holds token id 3 .* outside 0..2"):
        g.parse(torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="level must be one of class, level1, string"):
        g.feature("level7")


def test_causal_network_sees_only_the_past():
    torch.manual_seed(0)
    net = TokenTransformer(9, 8, 8, width=16, heads=2, layers=2, causal=True).eval()
    x = torch.randint(0, 9, (3, 8))
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 9
    with torch.no_grad():
        torch.testing.assert_close(net(x)[:, :5], net(y)[:, :5])
        assert not torch.allclose(net(x)[:, 5:], net(y)[:, 5:])


@pytest.mark.parametrize("name", ["rhm-mdm-tiny", "rhm-ar-tiny"])
def test_training_is_reproducible_and_the_card_round_trips(name, tmp_path):
    config = PRESETS[name].replace(steps=6)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [
            train_text_model(config, name, d, eval_every=0, final_samples=50, progress=False, log=None)
            for d in (tmp_path / "a", tmp_path / "b")
        ]
    finally:
        torch.set_num_threads(threads)
    (first, card), (second, _) = runs
    for key, value in first.network.state_dict().items():
        assert torch.equal(value, second.network.state_dict()[key])
    loaded = load_text_model(name, tmp_path / "a")
    assert loaded.card == card and loaded.kind == config.kind
    training = card["training"]
    assert (
        training["cpu_seconds"] > 0
        and training["wall_seconds"] > 0
        and len(training["load_average_before"]) == 3
    )
    assert set(card["metrics"]["level_tv"]) == set(loaded.grammar.level_names)
    weights, _ = weights_paths(name, tmp_path / "a")
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ValueError, match="is corrupted"):
        load_text_model(name, tmp_path / "a")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_text_models_match_their_cards(name):
    if not all(path.exists() for path in weights_paths(name)):
        pytest.skip(f"{name} is not shipped in this checkout (critwin train {name} --threads 1)")
    model = load_text_model(name)
    card = model.card
    assert card["config"] == PRESETS[name].to_dict() and card["kind"] == f"rhm-{model.kind}"
    # A fresh sample's validity agrees with the card's (2000 samples) within 4 binomial standard errors.
    metrics = evaluate_text_model(model, n_samples=400, seed=7)
    p = card["valid_fraction"]
    tolerance = 4 * math.sqrt(p * (1 - p) / 400 + p * (1 - p) / 2000) + 1e-3
    assert abs(metrics["valid_fraction"] - p) <= tolerance
    assert metrics["prediction_tv_mean"] == pytest.approx(card["prediction_tv_mean"], abs=0.03)
