"""Save a Stable-Diffusion-1.5-shaped pipeline with random weights, built from configs (no download).

Usage: python scripts/sd_shaped_pipeline.py OUT_DIR [--small]  (``--small``: a few-MB stand-in for CPUs).
Also writes OUT_DIR/embeds.safetensors (random prompt embeddings, 1 x 77 x 768).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file


def build(small: bool) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    width = (32, 64) if small else (320, 640, 1280, 1280)
    down = ("CrossAttnDownBlock2D",) * (len(width) - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(width) - 1)
    unet = UNet2DConditionModel(
        sample_size=8 if small else 64,
        block_out_channels=width,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64) if small else (128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * (2 if small else 4),
        up_block_types=("UpDecoderBlock2D",) * (2 if small else 4),
        latent_channels=4,
        norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main() -> None:
    out = Path(sys.argv[1])
    build("--small" in sys.argv).save_pretrained(out)
    save_file({"prompt_embeds": torch.randn(1, 77, 768)}, str(out / "embeds.safetensors"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
