"""The transformers adapter: critwin's seeded sampling loop against ``generate()`` on a tiny GPT-2.

``generate()`` is the reference: greedy decoding must match it token for token; sampling with the same
seed too (its only random draw per step is one ``torch.multinomial`` on the global RNG, which a
``torch.Generator`` seeded alike reproduces), and the processed next-token scores must equal its
``output_scores``. Masked-diffusion models enter through the callable interface (a tiny BERT).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from critwin.adapters.transformers import causal_lm_process  # noqa: E402
from critwin.experiments import MaskedDiffusionProcess  # noqa: E402
from critwin.experiments.cloning import clone  # noqa: E402
from critwin.experiments.forward_reverse import forward_reverse  # noqa: E402

VOCAB, EOS, L = 23, 22, 10
PROMPT = torch.tensor([0, 5, 7])


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=EOS
    )
    return transformers.GPT2LMHeadModel(config).eval()


def generated(gpt, n, **settings):
    ids = PROMPT.repeat(n, 1)
    out = gpt.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=L, pad_token_id=EOS, **settings
    )
    out = out[:, PROMPT.numel() :]
    # generate() stops once every row has finished; the rest would be padding.
    return torch.cat([out, torch.full((n, L - out.shape[1]), EOS, dtype=torch.long)], 1)


def test_greedy_equals_generate_token_for_token(gpt):
    process = causal_lm_process(gpt, prompt_ids=PROMPT, max_new_tokens=L, do_sample=False, pad_token_id=EOS)
    assert process.clock == "hidden" and process.describe()["sampler"] == "autoregressive-greedy"
    assert torch.equal(process.run(process.prior(1)), generated(gpt, 1, do_sample=False))


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.7, "top_k": 5, "top_p": 0.9}])
def test_seeded_sampling_equals_generate_with_the_same_seed(gpt, settings):
    process = causal_lm_process(
        gpt, prompt_ids=PROMPT, max_new_tokens=L, do_sample=True, pad_token_id=EOS, **settings
    )
    mine = process.run(process.prior(64), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(3)
    assert torch.equal(mine, generated(gpt, 64, do_sample=True, **settings))
    finished = (mine[:, :-1] == EOS).any(1)
    assert finished.any()  # the eos/padding path ran: after an eos, every token is the pad id
    first = (mine == EOS).int().argmax(1)
    for row in finished.nonzero()[:, 0].tolist():
        assert (mine[row, first[row] :] == EOS).all()


def test_processed_scores_are_generates(gpt):
    settings = {"temperature": 0.6, "top_k": 7, "top_p": 0.8, "repetition_penalty": 1.3}
    torch.manual_seed(1)
    ids = PROMPT.repeat(2, 1)
    out = gpt.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=4,
        do_sample=True,
        pad_token_id=EOS,
        output_scores=True,
        return_dict_in_generate=True,
        **settings,
    )
    process = causal_lm_process(gpt, prompt_ids=PROMPT, max_new_tokens=4, do_sample=True, **settings)
    state = out.sequences[:, PROMPT.numel() :]
    for position, scores in enumerate(out.scores):
        torch.testing.assert_close(process.next_scores(state, position), scores, rtol=1e-5, atol=1e-5)


def test_unsupported_settings_are_refused_by_name(gpt):
    with pytest.raises(ValueError, match=r"generation setting num_beams=2 is not supported"):
        causal_lm_process(gpt, prompt_ids=PROMPT, max_new_tokens=4, num_beams=2)
    with pytest.raises(ValueError, match=r"no_repeat_ngram_size=2 is not supported"):
        causal_lm_process(gpt, prompt_ids=PROMPT, max_new_tokens=4, no_repeat_ngram_size=2)
    with pytest.raises(ValueError, match=r"unknown generation settings \['nonsense'\]"):
        causal_lm_process(gpt, prompt_ids=PROMPT, max_new_tokens=4, nonsense=1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        causal_lm_process(gpt, prompt_ids=PROMPT)
    with pytest.raises(ValueError, match="prompt .text. needs the model's tokenizer"):
        causal_lm_process(gpt, prompt="hello", max_new_tokens=4)


def word_tokenizer(words):
    """A fast tokenizer over ``words`` (id = position), built locally: nothing is downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=words[0])


def test_a_text_prompt_is_tokenised_and_a_foreign_vocabulary_is_refused(gpt):
    words = [f"w{i}" for i in range(VOCAB)]
    tokenizer = word_tokenizer(words)
    text = " ".join(words[int(i)] for i in PROMPT)
    from_text = causal_lm_process(gpt, tokenizer, prompt=text, max_new_tokens=L, do_sample=False)
    assert torch.equal(from_text.prompt, PROMPT)
    assert torch.equal(from_text.run(from_text.prior(1)), generated(gpt, 1, do_sample=False))
    # A tokenizer of a larger vocabulary gives ids the model cannot embed: one clear error, no IndexError.
    foreign = word_tokenizer([f"w{i}" for i in range(VOCAB + 8)])
    with pytest.raises(ValueError, match=rf"prompt holds token id {VOCAB + 3} .*outside 0..{VOCAB - 1} "):
        causal_lm_process(gpt, foreign, prompt=f"w1 w{VOCAB + 3}", max_new_tokens=L)
    with pytest.raises(ValueError, match=r"prompt holds token id -1"):
        causal_lm_process(gpt, prompt_ids=[0, -1], max_new_tokens=L)
    with pytest.raises(ValueError, match="prompt and prompt_ids are exclusive"):
        causal_lm_process(gpt, tokenizer, prompt=text, prompt_ids=PROMPT, max_new_tokens=L)


def test_sampled_frequencies_follow_the_processed_distribution(gpt):
    """Beyond equal draws for one seed: over many seeded draws, the first generated token's frequencies
    are the softmax of generate()'s processed scores (min-p included, which the seed test leaves out)."""
    settings = {"temperature": 0.1, "min_p": 0.2}  # 16 of the 23 tokens fall below min-p here
    process = causal_lm_process(gpt, prompt_ids=PROMPT, max_new_tokens=1, do_sample=True, **settings)
    n = 20000
    first = process.run(process.prior(n), generator=torch.Generator().manual_seed(5))[:, 0]
    torch.manual_seed(0)
    ids = PROMPT.reshape(1, -1)
    out = gpt.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=1,
        do_sample=True,
        pad_token_id=EOS,
        output_scores=True,
        return_dict_in_generate=True,
        **settings,
    )
    p = torch.softmax(out.scores[0][0].double(), -1)
    freq = torch.bincount(first, minlength=VOCAB).double() / n
    assert (p == 0).any() and (freq[p == 0] == 0).all()  # min-p removed tokens are never drawn
    # Each frequency is a binomial mean: 5 standard errors sqrt(p (1 - p) / n) (<= 0.018) bound it.
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12).all()


def test_forward_reverse_and_cloning_on_gpt2_are_reproducible(gpt):
    process = causal_lm_process(gpt, prompt_ids=PROMPT, max_new_tokens=6, do_sample=True)
    x0 = process.run(process.prior(6), generator=torch.Generator().manual_seed(0))

    def parity(x):
        return x[:, -1] % 2

    args = dict(feature=parity, progress=False)
    first = forward_reverse(process, x0, [0, 2, 4, 6], 3, seed=11, **args)
    again = forward_reverse(process, x0, [0, 2, 4, 6], 3, seed=11, **args)
    other = forward_reverse(process, x0, [0, 2, 4, 6], 3, seed=12, **args)
    assert torch.equal(first.labels, again.labels) and not torch.equal(first.labels, other.labels)
    assert (first.labels[0] == first.source_labels[0]).all()  # nothing hidden: the source itself
    cloned = [clone(process, 5, [1, 3, 5], 2, seed=s, **args).clone_labels for s in (4, 4, 5)]
    assert torch.equal(cloned[0], cloned[1]) and not torch.equal(cloned[0], cloned[2])
    assert first.metadata["clock"] == "hidden" and first.nfe > 0


def test_a_masked_language_model_runs_through_the_callable_interface():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=12, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    bert = transformers.BertForMaskedLM(config).eval()
    mask_id = 3  # an id inside BERT's vocabulary, as [MASK] is: it must never be sampled
    process = MaskedDiffusionProcess(bert, 6, 12, mask_id=mask_id, sampler="first-hitting", name="tiny-bert")
    out = process.run(process.prior(32), generator=torch.Generator().manual_seed(0))
    assert out.shape == (32, 6) and not (out == mask_id).any()
    assert process.nfe == 32 * 6  # one call per revealed token
    wrong = MaskedDiffusionProcess(bert, 6, 11, mask_id=mask_id, name="tiny-bert")
    with pytest.raises(
        ValueError, match=r"model tiny-bert returned logits of shape \(\d+, 6, 12\) at step .*vocabulary"
    ):
        wrong.run(wrong.prior(2), generator=torch.Generator().manual_seed(0))
