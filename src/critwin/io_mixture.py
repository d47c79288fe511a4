"""Read and write Gaussian mixtures as JSON or YAML files (schema in ``examples/README.md``).

Schema (a mapping)::

    means:   K x d list of numbers                       (required)
    covs:    omitted (identity) | number (shared isotropic variance)
             | K numbers (isotropic per component) | K x d (diagonal) | K x d x d (full)
    weights: K non-negative numbers with a positive sum   (optional, uniform; normalised on load)

YAML is parsed with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from critwin._io import atomic_write_text
from critwin.mixtures import GaussianMixture

__all__ = ["load_mixture", "mixture_from_dict", "mixture_to_dict", "save_mixture"]

_KEYS = {"means", "covs", "weights"}


def _tensor(value, field: str) -> torch.Tensor:
    try:
        out = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"mixture field '{field}' must be numbers (a number, list or nested lists of equal "
            f"lengths), got {type(value).__name__}"
        ) from None
    if not torch.isfinite(out).all():
        raise ValueError(f"mixture field '{field}' contains NaN or infinite values")
    return out


def mixture_from_dict(spec: dict) -> GaussianMixture:
    """Build a float64 :class:`GaussianMixture` from a mapping following the schema above."""
    if not isinstance(spec, dict):
        raise ValueError(f"a mixture file must contain a mapping with 'means', got {type(spec).__name__}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"unknown mixture field(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    if "means" not in spec:
        raise ValueError("mixture field 'means' is required (a K x d list)")
    means = _tensor(spec["means"], "means")
    if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
        raise ValueError(
            f"mixture field 'means' must be a non-empty K x d list, got shape {tuple(means.shape)}"
        )
    covs = None if spec.get("covs") is None else _tensor(spec["covs"], "covs")
    weights = None
    if spec.get("weights") is not None:
        weights = _tensor(spec["weights"], "weights")
        if weights.shape != (means.shape[0],):
            raise ValueError(
                f"mixture field 'weights' must have {means.shape[0]} entries (one per mean), "
                f"got shape {tuple(weights.shape)}"
            )
        if (weights < 0).any() or not weights.sum() > 0:
            raise ValueError("mixture field 'weights' must be non-negative with a positive sum")
        weights = weights / weights.sum()
    try:
        return GaussianMixture(means, covs=covs, weights=weights)
    except ValueError as exc:
        raise ValueError(f"invalid mixture: {exc}") from None


def load_mixture(path) -> GaussianMixture:
    """Load a mixture from a ``.json``, ``.yaml`` or ``.yml`` file.

    Raises
    ------
    FileNotFoundError if ``path`` does not exist; ValueError for a malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mixture file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            spec = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            spec = yaml.safe_load(text)
        else:
            raise ValueError(f"mixture file must end in .json, .yaml or .yml, got {path.name!r}")
    except (json.JSONDecodeError, ImportError) as exc:
        raise ValueError(f"cannot parse mixture file {path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError without importing yaml at module level
        if type(exc).__module__.startswith("yaml"):
            raise ValueError(f"cannot parse mixture file {path}: {exc}") from None
        raise
    return mixture_from_dict(spec)


def mixture_to_dict(mixture: GaussianMixture) -> dict:
    """The schema mapping of ``mixture`` (covariances in the kind they are stored)."""
    out = {"means": mixture.means.tolist()}
    covs = mixture.covs
    if not (mixture.cov_kind == "iso" and bool((covs == 1).all())):
        out["covs"] = covs.tolist()
    out["weights"] = mixture.weights.tolist()
    return out


def save_mixture(mixture: GaussianMixture, path) -> None:
    """Write ``mixture`` to ``path`` (.json or .yaml/.yml), atomically."""
    path = Path(path)
    spec = mixture_to_dict(mixture)
    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(spec, indent=2) + "\n")
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        atomic_write_text(path, yaml.safe_dump(spec, sort_keys=False))
    else:
        raise ValueError(f"path must end in .json, .yaml or .yml, got {path.name!r}")
