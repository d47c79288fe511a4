"""Transition times on a discrete clock: the crossings behind ``critical_window``, ``transition_times`` and
``hierarchy`` for a :class:`~critwin.mixtures.CategoricalMixture` (docs/theory.md §4–§7, docs/discrete.md).

**The clock.** Every result carries ``clock``: ``"ou"`` (OU time t, Gaussian mixtures), ``"kappa"`` (the
per-token masking or resampling probability, in [0, 1]) or ``"hidden"`` (the number of hidden final
positions of an autoregressive sequence, an integer in [0, L]). Discrete levels are not converted to OU
time: each is a noise level of its own process, and like OU time it only destroys information, so every
TV between noised sub-mixtures is non-increasing in it and the definitions of docs/theory.md §4–§5 apply as
they stand, with ``t`` read as the level: ``T_end = inf{level : TV(p^{S_init}, p^{S_target}) <= eps}``,
``T_start = sup{level : TV(p^{S_target}, p^{rest}) >= 1 - eps^2}``, ``T_after < T_before`` for a window.
Generation runs the other way (unmasking from kappa = 1, or writing tokens left to right), so a feature
is decided as the level falls from ``T_before`` to ``T_after``; for autoregression, while the tokens at
positions ``L - T_before`` .. ``L - T_after - 1`` are written.

**The search.** Kappa: bisection on [0, 1]; an exact (enumerated) curve is solved to float precision
(``tol`` is then unused and the interval is the point), a Monte Carlo curve (common random numbers) to
``tol``, with its interval from the same search on the lower and upper confidence curves, widened by
``tol / 2``. Hidden positions: a scan of the L + 1 levels, exact integers (Monte Carlo: each confidence
curve scanned too). Conventions as for OU time: ``T_start = +inf`` when ``S`` is every component, ``-inf``
when the sets are not separated even at level 0. At the top level (kappa = 1, all positions hidden)
every pair of laws is merged, so merge levels are never infinite.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from critwin._validation import check_eps, check_generator, check_number, check_positive_int, check_subset
from critwin.mixtures import CategoricalMixture
from critwin.theory.discrete import CategoricalTVCurve

__all__ = [
    "clock_of",
    "merge_level",
    "separation_level",
    "CategoricalEngine",
    "CLOCK_LABELS",
    "LevelCrossing",
    "LevelTV",
]

CLOCK_LABELS = {
    "ou": "OU time t",
    "kappa": "kappa",
    "hidden": "hidden positions",
}
"""Axis and table labels of each clock."""
_TV_METHODS = ("auto", "enumeration", "monte-carlo")


class LevelCrossing(NamedTuple):
    """A transition level and its bracket (the fields of :func:`critwin.theory.windows.merge_time`'s
    result): ``time`` on the mixture's clock, ``[low, high]`` its bracket, ``method`` of the TV."""

    time: float
    low: float
    high: float
    method: str


class LevelTV(NamedTuple):
    """A TV with its interval (exact: ``low == value == high``)."""

    value: float
    low: float
    high: float


def clock_of(mixture) -> str:
    """``"kappa"``/``"hidden"`` for a CategoricalMixture (its ``clock``), ``"ou"`` for anything else."""
    return mixture.clock if isinstance(mixture, CategoricalMixture) else "ou"


MIN_TOL = 1e-12
"""Smallest bisection tolerance (in OU time or kappa): below it the bisection stops on float spacing
anyway, and the outward bracket search would take thousands of curve evaluations."""


def check_search(tol, n, generator, unit: str = "OU time") -> None:
    """ValueError naming ``tol`` (the bisection tolerance in ``unit``, in [MIN_TOL, 1)), ``n`` or
    ``generator`` when they are unusable."""
    check_number(tol, f"tol (bisection tolerance in {unit})", low=MIN_TOL, high=1.0, closed="low")
    check_positive_int(n, "n", minimum=2)
    check_generator(generator)


def merge_sets(mixture, A, B) -> tuple[list[int], list[int]]:
    """The validated component sets ``A`` and ``B`` of a merge time (ValueError naming the bad one)."""
    return check_subset(A, mixture.n_components, "A"), check_subset(B, mixture.n_components, "B")


def separation_sets(mixture, S) -> tuple[list[int], list[int]]:
    """The validated component set ``S`` of a separation time and the other components (none when ``S``
    is every component)."""
    S = check_subset(S, mixture.n_components, "S")
    return S, [j for j in range(mixture.n_components) if j not in S]


def separation_threshold(eps: float) -> float:
    """``1 - eps^2``: the TV at or above which two sets of components count as separated."""
    return 1.0 - eps * eps


def _check_search(mixture, eps, tol, n, generator, method) -> float:
    eps = check_eps(eps)
    check_search(tol, n, generator, "kappa")
    if method not in _TV_METHODS:
        raise ValueError(f"method must be one of {_TV_METHODS} for a CategoricalMixture, got {method!r}")
    return eps


def _bisect(pred, tol: float) -> float:
    """The boundary in [0, 1] of a predicate False at 0 and True at 1 (``tol = 0``: to float precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if hi - lo <= max(tol, 4e-16) or not lo < mid < hi:
            break
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


class _Search:
    """One TV curve's crossings of a level, on the value and on both confidence curves."""

    def __init__(self, curve: CategoricalTVCurve, top, tol: float):
        self.curve, self.top, self.tol = curve, top, tol
        self.cache: dict = {}

    def estimate(self, t):
        if t not in self.cache:
            self.cache[t] = self.curve(t)
        return self.cache[t]

    def first_true(self, pred, at_zero: float, last_false: bool = False) -> tuple[float, float, float]:
        """``inf{level : pred(level)}`` for a predicate of the estimate that stays True once it holds
        (True at the top level), on the value, low and high curves: ``(value, low, high)``; ``at_zero``
        where it holds at level 0. ``last_false``: the largest level where it fails instead (on integer
        levels one less than the first where it holds; on kappa the same boundary)."""
        out = []
        for part in ("value", "low", "high"):

            def holds(t, part=part):
                return pred(getattr(self.estimate(t), part))

            if holds(0):
                out.append(at_zero)
            elif self.top == 1.0:
                out.append(_bisect(holds, 0.0 if self.curve.exact else self.tol))
            else:
                first = next(i for i in range(1, self.top + 1) if holds(i))
                out.append(float(first - 1 if last_false else first))
            if self.curve.exact:
                return (out[0],) * 3
        return tuple(out)


def _curve(mixture, A, B, kw) -> CategoricalTVCurve:
    return CategoricalTVCurve(
        mixture.subset(A), mixture.subset(B), kw["n"], kw["generator"], method=kw["method"], level=kw["level"]
    )


def _crossing(mixture, A, B, kw, find, curve=None):
    """``find`` on the TV curve of ``A`` and ``B`` (built unless given) and the ordered bracket."""
    curve = _curve(mixture, A, B, kw) if curve is None else curve
    top = mixture.level_range[1]
    value, first, second = find(_Search(curve, top, kw["tol"]))
    # the value curve crosses between its two confidence curves: order them as (low, high)
    low, high = min(first, second), max(first, second)
    if top == 1.0 and not curve.exact:
        half = kw["tol"] / 2
        low = max(0.0, low - half) if math.isfinite(low) else low
        high = min(1.0, high + half) if math.isfinite(high) else high
    return LevelCrossing(value, low, high, curve.method)


def _merged(eps: float):
    """The search of a merge level: the first level where TV <= eps (0 if merged at level 0)."""
    return lambda s: s.first_true(lambda tv: tv <= eps, 0.0)


def _separated(eps: float):
    """The search of a separation level: the last level where TV >= 1 - eps^2 (-inf if none)."""
    threshold = separation_threshold(eps)
    # sup{t : TV >= threshold} is inf{t : TV < threshold} for a non-increasing curve
    return lambda s: s.first_true(lambda tv: tv < threshold, -math.inf, True)


def merge_level(
    mixture: CategoricalMixture,
    A,
    B,
    eps: float,
    *,
    n: int = 20000,
    generator=None,
    method: str = "auto",
    tol: float = 1e-4,
    level: float = 0.95,
) -> LevelCrossing:
    """``inf{t : TV(p_t^A, p_t^B) <= eps}`` on the mixture's clock, with its bracket.

    Parameters
    ----------
    mixture : CategoricalMixture.  A, B : component indices.  eps : in (0, 1).
    n, generator, method, level : as in :class:`critwin.theory.discrete.CategoricalTVCurve` (methods
        ``"auto"``, ``"enumeration"``, ``"monte-carlo"``).
    tol : bisection tolerance in kappa for Monte Carlo curves (exact curves are solved to float precision;
        autoregressive levels are scanned exactly).

    Returns
    -------
    LevelCrossing ``(time, low, high, method)``, a tuple like :func:`critwin.theory.windows.merge_time`'s.

    Examples
    --------
    >>> from critwin import CategoricalMixture
    >>> from critwin.theory.discrete_times import merge_level
    >>> m = CategoricalMixture.from_strings([[0, 0, 0, 0], [1, 1, 0, 0]], vocab_size=2)
    >>> t, low, high, method = merge_level(m, [0], [1], 0.19)     # 1 - kappa^2 <= 0.19 from kappa = 0.9
    >>> round(t, 12), method
    (0.9, 'enumeration')
    """
    eps = _check_search(mixture, eps, tol, n, generator, method)
    A, B = merge_sets(mixture, A, B)
    if A == B:
        return LevelCrossing(0.0, 0.0, 0.0, "closed-form")
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    return _crossing(mixture, A, B, kw, _merged(eps))


def separation_level(
    mixture: CategoricalMixture,
    S,
    eps: float,
    *,
    n: int = 20000,
    generator=None,
    method: str = "auto",
    tol: float = 1e-4,
    level: float = 0.95,
) -> LevelCrossing:
    """``sup{t : TV(p_t^S, p_t^{rest}) >= 1 - eps^2}`` on the mixture's clock (+inf if S is everything,
    -inf if not separated at level 0), with its bracket; arguments as in :func:`merge_level`.

    Examples
    --------
    >>> from critwin import CategoricalMixture
    >>> from critwin.theory.discrete_times import separation_level
    >>> m = CategoricalMixture.from_strings([[0, 0, 0, 0], [1, 1, 1, 1]], vocab_size=2)
    >>> round(separation_level(m, [0], 0.1)[0], 12) == round(0.01 ** 0.25, 12)   # 1 - kappa^4 >= 0.99
    True
    """
    eps = _check_search(mixture, eps, tol, n, generator, method)
    S, rest = separation_sets(mixture, S)
    if not rest:
        return LevelCrossing(math.inf, math.inf, math.inf, "closed-form")
    kw = dict(n=n, generator=generator, method=method, tol=tol, level=level)
    return _crossing(mixture, S, rest, kw, _separated(eps))


def _verdict(low: float, high: float, threshold: float, above: bool) -> bool | None:
    """Whether a TV in ``[low, high]`` is ``>= threshold`` (``above``) or ``<= threshold`` (None: it
    straddles)."""
    if above:
        return True if low >= threshold else (False if high < threshold else None)
    return True if high <= threshold else (False if low > threshold else None)


class CategoricalEngine:
    """The ε-tree's computations for a CategoricalMixture (the interface :func:`critwin.theory.tree.hierarchy`
    drives): pairwise merge levels, merge and separation checks from TV intervals, and the crossings of
    every node's window, all on the mixture's clock.

    Parameters
    ----------
    mixture : CategoricalMixture.  eps : in (0, 1).
    kw : ``n``, ``generator``, ``tol`` as given to ``hierarchy``.
    method : the tree's method: ``"auto"`` or ``"exact"`` (every TV by enumeration, ValueError if too large).
    """

    def __init__(self, mixture: CategoricalMixture, eps: float, kw: dict, method: str = "auto"):
        if method == "fast":
            raise ValueError(
                "method='fast' is for Gaussian mixtures sharing one isotropic covariance; use 'auto' or "
                "'exact' for a CategoricalMixture"
            )
        self.mixture, self.eps, self.K = mixture, eps, mixture.n_components
        self.kw = dict(kw, method="enumeration" if method == "exact" else "auto", level=0.95)
        # ``hierarchy`` checks merges just past T_u (T_u + tol): autoregressive levels are exact integers
        self.tol = 0.0 if mixture.noise == "autoregressive" else kw["tol"]
        self._curves: dict[tuple, CategoricalTVCurve] = {}

    def _curve(self, A, B) -> CategoricalTVCurve:
        """The TV curve of ``A`` and ``B``, built once: the linkage, the checks and the windows ask for the
        same pairs (a node against the rest at its level, then for its window)."""
        key = (tuple(sorted(A)), tuple(sorted(B)))
        if key not in self._curves:
            self._curves[key] = _curve(self.mixture, key[0], key[1], self.kw)
        return self._curves[key]

    def _tv(self, A, B, t):
        return self._curve(A, B)(min(t, self.mixture.level_range[1]))

    def linkage_values(self, report) -> torch.Tensor:
        """(K, K) pairwise merge levels (their complete linkage is the tree)."""
        tau = torch.zeros(self.K, self.K, dtype=torch.float64)
        for i in range(self.K):
            for j in range(i + 1, self.K):
                tau[i, j] = tau[j, i] = self.merge_time([i], [j])[0]
            report("pairs", i + 1, self.K)
        return tau

    def time_of(self, value: float) -> float:
        return value

    def merged(self, comps: list[int], t: float, value: float) -> bool | None:
        """Whether every pair of ``comps`` is eps-close at level ``t``."""
        verdicts = []
        for i in comps:
            for j in comps:
                if i < j:
                    est = self._tv([i], [j], t)
                    verdicts.append(_verdict(est.low, est.high, self.eps, above=False))
        return False if False in verdicts else (None if None in verdicts else True)

    def separations(self, requests, parents=None) -> list[LevelTV]:
        """``(value, low, high)`` of ``TV(p_t^comps, p_t^rest)`` for each request ``(comps, rest, t)``
        (``rest`` None: the complement; ``parents``: unused; as
        :meth:`critwin.theory.tree_engines.ExactEngine.separations`)."""
        out = []
        for comps, rest, t in requests:
            if rest is None:
                inside = set(comps)
                rest = [j for j in range(self.K) if j not in inside]
            est = self._tv(comps, rest, t)
            out.append(LevelTV(est.value, est.low, est.high))
        return out

    def merge_time(self, A, B):
        """:func:`merge_level` on the cached curve."""
        if sorted(A) == sorted(B):
            return LevelCrossing(0.0, 0.0, 0.0, "closed-form")
        return _crossing(self.mixture, A, B, self.kw, _merged(self.eps), self._curve(A, B))

    def separation_time(self, S):
        """:func:`separation_level` on the cached curve."""
        rest = [j for j in range(self.K) if j not in set(S)]
        if not rest:
            return LevelCrossing(math.inf, math.inf, math.inf, "closed-form")
        return _crossing(self.mixture, S, rest, self.kw, _separated(self.eps), self._curve(S, rest))

    def times(self, requests, report) -> list[tuple]:
        """``merge_time(A, B)`` for each request ``(A, B)``, ``separation_time(A)`` for ``(A, None)``."""
        out = []
        for done, (A, B) in enumerate(requests, 1):
            out.append(self.separation_time(A) if B is None else self.merge_time(A, B))
            report(done, len(requests))
        return out
