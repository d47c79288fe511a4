"""Closed-form windows of discrete processes (docs/discrete.md, Blink Examples 3–5): the counterparts of
:mod:`critwin.theory.closed_forms` on the ``"kappa"`` and ``"hidden"`` clocks.

Each returns a :class:`~critwin.theory.windows.Window` of component 0 inside ``{0, 1}``. Example 3 is exact
(its endpoints *are* the TV definitions of docs/theory.md §4–§5); Examples 4 and 5 are sufficient: the exact
window of :func:`critwin.critical_window` on the same law lies inside (``T_after >= t_after``,
``T_before <= t_before``), as ``tests/test_theory_discrete_closed_forms.py`` checks against the engine.
On the ``"hidden"`` clock levels are integers, so the ``"theory"`` forms are rounded inwards-safe (the
sufficient condition holds at every integer level they cover); the ``"paper"`` forms are Blink's
real-valued expressions, returned only where the paper's conditions hold.
"""

from __future__ import annotations

import math

import torch

from critwin._memory import check_memory
from critwin._validation import check_eps, check_number, check_positive_int
from critwin.mixtures import CategoricalMixture
from critwin.theory.discrete import categorical_tv
from critwin.theory.discrete_times import separation_threshold
from critwin.theory.windows import Window, make_window

__all__ = ["window_two_strings", "window_random_walk", "window_prefix_split", "random_walk_modes"]

_FORMS = ("theory", "paper")


def _window(t_after: float, t_before: float, eps: float, method: str, clock: str) -> Window:
    w = make_window([0], [0, 1], eps, method, (t_after,) * 3, (t_before,) * 3)
    return Window(**{**w.__dict__, "clock": clock})


def _check_form(form: str) -> str:
    if form not in _FORMS:
        raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
    return form


def window_two_strings(d_hamming, eps: float = 0.1, *, form: str = "theory") -> Window:
    """Blink Ex. 3: the window of string 0 in an equal-weight mixture of two strings under masking.

    The two strings differ at ``d_hamming`` positions, which are all masked together with probability
    ``kappa^d``, so ``TV(p^0_kappa, p^1_kappa) = 1 - kappa^d`` and
    ``TV(p^0_kappa, p_kappa) = (1 - kappa^d) / 2``.
    ``form="theory"`` (exact, docs/discrete.md): ``t_after = (eps^2)^{1/d}`` (separation ``>= 1 - eps^2``) and
    ``t_before = (1 - 2 eps)^{1/d}`` (TV to the whole ``<= eps``; 0 for ``eps >= 1/2``). ``form="paper"``:
    Blink's ``t_before = (1 - eps)^{1/d}``, a valid but looser sufficient form (it drops the 1/2).

    Parameters
    ----------
    d_hamming : the Hamming distance d >= 1 of the two strings.  eps : in (0, 1).  form : as above.

    Returns
    -------
    Window on the ``"kappa"`` clock (the per-token masking probability).

    Examples
    --------
    >>> from critwin import window_two_strings
    >>> w = window_two_strings(10, 0.1)
    >>> round(w.t_after, 4), round(w.t_before, 4), w.clock
    (0.631, 0.9779, 'kappa')
    >>> round(window_two_strings(10, 0.1, form="paper").t_before, 4)
    0.9895
    """
    d = check_positive_int(d_hamming, "d_hamming")
    eps = check_eps(eps)
    form = _check_form(form)
    t_after = (eps * eps) ** (1.0 / d)
    shrink = 1.0 - 2.0 * eps if form == "theory" else 1.0 - eps
    t_before = max(0.0, shrink) ** (1.0 / d)
    return _window(t_after, t_before, eps, f"closed-form (Blink Ex. 3, {form})", "kappa")


def random_walk_modes(length, delta, weight: float = 0.5) -> CategoricalMixture:
    """Blink Ex. 5's law: a strong mode (component 0) and a weak one (component 1), each a walk of
    ``length`` i.i.d. steps, token 1 (up) with probability ``1/2 + delta`` resp. ``1/2 - delta``, under
    autoregressive noise.

    Parameters
    ----------
    length : L >= 1.  delta : in (0, 1/2).  weight : the strong mode's weight, in (0, 1).

    Examples
    --------
    >>> from critwin import critical_window, random_walk_modes
    >>> w = critical_window(random_walk_modes(40, 0.35), [0], eps=0.1)
    >>> (w.t_after, w.t_before, w.clock)
    (29.0, 40.0, 'hidden')
    """
    L = check_positive_int(length, "length")
    delta = check_number(delta, "delta", low=0.0, high=0.5, closed="neither")
    weight = check_number(weight, "weight", low=0.0, high=1.0, closed="neither")
    # the (2, L, 2) table, its row sums and the mixture's normalised copy
    check_memory(3 * 8 * 2 * L * 2, f"random_walk_modes(length={L})")
    strong = torch.tensor([0.5 - delta, 0.5 + delta], dtype=torch.float64).expand(L, 2)
    weak = strong.flip(-1)
    return CategoricalMixture(
        torch.stack([strong, weak]), torch.tensor([weight, 1.0 - weight]), noise="autoregressive"
    )


def window_random_walk(
    length, delta, eps: float = 0.1, *, weight: float = 0.5, form: str = "theory"
) -> Window:
    """Blink Ex. 5: a sufficient window of the strong mode of :func:`random_walk_modes` (width
    ``Theta(1 / delta^2)``, independent of the length), on the ``"hidden"`` clock.

    With ``m = L - i`` visible steps:

    - separation: Hoeffding on the sum of the ``m`` steps gives
      ``1 - TV(strong, weak) <= 2 e^{-2 m delta^2}``, which is ``<= eps^2`` once
      ``m >= m_0 = ln(2 / eps^2) / (2 delta^2)``;
    - merging: the Hellinger bound ``TV <= sqrt(1 - BC^{2m})`` with ``BC = sqrt(1 - 4 delta^2)`` per step
      gives ``TV(strong, weak) <= 2 delta sqrt(m)``, and
      ``TV(strong, whole) = (1 - w) TV(strong, weak) <= eps`` once
      ``m <= m_1 = (eps / (2 (1 - w) delta))^2`` (``eps^2 / delta^2`` for equal weights).

    ``form="theory"`` (any eps, delta, weight): ``t_after = L - ceil(m_0)`` (``-inf`` when ``m_0 > L``: the
    bound guarantees no separation within the walk) and ``t_before = max(0, L - floor(m_1))``: every
    integer level they cover satisfies the condition. ``form="paper"``: Blink's ``t_after = L - m_0``,
    ``t_before = L - eps^2 / delta^2 + 2``, under the paper's conditions ``m_0 < A`` (``A``: read here as the
    walk's length L) and ``eps^2 < 10^{-3} (1/2 - delta)(1/2 + delta)``, equal weights; ValueError
    otherwise. (Under those conditions ``eps^2 / delta^2 < 2`` unless L > ~3.6e4, so the paper's
    ``t_before`` is then at least L: the whole sequence.)

    Parameters
    ----------
    length : L >= 1.  delta : in (0, 1/2).  eps : in (0, 1).  weight : the strong mode's weight (theory).
    form : ``"theory"`` or ``"paper"``.

    Examples
    --------
    >>> from critwin import window_random_walk
    >>> w = window_random_walk(40, 0.35, 0.1)
    >>> (w.t_after, w.t_before, w.clock)
    (18.0, 40.0, 'hidden')
    """
    L = check_positive_int(length, "length")
    delta = check_number(delta, "delta", low=0.0, high=0.5, closed="neither")
    eps = check_eps(eps)
    weight = check_number(weight, "weight", low=0.0, high=1.0, closed="neither")
    form = _check_form(form)
    m0 = math.log(2.0 / (eps * eps)) / (2.0 * delta * delta)
    if form == "paper":
        if weight != 0.5:
            raise ValueError(f"weight must be 0.5 for the paper's form of Ex. 5, got {weight}")
        if not m0 < L:
            raise ValueError(
                f"delta, eps and length must satisfy ln(2/eps^2)/(2 delta^2) < L for the paper's Ex. 5, got "
                f"{m0:.4g} >= {L}"
            )
        if not eps * eps < 1e-3 * (0.5 - delta) * (0.5 + delta):
            raise ValueError(
                "eps and delta must satisfy eps^2 < 1e-3 (1/2 - delta)(1/2 + delta) for the paper's Ex. 5, "
                f"got eps^2 = {eps * eps:.4g} >= {1e-3 * (0.25 - delta * delta):.4g}; use form='theory'"
            )
        t_after, t_before = L - m0, L - eps * eps / (delta * delta) + 2.0
    else:
        m1 = (eps / (2.0 * (1.0 - weight) * delta)) ** 2
        t_after = float(L - math.ceil(m0)) if math.ceil(m0) <= L else -math.inf
        t_before = float(max(0, L - math.floor(m1)))
    return _window(t_after, t_before, eps, f"closed-form (Blink Ex. 5, {form})", "hidden")


def window_prefix_split(
    length, shared, k, eps: float = 0.1, *, mixture: CategoricalMixture | None = None
) -> Window:
    """Blink Ex. 4: two modes with the same law on their first ``shared`` tokens that are
    ``eps``-separated (``TV >= 1 - eps^2``) once ``shared + k`` tokens are visible.

    Then ``TV = 0`` while at most ``shared`` tokens are visible, so ``t_before = L - shared`` (hidden
    positions), and the modes are separated from ``L - shared - k`` hidden positions down:
    ``t_after = L - shared - k``. Both are sufficient: the exact window lies inside. (Stated with
    ``L' = shared``: modes that agree on their first L' tokens have ``T_before = L - L'``; modes that
    agree on their first L - L' tokens have the window ``[L' - k, L']``.)

    Parameters
    ----------
    length : L.  shared : tokens on which the modes agree, in [0, L).  k : in [1, L - shared].
    eps : in (0, 1).
    mixture : optional two-component autoregressive CategoricalMixture of length L: both conditions are
        then checked exactly (ValueError naming ``mixture`` when one fails).

    Examples
    --------
    >>> from critwin import window_prefix_split
    >>> w = window_prefix_split(12, 8, 2)
    >>> (w.t_after, w.t_before, w.clock)
    (2.0, 4.0, 'hidden')
    """
    L = check_positive_int(length, "length")
    shared = check_positive_int(shared, "shared", minimum=0)
    k = check_positive_int(k, "k")
    eps = check_eps(eps)
    if shared + k > L:
        raise ValueError(f"shared + k must be at most length, got shared={shared}, k={k}, length={L}")
    if mixture is not None:
        _check_split(mixture, L, shared, k, eps)
    return _window(float(L - shared - k), float(L - shared), eps, "closed-form (Blink Ex. 4)", "hidden")


def _check_split(mixture, L: int, shared: int, k: int, eps: float) -> None:
    if not (isinstance(mixture, CategoricalMixture) and mixture.n_components == 2):
        raise ValueError("mixture must be a CategoricalMixture of two components (the two modes)")
    if mixture.noise != "autoregressive" or mixture.length != L:
        raise ValueError(f"mixture must have autoregressive noise and length {L}")
    a, b = mixture.subset([0]), mixture.subset([1])
    if not torch.equal(mixture.probs[0, :shared], mixture.probs[1, :shared]):
        raise ValueError(f"mixture's modes must have the same law on their first {shared} tokens")
    separation = categorical_tv(a, b, L - shared - k, method="enumeration").value
    if separation < separation_threshold(eps):
        raise ValueError(
            f"mixture's modes must be eps-separated after {shared + k} tokens: TV = {separation:.6g} < "
            f"1 - eps^2 = {separation_threshold(eps):.6g}"
        )
