"""GPU check of the diffusers adapter: correctness on CUDA and throughput against a bare diffusers loop.

Usage (from the repository root)::

    scripts/gpu_check.sh                 # a local SD-class model from $CRITWIN_SD_MODEL, if any
    scripts/gpu_check.sh --tiny          # a tiny random Stable Diffusion pipeline (checks CUDA code paths)
    scripts/gpu_check.sh --tiny --device cpu   # the same logic on the CPU (for testing this script)

With a real model, prompt embeddings come from ``$CRITWIN_SD_EMBEDS`` (a .safetensors/.pt file with
``prompt_embeds`` and ``negative_prompt_embeds``) or, if unset, from the model's own text encoder and
``--prompt`` (needs transformers). Without CUDA, or without a model and ``--tiny``, the script says so
and exits 0.

Checks, in order:
1. the adapter's trajectory equals the stock pipeline's (recorded with ``callback_on_step_end``);
2. a forward–reverse sweep through ``critwin.experiments.forward_reverse`` runs on the GPU;
3. throughput: UNet steps per second of the adapter's ``run`` vs a bare ``scheduler.step`` loop with the
   same batch, guidance and steps (ratio ~1 means the adapter adds no overhead).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path


def _synchronise(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bare_loop(pipe, latents, embeds, guidance, steps, start, generator):
    """diffusers' own sampling loop (as in StableDiffusionPipeline.__call__), from grid index ``start``."""
    import torch

    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=latents.device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    prompt = torch.cat([embeds["negative_prompt_embeds"], embeds["prompt_embeds"]]).to(
        latents.device, pipe.unet.dtype
    )
    prompt = prompt.repeat_interleave(latents.shape[0], dim=0).reshape(
        2 * latents.shape[0], *prompt.shape[1:]
    )
    with torch.no_grad():
        for t in scheduler.timesteps[start:]:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            out = pipe.unet(model_input, t, encoder_hidden_states=prompt, return_dict=False)[0]
            uncond, cond = out.chunk(2)
            latents = scheduler.step(
                uncond + guidance * (cond - uncond), t, latents, generator=generator, return_dict=False
            )[0]
    return latents


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="use a tiny random SD pipeline")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (to test this script)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    parser.add_argument(
        "--scheduler", default=None, help="replace the model's scheduler (ddim, euler, dpm++, ...)"
    )
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (exit 0)")
        return 0
    model_dir = os.environ.get("CRITWIN_SD_MODEL")
    if not args.tiny and (not model_dir or not Path(model_dir).is_dir()):
        print(
            "gpu_check: no local SD-class model (set CRITWIN_SD_MODEL to a diffusers directory, "
            "or pass --tiny); "
            "nothing to check (exit 0)"
        )
        return 0

    from critwin.adapters.diffusers import (
        LocalPipeline,
        TerminalSNRWarning,
        from_pipeline,
        load_local,
        load_prompt_embeds,
        record_pipeline_trajectory,
        scheduler_class,
    )
    from critwin.experiments.features import SourceSimilarity
    from critwin.experiments.forward_reverse import forward_reverse

    warnings.simplefilter("ignore", TerminalSNRWarning)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True  # the trajectory check compares bytes
        print(f"gpu_check: device {torch.cuda.get_device_name(device)}")
    if args.tiny:
        # The tiny random models are test fixtures: they live in tests/, not in the library.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_models import tiny_stable_diffusion

        pipe = tiny_stable_diffusion(0).to(device)
        g = torch.Generator().manual_seed(0)
        embeds = {
            "prompt_embeds": torch.randn(1, 5, 16, generator=g),
            "negative_prompt_embeds": torch.randn(1, 5, 16, generator=g),
        }
        name = "tiny random SD pipeline"
    else:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        embeds_file = os.environ.get("CRITWIN_SD_EMBEDS")
        pipe = load_local(model_dir, device=device, dtype=dtype, text_encoder=embeds_file is None)
        if embeds_file:
            embeds = load_prompt_embeds(embeds_file)
        else:
            positive, negative = pipe.encode_prompt(args.prompt, device, 1, True, negative_prompt="")
            embeds = {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        name = model_dir
    if args.scheduler:
        pipe.scheduler = scheduler_class(args.scheduler).from_config(pipe.scheduler.config)
    embeds = {k: v.to(device) for k, v in embeds.items()}
    process = from_pipeline(pipe, args.steps, args.guidance, **embeds)
    print(
        f"gpu_check: {name}, {type(pipe.scheduler).__name__}, {args.steps} steps, guidance {args.guidance}, "
        f"batch {args.batch}, latents {process.sample_shape}"
    )
    print(
        f"gpu_check: grid OU times {process.times[0].item():.4g} .. {process.times[-1].item():.4g}; "
        f"terminal SNR {process.terminal_snr:.3g}"
    )

    failures = 0
    # 1. Stock pipeline vs adapter, same seed: the whole trajectory.
    if not isinstance(pipe, LocalPipeline):
        states, _ = record_pipeline_trajectory(
            pipe,
            process,
            n=2,
            generator=torch.Generator(device).manual_seed(1),
            guidance_scale=args.guidance,
            **embeds,
        )
        generator = torch.Generator(device).manual_seed(1)
        final = process.run(
            process.prior(2, generator=generator, device=device, dtype=pipe.unet.dtype), generator=generator
        )
        diff = (final.float() - states[-1].float()).abs().max().item()
        identical = torch.equal(final, states[-1])
        print(
            "check 1 (adapter == stock pipeline, final latents): "
            f"{'byte-identical' if identical else 'max |diff|'} "
            f"{'' if identical else f'{diff:.3g}'}"
        )
        failures += diff > 1e-2
    else:
        print("check 1 skipped: the pipeline was loaded without its text encoder (stock __call__ needs one)")

    # 2. A short forward-reverse sweep on the device.
    generator = torch.Generator(device).manual_seed(2)
    x = process.run(
        process.prior(args.batch, generator=generator, device=device, dtype=pipe.unet.dtype),
        generator=generator,
    )
    sources = process.decode(x).float()
    mid = process.times[args.steps // 2].item()
    start = time.perf_counter()
    result = forward_reverse(
        process,
        sources,
        [0.0, mid],
        n_per_time=1,
        feature=SourceSimilarity(sources.cpu()),
        seed=0,
        progress=False,
    )
    _synchronise(device)
    print(
        f"check 2 (forward-reverse at t = 0 and {mid:.3g}): agreement {result.agreement.tolist()} "
        f"in {time.perf_counter() - start:.2f} s"
    )
    # Pixel models return the sources at t = 0; a VAE round trip may move them.
    failures += process.vae is None and result.agreement[0].item() < 1.0

    # 3. Throughput from the middle of the grid: adapter run vs bare loop (same work).
    k = args.steps // 2
    x0 = x.detach()
    timings = {"bare": [], "adapter": []}
    for _ in range(args.repeats):
        for which in ("bare", "adapter"):
            g = torch.Generator(device).manual_seed(3)
            noised = process.add_noise(x0, k, generator=g)
            _synchronise(device)
            start = time.perf_counter()
            if which == "bare":
                _bare_loop(pipe, noised, embeds, args.guidance, args.steps, k, g)
            else:
                process.run(noised, start=k, generator=g)
            _synchronise(device)
            timings[which].append(time.perf_counter() - start)
    steps_done = (args.steps - k) * args.batch
    best = {key: min(value) for key, value in timings.items()}
    for key in ("bare", "adapter"):
        print(f"check 3 {key:>7}: {steps_done / best[key]:.1f} sample-steps/s (best of {args.repeats})")
    print(f"check 3 ratio adapter/bare time: {best['adapter'] / best['bare']:.3f}")
    print("gpu_check: " + ("OK" if not failures else f"{failures} check(s) FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
