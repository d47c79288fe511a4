"""A word-level CLIP tokenizer built offline from the caption vocabulary (no download).

``StableDiffusionPipeline`` expects a ``transformers.CLIPTokenizer``: byte-pair encoding over characters
with ``</w>`` marking a word's end, from a ``vocab.json`` and a ``merges.txt``. :func:`bpe_merges` learns
merges on the caption words until every word is one symbol (standard BPE training: the most frequent
adjacent pair first, ties broken by the pair's text), so encoding a vocabulary word replays the same
merges and gives one token per word. :func:`write_tokenizer_files` writes both files;
:func:`build_tokenizer` loads them as a ``CLIPTokenizer`` (needs transformers).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from critwin._validation import check_positive_int

__all__ = [
    "START_TOKEN",
    "END_TOKEN",
    "bpe_merges",
    "tokenizer_vocabulary",
    "write_tokenizer_files",
    "build_tokenizer",
]

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
"""CLIP's special tokens; the end token also pads and stands for unknown characters."""


def _symbols(word: str) -> list[str]:
    """A word as BPE starts it: its characters, the last one marked as the word's end."""
    return [*word[:-1], word[-1] + "</w>"]


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def bpe_merges(words: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges that turn each of ``words`` into a single symbol, in rank order.

    Examples
    --------
    >>> bpe_merges(["on", "a"])
    [('o', 'n</w>')]
    """
    if not words or not all(isinstance(w, str) and w and not any(c.isspace() for c in w) for w in words):
        raise ValueError("words must be a non-empty sequence of non-empty strings without spaces")
    pieces = {word: _symbols(word) for word in dict.fromkeys(words)}
    merges = []
    while True:
        pairs = Counter(
            pair for symbols in pieces.values() for pair in zip(symbols, symbols[1:], strict=False)
        )
        if not pairs:
            return merges
        best = max(sorted(pairs), key=lambda pair: pairs[pair])
        merges.append(best)
        pieces = {word: _merge(symbols, best) for word, symbols in pieces.items()}


def tokenizer_vocabulary(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)``: token -> id (special tokens 0 and 1, then every BPE symbol) and the merges."""
    merges = bpe_merges(words)
    symbols = [START_TOKEN, END_TOKEN]
    for word in dict.fromkeys(words):
        symbols += _symbols(word)
    symbols += [a + b for a, b in merges]
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    return vocab, merges


def write_tokenizer_files(directory, words: Sequence[str]) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` of a word-level CLIP tokenizer of ``words``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = tokenizer_vocabulary(words)
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, indent=1) + "\n")
    merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_file, merges_file


def build_tokenizer(directory, words: Sequence[str], model_max_length: int):
    """A ``transformers.CLIPTokenizer`` of ``words`` (files written into ``directory``).

    Parameters
    ----------
    directory : where ``vocab.json`` and ``merges.txt`` go.
    words : the vocabulary (:func:`~critwin.models.shapes_t2i.captions.vocabulary`).
    model_max_length : tokens per prompt, start and end tokens included (prompts are padded to it).

    Returns
    -------
    CLIPTokenizer whose ``pad_token`` is the end token (as Stable Diffusion's).

    Examples
    --------
    >>> import tempfile
    >>> tokenizer = build_tokenizer(tempfile.mkdtemp(), ["a", "circle"], 8)
    >>> tokenizer.convert_ids_to_tokens(tokenizer("a circle")["input_ids"])
    ['<|startoftext|>', 'a</w>', 'circle</w>', '<|endoftext|>']
    """
    from transformers import CLIPTokenizer

    model_max_length = check_positive_int(model_max_length, "model_max_length", minimum=3)
    vocab_file, merges_file = write_tokenizer_files(directory, words)
    return CLIPTokenizer(
        str(vocab_file), str(merges_file), pad_token=END_TOKEN, model_max_length=model_max_length
    )
