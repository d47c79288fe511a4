"""Transition times and critical windows (docs/theory.md §4–§5) and their closed forms (docs/theory.md §6).

Names follow Blink (Li, Karan & Chen 2025): ``T_end`` (merged: ``TV(p_t^{S_init}, p_t^{S_target}) <= eps``)
and ``T_start`` (separated: ``TV(p_t^{S_target}, p_t^{rest}) >= 1 - eps^2``); LC24 calls them
``T_lower`` and ``T_upper`` (not used here: one name, one meaning). Both TV curves are non-increasing
in ``t``, so the times are found by bisection on :class:`critwin.theory.divergence.TVCurve` (exact when
possible, Monte Carlo with common random numbers otherwise). Each time also gets an interval: the same
bisection run on the lower and on the upper pointwise confidence curve (Monte Carlo intervals or
quadrature error brackets), widened by the bisection tolerance. Whether a window is empty is decided
from those intervals: ``"non-empty"``, ``"empty"`` or ``"undetermined"`` when they overlap.

Monte Carlo is deterministic by default: with ``generator=None`` a generator seeded with
``DEFAULT_SEED`` (0) is used; pass a ``torch.Generator`` for other draws. Closed forms (docs/theory.md §6)
live in :mod:`critwin.theory.closed_forms`.

Conventions for the edge cases: ``T_start = +inf`` when ``S_target`` is every component (nothing to be
separated from); ``T_start = -inf`` when the sets are not separated even at ``t = 0``. JSON output
writes infinities as ``null``.

A :class:`~critwin.mixtures.CategoricalMixture` is accepted everywhere a GaussianMixture is: its times are
levels on its own clock (kappa, or hidden positions; :mod:`critwin.theory.discrete_times`), and every
result says which clock in its ``clock`` field (``"ou"`` for Gaussian mixtures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from critwin._display import short_repr
from critwin._validation import check_eps, check_number, check_subset
from critwin.mixtures import CategoricalMixture, GaussianMixture
from critwin.theory.discrete_times import (
    check_search,
    clock_of,
    merge_level,
    merge_sets,
    separation_level,
    separation_sets,
    separation_threshold,
)
from critwin.theory.divergence import DEFAULT_SEED, Estimate, TVCurve

__all__ = [
    "Crossing",
    "TransitionTimes",
    "Window",
    "transition_times",
    "critical_window",
    "merge_time",
    "window_from_times",
    "separation_time",
    "theorem_bound",
    "window_status",
    "DEFAULT_SEED",
]

T_MAX = 60.0
"""Largest OU time searched: e^{-60} ~ 1e-26, every finite mixture is merged long before it."""
_MAX_BISECTIONS = 200  # a float64 bracket cannot be halved more often than this
STATUSES = ("non-empty", "empty", "undetermined")


class Crossing(NamedTuple):
    """A transition time and its bracket, as :func:`merge_time` and :func:`separation_time` return it.

    ``time`` is the crossing of the value curve, ``[low, high]`` its bracket (Monte Carlo confidence
    curves, quadrature error brackets or sure bounds, widened by the bisection tolerance) and ``method``
    how the TV was computed (``"closed-form"``, ``"quadrature"``, ``"monte-carlo"``, ``"bounds"``, ...).
    A tuple: ``time, low, high, method = merge_time(...)`` still works.
    """

    time: float
    low: float
    high: float
    method: str


class _Endpoint(NamedTuple):
    """An endpoint of a window: its value and bracket."""

    value: float
    low: float
    high: float


def _finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def theorem_bound(eps: float, W: float) -> float:
    """Blink Thm 2's bound ``eps (1 + max(1, W) / sqrt 2)`` on ``TV(p^{S_init, T}, p^{S_target})``.

    ``eps`` in (0, 1); ``W`` the weight ratio ``(1 - w(S_target)) / w(S_target)`` in [0, inf] (inf when
    ``S_target`` has no weight).

    Examples
    --------
    >>> import critwin
    >>> round(critwin.theorem_bound(0.1, 0.0), 4), round(critwin.theorem_bound(0.1, 3.0), 4)
    (0.1707, 0.3121)
    """
    eps = check_eps(eps)
    if not (isinstance(W, float) and W == math.inf):
        W = check_number(W, "W (weight ratio)", low=0.0)
    return eps * (1.0 + max(1.0, W) / math.sqrt(2.0))


def window_status(first: tuple[float, float], last: tuple[float, float]) -> str:
    """Whether ``[T_first, T_last]`` is empty, from the intervals ``(low, high)`` of both endpoints.

    ``"empty"`` when ``T_first > T_last`` for every value in the intervals (or ``T_first`` is surely
    ``-inf``), ``"non-empty"`` when ``T_first <= T_last`` for all of them with ``T_first`` finite,
    ``"undetermined"`` otherwise (the intervals straddle).
    """
    (first_low, first_high), (last_low, last_high) = first, last
    if first_high == -math.inf or first_low > last_high:
        return "empty"
    if first_low > -math.inf and first_high <= last_low:
        return "non-empty"
    return "undetermined"


@dataclass(frozen=True)
class TransitionTimes:
    """``T_end``, ``T_start`` and the bound of Blink Thm 2 for one pair ``S_init ⊆ S_target``.

    Iterating yields ``(t_end, t_start, bound)``. ``*_low``/``*_high`` bracket each time (Monte Carlo
    confidence curves, or the quadrature error bracket, widened by the bisection tolerance).
    ``status``: ``"non-empty"`` / ``"empty"`` / ``"undetermined"`` for ``[T_end, T_start]`` (see
    :func:`window_status`). ``clock``: what the times measure: ``"ou"`` (OU time), ``"kappa"`` or
    ``"hidden"`` (a CategoricalMixture's level, :mod:`critwin.theory.discrete_times`).

    Examples
    --------
    What :func:`critwin.transition_times` returns (see its example for the closed form of ``t_end``):

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> times = critwin.transition_times(mix, init=[0], target=[0, 1], eps=0.1)
    >>> times
    TransitionTimes(t_end=2.7593 [2.7591, 2.7594], t_start=inf [inf, inf], bound=0.1707, ...)
    >>> t_end, t_start, bound = times
    >>> times.t_end_low <= t_end <= times.t_end_high, times.clock
    (True, 'ou')
    """

    t_end: float
    t_start: float
    bound: float
    eps: float
    W: float
    init: list[int]
    target: list[int]
    method: str
    t_end_low: float
    t_end_high: float
    t_start_low: float
    t_start_high: float
    clock: str = "ou"

    @property
    def status(self) -> str:
        return window_status((self.t_end_low, self.t_end_high), (self.t_start_low, self.t_start_high))

    @property
    def empty(self) -> bool:
        """Alias of ``status == "empty"``."""
        return self.status == "empty"

    def __iter__(self):
        return iter((self.t_end, self.t_start, self.bound))

    def __repr__(self) -> str:
        fields = {
            "t_end": self.t_end,
            "t_end_ci": (self.t_end_low, self.t_end_high),
            "t_start": self.t_start,
            "t_start_ci": (self.t_start_low, self.t_start_high),
            "bound": self.bound,
            "status": self.status,
            "eps": self.eps,
            "init": self.init,
            "target": self.target,
        }
        return short_repr("TransitionTimes", fields)

    def to_dict(self) -> dict:
        out = {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__}
        out["status"], out["empty"] = self.status, self.empty
        return out


@dataclass(frozen=True)
class Window:
    """A critical window ``[t_after, t_before] = [T_after, T_before]`` (Blink Def. 4).

    ``status`` is ``"empty"`` when the interval is surely empty or an endpoint is surely infinite (the
    fine set is never separated, or the coarse set is no longer separated when the fine one merges),
    ``"non-empty"`` when surely not, ``"undetermined"`` when the endpoint intervals ``*_low``/``*_high``
    straddle; the endpoints are reported regardless. ``reason`` says why it is not ``"non-empty"``.
    ``clock``: what the times measure: ``"ou"`` (OU time), ``"kappa"`` or ``"hidden"`` (a
    CategoricalMixture's level).

    Examples
    --------
    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> w = critwin.critical_window(mix, after=[0], before=[0, 1], eps=0.1)
    >>> w
    Window(t_after=0.44009 [0.44004, 0.44014], t_before=2.7593 [2.7591, 2.7594], status=non-empty, ...)
    >>> t_after, t_before = w  # unpacks as the interval
    >>> round(w.width, 3)
    2.319
    """

    t_after: float
    t_before: float
    eps: float
    after: list[int] = field(default_factory=list)
    before: list[int] = field(default_factory=list)
    method: str = ""
    reason: str = ""
    t_after_low: float = math.nan
    t_after_high: float = math.nan
    t_before_low: float = math.nan
    t_before_high: float = math.nan
    status: str = "non-empty"
    clock: str = "ou"

    @property
    def lower(self) -> float:
        return self.t_after

    @property
    def upper(self) -> float:
        return self.t_before

    @property
    def empty(self) -> bool:
        """Alias of ``status == "empty"``."""
        return self.status == "empty"

    @property
    def width(self) -> float:
        return self.t_before - self.t_after

    def __iter__(self):
        return iter((self.t_after, self.t_before))

    def __repr__(self) -> str:
        fields = {
            "t_after": self.t_after,
            "t_after_ci": (self.t_after_low, self.t_after_high),
            "t_before": self.t_before,
            "t_before_ci": (self.t_before_low, self.t_before_high),
            "status": self.status,
            "eps": self.eps,
            "after": self.after,
            "before": self.before,
            "method": self.method,
        }
        if self.clock != "ou":
            fields["clock"] = self.clock
        return short_repr("Window", fields)

    def to_dict(self) -> dict:
        out = {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__}
        for k, v in out.items():
            if isinstance(v, float) and math.isnan(v):
                out[k] = None
        out["empty"] = self.empty
        return out


def make_window(after, before, eps, method, t_after, t_before) -> Window:
    """A :class:`Window` from ``(value, low, high)`` of each endpoint, with its status and reason."""
    t_after, t_before = _Endpoint(*t_after[:3]), _Endpoint(*t_before[:3])
    status = _window_status_of(t_after, t_before)
    return Window(
        t_after=t_after.value,
        t_before=t_before.value,
        eps=eps,
        after=list(after),
        before=list(before),
        method=method,
        reason=_reason(status, t_after, t_before),
        t_after_low=t_after.low,
        t_after_high=t_after.high,
        t_before_low=t_before.low,
        t_before_high=t_before.high,
        status=status,
    )


def _window_status_of(t_after: _Endpoint, t_before: _Endpoint) -> str:
    # An infinite T_before (S_before no longer separated when S_after merges) makes the window empty.
    if t_before.low == math.inf:
        return "empty"
    status = window_status((t_after.low, t_after.high), (t_before.low, t_before.high))
    return "undetermined" if status == "non-empty" and t_before.high == math.inf else status


def _reason(status: str, t_after: _Endpoint, t_before: _Endpoint) -> str:
    if status == "non-empty":
        return ""
    if t_after.high == -math.inf:
        return "S_after is not separated from the other components even at t = 0"
    if t_before.low == math.inf:
        return "S_before is no longer separated from the rest when S_after merges into it"
    if status == "empty":
        return "T_after > T_before"
    return "the intervals of T_after and T_before overlap (or one may be infinite)"


# ------------------------------------------------------------------------------------ bisection
def _bisect(pred, lo: float, hi: float, tol: float) -> float:
    """Midpoint of the final bracket, where ``pred(lo)`` is False and ``pred(hi)`` is True."""
    for _ in range(_MAX_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if hi - lo <= tol or not lo < mid < hi:
            break
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def _bracket_near(pred, near, tol: float):
    """A bracket ``(lo, hi)`` with ``pred(lo)`` False and ``pred(hi)`` True grown geometrically around
    ``near`` (e.g. the crossing of the value curve when bisecting its confidence curves); None if none."""
    if near is None or not math.isfinite(near):
        return None
    width = 32 * tol
    while width < 4.0:
        lo, hi = max(0.0, near - width), near + width
        lo_ok, hi_ok = not pred(lo), pred(hi)
        if lo_ok and hi_ok:
            return lo, hi
        if not lo_ok and lo == 0.0:
            return None
        width *= 4
    return None


def _first_true(pred, at_zero: float, tol: float, near: float | None) -> float:
    """The boundary ``inf{t >= 0 : pred(t)}`` of a predicate that stays True once it holds; ``at_zero`` if
    it holds at 0, +inf if not by ``T_MAX``. ``near``: a guess tried first as a narrow bracket."""
    if pred(0.0):
        return at_zero
    bracket = _bracket_near(pred, near, tol)
    if bracket is not None:
        return _bisect(pred, *bracket, tol)
    lo, hi = 0.0, 1.0
    while not pred(hi):
        lo, hi = hi, 2.0 * hi
        if hi > T_MAX:
            return math.inf
    return _bisect(pred, lo, hi, tol)


def _first_below(f, level: float, tol: float, near: float | None = None) -> float:
    """``inf{t >= 0 : f(t) <= level}`` for a non-increasing ``f``; +inf if not reached by ``T_MAX``.

    ``near``: a guess (e.g. the crossing of a neighbouring curve) tried first as a narrow bracket.
    """
    return _first_true(lambda t: f(t) <= level, 0.0, tol, near)


def _last_above(f, level: float, tol: float, near: float | None = None) -> float:
    """``sup{t >= 0 : f(t) >= level}`` for a non-increasing ``f``; -inf if ``f(0) < level``."""
    return _first_true(lambda t: f(t) < level, -math.inf, tol, near)


class _Cached:
    """Evaluate a TV curve once per time and expose its value, low and high curves."""

    def __init__(self, curve: TVCurve):
        self.curve = curve
        self.cache: dict[float, Estimate] = {}

    def _get(self, t: float) -> Estimate:
        if t not in self.cache:
            self.cache[t] = self.curve(t)
        return self.cache[t]

    def value(self, t):
        return self._get(t).value

    def low(self, t):
        return self._get(t).low

    def high(self, t):
        return self._get(t).high


def _crossing(mixture, A, B, kw, find) -> Crossing:
    """``find(f, near=None)`` on the TV curve between ``A`` and ``B``, with its bracket: the same search on
    the lower and upper curves (Monte Carlo intervals or quadrature error brackets) widened by half the
    bisection tolerance; a closed-form curve only gets the tolerance."""
    tol = kw["tol"]
    curve = TVCurve(
        mixture.subset(A), mixture.subset(B), kw["n"], kw["generator"], method=kw["method"], level=kw["level"]
    )
    c = _Cached(curve)
    t = find(c.value)
    if curve.method == "closed-form":
        low, high = t, t
    else:
        low, high = find(c.low, t), find(c.high, t)
    half = tol / 2
    return Crossing(t, (low - half if low > 0 else low), (high + half if high > 0 else high), curve.method)


def merge_time(
    mixture: GaussianMixture,
    A,
    B,
    eps: float,
    *,
    n: int = 20000,
    generator=None,
    method: str = "auto",
    tol: float = 1e-4,
    level: float = 0.95,
) -> Crossing:
    """``inf{t : TV(p_t^A, p_t^B) <= eps}`` with its bracket.

    Monte Carlo (when no exact TV exists) draws from ``generator``, by default one seeded with
    ``DEFAULT_SEED`` = 0, so repeated calls agree.

    Returns
    -------
    Crossing ``(time, low, high, method)``: ``low`` from the lower confidence curve, ``high`` from the
    upper one.
    """
    if isinstance(mixture, CategoricalMixture):
        return merge_level(mixture, A, B, eps, n=n, generator=generator, method=method, tol=tol, level=level)
    eps = check_eps(eps)
    check_search(tol, n, generator)
    A, B = merge_sets(mixture, A, B)
    if A == B:
        return Crossing(0.0, 0.0, 0.0, "closed-form")
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    return _crossing(mixture, A, B, kw, lambda f, near=None: _first_below(f, eps, tol, near))


def separation_time(
    mixture: GaussianMixture,
    S,
    eps: float,
    *,
    n: int = 20000,
    generator=None,
    method: str = "auto",
    tol: float = 1e-4,
    level: float = 0.95,
) -> Crossing:
    """``sup{t : TV(p_t^S, p_t^{rest}) >= 1 - eps^2}`` with its bracket (+inf if S is everything).

    Monte Carlo draws from ``generator`` (default: seeded with ``DEFAULT_SEED`` = 0).

    Returns
    -------
    Crossing ``(time, low, high, method)``.
    """
    if isinstance(mixture, CategoricalMixture):
        return separation_level(
            mixture, S, eps, n=n, generator=generator, method=method, tol=tol, level=level
        )
    eps = check_eps(eps)
    check_search(tol, n, generator)
    S, rest = separation_sets(mixture, S)
    if not rest:
        return Crossing(math.inf, math.inf, math.inf, "closed-form")
    threshold = separation_threshold(eps)
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    return _crossing(mixture, S, rest, kw, lambda f, near=None: _last_above(f, threshold, tol, near))


def check_pair(init, target, n_components: int) -> tuple[list[int], list[int]]:
    """Validated component sets ``S_init ⊆ S_target`` (sorted lists); ValueError naming the bad one."""
    init = check_subset(init, n_components, "init")
    target = check_subset(target, n_components, "target")
    if not set(init) <= set(target):
        raise ValueError(f"init must be a subset of target, got init={init}, target={target}")
    return init, target


def weight_ratio(mixture: GaussianMixture, target: list[int]) -> float:
    w = mixture.weights.to(torch.float64)
    inside = float(w[target].sum())
    # max: a target holding every component sums to 1 + 1 ulp in float64 and would give -2e-16.
    return max(0.0, (1.0 - inside) / inside) if inside > 0 else math.inf


def transition_times(
    mixture: GaussianMixture,
    init,
    target,
    eps: float = 0.1,
    *,
    n: int = 20000,
    generator: torch.Generator | None = None,
    method: str = "auto",
    tol: float = 1e-4,
    level: float = 0.95,
) -> TransitionTimes:
    """``T_end``, ``T_start`` and the bound ``eps (1 + max(1, W)/sqrt 2)`` of Blink Thm 2.

    Parameters
    ----------
    mixture : GaussianMixture, or CategoricalMixture (times are then levels on its ``clock``).
    init, target : component indices with ``init ⊆ target`` (S_init, S_target).
    eps : in (0, 1).
    n, generator, method : passed to :class:`critwin.theory.divergence.TVCurve` (Monte Carlo only); with
        ``generator=None`` the draws are seeded with ``DEFAULT_SEED`` = 0 (same result on every call).
    tol : bisection tolerance in OU time, in (0, 1).
    level : confidence level of the Monte Carlo curves that bracket each time.

    Returns
    -------
    TransitionTimes (iterates as ``(t_end, t_start, bound)``).

    Examples
    --------
    Component 0 of two unit Gaussians at -4 and +4 merges into the whole mixture at ``T_end`` (the
    ``t_before`` of :func:`critical_window`); the whole mixture has no rest to separate from, so
    ``T_start`` is infinite and the bound is ``eps (1 + 1/sqrt 2)``:

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> times = critwin.transition_times(mix, init=[0], target=[0, 1], eps=0.1)
    >>> round(times.t_end, 3), times.t_start, round(times.bound, 4)
    (2.759, inf, 0.1707)
    """
    check_mixture(mixture)
    eps = check_eps(eps)
    init, target = check_pair(init, target, mixture.n_components)
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    end = merge_time(mixture, init, target, eps, **kw)
    start = separation_time(mixture, target, eps, **kw)
    W = weight_ratio(mixture, target)
    return TransitionTimes(
        t_end=end.time,
        t_start=start.time,
        bound=theorem_bound(eps, W),
        eps=eps,
        W=W,
        init=init,
        target=target,
        method="+".join(sorted({end.method, start.method})),
        t_end_low=end.low,
        t_end_high=end.high,
        t_start_low=start.low,
        t_start_high=start.high,
        clock=clock_of(mixture),
    )


def critical_window(
    mixture: GaussianMixture,
    after,
    before=None,
    eps: float = 0.1,
    *,
    n: int = 20000,
    generator: torch.Generator | None = None,
    method: str = "auto",
    tol: float = 1e-4,
    level: float = 0.95,
) -> Window:
    """The critical window ``[T_after, T_before]`` of the feature ``S_after ⊂ S_before`` (Blink Def. 4).

    ``T_before = inf{t : TV(p_t^{after}, p_t^{before}) <= eps and TV(p_t^{before}, p_t^{rest}) >= 1 - eps^2}``
    equals ``T_end(after, before)`` when that is ``<= T_start(before)`` and +inf otherwise (both curves
    are monotone); ``T_after = sup{t : TV(p_t^{after}, p_t^{not after}) >= 1 - eps^2}``.

    Parameters
    ----------
    mixture : GaussianMixture, or CategoricalMixture (times are then levels on its ``clock``).
    after : the finer set (non-empty, a proper subset of ``before``).
    before : the coarser set (default: every component).
    eps : in (0, 1).
    n, generator, method, tol, level : as in :func:`transition_times` (Monte Carlo seeded with
        ``DEFAULT_SEED`` = 0 unless a generator is given).

    Returns
    -------
    Window with ``t_after``, ``t_before``, their intervals and ``status``.

    Examples
    --------
    Two unit Gaussians at -4 and +4: noising to OU time ``t`` and denoising keeps the component below
    ``t_after`` and forgets it above ``t_before``, where ``TV(N(4 e^-t, 1), mixture) = eps``, that is
    ``t_before = ln(4 / Phi^-1(1/2 + eps))``:

    >>> import math, torch, critwin
    >>> from scipy.stats import norm
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> w = critwin.critical_window(mix, after=[0], before=[0, 1], eps=0.1)
    >>> w.status, round(w.t_after, 3), round(w.t_before, 3)
    ('non-empty', 0.44, 2.759)
    >>> round(math.log(4 / norm.ppf(0.6)), 3)
    2.759
    """
    check_mixture(mixture)
    eps = check_eps(eps)
    K = mixture.n_components
    after = check_subset(after, K, "after")
    before = list(range(K)) if before is None else check_subset(before, K, "before")
    if not set(after) < set(before):
        raise ValueError(f"after must be a proper subset of before, got after={after}, before={before}")
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    window = window_from_times(
        after,
        before,
        eps,
        merge_time(mixture, after, before, eps, **kw),
        separation_time(mixture, before, eps, **kw),
        separation_time(mixture, after, eps, **kw),
    )
    return replace(window, clock=clock_of(mixture))


def check_mixture(mixture) -> None:
    """ValueError unless ``mixture`` is a GaussianMixture (or EmpiricalMixture) or a CategoricalMixture."""
    if not isinstance(mixture, (GaussianMixture, CategoricalMixture)):
        raise ValueError(
            f"mixture must be a GaussianMixture or a CategoricalMixture, got {type(mixture).__name__}"
        )


def window_from_times(after, before, eps, merged, separated_before, separated_after) -> Window:
    """Assemble a :class:`Window` from the outputs of :func:`merge_time` ``(after, before)`` and
    :func:`separation_time` of ``before`` and of ``after`` (each a :class:`Crossing` or a plain
    ``(time, low, high, method)`` tuple)."""
    merged, sep_before, sep_after = (Crossing(*c) for c in (merged, separated_before, separated_after))
    method = "+".join(sorted({merged.method, sep_before.method, sep_after.method}))
    return make_window(after, before, eps, method, sep_after[:3], _t_before(merged, sep_before))


def status_from_times(merged, separated_before, separated_after) -> str:
    """The ``status`` of :func:`window_from_times` for the same three crossings (only their brackets
    matter), without building the window."""
    merged, sep_before = Crossing(*merged), Crossing(*separated_before)
    return _window_status_of(_Endpoint(*tuple(separated_after)[:3]), _t_before(merged, sep_before))


def _t_before(merged: Crossing, sep_before: Crossing) -> _Endpoint:
    """T_before = T_end(after, before) while the coarse set is still separated then, +inf otherwise; the
    pessimistic end needs the pessimistic separation, the optimistic end the optimistic one."""
    return _Endpoint(
        merged.time if merged.time <= sep_before.time else math.inf,
        merged.low if merged.low <= sep_before.high else math.inf,
        merged.high if merged.high <= sep_before.low else math.inf,
    )
