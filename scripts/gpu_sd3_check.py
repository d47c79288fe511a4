"""SD3-shaped check of the diffusers adapter: a random SD3 transformer, adapter vs a bare sampling loop.

Usage (from the repository root)::

    python scripts/gpu_sd3_check.py                      # CUDA, bfloat16, SD3-medium-shaped blocks
    python scripts/gpu_sd3_check.py --tiny --device cpu  # the same logic at toy size (dry run, seconds)

The transformer has SD3-medium's shapes (16 latent channels, patch 2, 24 heads of 64 = width 1536, T5
width 4096, pooled width 2048) with only ``--layers`` joint blocks, on ``--size`` x ``--size`` latents
(64: a 512-pixel image, 1024 patches) and 333 text tokens (77 CLIP + 256 T5), with random weights built
from the config (no download). Classifier-free guidance doubles the batch, as the pipeline does.

Checks:
1. trajectory: :class:`DiffusersProcess` ``run`` from the prior equals a bare loop of transformer, guidance
   and ``FlowMatchEulerDiscreteScheduler.step`` (StableDiffusion3Pipeline's loop), byte for byte;
2. throughput: sample-steps per second of both (best of ``--repeats``) and the time ratio adapter/bare
   (~1: the adapter adds no overhead).
Without CUDA (and without ``--device cpu``) the script says so and exits 0; it exits 1 if check 1 fails.
"""

from __future__ import annotations

import argparse
import sys
import time

SD3_SHAPE = dict(
    patch_size=2,
    in_channels=16,
    out_channels=16,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
TINY_SHAPE = dict(
    patch_size=2,
    in_channels=4,
    out_channels=4,
    attention_head_dim=4,
    num_attention_heads=2,
    joint_attention_dim=16,
    caption_projection_dim=8,
    pooled_projection_dim=8,
    pos_embed_max_size=16,
)
TEXT_TOKENS = 77 + 256  # SD3's CLIP tokens followed by its T5 tokens


def build(args, device, dtype):
    """The random transformer, its scheduler (SD3's flow matching, shift 3) and random text embeddings."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    shape = TINY_SHAPE if args.tiny else SD3_SHAPE
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=args.size, num_layers=args.layers, **shape)
    transformer = transformer.to(device=device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(1)
    tokens = 5 if args.tiny else TEXT_TOKENS
    text = {
        name: torch.randn(1, tokens, shape["joint_attention_dim"], generator=g).to(device, dtype)
        for name in ("prompt_embeds", "negative_prompt_embeds")
    }
    for name in ("pooled_prompt_embeds", "negative_pooled_prompt_embeds"):
        text[name] = torch.randn(1, shape["pooled_projection_dim"], generator=g).to(device, dtype)
    return transformer, FlowMatchEulerDiscreteScheduler(shift=3.0), text


def bare_loop(transformer, scheduler, latents, text, guidance, steps):
    """StableDiffusion3Pipeline's denoising loop (guidance on), from ``latents`` at the first timestep."""
    import torch

    batch = latents.shape[0]
    embeds = torch.cat(
        [text["negative_prompt_embeds"].expand(batch, -1, -1), text["prompt_embeds"].expand(batch, -1, -1)]
    )
    pooled = torch.cat(
        [
            text["negative_pooled_prompt_embeds"].expand(batch, -1),
            text["pooled_prompt_embeds"].expand(batch, -1),
        ]
    )
    scheduler.set_timesteps(steps, device=latents.device)
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2)
            out = transformer(
                hidden_states=model_input,
                timestep=t.expand(model_input.shape[0]),
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                return_dict=False,
            )[0]
            uncond, cond = out.chunk(2)
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, return_dict=False)[0]
    return latents


def _synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _synchronise(device)
    start = time.perf_counter()
    fn()
    _synchronise(device)
    return time.perf_counter() - start


def _throughput(args, device, bare, adapter) -> None:
    """Sample-steps per second of ``bare()`` and ``adapter()`` (best of ``args.repeats``) and their time
    ratio; alternating runs, so that clock and thermal drift hit both alike."""
    timings = {"bare": [], "adapter": []}
    for _ in range(args.repeats):
        timings["bare"].append(_timed(bare, device))
        timings["adapter"].append(_timed(adapter, device))
    work = args.steps * args.batch
    best = {key: min(values) for key, values in timings.items()}
    for key in ("bare", "adapter"):
        print(f"check 2 {key:>7}: {work / best[key]:.1f} sample-steps/s (best of {args.repeats})")
    print(f"check 2 ratio adapter/bare time: {best['adapter'] / best['bare']:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy widths (for a CPU dry run)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 (CUDA default) or float32 (CPU default)")
    parser.add_argument("--layers", type=int, default=4, help="joint transformer blocks (SD3-medium: 24)")
    parser.add_argument(
        "--size", type=int, default=None, help="latent height = width (64: 512 pixels; tiny: 8)"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    args.size = args.size or (8 if args.tiny else 64)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_sd3_check: no CUDA device on this machine; nothing to check (exit 0)")
        return 0
    from critwin.adapters.diffusers import DiffusersProcess

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True  # check 1 compares bytes
        print(f"gpu_sd3_check: device {torch.cuda.get_device_name(device)}")
    transformer, scheduler, text = build(args, device, dtype)
    n_params = sum(p.numel() for p in transformer.parameters())
    print(
        f"gpu_sd3_check: SD3-shaped transformer, {args.layers} joint blocks, {n_params / 1e6:.4g} M "
        "parameters, "
        f"{dtype}, latents {args.batch} x {transformer.config.in_channels} x {args.size}^2, "
        f"{args.steps} steps, guidance {args.guidance}"
    )
    process = DiffusersProcess(
        transformer,
        scheduler,
        args.steps,
        cond={"prompt_embeds": text["prompt_embeds"], "pooled_prompt_embeds": text["pooled_prompt_embeds"]},
        uncond={
            "prompt_embeds": text["negative_prompt_embeds"],
            "pooled_prompt_embeds": text["negative_pooled_prompt_embeds"],
        },
        guidance_scale=args.guidance,
    )
    prior = process.prior(args.batch, torch.Generator(device).manual_seed(2), device=device, dtype=dtype)

    # 1. The adapter's trajectory is the bare loop's.
    adapter = process.run(prior)
    bare = bare_loop(transformer, scheduler, prior, text, args.guidance, args.steps)
    identical = torch.equal(adapter, bare)
    diff = (adapter.float() - bare.float()).abs().max().item()
    outcome = "byte-identical" if identical else f"max |diff| {diff:.3g}"
    print(f"check 1 (adapter == bare loop, final latents): {outcome}")

    # 2. Throughput.
    _throughput(
        args,
        device,
        lambda: bare_loop(transformer, scheduler, prior, text, args.guidance, args.steps),
        lambda: process.run(prior),
    )
    print("gpu_sd3_check: " + ("OK" if identical else "check 1 FAILED"))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
