"""Reverse processes over token sequences: masked diffusion, autoregression, exact categorical mixtures.

The experiments (forward–reverse, cloning, estimates, search) run unchanged on these processes: the
grid is a decreasing sequence of noise levels ending at 0 (clean), grid index ``i`` is "the state after
noising to ``times[i]``" and "the state the sampler's step ``i`` starts from", exactly as for OU time.
Only the meaning of a level differs; every process states it as its ``clock`` (docs/discrete.md):

- ``"kappa"`` (masked diffusion): the per-token masking probability in [0, 1] (0: clean, 1: every
  token masked). Noising masks each token independently with probability kappa (mask id
  ``mask_id``); from kappa_i to kappa_{i+1} each masked token is revealed with probability
  ``(kappa_i - kappa_{i+1}) / kappa_i`` (the absorbing-state ancestral sampler of MDLM, Sahoo et al.
  2024), its value drawn from the model's softmax at that position.
- ``"hidden"`` (autoregression): the number of hidden positions at the end, an integer in 0..L.
  Noising to ``h`` keeps the first ``L - h`` tokens (the rest carry the mask id); the sampler
  generates them left to right with the model.

A state is an ``(n, L)`` long tensor of token ids with ``mask_id`` where hidden; data space and model
space are the same. :class:`MaskedDiffusionProcess` takes any callable ``logits = model(tokens)``
(``(n, L)`` long with mask ids -> ``(n, L, V)``; an object with ``.logits``, such as a
``transformers`` ``BertForMaskedLM`` output, fits); :class:`AutoregressiveProcess` any causal LM
callable (``(n, P + k)`` ids -> ``(n, P + k, V)`` logits, the last row predicting the next token);
:class:`CategoricalProcess` samples a ``CategoricalMixture`` exactly (its posterior), the reference
the networks are compared with. Every model output is checked at the seam (shape, finiteness), naming
the model and the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from critwin._files import fingerprint
from critwin._memory import GRID_BYTES, check_memory
from critwin._validation import check_generator, check_number, check_positive_int, check_token_ids
from critwin.clock import TimeGrid
from critwin.experiments.process import (
    Callback,
    ReverseProcess,
    check_prior_memory,
    check_sampler,
    register_mixture_process,
)
from critwin.mixtures.categorical import CategoricalMixture

__all__ = [
    "TOKEN_CLOCKS",
    "LevelGrid",
    "TokenProcess",
    "MaskedDiffusionProcess",
    "AutoregressiveProcess",
    "CategoricalProcess",
    "kappa_levels",
    "MASKED_SAMPLERS",
    "model_logits",
]

TOKEN_CLOCKS = {
    "kappa": "the per-token masking (or resampling) probability kappa in [0, 1]",
    "hidden": "the number of hidden positions at the end of the sequence, an integer in 0..L",
}
"""The discrete clocks and what a level means on each."""


def kappa_levels(n_steps: int, kappa_max: float = 1.0) -> torch.Tensor:
    """(n_steps + 1,) float64 masking levels ``kappa_max (1 - i / n_steps)``: decreasing, ending at 0."""
    n_steps = check_positive_int(n_steps, "n_steps")
    check_memory(GRID_BYTES * (n_steps + 1), f"kappa_levels(n_steps={n_steps})")
    kappa_max = check_number(kappa_max, "kappa_max (a masking level)", low=0.0, high=1.0, closed="high")
    return kappa_max * torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64)


class LevelGrid(TimeGrid):
    """A :class:`~critwin.clock.TimeGrid` of discrete noise levels whose requests are checked on the clock.

    Parameters
    ----------
    levels : (S+1,) strictly decreasing levels ending at 0.
    clock : ``"kappa"`` (levels in [0, 1]) or ``"hidden"`` (integers in 0..``length``).
    length : sequence length (the largest number of hidden positions).
    """

    def __init__(self, levels, clock: str, length: int, name: str = "times"):
        self.clock = check_sampler(clock, tuple(TOKEN_CLOCKS), "clock")
        self.length = int(length)
        self.unit = "level"  # of this clock; check_value checks each one
        super().__init__(levels, name)
        _check_levels(self.times, self.clock, self.length, name)
        if self.times[-1].item() != 0.0:
            raise ValueError(f"{name} must end at level 0 (clean data), got {self.times[-1].item():.4g}")

    def check_value(self, value, name: str) -> float:
        """One requested level, checked on this grid's clock (then against the grid's range by ``check``)."""
        return _check_level(value, self.clock, self.length, name)

    def refined(self, requested: torch.Tensor) -> LevelGrid:
        return LevelGrid(super().refined(requested).times, self.clock, self.length)


def _no_cond(cond, owner: str) -> None:
    if cond:
        raise ValueError(f"cond: {owner} takes no conditioning, got keys {sorted(cond)}")


def _check_level(value, clock: str, length: int, name: str) -> float:
    if clock == "kappa":
        return check_number(value, f"{name} (kappa, a masking level)", low=0.0, high=1.0)
    what = f"an integer number of hidden positions in 0..{length} (autoregressive clock)"
    try:
        level = check_number(value, name)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    if level != math.floor(level) or not 0 <= level <= length:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return level


def _check_levels(levels: torch.Tensor, clock: str, length: int, name: str) -> None:
    values = levels.tolist()
    # Every re-gridding builds a grid: the common all-valid case is checked in one pass (NaN fails both
    # comparisons), and only a failing grid goes level by level for the message.
    if clock == "kappa" and all(0.0 <= v <= 1.0 for v in values):
        return
    if clock == "hidden" and all(0 <= v <= length and v == math.floor(v) for v in values):
        return
    for i, value in enumerate(values):
        _check_level(value, clock, length, f"{name}[{i}]")


class TokenProcess(ReverseProcess):
    """Base of the processes over ``(n, L)`` token sequences (see the module notes).

    Subclasses set ``clock``, ``length``, ``vocab_size``, ``mask_id`` and the grid ``_times``, and
    implement :meth:`add_noise` and :meth:`_step` (one grid step of the sampler).
    """

    clock: str = "kappa"
    length: int = 0
    vocab_size: int = 0
    mask_id: int = 0
    device = torch.device("cpu")
    _times: torch.Tensor

    @property
    def times(self) -> torch.Tensor:
        """(S+1,) float64 decreasing levels on :attr:`clock`, ending at 0."""
        return self._times

    @property
    def grid(self) -> LevelGrid:
        return LevelGrid(self._times, self.clock, self.length)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.length,)

    def check_tokens(self, tokens, name: str = "x0") -> torch.Tensor:
        """Clean sequences as ``(n, L)`` long on the process's device (ids in ``0..vocab_size-1``)."""
        return check_token_ids(tokens, name, self.length, self.vocab_size).to(self.device)

    def check_state(self, x, name: str = "x") -> torch.Tensor:
        """Noised sequences: ids in ``0..vocab_size-1`` or the mask id."""
        high = max(self.vocab_size, self.mask_id + 1)
        state = check_token_ids(x, name, self.length, high, f"the vocabulary and the mask id {self.mask_id}")
        return state.to(self.device)

    def prior(self, n, generator=None, device=None, dtype=None) -> torch.Tensor:
        """``n`` fully hidden sequences (every token the mask id): the state at ``times[0] = 1`` or ``L``.

        ``dtype`` is ignored (states are token ids).
        """
        check_prior_memory(n, self.sample_shape)
        n = check_positive_int(n, "n")
        return torch.full((n, self.length), self.mask_id, dtype=torch.long, device=device or self.device)

    def run(self, x, start=0, stop=None, generator=None, callback=None, cond=None):
        """Sample from grid index ``start`` to ``stop`` (default: the end); ``callback(i, level, x,
        x0_hat)`` gets the state and the model's (n, L, V) predicted clean-token probabilities."""
        _no_cond(cond, type(self).__name__)
        check_generator(generator)
        start, stop = self.grid.check_span(start, stop)
        x = self.check_state(x)
        for index in range(start, stop):
            x = self._step(x, index, generator, callback)
        return x

    def _step(self, x, index: int, generator, callback: Callback | None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "process": type(self).__name__,
            "clock": self.clock,
            "length": self.length,
            "vocab_size": self.vocab_size,
            "mask_id": self.mask_id,
            "grid_size": int(self._times.numel()),
            "grid_fingerprint": fingerprint(self._times),
        }


def model_logits(
    model, tokens: torch.Tensor, width: int, vocab_size: int, name: str, step: str
) -> torch.Tensor:
    """``model(tokens)`` (or its ``.logits``) checked to be finite ``(n, width, vocab_size)`` logits.

    ``name`` and ``step`` (e.g. "step 3 (kappa 0.75 -> 0.5)") name the call in the error.
    """
    with torch.no_grad():
        out = model(tokens)
    out = getattr(out, "logits", out)
    expected = (tokens.shape[0], width, vocab_size)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise ValueError(
            f"model {name} returned {type(out).__name__} at {step}; expected float logits of shape {expected}"
        )
    if tuple(out.shape) != expected:
        detail = ""
        if out.ndim == 3 and tuple(out.shape[:2]) == expected[:2]:
            detail = (
                f" (vocabulary mismatch: the model scores {out.shape[2]} tokens, the process {vocab_size})"
            )
        raise ValueError(
            f"model {name} returned logits of shape {tuple(out.shape)} at {step}; expected {expected}{detail}"
        )
    if not torch.isfinite(out).all():
        raise ValueError(f"model {name} returned non-finite logits at {step}")
    return out


def _model_name(model, name: str | None) -> str:
    if name is not None:
        return str(name)
    explicit = getattr(model, "name", None)
    return explicit if isinstance(explicit, str) else type(model).__name__


def _model_device(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    parameter = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")


MASKED_SAMPLERS = ("ancestral", "first-hitting")
"""Samplers of :class:`MaskedDiffusionProcess`: MDLM's grid sampler, or the exact continuous-time one."""


class MaskedDiffusionProcess(TokenProcess):
    """A masked-diffusion model sampled by the absorbing-state reverse process (clock ``"kappa"``).

    Parameters
    ----------
    model : callable ``model(tokens) -> logits``: ``(n, L)`` long ids with ``mask_id`` where masked ->
        ``(n, L, vocab_size)`` logits of the clean token at every position (or an object with
        ``.logits``). Only masked positions are read.
    length : sequence length L.
    vocab_size : number of token ids the logits score (V).
    mask_id : id of the mask token (default ``vocab_size``, outside the vocabulary; an id inside it,
        as in BERT vocabularies, is never sampled).
    n_steps : grid steps of the default grid ``kappa_i = 1 - i / n_steps``.
    times : explicit decreasing levels in [0, 1] ending at 0 (overrides ``n_steps``).
    sampler : ``"ancestral"`` (MDLM, Sahoo et al. 2024: from kappa_i to kappa_{i+1} each masked token is
        revealed with probability ``(kappa_i - kappa_{i+1}) / kappa_i``, its value drawn from the
        model's softmax; tokens revealed in one step are drawn independently given the rest) or
        ``"first-hitting"`` (the same reverse process in continuous time, simulated exactly: the tokens
        revealed between two levels are chosen as above, then revealed one at a time in a uniformly
        random order, each drawn given all tokens revealed before it; Zheng et al. 2024). The model takes
        no noise level, so reveal times matter only through their order: with an exact denoiser the
        first-hitting sampler draws exact posterior samples on any grid, the ancestral one only as
        ``n_steps`` grows.
    name : the model's name in provenance and errors.
    device : where states live (default: the model's parameters' device, else CPU).

    Notes
    -----
    ``nfe`` counts per-sequence model calls: at most ``L`` per sequence and run (see :meth:`run`), so
    the ancestral sampler's many steps cost little model time (each step still costs a few tensor
    operations); the first-hitting one calls the model exactly once per revealed token. The same input
    state and generator give the same output.

    Examples
    --------
    >>> import torch
    >>> uniform = lambda x: torch.zeros(x.shape[0], x.shape[1], 3)   # every token equally likely
    >>> process = MaskedDiffusionProcess(uniform, length=4, vocab_size=3, n_steps=4)
    >>> x = process.run(process.prior(2), generator=torch.Generator().manual_seed(0))
    >>> x.shape, bool((x < 3).all())
    (torch.Size([2, 4]), True)
    """

    clock = "kappa"
    continuous = True

    def __init__(
        self,
        model: Callable,
        length: int,
        vocab_size: int,
        mask_id: int | None = None,
        n_steps: int = 256,
        times=None,
        sampler: str = "ancestral",
        name: str | None = None,
        device=None,
    ):
        if not callable(model):
            raise ValueError(f"model must be callable tokens -> logits, got {type(model).__name__}")
        self.sampler = check_sampler(sampler, MASKED_SAMPLERS)
        self.model = model
        self.length = check_positive_int(length, "length")
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", minimum=2)
        self.mask_id = (
            self.vocab_size if mask_id is None else check_positive_int(mask_id, "mask_id", minimum=0)
        )
        if self.mask_id > self.vocab_size:
            raise ValueError(f"mask_id must be an id in 0..{self.vocab_size}, got {self.mask_id}")
        levels = kappa_levels(n_steps) if times is None else times
        self._times = LevelGrid(levels, "kappa", self.length).times
        self.name = _model_name(model, name)
        self.device = _model_device(model, device)
        self.nfe = 0

    def add_noise(self, x0, index, generator=None):
        """Mask each token of the clean ``x0`` independently with probability ``times[index]``."""
        x0 = self.check_tokens(x0)
        kappa = self._times[self.grid.check_index(index)].item()
        hit = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64) < kappa
        return torch.where(hit, torch.full_like(x0, self.mask_id), x0)

    def probabilities(self, x: torch.Tensor, step: str = "a call") -> torch.Tensor:
        """(n, L, V) float64 softmax of the model's logits on the states ``x`` (the mask id never drawn)."""
        logits = model_logits(self.model, x, self.length, self.vocab_size, self.name, step).double()
        if self.mask_id < self.vocab_size:
            logits[..., self.mask_id] = -math.inf
        return torch.softmax(logits, -1)

    def run(self, x, start=0, stop=None, generator=None, callback=None, cond=None):
        """Sample from grid index ``start`` to ``stop`` (default: the end).

        The model is called on a sequence only at the steps where one of its tokens is revealed, and its
        logits are reused until the sequence changes (the usual MDLM caching: a deterministic model gives
        the same logits for the same input), so a run costs at most ``L`` calls per sequence whatever
        the number of steps. ``callback(i, kappa, x, x0_hat)`` gets the (n, L, V) predicted clean-token
        probabilities at every step (the model is then called at every step that has masks).
        """
        _no_cond(cond, type(self).__name__)
        check_generator(generator)
        start, stop = self.grid.check_span(start, stop)
        x = self.check_state(x)
        if self.sampler == "first-hitting":
            if callback is None:
                return self._first_hitting(x, start, stop, generator)
            for index in range(start, stop):
                masked = (x == self.mask_id).unsqueeze(-1)
                shown = torch.nn.functional.one_hot(
                    x.clamp(max=self.vocab_size - 1), self.vocab_size
                ).double()
                probs = self.probabilities(x, f"step {index}")
                self.nfe += int(x.shape[0])
                callback(index, self._times[index].item(), x, torch.where(masked, probs, shown))
                x = self._first_hitting(x, index, index + 1, generator)
            return x
        cache = torch.zeros(*x.shape, self.vocab_size, dtype=torch.float64, device=x.device)
        fresh = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for index in range(start, stop):
            x = self._reveal(x, index, generator, callback, cache, fresh)
        return x

    def _first_hitting(self, x, start: int, stop: int, generator) -> torch.Tensor:
        """The exact continuous-time transition from ``times[start]`` to ``times[stop]``."""
        kappa, to = self._times[start].item(), self._times[stop].item()
        masked = x == self.mask_id
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
        reveal = masked & (u < (kappa - to) / kappa)
        # A uniformly random order of every sequence's revealed positions (the others sort last).
        priority = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
        order = torch.where(reveal, priority, torch.full_like(priority, 2.0)).argsort(1)
        counts = reveal.sum(1)
        out = x.clone()
        for j in range(int(counts.max()) if counts.numel() else 0):
            rows = (counts > j).nonzero()[:, 0]
            positions = order[rows, j]
            probs = self.probabilities(out[rows], f"reveal {j + 1} (kappa {kappa:.4g} -> {to:.4g})")
            self.nfe += int(rows.numel())
            out[rows, positions] = torch.multinomial(
                probs[torch.arange(rows.numel()), positions], 1, generator=generator
            )[:, 0]
        return out

    def _reveal(self, x, index, generator, callback, cache, fresh):
        """One step: reveal each masked token with probability ``(kappa_i - kappa_{i+1}) / kappa_i``."""
        kappa, to = self._times[index].item(), self._times[index + 1].item()
        masked = x == self.mask_id
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
        reveal = masked & (u < (kappa - to) / kappa)
        needed = reveal.any(1) if callback is None else masked.any(1)
        rows = (needed & ~fresh).nonzero()[:, 0]
        if rows.numel():
            cache[rows] = self.probabilities(x[rows], f"step {index} (kappa {kappa:.4g} -> {to:.4g})")
            fresh[rows] = True
            self.nfe += int(rows.numel())
        if callback is not None:
            shown = torch.nn.functional.one_hot(x.clamp(max=self.vocab_size - 1), self.vocab_size).double()
            callback(index, kappa, x, torch.where(masked.unsqueeze(-1), cache, shown))
        r, p = reveal.nonzero(as_tuple=True)
        if r.numel() == 0:
            return x
        out = x.clone()
        out[r, p] = torch.multinomial(cache[r, p], 1, generator=generator)[:, 0]
        fresh[r] = False  # those sequences changed: their cached logits are stale
        return out

    def with_times(self, times):
        return MaskedDiffusionProcess(
            self.model,
            self.length,
            self.vocab_size,
            self.mask_id,
            times=times,
            sampler=self.sampler,
            name=self.name,
            device=self.device,
        )

    def describe(self):
        return {**super().describe(), "sampler": self.sampler, "model": self.name}


class AutoregressiveProcess(TokenProcess):
    """A causal language model generating the last tokens of a sequence (clock ``"hidden"``).

    The state holds the ``L`` generated tokens; the model sees ``prompt`` followed by the visible ones.

    Parameters
    ----------
    model : callable ``model(input_ids) -> logits``: ``(n, P + k)`` long -> ``(n, P + k, vocab_size)``
        (or an object with ``.logits``); the last row scores the next token.
    length : generated tokens L.
    vocab_size : token ids the logits score.
    prompt : (P,) long ids prepended to every sequence, P >= 1 (a beginning-of-sequence token, or a
        tokenised prompt).
    mask_id : id marking hidden positions in states (default ``vocab_size``; never given to the model).
    do_sample : draw the next token from the processed distribution (True) or take its argmax.
    processor : optional ``processor(input_ids, scores) -> scores`` applied to the float32 next-token
        logits before sampling (a ``transformers`` ``LogitsProcessorList``).
    eos_token_id : an id (or several): once a sequence has produced one, later positions get
        ``pad_token_id`` (as ``transformers``' ``generate`` does; default pad: the first eos id).
    levels : decreasing integers from at most L down to 0 (default every count ``L, L-1, ..., 0``).
    name, device : as for :class:`MaskedDiffusionProcess`.

    Examples
    --------
    >>> import torch
    >>> counting = lambda ids: torch.nn.functional.one_hot((ids + 1) % 5, 5).float() * 10
    >>> process = AutoregressiveProcess(counting, length=3, vocab_size=5, prompt=[0], do_sample=False)
    >>> process.run(process.prior(1))
    tensor([[1, 2, 3]])
    """

    clock = "hidden"
    continuous = False

    def __init__(
        self,
        model: Callable,
        length: int,
        vocab_size: int,
        prompt,
        mask_id: int | None = None,
        do_sample: bool = True,
        processor: Callable | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        levels=None,
        name: str | None = None,
        device=None,
    ):
        if not callable(model):
            raise ValueError(f"model must be callable input_ids -> logits, got {type(model).__name__}")
        self.model = model
        self.length = check_positive_int(length, "length")
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", minimum=2)
        self.mask_id = (
            self.vocab_size if mask_id is None else check_positive_int(mask_id, "mask_id", minimum=0)
        )
        self.device = _model_device(model, device)
        prompt = torch.as_tensor(prompt).reshape(1, -1)
        if prompt.shape[1] == 0:
            raise ValueError("prompt must hold at least one token id (e.g. a beginning-of-sequence token)")
        # Any id the model embeds: a beginning-of-sequence id may lie outside the scored vocabulary.
        self.prompt = check_token_ids(prompt, "prompt", prompt.shape[1], 2**62).to(self.device)[0]
        self.do_sample = bool(do_sample)
        if processor is not None and not callable(processor):
            raise ValueError(
                f"processor must be callable (input_ids, scores) -> scores, got {type(processor).__name__}"
            )
        self.processor = processor
        eos = (
            [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        )
        self.eos_token_ids = [check_positive_int(e, "eos_token_id", 0) for e in eos]
        if pad_token_id is None:
            self.pad_token_id = self.eos_token_ids[0] if self.eos_token_ids else None
        else:
            self.pad_token_id = check_positive_int(pad_token_id, "pad_token_id", 0)
        levels = torch.arange(self.length, -1, -1, dtype=torch.float64) if levels is None else levels
        self._times = LevelGrid(levels, "hidden", self.length).times
        self.name = _model_name(model, name)
        self.nfe = 0

    def add_noise(self, x0, index, generator=None):
        """Hide the last ``times[index]`` tokens of the clean ``x0`` (deterministic: no randomness)."""
        x0 = self.check_tokens(x0)
        hidden = int(self._times[self.grid.check_index(index)].item())
        out = x0.clone()
        out[:, self.length - hidden :] = self.mask_id
        return out

    def next_scores(self, x: torch.Tensor, position: int) -> torch.Tensor:
        """(n, V) float32 processed scores of the token at ``position`` given ``x[:, :position]``."""
        prompt = self.prompt.expand(x.shape[0], -1)
        ids = torch.cat([prompt, x[:, :position]], 1)
        step = f"position {position} (hidden {self.length - position} -> {self.length - position - 1})"
        logits = model_logits(self.model, ids, ids.shape[1], self.vocab_size, self.name, step)
        self.nfe += int(x.shape[0])
        scores = logits[:, -1, :].to(dtype=torch.float32)
        if self.processor is not None:
            scores = self.processor(ids, scores)
        return scores

    def _step(self, x, index, generator, callback):
        first = self.length - int(self._times[index].item())
        last = self.length - int(self._times[index + 1].item())
        x = x.clone()
        for position in range(first, last):
            scores = self.next_scores(x, position)
            if callback is not None and position == first:
                x0_hat = torch.nn.functional.one_hot(
                    x.clamp(max=self.vocab_size - 1), self.vocab_size
                ).double()
                x0_hat[:, position:] = 0.0
                x0_hat[:, position] = torch.softmax(scores.double(), -1)
                callback(index, float(self.length - first), x, x0_hat)
            if self.do_sample:
                token = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)[:, 0]
            else:
                token = scores.argmax(-1)
            if self.eos_token_ids:
                finished = torch.isin(x[:, :position], torch.tensor(self.eos_token_ids, device=x.device)).any(
                    1
                )
                token = torch.where(finished, torch.full_like(token, self.pad_token_id), token)
            x[:, position] = token
        return x

    def describe(self):
        return {
            **super().describe(),
            "sampler": "autoregressive" + ("" if self.do_sample else "-greedy"),
            "model": self.name,
            "prompt": self.prompt.tolist(),
            "processor": None if self.processor is None else repr(self.processor),
            "eos_token_id": self.eos_token_ids,
        }


class CategoricalProcess(TokenProcess):
    """A ``CategoricalMixture`` sampled exactly: posterior draws, no model (the exact reference).

    Parameters
    ----------
    mixture : a :class:`~critwin.mixtures.categorical.CategoricalMixture`; its noise fixes the clock
        (``"mask"``/``"uniform"``: kappa; ``"autoregressive"``: hidden positions).
    n_steps : steps of the default kappa grid (kappa clocks only).
    times : explicit decreasing levels ending at 0 (default: ``n_steps`` kappa steps, or every count of
        hidden positions ``L, ..., 0``).

    Notes
    -----
    :meth:`run` draws the state at the stop level in one exact transition (``sample_posterior`` to level
    0, ``sample_reverse`` otherwise): one per-sequence evaluation each, like a mixture's ``"exact"``
    sampler; a callback makes it step through the grid. :meth:`prior` draws from the exact noised law
    at ``times[0]``. ``feature="component"`` follows the latent component.

    Examples
    --------
    >>> import torch
    >>> from critwin.mixtures.categorical import CategoricalMixture
    >>> two = CategoricalMixture.from_strings([[0, 0, 0], [1, 1, 1]], vocab_size=2)
    >>> process = CategoricalProcess(two, n_steps=4)
    >>> x = process.run(process.prior(3, torch.Generator().manual_seed(0)))
    >>> bool(((x == 0).all(1) | (x == 1).all(1)).all())
    True
    """

    sampler = "exact"

    def __init__(self, mixture: CategoricalMixture, n_steps: int = 50, times=None):
        if not isinstance(mixture, CategoricalMixture):
            raise ValueError(f"mixture must be a CategoricalMixture, got {type(mixture).__name__}")
        self.mixture = mixture
        self.clock = mixture.clock
        self.continuous = self.clock == "kappa"
        self.length, self.vocab_size, self.mask_id = mixture.length, mixture.vocab_size, mixture.mask_id
        self.device = mixture.probs.device
        if times is None:
            L = self.length
            times = kappa_levels(n_steps) if self.continuous else torch.arange(L, -1, -1, dtype=torch.float64)
        self._times = LevelGrid(times, self.clock, self.length).times
        self.nfe = 0

    def _level(self, index: int):
        value = self._times[index].item()
        return int(value) if self.clock == "hidden" else value

    def check_state(self, x, name: str = "x") -> torch.Tensor:
        high = self.vocab_size if self.mixture.noise == "uniform" else self.mask_id + 1
        return check_token_ids(x, name, self.length, high).to(self.device)

    def prior(self, n, generator=None, device=None, dtype=None):
        clean, _ = self.mixture.sample(check_positive_int(n, "n"), generator=generator)
        return self.mixture.noise_tokens(clean, self._level(0), generator=generator)

    def add_noise(self, x0, index, generator=None):
        index = self.grid.check_index(index)
        return self.mixture.noise_tokens(self.check_tokens(x0), self._level(index), generator=generator)

    def transition(self, x, start: int, stop: int, generator=None):
        """One exact draw from grid index ``start`` to ``stop``: ``(state, component labels)``."""
        self.nfe += int(x.shape[0])
        if self._times[stop].item() == 0.0:
            return self.mixture.sample_posterior(x, self._level(start), generator=generator)
        return self.mixture.sample_reverse(x, self._level(start), self._level(stop), generator=generator)

    def run(self, x, start=0, stop=None, generator=None, callback=None, cond=None):
        _no_cond(cond, "CategoricalProcess")
        check_generator(generator)
        start, stop = self.grid.check_span(start, stop)
        x = self.check_state(x)
        if stop == start:
            return x
        if callback is None:
            return self.transition(x, start, stop, generator)[0]
        for index in range(start, stop):
            callback(index, self._times[index].item(), x, self.mixture.denoise(x, self._level(index)))
            x = self.transition(x, index, index + 1, generator)[0]
        return x

    def with_times(self, times):
        return CategoricalProcess(self.mixture, times=times)

    def describe(self):
        mixture = self.mixture
        return {
            **super().describe(),
            "sampler": "exact",
            "noise": mixture.noise,
            "model": {
                "kind": "CategoricalMixture",
                "n_components": mixture.n_components,
                "fingerprint": fingerprint(mixture.probs, mixture.weights),
            },
        }


def _categorical_process(mixture, sampler, n_steps, t_max, eta) -> CategoricalProcess:
    """:func:`~critwin.experiments.process.as_process` for a ``CategoricalMixture``."""
    if sampler not in (None, "exact") or eta is not None:
        raise ValueError("a CategoricalMixture is sampled exactly: pass sampler=None (or 'exact') and no eta")
    if t_max is not None and mixture.clock != "kappa":
        raise ValueError("t_max sets the largest kappa; the autoregressive clock always starts at L")
    if t_max is None and n_steps is None:
        return CategoricalProcess(mixture)
    if mixture.clock == "kappa":
        return CategoricalProcess(mixture, times=kappa_levels(n_steps or 50, 1.0 if t_max is None else t_max))
    raise ValueError("n_steps sets the kappa grid; the autoregressive clock steps one position at a time")


register_mixture_process(CategoricalMixture, _categorical_process)
