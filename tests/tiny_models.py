"""Tiny randomly initialised diffusers models, for tests, smoke checks and the GPU script.

They have the architecture of the real thing (a UNet with attention, a KL-VAE, a Stable Diffusion
pipeline) with a few channels, so they run on a CPU in milliseconds. Their outputs are meaningless; they
exist to exercise code paths (noise levels, conditioning, guidance, latents, pipelines) exactly.
"""

from __future__ import annotations

import functools

import torch

__all__ = [
    "tiny_unet",
    "tiny_conditional_unet",
    "tiny_vae",
    "tiny_stable_diffusion",
    "tiny_stable_diffusion_with_text",
    "tiny_text_encoder",
    "tiny_clip_tokenizer",
    "tiny_dit",
    "tiny_sd3",
    "tiny_sd3_transformer",
    "tiny_sd3_with_text",
    "tiny_t5_tokenizer",
    "tiny_t5_encoder",
    "tiny_dit_pipeline",
    "tiny_pixart_transformer",
    "tiny_pixart",
    "tiny_flux_transformer",
    "tiny_flux",
    "tiny_flux_with_text",
]


def _seeded(build):
    """Run ``build`` with torch's global RNG seeded by its ``seed`` argument and restored afterwards:
    the weights depend only on ``seed``, and the caller's random stream is left untouched."""

    @functools.wraps(build)
    def wrapper(seed: int = 0, *args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(seed, *args, **kwargs)

    return wrapper


@_seeded
def tiny_unet(
    seed: int = 0,
    sample_size: int = 8,
    channels: int = 3,
    num_class_embeds: int | None = None,
    out_channels: int | None = None,
):
    """A pixel-space ``UNet2DModel`` (optionally class-conditional) with 8/16 channels."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=4,
        num_class_embeds=num_class_embeds,
    ).eval()


@_seeded
def tiny_conditional_unet(
    seed: int = 0,
    sample_size: int = 8,
    in_channels: int = 4,
    cross_attention_dim: int = 16,
    xl: bool = False,
    pooled_dim: int = 8,
):
    """A text-conditional ``UNet2DConditionModel`` (SD-like; ``xl=True`` adds SDXL's text/time embeddings)."""
    from diffusers import UNet2DConditionModel

    extra = {}
    if xl:
        # SDXL: 6 time ids, each embedded in addition_time_embed_dim, plus the pooled text embedding.
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=6 * 4 + pooled_dim,
        )
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
        **extra,
    ).eval()


@_seeded
def tiny_vae(seed: int = 0, latent_channels: int = 4):
    """A KL autoencoder with one downsampling (factor 2) and SD's latent scaling factor."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
        scaling_factor=0.18215,
    ).eval()


@_seeded
def tiny_text_encoder(
    seed: int = 0,
    hidden_size: int = 16,
    vocab_size: int = 1000,
    projection_dim: int | None = None,
    intermediate_size: int = 32,
    eos_token_id: int = 2,
):
    """A 2-layer ``CLIPTextModel`` with ``hidden_size`` (needs transformers); with ``projection_dim``, a
    ``CLIPTextModelWithProjection`` (SD3's and Flux's pooled text encoders)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        **({} if projection_dim is None else {"projection_dim": projection_dim}),
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        vocab_size=vocab_size,
        bos_token_id=0,
        eos_token_id=eos_token_id,
        pad_token_id=1,
    )
    model = CLIPTextModel if projection_dim is None else CLIPTextModelWithProjection
    return model(config).eval()


def tiny_clip_tokenizer(directory, model_max_length: int | None = None):
    """A character-level ``CLIPTokenizer`` (lowercase letters, no merges) whose files are written to
    ``directory`` (needs transformers). Its vocabulary has ``2 + 2 * 26`` tokens: pair it with a text
    model of at least that ``vocab_size``.
    """
    import json
    from pathlib import Path

    from transformers import CLIPTokenizer

    directory = Path(directory)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    return CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), pad_token="<|endoftext|>", **extra
    )


def tiny_stable_diffusion(seed: int = 0, scheduler=None, sample_size: int = 8, cross_attention_dim: int = 16):
    """A ``StableDiffusionPipeline`` of tiny random parts, without tokenizer or text encoder.

    Use it with ``prompt_embeds`` of shape (batch, seq_len, ``cross_attention_dim``). Images are
    ``2 * sample_size`` pixels square (the tiny VAE downsamples by 2). The default scheduler is SD's
    (DDIM-style scaled-linear betas, leading spacing, ``steps_offset=1``, ``set_alpha_to_one=False``).
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if scheduler is None:
        scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        )
    return StableDiffusionPipeline(
        vae=tiny_vae(seed),
        text_encoder=None,
        tokenizer=None,
        unet=tiny_conditional_unet(seed, sample_size=sample_size, cross_attention_dim=cross_attention_dim),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@_seeded
def tiny_sd3_transformer(seed: int = 0, sample_size: int = 8, in_channels: int = 4, joint_dim: int = 16):
    """A 2-layer ``SD3Transformer2DModel`` (patch 2, 2 heads of 4) taking (B, seq, ``joint_dim``) prompt
    embeddings and (B, 8) pooled embeddings."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=2,
        in_channels=in_channels,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        joint_attention_dim=joint_dim,
        caption_projection_dim=8,
        pooled_projection_dim=8,
        out_channels=in_channels,
        pos_embed_max_size=16,
    ).eval()


def tiny_sd3(seed: int = 0, scheduler=None, sample_size: int = 8):
    """A ``StableDiffusion3Pipeline`` of tiny random parts without text encoders (pass prompt embeddings
    (B, seq, 16) and pooled embeddings (B, 8)). Default scheduler: SD3's flow matching with shift 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed, sample_size=sample_size),
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(seed),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )


@_seeded
def tiny_dit(
    seed: int = 0,
    sample_size: int = 8,
    in_channels: int = 4,
    num_classes: int = 10,
    learned_sigma: bool = False,
):
    """A 2-layer class-conditional ``DiTTransformer2DModel`` (patch 2, 2 heads of 4); ``learned_sigma``:
    ``2 * in_channels`` outputs (mean and variance), as the released DiT models."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=in_channels,
        out_channels=2 * in_channels if learned_sigma else in_channels,
        num_layers=2,
        sample_size=sample_size,
        patch_size=2,
        num_embeds_ada_norm=num_classes,
        norm_num_groups=4,
    ).eval()


def tiny_dit_pipeline(seed: int = 0, scheduler=None):
    """A ``DiTPipeline`` with a learned-sigma tiny DiT of 1000 classes: the pipeline hard-codes the null
    class 1000 (``num_embeds_ada_norm``) for guidance. Default scheduler: DDIM."""
    from diffusers import DDIMScheduler, DiTPipeline

    return DiTPipeline(
        transformer=tiny_dit(seed, num_classes=1000, learned_sigma=True),
        vae=tiny_vae(seed),
        scheduler=scheduler or DDIMScheduler(),
    )


@_seeded
def tiny_pixart_transformer(
    seed: int = 0, sample_size: int = 8, caption_channels: int = 12, patch_size: int = 2
):
    """A 2-layer ``PixArtTransformer2DModel`` (2 heads of 6, learned sigma) taking (B, seq,
    ``caption_channels``) prompt embeddings with a (B, seq) attention mask. ``sample_size=128`` is the
    1024-pixel models' size, which switches on the resolution/aspect-ratio micro-conditioning (its
    embedding splits the width 12 in thirds)."""
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=6,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=12,
        sample_size=sample_size,
        patch_size=patch_size,
        norm_num_groups=4,
        caption_channels=caption_channels,
    ).eval()


def tiny_pixart(
    seed: int = 0, scheduler=None, sample_size: int = 8, patch_size: int = 2, sigma: bool = False
):
    """A ``PixArtAlphaPipeline`` (``sigma``: ``PixArtSigmaPipeline``) of tiny random parts without text
    encoder (pass prompt embeddings (B, seq, 12) and their masks). Default scheduler: DPM-Solver++ as
    PixArt's."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline

    return (PixArtSigmaPipeline if sigma else PixArtAlphaPipeline)(
        tokenizer=None,
        text_encoder=None,
        vae=tiny_vae(seed),
        transformer=tiny_pixart_transformer(seed, sample_size=sample_size, patch_size=patch_size),
        scheduler=scheduler or DPMSolverMultistepScheduler(),
    )


@_seeded
def tiny_flux_transformer(seed: int = 0, guidance_embeds: bool = True):
    """A ``FluxTransformer2DModel`` with one double and one single block (2 heads of 8) on packed 4-channel
    latents (16 channels per token), (B, seq, 16) prompt and (B, 8) pooled embeddings."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    ).eval()


def tiny_flux(seed: int = 0, guidance_embeds: bool = True):
    """A ``FluxPipeline`` of tiny random parts without text encoders (pass prompt embeddings (B, seq, 16),
    pooled embeddings (B, 8) and height = width = 16: 8x8 latents, 16 packed tokens). Scheduler:
    Flux-dev's flow matching with dynamic shifting."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=tiny_vae(seed),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=tiny_flux_transformer(seed, guidance_embeds),
    )


def tiny_t5_tokenizer(directory):
    """A whitespace word-level fast tokenizer (T5's special tokens: pad 0, eos 1, unk 2; lowercase letters
    and a few words), built offline with ``tokenizers`` and saved to ``directory`` (needs transformers)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "cat", "dog", "blurry", "photo", "of"]
    words += list("bcdefghijklmnopqrstuvwxyz")
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # T5 appends </s> to every sequence.
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(directory)
    return fast


@_seeded
def tiny_t5_encoder(seed: int = 0, vocab_size: int = 34, d_model: int = 16):
    """A one-layer ``T5EncoderModel`` of width ``d_model`` (pair it with :func:`tiny_t5_tokenizer`)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=4, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0
    )
    return T5EncoderModel(config).eval()


def tiny_sd3_with_text(directory, seed: int = 0):
    """:func:`tiny_sd3` with its three text encoders and tokenizers (files under ``directory``): two
    CLIP text models with projection (hidden 8 each, pooled 4 + 4 = the transformer's 8) on 16-token
    character-level CLIP tokenizers, and a one-layer T5 encoder (width 16) on a word-level tokenizer.
    SD3's ``encode_prompt`` pads the joined CLIP states (8 + 8) to T5's 16 and appends 256 T5 tokens."""
    from pathlib import Path

    directory = Path(directory)
    pipe = tiny_sd3(seed)
    parts = {}
    for name, offset in (("", 1), ("_2", 2)):
        (directory / f"tokenizer{name}").mkdir(parents=True, exist_ok=True)
        tokenizer = tiny_clip_tokenizer(directory / f"tokenizer{name}", model_max_length=16)
        parts[f"tokenizer{name}"] = tokenizer
        parts[f"text_encoder{name}"] = tiny_text_encoder(
            seed + offset, 8, len(tokenizer), projection_dim=4, intermediate_size=16, eos_token_id=1
        )
    t5_tokenizer = tiny_t5_tokenizer(directory / "tokenizer_3")
    parts.update(tokenizer_3=t5_tokenizer, text_encoder_3=tiny_t5_encoder(seed + 3, len(t5_tokenizer)))
    pipe.register_modules(**parts)
    pipe.tokenizer_max_length = 16
    return pipe


def tiny_flux_with_text(directory, seed: int = 0):
    """:func:`tiny_flux` with its text encoders and tokenizers (files under ``directory``): a CLIP text
    model of width 8 (its pooled output is the transformer's pooled input) on a 16-token character-level
    tokenizer, and a one-layer T5 encoder of width 16 on a word-level tokenizer (512 tokens per prompt)."""
    from pathlib import Path

    directory = Path(directory)
    pipe = tiny_flux(seed)
    (directory / "tokenizer").mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer(directory / "tokenizer", model_max_length=16)
    t5_tokenizer = tiny_t5_tokenizer(directory / "tokenizer_2")
    pipe.register_modules(
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(seed + 1, hidden_size=8, vocab_size=len(tokenizer)),
        tokenizer_2=t5_tokenizer,
        text_encoder_2=tiny_t5_encoder(seed + 2, len(t5_tokenizer)),
    )
    pipe.tokenizer_max_length = 16
    return pipe


def tiny_stable_diffusion_with_text(directory, seed: int = 0, sample_size: int = 8):
    """:func:`tiny_stable_diffusion` with a character-level tokenizer (files in ``directory``, limit 16
    tokens) and a tiny CLIP text encoder: a pipeline that takes text prompts (16x16 images)."""
    tokenizer = tiny_clip_tokenizer(directory, model_max_length=16)
    pipe = tiny_stable_diffusion(seed, sample_size=sample_size)
    pipe.register_modules(
        text_encoder=tiny_text_encoder(seed, vocab_size=len(tokenizer)), tokenizer=tokenizer
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
