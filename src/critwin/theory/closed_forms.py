"""Closed-form (sufficient) windows and transition-time bounds (docs/theory.md §6).

Every form here is a *bound*: the exact window endpoints of :func:`critwin.theory.windows.critical_window`
lie inside the closed-form window (``T_after >= closed t_after``, ``T_before <= closed t_before``) and
``T_end <= t_end_max``, ``T_start >= t_start_min``. ``benchmarks/bench_closed_forms.py`` prints their
slack against exact windows.

Notation: ``Phi`` the standard normal CDF, ``z(p) = Phi^{-1}(p)``, ``a = e^{-t}``.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import torch

from critwin._validation import check_eps, check_number, check_real_tensor, check_subset
from critwin.mixtures import GaussianMixture
from critwin.theory.windows import Window, check_pair, make_window, theorem_bound, weight_ratio

__all__ = ["window_two_gaussians", "window_isotropic", "ClosedFormTimes", "log_concave_times"]

_NORMAL = NormalDist()
# The paper's T_after of Ex. 1 is sufficient only up to this eps (2 (1 - Phi(ln(1/(2 eps^2)))) = eps^2).
PAPER_EX1_MAX_EPS = 0.305


def _upper_quantile(p: float) -> float:
    """``z`` with ``1 - Phi(z) = p`` (accurate for tiny ``p``)."""
    return -_NORMAL.inv_cdf(p)


def _closed_form_window(t_after: float, t_before: float, eps: float, after, before, method: str) -> Window:
    """A :class:`Window` whose endpoints are exact (each interval collapses to the endpoint)."""
    return make_window(after, before, eps, method, (t_after,) * 3, (t_before,) * 3)


def _norm(mean) -> float:
    norm = float(torch.linalg.norm(check_real_tensor(mean, "mean", torch.float64)))
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(f"mean must be a finite non-zero vector (or norm), got norm {norm}")
    return norm


def window_two_gaussians(mean, eps: float = 0.1, *, form: str = "theory") -> Window:
    """Blink Ex. 1: a sufficient window of the ``+`` component of ``N(+mu, I)/2 + N(-mu, I)/2``.

    At OU time t, ``TV(p_t^+, p_t^-) = 2 Phi(a|mu|) - 1`` and ``TV(p_t^+, p_t) = Phi(a|mu|) - 1/2``.

    ``form="theory"`` (docs/theory.md §6, valid for every eps in (0, 1)):
    ``t_after = ln|mu| - 1/2 ln(4 ln(1/eps))`` (from ``1 - Phi(x) <= e^{-x^2/2}/2``: separation
    ``>= 1 - eps^2``) and ``t_before = ln|mu| + ln(1/eps) - 1/2 ln(2 pi)`` (from
    ``Phi(x) - 1/2 <= x / sqrt(2 pi)``: TV to the whole ``<= eps``).
    ``form="paper"`` (Blink's printed forms, for comparison): ``t_before = ln|mu| + ln 2 + ln(1/eps)``,
    ``t_after = ln|mu| - ln ln(1/(2 eps^2))``; the latter is sufficient only for ``eps <= 0.305``, so
    larger eps raise ValueError.

    ``t_before`` is clipped at 0 (exact times are >= 0).

    Parameters
    ----------
    mean : (d,) vector ``mu`` or its norm (a positive number).  eps : in (0, 1).  form : as above.

    Examples
    --------
    >>> import torch, critwin
    >>> w = critwin.window_two_gaussians(torch.tensor([4.0]), eps=0.1)
    >>> round(w.t_after, 4), round(w.t_before, 3)  # contains the exact window [0.440, 2.759]
    (0.2761, 2.77)
    """
    eps = check_eps(eps)
    norm = _norm(mean)
    if form == "theory":
        t_after = math.log(norm) - 0.5 * math.log(4.0 * math.log(1.0 / eps))
        t_before = math.log(norm) + math.log(1.0 / eps) - 0.5 * math.log(2.0 * math.pi)
    elif form == "paper":
        if eps > PAPER_EX1_MAX_EPS:
            raise ValueError(
                f"eps must be <= {PAPER_EX1_MAX_EPS} for the paper's T_after of Ex. 1 (beyond it the "
                f"separation at that time is below 1 - eps^2), got eps={eps}; use form='theory'"
            )
        t_after = math.log(norm) - math.log(math.log(1.0 / (2.0 * eps * eps)))
        t_before = math.log(norm) + math.log(2.0) + math.log(1.0 / eps)
    else:
        raise ValueError(f"form must be 'theory' or 'paper', got {form!r}")
    return _closed_form_window(
        t_after, max(0.0, t_before), eps, [0], [0, 1], f"closed-form (Blink Ex. 1, {form})"
    )


def _distances(means, i: int) -> tuple[torch.Tensor, list[int]]:
    m = check_real_tensor(means, "means", torch.float64)
    if m.ndim != 2 or m.shape[0] < 2:
        raise ValueError(f"means must have shape (K, d) with K >= 2, got {tuple(m.shape)}")
    K = m.shape[0]
    i = check_subset([i], K, "i")[0]
    others = [j for j in range(K) if j != i]
    dist = torch.linalg.norm(m[others] - m[i], dim=1)
    if (dist <= 0).any():
        raise ValueError(f"means must be distinct: component {i} coincides with another component")
    return dist, others


def _tight_before(dist: torch.Tensor, others: list[int], i: int, eps: float, weights) -> float:
    """Smallest t with ``(1 - w_i) erf(a Dbar / (2 sqrt 2)) <= eps`` (see :func:`window_isotropic`)."""
    if weights is None:
        cap, dbar = 1.0, float(dist.max())
    else:
        w = check_real_tensor(weights, "weights", torch.float64).flatten()
        if w.numel() != len(others) + 1 or (w < 0).any() or not w.sum() > 0:
            raise ValueError(
                f"weights must be {len(others) + 1} finite non-negative numbers with a positive sum"
            )
        w = w / w.sum()
        cap = float(1.0 - w[i])
        if cap <= 0:
            return 0.0
        dbar = float((w[others] / cap) @ dist)
    if eps >= cap:
        return 0.0
    z = _upper_quantile((1.0 - eps / cap) / 2.0)  # 2 sqrt2 erfinv(x) = 2 z((1 + x)/2)
    return max(0.0, math.log(dbar) - math.log(2.0 * z))


def window_isotropic(means, i: int, eps: float = 0.1, *, weights=None, form: str = "tight") -> Window:
    """Blink Ex. 2: a sufficient window of component ``i`` among ``K`` components ``N(mu_j, I)``.

    With ``D_j = |mu_i - mu_j|`` (j != i), ``w'_j = w_j / (1 - w_i)`` and ``a = e^{-t}``:

    ``form="tight"`` (default; each step is a sufficient condition):

    - ``t_after = ln min_j D_j - ln(2 z(1 - eps^2 / (2 (K - 1))))``. Because ``min(a, b + c) <=
      min(a, b) + min(a, c)`` and ``w'_j <= 1``, ``1 - TV(p_t^i, p_t^{rest}) <= sum_j (1 - TV(p_t^i,
      p_t^j)) = sum_j 2 (1 - Phi(a D_j / 2)) <= 2 (K - 1) (1 - Phi(a min_j D_j / 2))`` (union bound),
      which is ``<= eps^2`` exactly from this time on: the normal quantile replaces the Chernoff tail
      ``e^{-x^2/2}`` of the paper's form (exact for K = 2). Any weights.
    - ``t_before = ln Dbar - ln(2 sqrt 2 erfinv(eps / (1 - w_i)))``, clipped at 0. The whole mixture is
      ``p = w_i p^i + (1 - w_i) p^{rest}``, so ``TV(p_t^i, p_t) = (1 - w_i) TV(p_t^i, p_t^{rest})``
      exactly, and by convexity and then concavity of ``erf`` on [0, inf) (Jensen)
      ``TV(p_t^i, p_t^{rest}) <= sum_j w'_j erf(a D_j / (2 sqrt 2)) <= erf(a Dbar / (2 sqrt 2))`` with
      ``Dbar = sum_j w'_j D_j``. This beats ``erf(x) <= 2x / sqrt(pi)`` (``Phi(x) - 1/2 <= x/sqrt(2 pi)``).
      Without ``weights`` (valid for any weights): ``1 - w_i <= 1`` and ``Dbar <= max_j D_j``.
      When ``eps >= 1 - w_i`` the TV is below eps at every t: ``t_before = 0``.

    ``form="paper"`` (Blink Ex. 2 with the union bound): ``t_before = max_j ln D_j + ln(1/eps)``,
    ``t_after = min_j ln D_j - 1/2 ln(8 ln(K / eps^2))`` (with ``ln(K/eps)`` it would not be sufficient:
    K = 2, eps = 0.1 gives separation 0.9856 < 0.99).

    Parameters
    ----------
    means : (K, d).  i : the component.  eps : in (0, 1).
    weights : (K,) mixture weights (tightens ``t_before``; None: valid for any weights).
    form : ``"tight"`` or ``"paper"``.

    Examples
    --------
    >>> import torch, critwin
    >>> w = critwin.window_isotropic(torch.tensor([[-4.0], [4.0]]), 0, eps=0.1)
    >>> round(w.t_after, 4), round(w.t_before, 2)  # contains the exact window [0.440, 2.759]
    (0.4401, 3.46)
    """
    eps = check_eps(eps)
    dist, others = _distances(means, i)
    K = len(others) + 1
    i = int(i)
    if form == "tight":
        t_after = math.log(float(dist.min())) - math.log(2.0 * _upper_quantile(eps * eps / (2.0 * (K - 1))))
        t_before = _tight_before(dist, others, i, eps, weights)
    elif form == "paper":
        t_before = max(0.0, math.log(float(dist.max())) + math.log(1.0 / eps))
        t_after = math.log(float(dist.min())) - 0.5 * math.log(8.0 * math.log(K / (eps * eps)))
    else:
        raise ValueError(f"form must be 'tight' or 'paper', got {form!r}")
    return _closed_form_window(
        t_after, t_before, eps, [i], list(range(K)), f"closed-form (Blink Ex. 2, {form})"
    )


class ClosedFormTimes(NamedTuple):
    """Closed-form bounds ``T_end <= t_end_max`` and ``T_start >= t_start_min`` (docs/theory.md §6).

    Examples
    --------
    What :func:`log_concave_times` returns; a NamedTuple:

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [-3.0], [4.0]], dtype=torch.float64))
    >>> t_end_max, t_start_min, bound = critwin.log_concave_times(mix, [0], [0, 1], eps=0.1)
    >>> round(t_end_max, 4), round(t_start_min, 4), round(bound, 4)
    (1.629, -0.1452, 0.1707)
    """

    t_end_max: float
    t_start_min: float
    bound: float

    @property
    def window_exists(self) -> bool:
        """The sufficient condition ``t_end_max <= t_start_min`` for a non-empty theorem window."""
        return self.t_end_max <= self.t_start_min


def _gaussian_w2(m1, c1, m2, c2) -> float:
    """2-Wasserstein distance between two Gaussians (Bures formula)."""

    def sqrtm(c):
        lam, U = torch.linalg.eigh(c)
        return (U * lam.clamp_min(0).sqrt()) @ U.T

    r1 = sqrtm(c1)
    cross = sqrtm(r1 @ c2 @ r1)
    bures = torch.trace(c1 + c2 - 2.0 * cross).clamp_min(0)
    return math.sqrt(float((m1 - m2).square().sum() + bures))


def _w2_and_lambda_max(mixture: GaussianMixture):
    """``(w2(i, j), lambda_max)``: the W2 distance between two components and the largest variance."""
    means = mixture.means.to(torch.float64).cpu()
    if mixture.cov_kind == "full":
        covs = mixture.cov_matrices().to(torch.float64).cpu()

        def w2(i, j):
            return _gaussian_w2(means[i], covs[i], means[j], covs[j])

        return w2, float(torch.linalg.eigvalsh(covs).max())
    # Isotropic and diagonal covariances commute: W2^2 = |mu_i - mu_j|^2 + |sqrt(v_i) - sqrt(v_j)|^2
    # coordinate-wise, with no d x d matrix (d may be in the thousands).
    var = mixture.covs.to(torch.float64).cpu()
    var = var.unsqueeze(1).expand(-1, mixture.dim) if mixture.cov_kind == "iso" else var

    def w2(i, j):
        return math.sqrt(
            float((means[i] - means[j]).square().sum() + (var[i].sqrt() - var[j].sqrt()).square().sum())
        )

    return w2, float(var.max())


def log_concave_times(
    mixture: GaussianMixture, init, target, eps: float = 0.1, alpha=None
) -> ClosedFormTimes:
    """docs/theory.md §6 bounds for alpha-strongly-log-concave components (Gaussians: alpha = 1/lambda_max).

    ``T_end <= t_end_max = 1/2 ln(1 + D_intra^2 / (4 eps^2))`` with
    ``D_intra = max_{i in init, j in target} W2(p_i, p_j)``: along the OU flow
    ``KL(p_t^i || p_t^j) <= e^{-2t} W2^2 / (2 (1 - e^{-2t}))``, Pinsker gives ``TV <= eps`` once
    ``W2^2 / (e^{2t} - 1) <= 4 eps^2``, and the TV between sub-mixtures is at most the largest pairwise TV
    (joint convexity). (The older ``ln(D_intra / (2 eps))`` drops the ``1/sqrt(1 - e^{-2t})`` factor and
    fails for components much narrower than the noise: means +-0.125 e1, variances 1e-3, weights
    (0.02, 0.98), eps = 0.1 give 0.223 < exact T_end = 0.334.)
    ``T_start >= t_start_min = ln Delta_inter - 1/2 ln((8 / min(alpha, 1)) ln(4 K^2 / eps^2))`` with
    ``Delta_inter = min_{i in target, j not in target} |mu_i - mu_j|``.

    Parameters
    ----------
    mixture : GaussianMixture.  init, target : S_init ⊆ S_target.  eps : in (0, 1).
    alpha : strong log-concavity constant (default: the smallest ``1 / lambda_max(Sigma_i)``).

    Returns
    -------
    ClosedFormTimes ``(t_end_max, t_start_min, bound)``; ``t_start_min = +inf`` when ``target`` is every
    component, ``-inf`` when a mean of ``target`` coincides with one outside.

    Examples
    --------
    Unit Gaussians at -4, -3 and +4, ``S_init = {0}``, ``S_target = {0, 1}``: ``D_intra = W2 = 1``,
    ``Delta_inter = 7``, ``K = 3`` (a negative ``t_start_min`` says nothing: every time is >= 0):

    >>> import math, torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [-3.0], [4.0]], dtype=torch.float64))
    >>> times = critwin.log_concave_times(mix, [0], [0, 1], eps=0.1)
    >>> round(times.t_end_max, 6), round(0.5 * math.log(1 + 1 / (4 * 0.1**2)), 6)
    (1.629048, 1.629048)
    >>> round(times.t_start_min, 6), round(math.log(7) - 0.5 * math.log(8 * math.log(4 * 9 / 0.1**2)), 6)
    (-0.145188, -0.145188)
    """
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    eps = check_eps(eps)
    K = mixture.n_components
    init, target = check_pair(init, target, K)
    w2, lam_max = _w2_and_lambda_max(mixture)
    if alpha is None:
        if lam_max <= 0:
            raise ValueError("alpha is undefined for zero covariances; pass alpha explicitly")
        alpha = 1.0 / lam_max
    alpha = check_number(alpha, "alpha (log-concavity constant)", low=0.0, closed="neither")
    d_intra = max(w2(i, j) for i in init for j in target)
    t_end_max = 0.5 * math.log1p(d_intra * d_intra / (4.0 * eps * eps))
    rest = [j for j in range(K) if j not in target]
    means = mixture.means.to(torch.float64).cpu()
    delta = min(
        (float(torch.linalg.norm(means[i] - means[j])) for i in target for j in rest), default=math.inf
    )
    if delta == math.inf:
        t_start_min = math.inf
    elif delta <= 0:
        t_start_min = -math.inf
    else:
        t_start_min = math.log(delta) - 0.5 * math.log(
            (8.0 / min(alpha, 1.0)) * math.log(4.0 * K * K / (eps * eps))
        )
    return ClosedFormTimes(t_end_max, t_start_min, theorem_bound(eps, weight_ratio(mixture, target)))
