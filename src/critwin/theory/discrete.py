"""Total variation between noised :class:`~critwin.mixtures.CategoricalMixture` laws (docs/discrete.md).

Two ways, chosen by :class:`CategoricalTVCurve`:

- ``"enumeration"`` (exact): ``TV = 1/2 sum_y |sum_k c_k p_k(y)|`` over the noised support, with signed
  weights ``c`` (``P``'s weights, minus ``Q``'s; components both laws share cancel first). The sum is
  organised to use the product structure:

  * positions where every component has the same law drop out (their factor sums to 1 at every level);
  * the support is enumerated position by position, but a partial string is only kept as its *counts*
    of distinct per-position columns (the K-vectors ``(p_k(v))_k``): two prefixes with the same counts
    have the same probabilities under every component, so they merge with a multiplicity. Dirac strings
    give indicator columns (a prefix consistent with no component is dropped), i.i.d. positions give one
    column per value, and both stay polynomial (two strings at Hamming distance d: O(d) states);
  * masking: whether a position is masked is another count, and the TV is the polynomial
    ``TV(kappa) = sum_m A_m kappa^m (1 - kappa)^{L' - m}`` (``m`` masked informative positions out of
    ``L'``), computed once and evaluated at any kappa; uniform noise: the counts do not depend on kappa,
    only the columns' values do; autoregression: one pass over the positions gives the TV of every prefix,
    i.e. every number of hidden positions at once.

  The enumeration stops (``"auto"`` then falls back to Monte Carlo) beyond ``MAX_STATES`` count states.
  Probabilities are kept in log space with a per-state maximum, so long sequences do not underflow.
- ``"monte-carlo"``: the stratified estimator of :mod:`critwin.theory.divergence`,
  ``TV = E_{y ~ (P+Q)/2} |p - q| / (p + q)``, with common random numbers at every level: clean strings and
  the per-token uniforms of the forward process are drawn once
  (:meth:`~critwin.mixtures.CategoricalMixture.apply_noise`), so the curve is coupled across levels. At the
  top level (kappa = 1, or all L positions hidden) every noised law is the same and the TV is exactly 0.
"""

from __future__ import annotations

import math

import torch

from critwin._display import Table
from critwin._memory import check_memory
from critwin._validation import check_positive_int
from critwin.mixtures import CategoricalMixture
from critwin.theory.divergence import DEFAULT_SEED, Estimate, mc_tv_estimate
from critwin.theory.mc_tv import MCTerms, allocate, mixture_log_r

__all__ = ["CategoricalTVCurve", "categorical_tv", "MAX_STATES"]

MAX_STATES = 2**20
"""Most count states the exact enumeration keeps at once (beyond: Monte Carlo under ``"auto"``)."""
_MAX_ELEMENTS = 2**25  # counts held at once by one step, before merging (int32: 128 MiB)
_METHODS = ("auto", "enumeration", "monte-carlo")


class TooLarge(Exception):
    """The exact enumeration would exceed ``MAX_STATES``."""


def _normal_quantile(level) -> float:
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level must lie in (0, 1) (a confidence level), got {level!r}")
    return math.sqrt(2.0) * float(torch.erfinv(torch.tensor(level, dtype=torch.float64)))


def check_pair_of_laws(P, Q) -> None:
    """ValueError unless ``P`` and ``Q`` are CategoricalMixtures of one length, vocabulary and noise."""
    for name, m in (("P", P), ("Q", Q)):
        if not isinstance(m, CategoricalMixture):
            raise ValueError(f"{name} must be a CategoricalMixture, got {type(m).__name__}")
    for what in ("length", "vocab_size", "noise"):
        a, b = getattr(P, what), getattr(Q, what)
        if a != b:
            mismatch = " (vocabulary mismatch)" if what == "vocab_size" else ""
            raise ValueError(f"P and Q must have the same {what}{mismatch}, got {a!r} and {b!r}")


def _signed_components(P: CategoricalMixture, Q: CategoricalMixture):
    """Distinct components ``(K', L', V)`` over the informative positions and their signed weights ``c``.

    Components both laws share are merged (their weights subtract exactly once), components whose signed
    weight vanishes are dropped, and positions where every remaining component has the same law are dropped:
    ``sum_y |sum_k c_k p_k(y)|`` is unchanged by each step.

    Returns ``(probs (K', L', V), c (K',), positions (L',) long)``.
    """
    probs = torch.cat([P.probs, Q.probs])
    c = torch.cat([P.weights, -Q.weights])
    unique, inverse = torch.unique(probs.reshape(probs.shape[0], -1), dim=0, return_inverse=True)
    signed = torch.zeros(unique.shape[0], dtype=torch.float64).index_add_(0, inverse, c)
    keep = signed != 0
    probs = unique[keep].reshape(-1, P.length, P.vocab_size)
    if probs.shape[0] == 0:
        return probs, signed[keep], torch.zeros(0, dtype=torch.long)
    informative = (probs != probs[:1]).any(2).any(0)
    positions = informative.nonzero()[:, 0]
    return probs[:, positions], signed[keep], positions


class _Columns:
    """The distinct per-position columns ``(p_k(v))_k`` and, per position, which ones occur how often."""

    def __init__(self, probs: torch.Tensor, keep_zero: bool):
        K, L, V = probs.shape
        cols = probs.permute(1, 2, 0).reshape(L * V, K)  # row l * V + v: the column of value v at l
        self.table, ids = torch.unique(cols, dim=0, return_inverse=True)  # (C, K)
        ids = ids.reshape(L, V)
        zero = (cols == 0).all(1).reshape(L, V)
        self.options = []
        occurrences = torch.zeros(self.table.shape[0], dtype=torch.long)
        for pos in range(L):
            # a zero column (no component can write that value) makes every string through it impossible
            use = ids[pos] if keep_zero else ids[pos][~zero[pos]]
            values, counts = torch.unique(use, return_counts=True)
            self.options.append((values, counts.to(torch.float64).log()))
            occurrences[values] += 1
        # a column's count is at most the number of positions offering it: the mixed-radix code of a state
        self.radix = occurrences + 1

    @property
    def n(self) -> int:
        return self.table.shape[0]


class _Enumeration:
    """Count states of the noised support (module notes) and the TV evaluated from them.

    A state is ``(counts, rows, log_mult)``: its counts of each distinct column (and of masked positions),
    its log-probability under every component (``rows``, (K,); not kept for uniform noise, whose columns'
    values depend on kappa) and the log of how many partial strings it stands for. States merge when
    their counts agree, and (masking, autoregression) when their rows and masked counts agree: the
    future of a partial string depends on nothing else. The second merge is what keeps many Dirac
    strings small (the rows are the indicator of the consistent strings).
    """

    def __init__(self, P: CategoricalMixture, Q: CategoricalMixture):
        self.noise, self.length, self.vocab_size = P.noise, P.length, P.vocab_size
        probs, self.c, self.positions = _signed_components(P, Q)
        self.n_informative = probs.shape[1]
        self.states = 0
        if probs.shape[0] == 0:
            self.prefix_tv = torch.zeros(P.length + 1, dtype=torch.float64)
            self.coefficients = torch.full((1,), -math.inf, dtype=torch.float64)
            return
        self.columns = _Columns(probs, keep_zero=self.noise == "uniform")
        self._log_cols = torch.log(self.columns.table)  # (C, K)
        if self.noise == "uniform":
            self.counts, _, self.log_mult = self._enumerate(masking=False, rows=False)
        elif self.noise == "mask":
            counts, rows, log_mult = self._enumerate(masking=True, rows=True)
            contrib = self._log_contributions(rows, log_mult)
            self.coefficients = _group_logsumexp(contrib, counts[:, -1].long(), self.n_informative + 1)
        else:
            self.prefix_tv = self._prefix_tvs()

    # ------------------------------------------------------------------ enumeration
    def _step(self, state, pos: int, masking: bool):
        counts, rows, log_mult = state
        values, log_counts = self.columns.options[pos]
        m, G = counts.shape[0], values.numel()
        width = counts.shape[1] + (0 if rows is None else rows.shape[1])
        if m * (G + masking) * width > _MAX_ELEMENTS:
            raise TooLarge(f"{m * (G + masking)} states before merging")
        grown = counts.unsqueeze(1).repeat(1, G, 1)
        grown[:, torch.arange(G), values] += 1
        grown = grown.reshape(m * G, -1)
        mult = (log_mult.unsqueeze(1) + log_counts.unsqueeze(0)).reshape(-1)
        new_rows = None
        if rows is not None:
            new_rows = (rows.unsqueeze(1) + self._log_cols[values].unsqueeze(0)).reshape(m * G, -1)
            alive = torch.isfinite(new_rows).any(1)  # some component can produce the partial string
            grown, new_rows, mult = grown[alive], new_rows[alive], mult[alive]
        if masking:
            hidden = counts.clone()
            hidden[:, -1] += 1
            grown, new_rows, mult = (
                torch.cat([grown, hidden]),
                torch.cat([new_rows, rows]),
                torch.cat([mult, log_mult]),
            )
        first, inverse, n = _group(grown, self._radix)
        state = (
            grown[first],
            None if new_rows is None else new_rows[first],
            _group_logsumexp(mult, inverse, n),
        )
        if new_rows is None:
            return state
        key = state[1] if not masking else torch.cat([state[1], state[0][:, -1:].to(torch.float64)], 1)
        first, inverse, n = _group_rows(key)
        if n == key.shape[0]:
            return state
        return state[0][first], state[1][first], _group_logsumexp(state[2], inverse, n)

    def _enumerate(self, masking: bool, rows: bool):
        self._set_radix(masking)
        K = self.c.numel()
        width = self.columns.n + (1 if masking else 0)
        state = (
            torch.zeros(1, width, dtype=torch.int32),
            torch.zeros(1, K, dtype=torch.float64) if rows else None,
            torch.zeros(1, dtype=torch.float64),
        )
        for pos in range(self.n_informative):
            state = self._step(state, pos, masking)
            self._check_size(state[0])
        return state

    def _check_size(self, counts) -> None:
        self.states = max(self.states, counts.shape[0])
        if counts.shape[0] > MAX_STATES:
            raise TooLarge(f"{counts.shape[0]} states")

    def _set_radix(self, masking: bool) -> None:
        """The weights of a state's integer code: the place values of the mixed-radix code of its counts
        when it fits in int64 (exact), otherwise random weights below 2^52 (a hash, checked in
        :func:`_group`)."""
        radix = self.columns.radix
        if masking:
            radix = torch.cat([radix, torch.tensor([self.n_informative + 1])])
        if float(radix.to(torch.float64).log2().sum()) < 62:
            self._radix = torch.cat([torch.ones(1, dtype=torch.long), torch.cumprod(radix, 0)[:-1]])
            return
        # sums of at most L' < 2^10 such weights stay below 2^62; seeded: the same states on every call
        g = torch.Generator().manual_seed(DEFAULT_SEED)
        self._radix = torch.randint(2**52, (radix.numel(),), generator=g, dtype=torch.long)

    def _prefix_tvs(self) -> torch.Tensor:
        """TV of every prefix length j (the level L - j hidden positions): (L + 1,), index = hidden count."""
        self._set_radix(False)
        state = (
            torch.zeros(1, self.columns.n, dtype=torch.int32),
            torch.zeros(1, self.c.numel(), dtype=torch.float64),
            torch.zeros(1, dtype=torch.float64),
        )
        after = [0.0]  # TV after each informative position (none seen: 0)
        for pos in range(self.n_informative):
            state = self._step(state, pos, masking=False)
            self._check_size(state[0])
            contrib = self._log_contributions(state[1], state[2])
            after.append(min(1.0, 0.5 * float(torch.logsumexp(contrib, 0).exp())))
        seen = torch.searchsorted(self.positions, torch.arange(self.length + 1), right=False)
        # prefix length j holds the informative positions < j: `seen[j]` of them
        by_prefix = torch.tensor(after, dtype=torch.float64)[seen]
        return by_prefix.flip(0)

    # ------------------------------------------------------------------ evaluation
    def _log_contributions(self, rows, log_mult) -> torch.Tensor:
        """``log(mult |sum_k c_k p_k(state)|)`` per state from its log-probabilities ``rows`` (m, K)."""
        top = rows.amax(1, keepdim=True)
        safe = torch.where(torch.isinf(top), torch.zeros_like(top), top)
        signed = (torch.exp(rows - safe) * self.c).sum(1).abs()
        return log_mult + safe[:, 0] + torch.log(signed)

    def __call__(self, t) -> float:
        if self.noise == "autoregressive":
            return float(self.prefix_tv[t])
        if self.c.numel() == 0 or t == 1.0:
            return 0.0
        if self.noise == "mask":
            m = torch.arange(self.coefficients.numel(), dtype=torch.float64)
            kappa = torch.tensor(t, dtype=torch.float64)
            log_poly = (
                self.coefficients + torch.xlogy(m, kappa) + torch.xlogy(self.n_informative - m, 1.0 - kappa)
            )
            return min(1.0, 0.5 * float(torch.logsumexp(log_poly, 0).exp()))
        # uniform noise: the same states, the columns' values at this kappa
        log_table = torch.log((1 - t) * self.columns.table + t / self.vocab_size)
        finite = torch.where(torch.isinf(log_table), torch.zeros_like(log_table), log_table)
        counts = self.counts.to(torch.float64)
        rows = counts @ finite
        impossible = (counts @ torch.isinf(log_table).to(torch.float64)) > 0
        rows = torch.where(impossible, torch.full_like(rows, -math.inf), rows)
        contrib = self._log_contributions(rows, self.log_mult)
        return min(1.0, 0.5 * float(torch.logsumexp(contrib, 0).exp()))


def _first_of_groups(inverse, n_groups: int) -> torch.Tensor:
    """The first index of every group (``inverse``: each element's group)."""
    n = inverse.numel()
    return torch.full((n_groups,), n, dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(n), reduce="amin", include_self=True
    )


def _group(counts, place):
    """Groups of equal count rows: ``(first index of each group, each row's group, number of groups)``.

    ``place`` (W,) long: weights giving every state one int64 code ``counts @ place`` (exact mixed-radix
    place values, or a hash), so the grouping is a 1-D sort. Rows grouped by a code but with different
    counts (a hash collision) are detected and the rows themselves are grouped instead.
    """
    keys, inverse = torch.unique(counts.long() @ place, return_inverse=True)
    return _checked_groups(counts, keys.numel(), inverse)


def _group_rows(rows):
    """Groups of exactly equal float rows (``-inf`` allowed), as :func:`_group`: hashed by a seeded random
    projection (a 1-D sort), every group checked to hold equal rows, else grouped by the rows themselves."""
    finite = torch.where(torch.isinf(rows), torch.full_like(rows, -7.25e5), rows)
    g = torch.Generator().manual_seed(DEFAULT_SEED)
    keys, inverse = torch.unique(
        finite @ torch.randn(rows.shape[1], generator=g, dtype=torch.float64), return_inverse=True
    )
    return _checked_groups(rows, keys.numel(), inverse)


def _checked_groups(rows, n_groups: int, inverse):
    """The groups ``inverse`` (``n_groups`` of them) of a grouping of ``rows`` by a hashed code, as
    ``(first index of each group, each row's group, number of groups)``, if every group holds equal rows;
    else (a hash collision) the rows grouped by themselves."""
    first = _first_of_groups(inverse, n_groups)
    if not torch.equal(rows[first][inverse], rows):
        _, inverse = torch.unique(rows, dim=0, return_inverse=True)
        n = int(inverse.max()) + 1
        return _first_of_groups(inverse, n), inverse, n
    return first, inverse, n_groups


def _merge(counts, log_mult, place):
    """States with equal counts merged, their multiplicities summed (in log space); see :func:`_group`."""
    if counts.shape[0] == 0:
        return counts, log_mult
    first, inverse, n = _group(counts, place)
    return counts[first], _group_logsumexp(log_mult, inverse, n)


def _group_logsumexp(values, groups, n_groups: int) -> torch.Tensor:
    top = torch.full((n_groups,), -math.inf, dtype=torch.float64).scatter_reduce(
        0, groups, values, reduce="amax", include_self=True
    )
    safe = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    sums = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, torch.exp(values - safe[groups]))
    return safe + torch.log(sums)


class _MonteCarlo:
    """The stratified estimator of :mod:`critwin.theory.mc_tv` with common random numbers (module notes)."""

    def __init__(self, P: CategoricalMixture, Q: CategoricalMixture, n: int, generator, z: float):
        self.P, self.Q, self.z = P, Q, z
        # clean, noised and replacement tokens and the uniforms (n, L); labels, strata and the per-draw
        # log-probabilities under both laws and every component
        L, K = P.length, P.n_components + Q.n_components
        check_memory(
            8 * n * (4 * L + K + 8),
            f"the Monte Carlo draws of n={n} sequences of length {L}",
            "lower n, or use method='enumeration' where it fits",
        )
        self.strata = allocate(P.weights, Q.weights, n, None, generator)
        kp = P.n_components
        if self.strata.plain:
            # one stratum, M itself: as many draws of P then of Q as the labels of M say
            labels = torch.multinomial(
                torch.cat([P.weights, Q.weights]) / 2, n, replacement=True, generator=generator
            )
        else:
            labels = self.strata.labels
        x0 = torch.empty(labels.numel(), P.length, dtype=torch.long)
        from_p = labels < kp
        if from_p.any():
            x0[from_p] = P.draw_components(labels[from_p], generator)
        if (~from_p).any():
            x0[~from_p] = Q.draw_components(labels[~from_p] - kp, generator)
        self.x0 = x0
        self.u = torch.rand(x0.shape, generator=generator, dtype=torch.float64)
        self.r = None
        if P.noise == "uniform":
            self.r = torch.randint(P.vocab_size, x0.shape, generator=generator)

    def __call__(self, t) -> Estimate:
        y = self.P.apply_noise(self.x0, t, self.u, self.r)
        log_p, log_q = self.P.log_prob(y, t), self.Q.log_prob(y, t)
        if self.strata.plain:
            log_r = mixture_log_r(log_p, log_q, None, None, self.strata)
        else:
            log_r = mixture_log_r(
                log_p, log_q, self.P.component_log_prob(y, t), self.Q.component_log_prob(y, t), self.strata
            )
        return mc_tv_estimate(
            MCTerms(log_p, log_q, log_r), self.strata, self.P.weights, self.Q.weights, self.z
        )


class CategoricalTVCurve:
    """``t -> TV(P_t, Q_t)`` for two categorical mixtures on one clock, the method fixed.

    Parameters
    ----------
    P, Q : CategoricalMixture of the same length, vocabulary and noise (e.g. ``m.subset(A)`` and
        ``m.subset(B)``).
    n : Monte Carlo draws (ignored by the enumeration).
    generator : torch.Generator for the Monte Carlo draws (drawn once, reused at every level); None: one
        seeded with ``DEFAULT_SEED`` = 0, so results are reproducible.
    method : ``"auto"`` (the enumeration when it fits in ``MAX_STATES`` states, else Monte Carlo),
        ``"enumeration"`` (ValueError when it does not fit) or ``"monte-carlo"``.
    level : confidence level of Monte Carlo intervals.

    Attributes
    ----------
    method : the method used.  clock : the mixtures' clock (``"kappa"`` or ``"hidden"``).
    states : the largest number of count states the enumeration held (0 for Monte Carlo).

    Examples
    --------
    >>> from critwin import CategoricalMixture
    >>> from critwin.theory.discrete import CategoricalTVCurve
    >>> m = CategoricalMixture.from_strings([[0] * 10, [1] * 10], vocab_size=2)
    >>> curve = CategoricalTVCurve(m.subset([0]), m.subset([1]))
    >>> round(curve(0.9).value, 6) == round(1 - 0.9**10, 6)   # both strings hidden together: kappa^10
    True
    """

    def __init__(self, P, Q, n: int = 20000, generator=None, *, method: str = "auto", level: float = 0.95):
        check_pair_of_laws(P, Q)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        self.n = check_positive_int(n, "n", minimum=2)
        self.z = _normal_quantile(level)
        if generator is None:
            generator = torch.Generator().manual_seed(DEFAULT_SEED)
        elif not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.P, self.Q, self.clock = P, Q, P.clock
        self._exact = self._mc = None
        self.states = 0
        if method != "monte-carlo":
            try:
                self._exact = _Enumeration(P, Q)
                self.states = self._exact.states
            except TooLarge:
                if method == "enumeration":
                    raise ValueError(
                        f"method='enumeration' needs more than MAX_STATES = {MAX_STATES} count states for "
                        "these laws; use method='monte-carlo' (or 'auto')"
                    ) from None
        if self._exact is None:
            self._mc = _MonteCarlo(P, Q, self.n, generator, self.z)
        self.method = "enumeration" if self._exact is not None else "monte-carlo"

    @property
    def exact(self) -> bool:
        return self._exact is not None

    def __call__(self, t) -> Estimate:
        t = self.P.check_level(t, "t")
        if self._exact is not None:
            value = min(1.0, max(0.0, self._exact(t)))
            return Estimate(value, 0.0, value, value, "enumeration", self.states)
        if t == self.P.level_range[1]:
            # full noise: every noised law is the same (all masked, uniform, or all hidden), TV = 0 surely
            return Estimate(0.0, 0.0, 0.0, 0.0, "monte-carlo", self.n)
        return self._mc(t)

    def table(self, levels) -> dict[str, list[float]]:
        """The curve at ``levels``: columns ``t`` (on :attr:`clock`), ``tv``, ``stderr``, ``low``,
        ``high``."""
        estimates = [self(t) for t in levels]
        columns = {k: [getattr(e, k) for e in estimates] for k in ("value", "stderr", "low", "high")}
        return Table({"t": [float(t) for t in levels], "tv": columns.pop("value"), **columns})


def categorical_tv(
    P, Q, t, n: int = 20000, generator=None, *, method: str = "auto", level: float = 0.95
) -> Estimate:
    """``TV(P_t, Q_t)`` between two categorical mixtures noised to level ``t`` on their clock.

    Parameters
    ----------
    P, Q : CategoricalMixture (same length, vocabulary and noise).
    t : kappa in [0, 1] (mask, uniform) or the number of hidden final positions (autoregressive).
    n, generator, method, level : as in :class:`CategoricalTVCurve`.

    Returns
    -------
    Estimate (``method`` ``"enumeration"``: exact, ``low == high == value``; or ``"monte-carlo"``).

    Examples
    --------
    >>> from critwin import CategoricalMixture
    >>> from critwin.theory.discrete import categorical_tv
    >>> m = CategoricalMixture.from_strings([[0, 0, 0], [0, 1, 1]], vocab_size=2)
    >>> categorical_tv(m.subset([0]), m, 0.5).value    # 1/2 (1 - kappa^2): positions 1, 2 differ
    0.375
    """
    return CategoricalTVCurve(P, Q, n, generator, method=method, level=level)(t)
