"""Exact diffusion of mixtures: noised laws, scores, posteriors and exact posterior sampling.

Component ``i`` is ``N(mu_i, Sigma_i)``; under the OU forward process it becomes
``N(a mu_i, a^2 Sigma_i + s2 I)`` with ``a = e^{-t}``, ``s2 = 1 - e^{-2t}`` (docs/theory.md §2).
Every component covariance is stored diagonalised once, ``Sigma_i = U_i diag(lam_i) U_i^T`` (``U_i = I``
for isotropic and diagonal components), so the law at *every* time is diagonal in the same basis:
no factorisation is ever recomputed per ``t``. All densities are evaluated in log space, and all
sums over components run as an online log-sum-exp over chunks, so that an :class:`EmpiricalMixture`
of 10^5 points in d = 784 fits in memory.
"""

from __future__ import annotations

import math

import torch

from critwin._memory import check_memory
from critwin._validation import (
    check_device,
    check_finite,
    check_finite_from,
    check_positive_int,
    check_real_tensor,
    check_subset,
    check_time,
)
from critwin.clock import noised_variance, ou_coefficients
from critwin.mixtures._softmax import softmax_rows_
from critwin.mixtures._weights import WeightedComponents, check_weight_sum, renormalised

__all__ = ["GaussianMixture", "EmpiricalMixture"]

_LOG_2PI = math.log(2 * math.pi)
# Upper bound on the number of elements of the temporaries a chunk may create (~64 MiB in float32).
_CHUNK_ELEMENTS = 2**24
_ROW_CHUNK = 8192
# score_and_posterior's row blocks: at most this many elements per row of x or of the posterior (2 MiB
# per block in float32, the size of a core's L2 here), so that a block stays in cache from the first
# GEMM to the second. Half this size was 5-10% slower at n = 2e4, K = 64, d = 256 (fewer, longer calls).
_FUSED_ELEMENTS = 2**19


class GaussianMixture(WeightedComponents):
    """A finite mixture of Gaussians ``sum_i w_i N(mu_i, Sigma_i)`` with exact OU diffusion.

    Parameters
    ----------
    means : (K, d) tensor-like
        Component means.
    covs : None, scalar, (K,), (K, d) or (K, d, d)
        ``None``: identity; a scalar or a (K,) vector: isotropic ``c_i I``; (K, d): diagonal;
        (K, d, d): full symmetric positive semi-definite matrices.
    weights : (K,) tensor-like, optional
        Non-negative weights summing to 1 (uniform if omitted).

    Notes
    -----
    Computations run in the dtype and on the device of ``means`` (float32 unless given float64);
    inputs are cast to it. Use :meth:`to` to change them.

    Examples
    --------
    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> mix
    GaussianMixture(n_components=2, dim=1, cov_kind='iso', dtype=torch.float64)
    >>> x, component = mix.sample(4, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), component.tolist()
    ((4, 1), [1, 1, 0, 1])
    >>> mix.subset([0]).n_components  # the sub-mixture of a feature
    1
    """

    def __init__(self, means, covs=None, weights=None):
        means = check_real_tensor(means, "means")
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {tuple(means.shape)}")
        K, d = means.shape
        self._means = means
        self._log_weights = self._check_weights(weights, K, means)
        self._kind, self._var, self._evecs = self._check_covs(covs, K, d, means)

    # ------------------------------------------------------------------ construction and validation
    @staticmethod
    def _check_weights(weights, K, means) -> torch.Tensor:
        if weights is None:
            return torch.full((K,), -math.log(K), dtype=means.dtype, device=means.device)
        w = check_real_tensor(weights, "weights").to(dtype=means.dtype, device=means.device)
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) to match means, got {tuple(w.shape)}")
        check_finite(w, "weights")  # finite before the cast can still overflow float32
        check_weight_sum(w)
        return torch.log(w / w.sum())

    @staticmethod
    def _check_covs(covs, K, d, means):
        kw = dict(dtype=means.dtype, device=means.device)
        if covs is None:
            return "iso", torch.ones(K, **kw), None
        c = check_real_tensor(covs, "covs").to(**kw)
        check_finite(c, "covs")
        if c.ndim == 0:
            c = c.expand(K).clone()
        if c.shape == (K,):
            if (c < 0).any():
                raise ValueError("covs must be non-negative variances, got a negative value")
            return "iso", c, None
        if c.shape == (K, d):
            if (c < 0).any():
                raise ValueError("covs must be non-negative variances, got a negative diagonal entry")
            return "diag", c, None
        if c.shape == (K, d, d):
            scale = c.abs().amax().clamp_min(1e-30)
            if (c - c.transpose(1, 2)).abs().amax() > 1e-6 * scale:
                raise ValueError("covs must be symmetric matrices")
            lam, U = torch.linalg.eigh(0.5 * (c + c.transpose(1, 2)))
            tol = 1e-6 if c.dtype == torch.float32 else 1e-10
            if (lam < -tol * scale).any():
                raise ValueError(
                    f"covs must be positive semi-definite, got an eigenvalue {lam.min().item():.4g}"
                )
            return "full", lam.clamp_min(0), U
        raise ValueError(
            f"covs must be None, a scalar, or of shape ({K},), ({K}, {d}) or ({K}, {d}, {d}); "
            f"got {tuple(c.shape)}"
        )

    @classmethod
    def _from_parts(cls, means, log_weights, kind, var, evecs):
        obj = cls.__new__(cls)
        obj._means, obj._log_weights, obj._kind, obj._var, obj._evecs = means, log_weights, kind, var, evecs
        return obj

    def _new(self, means, log_weights, var, evecs=None):
        """A mixture of the same family (GaussianMixture) with other parameters."""
        return GaussianMixture._from_parts(means, log_weights, self._kind, var, evecs)

    # ------------------------------------------------------------------ properties
    @property
    def means(self) -> torch.Tensor:
        """(K, d) component means."""
        return self._means

    @property
    def dim(self) -> int:
        return self._means.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self._means.dtype

    @property
    def device(self) -> torch.device:
        return self._means.device

    @property
    def cov_kind(self) -> str:
        """``"iso"``, ``"diag"`` or ``"full"``."""
        return self._kind

    @property
    def covs(self) -> torch.Tensor:
        """Covariances in the kind they were given: (K,), (K, d) or (K, d, d)."""
        if self._kind == "full":
            return (self._evecs * self._var.unsqueeze(1)) @ self._evecs.transpose(1, 2)
        return self._var

    def cov_matrices(self) -> torch.Tensor:
        """(K, d, d) dense covariance matrices."""
        if self._kind == "full":
            return self.covs
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        diag = self._var.unsqueeze(1).expand(-1, self.dim) if self._kind == "iso" else self._var
        return diag.unsqueeze(-1) * eye

    def to(self, dtype=None, device=None) -> GaussianMixture:
        """The same mixture with parameters in another dtype and/or on another device."""
        device = None if device is None else check_device(device)
        conv = {"dtype": dtype or self.dtype, "device": device or self.device}
        evecs = None if self._evecs is None else self._evecs.to(**conv)
        return type(self)._from_parts(
            self._means.to(**conv), self._log_weights.to(**conv), self._kind, self._var.to(**conv), evecs
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_components={self.n_components}, dim={self.dim}, "
            f"cov_kind={self._kind!r}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ laws derived from this one
    def noised(self, t) -> GaussianMixture:
        """The exact law of ``X_t`` when ``X_0`` follows this mixture."""
        t = check_time(t)
        a, _ = ou_coefficients(t)
        return self._new(a * self._means, self._log_weights, noised_variance(self._var, t), self._evecs)

    def subset(self, components) -> GaussianMixture:
        """The sub-mixture ``p^S`` over the component indices ``components`` (weights renormalised)."""
        idx = check_subset(components, self.n_components, "components")
        sel = torch.tensor(idx, device=self.device)
        logw = renormalised(self._log_weights[sel], idx)
        evecs = None if self._evecs is None else self._evecs[sel]
        return self._new(self._means[sel], logw, self._var[sel], evecs)

    # ------------------------------------------------------------------ input handling and chunking
    def _prepare(self, x, name="x") -> tuple[torch.Tensor, tuple[int, ...]]:
        # NaN/inf rows would come back as NaN densities and scores without any error. Scanning x for them
        # costs as much as the densities themselves, so each method refuses them from an (n,) summary it
        # computes anyway (check_finite_from): a NaN or inf coordinate makes every log density of its row
        # NaN or -inf.
        x = check_real_tensor(x, name, values=False)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape (..., {self.dim}), got {tuple(x.shape)}")
        x = x.to(dtype=self.dtype, device=self.device)
        return x.reshape(-1, self.dim), x.shape[:-1]

    def _heaviest(self) -> int:
        """The component of largest weight: its log density is finite at every finite point (weight > 0)."""
        return int(torch.argmax(self._log_weights))

    def _check_t_defined(self, t: float) -> None:
        if t == 0.0 and bool((self._var == 0).any()):
            raise ValueError(
                "t must be > 0 for a mixture with singular (or zero) covariances: its density at t = 0 "
                "is not defined"
            )

    def _chunks(self, n: int):
        """Row chunk size and component chunk size keeping temporaries under the budget."""
        K, d = self.n_components, self.dim
        per_pair = d if self._kind == "full" else 1
        k_chunk = max(1, min(K, _CHUNK_ELEMENTS // (per_pair * 64)))
        # Rows are also capped so that (rows, d) temporaries are reused by the allocator, not re-mapped.
        rows = max(1, min(n, _ROW_CHUNK, _CHUNK_ELEMENTS // (k_chunk * per_pair)))
        return rows, k_chunk

    def _time_terms(self, t: float, sl: slice):
        a, s2 = ou_coefficients(t)
        return a, s2, noised_variance(self._var[sl], t)

    def _density_terms(self, t: float, sl: slice):
        """Constants of the isotropic/diagonal log densities of components ``sl`` at time ``t``, computed
        once per call: ``log w_i + log p_t^i(x) = bias_i + scale_i max(0, q_i(x) - 2 x.c_i + m_i)``.

        Isotropic: ``c_i = a mu_i``, ``q_i(x) = |x|^2``, ``m_i = |c_i|^2``, ``scale_i = -1 / (2 v_i(t))``.
        Diagonal: ``c_i = a mu_i / v_i(t)``, ``q_i(x) = x^2 . (1 / v_i(t))``, ``m_i = c_i . a mu_i``,
        ``scale_i = -1/2``. ``bias_i = log w_i - (log det(v_i(t)) + d log 2 pi) / 2``. Returns
        ``(c, inv, scale, m, bias)`` with ``inv = 1 / v_i(t)`` ((k, d), diagonal) or None (isotropic).
        """
        a, s2, var_t = self._time_terms(t, sl)
        mu = a * self._means[sl]
        if self._kind == "iso":
            cross, inv, scale = mu, None, -0.5 / var_t
            log_det = self.dim * torch.log(var_t)
        else:
            inv = 1.0 / var_t
            cross, scale = mu * inv, torch.tensor(-0.5, dtype=self.dtype, device=self.device)
            log_det = torch.log(var_t).sum(1)
        bias = self._log_weights[sl] - 0.5 * (log_det + self.dim * _LOG_2PI)
        return cross, inv, scale, (mu * cross).sum(1), bias

    def _log_density_into(self, out, x: torch.Tensor, x_sq: torch.Tensor, terms) -> torch.Tensor:
        """``log w_i + log p_t^i(x)`` (m, k) from :meth:`_density_terms`; written into ``out`` (a contiguous
        (m, k) tensor) or a new tensor when ``out`` is None. ``x_sq`` is :meth:`_row_square` of ``x``."""
        cross, inv, scale, m, bias = terms
        # |x - mu|^2 = |x|^2 - 2 x.mu + |mu|^2 as one fused GEMM: the irreducible (n x d)(d x k) work.
        if out is None:
            out = torch.addmm(m.unsqueeze(0), x, cross.T, alpha=-2.0)
        else:
            torch.addmm(m.unsqueeze(0), x, cross.T, alpha=-2.0, out=out)
        if inv is None:
            out.add_(x_sq.unsqueeze(1))
        else:
            out.addmm_(x_sq, inv.T)
        return torch.addcmul(bias, out.clamp_(min=0), scale, out=out)

    def _weighted_log_density(self, x: torch.Tensor, t: float, sl: slice, x_sq=None, residuals: bool = True):
        """``log w_i + log p_t^i(x)`` for components ``sl``: (m, k); for full covariances also the
        residuals in each eigenbasis divided by the noised eigenvalues, ``U_i^T (x - a mu_i) / lam_i(t)``.

        ``x_sq`` (m,) is ``|x|^2`` (isotropic) or ``x^2`` (diagonal), computed once per row chunk.
        ``residuals=False``: the scaled residuals are not needed (densities only; returned as None), so the
        (m, k, d) rotation is squared in place instead of copied twice.
        """
        if x_sq is None:
            x_sq = self._row_square(x)
        if self._kind != "full":
            return self._log_density_into(None, x, x_sq, self._density_terms(t, sl)), None
        a, s2, var_t = self._time_terms(t, sl)
        mu = a * self._means[sl]
        d = self.dim
        scaled = None
        # Rotate x into every component's eigenbasis with one (m x d)(d x k*d) GEMM; z is (m, k, d).
        U = self._evecs[sl]
        k = U.shape[0]
        z = (x @ U.permute(1, 0, 2).reshape(d, k * d)).view(x.shape[0], k, d)
        z.sub_(torch.bmm(mu.unsqueeze(1), U).squeeze(1))
        if residuals:
            scaled = z / var_t
            sq = (scaled * z).sum(-1)
        else:
            sq = z.square_().div_(var_t).sum(-1)
        log_det = torch.log(var_t).sum(1)
        return sq.add_(log_det + d * _LOG_2PI).mul_(-0.5).add_(self._log_weights[sl]), scaled

    def _row_square(self, x):
        if self._kind == "iso":
            # One reduction, no (m, d) temporary (vecdot and (x * x).sum(1) are 4-5x slower).
            return torch.linalg.vector_norm(x, dim=-1).square_()
        return x * x if self._kind == "diag" else None

    # ------------------------------------------------------------------ densities and posteriors
    def component_log_prob(self, x, t=0.0) -> torch.Tensor:
        """``log p_t^i(x)`` for every component (weights not included).

        Parameters
        ----------
        x : (..., d) points.  t : OU time.

        Returns
        -------
        (..., K) tensor.
        """
        logits = self._logits(x, t)
        return logits - self._log_weights

    def _logits(self, x, t) -> torch.Tensor:
        t = check_time(t)
        self._check_t_defined(t)
        flat, lead = self._prepare(x)
        return self._flat_logits(flat, t).reshape(*lead, self.n_components)

    def _flat_logits(self, flat: torch.Tensor, t: float, name: str = "x") -> torch.Tensor:
        """(n, K) ``log w_i + log p_t^i(x)`` of checked-shape rows ``flat``; NaN/inf rows refused."""
        rows, k_chunk = self._chunks(flat.shape[0])
        K = self.n_components
        out = torch.empty(flat.shape[0], K, dtype=self.dtype, device=self.device)
        for r0 in range(0, flat.shape[0], rows):
            xr = flat[r0 : r0 + rows]
            x_sq = self._row_square(xr)
            for k0 in range(0, K, k_chunk):
                sl = slice(k0, min(K, k0 + k_chunk))
                out[r0 : r0 + rows, sl] = self._weighted_log_density(xr, t, sl, x_sq, residuals=False)[0]
        check_finite_from(out[:, self._heaviest()], flat, name)
        return out

    def log_prob(self, x, t=0.0) -> torch.Tensor:
        """Log density of the mixture's law at OU time ``t``: (...,)."""
        return self._reduce(x, t, want="log_prob")

    def posterior(self, x, t) -> torch.Tensor:
        """Component responsibilities ``pi_t(i | x)``: (..., K), rows sum to 1."""
        return torch.softmax(self._logits(x, t), dim=-1)

    def score(self, x, t) -> torch.Tensor:
        """``grad_x log p_t(x)``: (..., d)."""
        return self._reduce(x, t, want="score")

    def denoise(self, x, t) -> torch.Tensor:
        """Posterior mean ``E[X_0 | X_t = x]`` (Tweedie): (..., d)."""
        return self._reduce(x, t, want="denoise")

    def score_and_posterior(self, x, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Score (..., d) and responsibilities (..., K) from one evaluation of the component densities.

        For isotropic and diagonal components this is the irreducible work: one (n x d)(d x K) product
        for the squared distances and one (n x K)(K x d) product for the posterior-weighted means, done in
        row blocks that stay in cache (a block whose posteriors are all one-hot gathers the means instead
        of multiplying: the same numbers). Responsibilities below twice the dtype's smallest normal number
        relative to their row's largest (2.4e-38 in float32) are returned as exactly 0, where
        :meth:`posterior` may return a subnormal number.
        """
        if self._kind == "full":
            return self.score(x, t), self.posterior(x, t)
        t = check_time(t)
        self._check_t_defined(t)
        flat, lead = self._prepare(x)
        n, d, K = flat.shape[0], self.dim, self.n_components
        a, s2, var_t = self._time_terms(t, slice(None))
        terms = self._density_terms(t, slice(None))
        neg_inv = -1.0 / var_t
        # score = a sum_i p_i mu_i / v_i - x sum_i p_i / v_i: the first sum is the GEMM p @ pull, added in
        # place (beta = 1) to the second term written first.
        pull = -a * self._means * (neg_inv if neg_inv.ndim == 2 else neg_inv.unsqueeze(1))
        post = torch.empty(n, K, dtype=self.dtype, device=self.device)
        score = torch.empty(n, d, dtype=self.dtype, device=self.device)
        peaks = torch.empty(n, dtype=self.dtype, device=self.device)
        # Row blocks small enough that a block of x, of the score and of the posterior stay in cache
        # between the two GEMMs.
        rows = max(1, min(n, _ROW_CHUNK, _FUSED_ELEMENTS // max(d, K)))
        labels = torch.arange(K, dtype=self.dtype, device=self.device)
        # p @ labels gives a one-hot row's label exactly while every label is an exact integer of the dtype
        # (up to 2**24 in float32, 2048 in float16).
        exact_labels = K <= 2 / torch.finfo(self.dtype).eps
        count = torch.float32 if self.dtype.itemsize < 4 else self.dtype
        for r0 in range(0, n, rows):
            xr, p, out = flat[r0 : r0 + rows], post[r0 : r0 + rows], score[r0 : r0 + rows]
            # |x|^2 or x^2 per block: the reduction brings the block into cache for the GEMM that follows
            # (x is read from memory once; one reduction over all rows first was 4% slower in all).
            self._log_density_into(p, xr, self._row_square(xr), terms)
            # One-hot rows sum to exactly 1 (cheap to rule out), then have one nonzero entry each: ceil maps
            # every entry of [0, 1] to 0 or 1, so the block's ceil-sum counts its nonzero entries (exact:
            # a block has at most 2**19 entries, summed in at least float32; a NaN row makes it NaN).
            # 6x faster than count_nonzero.
            if (
                softmax_rows_(p, peaks[r0 : r0 + rows])
                and exact_labels
                and float(torch.ceil(p).sum(dtype=count)) == p.shape[0]
            ):
                # Every row is one-hot (each has a nonzero largest entry): p @ B is the gather B[argmax],
                # the same numbers as the GEMM (1 * b + 0s) for a fifth of the work. The gathered block is
                # a temporary the allocator hands back warm each block, so out is written once.
                k = (p @ labels).long()  # exact: 1 * k + 0s (argmax is 10x slower on rows this short)
                spread = neg_inv[k]
                torch.addcmul(
                    torch.index_select(pull, 0, k),
                    xr,
                    spread if spread.ndim == 2 else spread.unsqueeze(1),
                    out=out,
                )
                continue
            spread = p @ neg_inv
            torch.mul(xr, spread if spread.ndim == 2 else spread.unsqueeze(1), out=out)
            out.addmm_(p, pull)
        # A NaN or infinite coordinate makes its row's largest log density NaN or -inf.
        check_finite_from(peaks, flat, "x")
        return score.reshape(*lead, d), post.reshape(*lead, K)

    def score_and_denoise(self, x, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Both in one pass over the components."""
        return self._reduce(x, t, want="both")

    def _reduce(self, x, t, want: str):
        """One online-softmax pass over component chunks accumulating what ``want`` needs."""
        t = check_time(t)
        self._check_t_defined(t)
        flat, lead = self._prepare(x)
        n, d, K = flat.shape[0], self.dim, self.n_components
        rows, k_chunk = self._chunks(n)
        a, s2 = ou_coefficients(t)
        lse = torch.empty(n, dtype=self.dtype, device=self.device)
        score = torch.empty_like(flat) if want in ("score", "both") else None
        denoised = torch.empty_like(flat) if want in ("denoise", "both") else None
        for r0 in range(0, n, rows):
            xr = flat[r0 : r0 + rows]
            m = xr.shape[0]
            run_max = torch.full((m,), -math.inf, dtype=self.dtype, device=self.device)
            total = torch.zeros(m, dtype=self.dtype, device=self.device)
            acc = None
            x_sq = self._row_square(xr)
            for k0 in range(0, K, k_chunk):
                sl = slice(k0, min(K, k0 + k_chunk))
                logits, z = self._weighted_log_density(xr, t, sl, x_sq, residuals=want != "log_prob")
                new_max = torch.maximum(run_max, logits.amax(1))
                safe_max = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
                rescale = torch.exp(run_max - safe_max)
                p = torch.exp(logits - safe_max.unsqueeze(1))
                total = total * rescale + p.sum(1)
                run_max = new_max
                if want != "log_prob":
                    terms = self._moment_terms(p, z, t, sl, want)
                    if acc is None:
                        acc = terms
                    else:
                        acc = tuple(
                            None
                            if old is None
                            else old * (rescale.unsqueeze(1) if old.ndim == 2 else rescale) + new
                            for old, new in zip(acc, terms, strict=True)
                        )
            lse[r0 : r0 + m] = run_max + torch.log(total)
            if want == "log_prob":
                continue
            score_r, denoise_r = self._normalised_moments(acc, total, xr, a, s2, want)
            if score is not None:
                score[r0 : r0 + m] = score_r
            if denoised is not None:
                denoised[r0 : r0 + m] = denoise_r
        check_finite_from(lse, flat, "x")
        if want == "log_prob":
            return lse.reshape(lead)
        shape = (*lead, d)
        if want == "score":
            return score.reshape(shape)
        if want == "denoise":
            return denoised.reshape(shape)
        return score.reshape(shape), denoised.reshape(shape)

    def _normalised_moments(self, acc, total, xr, a: float, s2: float, want: str):
        """Score and denoiser rows from the accumulated sums of :meth:`_moment_terms` and the softmax
        normaliser ``total`` (m,); an entry is None where that sum was not accumulated."""
        norm = total.unsqueeze(1)
        if self._kind == "full":
            return tuple(None if v is None else v / norm for v in acc)
        inv_var, mean_over_var, sig_over_var = (v / (norm if v.ndim == 2 else total) for v in acc)
        if inv_var.ndim == 1:
            inv_var, sig_over_var = inv_var.unsqueeze(1), sig_over_var.unsqueeze(1)
        score = denoised = None
        if want != "denoise":
            score = torch.addcmul(a * mean_over_var, xr, inv_var, value=-1.0)
        if want != "score":
            denoised = torch.addcmul(s2 * mean_over_var, xr, sig_over_var, value=a)
        return score, denoised

    def _moment_terms(self, p, z, t, sl, want: str = "both"):
        """Unnormalised posterior-weighted sums for one chunk of components.

        Isotropic/diagonal: sum p/v_t, sum p mu/v_t, sum p Sigma/v_t (score = -x A + a B,
        denoise = s2 B + a x C). Full: the score and denoise sums themselves, in the data basis.
        """
        a, s2, var_t = self._time_terms(t, sl)
        mu = self._means[sl]
        if self._kind == "full":
            # Back to the data basis with one (m x k*d)(k*d x d) GEMM per sum.
            U = self._evecs[sl]
            k, d = U.shape[0], self.dim
            back = U.transpose(1, 2).reshape(k * d, d)
            weighted = z * p.unsqueeze(-1)
            score_sum = -(weighted.reshape(-1, k * d) @ back) if want != "denoise" else None
            if want == "score":
                return score_sum, None
            shrink = (weighted.mul_(a * self._var[sl])).reshape(-1, k * d) @ back
            return score_sum, shrink.addmm_(p, mu)
        inv = 1.0 / var_t
        return p @ inv, p @ (mu * (inv if inv.ndim == 2 else inv.unsqueeze(1))), p @ (self._var[sl] * inv)

    # ------------------------------------------------------------------ sampling
    def _generator_device_check(self, generator):
        if generator is not None and torch.device(generator.device).type != self.device.type:
            raise ValueError(
                f"generator is on {generator.device} but the mixture is on {self.device}; use a generator "
                "on the mixture's device"
            )

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` points: returns ``(x (n, d), labels (n,))``."""
        n = check_positive_int(n, "n")
        # The draw, its noise and the gathered means: three (n, d) tensors.
        check_memory(3 * n * self.dim * self._means.element_size(), f"sample(n={n}) in dimension {self.dim}")
        self._generator_device_check(generator)
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.dtype, device=self.device)
        return self._gaussian_draw(labels, self._means[labels], self._var, noise), labels

    def _gaussian_draw(self, labels, centre, var, noise):
        """``centre + Sigma_l^{1/2} noise`` where component ``l``'s covariance has eigenvalues ``var[l]``."""
        if self._kind == "iso":
            return centre + var[labels].sqrt().unsqueeze(1) * noise
        if self._kind == "diag":
            return centre + var[labels].sqrt() * noise
        out = centre.clone()
        for k in labels.unique().tolist():
            rows = labels == k
            out[rows] += (noise[rows] * var[k].sqrt()) @ self._evecs[k].T
        return out

    def sample_posterior(self, y, t, generator: torch.Generator | None = None):
        """Exact draw of ``X_0 | X_t = y``.

        Parameters
        ----------
        y : (n, d) noised points.  t : OU time.  generator : torch.Generator.

        Returns
        -------
        x0 : (n, d) and labels : (n,) the component each draw came from (drawn from ``pi_t(.|y)``).
        """
        t = check_time(t)
        self._check_t_defined(t)
        self._generator_device_check(generator)
        flat, _ = self._prepare(y, "y")
        n, K = flat.shape[0], self.n_components
        rows, k_chunk = self._chunks(n)
        labels = torch.empty(n, dtype=torch.long, device=self.device)
        # Gumbel-max over component chunks: an exact categorical draw without the (n, K) matrix.
        for r0 in range(0, n, rows):
            xr = flat[r0 : r0 + rows]
            best = torch.full((xr.shape[0],), -math.inf, dtype=self.dtype, device=self.device)
            arg = torch.zeros(xr.shape[0], dtype=torch.long, device=self.device)
            x_sq = self._row_square(xr)
            for k0 in range(0, K, k_chunk):
                sl = slice(k0, min(K, k0 + k_chunk))
                logits = self._weighted_log_density(xr, t, sl, x_sq, residuals=False)[0]
                u = torch.rand(logits.shape, generator=generator, dtype=self.dtype, device=self.device)
                keyed = logits - torch.log(-torch.log(u.clamp_min(torch.finfo(self.dtype).tiny)))
                value, index = keyed.max(1)
                better = value > best
                best = torch.where(better, value, best)
                arg = torch.where(better, index + k0, arg)
            labels[r0 : r0 + xr.shape[0]] = arg
            check_finite_from(best, xr, "y")  # the largest Gumbel-perturbed log density of each row
        a, s2 = ou_coefficients(t)
        var_t = noised_variance(self._var, t)
        mu = self._means[labels]
        residual = flat - a * mu
        gain = a * self._var / var_t  # posterior mean = mu + U diag(gain) U^T (y - a mu)
        post_var = self._var * s2 / var_t
        if self._kind == "full":
            U = self._evecs[labels]
            shift = torch.einsum("nde,ne->nd", U, gain[labels] * torch.einsum("nde,nd->ne", U, residual))
        else:
            g = gain[labels]
            shift = (g.unsqueeze(1) if g.ndim == 1 else g) * residual
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.dtype, device=self.device)
        x0 = self._gaussian_draw(labels, mu + shift, post_var, noise)
        return x0.reshape(torch.as_tensor(y).shape), labels

    def sample_reverse(self, x_t, t, s, generator: torch.Generator | None = None):
        """Exact draw of ``X_s | X_t = x_t`` for ``0 <= s < t`` (no discretisation error).

        The pair (X_s, X_t) is a forward process started from the law at time ``s``, so this is the
        posterior draw of :meth:`noised` ``(s)`` after time ``t - s``.

        Returns
        -------
        x_s : (n, d) and labels : (n,) the component of each draw.
        """
        t = check_time(t)
        s = check_time(s, "s")
        if not s < t:
            raise ValueError(f"s must be smaller than t (reverse time runs down), got s={s}, t={t}")
        return self.noised(s).sample_posterior(x_t, t - s, generator)

    def bayes_label(self, x) -> torch.Tensor:
        """The most probable component of each point at t = 0 (nearest point for a Dirac mixture)."""
        if bool((self._var == 0).all()):
            # The t -> 0 limit of the posterior of a Dirac mixture is the nearest support point.
            return self._logits(x, 1e-6).argmax(-1)
        return self._logits(x, 0.0).argmax(-1)


class EmpiricalMixture(GaussianMixture):
    """The Dirac mixture of a finite data set: the exact score of a model that memorises it.

    Parameters
    ----------
    points : (N, d) tensor-like.  weights : (N,) optional (uniform by default).

    Notes
    -----
    At t > 0 it is an isotropic Gaussian mixture with variance ``1 - e^{-2t}`` around ``e^{-t} x_j``.
    Densities at t = 0 are undefined (``ValueError``). All passes over points are chunked.

    Examples
    --------
    >>> import torch, critwin
    >>> points = torch.tensor([[0.0], [1.0], [5.0]], dtype=torch.float64)
    >>> data = critwin.EmpiricalMixture(points)
    >>> data
    EmpiricalMixture(n_components=3, dim=1, cov_kind='iso', dtype=torch.float64)
    >>> data.denoise(torch.tensor([[0.98]], dtype=torch.float64), 0.01).round(decimals=3).tolist()
    [[1.0]]
    """

    def __init__(self, points, weights=None):
        points = check_real_tensor(points, "points")
        if not points.is_floating_point():
            points = points.to(torch.get_default_dtype())
        if points.ndim != 2 or points.shape[0] == 0:
            raise ValueError(f"points must have shape (N, d) with N >= 1, got {tuple(points.shape)}")
        super().__init__(points, torch.zeros(points.shape[0], dtype=points.dtype), weights)

    @property
    def points(self) -> torch.Tensor:
        return self._means

    def _new(self, means, log_weights, var, evecs=None):
        if bool((var == 0).all()):
            return EmpiricalMixture._from_parts(means, log_weights, "iso", var, None)
        return GaussianMixture._from_parts(means, log_weights, "iso", var, None)

    def nearest(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of and Euclidean distance to the nearest point for each row of ``x``: ((n,), (n,))."""
        flat, lead = self._prepare(x)
        best = torch.full((flat.shape[0],), math.inf, dtype=self.dtype, device=self.device)
        arg = torch.zeros(flat.shape[0], dtype=torch.long, device=self.device)
        step = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[0]))
        for k0 in range(0, self.n_components, step):
            pts = self._means[k0 : k0 + step]
            dist = torch.cdist(flat, pts)
            value, index = dist.min(1)
            better = value < best
            best = torch.where(better, value, best)
            arg = torch.where(better, index + k0, arg)
        check_finite_from(best, flat, "x")
        return arg.reshape(lead), best.reshape(lead)
