"""DiTPipeline, PixArt and Flux through from_pipeline, against the stock pipelines' own latents.

Each stock pipeline runs unmodified; its latents are read where it exposes them (Flux's
``callback_on_step_end``, PixArt's legacy ``callback``) or from its scheduler's ``step`` outputs (DiT has no
callback), and compared byte for byte with the adapter's trajectory from the same initial noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapter_checks import assert_sweeps_report_realised_times, realised_times, run_sweep
from critwin.adapters.diffusers import from_pipeline, record_pipeline_trajectory
from critwin.adapters.diffusers.families import model_family
from critwin.clock import ou_time
from tiny_models import tiny_dit_pipeline, tiny_flux, tiny_pixart

STEPS = 4
# DDIM's default 4-step grid starts at timestep 750, which still carries signal: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")


def _randn(seed: int, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ DiT
@pytest.fixture(scope="module")
def dit():
    return tiny_dit_pipeline(0)


def _record_scheduler_steps(pipe):
    """Wrap ``pipe.scheduler.step`` to keep every ``prev_sample`` the stock loop produces."""
    states = []
    step = pipe.scheduler.step

    def recording_step(*args, **kwargs):
        out = step(*args, **kwargs)
        states.append((out[0] if isinstance(out, tuple) else out.prev_sample).clone())
        return out

    pipe.scheduler.step = recording_step
    return states


@pytest.mark.parametrize("solver", ["ddim", "dpm++"])
def test_dit_pipeline_trajectory_equals_the_stock_pipeline(solver):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    # DDIM; DPM-Solver++ is what the DiT model card swaps in.
    dit = tiny_dit_pipeline(0, {"ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler}[solver]())
    labels, scale = [3, 999], 4.0
    process = from_pipeline(dit, STEPS, scale, class_labels=labels)
    # The DiT pipeline's null class is its transformer's num_embeds_ada_norm (hard-coded 1000 there).
    assert process.uncond["class_labels"].tolist() == [1000] == [dit.transformer.config.num_embeds_ada_norm]
    assert model_family(dit.transformer) == "dit"
    states = _record_scheduler_steps(dit)
    try:
        dit(
            labels,
            guidance_scale=scale,
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(5),
        )
    finally:
        del dit.scheduler.step
    # The pipeline draws randn(B, C, S, S) from the generator first, as process.prior does.
    x = process.prior(2, torch.Generator().manual_seed(5))
    seen = []
    final = process.run(x, callback=lambda i, t, state, x0: seen.append(state))
    # The stock loop steps both guidance halves (identical); the first half is the conditional batch.
    stock = [s[:2] for s in states]
    assert all(torch.equal(a, b) for a, b in zip(seen[1:], stock[:-1], strict=True))
    assert torch.equal(final, stock[-1])


def test_dit_learned_sigma_x0_and_labels(dit):
    process = from_pipeline(dit, STEPS, 1.0, class_labels=[5])
    x = process.prior(2, torch.Generator().manual_seed(1))
    seen = {}
    process.run(x, stop=1, callback=lambda i, t, state, x0: seen.setdefault(i, (t, x0)))
    t, x0 = seen[0]
    # x0 from the epsilon half of the 8-channel output (DDIM: epsilon prediction), by hand.
    with torch.no_grad():
        eps = dit.transformer(x, timestep=process.timesteps[:1].expand(2), class_labels=torch.tensor([5, 5]))
    eps = eps.sample[:, :4]
    alpha_bar = dit.scheduler.alphas_cumprod[int(process.timesteps[0])].double()
    assert t == pytest.approx(float(ou_time(alpha_bar=alpha_bar)), rel=1e-12)
    expected = (x.double() - (1 - alpha_bar).sqrt() * eps.double()) / alpha_bar.sqrt()
    torch.testing.assert_close(x0.double(), expected, rtol=1e-5, atol=1e-5)  # float32 network output
    with pytest.raises(ValueError, match="class indices in 0..1000"):
        from_pipeline(dit, STEPS, 1.0, class_labels=[1001]).run(x)
    with pytest.raises(ValueError, match="class_labels"):
        from_pipeline(dit, STEPS, 4.0)


# --------------------------------------------------------------------------------------------- PixArt
@pytest.fixture(scope="module")
def pixart():
    return tiny_pixart(0)


def _pixart_text(seed: int):
    embeds = _randn(seed, 1, 6, 12)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])  # two padding tokens, masked out of cross-attention
    return embeds, mask


def _stock_pixart(pipe, noise, guidance_scale, steps=STEPS, **text) -> list[torch.Tensor]:
    """The stock PixArt pipeline's latents after each step (its legacy ``callback``), from ``noise``."""
    stock = []
    pipe(
        **text,
        guidance_scale=guidance_scale,
        num_inference_steps=steps,
        latents=noise.clone(),
        output_type="latent",
        use_resolution_binning=False,  # its size bins are for 256-1024 pixel models
        callback=lambda i, t, latents: stock.append(latents.clone()),
        callback_steps=1,
    )
    return stock


@pytest.mark.parametrize("sigma", [False, True])
def test_pixart_trajectory_equals_the_stock_pipeline(sigma):
    pixart = tiny_pixart(0, sigma=sigma)
    (pe, pm), (ne, nm), scale = _pixart_text(1), _pixart_text(2), 4.5
    process = from_pipeline(
        pixart,
        STEPS,
        scale,
        prompt_embeds=pe,
        prompt_attention_mask=pm,
        negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm,
    )
    assert model_family(pixart.transformer) == "pixart" and process.sample_shape == (4, 8, 8)
    noise = _randn(3, 1, *process.sample_shape)
    stock = _stock_pixart(
        pixart,
        noise,
        scale,
        prompt_embeds=pe,
        prompt_attention_mask=pm,
        negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm,
        negative_prompt=None,
    )
    seen = []
    final = process.run(noise.clone(), callback=lambda i, t, state, x0: seen.append(state))
    assert all(torch.equal(a, b) for a, b in zip(seen[1:], stock[:-1], strict=True))
    assert torch.equal(final, stock[-1])
    # The mask matters: unmasking the padding changes the trajectory.
    unmasked = from_pipeline(
        pixart,
        STEPS,
        scale,
        prompt_embeds=pe,
        prompt_attention_mask=torch.ones_like(pm),
        negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm,
    )
    assert not torch.equal(unmasked.run(noise.clone()), final)


def test_pixart_micro_conditioning_of_the_1024_pixel_models():
    # sample_size 128 switches on the resolution and aspect-ratio embedding (patch 8 keeps it small).
    pipe = tiny_pixart(0, sample_size=128, patch_size=8)
    (pe, pm), (ne, nm), scale = _pixart_text(1), _pixart_text(2), 4.5
    text = dict(
        prompt_embeds=pe,
        prompt_attention_mask=pm,
        negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm,
    )
    process = from_pipeline(pipe, 2, scale, **text)
    # The pipeline's image size: the latent size times the VAE factor 2.
    assert process.cond["resolution"].tolist() == [[256.0, 256.0]]
    assert process.cond["aspect_ratio"].tolist() == [[1.0]]
    noise = _randn(3, 1, *process.sample_shape)
    stock = _stock_pixart(pipe, noise, scale, **text, negative_prompt=None, steps=2)
    assert torch.equal(process.run(noise.clone()), stock[-1])


@pytest.mark.parametrize(("sigma", "length"), [(False, 120), (True, 300)])
def test_pixart_text_prompt_equals_the_stock_pipeline(tmp_path, sigma, length):
    pytest.importorskip("transformers")
    from tiny_models import tiny_t5_encoder, tiny_t5_tokenizer

    pipe = tiny_pixart(0, sigma=sigma)
    tokenizer = tiny_t5_tokenizer(tmp_path)
    pipe.register_modules(tokenizer=tokenizer, text_encoder=tiny_t5_encoder(3, len(tokenizer), d_model=12))
    process = from_pipeline(pipe, STEPS, 4.5, prompt="a cat", negative_prompt="blurry")
    # 120 (alpha) or 300 (sigma) T5 tokens, of which "a", "cat" and "</s>" are unmasked.
    assert process.cond["encoder_attention_mask"].tolist() == [[1] * 3 + [0] * (length - 3)]
    noise = _randn(3, 1, *process.sample_shape)
    stock = _stock_pixart(pipe, noise, 4.5, prompt="a cat", negative_prompt="blurry")
    assert torch.equal(process.run(noise.clone()), stock[-1])


def test_pixart_needs_masks(pixart):
    with pytest.raises(ValueError, match="prompt_attention_mask"):
        from_pipeline(pixart, STEPS, 1.0, prompt_embeds=_pixart_text(1)[0])
    with pytest.raises(ValueError, match=r"prompt embeddings .* \(batch, seq_len, 12\)"):
        from_pipeline(
            pixart, STEPS, 1.0, prompt_embeds=_randn(0, 1, 6, 7), prompt_attention_mask=torch.ones(1, 6)
        )


# ----------------------------------------------------------------------------------------------- Flux
@pytest.fixture(scope="module")
def flux():
    return tiny_flux(0)


def _flux_text(batch: int = 1):
    return _randn(1, 1, 5, 16).repeat(batch, 1, 1), _randn(2, 1, 8).repeat(batch, 1)


def _flux_process(flux, guidance=3.5):
    pe, pp = _flux_text()
    return from_pipeline(
        flux, STEPS, guidance, prompt_embeds=pe, pooled_prompt_embeds=pp, height=16, width=16
    )


def test_flux_grid_is_the_pipelines_shifted_linspace(flux):
    process = _flux_process(flux)
    assert model_family(flux.transformer) == "flux" and process.sample_shape == (16, 16)  # 4x4 tokens of 4x4
    # FluxPipeline by hand: sigmas linspace(1, 1/L, L), mu linear in the 16 packed tokens, exponential shift.
    config = flux.scheduler.config
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    mu = 16 * slope + config.base_shift - slope * config.base_image_seq_len
    sigma = np.linspace(1.0, 1 / STEPS, STEPS)
    shifted = math.exp(mu) / (math.exp(mu) + (1 / sigma - 1))
    expected = [math.inf] + [0.5 * math.log1p((s / (1 - s)) ** 2) for s in shifted[1:]] + [0.0]
    assert process.describe()["mu"] == pytest.approx(mu, rel=1e-12)
    # The scheduler keeps float32 sigmas: OU times agree to float32 rounding.
    torch.testing.assert_close(process.times, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_flux_trajectory_equals_the_stock_pipeline(flux):
    process = _flux_process(flux)
    pe, pp = _flux_text(batch=2)  # Flux's encode_prompt does not repeat given embeddings per image
    states, _ = record_pipeline_trajectory(
        flux,
        process,
        n=2,
        generator=torch.Generator().manual_seed(4),
        prompt_embeds=pe,
        pooled_prompt_embeds=pp,
        guidance_scale=3.5,
        height=16,
        width=16,
    )
    seen = []
    final = process.run(states[0], callback=lambda i, t, state, x0: seen.append((t, state, x0)))
    assert all(torch.equal(state, states[i]) for i, (_, state, _) in enumerate(seen))
    assert torch.equal(final, states[-1])
    # x0_hat = x - s v (rectified flow) at the first finite grid point, v from the transformer by hand.
    t, state, x0 = seen[1]
    s = float(process.scheduler.sigmas[1])
    ids = torch.zeros(4, 4, 3)
    ids[..., 1] += torch.arange(4)[:, None]
    ids[..., 2] += torch.arange(4)[None, :]
    with torch.no_grad():
        v = flux.transformer(
            hidden_states=state,
            timestep=process.timesteps[1].expand(2) / 1000,
            guidance=torch.full((2,), 3.5),
            pooled_projections=pp,
            encoder_hidden_states=pe,
            txt_ids=torch.zeros(5, 3),
            img_ids=ids.reshape(16, 3),
            return_dict=False,
        )[0]
    torch.testing.assert_close(x0, state - s * v, rtol=1e-5, atol=1e-5)
    # Distilled guidance changes the output; there is no unconditional branch.
    assert process.uncond == {} and not torch.equal(_flux_process(flux, 1.0).run(states[0]), final)


def test_flux_without_guidance_embedding_equals_the_stock_pipeline():
    # FLUX.1-schnell-style: no guidance embedding, so no guidance keyword at all.
    pipe = tiny_flux(0, guidance_embeds=False)
    pe, pp = _flux_text(batch=2)
    process = from_pipeline(
        pipe, STEPS, prompt_embeds=pe[:1], pooled_prompt_embeds=pp[:1], height=16, width=16
    )
    assert set(process.cond) == {"encoder_hidden_states", "text_embeds"}
    states, _ = record_pipeline_trajectory(
        pipe,
        process,
        n=2,
        generator=torch.Generator().manual_seed(8),
        prompt_embeds=pe,
        pooled_prompt_embeds=pp,
        height=16,
        width=16,
    )
    assert torch.equal(process.run(states[0]), states[-1])


def test_flux_text_prompt_equals_the_stock_pipeline(tmp_path):
    pytest.importorskip("transformers")
    from tiny_models import tiny_flux_with_text

    pipe = tiny_flux_with_text(tmp_path)
    process = from_pipeline(pipe, STEPS, 3.5, prompt="a cat", height=16, width=16)
    # 512 T5 tokens of width 16; the pooled CLIP output of width 8.
    assert process.cond["encoder_hidden_states"].shape == (1, 512, 16)
    assert process.cond["text_embeds"].shape == (1, 8)
    states, _ = record_pipeline_trajectory(
        pipe,
        process,
        n=2,
        generator=torch.Generator().manual_seed(6),
        prompt="a cat",
        num_images_per_prompt=2,
        guidance_scale=3.5,
        height=16,
        width=16,
    )
    assert torch.equal(process.run(states[0]), states[-1])
    with pytest.raises(ValueError, match="prompt_attention_mask applies to PixArt"):
        from_pipeline(
            pipe, STEPS, prompt="a cat", prompt_attention_mask=torch.ones(1, 5), height=16, width=16
        )
    with pytest.raises(ValueError, match="true CFG"):
        from_pipeline(pipe, STEPS, prompt="a cat", negative_prompt="blurry", height=16, width=16)


def test_flux_cloning_through_the_stock_pipeline_call(flux):
    """Cloning trunks run by the unmodified FluxPipeline (stopped in callback_on_step_end): same result."""
    from critwin.experiments.cloning import clone

    pe, pp = _flux_text()
    kwargs = dict(prompt_embeds=pe, pooled_prompt_embeds=pp, height=16, width=16)
    stock = from_pipeline(flux, STEPS, 3.5, use_pipeline_call=True, **kwargs)
    adapter = from_pipeline(flux, STEPS, 3.5, **kwargs)
    x = stock.prior(2, generator=torch.Generator().manual_seed(0))
    # One-row embeddings: repeated per sample for the stock call (Flux does not repeat given embeddings).
    partial = stock.run(x, stop=3)
    assert stock.pipeline_calls == 1
    assert torch.equal(
        partial, adapter.run(adapter.prior(2, generator=torch.Generator().manual_seed(0)), stop=3)
    )

    def feature(images):
        return (images.mean(dim=(1, 2, 3)) > 0).long()

    a = clone(stock, 3, [0.4, 1.0], 2, feature=feature, seed=5, progress=False)
    b = clone(adapter, 3, [0.4, 1.0], 2, feature=feature, seed=5, progress=False)
    assert stock.pipeline_calls > 1
    assert torch.equal(a.own_labels, b.own_labels) and torch.equal(a.clone_labels, b.clone_labels)


def test_flux_packing_round_trip_and_decode(flux):
    process = _flux_process(flux)
    latents = _randn(0, 2, 4, 8, 8)
    packed = process.latent_layout.pack(latents)
    assert packed.shape == (2, 16, 16) and torch.equal(process.latent_layout.unpack(packed), latents)
    # As FluxPipeline._pack_latents: token (i, j) holds the 2x2 patch at rows 2i, columns 2j (channel-major).
    assert torch.equal(packed[:, 1 * 4 + 2].reshape(2, 4, 2, 2), latents[:, :, 2:4, 4:6])
    images = _randn(1, 2, 3, 16, 16)
    encoded = process.encode(images)
    assert encoded.shape == (2, *process.sample_shape)
    assert process.decode(encoded).shape == images.shape


def test_flux_forward_reverse_and_clone_report_realised_time(flux):
    # Images: encoded by the VAE and packed.
    assert_sweeps_report_realised_times(_flux_process(flux), _randn(0, 2, 3, 16, 16).clamp(-1, 1))


def test_flux_bad_input(flux):
    pe, pp = _flux_text()
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        from_pipeline(flux, STEPS, prompt_embeds=pe, height=16, width=16)
    with pytest.raises(ValueError, match="multiples of 4"):
        from_pipeline(flux, STEPS, prompt_embeds=pe, pooled_prompt_embeds=pp, height=18, width=16)
    with pytest.raises(ValueError, match="step_kwargs"):
        from_pipeline(flux, STEPS, prompt_embeds=pe, pooled_prompt_embeds=pp, step_kwargs={"s_churn": 1.0})


# ------------------------------------------------------------------------------------------------ CLI
COMMON = ["--steps", "4", "--times", "0.5,1.5", "--n", "2", "--n-per-time", "1", "--no-progress"]


def test_cli_sweep_on_saved_flux_and_dit(flux, dit, tmp_path, capsys):
    from safetensors.torch import save_file

    from critwin.adapters.diffusers import load_local

    flux.save_pretrained(tmp_path / "flux")
    pe, pp = _flux_text()
    save_file({"prompt_embeds": pe, "pooled_prompt_embeds": pp}, str(tmp_path / "e.safetensors"))
    size = ["--height", "16", "--width", "16"]
    embeds = ["--prompt-embeds", str(tmp_path / "e.safetensors")]
    run_sweep(
        ["sweep", "--model", str(tmp_path / "flux"), *embeds, *size, *COMMON, "--out", str(tmp_path / "f")],
        capsys,
    )
    process = from_pipeline(
        load_local(tmp_path / "flux"), 4, prompt_embeds=pe, pooled_prompt_embeds=pp, height=16, width=16
    )
    assert realised_times(tmp_path / "f") == sorted(
        process.times[process.locate(t)[0]].item() for t in (0.5, 1.5)
    )

    dit.save_pretrained(tmp_path / "dit")
    labels = ["--class-label", "3", "--guidance", "4"]
    run_sweep(
        ["sweep", "--model", str(tmp_path / "dit"), *labels, *COMMON, "--out", str(tmp_path / "d")], capsys
    )
    process = from_pipeline(load_local(tmp_path / "dit"), 4, 4.0, class_labels=[3])
    assert realised_times(tmp_path / "d") == sorted(
        process.times[process.locate(t)[0]].item() for t in (0.5, 1.5)
    )


def test_cli_sweep_on_a_saved_pixart_with_masks(pixart, tmp_path, capsys):
    from safetensors.torch import save_file

    from critwin.adapters.diffusers import load_local

    pixart.save_pretrained(tmp_path / "pixart")
    (pe, pm), (ne, nm) = _pixart_text(1), _pixart_text(2)
    embeds = {
        "prompt_embeds": pe,
        "prompt_attention_mask": pm,
        "negative_prompt_embeds": ne,
        "negative_prompt_attention_mask": nm,
    }
    save_file(embeds, str(tmp_path / "e.safetensors"))
    model = ["--model", str(tmp_path / "pixart"), "--prompt-embeds", str(tmp_path / "e.safetensors")]
    run_sweep(["sweep", *model, "--guidance", "4.5", *COMMON, "--out", str(tmp_path / "p")], capsys)
    process = from_pipeline(load_local(tmp_path / "pixart"), 4, 4.5, **embeds)
    expected = sorted(process.times[process.locate(t)[0]].item() for t in (0.5, 1.5))
    assert realised_times(tmp_path / "p") == expected
