"""``transformers`` causal language models as an :class:`~critwin.experiments.AutoregressiveProcess`.

:func:`causal_lm_process` wraps any ``AutoModelForCausalLM`` (and its tokenizer, for a text prompt) so
that forward–reverse ("keep the first k generated tokens, resample the rest") and cloning run on it on
the autoregressive clock (the number of hidden positions at the end). Sampling is critwin's own loop
with a ``torch.Generator`` (``generate()`` draws from the global RNG), applying the model's own
generation settings through transformers' public logits processors in the order ``generate()`` applies
them (repetition penalty, then temperature, top-k, top-p, min-p), so every step's distribution is
``generate()``'s and greedy decoding (``do_sample=False``) is ``generate(do_sample=False)`` token for
token. Settings that change the distribution in other ways (beam search, n-gram bans, forced tokens,
...) are refused by name rather than ignored.

Each step recomputes the logits of the whole prefix (no key-value cache): the cost is quadratic in the
prompt plus generated length, fine for the short continuations critical windows are measured on.

Masked-diffusion models need no adapter: a ``BertForMaskedLM``-like model returns ``.logits`` of shape
``(n, L, V)`` and is a valid ``model`` of :class:`~critwin.experiments.MaskedDiffusionProcess`
(pass ``mask_id=tokenizer.mask_token_id``).

``transformers`` is imported when a process is built, never by ``import critwin``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from critwin._validation import check_positive_int, check_token_ids
from critwin.experiments.token_process import AutoregressiveProcess

__all__ = ["causal_lm_process", "generation_processors", "SUPPORTED_SETTINGS"]

SUPPORTED_SETTINGS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")
"""Generation settings that :func:`causal_lm_process` applies (as ``generate()`` does)."""
_REFUSED = (
    "num_beams",
    "num_beam_groups",
    "penalty_alpha",
    "guidance_scale",
    "sequence_bias",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "typical_p",
    "top_h",
    "epsilon_cutoff",
    "eta_cutoff",
    "exponential_decay_length_penalty",
    "renormalize_logits",
    "remove_invalid_values",
    "watermarking_config",
    "constraints",
    "force_words_ids",
    "dola_layers",
    "diversity_penalty",
)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ValueError(
            "the transformers adapter needs the transformers package (pip install transformers)"
        ) from None
    return transformers


def _check_settings(config) -> None:
    """Refuse every setting of ``config`` that changes the next-token distribution and is not applied."""
    default = _transformers().GenerationConfig()
    for key in _REFUSED:
        value, usual = getattr(config, key, None), getattr(default, key, None)
        if key in ("num_beams", "num_beam_groups") and value in (None, 1):
            continue
        if value != usual and value not in (None, False):
            raise ValueError(
                f"generation setting {key}={value!r} is not supported by critwin's sampler (it applies "
                f"{', '.join(SUPPORTED_SETTINGS)}); pass {key}={usual!r} to override it"
            )


def generation_processors(config) -> Any:
    """The ``LogitsProcessorList`` of ``config``'s supported settings, in ``generate()``'s order.

    Parameters
    ----------
    config : a ``transformers.GenerationConfig``.

    Returns
    -------
    ``LogitsProcessorList`` (empty when nothing changes the raw logits).
    """
    tf = _transformers()
    processors = tf.LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(tf.RepetitionPenaltyLogitsProcessor(penalty=config.repetition_penalty))
    if not config.do_sample:
        return processors  # warpers apply to sampling only, as in generate()
    if config.temperature is not None and config.temperature != 1.0:
        processors.append(tf.TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None and config.top_k != 0:
        processors.append(tf.TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
    if config.top_p is not None and config.top_p < 1.0:
        processors.append(tf.TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    if config.min_p is not None:
        processors.append(tf.MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=1))
    return processors


def _prompt_ids(model, tokenizer, prompt, prompt_ids, config) -> torch.Tensor:
    if prompt is not None and prompt_ids is not None:
        raise ValueError("prompt and prompt_ids are exclusive")
    if prompt is not None:
        if tokenizer is None:
            raise ValueError("prompt (text) needs the model's tokenizer; or pass prompt_ids")
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"][0]
    elif prompt_ids is not None:
        ids = torch.as_tensor(prompt_ids).reshape(-1)
    else:
        bos = config.bos_token_id if config.bos_token_id is not None else model.config.bos_token_id
        if bos is None:
            raise ValueError("prompt: the model has no bos_token_id; pass prompt= or prompt_ids=")
        ids = torch.tensor([bos])
    if ids.numel() == 0:
        raise ValueError("prompt tokenises to no tokens; a causal LM needs at least one")
    embedded = model.get_input_embeddings().num_embeddings
    what = f"the {embedded} ids the model embeds: a tokenizer or ids of another model?"
    return check_token_ids(ids.reshape(1, -1), "prompt", ids.numel(), embedded, what)[0]


def causal_lm_process(
    model,
    tokenizer=None,
    *,
    prompt: str | None = None,
    prompt_ids=None,
    max_new_tokens: int | None = None,
    generation_config=None,
    name: str | None = None,
    **settings,
) -> AutoregressiveProcess:
    """A causal LM generating ``max_new_tokens`` tokens after a prompt, as a process.

    Parameters
    ----------
    model : a ``transformers`` causal LM (``model(input_ids=..., attention_mask=...).logits``).
    tokenizer : its tokenizer (needed for a text ``prompt``).
    prompt, prompt_ids : the fixed prompt, as text or ids (default: the model's BOS token).
    max_new_tokens : the generated length L (default: the generation config's ``max_new_tokens``).
    generation_config : default ``model.generation_config``; ``settings`` (e.g. ``do_sample=False``,
        ``temperature=0.7``, ``top_k=20``) override its fields.
    name : the model's name in provenance (default: its ``name_or_path``).

    Returns
    -------
    AutoregressiveProcess: states ``(n, L)`` of generated ids (the mask id ``vocab_size`` where hidden);
    ``eos_token_id``/``pad_token_id`` from the generation config (finished sequences are padded, as by
    ``generate()``).

    Examples
    --------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> gpt = GPT2LMHeadModel(GPT2Config(vocab_size=11, n_positions=16, n_embd=8, n_layer=1, n_head=2)).eval()
    >>> process = causal_lm_process(gpt, prompt_ids=[0, 1], max_new_tokens=4, do_sample=False)
    >>> process.run(process.prior(2)).shape
    torch.Size([2, 4])
    """
    config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    unknown = sorted(key for key in settings if not hasattr(config, key))
    if unknown:
        raise ValueError(f"unknown generation settings {unknown}")
    config.update(**settings)
    _check_settings(config)
    length = config.max_new_tokens if max_new_tokens is None else max_new_tokens
    if length is None:
        raise ValueError(
            "max_new_tokens: give the number of generated tokens (the generation config has none)"
        )
    length = check_positive_int(length, "max_new_tokens")
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    vocab_size = check_positive_int(text_config.vocab_size, "the model's vocab_size", minimum=2)
    ids = _prompt_ids(model, tokenizer, prompt, prompt_ids, config)
    device = next(model.parameters()).device

    def logits(input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(input_ids)
        return model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits

    eos = config.eos_token_id if config.eos_token_id is not None else model.config.eos_token_id
    return AutoregressiveProcess(
        logits,
        length,
        vocab_size,
        prompt=ids.to(device),
        do_sample=bool(config.do_sample),
        processor=generation_processors(config) or None,
        eos_token_id=eos,
        pad_token_id=config.pad_token_id,
        name=name or getattr(model, "name_or_path", None) or type(model).__name__,
        device=device,
    )
