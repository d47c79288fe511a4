"""Divergences between (noised) Gaussian mixtures and sub-mixtures (docs/theory.md §3).

Three ways to compute ``TV(P_t, Q_t)``, chosen automatically by :func:`tv`:

- ``"closed-form"``: two Gaussians with the same covariance, ``2 Phi(delta/2) - 1``;
- ``"quadrature"``: mixtures whose components *all* share one covariance. After whitening, both laws
  are the same standard normal orthogonally to the affine span of the means, so the TV equals the TV of
  the projections onto that span (dimension ``r <= K_P + K_Q - 1``). For ``r <= 2`` the projected TV is
  integrated on a lattice; the error bracket is three times the difference from the lattice of twice
  the step plus a floor (it covers a fine adaptive quadrature in every tested case);
- ``"monte-carlo"``: the unbiased estimator ``E_{x ~ (P+Q)/2} |p - q| / (p + q)`` (an integrand in
  [0, 1]), stratified over the components of both laws; ``1 - TV`` is computed in log space and a
  conservative interval replaces the normal one when few draws carry the estimate; in the span when the
  covariances are shared, in the full space otherwise. A standard error and an interval come with it.

:class:`TVCurve` evaluates one pair at many times with common random numbers (the same underlying
draws at every ``t``), so a Monte Carlo curve is a smooth function of ``t`` and can be bisected.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from critwin._display import Table, axes, data_frame, short_repr
from critwin._memory import check_memory, chunk_rows
from critwin._validation import check_positive_int, check_subset, check_time
from critwin.clock import alpha_sigma, noised_variance
from critwin.mixtures import GaussianMixture
from critwin.theory.gaussian_divergences import (
    bhattacharyya_gaussians,
    hellinger_gaussians,
    kl_gaussians,
    pinsker_bound,
    tv_bounds_gaussians,
    tv_gaussians,
)
from critwin.theory.mc_tv import (
    MCTerms,
    Strata,
    allocate,
    estimate_tv,
    mixture_log_r,
    span_terms,
    term_bounds,
)

__all__ = [
    "Estimate",
    "tv",
    "TVCurve",
    "tv_gaussians",
    "kl_gaussians",
    "bhattacharyya_gaussians",
    "hellinger_gaussians",
    "tv_bounds_gaussians",
    "pinsker_bound",
    "component_tv",
    "overlap_bound",
]

_METHODS = ("auto", "closed-form", "quadrature", "monte-carlo")
# Lattice step (in whitened units) and half-width of the box kept around each projected mean.
# Beyond 7.5 standard deviations a unit Gaussian has mass < 1e-13 per axis; the steps keep the
# estimated lattice error below ~1e-5 in the tested cases (see tests/test_theory_divergence.py).
_LATTICE_STEP = {1: 0.01, 2: 0.08}
_LATTICE_RADIUS = 7.5
_LATTICE_ERROR_FLOOR = {1: 1e-5, 2: 2e-5}
_MAX_SPAN_COMPONENTS = 512
SINGULAR_T0 = 1e-12
"""OU time used for t = 0 when a component is singular (Dirac): the limit t -> 0+."""
DEFAULT_SEED = 0  # Monte Carlo with generator=None is seeded with this: results are reproducible


@dataclass(frozen=True)
class Estimate:
    """A computed divergence with its uncertainty.

    Attributes
    ----------
    value : the estimate.
    stderr : Monte Carlo standard error; for ``"quadrature"`` the estimated discretisation error;
        0 for ``"closed-form"``.
    low, high : confidence interval (Monte Carlo, at the requested level) or error bracket
        (quadrature), clipped to [0, 1].
    method : ``"closed-form"``, ``"quadrature"`` or ``"monte-carlo"``.
    n : number of Monte Carlo draws or lattice points (0 for a closed form).
    ess : Monte Carlo only: the smaller effective sample size ``(sum y)^2 / sum y^2`` of the terms
        estimating the TV and ``1 - TV`` (below ``MIN_ESS`` the interval is widened to a conservative one).
    overlap : ``1 - TV`` computed on its own (closed form: ``erfc``; Monte Carlo: estimated directly
        where it is small), so its digits survive where ``value`` rounds to 1.
    rel_precision : half the interval's width relative to the smaller of ``value`` and ``overlap``
        (the quantity that carries the digits): 0.05 means the TV (or ``1 - TV`` near 1) is known to
        about 5%; inf when that quantity may be 0.

    Examples
    --------
    What :func:`critwin.tv` returns; for two unit Gaussians at -4 and +4 at OU time 1 it is the closed
    form ``2 Phi(4 e^-1) - 1``, exact (``stderr = 0``), with ``1 - TV`` kept on its own:

    >>> import math, torch, critwin
    >>> from scipy.stats import norm
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> estimate = critwin.tv(mix.subset([0]), mix.subset([1]), 1.0)
    >>> estimate
    Estimate(value=0.8588 [0.8588, 0.8588], method=closed-form)
    >>> bool(abs(estimate.overlap - 2 * norm.cdf(-4 * math.exp(-1))) < 1e-12), estimate.stderr
    (True, 0.0)
    """

    value: float
    stderr: float
    low: float
    high: float
    method: str
    n: int = 0
    ess: float | None = None
    overlap: float | None = None
    rel_precision: float | None = None

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return short_repr(
            "Estimate", {"value": self.value, "value_ci": (self.low, self.high), "method": self.method}
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _relative(low: float, high: float, value: float, overlap: float) -> float:
    """Half the interval's width relative to ``min(value, overlap)`` (0 for a point, inf for a 0)."""
    half = 0.5 * (high - low)
    scale = min(value, overlap)
    if half <= 0:
        return 0.0
    return half / scale if scale > 0 else math.inf


def _bracketed(value, err, method, n, overlap=None) -> Estimate:
    """An :class:`Estimate` of ``value`` with the error bracket ``value +- err`` (clipped to [0, 1])."""
    value = min(1.0, max(0.0, float(value)))
    overlap = 1.0 - value if overlap is None else overlap
    low, high = max(0.0, value - err), min(1.0, value + err)
    return Estimate(value, err, low, high, method, n, None, overlap, _relative(low, high, value, overlap))


def _exact_erf(x: float) -> Estimate:
    """The closed form ``erf(x)`` with its overlap ``erfc(x)``."""
    return _bracketed(math.erf(x), 0.0, "closed-form", 0, math.erfc(x))


def _normal_quantile(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(level, dtype=torch.float64)).item()


# ---------------------------------------------------------------------------------------- Gaussian pairs
def _component_cov(mixture: GaussianMixture, i: int) -> torch.Tensor:
    """Component ``i``'s covariance as its mixture stores it: (d,) variances (iso/diag) or (d, d)."""
    c = mixture.covs[i].to(torch.float64).cpu()
    return c.expand(mixture.dim) if mixture.cov_kind == "iso" else c


class ComponentTV(NamedTuple):
    """The TV of two components: the closed form (``exact``) or the Bhattacharyya lower bound."""

    value: float
    exact: bool


def component_tv(mixture: GaussianMixture, i: int, j: int, t=0.0) -> ComponentTV:
    """TV between components ``i`` and ``j`` of ``mixture`` at OU time ``t``.

    Returns
    -------
    ComponentTV (value, exact) : the closed form when the two noised covariances are equal (``exact=True``);
        otherwise the Bhattacharyya lower bound ``1 - BC <= TV`` (``exact=False``).
    """
    t = check_time(t)
    i, j = check_subset([i], mixture.n_components, "i")[0], check_subset([j], mixture.n_components, "j")[0]
    noised = mixture.noised(t)
    m = noised.means.to(torch.float64).cpu()
    ci, cj = _component_cov(noised, i), _component_cov(noised, j)
    if torch.allclose(ci, cj, rtol=1e-9, atol=1e-12):
        return ComponentTV(tv_gaussians(m[i], m[j], ci), True)
    return ComponentTV(tv_bounds_gaussians(m[i], ci, m[j], cj).lower, False)


def overlap_bound(mixture: GaussianMixture, subset, t=0.0) -> float:
    """Upper bound on ``1 - TV(p_t^S, p_t^{S^c})``: ``sum_{i in S, j not in S} (1 - TV(p_t^i, p_t^j))``.

    Valid for any weights because ``min(sum_i a_i, sum_j b_j) <= sum_{i,j} min(a_i, b_j)``. Pairs with
    unequal covariances use ``BC >= 1 - TV`` in place of ``1 - TV``, which keeps it an upper bound.
    Returns 0 when ``S`` is every component (nothing to be separated from).

    Examples
    --------
    With two components the bound is exactly their overlap ``1 - TV = 2 Phi(-4 e^-t)`` (means -4 and +4):

    >>> import math, torch, critwin
    >>> from scipy.stats import norm
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> round(critwin.overlap_bound(mix, [0], 1.0), 6), round(float(2 * norm.cdf(-4 * math.exp(-1))), 6)
    (0.141151, 0.141151)
    >>> critwin.overlap_bound(mix, [0, 1])  # S is every component
    0.0
    """
    S = check_subset(subset, mixture.n_components, "subset")
    rest = [j for j in range(mixture.n_components) if j not in S]
    return float(sum(1.0 - component_tv(mixture, i, j, t).value for i in S for j in rest))


# ---------------------------------------------------------------------------------------- mixtures
def _check_mixture(m, name: str) -> GaussianMixture:
    if not isinstance(m, GaussianMixture):
        raise ValueError(f"{name} must be a GaussianMixture (or EmpiricalMixture), got {type(m).__name__}")
    return m


class SharedCovariance(NamedTuple):
    """The covariance every component of two mixtures shares: ``kind`` ``"iso"`` (``value`` a scalar
    variance), ``"diag"`` ((d,) variances) or ``"full"`` (``value`` = (eigenvalues, eigenvectors))."""

    kind: str
    value: object


def _shared_covariance(P: GaussianMixture, Q: GaussianMixture) -> SharedCovariance | None:
    """The covariance every component of P and Q shares; None if they differ.

    kind ``"iso"``: a scalar variance; ``"diag"``: (d,) variances; ``"full"``: (eigenvalues, eigenvectors).
    """
    kinds = {P.cov_kind, Q.cov_kind}
    if kinds == {"iso"}:
        v = torch.cat([P.covs, Q.covs]).to(torch.float64)
        same = torch.allclose(v, v[0].expand_as(v), rtol=1e-9, atol=1e-12)
        return SharedCovariance("iso", v[0]) if same else None
    if "full" not in kinds:

        def diag(m):
            c = m.covs.to(torch.float64)
            return c.unsqueeze(1).expand(-1, m.dim) if m.cov_kind == "iso" else c

        v = torch.cat([diag(P), diag(Q)])
        same = torch.allclose(v, v[0].expand_as(v), rtol=1e-9, atol=1e-12)
        return SharedCovariance("diag", v[0]) if same else None
    c = torch.cat([P.cov_matrices(), Q.cov_matrices()]).to(torch.float64)
    if not torch.allclose(c, c[0].expand_as(c), rtol=1e-9, atol=1e-12):
        return None
    lam, U = torch.linalg.eigh(0.5 * (c[0] + c[0].T))
    return SharedCovariance("full", (lam.clamp_min(0), U))


def _has_singular_component(m: GaussianMixture) -> bool:
    """Whether some component has a singular covariance (no density at t = 0)."""
    if m.cov_kind == "full":
        lam = torch.linalg.eigvalsh(m.cov_matrices().to(torch.float64))
        return bool((lam <= 1e-12 * lam.abs().amax(-1, keepdim=True).clamp_min(1e-300)).any())
    return bool((m.covs == 0).any())


def mc_tv_estimate(terms: MCTerms, strata: Strata, w_p, w_q, z: float) -> Estimate:
    """An :class:`Estimate` from the terms of stratified draws (:func:`critwin.theory.mc_tv.estimate_tv`)."""
    r = estimate_tv(terms, strata, term_bounds(w_p, w_q, strata), z)
    rel = _relative(r.low, r.high, r.value, r.overlap)
    return Estimate(
        r.value, r.stderr, r.low, r.high, "monte-carlo", int(strata.rows.numel()), r.ess, r.overlap, rel
    )


class _SpanDraws(NamedTuple):
    """The fixed draws of a Monte Carlo curve in the span: strata and standard normal rows (n, r)."""

    strata: Strata
    z: torch.Tensor


class _FullDraws(NamedTuple):
    """The fixed draws of a Monte Carlo curve in the full space: strata, clean draws and noise (n, d)."""

    strata: Strata
    x0: torch.Tensor
    noise: torch.Tensor


class TVCurve:
    """``t -> TV(P_t, Q_t)`` for one pair of mixtures, with the method fixed and common random numbers.

    Parameters
    ----------
    P, Q : GaussianMixture (a mixture and a sub-mixture of it, or any two mixtures of the same dimension).
    n : Monte Carlo draws (half from each law); ignored by exact methods.
    generator : torch.Generator for the Monte Carlo draws (drawn once, reused at every ``t``); None: one
        seeded with ``DEFAULT_SEED`` = 0, so results are reproducible.
    method : ``"auto"`` (closed form, else span quadrature, else Monte Carlo), or force one of
        ``"closed-form"``, ``"quadrature"``, ``"monte-carlo"``.
    level : confidence level of Monte Carlo intervals.
    max_quadrature_dim : largest span dimension integrated on a lattice (1 or 2).

    Attributes
    ----------
    method : the method actually used.  span_dim : dimension of the span (None without shared covariance).

    Examples
    --------
    The two components of unit Gaussians at -4 and +4: ``TV(t) = 2 Phi(4 e^-t) - 1`` at every ``t``.

    >>> import math, torch, critwin
    >>> from scipy.stats import norm
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> curve = critwin.TVCurve(mix.subset([0]), mix.subset([1]))
    >>> curve.method
    'closed-form'
    >>> [round(curve(t).value, 4) for t in (0.5, 1.0, 2.0)]
    [0.9847, 0.8588, 0.4117]
    >>> [round(float(2 * norm.cdf(4 * math.exp(-t)) - 1), 4) for t in (0.5, 1.0, 2.0)]
    [0.9847, 0.8588, 0.4117]
    """

    def __init__(
        self,
        P: GaussianMixture,
        Q: GaussianMixture,
        n: int = 20000,
        generator: torch.Generator | None = None,
        *,
        method: str = "auto",
        level: float = 0.95,
        max_quadrature_dim: int = 2,
    ):
        self.P, self.Q = _check_mixture(P, "P"), _check_mixture(Q, "Q")
        if P.dim != Q.dim:
            raise ValueError(f"P and Q must have the same dimension, got {P.dim} and {Q.dim}")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self.n = check_positive_int(n, "n", minimum=2)
        self.z = _normal_quantile(level)
        self.level = level
        if max_quadrature_dim not in (0, 1, 2):
            raise ValueError(f"max_quadrature_dim must be 0, 1 or 2, got {max_quadrature_dim!r}")
        if generator is None:
            generator = torch.Generator(device=P.means.device).manual_seed(DEFAULT_SEED)
        elif not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self._generator = generator
        # The span reduction needs an SVD of all the means; for large point clouds (EmpiricalMixture) the
        # chunked full-space densities of the core are cheaper and bounded in memory.
        small = P.n_components + Q.n_components <= _MAX_SPAN_COMPONENTS
        self._shared = _shared_covariance(P, Q) if small else None
        self._device = P.means.device
        self._singular = _has_singular_component(P) or _has_singular_component(Q)
        self._wP = P.weights.to(torch.float64)
        self._wQ = Q.weights.to(torch.float64)
        self._draws = None
        self.span_dim = None
        if self._shared is not None:
            self.span_dim = self._span(1.0)[0].shape[1]
        single = P.n_components == 1 and Q.n_components == 1
        if method == "auto":
            if self._shared is not None and single:
                method = "closed-form"
            elif self._shared is not None and self.span_dim <= max_quadrature_dim:
                method = "quadrature"
            else:
                method = "monte-carlo"
        elif method == "closed-form" and not (single and self._shared is not None):
            raise ValueError("method='closed-form' needs two single Gaussians with the same covariance")
        elif method == "quadrature" and (self._shared is None or self.span_dim > 2):
            raise ValueError(
                "method='quadrature' needs components sharing one covariance and a span of dimension <= 2 "
                f"(span dimension: {self.span_dim})"
            )
        self.method = method

    # -------------------------------------------------------------------- span projection
    def _whitened_means(self, t: float) -> torch.Tensor:
        """(K_P + K_Q, d) means at time t in coordinates where the shared covariance is the identity."""
        a, _ = alpha_sigma(t)
        means = torch.cat([self.P.means, self.Q.means]).to(torch.float64)
        kind, value = self._shared
        if kind == "full":
            lam, U = value
            var_t = noised_variance(lam, t)
            if (var_t <= 0).any():
                raise ValueError("t must be > 0 for mixtures with a singular shared covariance")
            return a * (means @ U) / var_t.sqrt()
        var_t = noised_variance(value, t)
        if (torch.as_tensor(var_t) <= 0).any():
            raise ValueError("t must be > 0 for mixtures with zero (or singular) covariance")
        return a * means / var_t.sqrt()

    def _span(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates (K_P + K_Q, r) of the whitened means in an orthonormal basis of their affine span."""
        m = self._whitened_means(t)
        centred = m - m.mean(0)
        basis = span_basis(m)
        if basis.shape[0] == 0:
            return centred[:, :0], m.mean(0)
        if self._shared.kind == "iso" and getattr(self, "_iso_basis", None) is None:
            # For a shared isotropic covariance the span does not move with t: fix its basis once so the
            # Monte Carlo draws (common random numbers) sit in the same frame at every t.
            self._iso_basis = basis
        if self._shared.kind == "iso":
            basis = self._iso_basis
        return centred @ basis.T, m.mean(0)

    # -------------------------------------------------------------------- evaluation
    def table(self, times) -> dict[str, list[float]]:
        """The curve at ``times`` (OU times): columns ``t``, ``tv``, ``stderr``, ``low``, ``high``."""
        estimates = [self(t) for t in times]
        columns = {k: [getattr(e, k) for e in estimates] for k in ("value", "stderr", "low", "high")}
        return Table({"t": [float(t) for t in times], "tv": columns.pop("value"), **columns})

    def to_pandas(self, times):
        """:meth:`table` as a ``pandas.DataFrame`` (needs ``critwin[pandas]``)."""
        return data_frame(self.table(times))

    def plot(self, times, ax=None):
        """TV against OU time at ``times``, its interval as a band; returns the matplotlib Axes."""
        rows, ax = self.table(times), axes(ax)
        ax.fill_between(rows["t"], rows["low"], rows["high"], alpha=0.25, color="tab:blue", lw=0)
        ax.plot(rows["t"], rows["tv"], "o-", ms=3, color="tab:blue", label=f"TV ({self.method})")
        ax.set(xlabel="OU time t", ylabel="total variation", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8, loc="best")
        return ax

    def __call__(self, t=0.0) -> Estimate:
        t = check_time(t)
        if t == 0.0 and self._singular:
            # Dirac (zero-covariance) components have no density at t = 0: use the limit t -> 0+; for
            # distinct atoms that limit is the TV of the discrete laws (at 1e-12 they are ~1e6 sd apart).
            t = SINGULAR_T0
        if self.method == "closed-form":
            coords, _ = self._span(t)
            return _exact_erf(float(torch.linalg.norm(coords[0] - coords[1])) / 2.0 / math.sqrt(2.0))
        if self.method == "quadrature":
            return self._quadrature(t)
        if self._shared is not None:
            return self._monte_carlo_span(t)
        return self._monte_carlo_full(t)

    @staticmethod
    def _lattice(centres: torch.Tensor, half: int) -> torch.Tensor:
        """Integer lattice points (m, r) within ``half`` cells (sup norm) of any integer ``centres``."""
        r = centres.shape[1]
        lo = centres.min(0).values - half
        extent = centres.max(0).values + half - lo + 1
        if int(extent.prod()) <= 4_000_000:
            # An occupancy grid over the bounding box: no sort needed to merge overlapping boxes.
            occupied = torch.zeros(*extent.tolist(), dtype=torch.bool, device=centres.device)
            for c in (centres - lo).tolist():
                occupied[tuple(slice(ci - half, ci + half + 1) for ci in c)] = True
            return occupied.nonzero() + lo
        offsets_1d = torch.arange(-half, half + 1, device=centres.device)
        offsets = offsets_1d.unsqueeze(1) if r == 1 else torch.cartesian_prod(offsets_1d, offsets_1d)
        idx = (centres.unsqueeze(1) + offsets.unsqueeze(0)).reshape(-1, r) - lo
        if r == 1:
            return torch.unique(idx[:, 0]).unsqueeze(1) + lo
        width = int(extent[1])
        key = torch.unique(idx[:, 0] * width + idx[:, 1])
        return torch.stack([key // width, key % width], 1) + lo

    def _quadrature(self, t: float) -> Estimate:
        coords, _ = self._span(t)
        r = coords.shape[1]
        if r == 0:
            return _bracketed(0.0, 0.0, "quadrature", 1)
        h = _LATTICE_STEP[r]
        # Components shared by P and Q (a sub-mixture and its mixture) are evaluated once; p - q is then
        # one matrix-vector product with the difference of the weight vectors.
        centres, w_p, w_q = self._union(coords)
        w_diff = w_p - w_q
        idx = self._lattice(torch.round(centres / h).long(), int(math.ceil(_LATTICE_RADIUS / h)))
        x = idx.to(torch.float64) * h
        step = chunk_rows(8 * 2 * r * centres.shape[0], x.shape[0], "the span quadrature lattice")
        diff = torch.cat(
            [
                torch.exp(-0.5 * (xc.unsqueeze(1) - centres.unsqueeze(0)).square().sum(-1)) @ w_diff
                for xc in x.split(step)
            ]
        ) * (2 * math.pi) ** (-0.5 * r)
        fine = 0.5 * diff.abs().sum().item() * h**r
        coarse_mask = (idx % 2 == 0).all(1)
        coarse = 0.5 * diff[coarse_mask].abs().sum().item() * (2 * h) ** r
        # The integrand has kinks where p = q, so the lattice rule is O(h^2) but not smoothly so: the
        # Richardson estimate |fine - coarse|/3 missed the truth in 44/110 cases. Conservative bracket:
        # three times the difference of the two resolutions plus a floor (measured errors <= 6e-6).
        err = 3.0 * abs(fine - coarse) + _LATTICE_ERROR_FLOOR[r]
        return _bracketed(fine, err, "quadrature", int(idx.shape[0]))

    def _union(self, coords):
        """Distinct projected centres (u, r) and the weights of P and of Q on them (u,), (u,)."""
        centres, inverse = torch.unique(coords, dim=0, return_inverse=True)
        kp = self.P.n_components
        w_p = torch.zeros(centres.shape[0], dtype=torch.float64, device=coords.device)
        w_q = torch.zeros_like(w_p)
        w_p.index_add_(0, inverse[:kp], self._wP)
        w_q.index_add_(0, inverse[kp:], self._wQ)
        return centres, w_p, w_q

    # -------------------------------------------------------------------- Monte Carlo
    def _check_draws(self, values_per_draw: int, where: str) -> None:
        """The memory guard on the Monte Carlo draws (8 bytes per value) before they are drawn."""
        check_memory(
            8 * self.n * values_per_draw,
            f"the Monte Carlo draws of n={self.n} points {where}",
            "lower n, or let method='auto' use an exact method where one applies",
        )

    def _monte_carlo_span(self, t: float) -> Estimate:
        coords, _ = self._span(t)
        r = coords.shape[1]
        if r == 0:
            return _bracketed(0.0, 0.0, "monte-carlo", self.n)
        kp = self.P.n_components
        if self._draws is None or self._draws.z.shape[1] != r:
            # pair strata in the overlap of every two components with distinct centres (mc_tv notes)
            distinct = torch.cdist(coords[:kp], coords[kp:]).cpu() > 1e-9
            # the (n, r) draws, their labels and strata rows, and the per-draw terms
            self._check_draws(r + 8, f"in a span of dimension {r}")
            strata = allocate(self._wP.cpu(), self._wQ.cpu(), self.n, distinct, self._generator)
            z = torch.randn(
                strata.rows.numel(), r, generator=self._generator, dtype=torch.float64, device=coords.device
            )
            self._draws = _SpanDraws(strata, z)
        strata, z = self._draws
        # Chunked over draws: a (chunk, K, r) difference tensor is never built; the squared distances
        # are |x|^2 - 2 x.c + |c|^2 (float64: the cancellation is ~1e-16 |x|^2, harmless).
        step = chunk_rows(
            8 * 4 * (coords.shape[0] + strata.counts.numel()), z.shape[0], "the Monte Carlo draws"
        )
        terms = span_terms(coords[:kp], coords[kp:], self._wP, self._wQ, strata, z, step)
        return mc_tv_estimate(terms, strata, self._wP, self._wQ, self.z)

    def _monte_carlo_full(self, t: float) -> Estimate:
        if self._draws is None:
            # the clean draws, their noise and the noised points (n, d), labels and log-probabilities
            K = self.P.n_components + self.Q.n_components
            self._check_draws(3 * self.P.dim + K + 8, f"in dimension {self.P.dim}")
            strata = allocate(self._wP.cpu(), self._wQ.cpu(), self.n, None, self._generator)
            x0 = self._component_draws(strata.labels, plain=strata.plain)
            noise = torch.randn(x0.shape, generator=self._generator, dtype=x0.dtype, device=x0.device)
            self._draws = _FullDraws(strata, x0, noise)
        strata, x0, noise = self._draws
        a, s = alpha_sigma(t)
        x = a * x0 + s * noise
        log_p, log_q = self.P.log_prob(x, t).double(), self.Q.log_prob(x, t).double()
        if strata.plain:
            log_r = mixture_log_r(log_p, log_q, None, None, strata)
        else:
            log_r = mixture_log_r(
                log_p, log_q, self.P.component_log_prob(x, t), self.Q.component_log_prob(x, t), strata
            )
        return mc_tv_estimate(MCTerms(log_p, log_q, log_r), strata, self._wP, self._wQ, self.z)

    def _component_draws(self, labels: torch.Tensor, plain: bool) -> torch.Tensor:
        """(n, d) draws at t = 0, each from the component ``labels[i]`` of P (``< K_P``) or of Q."""
        kp = self.P.n_components
        g = self._generator
        if plain:
            # One stratum (M itself): the P draws then the Q draws, as many as the labels ask.
            n_p = int((labels < kp).sum())
            xp, xq = self.P.sample(n_p, generator=g)[0], self.Q.sample(self.n - n_p, generator=g)[0]
            return torch.cat([xp, xq.to(xp.dtype)])
        out = torch.empty(labels.numel(), self.P.dim, dtype=self.P.dtype, device=self.P.device)
        for k in torch.unique(labels).tolist():
            rows = (labels == k).nonzero()[:, 0]
            source, index = (self.P, k) if k < kp else (self.Q, k - kp)
            x, _ = source.subset([index]).sample(rows.numel(), generator=g)
            out[rows.to(out.device)] = x.to(out.dtype)
        return out


def span_basis(points: torch.Tensor) -> torch.Tensor:
    """(r, d) orthonormal rows spanning the affine span of ``points`` (n, d); ``r = 0`` if they coincide.

    Directions with singular values below ``1e-9`` of the largest count as numerical noise.
    """
    centred = points - points.mean(0)
    if centred.abs().max() == 0:
        return centred[:0]
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[: int((sv > 1e-9 * sv[0]).sum())]


def tv(
    P: GaussianMixture,
    Q: GaussianMixture,
    t=0.0,
    n: int = 20000,
    generator: torch.Generator | None = None,
    *,
    method: str = "auto",
    level: float = 0.95,
    max_quadrature_dim: int = 2,
) -> Estimate:
    """Total variation ``TV(P_t, Q_t)`` between two mixtures after forward time ``t``.

    Parameters
    ----------
    P, Q : GaussianMixture, e.g. ``mixture.subset(S)`` and ``mixture``.
    t : OU time (0 = the mixtures themselves).
    n : Monte Carlo draws (used only by the Monte Carlo method).
    generator : torch.Generator for the Monte Carlo draws (None: seeded with ``DEFAULT_SEED`` = 0).
    method, level, max_quadrature_dim : see :class:`TVCurve`.

    Returns
    -------
    Estimate with ``value``, ``stderr``, ``low``, ``high``, ``method``.

    Examples
    --------
    Two unit Gaussians at -4 and +4, noised to OU time 1: ``TV = 2 Phi(e^-1 * 8 / 2) - 1``.

    >>> import math, torch, critwin
    >>> from scipy.stats import norm
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> estimate = critwin.tv(mix.subset([0]), mix.subset([1]), 1.0)
    >>> round(estimate.value, 4), estimate.method
    (0.8588, 'closed-form')
    >>> round(float(2 * norm.cdf(math.exp(-1) * 4) - 1), 4)
    0.8588
    """
    t = check_time(t)
    return TVCurve(P, Q, n, generator, method=method, level=level, max_quadrature_dim=max_quadrature_dim)(t)
