"""Transition times and critical windows (THEORY §3) and their closed forms (THEORY §5).

Names follow Blink (Li, Karan & Chen 2025): ``T_end`` (merged: ``TV(p_t^{S_init}, p_t^{S_target}) <= eps``)
and ``T_start`` (separated: ``TV(p_t^{S_target}, p_t^{rest}) >= 1 - eps^2``); LC24 calls them
``T_lower`` and ``T_upper`` (available as aliases). Both TV curves are non-increasing in ``t``, so the
times are found by bisection on :class:`critwin.divergence.TVCurve` (exact when possible, Monte Carlo
with common random numbers otherwise). With Monte Carlo, each time also gets an interval: the same
bisection run on the lower and on the upper pointwise confidence curve.

Conventions for the edge cases: ``T_start = +inf`` when ``S_target`` is every component (nothing to be
separated from); ``T_start = -inf`` when the sets are not separated even at ``t = 0``. JSON output
writes infinities as ``null``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from critwin._validation import check_eps, check_subset
from critwin.divergence import TVCurve
from critwin.mixtures import GaussianMixture

__all__ = [
    "TransitionTimes",
    "Window",
    "transition_times",
    "critical_window",
    "merge_time",
    "window_from_times",
    "separation_time",
    "theorem_bound",
    "window_two_gaussians",
    "window_isotropic",
    "ClosedFormTimes",
    "log_concave_times",
]

_T_MAX = 60.0  # e^{-60} ~ 1e-26: every finite mixture is merged long before this OU time.


def _finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def theorem_bound(eps: float, W: float) -> float:
    """Blink Thm 2's bound ``eps (1 + max(1, W) / sqrt 2)`` on ``TV(p^{S_init, T}, p^{S_target})``."""
    return eps * (1.0 + max(1.0, W) / math.sqrt(2.0))


@dataclass(frozen=True)
class TransitionTimes:
    """``T_end``, ``T_start`` and the bound of Blink Thm 2 for one pair ``S_init ⊆ S_target``.

    Iterating yields ``(t_end, t_start, bound)``. ``*_low``/``*_high`` bracket each time (Monte Carlo
    confidence curves, or the quadrature error bracket; equal to the time for closed forms).
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

    @property
    def empty(self) -> bool:
        """True when no ``T`` satisfies ``T_end <= T <= T_start`` (the theorem then says nothing)."""
        return not self.t_end <= self.t_start

    @property
    def t_lower(self) -> float:
        """LC24's name for ``T_end``."""
        return self.t_end

    @property
    def t_upper(self) -> float:
        """LC24's name for ``T_start``."""
        return self.t_start

    def __iter__(self):
        return iter((self.t_end, self.t_start, self.bound))

    def to_dict(self) -> dict:
        out = {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__}
        out["empty"] = self.empty
        return out


@dataclass(frozen=True)
class Window:
    """A critical window ``[lower, upper] = [T_after, T_before]`` (Blink Def. 4).

    ``empty`` is True when the interval is empty or an endpoint is infinite (the fine set is never
    separated, or the coarse set is no longer separated when the fine one merges); the endpoints are
    reported regardless. ``reason`` says why it is empty.
    """

    lower: float
    upper: float
    empty: bool
    eps: float
    after: list[int] = field(default_factory=list)
    before: list[int] = field(default_factory=list)
    method: str = ""
    reason: str = ""
    lower_low: float = math.nan
    lower_high: float = math.nan
    upper_low: float = math.nan
    upper_high: float = math.nan

    @property
    def t_after(self) -> float:
        return self.lower

    @property
    def t_before(self) -> float:
        return self.upper

    @property
    def width(self) -> float:
        return self.upper - self.lower

    def __iter__(self):
        return iter((self.lower, self.upper))

    def to_dict(self) -> dict:
        out = {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__}
        for k, v in out.items():
            if isinstance(v, float) and math.isnan(v):
                out[k] = None
        out["t_after"], out["t_before"] = out["lower"], out["upper"]
        return out


def _window_emptiness(lower: float, upper: float) -> tuple[bool, str]:
    if not math.isfinite(lower):
        return True, "S_after is not separated from the other components even at t = 0"
    if not math.isfinite(upper):
        return True, "S_before is no longer separated from the rest when S_after merges into it"
    if lower > upper:
        return True, "T_after > T_before"
    return False, ""


# ------------------------------------------------------------------------------------ bisection
def _bisect(pred, lo: float, hi: float, tol: float) -> float:
    """Midpoint of the final bracket, where ``pred(lo)`` is False and ``pred(hi)`` is True."""
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
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
    it holds at 0, +inf if not by ``_T_MAX``. ``near``: a guess tried first as a narrow bracket."""
    if pred(0.0):
        return at_zero
    bracket = _bracket_near(pred, near, tol)
    if bracket is not None:
        return _bisect(pred, *bracket, tol)
    lo, hi = 0.0, 1.0
    while not pred(hi):
        lo, hi = hi, 2.0 * hi
        if hi > _T_MAX:
            return math.inf
    return _bisect(pred, lo, hi, tol)


def _first_below(f, level: float, tol: float, near: float | None = None) -> float:
    """``inf{t >= 0 : f(t) <= level}`` for a non-increasing ``f``; +inf if not reached by ``_T_MAX``.

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
        self.cache: dict[float, tuple[float, float, float]] = {}

    def _get(self, t: float):
        if t not in self.cache:
            e = self.curve(t)
            self.cache[t] = (e.value, e.low, e.high)
        return self.cache[t]

    def value(self, t):
        return self._get(t)[0]

    def low(self, t):
        return self._get(t)[1]

    def high(self, t):
        return self._get(t)[2]


def _crossing(mixture, A, B, n, generator, method, level, tol, find) -> tuple[float, float, float, str]:
    """``find(f, near=None)`` on the TV curve between ``A`` and ``B``, with its bracket: the same
    search on the Monte Carlo confidence curves, or +-tol/2 (the bisection resolution) for exact curves."""
    c = _Cached(TVCurve(mixture.subset(A), mixture.subset(B), n, generator, method=method, level=level))
    t = find(c.value)
    if c.curve.method != "monte-carlo":
        # Exact up to the bisection resolution (the lattice error, ~1e-5 in TV, is far below it).
        half = tol / 2 if math.isfinite(t) and t != 0.0 else 0.0
        return t, t - half, t + half, c.curve.method
    return t, find(c.low, t), find(c.high, t), c.curve.method


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
) -> tuple[float, float, float, str]:
    """``inf{t : TV(p_t^A, p_t^B) <= eps}`` with its bracket.

    Returns
    -------
    (time, low, high, method) : ``low`` from the lower confidence curve, ``high`` from the upper one.
    """
    eps = check_eps(eps)
    A = check_subset(A, mixture.n_components, "A")
    B = check_subset(B, mixture.n_components, "B")
    if A == B:
        return 0.0, 0.0, 0.0, "closed-form"
    return _crossing(
        mixture, A, B, n, generator, method, level, tol, lambda f, near=None: _first_below(f, eps, tol, near)
    )


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
) -> tuple[float, float, float, str]:
    """``sup{t : TV(p_t^S, p_t^{rest}) >= 1 - eps^2}`` with its bracket (+inf if S is everything).

    Returns
    -------
    (time, low, high, method).
    """
    eps = check_eps(eps)
    S = check_subset(S, mixture.n_components, "S")
    rest = [j for j in range(mixture.n_components) if j not in S]
    if not rest:
        return math.inf, math.inf, math.inf, "closed-form"
    threshold = 1.0 - eps * eps
    return _crossing(
        mixture, S, rest, n, generator, method, level, tol,
        lambda f, near=None: _last_above(f, threshold, tol, near),
    )


def check_pair(init, target, n_components: int) -> tuple[list[int], list[int]]:
    """Validated component sets ``S_init ⊆ S_target`` (sorted lists); ValueError naming the bad one."""
    init = check_subset(init, n_components, "init")
    target = check_subset(target, n_components, "target")
    if not set(init) <= set(target):
        raise ValueError(f"init must be a subset of target, got init={init}, target={target}")
    return init, target


def _weight_ratio(mixture: GaussianMixture, target: list[int]) -> float:
    w = mixture.weights.to(torch.float64)
    inside = float(w[target].sum())
    return (1.0 - inside) / inside if inside > 0 else math.inf


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
    mixture : GaussianMixture.
    init, target : component indices with ``init ⊆ target`` (S_init, S_target).
    eps : in (0, 1).
    n, generator, method : passed to :class:`critwin.divergence.TVCurve` (Monte Carlo only).
    tol : bisection tolerance in OU time.
    level : confidence level of the Monte Carlo curves that bracket each time.

    Returns
    -------
    TransitionTimes (iterates as ``(t_end, t_start, bound)``).
    """
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    eps = check_eps(eps)
    init, target = check_pair(init, target, mixture.n_components)
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    t_end, end_lo, end_hi, m1 = merge_time(mixture, init, target, eps, **kw)
    t_start, start_lo, start_hi, m2 = separation_time(mixture, target, eps, **kw)
    W = _weight_ratio(mixture, target)
    methods = sorted({m1, m2})
    return TransitionTimes(
        t_end,
        t_start,
        theorem_bound(eps, W),
        eps,
        W,
        init,
        target,
        "+".join(methods),
        end_lo,
        end_hi,
        start_lo,
        start_hi,
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
    mixture : GaussianMixture.
    after : the finer set (non-empty, a proper subset of ``before``).
    before : the coarser set (default: every component).
    eps : in (0, 1).
    n, generator, method, tol, level : as in :func:`transition_times`.

    Returns
    -------
    Window with ``lower = T_after``, ``upper = T_before``, ``empty``.
    """
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    eps = check_eps(eps)
    K = mixture.n_components
    after = check_subset(after, K, "after")
    before = list(range(K)) if before is None else check_subset(before, K, "before")
    if not set(after) < set(before):
        raise ValueError(f"after must be a proper subset of before, got after={after}, before={before}")
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    return window_from_times(
        after,
        before,
        eps,
        merge_time(mixture, after, before, eps, **kw),
        separation_time(mixture, before, eps, **kw),
        separation_time(mixture, after, eps, **kw),
    )


def window_from_times(after, before, eps, merged, separated_before, separated_after) -> Window:
    """Assemble a :class:`Window` from the outputs of :func:`merge_time` ``(after, before)`` and
    :func:`separation_time` of ``before`` and of ``after`` (each ``(time, low, high, method)``)."""
    merged_t, merged_lo, merged_hi, m1 = merged
    sep_before, sep_before_lo, _, m2 = separated_before
    lower, lower_lo, lower_hi, m3 = separated_after
    upper = merged_t if merged_t <= sep_before else math.inf
    # The conservative end of the bracket also needs the coarse set to be separated.
    upper_hi = merged_hi if merged_hi <= sep_before_lo else math.inf
    upper_lo = merged_lo if merged_lo <= sep_before else math.inf
    empty, reason = _window_emptiness(lower, upper)
    return Window(
        lower,
        upper,
        empty,
        eps,
        list(after),
        list(before),
        "+".join(sorted({m1, m2, m3})),
        reason,
        lower_lo,
        lower_hi,
        upper_lo,
        upper_hi,
    )


# ------------------------------------------------------------------------------------ closed forms
def _means64(means) -> torch.Tensor:
    m = torch.as_tensor(means, dtype=torch.float64)
    if m.ndim != 2 or m.shape[0] < 2:
        raise ValueError(f"means must have shape (K, d) with K >= 2, got {tuple(m.shape)}")
    return m


def _closed_form_window(lower: float, upper: float, eps: float, after, before, method: str) -> Window:
    """A :class:`Window` whose endpoints are exact (each bracket collapses to the endpoint)."""
    empty, reason = _window_emptiness(lower, upper)
    return Window(lower, upper, empty, eps, after, before, method, reason, lower, lower, upper, upper)


def window_two_gaussians(mean, eps: float = 0.1) -> Window:
    """Blink Ex. 1: the window of the ``+`` component of ``N(+mu, I)/2 + N(-mu, I)/2``.

    ``T_before = ln|mu| + ln 2 + ln(1/eps)``, ``T_after = ln|mu| - ln ln(1/(2 eps^2))``.

    Parameters
    ----------
    mean : (d,) vector ``mu`` or its norm (a positive number).
    eps : in (0, 1/sqrt 2) (``ln(1/(2 eps^2))`` must be positive). As sufficient conditions they bracket
        the exact window for ``eps <= 0.3`` (the tail bound behind ``T_after`` needs ``ln(1/(2eps^2)) > 1.7``)

    Returns
    -------
    Window (``method="closed-form (Blink Ex. 1)"``).
    """
    eps = check_eps(eps)
    if eps >= 1.0 / math.sqrt(2.0):
        raise ValueError(f"eps must be < 1/sqrt(2) for the two-Gaussian closed form, got {eps}")
    norm = float(torch.linalg.norm(torch.as_tensor(mean, dtype=torch.float64)))
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(f"mean must be a finite non-zero vector (or norm), got norm {norm}")
    upper = math.log(norm) + math.log(2.0) + math.log(1.0 / eps)
    lower = math.log(norm) - math.log(math.log(1.0 / (2.0 * eps * eps)))
    return _closed_form_window(lower, upper, eps, [0], [0, 1], "closed-form (Blink Ex. 1)")


def window_isotropic(means, i: int, eps: float = 0.1, *, strict_spec: bool = False) -> Window:
    """Blink Ex. 2: window of component ``i`` among ``K`` components ``N(mu_j, I)`` (any weights).

    ``T_before = max_j ln|mu_i - mu_j| + ln(1/eps)`` and
    ``T_after = min_{j != i} ln|mu_i - mu_j| - 1/2 ln(8 ln(K / eps^2))``.

    Parameters
    ----------
    means : (K, d).  i : the component.  eps : in (0, 1).
    strict_spec : use THEORY §5's ``ln(K / eps)`` in ``T_after`` instead of ``ln(K / eps^2)``.

    Notes
    -----
    THEORY §5 writes ``ln(K/eps)``; that value is *not* a sufficient condition for the separation
    ``TV >= 1 - eps^2``: for K = 2, eps = 0.1 it gives ``TV = 2 Phi(sqrt(2 ln 20)) - 1 = 0.9856 < 0.99``.
    The union bound ``1 - TV <= sum_{j != i} (1 - TV(p^i, p^j)) <= (K-1) exp(-a^2 Delta^2 / 8)`` needs
    ``a^2 Delta^2 / 8 >= ln((K-1)/eps^2)``, which ``ln(K/eps^2)`` guarantees; that is the default here.
    """
    eps = check_eps(eps)
    m = _means64(means)
    K = m.shape[0]
    i = check_subset([i], K, "i")[0]
    dist = torch.linalg.norm(m - m[i], dim=1)
    others = torch.cat([dist[:i], dist[i + 1 :]])
    if (others <= 0).any():
        raise ValueError(f"means must be distinct: component {i} coincides with another component")
    upper = math.log(float(others.max())) + math.log(1.0 / eps)
    inner = K / eps if strict_spec else K / (eps * eps)
    lower = math.log(float(others.min())) - 0.5 * math.log(8.0 * math.log(inner))
    return _closed_form_window(lower, upper, eps, [i], list(range(K)), "closed-form (Blink Ex. 2)")


class ClosedFormTimes(NamedTuple):
    """Closed-form bounds: ``T_end <= t_end_upper`` and ``T_start >= t_start_lower`` (THEORY §5)."""

    t_end_upper: float
    t_start_lower: float
    bound: float

    @property
    def t_lower(self) -> float:
        """LC24 name (an upper bound on ``T_lower = T_end``)."""
        return self.t_end_upper

    @property
    def t_upper(self) -> float:
        """LC24 name (a lower bound on ``T_upper = T_start``)."""
        return self.t_start_lower

    @property
    def window_exists(self) -> bool:
        """The sufficient condition ``t_end_upper <= t_start_lower`` for a non-empty theorem window."""
        return self.t_end_upper <= self.t_start_lower


def _gaussian_w2(m1, c1, m2, c2) -> float:
    """2-Wasserstein distance between two Gaussians (Bures formula)."""

    def sqrtm(c):
        lam, U = torch.linalg.eigh(c)
        return (U * lam.clamp_min(0).sqrt()) @ U.T

    r1 = sqrtm(c1)
    cross = sqrtm(r1 @ c2 @ r1)
    bures = torch.trace(c1 + c2 - 2.0 * cross).clamp_min(0)
    return math.sqrt(float((m1 - m2).square().sum() + bures))


def log_concave_times(
    mixture: GaussianMixture, init, target, eps: float = 0.1, alpha=None
) -> ClosedFormTimes:
    """THEORY §5 bounds for alpha-strongly-log-concave components (Gaussians: alpha = 1/lambda_max).

    ``T_end <= ln(D_intra / (2 eps))`` with ``D_intra = max_{i in init, j in target} W2(p_i, p_j)``;
    ``T_start >= ln Delta_inter - 1/2 ln((8 / min(alpha, 1)) ln(4 K^2 / eps^2))`` with
    ``Delta_inter = min_{i in target, j not in target} |mu_i - mu_j|``.

    Parameters
    ----------
    mixture : GaussianMixture.  init, target : S_init ⊆ S_target.  eps : in (0, 1).
    alpha : strong log-concavity constant (default: the smallest ``1 / lambda_max(Sigma_i)``).

    Returns
    -------
    ClosedFormTimes ``(t_end_upper, t_start_lower, bound)``; ``t_end_upper = 0`` when ``D_intra = 0``,
    ``t_start_lower = +inf`` when ``target`` is every component.
    """
    eps = check_eps(eps)
    K = mixture.n_components
    init, target = check_pair(init, target, K)
    means = mixture.means.to(torch.float64).cpu()
    kind = mixture.cov_kind
    if kind == "full":
        covs = mixture.cov_matrices().to(torch.float64).cpu()
        lam_max = float(torch.linalg.eigvalsh(covs).max())

        def w2(i, j):
            return _gaussian_w2(means[i], covs[i], means[j], covs[j])
    else:
        # Isotropic and diagonal covariances commute: W2^2 = |mu_i - mu_j|^2 + |sqrt(v_i) - sqrt(v_j)|^2
        # coordinate-wise, with no d x d matrix (d may be in the thousands).
        var = mixture.covs.to(torch.float64).cpu()
        var = var.unsqueeze(1).expand(-1, mixture.dim) if kind == "iso" else var
        lam_max = float(var.max())

        def w2(i, j):
            return math.sqrt(
                float((means[i] - means[j]).square().sum() + (var[i].sqrt() - var[j].sqrt()).square().sum())
            )

    if alpha is None:
        if lam_max <= 0:
            raise ValueError("alpha is undefined for zero covariances; pass alpha explicitly")
        alpha = 1.0 / lam_max
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    d_intra = max(w2(i, j) for i in init for j in target)
    t_end_upper = max(0.0, math.log(d_intra / (2.0 * eps))) if d_intra > 0 else 0.0
    rest = [j for j in range(K) if j not in target]
    if rest:
        delta = min(float(torch.linalg.norm(means[i] - means[j])) for i in target for j in rest)
        if delta <= 0:
            t_start_lower = -math.inf
        else:
            t_start_lower = math.log(delta) - 0.5 * math.log(
                (8.0 / min(alpha, 1.0)) * math.log(4.0 * K * K / (eps * eps))
            )
    else:
        t_start_lower = math.inf
    return ClosedFormTimes(t_end_upper, t_start_lower, theorem_bound(eps, _weight_ratio(mixture, target)))
