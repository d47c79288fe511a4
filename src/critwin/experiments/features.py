"""Image features for the measurement engine: ``feature(x_data) -> (n,) labels or (n, C) probabilities``.

- :class:`CallableFeature` wraps any user function (validating its output, naming it for provenance);
- :class:`SourceSimilarity` labels an image by the most similar *source* image (L2 or cosine, in pixel,
  latent or any user-given embedding space): in a forward–reverse sweep each source is its own label, so
  the commitment curve is "the output is still closest to the image it came from" (memorisation);
- :class:`ZeroShotClassifier` / :func:`zero_shot_clip`: zero-shot classification by cosine similarity to
  text embeddings, with CLIP weights from a local file (``open_clip``, optional) or a local
  ``transformers`` CLIP directory. Nothing is ever downloaded.

The experiments resolve a feature with :func:`resolve_feature`, name it with :func:`feature_name` and
evaluate it with :func:`apply_feature`; :func:`check_feature_output` is the one validator of what a
feature returns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from critwin._files import load_tensor_file
from critwin._validation import ModelError, call_model, check_positive_int, describe_value

__all__ = [
    "CallableFeature",
    "SourceSimilarity",
    "ZeroShotClassifier",
    "zero_shot_clip",
    "feature_name",
    "resolve_feature",
    "LATENT",
    "apply_feature",
    "check_feature_output",
    "FeatureOutput",
    "FeatureSet",
    "resolve_features",
    "read_features",
    "labelled",
    "feature_names",
    "describe_features",
    "split_labels",
    "UNNAMED",
]


def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int | None
) -> torch.Tensor:
    if batch_size is None or x.shape[0] <= batch_size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(batch_size)])


class CallableFeature:
    """A user function as a feature, with a name (stored with results) and output checks.

    Parameters
    ----------
    fn : ``fn(x) -> (n,)`` integer labels or ``(n, C)`` probabilities (tensor or NumPy array).
    name : name recorded in sweep metadata (default: the function's qualified name).
    batch_size : evaluate in chunks of this many samples (None: all at once).
    n_classes : if given, labels must lie in ``0..n_classes-1`` and probabilities have ``n_classes`` columns.
    """

    def __init__(
        self,
        fn: Callable,
        name: str | None = None,
        batch_size: int | None = None,
        n_classes: int | None = None,
    ):
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = (
            name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        )
        self.batch_size = None if batch_size is None else check_positive_int(batch_size, "batch_size")
        self.n_classes = None if n_classes is None else check_positive_int(n_classes, "n_classes")

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        label = f"feature {self.name!r}"
        value = call_model(self.fn, x, model=label, where=f"batch of {int(x.shape[0])} samples")
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{label} returned {describe_value(value)}, not a tensor or NumPy array")
        return value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(n,) int64 labels or (n, C) probabilities of ``fn(x)``, checked by :func:`check_feature_output`."""
        with torch.no_grad():
            value = _batched(self._one, x, self.batch_size).detach()
        checked = check_feature_output(value, x.shape[0], f"feature {self.name}", self.n_classes)
        return checked.labels if value.ndim == 1 else value


class SourceSimilarity:
    """Label each image by its most similar source image (the memorisation feature).

    Parameters
    ----------
    sources : (N, ...) reference images (e.g. the ``x0`` of a forward–reverse sweep, or training images).
    metric : ``"l2"`` (Euclidean distance of flattened embeddings) or ``"cosine"``.
    threshold : optional. ``"l2"``: a match needs distance <= threshold; ``"cosine"``: similarity >=
        threshold. Images with no match get the label ``N`` ("none of the sources").
    embed : optional ``embed(x) -> (n, D)`` applied to sources and images first (e.g. a VAE encoder,
        CLIP image features); default: the flattened pixels.
    batch_size : images per chunk when comparing against all sources.
    name : recorded name.

    Notes
    -----
    Label ``i`` means "closest to ``sources[i]``". Applied to the sources themselves every source gets
    its own index (ties between identical sources go to the lowest index), so in a forward–reverse sweep
    over ``sources`` the agreement ``c(t)`` is the probability that the output stays closest to its own
    source.

    Examples
    --------
    >>> import torch, critwin
    >>> sources = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    >>> nearest = critwin.SourceSimilarity(sources)
    >>> nearest(sources).tolist(), nearest(torch.tensor([[9.0, 1.0], [5.0, 5.1]])).tolist()
    ([0, 1, 2], [1, 2])
    >>> within = critwin.SourceSimilarity(sources, threshold=2.0)  # no source within 2: label N = 3
    >>> within(torch.tensor([[9.0, 1.0], [5.0, 5.1]])).tolist()
    [1, 3]
    """

    METRICS = ("l2", "cosine")

    def __init__(
        self,
        sources: torch.Tensor,
        metric: str = "l2",
        threshold: float | None = None,
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_size: int = 256,
        name: str | None = None,
    ):
        if metric not in self.METRICS:
            raise ValueError(f"metric must be one of {self.METRICS}, got {metric!r}")
        if not isinstance(sources, torch.Tensor) or sources.ndim < 2 or sources.shape[0] == 0:
            raise ValueError("sources must be a tensor (N, ...) with at least one sample")
        if not sources.is_floating_point() or not torch.isfinite(sources).all():
            raise ValueError("sources must be finite floating-point values")
        self.metric = metric
        self.threshold = None if threshold is None else float(threshold)
        self.embed = embed
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.name = name or f"source-similarity-{metric}" + ("" if threshold is None else f"@{threshold:g}")
        self.reference = self._embed(sources)
        if metric == "cosine":
            norms = self.reference.norm(dim=1)
            if (norms == 0).any():
                raise ValueError(
                    "sources contain an all-zero embedding, whose cosine similarity is undefined"
                )
            self.reference = self.reference / norms[:, None]

    @property
    def n_sources(self) -> int:
        return int(self.reference.shape[0])

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.embed(x) if self.embed is not None else x
        return z.reshape(z.shape[0], -1).double()

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """(n, N) float64: cosine similarity, or minus the L2 distance, of every image to every source."""
        z = self._embed(x).to(self.reference.device)
        if z.shape[1] != self.reference.shape[1]:
            raise ValueError(
                f"x has {z.shape[1]} features per sample after embedding, "
                f"the sources have {self.reference.shape[1]}"
            )
        out = []
        for part in z.split(self.batch_size):
            if self.metric == "cosine":
                out.append((part / part.norm(dim=1, keepdim=True).clamp_min(1e-300)) @ self.reference.T)
            else:
                out.append(-torch.cdist(part, self.reference))
        return torch.cat(out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        sim = self.similarity(x)
        best, labels = sim.max(dim=1)
        if self.threshold is not None:
            matched = best >= (self.threshold if self.metric == "cosine" else -self.threshold)
            labels = torch.where(matched, labels, torch.full_like(labels, self.n_sources))
        return labels.long().cpu()


class ZeroShotClassifier:
    """Zero-shot classification: softmax of scaled cosine similarities to class text embeddings.

    ``p(k | x) = softmax_k(logit_scale * cos(image_features(x), text_features[k]))``, as in CLIP.

    Parameters
    ----------
    image_features : ``f(images) -> (n, D)`` (images in [-1, 1], (n, 3, H, W)).
    text_features : (K, D) one embedding per class.
    labels : K class names (for provenance).
    logit_scale : CLIP's temperature (100 for released CLIP models).
    batch_size : images per forward pass.
    name : recorded name.
    """

    def __init__(
        self,
        image_features: Callable[[torch.Tensor], torch.Tensor],
        text_features: torch.Tensor,
        labels: Sequence[str] | None = None,
        logit_scale: float = 100.0,
        batch_size: int = 64,
        name: str | None = None,
    ):
        if (
            not isinstance(text_features, torch.Tensor)
            or text_features.ndim != 2
            or text_features.shape[0] < 2
        ):
            raise ValueError("text_features must be a (K, D) tensor with K >= 2 classes")
        labels = list(labels) if labels is not None else [str(k) for k in range(text_features.shape[0])]
        if len(labels) != text_features.shape[0]:
            raise ValueError(f"labels has {len(labels)} names for {text_features.shape[0]} text embeddings")
        self.image_features = image_features
        self.text_features = text_features.detach().float()
        self.text_features = self.text_features / self.text_features.norm(dim=1, keepdim=True)
        self.labels = labels
        self.logit_scale = float(logit_scale)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.name = name or "zero-shot:" + "|".join(labels)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        def one(part):
            with torch.no_grad():
                z = self.image_features(part).float()
            z = z / z.norm(dim=1, keepdim=True)
            return self.logit_scale * z @ self.text_features.to(z.device).T

        return _batched(one, x, self.batch_size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(n, K) float32 class probabilities on the CPU."""
        return torch.softmax(self.logits(x).double(), dim=1).float().cpu()


_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _clip_preprocess(size: int):
    def prep(x: torch.Tensor) -> torch.Tensor:
        # Images in [-1, 1] -> CLIP's normalised input at its resolution (bicubic resize, no crop).
        x = ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        mean = torch.tensor(_CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    return prep


def zero_shot_clip(
    labels: Sequence[str],
    weights: str | os.PathLike,
    arch: str | None = None,
    prompt_template: str = "a photo of {}",
    device=None,
    batch_size: int = 64,
) -> ZeroShotClassifier:
    """A zero-shot CLIP classifier from local weights only.

    Parameters
    ----------
    labels : class names (K >= 2); each is embedded as ``prompt_template.format(label)``.
    weights : either a local ``open_clip`` checkpoint file (``.safetensors``/``.pt``; needs ``arch``, e.g.
        ``"ViT-B-32"``, and the optional dependency ``open_clip_torch``: ``pip install 'critwin[clip]'``),
        or a local directory holding a ``transformers`` ``CLIPModel`` with its tokenizer.
    arch : open_clip architecture name (required with a checkpoint file).
    device : where the model runs (default CPU).

    Raises
    ------
    ValueError / FileNotFoundError with a message saying what is missing; nothing is downloaded.

    Examples
    --------
    An untrained tiny ``transformers`` CLIP saved to a directory stands in for real weights (its
    probabilities mean nothing; a downloaded ``openai/clip-vit-base-patch32`` directory loads the same way):

    >>> import tempfile, torch, transformers, critwin
    >>> from critwin.models.shapes_t2i.tokenizer import build_tokenizer
    >>> path = tempfile.mkdtemp()
    >>> tokenizer = build_tokenizer(path, ["a", "photo", "of", "cat", "dog"], 8)
    >>> layers = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    >>> ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)  # the tokenizer's start, end (= pad)
    >>> config = transformers.CLIPConfig(
    ...     text_config=dict(layers, vocab_size=len(tokenizer), max_position_embeddings=8, **ids),
    ...     vision_config=dict(layers, image_size=8, patch_size=4), projection_dim=8,
    ... )
    >>> _ = torch.manual_seed(0)
    >>> transformers.CLIPModel(config).save_pretrained(path)
    >>> _ = tokenizer.save_pretrained(path)
    >>> classifier = critwin.zero_shot_clip(["cat", "dog"], path)
    >>> p = classifier(torch.rand(3, 3, 8, 8) * 2 - 1)  # images in [-1, 1]
    >>> classifier.labels, tuple(p.shape), bool(torch.allclose(p.sum(1), torch.ones(3)))
    (['cat', 'dog'], (3, 2), True)
    """
    labels = [str(label) for label in labels]
    if len(labels) < 2:
        raise ValueError("labels must name at least two classes for zero-shot classification")
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(
            f"CLIP weights not found at {path}: critwin never downloads weights; pass a local open_clip "
            "checkpoint file (with arch=) or a local transformers CLIP directory"
        )
    prompts = [prompt_template.format(label) for label in labels]
    device = torch.device(device or "cpu")
    if path.is_dir():
        return _transformers_clip(path, labels, prompts, device, batch_size)
    if arch is None:
        raise ValueError("arch is required with an open_clip checkpoint file (e.g. arch='ViT-B-32')")
    try:
        import open_clip
    except ImportError:
        raise ValueError(
            "zero-shot CLIP from a checkpoint file needs the optional dependency open_clip_torch "
            "(pip install 'critwin[clip]')"
        ) from None
    try:
        model = open_clip.create_model(arch, pretrained=None, device=device)
    except RuntimeError as exc:
        raise ValueError(f"open_clip does not know the architecture {arch!r}: {exc}") from None
    # Weights are read here (safetensors, or torch.load with weights_only=True), never by open_clip.
    state = _load_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"the weights in {path} do not fit open_clip {arch!r}: {str(exc)[:300]}") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        text = model.encode_text(tokenizer(prompts).to(device))
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    prep = _clip_preprocess(size)
    scale = float(model.logit_scale.exp().item())
    return ZeroShotClassifier(
        lambda x: model.encode_image(prep(x.to(device))),
        text,
        labels,
        scale,
        batch_size,
        name=f"clip:{arch}:" + "|".join(labels),
    )


def _load_state_dict(path: Path) -> dict:
    state = load_tensor_file(path, "CLIP weights")
    if path.suffix == ".safetensors":
        return state
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    # Checkpoints saved from DistributedDataParallel prefix every name with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _transformers_clip(path: Path, labels, prompts, device, batch_size) -> ZeroShotClassifier:
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError:
        raise ValueError(
            "a CLIP directory needs the transformers package (pip install transformers)"
        ) from None
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{path} is not a local transformers CLIP directory with a tokenizer: {exc}"
        ) from None
    with torch.no_grad():
        tokens = tokenizer(prompts, padding=True, return_tensors="pt").to(device)
        text = model.get_text_features(**tokens)
    text = getattr(text, "pooler_output", text)
    prep = _clip_preprocess(int(model.config.vision_config.image_size))

    def image_features(x):
        out = model.get_image_features(pixel_values=prep(x.to(device)))
        return getattr(out, "pooler_output", out)

    scale = float(model.logit_scale.exp().item())
    return ZeroShotClassifier(
        image_features, text, labels, scale, batch_size, name=f"clip:{path.name}:" + "|".join(labels)
    )


# ---------------------------------------------------------------------------- features in experiments
def feature_name(feature, name: str | None = None) -> str:
    """A stable name for a feature (recorded in the config so that resumes cannot mix features)."""
    if name is not None:
        return str(name)
    if isinstance(feature, str):
        return feature
    explicit = getattr(feature, "name", None)
    if isinstance(explicit, str):
        return explicit
    target = feature if hasattr(feature, "__qualname__") else type(feature)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(feature).__name__)}"


class _Latent:
    """The feature "the latent component drawn by the exact sampler" (a marker, compared with ``is``)."""

    def __repr__(self) -> str:
        return "LATENT"

    def __reduce__(self):
        # Pickled by name: a Ray worker gets this module's own marker back, so ``is LATENT`` holds there.
        return "LATENT"


LATENT = _Latent()
"""Marker returned by :func:`resolve_feature` for ``feature="component"``: the label is the component
the exact sampler draws, not a function of the output."""


def resolve_feature(feature, process, *, latent: bool = False, caller: str = "this experiment"):
    """The callable behind ``feature``, or :data:`LATENT` (the one rule for the named features).

    Parameters
    ----------
    feature : a callable ``f(x_data) -> labels``, ``"bayes"`` (the mixture's Bayes label at t = 0) or
        ``"component"`` (the latent component, known exactly only for a mixture with ``sampler="exact"``).
    process : the experiment's :class:`~critwin.experiments.process.ReverseProcess`.
    latent : whether the caller can follow the latent component (``forward_reverse``, ``clone``).
    caller : name used in the error of a caller that cannot.

    Returns
    -------
    The feature callable, or :data:`LATENT`.
    """
    if isinstance(feature, str):
        if feature not in ("bayes", "component"):
            raise ValueError(f"feature must be a callable, 'bayes' or 'component', got {feature!r}")
        if feature == "component":
            return _latent(process, latent, caller)
        # A MixtureProcess holds .mixture; a DiscreteProcess may run on a mixture's exact denoiser.
        mixture = getattr(process, "mixture", None) or getattr(process, "denoiser", None)
        if mixture is None or not hasattr(mixture, "bayes_label"):
            raise ValueError("feature='bayes' needs a mixture model (GaussianMixture/EmpiricalMixture)")
        return mixture.bayes_label
    if not callable(feature):
        raise ValueError(f"feature must be a callable, 'bayes' or 'component', got {type(feature).__name__}")
    return feature


def _latent(process, supported: bool, caller: str):
    if not supported:
        raise ValueError(
            f"feature='component' (the latent component) is not available in {caller}; "
            "use feature='bayes' for the Bayes label of the output"
        )
    if getattr(process, "sampler", None) != "exact" or not hasattr(process, "mixture"):
        raise ValueError(
            "feature='component' (the latent component) is known only with a mixture and "
            "sampler='exact'; use feature='bayes' for the Bayes label of the output"
        )
    return LATENT


class FeatureOutput(NamedTuple):
    """What a feature said about ``n`` inputs, checked: ``labels`` (n,) int64 and ``probabilities``
    (n, C) float32 (CPU tensors; None when the feature returned labels)."""

    labels: torch.Tensor
    probabilities: torch.Tensor | None


def apply_feature(fn: Callable, x: torch.Tensor, name: str | None = None) -> FeatureOutput:
    """Evaluate a feature on a batch ``x`` (n, ...) and validate it (:func:`check_feature_output`): the
    seam where a feature's output enters the engine.

    An exception of the feature is raised as a ``ModelError`` (a ValueError) naming it, with the
    original as its cause; a NumPy array is taken as a tensor; None, a tuple or any other value is
    refused by name.

    Parameters
    ----------
    fn : the feature.
    x : (n, ...) data-space batch.
    name : how errors name the feature (default: :func:`feature_name`).

    Returns
    -------
    :class:`FeatureOutput` ``(labels, probabilities)``.
    """
    label = f"feature {feature_name(fn, name)!r}"
    where = f"batch of {int(x.shape[0])} samples"
    with torch.no_grad():
        value = call_model(fn, x, model=label, where=where)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    return check_feature_output(value, int(x.shape[0]), label)


def check_feature_output(value, n: int, name: str = "feature", n_classes: int | None = None) -> FeatureOutput:
    """Check what a feature returned for ``n`` inputs: the one validator of feature outputs.

    Parameters
    ----------
    value : (n,) integer labels >= 0, or (n, C) probabilities (non-negative rows summing to 1).
    n : number of inputs.
    name : how the feature is named in error messages.
    n_classes : if given, labels must lie in ``0..n_classes-1`` and probabilities have ``n_classes`` columns.

    Returns
    -------
    :class:`FeatureOutput`: labels (n,) int64 and probabilities (n, C) float32 (None for labels).
    """
    if not isinstance(value, torch.Tensor):
        raise ModelError(
            f"{name} returned {describe_value(value)}; it must return (n,) integer labels or (n, C) "
            "probabilities (a tensor or NumPy array)"
        )
    value = value.detach().cpu()
    if value.ndim == 1 and value.shape[0] == n:
        return FeatureOutput(_check_labels(value, name, n_classes), None)
    if value.ndim == 2 and value.shape[0] == n and value.is_floating_point():
        return FeatureOutput(value.argmax(1), _check_probabilities(value, name, n_classes))
    raise ValueError(
        f"{name} must return (n,) labels (integers) or (n, C) probabilities for n={n} inputs, "
        f"got {value.dtype} of shape {tuple(value.shape)}"
    )


def _check_labels(value: torch.Tensor, name: str, n_classes: int | None) -> torch.Tensor:
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(
            f"{name} must return integer labels (n,) or probabilities (n, C); got dtype {value.dtype} "
            "of shape (n,): labels must be integers"
        )
    labels = value.long()
    if (labels < 0).any():
        raise ValueError(f"{name} returned negative labels; labels must be integers >= 0")
    if n_classes is not None and (labels >= n_classes).any():
        raise ValueError(f"{name} returned labels outside 0..{n_classes - 1}")
    return labels


def _check_probabilities(value: torch.Tensor, name: str, n_classes: int | None) -> torch.Tensor:
    if n_classes is not None and value.shape[1] != n_classes:
        raise ValueError(f"{name} returned {value.shape[1]} classes, expected {n_classes}")
    if not torch.isfinite(value).all() or (value < 0).any():
        raise ValueError(f"{name} returned (n, C) values that are not probabilities (negative or non-finite)")
    if ((value.sum(1) - 1).abs() > 1e-3).any():
        raise ValueError(
            f"{name} returned (n, C) values whose rows do not sum to 1; return probabilities "
            "(apply softmax to logits)"
        )
    return value.float()


# ------------------------------------------------------------------------------- several features
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")

UNNAMED = ""
"""The name of the one feature of a sweep given a single feature (not a mapping). Inside the engine
labels are always ``{name: tensor}``; this name gives the unit arrays and table columns of such a sweep
their plain names (``labels``, ``label``), as before several features existed (:func:`labelled`), and
results of it hold tensors (:func:`~critwin.experiments.results.at_edge`). No user name equals it:
names are non-empty."""


class FeatureSet:
    """The features of a sweep by name, all read from the same outputs: every sweep's resolved feature.

    Parameters
    ----------
    features : name -> resolved feature callable (as :func:`resolve_feature` returns it, :data:`LATENT`
        included), in order; a single feature is ``{UNNAMED: fn}``.
    """

    def __init__(self, features: Mapping[str, Callable]):
        self.features = dict(features)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def single(self) -> bool:
        """Whether the sweep was given one feature (not a mapping): its result holds tensors."""
        return self.names == (UNNAMED,)

    @property
    def latent(self) -> bool:
        """Whether the feature is the latent component (:data:`LATENT`, never combined with others)."""
        return any(fn is LATENT for fn in self.features.values())

    def __repr__(self) -> str:
        return f"FeatureSet({', '.join(self.names)})"


def labelled(column: str, name: str) -> str:
    """The column (or unit array) ``column`` of the feature ``name``: ``label[background]``; the plain
    ``column`` for the :data:`UNNAMED` feature of a single-feature sweep, whose files keep their names."""
    return column if name == UNNAMED else f"{column}[{name}]"


def feature_names(feature_fn: FeatureSet) -> list[str]:
    """The names of a resolved feature's labels (``[UNNAMED]`` for a single feature)."""
    return list(feature_fn.names)


def resolve_features(
    feature, process, *, latent: bool = False, caller: str = "this experiment"
) -> FeatureSet:
    """:func:`resolve_feature` of one feature (as ``{UNNAMED: fn}``) or of every feature of a mapping
    ``{name: feature}``.

    Names are non-empty strings of letters, digits, ``_``, ``.`` and ``-`` (they become column names
    ``label[name]``); the latent ``"component"`` cannot be combined with other features (it is not read
    from the outputs).
    """
    if not isinstance(feature, Mapping):
        return FeatureSet({UNNAMED: resolve_feature(feature, process, latent=latent, caller=caller)})
    if not feature:
        raise ValueError("feature must name at least one feature when given as a mapping, got {}")
    resolved = {}
    for name, one in feature.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"feature names must be non-empty strings of letters, digits, '_', '.', '-'; got {name!r}"
            )
        if isinstance(one, str) and one == "component":
            raise ValueError(
                f"feature {name!r}: the latent 'component' cannot be read with other features "
                "(it is not a function of the outputs); run it on its own"
            )
        resolved[name] = resolve_feature(one, process, caller=caller)
    return FeatureSet(resolved)


def describe_features(feature, feature_fn: FeatureSet, label: str | None = None):
    """The feature's recorded name (bound into a sweep's settings, so a resume cannot mix features): a
    string for a single feature, ``{name: recorded name}`` for several."""
    if not feature_fn.single:
        if label is not None:
            raise ValueError("feature_label names a single feature; several features are named by their keys")
        return {name: feature_name(feature[name]) for name in feature_fn.names}
    return feature_name("component-latent" if feature_fn.latent else feature, label)


def read_features(feature_fn: FeatureSet, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every feature on the same batch ``x``: ``labels[name]`` (n,) and ``probs[name]`` (n, C) when
    given (named by :func:`labelled`)."""
    out = {}
    for name, fn in feature_fn.features.items():
        labels, probs = apply_feature(fn, x, None if name == UNNAMED else name)
        out[labelled("labels", name)] = labels.numpy()
        if probs is not None:
            out[labelled("probs", name)] = probs.numpy()
    return out


def split_labels(feature_fn: FeatureSet, arrays: Mapping[str, np.ndarray], column: str = "labels"):
    """``{name: tensor}`` of the ``column`` arrays of :func:`read_features`."""
    return {name: torch.from_numpy(np.asarray(arrays[labelled(column, name)])) for name in feature_fn.names}
