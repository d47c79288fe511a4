"""Mixtures of product-categorical laws over token sequences with exact discrete noise (docs/discrete.md).

Component ``k`` draws a sequence of ``L`` tokens independently, token ``l`` from ``probs[k, l]`` over a
vocabulary of ``V`` tokens (a Dirac string is the special case of one-hot rows). Three forward processes,
each exact because positions are independent given the component:

- ``"mask"`` (absorbing diffusion): each token is replaced by the mask id ``V`` independently with
  probability ``kappa`` in [0, 1] (0: data; 1: everything masked);
- ``"uniform"``: each token is resampled uniformly from the ``V`` tokens independently with probability
  ``kappa`` (it may land on its own value; no mask id appears);
- ``"autoregressive"``: the level is an integer ``i`` in [0, L], the number of hidden positions at the
  *end* of the sequence (the first ``L - i`` tokens are kept, the last ``i`` carry the mask id ``V``).

**The clock.** ``clock`` is ``"kappa"`` for masking and uniform noise and ``"hidden"`` for
autoregression. Both play the role of OU time: the noised laws lose information as the level grows (a
level-``s`` law noised further is the level-``t`` law for ``s < t``), so every TV between noised
sub-mixtures is non-increasing in the level, ``level = 0`` is the data and the top of
``level_range`` forgets everything. There is no conversion to OU time: the processes differ, and every
result on a discrete mixture says which clock its times are on.

Reverse transitions are exact too: the component is drawn from its posterior, then every hidden (or
resampled) position from its posterior given the component. Noised tokens (``y``) use the mask id ``V``
where the noise hides a token; for autoregressive noise the last ``i`` positions of ``y`` are ignored
whatever they hold (any id in ``[0, V]``).
"""

from __future__ import annotations

import math

import torch

from critwin._memory import check_memory, chunk_rows
from critwin._validation import (
    check_generator,
    check_number,
    check_positive_int,
    check_real_tensor,
    check_subset,
    numeric_array,
)
from critwin.mixtures._weights import WeightedComponents, check_weight_sum, renormalised

__all__ = ["CategoricalMixture", "NOISES", "CLOCKS"]

NOISES = ("mask", "uniform", "autoregressive")
"""The forward processes a :class:`CategoricalMixture` knows."""
CLOCKS = {"mask": "kappa", "uniform": "kappa", "autoregressive": "hidden"}
"""The clock (the meaning of a level) of each noise."""


def _integer_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a long tensor; ValueError naming ``name`` for floats, booleans or non-numbers."""
    if isinstance(value, torch.Tensor):
        out = value.detach()
    else:
        what = "integer token ids (a tensor or nested lists of equal lengths)"
        out = torch.as_tensor(numeric_array(value, name, "biuf", what))
    if out.dtype == torch.bool or out.is_floating_point() or out.is_complex():
        raise ValueError(f"{name} must be integer token ids, got dtype {out.dtype}")
    return out.long()


class CategoricalMixture(WeightedComponents):
    """A mixture ``sum_k w_k prod_l Cat(probs[k, l])`` over sequences of ``L`` tokens, with exact noise.

    Parameters
    ----------
    probs : (K, L, V) tensor-like
        Non-negative; every row ``probs[k, l]`` sums to 1 (within 1e-6; renormalised).
    weights : (K,) tensor-like, optional
        Non-negative mixture weights summing to 1 (uniform if omitted).
    noise : ``"mask"`` (default), ``"uniform"`` or ``"autoregressive"`` (module notes).

    Notes
    -----
    Stored in float64. Levels are ``kappa`` in [0, 1] (mask, uniform) or an integer number of hidden
    positions in [0, L] (autoregressive); see :meth:`check_level`.

    Examples
    --------
    >>> import torch
    >>> from critwin import CategoricalMixture
    >>> m = CategoricalMixture.from_strings([[0, 1, 1], [1, 1, 0]], vocab_size=2)
    >>> y = torch.tensor([[2, 1, 2]])            # positions 0 and 2 masked (mask id = V = 2)
    >>> m.posterior(y, 0.5)                      # both strings agree with the visible token
    tensor([[0.5000, 0.5000]], dtype=torch.float64)
    >>> m.posterior(torch.tensor([[0, 2, 2]]), 0.5)
    tensor([[1., 0.]], dtype=torch.float64)
    """

    def __init__(self, probs, weights=None, noise: str = "mask"):
        probs = check_real_tensor(probs, "probs", torch.float64)
        if probs.ndim != 3 or min(probs.shape) == 0:
            raise ValueError(f"probs must have shape (K, L, V) with K, L, V >= 1, got {tuple(probs.shape)}")
        if (probs < 0).any():
            raise ValueError(f"probs must be non-negative, got {probs.min().item():.4g}")
        sums = probs.sum(-1)
        worst = (sums - 1).abs().argmax()
        k, pos = divmod(int(worst), probs.shape[1])
        if abs(float(sums[k, pos]) - 1.0) > 1e-6:
            raise ValueError(
                f"probs[k, l] must sum to 1 over the V tokens, got {float(sums[k, pos]):.6g} "
                f"for k={k}, l={pos}"
            )
        self._probs = probs / sums.unsqueeze(-1)
        self._log_weights = self._check_weights(weights, probs.shape[0])
        self._noise = self._check_noise(noise)
        self._dirac = bool(((self._probs == 0) | (self._probs == 1)).all())

    @staticmethod
    def _check_noise(noise) -> str:
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        return noise

    @staticmethod
    def _check_weights(weights, K: int) -> torch.Tensor:
        if weights is None:
            return torch.full((K,), -math.log(K), dtype=torch.float64)
        w = check_real_tensor(weights, "weights", torch.float64).flatten()
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) (one per component), got {w.numel()} entries")
        return torch.log(w / check_weight_sum(w))

    @classmethod
    def from_strings(cls, strings, weights=None, vocab_size=None, noise: str = "mask") -> CategoricalMixture:
        """The mixture of Dirac strings: component ``k`` is the sequence ``strings[k]``.

        Parameters
        ----------
        strings : (K, L) integer token ids in ``[0, vocab_size)`` (tensor or list of lists).
        weights : (K,) optional (uniform by default).
        vocab_size : V (required: it fixes the mask id ``V`` and uniform noise's vocabulary).
        noise : as in the constructor.

        Examples
        --------
        >>> from critwin import CategoricalMixture
        >>> m = CategoricalMixture.from_strings([[0, 0, 1], [1, 0, 1]], vocab_size=3)
        >>> m.n_components, m.length, m.vocab_size, m.mask_id
        (2, 3, 3, 3)
        """
        if vocab_size is None:
            raise ValueError("vocab_size is required (the number V of token ids; the mask id is V)")
        V = check_positive_int(vocab_size, "vocab_size")
        tokens = _integer_tensor(strings, "strings")
        if tokens.ndim != 2 or min(tokens.shape) == 0:
            raise ValueError(f"strings must have shape (K, L) with K, L >= 1, got {tuple(tokens.shape)}")
        K, L = tokens.shape
        # the (K, L, V) one-hot table (long, then float64) and the constructor's normalised copy
        check_memory(
            3 * 8 * K * L * V, f"from_strings with vocab_size={V}: a (K, L, V) = ({K}, {L}, {V}) table"
        )
        bad = (tokens < 0) | (tokens >= V)
        if bad.any():
            k, pos = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"strings must hold token ids in [0, vocab_size) = [0, {V}), got {int(tokens[k, pos])} "
                f"at string {k}, position {pos}"
            )
        probs = torch.nn.functional.one_hot(tokens, V).to(torch.float64)
        return cls(probs, weights, noise)

    @classmethod
    def _from_parts(cls, probs, log_weights, noise, dirac) -> CategoricalMixture:
        obj = cls.__new__(cls)
        obj._probs, obj._log_weights, obj._noise, obj._dirac = probs, log_weights, noise, dirac
        return obj

    # ------------------------------------------------------------------ properties
    @property
    def probs(self) -> torch.Tensor:
        """(K, L, V) per-position token probabilities of every component."""
        return self._probs

    @property
    def length(self) -> int:
        """L, the sequence length."""
        return self._probs.shape[1]

    @property
    def vocab_size(self) -> int:
        """V, the number of token ids (the mask id is V)."""
        return self._probs.shape[2]

    @property
    def mask_id(self) -> int:
        """The id ``V`` that marks a hidden token."""
        return self.vocab_size

    @property
    def noise(self) -> str:
        return self._noise

    @property
    def clock(self) -> str:
        """``"kappa"`` (mask, uniform: the per-token noise probability) or ``"hidden"`` (autoregressive:
        the number of hidden final positions)."""
        return CLOCKS[self._noise]

    @property
    def level_range(self) -> tuple:
        """``(0.0, 1.0)`` for kappa, ``(0, L)`` for hidden positions."""
        return (0, self.length) if self._noise == "autoregressive" else (0.0, 1.0)

    @property
    def is_dirac(self) -> bool:
        """True when every component is a single string (one-hot rows)."""
        return self._dirac

    @property
    def strings(self) -> torch.Tensor | None:
        """(K, L) the strings of a Dirac mixture; None otherwise."""
        return self._probs.argmax(-1) if self._dirac else None

    def __repr__(self) -> str:
        return (
            f"CategoricalMixture(n_components={self.n_components}, length={self.length}, "
            f"vocab_size={self.vocab_size}, noise={self._noise!r}, dirac={self._dirac})"
        )

    # ------------------------------------------------------------------ derived mixtures
    def subset(self, components) -> CategoricalMixture:
        """The sub-mixture over ``components`` (weights renormalised)."""
        idx = check_subset(components, self.n_components, "components")
        logw = renormalised(self._log_weights[idx], idx)
        return CategoricalMixture._from_parts(self._probs[idx], logw, self._noise, self._dirac)

    def with_noise(self, noise: str) -> CategoricalMixture:
        """The same law under another forward process."""
        return CategoricalMixture._from_parts(
            self._probs, self._log_weights, self._check_noise(noise), self._dirac
        )

    # ------------------------------------------------------------------ validation
    def check_level(self, level, name: str = "level"):
        """``level`` as a float kappa in [0, 1] or an int number of hidden positions in [0, L].

        Raises ValueError naming ``name`` for a kappa outside [0, 1], or (autoregressive) a non-integer
        or out-of-range number of hidden positions.
        """
        if self._noise == "autoregressive":
            what = f"an integer number of hidden positions in [0, {self.length}] (autoregressive noise)"
            try:
                value = check_number(level, name)
            except ValueError:
                raise ValueError(f"{name} must be {what}, got {level!r}") from None
            if value != math.floor(value) or not 0 <= value <= self.length:
                raise ValueError(f"{name} must be {what}, got {level!r}")
            return int(value)
        kind = "masking" if self._noise == "mask" else "resampling"
        return check_number(level, f"{name} (kappa, the per-token {kind} probability)", low=0.0, high=1.0)

    def _check_clean(self, tokens, name: str) -> tuple[torch.Tensor, tuple]:
        flat, lead = self._shape(tokens, name)
        self._check_range(flat, name, self.vocab_size, "the vocabulary")
        return flat, lead

    def _shape(self, tokens, name: str) -> tuple[torch.Tensor, tuple]:
        x = _integer_tensor(tokens, name)
        if x.ndim == 0 or x.shape[-1] != self.length:
            raise ValueError(
                f"{name} must have shape (..., L) = (..., {self.length}) (sequences of the mixture's "
                f"length), "
                f"got {tuple(x.shape)}"
            )
        return x.reshape(-1, self.length).to(self._probs.device), tuple(x.shape[:-1])

    @staticmethod
    def _check_range(x: torch.Tensor, name: str, high: int, what: str) -> None:
        bad = (x < 0) | (x >= high)
        if bad.any():
            r, pos = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{name} holds token {int(x[r, pos])} at row {r}, position {pos}, outside [0, {high}) "
                f"({what})"
            )

    def _check_noised(self, y, level, name: str = "y") -> tuple[torch.Tensor, tuple]:
        """Noised tokens as (n, L) long: ids in [0, V) where the level keeps a token, the mask id V allowed
        where it may hide one (anywhere for masking; the last ``level`` positions for autoregression)."""
        flat, lead = self._shape(y, name)
        V = self.vocab_size
        if self._noise == "mask":
            self._check_range(flat, name, V + 1, f"the vocabulary and the mask id {V}")
        elif self._noise == "uniform":
            self._check_range(flat, name, V, "uniform noise has no mask id")
        else:
            visible = self.length - level
            self._check_range(flat[:, :visible], name, V, f"the first {visible} positions are visible")
            self._check_range(flat[:, visible:], name, V + 1, "hidden positions")
        return flat, lead

    def _check_generator(self, generator) -> None:
        check_generator(generator)
        if generator is not None and torch.device(generator.device).type != self._probs.device.type:
            raise ValueError(f"generator is on {generator.device} but the mixture is on {self._probs.device}")

    # ------------------------------------------------------------------ noised laws
    def token_log_probs(self, level) -> torch.Tensor:
        """(K, L, V + 1) ``log P(Y_l = v | component k)`` at ``level``; column ``V`` is the mask id.

        Autoregressive hidden positions hold 0 in every column (whatever they carry is ignored).
        """
        level = self.check_level(level)
        logp = torch.log(self._probs)
        K, L, V = self._probs.shape
        never = torch.full((K, L, 1), -math.inf, dtype=torch.float64, device=logp.device)
        if self._noise == "mask":
            kept = logp + math.log1p(-level) if level < 1 else torch.full_like(logp, -math.inf)
            masked = torch.full((K, L, 1), math.log(level) if level > 0 else -math.inf, dtype=torch.float64)
            return torch.cat([kept, masked.to(logp.device)], -1)
        if self._noise == "uniform":
            return torch.cat([torch.log((1 - level) * self._probs + level / V), never], -1)
        table = torch.cat([logp, never], -1)
        table[:, L - level :] = 0.0
        return table

    def component_log_prob(self, y, level) -> torch.Tensor:
        """``log p_level^k(y)`` for every component (weights not included).

        Parameters
        ----------
        y : (..., L) noised token ids (mask id ``V`` where the noise hides).  level : on :attr:`clock`.

        Returns
        -------
        (..., K) float64 tensor (``-inf`` where ``y`` is impossible under a component).
        """
        level = self.check_level(level)
        flat, lead = self._check_noised(y, level)
        return self._component_log_prob(flat, level).reshape(*lead, self.n_components)

    def _component_log_prob(self, flat: torch.Tensor, level) -> torch.Tensor:
        K, L = self.n_components, self.length
        table = self.token_log_probs(level).permute(1, 2, 0)  # (L, V + 1, K)
        out = torch.empty(flat.shape[0], K, dtype=torch.float64, device=flat.device)
        positions = torch.arange(L, device=flat.device)
        step = chunk_rows(8.0 * L * K, flat.shape[0], "the per-position log-probabilities")
        for r0 in range(0, flat.shape[0], step):
            out[r0 : r0 + step] = table[positions, flat[r0 : r0 + step]].sum(1)
        return out

    def log_prob(self, y, level) -> torch.Tensor:
        """Log probability of ``y`` (..., L) under the mixture's law at ``level``: (...,)."""
        level = self.check_level(level)
        flat, lead = self._check_noised(y, level)
        return torch.logsumexp(self._component_log_prob(flat, level) + self._log_weights, -1).reshape(lead)

    def _logits(self, y, level, name: str = "y"):
        """Checked ``log w_k + log p^k(y)`` (n, K), the flat tokens and the leading shape; ValueError when a
        row is impossible under every component (its posterior is undefined)."""
        flat, lead = self._check_noised(y, level, name)
        logits = self._component_log_prob(flat, level) + self._log_weights
        impossible = torch.isinf(logits).all(-1)
        if impossible.any():
            r = int(impossible.nonzero()[0])
            raise ValueError(
                f"{name} row {r} has probability 0 under the mixture at level {level} (no component can "
                "produce it); its posterior is undefined"
            )
        return logits, flat, lead

    def posterior(self, y, level) -> torch.Tensor:
        """Component responsibilities ``pi_level(k | y)``: (..., K), rows summing to 1."""
        level = self.check_level(level)
        logits, _, lead = self._logits(y, level)
        return torch.softmax(logits, -1).reshape(*lead, self.n_components)

    def denoise(self, y, level) -> torch.Tensor:
        """Posterior marginals of the clean tokens, ``P(X_l = v | Y = y)``: (..., L, V).

        The discrete counterpart of a denoiser's ``E[X_0 | X_t]`` (the mean of the one-hot clean tokens).
        """
        level = self.check_level(level)
        flat, _ = self._shape(y, "y")
        self._check_token_tables(flat.shape[0], "denoise")
        logits, flat, lead = self._logits(y, level)
        post = torch.softmax(logits, -1)  # (n, K)
        L, V = self.length, self.vocab_size
        if self._noise == "uniform":
            # P(x | y, k) = p_k(x) k(x, y) / q_k(y): the 1/q_k(y) factor enters through the posterior weights
            kernel = self._kernel(level, flat)  # (n, L, V)
            noised = torch.exp(self.token_log_probs(level)[..., :V])  # (K, L, V)
            q_y = noised[:, torch.arange(L, device=flat.device), flat].permute(1, 0, 2)  # (n, K, L)
            ratio = torch.where(post.unsqueeze(-1) > 0, post.unsqueeze(-1) / q_y, torch.zeros_like(q_y))
            out = torch.einsum("nkl,klv->nlv", ratio, self._probs) * kernel
            return out.reshape(*lead, L, V)
        hidden = self._hidden(flat, level)
        mixed = (post @ self._probs.reshape(self.n_components, L * V)).reshape(-1, L, V)
        shown = torch.nn.functional.one_hot(flat.clamp(max=V - 1), V).to(torch.float64)
        return torch.where(hidden.unsqueeze(-1), mixed, shown).reshape(*lead, L, V)

    def _check_token_tables(self, n: int, what: str) -> None:
        """The memory guard on the (n, L, V) tables of per-token posteriors built for ``n`` sequences (the
        result, a one-hot table as long and float64, and a mixed copy)."""
        L, V = self.length, self.vocab_size
        check_memory(
            4 * 8 * n * L * V,
            f"{what} of {n} sequences: (n, L, V) = ({n}, {L}, {V}) tables of token probabilities",
            "pass fewer rows at a time",
        )

    def _kernel(self, level: float, flat: torch.Tensor, r: float | None = None) -> torch.Tensor:
        """Uniform noise's ``P(Y_l = y_l | X_l = x) = (1 - r) 1{x = y_l} + r / V`` (``r``: ``kappa``
        unless given): (n, L, V)."""
        V = self.vocab_size
        r = level if r is None else r
        self._check_token_tables(flat.shape[0], "the uniform-noise kernel")
        same = torch.nn.functional.one_hot(flat, V).to(torch.float64)
        return (1 - r) * same + r / V

    def _hidden(self, flat: torch.Tensor, level) -> torch.Tensor:
        """(n, L) bool: the positions the level hides (mask ids; the last ``level`` for autoregression)."""
        if self._noise == "mask":
            return flat == self.mask_id
        hidden = torch.zeros_like(flat, dtype=torch.bool)
        hidden[:, self.length - level :] = True
        return hidden

    # ------------------------------------------------------------------ forward process
    def apply_noise(
        self, tokens: torch.Tensor, level, uniforms: torch.Tensor, replacements=None
    ) -> torch.Tensor:
        """The forward map given its randomness: ``(n, L)`` clean tokens to noised ones at ``level``.

        ``uniforms`` (n, L) in [0, 1): a token is hit when its uniform is ``< kappa`` (masked, or replaced
        by ``replacements`` (n, L) ids for uniform noise); unused by autoregression. The same draws at every
        level give coupled noising (``kappa < kappa'`` hits a subset), which the theory's Monte Carlo uses
        as common random numbers. :meth:`noise_tokens` draws them.
        """
        if self._noise == "autoregressive":
            out = tokens.clone()
            out[:, self.length - level :] = self.mask_id
            return out
        hit = uniforms < level
        if self._noise == "mask":
            return torch.where(hit, torch.full_like(tokens, self.mask_id), tokens)
        return torch.where(hit, replacements, tokens)

    def noise_tokens(self, tokens, level, generator: torch.Generator | None = None) -> torch.Tensor:
        """The forward process applied to clean tokens: (..., L) long, the mask id ``V`` where hidden.

        Examples
        --------
        >>> import torch
        >>> from critwin import CategoricalMixture
        >>> m = CategoricalMixture.from_strings([[0, 1, 2, 3]], vocab_size=4, noise="autoregressive")
        >>> m.noise_tokens(torch.tensor([[0, 1, 2, 3]]), 3)
        tensor([[0, 4, 4, 4]])
        """
        level = self.check_level(level)
        self._check_generator(generator)
        flat, lead = self._check_clean(tokens, "tokens")
        u = torch.rand(flat.shape, generator=generator, dtype=torch.float64, device=flat.device)
        replacements = None
        if self._noise == "uniform":
            replacements = torch.randint(self.vocab_size, flat.shape, generator=generator, device=flat.device)
        return self.apply_noise(flat, level, u, replacements).reshape(*lead, self.length)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` clean sequences: ``(tokens (n, L) long, labels (n,) long)``."""
        n = check_positive_int(n, "n")
        # the labels, the (n, L) tokens and one component's (L, count) draw before its transpose
        check_memory(8 * n * (2 * self.length + 1), f"sample(n={n}) of sequences of length {self.length}")
        self._check_generator(generator)
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.draw_components(labels, generator), labels

    def draw_components(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, L) clean tokens, row ``r`` drawn from component ``labels[r]``."""
        if self._dirac:
            return self._probs.argmax(-1)[labels]
        out = torch.empty(labels.numel(), self.length, dtype=torch.long, device=labels.device)
        for k in torch.unique(labels).tolist():
            rows = (labels == k).nonzero()[:, 0]
            # (L, count): one categorical per position, count draws each
            out[rows] = torch.multinomial(
                self._probs[k], rows.numel(), replacement=True, generator=generator
            ).T
        return out

    def _draw_at(self, flat, labels, where, weights_of, generator) -> torch.Tensor:
        """``flat`` with every position in ``where`` (n, L) redrawn from ``weights_of(rows, pos)`` (m, V)."""
        out = flat.clone()
        rows, pos = where.nonzero(as_tuple=True)
        step = chunk_rows(8.0 * self.vocab_size, rows.numel(), "the token posteriors")
        for r0 in range(0, rows.numel(), step):
            r, p = rows[r0 : r0 + step], pos[r0 : r0 + step]
            out[r, p] = torch.multinomial(weights_of(r, p), 1, generator=generator)[:, 0]
        return out

    def _labels(self, logits: torch.Tensor, generator) -> torch.Tensor:
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]

    def sample_posterior(self, y, level, generator: torch.Generator | None = None):
        """Exact draw of the clean sequence given noised tokens: ``X_0 | Y_level = y``.

        The component is drawn from :meth:`posterior`, then each hidden (masking, autoregression) or
        possibly resampled (uniform noise) position from its posterior given the component.

        Returns
        -------
        x0 : (..., L) long and labels : (...,) the component of each draw.

        Examples
        --------
        >>> import torch
        >>> from critwin import CategoricalMixture
        >>> m = CategoricalMixture.from_strings([[0, 1, 1], [1, 1, 0]], vocab_size=2)
        >>> m.sample_posterior(torch.tensor([[2, 2, 0]]), 0.9)[0]
        tensor([[1, 1, 0]])
        """
        level = self.check_level(level)
        self._check_generator(generator)
        logits, flat, lead = self._logits(y, level)
        labels = self._labels(logits, generator)
        x0 = self._fill_clean(flat, labels, level, generator)
        return x0.reshape(*lead, self.length), labels.reshape(lead)

    def _fill_clean(self, flat, labels, level, generator) -> torch.Tensor:
        if self._noise == "uniform":
            kernel = self._kernel(level, flat)

            def weights_of(r, p):
                return self._probs[labels[r], p] * kernel[r, p]

            return self._draw_at(flat, labels, torch.ones_like(flat, dtype=torch.bool), weights_of, generator)
        return self._draw_at(
            flat, labels, self._hidden(flat, level), lambda r, p: self._probs[labels[r], p], generator
        )

    def sample_reverse(self, y, level, to_level, generator: torch.Generator | None = None):
        """Exact draw of ``Y_to_level | Y_level = y`` for ``to_level < level`` (cloning on a grid).

        Masking: each masked token stays masked with probability ``to_level / level``, else is unmasked
        from its posterior given the component. Autoregression: positions ``L - level .. L - to_level - 1``
        are revealed. Uniform noise: ``Y_s`` given the component is the level-``s`` noised token, and
        ``Y_t | Y_s`` is uniform noise of probability ``r = 1 - (1 - kappa_t) / (1 - kappa_s)``, so each token
        is drawn with weights ``q_s(x) ((1 - r) 1{x = y} + r / V)``.

        Returns
        -------
        y_to : (..., L) long and labels : (...,) the component of each draw.
        """
        level = self.check_level(level)
        to_level = self.check_level(to_level, "to_level")
        if not to_level < level:
            raise ValueError(
                "to_level must be smaller than level (reverse runs towards the data), got "
                f"to_level={to_level}, level={level}"
            )
        if to_level == 0:
            return self.sample_posterior(y, level, generator)
        self._check_generator(generator)
        logits, flat, lead = self._logits(y, level)
        labels = self._labels(logits, generator)
        out = self._fill_between(flat, labels, level, to_level, generator)
        return out.reshape(*lead, self.length), labels.reshape(lead)

    def _fill_between(self, flat, labels, level, to_level, generator) -> torch.Tensor:
        L, V = self.length, self.vocab_size
        if self._noise == "autoregressive":
            where = torch.zeros_like(flat, dtype=torch.bool)
            where[:, L - level : L - to_level] = True
            out = self._draw_at(flat, labels, where, lambda r, p: self._probs[labels[r], p], generator)
            out[:, L - to_level :] = self.mask_id
            return out
        if self._noise == "mask":
            u = torch.rand(flat.shape, generator=generator, dtype=torch.float64, device=flat.device)
            reveal = (flat == self.mask_id) & (u >= to_level / level)
            return self._draw_at(flat, labels, reveal, lambda r, p: self._probs[labels[r], p], generator)
        r_extra = 1.0 - (1.0 - level) / (1.0 - to_level)
        kernel = self._kernel(level, flat, r_extra)
        noised_s = (1 - to_level) * self._probs + to_level / V

        def weights_of(r, p):
            return noised_s[labels[r], p] * kernel[r, p]

        return self._draw_at(flat, labels, torch.ones_like(flat, dtype=torch.bool), weights_of, generator)
