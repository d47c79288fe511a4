"""Argument checks shared by every layer: each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Iterable, Sequence

from critwin._lazy import deferred_import

# Imported on first use: the command line checks its options with these helpers before torch loads.
np = deferred_import("numpy", globals(), "np")
torch = deferred_import("torch", globals())


def _is_tensor(value) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch (no tensor exists before it is)."""
    loaded = sys.modules.get("torch")
    return loaded is not None and isinstance(value, loaded.Tensor)


def check_time(t, name: str = "t", allow_zero: bool = True) -> float:
    """Return ``t`` as a float after checking it is a finite, non-negative OU time."""
    value = _scalar(t, name, "a number (an OU time)")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} (OU time), got {value}")
    return value


def _scalar(value, name: str, what: str) -> float:
    """``value`` as a finite Python float; ValueError naming ``name`` for anything else."""
    if _is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"{name} must be {what}, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    # bool is an int subclass and complex converts with a lost imaginary part: both are caller bugs.
    if isinstance(value, (bool, complex, str, bytes)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def check_number(value, name: str, *, low: float = -math.inf, high: float = math.inf, closed: str = "both"):
    """``value`` as a finite float within ``[low, high]``.

    ``closed`` in ``{"both", "low", "high", "neither"}`` says which ends belong to the range.
    """
    out = _scalar(value, name, "a finite real number")
    low_ok = out >= low if closed in ("both", "low") else out > low
    high_ok = out <= high if closed in ("both", "high") else out < high
    if not (low_ok and high_ok):
        left = "[" if closed in ("both", "low") else "("
        right = "]" if closed in ("both", "high") else ")"
        raise ValueError(f"{name} must lie in {left}{low:g}, {high:g}{right}, got {value!r}")
    return out


def check_finite(x: torch.Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def check_finite_from(summary: torch.Tensor, x: torch.Tensor, name: str) -> None:
    """Refuse NaN or infinite entries of ``x`` by looking at ``summary`` first.

    ``summary`` is a small tensor computed from ``x`` anyway that is NaN or infinite wherever a row of
    ``x`` is (e.g. each row's log density under one component: one NaN or inf coordinate makes it NaN
    or -inf). Scanning all of ``x`` costs as much as the work itself in a fused kernel, so ``x`` is only
    scanned when ``summary`` is not finite: bad input (ValueError naming ``name``) or an overflow on
    finite input (accepted, as before).
    """
    if not bool(torch.isfinite(summary).all()):
        check_finite(x, name)


def numeric_array(value, name: str, kinds: str, what: str) -> np.ndarray:
    """``value`` through numpy (the kind of the data is seen before any cast, and float64 stays exact);
    ValueError ``"{name} must be {what}, got <type>"`` unless its dtype kind is one of ``kinds``."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        arr = None
    if arr is None or arr.dtype.kind not in kinds:
        raise ValueError(f"{name} must be {what}, got {type(value).__name__}") from None
    return arr


def check_real_tensor(
    value, name: str, dtype: torch.dtype | None = None, *, allow_inf: bool = False, values: bool = True
) -> torch.Tensor:
    """``value`` as a finite real tensor (cast to ``dtype`` when given).

    Raises ValueError naming ``name`` for non-numeric input, boolean or complex dtypes (which casts would
    silently turn into numbers) and NaN or (unless ``allow_inf``) infinite entries. ``values=False``
    leaves the NaN/inf check to the caller (hot paths check a cheap summary with
    :func:`check_finite_from`).
    """
    if isinstance(value, torch.Tensor):
        out = value
    else:
        arr = numeric_array(
            value, name, "biufc", "numbers (a tensor, number or nested lists of equal lengths)"
        )
        out = torch.as_tensor(arr)
        if arr.dtype.kind == "f" and not isinstance(value, np.ndarray) and dtype is None:
            out = out.to(torch.get_default_dtype())  # like torch.as_tensor on Python floats
    if out.dtype == torch.bool or out.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {out.dtype}")
    if dtype is not None:
        out = out.to(dtype)
    if not values:
        return out
    if allow_inf:
        if torch.isnan(out).any():
            raise ValueError(f"{name} contains NaN")
    else:
        check_finite(out, name)
    return out


def check_float_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """A real floating-point torch dtype (integer states would truncate noise and priors)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point torch dtype (e.g. torch.float64), got {dtype!r}")
    return dtype


def check_device(device, name: str = "device") -> torch.device:
    """A torch device this machine has: cpu, or cuda / mps where they are available."""
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be a torch device such as cpu or cuda, got {device!r}") from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {device}: CUDA is not available on this machine")
    if out.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {device}: MPS is not available on this machine")
    if out.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name} must be cpu, cuda or mps, got {device!r}")
    return out


def check_float_tensor(x, name: str = "x") -> torch.Tensor:
    """A finite tensor of a floating-point dtype (a sampler's state, a point to score)."""
    if not isinstance(x, torch.Tensor):
        x = check_real_tensor(x, name)
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return x
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_finite(x, name)
    return x


def check_eps(eps, name: str = "eps") -> float:
    """A number in the open interval (0, 1) (an epsilon, a level, a probability bound)."""
    return check_number(eps, name, low=0.0, high=1.0, closed="neither")


def check_delta(delta, name: str = "delta") -> float:
    """A window level delta in (0, 0.5): the window runs from 1 - delta down to delta."""
    delta = check_eps(delta, name)
    if delta >= 0.5:
        raise ValueError(f"{name} must be < 0.5 (the window runs from 1 - delta down to delta), got {delta}")
    return delta


def check_generator(generator, name: str = "generator") -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")


def check_subset(subset: Iterable[int] | None, n_components: int, name: str) -> list[int]:
    """Validate a subset of component indices; return it sorted and de-duplicated."""
    if subset is None:
        raise ValueError(f"{name} must be a non-empty list of component indices, got None")
    if isinstance(subset, torch.Tensor):
        subset = subset.tolist()
    if isinstance(subset, (int,)):
        subset = [subset]
    items: Sequence = list(subset)
    if len(items) == 0:
        raise ValueError(f"{name} must be a non-empty list of component indices, got an empty set")
    out = set()
    for item in items:
        if (
            isinstance(item, bool)
            or not isinstance(item, (int,))
            and not (hasattr(item, "__index__") and not isinstance(item, float))
        ):
            raise ValueError(f"{name} must contain integer component indices, got {item!r}")
        index = int(item)
        if not 0 <= index < n_components:
            raise ValueError(
                f"{name} contains unknown component {index}; valid indices are 0..{n_components - 1}"
            )
        out.add(index)
    return sorted(out)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_sample_shape(shape, name: str = "sample_shape") -> tuple[int, ...]:
    """The shape of one sample: a sequence of integers >= 1 (an empty tuple for scalars)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise ValueError(f"{name} must be a tuple of integers >= 1, got {shape!r}")
    out = []
    for size in shape:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{name} must be a tuple of integers >= 1, got {tuple(shape)!r}")
        out.append(int(size))
    return tuple(out)


def check_labels(value, name: str) -> torch.Tensor:
    """A non-empty 1-D tensor of integer class labels >= 0 (float labels would compare unequal to the
    integer labels of a result after any rounding, silently changing rates)."""
    if isinstance(value, torch.Tensor):
        out = value.detach().cpu()
    else:
        try:
            out = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be integer labels, got {type(value).__name__}") from None
    if out.is_floating_point() or out.is_complex() or out.dtype == torch.bool:
        raise ValueError(f"{name} must be integer labels (dtype int), got dtype {out.dtype}")
    out = out.reshape(-1).long()
    if out.numel() == 0:
        raise ValueError(f"{name} must be non-empty")
    if (out < 0).any():
        raise ValueError(f"{name} must be integer labels >= 0, got {int(out.min())}")
    return out


# ------------------------------------------------------------------------------------------- seeds
SEED_LIMIT = 2**63
"""Seeds are integers in ``[0, SEED_LIMIT)``. ``torch.Generator.manual_seed`` takes up to ``2**64 - 1``;
a bound of ``2**63`` leaves room for the fixed offsets some functions add to derive further seeds
(``seed + 1``, ``data_seed + 10000``), so no seed accepted here fails later."""


def _seed_error(name: str, value) -> ValueError:
    return ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")


def check_seed(seed, name: str = "seed") -> int:
    """The one rule for seeds: an integer (Python or NumPy, not bool) in ``[0, 2**63)``.

    Every public function that takes a seed calls this before any model is loaded or output written,
    and every CLI ``--seed`` goes through :func:`parse_seed`, so the message is the same everywhere.

    Examples
    --------
    >>> check_seed(7)
    7
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    ValueError: seed must be an integer in [0, 2**63), got -1
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise _seed_error(name, seed)
    value = int(seed)
    if not 0 <= value < SEED_LIMIT:
        raise _seed_error(name, value)
    return value


def parse_seed(text, name: str = "--seed") -> int:
    """A seed typed on the command line (decimal digits), checked by :func:`check_seed`."""
    if isinstance(text, str):
        stripped = text.strip()
        if not stripped.lstrip("+-").isdigit():
            raise _seed_error(name, text)
        text = int(stripped)
    return check_seed(text, name)


# --------------------------------------------------------------------------------- model outputs
class ModelError(ValueError):
    """A model (denoiser, network, feature) raised or returned something the engine cannot use.

    The message names the model and the step; a model's own exception is the ``__cause__``.
    """


def callable_name(fn) -> str:
    """A readable name of a callable for messages: its qualified name, else its type's name."""
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return getattr(target, "__qualname__", None) or type(fn).__name__


def describe_value(value) -> str:
    """What a model returned, for an error message (``"None (does it end with a return statement?)"``)."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a NumPy array of shape {value.shape} (return a torch tensor)"
    if value is None:
        return "None (does it end with a return statement?)"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} items (return the tensor itself)"
    return f"a {type(value).__name__}"


def _has_bad_values(out: torch.Tensor, allow_neg_inf: bool) -> bool:
    """Whether ``out`` holds NaN/inf (or, with ``allow_neg_inf``, NaN or +inf): one reduction.

    The sum is finite exactly when every entry is (a NaN or infinity propagates), unless finite entries
    overflow the sum; only then, and for outputs that may hold -inf, are the entries looked at.
    """
    if out.numel() == 0:
        return False
    # In the output's own dtype: float64 does not exist on every device (MPS).
    if torch.isfinite(out.sum()):
        return False
    if allow_neg_inf:
        return bool(torch.isnan(out).any() or torch.isposinf(out).any())
    return not bool(torch.isfinite(out).all())


def check_model_output(
    out,
    *,
    model: str,
    where,
    shape: tuple[int, ...] | torch.Size,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_neg_inf: bool = False,
) -> torch.Tensor:
    """The one check of a model's output where it enters the engine (every process kind calls it).

    A network that broadcasts a wrong shape, returns NaN, an integer tensor or lower precision than its
    input gives curves that look valid and are not; this refuses such outputs, naming the model and
    the step. Its cost is one reduction over the output (a sum; no copy), negligible beside the model.

    Parameters
    ----------
    out : what the model returned.
    model : the model's name (e.g. ``"denoiser 'my_fn'"``, ``"unet 'google/ddpm-cifar10-32'"``).
    where : the step (e.g. ``"OU time t=0.512"``, ``"grid index 3 (timestep 781)"``), or a function
        returning it (called only to write an error).
    shape : the exact shape the output must have (no broadcasting).
    dtype : the least precise floating dtype accepted (the state's); None: any floating dtype.
        Integer, bool and complex outputs are always refused.
    device : where the output must live (None: anywhere).
    allow_neg_inf : accept ``-inf`` entries (masked logits of a token model); NaN and ``+inf`` never.

    Returns
    -------
    ``out`` unchanged.

    Raises
    ------
    ModelError (a ValueError) naming ``model`` and ``where``.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(4, 2)
    >>> check_model_output(x + 1, model="denoiser 'f'", where="t=0.5", shape=x.shape, dtype=x.dtype).shape
    torch.Size([4, 2])
    """
    problem = _output_problem(out, tuple(shape), dtype, device, allow_neg_inf)
    if problem is not None:
        raise ModelError(f"{model} ({_text(where)}) returned {problem}")
    return out


def _output_problem(out, shape: tuple, dtype, device, allow_neg_inf: bool) -> str | None:
    """What is wrong with a model output (the end of an error message), or None."""
    if not isinstance(out, torch.Tensor):
        return f"{describe_value(out)}, expected a tensor of shape {shape}"
    if tuple(out.shape) != shape:
        return f"shape {tuple(out.shape)}, expected {shape} (a broadcast output is refused)"
    if not out.is_floating_point():
        return f"dtype {out.dtype}, expected a floating-point tensor"
    if dtype is not None and torch.finfo(out.dtype).eps > torch.finfo(dtype).eps:
        return f"dtype {out.dtype}, less precise than the state's {dtype}"
    if device is not None and out.device != torch.device(device):
        return f"a tensor on {out.device}, expected one on {torch.device(device)}"
    if _has_bad_values(out, allow_neg_inf):
        return "NaN or infinite values"
    return None


def call_model(fn, *args, model: str, where, **kwargs):
    """``fn(*args, **kwargs)``, an exception of the user's model wrapped in a :class:`ModelError` naming
    ``model`` and ``where`` (the original is its ``__cause__``).

    A :class:`ModelError` from inside (a nested critwin model) passes through unchanged.
    """
    try:
        return fn(*args, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{model} raised {type(exc).__name__} ({_text(where)}): {exc}") from exc


def _text(where) -> str:
    return where() if callable(where) else str(where)


def check_token_ids(tokens, name: str, length: int, high: int, what: str = "the vocabulary") -> torch.Tensor:
    """``tokens`` as an ``(n, length)`` long tensor (device kept) with every id in ``0..high-1``.

    ``what`` says what the ids ``0..high-1`` are (e.g. "the vocabulary and the mask id 8") in the error.
    Raises ValueError naming ``name`` for non-integer values, another shape or an id out of range.
    """
    if not isinstance(tokens, torch.Tensor):
        try:
            tokens = torch.as_tensor(np.asarray(tokens))
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be an (n, {length}) tensor of token ids") from None
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.ndim != 2 or tokens.shape[1] != length or tokens.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (n, {length}) with n >= 1 (sequences of length {length}), "
            f"got {tuple(tokens.shape)}"
        )
    tokens = tokens.detach().long()
    bad = (tokens < 0) | (tokens >= high)
    if bad.any():
        row, position = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} holds token id {int(tokens[row, position])} at row {row}, position {position}, "
            f"outside 0..{high - 1} ({what})"
        )
    return tokens
