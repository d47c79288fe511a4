"""SD3 with text prompts: tiny CLIP x2 + T5 encoders and tokenizers (built offline), prompts through the
pipeline's own ``encode_prompt``; the adapter against the stock pipeline and the CLI's ``--prompt``."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")

from adapter_checks import read_table, run_sweep  # noqa: E402
from critwin.adapters.diffusers import from_pipeline, record_pipeline_trajectory  # noqa: E402
from tiny_models import tiny_sd3_with_text  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return tiny_sd3_with_text(tmp_path_factory.mktemp("sd3_text"))


@torch.no_grad()  # as the pipeline's __call__ (inference-mode attention kernels differ in the last bits)
def _encoded(pipe, prompt, negative_prompt):
    return pipe.encode_prompt(
        prompt, None, None, device="cpu", do_classifier_free_guidance=True, negative_prompt=negative_prompt
    )


def test_text_prompt_conditioning_is_the_pipelines_encoding(pipe):
    process = from_pipeline(pipe, STEPS, 3.0, prompt="a cat", negative_prompt="blurry")
    positive, negative, pooled, negative_pooled = _encoded(pipe, "a cat", "blurry")
    # 16 CLIP tokens + 256 T5 tokens, 16 wide; pooled CLIP projections 4 + 4.
    assert positive.shape == (1, 272, 16) and pooled.shape == (1, 8)
    assert torch.equal(process.cond["encoder_hidden_states"], positive)
    assert torch.equal(process.cond["text_embeds"], pooled)
    assert torch.equal(process.uncond["encoder_hidden_states"], negative)
    assert torch.equal(process.uncond["text_embeds"], negative_pooled)
    assert not process.cond["encoder_hidden_states"].requires_grad  # no autograd graph kept alive
    # The T5 part carries the prompt: another prompt changes it.
    other = _encoded(pipe, "a dog", "blurry")[0]
    assert not torch.equal(other[:, 16:], positive[:, 16:])


def test_text_prompt_trajectory_equals_the_stock_pipeline(pipe):
    process = from_pipeline(pipe, STEPS, 3.0, prompt="a cat", negative_prompt="blurry")
    states, _ = record_pipeline_trajectory(
        pipe,
        process,
        n=2,
        generator=torch.Generator().manual_seed(3),
        prompt="a cat",
        negative_prompt="blurry",
        num_images_per_prompt=2,
        guidance_scale=3.0,
    )
    seen = []
    final = process.run(states[0], callback=lambda i, t, x, x0: seen.append(x))
    assert all(torch.equal(x, states[i]) for i, x in enumerate(seen))
    assert torch.equal(final, states[-1])


def test_cli_sweep_with_a_prompt_equals_its_embeddings(pipe, tmp_path, capsys):
    from safetensors.torch import save_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.save_pretrained(tmp_path / "sd3")
    positive, negative, pooled, negative_pooled = _encoded(pipe, "a cat", "blurry")
    embeds = {
        "prompt_embeds": positive,
        "negative_prompt_embeds": negative,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }
    save_file(embeds, str(tmp_path / "e.safetensors"))
    common = [
        "sweep", "--model", str(tmp_path / "sd3"), "--guidance", "3", "--steps", "4", "--times", "0.5,1.5",
        "--n", "2", "--n-per-time", "1", "--no-progress",
    ]  # fmt: skip
    runs = {
        "prompt": ["--prompt", "a cat", "--negative-prompt", "blurry"],
        "embeds": ["--prompt-embeds", str(tmp_path / "e.safetensors")],
    }
    tables = {}
    for name, extra in runs.items():
        run_sweep([*common, *extra, "--out", str(tmp_path / name)], capsys)
        tables[name] = read_table(tmp_path / name)
    assert tables["prompt"] == tables["embeds"] and len(tables["prompt"]) == 4
