"""The synthetic validation of Blink Thm 2 (the paper's synthetic section, made reproducible).

For random isotropic mixtures (unit covariances; K in {2, 4, 8}; d in {2, 16, 256, 4096}; well and
badly separated clusters; random unequal weights) and a two-level hierarchical mixture, and for pairs
``S_init ⊆ S_target``, this computes across a grid of noise levels ``T`` the forward-reverse law
``q_T = p^{S_init, T}`` exactly (no SDE discretisation) and compares it with the theorem.

What is plotted against the bound ``eps (1 + max(1, W)/sqrt 2)``: ``TV(q_T, p^{S_target})``, the TV
of the laws of the *sample x* (what the theorem bounds), estimated as follows. With
``r(y) = p_T^{S_init}(y) / p_T(y)`` and ``h(x) = E[r(e^{-T} x + sqrt(1 - e^{-2T}) Z)]``, the forward-reverse
law has density ``q_T(x) = p(x) h(x)`` (Bayes: ``x | y`` is the posterior of the full mixture), so

    TV(q_T, p^{S_target}) = E_{x ~ p^{S_target}} [ (1 - p(x) h(x) / p^{S_target}(x))_+ ].

All three densities are standard normal orthogonally to the span of the means (docs/theory.md §3), so the
computation runs exactly in that span (dimension <= K - 1, whatever d). ``h(x)`` is estimated with
``n_inner`` independent antithetic normal draws per ``x``; ``(1 - c h)_+`` is convex in ``h``, so by
Jensen the estimator's mean is *at least* the true TV: the check "no violation beyond 3 standard
errors" is conservative. The component (label) distribution of ``q_T`` is reported too, both as
``E_{y ~ p_T^{S_init}}[pi_T(. | y)]`` and from the core's exact posterior sampler
(``GaussianMixture.sample_posterior``) in the full space, as a cross-check.

A point counts towards violations only where the theorem applies with the times' uncertainty taken
conservatively: ``t_end_high <= T <= t_start_low``. The estimator is biased upwards, so the rule
``tv_x - 3 se > bound`` can only over-report violations. Cases with ``S_init = S_target`` (where the
theorem is nearly trivial) are counted separately.

Because the bound has several-fold slack inside ``[T_end, T_start]``, "0 violations" cannot detect an
error in ``T_end`` or ``T_start``. So each case also checks the endpoints themselves with an independent
TV evaluation (fresh draws): the exact ``TV(p_t^{S_init}, p_t^{S_target})`` must cross ``eps`` inside
``[t_end_low, t_end_high]`` and the separation must cross ``1 - eps^2`` inside
``[t_start_low, t_start_high]`` (each judged with the estimator's interval). Per case, the tightness of
the theorem is reported as the largest ``TV / bound`` inside the range. Where the means span a line
(rank 1), every ``tv_x`` is also compared with its own quadrature (:func:`forward_reverse_tv_quadrature`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field

import torch

from critwin._io import atomic_paths, json_text
from critwin._validation import check_eps, check_positive_int, check_seed, check_time
from critwin.clock import alpha_sigma
from critwin.mixtures import GaussianMixture
from critwin.theory.closed_forms import log_concave_times
from critwin.theory.discrete_times import separation_threshold
from critwin.theory.references import reference_tv, span_coordinates
from critwin.theory.windows import check_pair, transition_times

__all__ = [
    "ValidationCase",
    "ValidationResult",
    "validation_cases",
    "validate",
    "forward_reverse_tv",
    "forward_reverse_tv_quadrature",
]

FULL_KS = (2, 4, 8)
FULL_DIMS = (2, 16, 256, 4096)
QUICK_KS = (2, 4)
QUICK_DIMS = (2, 256)
# Cluster geometry (unit-variance components): distance from a component to its cluster centre, and
# between the two cluster centres. "well" leaves non-empty theorem windows at eps = 0.1; "bad" does not.
SEPARATIONS = {"well": (2.0, 150.0), "bad": (2.0, 10.0)}


@dataclass
class ValidationCase:
    """One mixture and one pair ``S_init ⊆ S_target``."""

    name: str
    mixture: GaussianMixture
    init: list[int]
    target: list[int]
    K: int
    d: int
    separation: str

    def __repr__(self) -> str:
        pair = f"init={self.init}, target={self.target}"
        return f"ValidationCase({self.name!r}, K={self.K}, d={self.d}, separation={self.separation}, {pair})"


@dataclass
class ValidationResult:
    rows: list[dict]
    cases: list[dict]
    summary: dict
    files: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        keys = ("n_cases", "n_points", "n_points_in_theorem_range", "violations", "eps")
        return "ValidationResult(" + ", ".join(f"{k}={self.summary.get(k)}" for k in keys) + ")"


def _unit_vectors(n: int, d: int, generator) -> torch.Tensor:
    v = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def _random_weights(K: int, generator) -> torch.Tensor:
    # Dirichlet(2) through normalised Gamma(2) = sum of two Exp(1); floored so no component is negligible.
    g = -torch.log(torch.rand(K, 2, generator=generator, dtype=torch.float64)).sum(1)
    w = (g / g.sum()).clamp_min(0.4 / K)
    return w / w.sum()


def _clustered_mixture(K: int, d: int, within: float, between: float, generator) -> GaussianMixture:
    """Two clusters of K/2 components (K = 2: one component each) with random directions."""
    axis = _unit_vectors(1, d, generator)[0]
    half = max(1, K // 2)
    centres = torch.stack([0.5 * between * axis, -0.5 * between * axis])
    cluster = torch.arange(K) // half
    if K == 2:
        means = centres
    else:
        means = centres[cluster] + within * _unit_vectors(K, d, generator)
    return GaussianMixture(means, weights=_random_weights(K, generator))


def _hierarchical_mixture(d: int, generator) -> GaussianMixture:
    """8 components: 2 super-clusters x 2 clusters x 2 components (half-distances 2000 / 60 / 2)."""
    u = _unit_vectors(7, d, generator)
    means = []
    for ai, a in enumerate((1.0, -1.0)):
        for bi, b in enumerate((1.0, -1.0)):
            for c in (1.0, -1.0):
                means.append(2000.0 * a * u[0] + 60.0 * b * u[1 + ai] + 2.0 * c * u[3 + 2 * ai + bi])
    return GaussianMixture(torch.stack(means), weights=_random_weights(8, generator))


def validation_cases(
    ks=FULL_KS, dims=FULL_DIMS, seed: int = 0, hierarchical: bool = True
) -> list[ValidationCase]:
    """The random mixtures and (S_init, S_target) pairs of the experiment (deterministic given ``seed``)."""
    generator = torch.Generator().manual_seed(check_seed(seed))
    cases = []
    for K in ks:
        for d in dims:
            for sep, (within, between) in SEPARATIONS.items():
                m = _clustered_mixture(K, d, within, between, generator)
                cluster0 = list(range(max(1, K // 2))) if K > 2 else [0, 1]
                for init, target in (([0], cluster0), ([0], [0])):
                    name = f"K{K}-d{d}-{sep}-{''.join(map(str, init))}in{''.join(map(str, target))}"
                    cases.append(ValidationCase(name, m, init, target, K, d, sep))
    if hierarchical:
        d = 16
        m = _hierarchical_mixture(d, generator)
        for init, target in (([0], [0, 1]), ([0], [0, 1, 2, 3]), ([0, 1], [0, 1, 2, 3])):
            name = f"hier-d{d}-{''.join(map(str, init))}in{''.join(map(str, target))}"
            cases.append(ValidationCase(name, m, init, target, 8, d, "hierarchical"))
    return cases


def _span_coordinates(mixture: GaussianMixture) -> torch.Tensor:
    """(K, r) coordinates of the means in an orthonormal basis of their affine span, r >= 1
    (:func:`critwin.theory.references.span_coordinates`; coinciding means get one all-zero coordinate:
    any extra orthogonal direction is exact too)."""
    return torch.from_numpy(span_coordinates(mixture.means.double().cpu().numpy()))


def _mix_ratio(
    x: torch.Tensor, centres: torch.Tensor, w_num: torch.Tensor, w_den: torch.Tensor
) -> torch.Tensor:
    """``sum_k w_num_k phi(x - c_k) / sum_k w_den_k phi(x - c_k)`` for unit Gaussians: x (..., r) -> (...).

    Both sums share the factor ``exp(-min_k |x - c_k|^2 / 2)``, which cancels: no underflow, no log-sum-exp.
    """
    sq = (x.unsqueeze(-2) - centres).square().sum(-1)
    E = torch.exp(-0.5 * (sq - sq.amin(-1, keepdim=True)))
    return (E @ w_num) / (E @ w_den)


def forward_reverse_tv(
    mixture: GaussianMixture,
    init,
    target,
    t_hat: float,
    n_outer: int = 2000,
    n_inner: int = 128,
    generator: torch.Generator | None = None,
) -> dict:
    """``TV(p^{S_init, T}, p^{S_target})`` of the sample law, and the component distribution, at ``T``.

    Requires every component to be ``N(mu_i, I)`` (the exact span reduction of docs/theory.md §3).

    Returns
    -------
    dict with ``tv`` and ``tv_se`` (an upper estimate: see the module notes), ``tv_bias_bound`` (an
    estimate of the bound ``E[c sd(h_hat)]`` on that upward bias), ``label_dist`` (K,)
    ``E_y[pi_T(. | y)]``, ``tv_label`` its TV to the weights of ``p^{S_target}``.

    Examples
    --------
    Unit Gaussians at -4 and +4 restarted from component 0 at a small ``T``: the samples are still
    component 0, whose TV to the whole mixture is ``(2 Phi(4) - 1) / 2 = 0.49997``:

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> g = torch.Generator().manual_seed(0)
    >>> out = critwin.forward_reverse_tv(mix, [0], [0, 1], 0.1, n_outer=500, n_inner=64, generator=g)
    >>> abs(out["tv"] - 0.49997) < 3 * out["tv_se"], round(out["label_dist"][0].item(), 3)
    (True, 1.0)
    """
    if mixture.cov_kind != "iso" or not torch.allclose(
        mixture.covs.to(torch.float64), torch.ones(mixture.n_components, dtype=torch.float64)
    ):
        raise ValueError("mixture must have identity covariances for the exact forward-reverse TV")
    init, target = check_pair(init, target, mixture.n_components)
    t_hat = check_time(t_hat, "t_hat")
    n_outer = check_positive_int(n_outer, "n_outer", minimum=2)
    n_inner = check_positive_int(n_inner, "n_inner")
    c = _span_coordinates(mixture)
    r = c.shape[1]
    w = mixture.weights.to(torch.float64)
    w_init = _restricted_weights(w, init)
    w_target = _restricted_weights(w, target)
    a, s = alpha_sigma(t_hat)
    # The mixture in span coordinates: same posterior as the full one (orthogonal directions cancel).
    reduced = GaussianMixture(c, weights=w)

    # Component distribution E_{y ~ p_T^{init}}[pi_T(.|y)] (noised components are N(a c_k, I)).
    labels = torch.multinomial(w_init, n_outer, replacement=True, generator=generator)
    y = a * c[labels] + torch.randn(n_outer, r, generator=generator, dtype=torch.float64)
    label_dist = reduced.posterior(y, t_hat).mean(0)
    tv_label = 0.5 * (label_dist - w_target).abs().sum().item()

    # x ~ p^{target}; h(x) = E_Z r(a x + s Z) with antithetic pairs; r(y) = p_T^{init}(y) / p_T(y).
    labels = torch.multinomial(w_target, n_outer, replacement=True, generator=generator)
    x = c[labels] + torch.randn(n_outer, r, generator=generator, dtype=torch.float64)
    half = max(1, n_inner // 2)
    z = torch.randn(n_outer, half, r, generator=generator, dtype=torch.float64)
    z = torch.cat([z, -z], 1)
    ratios = _mix_ratio(a * x.unsqueeze(1) + s * z, a * c, w_init, w)
    h = ratios.mean(1)
    c_x = _mix_ratio(x, c, w, w_target)
    g = (1.0 - c_x * h).clamp_min(0.0)
    value = g.mean().item()
    se = (g.var(unbiased=True) / n_outer).sqrt().item()
    # Jensen bias of (1 - c h)_+ with h estimated: at most E|c (h_hat - h)| <= c sd(h_hat) per x, sd from
    # the antithetic pair means (independent across pairs)
    pair_means = 0.5 * (ratios[:, :half] + ratios[:, half:])
    sd_h = pair_means.std(1, unbiased=True) / math.sqrt(half) if half > 1 else torch.zeros_like(h)
    bias = (c_x * sd_h).mean().item()
    return {"tv": value, "tv_se": se, "tv_bias_bound": bias, "label_dist": label_dist, "tv_label": tv_label}


def forward_reverse_tv_quadrature(
    mixture: GaussianMixture, init, target, t_hat: float, n_x: int = 301, n_z: int = 201
) -> tuple[float, float] | None:
    """Quadrature of ``TV(p^{S_init, T}, p^{S_target})`` for unit-covariance mixtures whose means span a
    line (rank 1, e.g. K = 2); None for a higher rank.

    ``TV = 1/2 int |p(x) h(x) - p^{S_target}(x)| dx`` in the span coordinate (orthogonal directions are
    standard normal under all three laws), with ``h(x) = int r(a x + s z) phi(z) dz`` on a uniform z grid
    over [-8.5, 8.5] (normalised weights) and the outer integral by the trapezoid rule over the means'
    range widened by 9 on each side (tail mass < 1e-18). An independent check of the nested Monte Carlo
    of :func:`forward_reverse_tv`.

    Returns
    -------
    (value, error): the value on the ``(2 n_x, 2 n_z)`` grids and its distance to the value on the
    ``(n_x, n_z)`` grids (the error estimate).
    """
    c = _span_coordinates(mixture)
    if c.shape[1] != 1:
        return None
    init, target = check_pair(init, target, mixture.n_components)
    w = mixture.weights.to(torch.float64)
    fine = _quadrature_tv(
        c, w, _restricted_weights(w, init), _restricted_weights(w, target), t_hat, 2 * n_x, 2 * n_z
    )
    coarse = _quadrature_tv(
        c, w, _restricted_weights(w, init), _restricted_weights(w, target), t_hat, n_x, n_z
    )
    return fine, abs(fine - coarse)


def _quadrature_tv(c, w, w_init, w_target, t_hat, n_x, n_z) -> float:
    a, s = alpha_sigma(t_hat)
    lo, hi = float(c.min()) - 9.0, float(c.max()) + 9.0
    x = torch.linspace(lo, hi, n_x, dtype=torch.float64).unsqueeze(1)
    z = torch.linspace(-8.5, 8.5, n_z, dtype=torch.float64).unsqueeze(1)
    wz = torch.exp(-0.5 * z.square().squeeze(1))
    wz = wz / wz.sum()
    h = _mix_ratio(a * x.unsqueeze(1) + s * z, a * c, w_init, w) @ wz
    phi = torch.exp(-0.5 * (x - c.T).square()) / math.sqrt(2 * math.pi)  # (n_x, K)
    integrand = ((phi @ w) * h - phi @ w_target).abs()
    return 0.5 * torch.trapezoid(integrand, x.squeeze(1)).item()


def _sampled_label_tv(mixture, init, target, t_hat, n, generator) -> float:
    """TV between the label law of the core's exact forward-reverse sampler and the target weights."""
    if t_hat <= 0:
        return float("nan")
    y, _ = mixture.subset(init).noised(t_hat).sample(n, generator=generator)
    _, labels = mixture.sample_posterior(y, t_hat, generator=generator)
    freq = torch.bincount(labels, minlength=mixture.n_components).to(torch.float64) / n
    target_w = _restricted_weights(mixture.weights.to(torch.float64), target)
    return 0.5 * (freq - target_w).abs().sum().item()


def _restricted_weights(w: torch.Tensor, components: list[int]) -> torch.Tensor:
    """(K,) the weights of the sub-mixture ``components``: renormalised there, zero elsewhere."""
    out = torch.zeros_like(w)
    out[components] = w[components] / w[components].sum()
    return out


def _time_grid(tt, closed, n_grid: int) -> list[float]:
    finite = [v for v in (tt.t_end, tt.t_start, closed.t_end_max, closed.t_start_min) if math.isfinite(v)]
    t_max = 1.25 * max(finite + [1.0]) + 0.5
    grid = torch.linspace(0.0, t_max, n_grid, dtype=torch.float64).tolist()
    extra = [v for v in (tt.t_end, tt.t_start) if math.isfinite(v) and 0 <= v <= t_max]
    if math.isfinite(tt.t_end) and math.isfinite(tt.t_start) and tt.t_end < tt.t_start:
        extra.append(0.5 * (tt.t_end + tt.t_start))
    elif math.isfinite(tt.t_end) and not math.isfinite(tt.t_start):
        extra.append(tt.t_end + 0.5)
    return sorted(set(round(v, 10) for v in grid + extra))


def _endpoint_checks(m, case, tt, eps, seed) -> dict:
    """Checks that ``T_end`` / ``T_start`` are where the TV crosses ``eps`` / ``1 - eps^2``, against a
    reference that shares no code with the TV that produced them (:mod:`critwin.theory.references`:
    exact on rank-1 spans, numpy Monte Carlo at 4 standard errors otherwise).

    By monotonicity the crossing lies in ``[low - w, high + w]`` (``w``: the bracket's width) iff
    ``TV(low - w) >= level >= TV(high + w)``; each side is judged with the reference's interval, so only
    a bracket that misses by more than its own width fails (an honest 95% bracket does so with
    probability ~1e-8). None: nothing to check.
    """
    out = {"t_end_check": None, "t_start_check": None, "tv_at_t_end": None, "separation_at_t_start": None}
    coords, w = span_coordinates(m.means.double().cpu().numpy()), m.weights.double().cpu().numpy()
    checks = []
    if case.init != case.target and math.isfinite(tt.t_end) and tt.t_end > 0:
        checks.append(("t_end", "tv_at_t_end", case.init, case.target, eps))
    rest = [j for j in range(m.n_components) if j not in case.target]
    if rest and math.isfinite(tt.t_start) and tt.t_start > 0:
        checks.append(("t_start", "separation_at_t_start", case.target, rest, separation_threshold(eps)))
    for k, (name, at, A, B, level) in enumerate(checks):
        t, low, high = getattr(tt, name), getattr(tt, name + "_low"), getattr(tt, name + "_high")
        width = high - low

        before, at_t, after = (
            reference_tv(coords, w, A, B, max(0.0, time), seed=seed + 7919 * (3 * k + j))
            for j, time in enumerate((low - width, t, high + width))
        )
        out[at] = at_t.value
        out[name + "_check"] = bool(before.high >= level >= after.low)
    return out


_CHECK_Z = 4.0  # per check: two-sided 6e-5, so <= 1.3% over 200 checks (Bonferroni)


def _quadrature_check(m, case, t_hat, fr) -> dict:
    """The Monte Carlo ``tv_x`` against its quadrature (rank-1 cases): ``tv_x - quadrature`` within
    ``[-slack, bias + slack]``, ``slack = 4 se`` plus the quadrature's error estimate plus 1e-4 (a floor:
    at TV ~ 0 every draw can give 0, so se = 0) and ``bias`` the bound on the estimator's upward (Jensen)
    bias, which the two-sided rule of old counted as a failure."""
    quad = forward_reverse_tv_quadrature(m, case.init, case.target, t_hat)
    if quad is None:
        return {"tv_x_quadrature": None, "tv_x_quadrature_err": None, "quadrature_check": None}
    value, err = quad
    slack = _CHECK_Z * fr["tv_se"] + err + 1e-4
    ok = -slack <= fr["tv"] - value <= fr["tv_bias_bound"] + slack
    return {"tv_x_quadrature": value, "tv_x_quadrature_err": err, "quadrature_check": bool(ok)}


def _num(v):
    return v if not (isinstance(v, float) and not math.isfinite(v)) else None


def validate(
    out=None,
    *,
    quick: bool = False,
    eps: float = 0.1,
    ks=None,
    dims=None,
    n_grid: int | None = None,
    n_outer: int | None = None,
    n_inner: int | None = None,
    n_tv: int | None = None,
    n_check: int | None = None,
    seed: int = 0,
    threads: int | None = 1,
    plot: bool = True,
) -> ValidationResult:
    """Run the synthetic validation of Blink Thm 2; optionally write PNG + CSV + summary JSON to ``out``.

    Parameters
    ----------
    out : output folder (``validation.png``, ``validation.csv``, ``summary.json``), or None.
    quick : reduced sizes (K in {2, 4}, d in {2, 256}, fewer grid points and draws).
    eps : the theorem's eps in (0, 1).
    ks, dims : override the component counts and dimensions.
    n_grid, n_outer, n_inner, n_tv, n_check : grid points in T, outer/inner draws of the TV estimator,
        Monte Carlo draws for the transition times, draws of the sampler cross-check.
    seed : seeds every random choice (mixtures and estimators).
    threads : torch intra-op threads while running (1 is fastest for these small tensors; None: leave).

    Returns
    -------
    ValidationResult with ``rows`` (one per case and T), ``cases``, ``summary`` (``violations`` must be 0).
    """
    eps = check_eps(eps)
    seed = check_seed(seed)
    ks = tuple(ks or (QUICK_KS if quick else FULL_KS))
    dims = tuple(dims or (QUICK_DIMS if quick else FULL_DIMS))
    for k in ks:
        check_positive_int(k, "ks", minimum=2)
    for d in dims:
        check_positive_int(d, "dims", minimum=1)
    n_grid = check_positive_int(n_grid or (8 if quick else 10), "n_grid", minimum=2)
    n_outer = check_positive_int(n_outer or (600 if quick else 1000), "n_outer", minimum=10)
    n_inner = check_positive_int(n_inner or 48, "n_inner", minimum=2)
    n_tv = check_positive_int(n_tv or (3000 if quick else 5000), "n_tv", minimum=10)
    n_check = check_positive_int(n_check or 200, "n_check", minimum=10)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_positive_int(threads, "threads"))
    start = time.perf_counter()
    try:
        rows, case_info = _run(eps, ks, dims, n_grid, n_outer, n_inner, n_tv, n_check, seed, quick)
    finally:
        torch.set_num_threads(old_threads)
    summary = _summary(rows, case_info, eps, quick, seed, time.perf_counter() - start)
    result = ValidationResult(rows, case_info, summary)
    if out is not None:
        result.files = _write(out, result, plot)
    return result


def _summary(rows, case_info, eps, quick, seed, runtime) -> dict:
    """Counts, violations (trivial cases apart), endpoint checks and tightness of one validation run."""
    in_range = [r for r in rows if r["in_theorem_range"]]
    violations = [r for r in in_range if r["violation"]]
    ratios = [r["tv_x"] / r["bound"] for r in in_range]
    _tightness(rows, case_info)
    checks = [c[k] for c in case_info for k in ("t_end_check", "t_start_check") if c[k] is not None]
    quad = [r for r in rows if r["quadrature_check"] is not None]
    summary = {
        "eps": eps,
        "quick": quick,
        "seed": seed,
        "n_cases": len(case_info),
        "n_points": len(rows),
        "n_points_in_theorem_range": len(in_range),
        "n_cases_with_empty_theorem_window": sum(1 for c in case_info if c["empty"]),
        "violations": len(violations),
        "violations_nontrivial": sum(1 for r in violations if r["init"] != r["target"]),
        "violations_trivial_init_eq_target": sum(1 for r in violations if r["init"] == r["target"]),
        "n_cases_trivial_init_eq_target": sum(1 for c in case_info if c["trivial"]),
        "violation_rule": (
            "tv_x - 3 * tv_x_se > bound at T with t_end_high <= T <= t_start_low (the estimator is biased "
            "upwards, so this can only over-report)"
        ),
        "endpoint_checks": len(checks),
        "endpoint_check_failures": sum(1 for ok in checks if not ok),
        "quadrature_checks": len(quad),
        "quadrature_check_failures": sum(1 for r in quad if not r["quadrature_check"]),
        # z-scores where the TV is resolvable (1e-3 < TV < 1 - 1e-3): near 0 the draws miss rare events.
        "max_quadrature_z": max(
            (
                abs(r["tv_x"] - r["tv_x_quadrature"]) / r["tv_x_se"]
                for r in quad
                if r["tv_x_se"] > 0 and 1e-3 < r["tv_x_quadrature"] < 1 - 1e-3
            ),
            default=None,
        ),
        "median_case_max_tv_over_bound_nontrivial": _median(
            [
                c["max_tv_over_bound"]
                for c in case_info
                if not c["trivial"] and c["max_tv_over_bound"] is not None
            ]
        ),
        "max_tv_over_bound_in_range": max(ratios) if ratios else None,
        "max_sampler_label_discrepancy": max(
            (abs(r["tv_label_sampled"] - r["tv_label"]) for r in rows if r["tv_label_sampled"] is not None),
            default=None,
        ),
        "plotted_quantity": (
            "TV(p^{S_init,T}, p^{S_target}) of the sample law (upper estimate, nested MC in the "
            "span of the means), with 3-standard-error bars, against eps(1+max(1,W)/sqrt2)"
        ),
        "runtime_s": runtime,
    }
    return summary


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else None


def _tightness(rows, case_info) -> None:
    """Per case: the largest ``TV / bound`` at grid points inside the theorem's range (None if none)."""
    for info in case_info:
        ratios = [r["tv_x"] / r["bound"] for r in rows if r["case"] == info["name"] and r["in_theorem_range"]]
        info["max_tv_over_bound"] = max(ratios) if ratios else None


def _run(eps, ks, dims, n_grid, n_outer, n_inner, n_tv, n_check, seed, quick):
    generator = torch.Generator().manual_seed(seed + 1)
    rows, case_info = [], []
    for case in validation_cases(ks, dims, seed, hierarchical=True):
        m = case.mixture
        tt = transition_times(m, case.init, case.target, eps, n=n_tv, generator=generator, tol=1e-3)
        closed = log_concave_times(m, case.init, case.target, eps)
        info = {
            "name": case.name,
            "K": case.K,
            "d": case.d,
            "separation": case.separation,
            "init": case.init,
            "target": case.target,
            "W": tt.W,
            "bound": tt.bound,
            "t_end": _num(tt.t_end),
            "t_end_low": _num(tt.t_end_low),
            "t_end_high": _num(tt.t_end_high),
            "t_start": _num(tt.t_start),
            "t_start_low": _num(tt.t_start_low),
            "t_start_high": _num(tt.t_start_high),
            "empty": tt.empty,
            "method": tt.method,
            "t_end_closed_upper": _num(closed.t_end_max),
            "t_start_closed_lower": _num(closed.t_start_min),
            "trivial": case.init == case.target,
            **_endpoint_checks(m, case, tt, eps, seed),
        }
        case_info.append(info)
        for t_hat in _time_grid(tt, closed, n_grid):
            fr = forward_reverse_tv(m, case.init, case.target, t_hat, n_outer, n_inner, generator)
            in_range = tt.t_end_high <= t_hat <= tt.t_start_low
            sampled = _sampled_label_tv(m, case.init, case.target, t_hat, n_check, generator)
            rows.append(
                {
                    "case": case.name,
                    "K": case.K,
                    "d": case.d,
                    "separation": case.separation,
                    "init": " ".join(map(str, case.init)),
                    "target": " ".join(map(str, case.target)),
                    "eps": eps,
                    "t_hat": t_hat,
                    "tv_x": fr["tv"],
                    "tv_x_se": fr["tv_se"],
                    "tv_label": fr["tv_label"],
                    "tv_label_sampled": None if math.isnan(sampled) else sampled,
                    "bound": tt.bound,
                    "t_end": tt.t_end,
                    "t_start": tt.t_start,  # the CSV keeps inf / -inf (+inf: S_target is everything)
                    "in_theorem_range": bool(in_range),
                    "violation": bool(in_range and fr["tv"] - 3.0 * fr["tv_se"] > tt.bound),
                    **_quadrature_check(m, case, t_hat, fr),
                }
            )
    return rows, case_info


def _write(out, result: ValidationResult, plot: bool) -> dict:
    """The CSV, the figure and the summary, replaced together (``atomic_paths``): a full disk or a kill
    while writing any of them leaves the previous three, never a new table beside an old figure."""
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result.rows[0].keys()))
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    names = {
        "csv": "validation.csv",
        **({"png": "validation.png"} if plot else {}),
        "summary": "summary.json",
    }
    files = {key: str(out / name) for key, name in names.items() if key != "summary"}
    summary = dict(result.summary)
    summary["cases"] = result.cases
    summary["files"] = dict(files)
    with atomic_paths(*(out / name for name in names.values())) as temps:
        temp = dict(zip(names, temps, strict=True))
        temp["csv"].write_text(buf.getvalue())
        if plot:
            _plot(temp["png"], result)
        temp["summary"].write_text(json_text(json.loads(json.dumps(summary))) + "\n")
    files["summary"] = str(out / "summary.json")
    return files


def _plot(path, result: ValidationResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = result.cases
    ncol = 6
    nrow = math.ceil(len(cases) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.4 * nrow), squeeze=False)
    by_case: dict[str, list[dict]] = {}
    for row in result.rows:
        by_case.setdefault(row["case"], []).append(row)
    for ax, info in zip(axes.flat, cases, strict=False):
        rows = by_case[info["name"]]
        t = [r["t_hat"] for r in rows]
        ax.errorbar(
            t,
            [r["tv_x"] for r in rows],
            yerr=[3 * r["tv_x_se"] for r in rows],
            fmt="o-",
            ms=2.5,
            lw=1,
            color="tab:blue",
            label=r"TV($q_{\hat T}$, $p^{target}$) $\pm 3$ SE",
        )
        ax.plot(t, [r["tv_label"] for r in rows], "--", lw=0.8, color="tab:green", label="label TV")
        lo = info["t_end"] if info["t_end"] is not None else 0.0
        hi = (
            info["t_start"]
            if info["t_start"] is not None
            else (max(t) if info["t_start"] is None and not info["empty"] else lo)
        )
        if not info["empty"]:
            ax.hlines(info["bound"], lo, min(hi, max(t)), color="tab:red", lw=1.5, label="bound")
        for key, style, name in (("t_end", "k:", r"$T_{end}$"), ("t_start", "k-.", r"$T_{start}$")):
            if info[key] is not None:
                ax.axvline(info[key], color=style[0], ls=style[1:], lw=0.8, label=name)
        for key in ("t_end_closed_upper", "t_start_closed_lower"):
            if info[key] is not None and 0 <= info[key] <= max(t):
                ax.axvline(info[key], color="tab:orange", ls="--", lw=0.8, label="closed-form bounds")
        ax.set_ylim(-0.02, 1.02)
        # 8 pt: at 90 dpi, shown at its own size, 6 pt was 7.5 px type
        ax.set_title(info["name"] + (" (empty)" if info["empty"] else ""), fontsize=8)
        ax.set_xlabel(r"noise level $\hat T$ (OU time)", fontsize=8)
        ax.set_ylabel("TV", fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(cases) :]:
        ax.axis("off")
    # One legend for all panels, below them: never over a curve.
    legend = {}
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=max(len(legend), 1), fontsize=8)
    s = result.summary
    fig.suptitle(
        f"Blink Thm 2 check, eps={s['eps']}: TV of the forward-reverse sample law vs bound (red); "
        f"T_end (dotted), T_start (dash-dot), closed forms (orange); violations: {s['violations']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, format="png", dpi=90)  # the caller replaces the files together
    plt.close(fig)
