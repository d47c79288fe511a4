"""Read and write mixtures as JSON or YAML files (schema in ``examples/README.md``).

Gaussian mixtures (a mapping)::

    kind:    gaussian                                    (optional)
    means:   K x d list of numbers                       (required)
    covs:    omitted (identity) | number (shared isotropic variance)
             | K numbers (isotropic per component) | K x d (diagonal) | K x d x d (full)
    weights: K non-negative numbers with a positive sum   (optional, uniform; normalised on load)

Categorical mixtures (:class:`~critwin.mixtures.CategoricalMixture`)::

    kind:       categorical                              (required)
    vocab_size: V, an integer >= 1                       (required; the mask id is V)
    noise:      mask | uniform | autoregressive          (optional, mask)
    strings:    K x L integer token ids in [0, V)        (Dirac components) or
    probs:      K x L x V numbers, rows summing to 1     (product-categorical components): exactly one
    weights:    as above

YAML is parsed with a ``yaml.SafeLoader`` that also refuses aliases; sizes and structure are checked
before any tensor is built (see :func:`load_mixture`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from critwin._io import atomic_write_text
from critwin.mixtures import CategoricalMixture, GaussianMixture

__all__ = ["load_mixture", "mixture_from_dict", "mixture_to_dict", "save_mixture"]

_KEYS = {"kind", "means", "covs", "weights"}
_CATEGORICAL_KEYS = {"kind", "vocab_size", "noise", "strings", "probs", "weights"}
_KINDS = ("gaussian", "categorical")

MAX_FILE_BYTES = 64 * 2**20
"""Largest mixture file read (checked before parsing)."""
MAX_YAML_BYTES = 8 * 2**20
"""Largest YAML mixture file (the pure-Python parser that can refuse aliases reads ~1 MB/s)."""
MAX_ELEMENTS = 2**24
"""Most numbers a mixture file may hold in all (a (K, d, d) covariance of K = 16, d = 1024)."""
MAX_DEPTH = 8
"""Deepest nesting of lists accepted (the schema needs 3: full covariances)."""


def _numbers(value, field: str, depth: int, count: list[int]):
    """``value`` (a number or nested lists) with every leaf as a finite float, before any tensor exists.

    Checks the structure first so that a hostile file fails fast: nesting deeper than ``MAX_DEPTH``, more
    than ``MAX_ELEMENTS`` numbers in all, non-numbers (bools, strings, mappings), integers too large
    for a float and non-finite values each raise ValueError naming ``field``.
    """
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise ValueError(f"mixture field '{field}' is nested deeper than {MAX_DEPTH} levels")
        return [_numbers(item, field, depth + 1, count) for item in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"mixture field '{field}' must be numbers (a number, list or nested lists of equal "
            f"lengths), got {type(value).__name__}"
        )
    count[0] += 1
    if count[0] > MAX_ELEMENTS:
        raise ValueError(f"mixture file holds more than {MAX_ELEMENTS} numbers")
    try:
        out = float(value)
    except OverflowError:
        raise ValueError(f"mixture field '{field}' holds an integer too large for a float") from None
    if not math.isfinite(out):
        raise ValueError(f"mixture field '{field}' contains NaN or infinite values")
    return out


def _integers(value, field: str, depth: int, count: list[int]):
    """Nested lists of integers (token ids), checked like :func:`_numbers` before any tensor exists."""
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise ValueError(f"mixture field '{field}' is nested deeper than {MAX_DEPTH} levels")
        return [_integers(item, field, depth + 1, count) for item in value]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"mixture field '{field}' must be integer token ids, got {type(value).__name__} {value!r}"
        )
    count[0] += 1
    if count[0] > MAX_ELEMENTS:
        raise ValueError(f"mixture file holds more than {MAX_ELEMENTS} numbers")
    if not -(2**62) < value < 2**62:
        raise ValueError(f"mixture field '{field}' holds a token id out of range: {value}")
    return value


def _tensor(value, field: str, count: list[int]) -> torch.Tensor:
    floats = _numbers(value, field, 0, count)
    try:
        return torch.as_tensor(floats, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"mixture field '{field}' must be numbers (a number, list or nested lists of equal "
            f"lengths), got ragged lists"
        ) from None


def _weights(value, K: int, count: list[int]) -> torch.Tensor:
    weights = _tensor(value, "weights", count)
    if weights.shape != (K,):
        raise ValueError(
            f"mixture field 'weights' must have {K} entries (one per component), got shape "
            f"{tuple(weights.shape)}"
        )
    if (weights < 0).any() or not (weights > 0).any():
        raise ValueError("mixture field 'weights' must be non-negative with a positive sum")
    # Scale by the largest weight first: weights are scale-free, and 1e308 + 1e308 would overflow.
    weights = weights / weights.max()
    return weights / weights.sum()


def mixture_from_dict(spec: dict) -> GaussianMixture | CategoricalMixture:
    """Build a float64 :class:`GaussianMixture` or a :class:`CategoricalMixture` (``kind: categorical``)
    from a mapping following the schema above."""
    if not isinstance(spec, dict):
        raise ValueError(f"a mixture file must contain a mapping with 'means', got {type(spec).__name__}")
    kind = spec.get("kind", "gaussian")
    if kind not in _KINDS:
        raise ValueError(f"mixture field 'kind' must be one of {_KINDS}, got {kind!r}")
    if kind == "categorical":
        return _categorical_from_dict(spec)
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"unknown mixture field(s) {sorted(map(str, unknown))}; allowed: {sorted(_KEYS)}")
    if "means" not in spec:
        raise ValueError("mixture field 'means' is required (a K x d list)")
    count = [0]
    means = _tensor(spec["means"], "means", count)
    if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
        raise ValueError(
            f"mixture field 'means' must be a non-empty K x d list, got shape {tuple(means.shape)}"
        )
    covs = None if spec.get("covs") is None else _tensor(spec["covs"], "covs", count)
    weights = None if spec.get("weights") is None else _weights(spec["weights"], means.shape[0], count)
    try:
        return GaussianMixture(means, covs=covs, weights=weights)
    except ValueError as exc:
        raise ValueError(f"invalid mixture: {exc}") from None


def _categorical_from_dict(spec: dict) -> CategoricalMixture:
    unknown = set(spec) - _CATEGORICAL_KEYS
    if unknown:
        raise ValueError(
            f"unknown mixture field(s) {sorted(map(str, unknown))} for kind 'categorical'; allowed: "
            f"{sorted(_CATEGORICAL_KEYS)}"
        )
    if ("strings" in spec) == ("probs" in spec):
        raise ValueError("a categorical mixture needs exactly one of the fields 'strings' and 'probs'")
    vocab = spec.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"mixture field 'vocab_size' must be an integer >= 1 (required), got {vocab!r}")
    noise = spec.get("noise", "mask")
    count = [0]
    weights = spec.get("weights")
    try:
        if "strings" in spec:
            strings = _integers(spec["strings"], "strings", 0, count)
            if not isinstance(strings, list) or not strings or not all(isinstance(r, list) for r in strings):
                raise ValueError("mixture field 'strings' must be a non-empty K x L list of token ids")
            if len({len(r) for r in strings}) != 1:
                raise ValueError("mixture field 'strings' must be a K x L list (rows of equal lengths)")
            K = len(strings)
            w = None if weights is None else _weights(weights, K, count)
            return CategoricalMixture.from_strings(strings, w, vocab_size=vocab, noise=noise)
        probs = _tensor(spec["probs"], "probs", count)
        if probs.ndim != 3 or probs.shape[2] != vocab:
            raise ValueError(
                f"mixture field 'probs' must be K x L x V with V = vocab_size = {vocab}, got shape "
                f"{tuple(probs.shape)} (vocabulary mismatch)"
            )
        w = None if weights is None else _weights(weights, probs.shape[0], count)
        return CategoricalMixture(probs, w, noise=noise)
    except ValueError as exc:
        raise ValueError(f"invalid mixture: {exc}") from None


def _yaml_loader():
    """A ``yaml.SafeLoader`` that refuses aliases (a few hundred bytes of aliases expand to gigabytes)
    and nesting deeper than ``MAX_DEPTH`` (deep documents exhaust the recursion limit)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ValueError(
                    f"YAML aliases (*name) are not allowed in mixture files (line {mark.line + 1})"
                )
            self.depth += 1
            if self.depth > MAX_DEPTH + 1:
                raise ValueError(f"mixture file is nested deeper than {MAX_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return _Loader


def _parse(path: Path, text: str):
    suffix = path.suffix.lower()
    if suffix == ".json":
        return json.loads(text)
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def _read_text(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"mixture file must end in .json, .yaml or .yml, got {path.name!r}")
    limit = MAX_FILE_BYTES if suffix == ".json" else MAX_YAML_BYTES
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"mixture file {path} is {size} bytes; the limit for {suffix} files is {limit}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"mixture file {path} is not UTF-8 text (byte {exc.start})") from None


def load_mixture(path) -> GaussianMixture | CategoricalMixture:
    """Load a mixture (Gaussian, or categorical with ``kind: categorical``) from a ``.json``, ``.yaml`` or
    ``.yml`` file.

    The file is checked before anything is converted: at most ``MAX_FILE_BYTES`` (JSON) or
    ``MAX_YAML_BYTES`` (YAML), UTF-8, no YAML aliases, nesting at most ``MAX_DEPTH``, at most
    ``MAX_ELEMENTS`` numbers, each a finite real number.

    Raises
    ------
    FileNotFoundError if ``path`` does not exist; ValueError naming the file for a malformed one.

    Examples
    --------
    A round trip through a YAML file (the files of ``examples/`` load the same way):

    >>> import tempfile, pathlib, torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "two.yaml"
    >>> critwin.save_mixture(mix, path)
    >>> loaded = critwin.load_mixture(path)
    >>> loaded, loaded.means.tolist()
    (GaussianMixture(n_components=2, dim=1, cov_kind='iso', dtype=torch.float64), [[-4.0], [4.0]])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mixture file not found: {path}")
    text = _read_text(path)
    try:
        spec = _parse(path, text)
    except RecursionError:
        raise ValueError(f"cannot parse mixture file {path}: nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError, over-long integer literals, YAML errors
        raise ValueError(f"cannot parse mixture file {path}: {exc}") from None
    try:
        return mixture_from_dict(spec)
    except ValueError as exc:
        raise ValueError(f"mixture file {path}: {exc}") from None


def mixture_to_dict(mixture: GaussianMixture | CategoricalMixture) -> dict:
    """The schema mapping of ``mixture`` (covariances in the kind they are stored; a categorical mixture
    as ``strings`` when it is Dirac, else ``probs``)."""
    if isinstance(mixture, CategoricalMixture):
        out = {"kind": "categorical", "noise": mixture.noise, "vocab_size": mixture.vocab_size}
        if mixture.is_dirac:
            out["strings"] = mixture.strings.tolist()
        else:
            out["probs"] = mixture.probs.tolist()
        out["weights"] = mixture.weights.tolist()
        return out
    out = {"means": mixture.means.tolist()}
    covs = mixture.covs
    if not (mixture.cov_kind == "iso" and bool((covs == 1).all())):
        out["covs"] = covs.tolist()
    out["weights"] = mixture.weights.tolist()
    return out


def save_mixture(mixture: GaussianMixture | CategoricalMixture, path) -> None:
    """Write ``mixture`` to ``path`` (.json or .yaml/.yml), atomically.

    Examples
    --------
    >>> import tempfile, pathlib, torch, critwin
    >>> means = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    >>> mix = critwin.GaussianMixture(means, covs=[0.5, 2.0], weights=[0.25, 0.75])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mix.json"
    >>> critwin.save_mixture(mix, path)
    >>> loaded = critwin.load_mixture(path)
    >>> loaded.weights.tolist(), loaded.covs.tolist()
    ([0.25, 0.75], [0.5, 2.0])
    """
    path = Path(path)
    spec = mixture_to_dict(mixture)
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(spec, indent=2) + "\n")
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        atomic_write_text(path, yaml.safe_dump(spec, sort_keys=False))
    else:
        raise ValueError(f"path must end in .json, .yaml or .yml, got {path.name!r}")
