"""Image features: user callables, similarity to sources, zero-shot classification.

All expected values are computed independently (hand loops over pairs, closed-form softmax); they are
deterministic, so tolerances are float64 rounding only.
"""

from __future__ import annotations

import math

import pytest
import torch

from critwin.experiments.features import CallableFeature, SourceSimilarity, ZeroShotClassifier, zero_shot_clip


def _images(n, seed):
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_source_similarity_matches_pairwise_loop(metric):
    sources = _images(5, 0)
    queries = torch.cat([sources[[3, 0]], _images(6, 1)])
    feature = SourceSimilarity(sources, metric=metric, batch_size=3)
    sim = feature.similarity(queries)
    for i, q in enumerate(queries):
        for j, s in enumerate(sources):
            a, b = q.flatten().double(), s.flatten().double()
            expected = (
                -math.sqrt(((a - b) ** 2).sum().item())
                if metric == "l2"
                else (a @ b / a.norm() / b.norm()).item()
            )
            assert sim[i, j].item() == pytest.approx(expected, abs=1e-10)
    labels = feature(queries)
    assert labels.tolist() == sim.argmax(1).tolist()
    assert labels[:2].tolist() == [3, 0]  # every source is its own nearest source
    assert feature(sources).tolist() == list(range(5))


def test_source_similarity_threshold_and_embedding():
    sources = _images(4, 0)
    near = sources + 0.01
    far = sources + 5.0
    l2 = SourceSimilarity(sources, metric="l2", threshold=0.5)
    # Distances: 0.01 * sqrt(48) ~ 0.07 (a match) and 5 * sqrt(48) ~ 35 (no match -> label N = 4).
    assert l2(torch.cat([near, far])).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    cosine = SourceSimilarity(sources, metric="cosine", threshold=0.999)
    assert cosine(near).tolist() == [0, 1, 2, 3]
    # An embedding that keeps only the mean colour: sources then compare by their channel means.
    means = SourceSimilarity(sources, embed=lambda x: x.mean(dim=(2, 3)))
    shifted = sources[[2]] + torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 1e-3
    assert means(shifted).tolist() == [2]
    assert means.reference.shape == (4, 3)


def test_source_similarity_bad_input():
    with pytest.raises(ValueError, match="metric must be one of"):
        SourceSimilarity(_images(2, 0), metric="l1")
    with pytest.raises(ValueError, match="sources must be a tensor"):
        SourceSimilarity(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="all-zero embedding"):
        SourceSimilarity(torch.zeros(2, 3), metric="cosine")
    with pytest.raises(ValueError, match="features per sample"):
        SourceSimilarity(_images(2, 0))(torch.zeros(1, 5))


def test_callable_feature_wraps_and_checks():
    feature = CallableFeature(
        lambda x: (x.mean(dim=(1, 2, 3)) > 0).long(), name="bright", batch_size=2, n_classes=2
    )
    x = _images(5, 0)
    assert feature(x).tolist() == (x.mean(dim=(1, 2, 3)) > 0).long().tolist()
    assert feature.name == "bright"
    with pytest.raises(ValueError, match="labels must be integers"):
        CallableFeature(lambda x: x.mean(dim=(1, 2, 3)))(x)
    with pytest.raises(ValueError, match="outside 0..1"):
        CallableFeature(lambda x: torch.full((x.shape[0],), 2), n_classes=2)(x)
    with pytest.raises(ValueError, match=r"must return \(n,\) labels"):
        CallableFeature(lambda x: torch.zeros(3, dtype=torch.long))(x)
    with pytest.raises(ValueError, match="fn must be callable"):
        CallableFeature(3)


def test_zero_shot_classifier_closed_form():
    # Image features: the mean of each colour channel; text features: one direction per class.
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    classifier = ZeroShotClassifier(
        lambda x: x.mean(dim=(2, 3)), text, ["red", "green", "grey"], logit_scale=10.0, batch_size=2
    )
    x = _images(5, 0).abs()
    probs = classifier(x)
    for i in range(5):
        z = x[i].mean(dim=(1, 2)).double()
        cos = [(z @ t.double() / z.norm() / t.double().norm()).item() for t in text]
        weights = [math.exp(10.0 * c) for c in cos]
        for k in range(3):
            assert probs[i, k].item() == pytest.approx(weights[k] / sum(weights), abs=1e-6)
    assert probs.sum(1).tolist() == pytest.approx([1.0] * 5, abs=1e-6)
    with pytest.raises(ValueError, match="K >= 2"):
        ZeroShotClassifier(lambda x: x, torch.ones(1, 3))
    with pytest.raises(ValueError, match="labels has 2 names"):
        ZeroShotClassifier(lambda x: x, text, ["a", "b"])


def test_zero_shot_clip_needs_local_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        zero_shot_clip(["cat", "dog"], tmp_path / "missing.safetensors", arch="ViT-B-32")
    checkpoint = tmp_path / "clip.safetensors"
    checkpoint.write_bytes(b"not really weights")
    with pytest.raises(ValueError, match="arch is required"):
        zero_shot_clip(["cat", "dog"], checkpoint)
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"pip install 'critwin\[clip\]'"):
            zero_shot_clip(["cat", "dog"], checkpoint, arch="ViT-B-32")
    with pytest.raises(ValueError, match="at least two classes"):
        zero_shot_clip(["cat"], checkpoint, arch="ViT-B-32")
    with pytest.raises(ValueError, match="not a local transformers CLIP directory"):
        zero_shot_clip(["cat", "dog"], tmp_path)


def test_zero_shot_clip_from_local_transformers_directory(tmp_path):
    """A tiny CLIP saved locally: our probabilities equal CLIPModel's own ``logits_per_image`` softmax."""
    transformers = pytest.importorskip("transformers")
    from critwin.experiments.features import _clip_preprocess
    from tiny_models import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(tmp_path)
    torch.manual_seed(0)
    layers = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPConfig(
        text_config=dict(
            **layers,
            vocab_size=len(tokenizer),
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(**layers, image_size=8, patch_size=4),
        projection_dim=8,
    )
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    classifier = zero_shot_clip(["cat", "dog", "car"], tmp_path)
    x = _images(3, 5)
    tokens = tokenizer([f"a photo of {w}" for w in ("cat", "dog", "car")], padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**tokens, pixel_values=_clip_preprocess(8)(x)).logits_per_image.softmax(-1)
    assert torch.allclose(classifier(x), reference, atol=1e-6)


def test_clip_checkpoint_reading(tmp_path):
    from safetensors.torch import save_file

    from critwin.experiments.features import _load_state_dict

    weights = {"visual.proj": torch.ones(2, 2), "logit_scale": torch.tensor(4.6)}
    save_file(weights, str(tmp_path / "w.safetensors"))
    assert torch.equal(_load_state_dict(tmp_path / "w.safetensors")["visual.proj"], weights["visual.proj"])
    # DDP-style checkpoints: {"state_dict": {"module.<name>": tensor}}, read with weights_only=True.
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 3}, tmp_path / "w.pt")
    assert sorted(_load_state_dict(tmp_path / "w.pt")) == sorted(weights)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read CLIP weights"):
        _load_state_dict(tmp_path / "bad.pt")
