"""The configuration of a shapes text-to-image training run, and the shipped presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from critwin._memory import check_memory, transformer_bytes, unet_bytes
from critwin._validation import check_positive_int, check_seed
from critwin.models._store import PIPELINE_MODELS
from critwin.models._training import Presets, TrainingConfig
from critwin.models.shapes.data import check_shapes_memory
from critwin.models.shapes_t2i.captions import CaptionProbabilities
from critwin.models.shapes_t2i.data import Memorisation, Stereotype, T2IData, make_pairs

__all__ = ["T2IConfig", "PRESETS", "MODEL_NAMES", "LATENT_SHAPE"]

MODEL_NAMES = PIPELINE_MODELS
LATENT_SHAPE = (4, 8, 8)
"""Latents of a 16x16 RGB image: 4 channels, one downsampling (as SD's VAE, which downsamples 8x)."""


def _probability(value, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class T2IConfig(TrainingConfig):
    """Everything that defines one training run of a shapes text-to-image model (stored in its card).

    Attributes
    ----------
    n_train, data_seed, captions, stereotype, memorisation : the caption–image pairs
        (:func:`~critwin.models.shapes_t2i.data.make_pairs`).
    max_tokens : the tokenizer's ``model_max_length`` (start and end tokens included).
    text_hidden, text_layers, text_heads, text_intermediate : the ``CLIPTextModel``.
    train_text_encoder : train the text encoder jointly with the U-Net (else it stays at its seeded
        random initialisation).
    vae_channels, vae_steps, vae_batch_size, vae_learning_rate, vae_kl_weight, vae_n_train, vae_data_seed :
        the ``AutoencoderKL`` (one downsampling: 8x8x4 latents) and its training on
        ``make_shapes(vae_n_train, seed=vae_data_seed)`` (L1 + MSE reconstruction + KL); trained first,
        then frozen.
    block_out_channels, layers_per_block, norm_num_groups, attention_heads : the
        ``UNet2DConditionModel`` (cross-attention blocks at every level; ``attention_heads`` is diffusers'
        ``attention_head_dim``, which counts heads).
    num_train_timesteps, beta_start, beta_end : Stable Diffusion's scaled-linear schedule.
    steps, batch_size, learning_rate, warmup_steps, ema_decay : AdamW on U-Net (+ text encoder), linear
        warm-up then cosine decay; the shipped weights are the EMA.
    snr_gamma : Min-SNR-gamma loss weighting (0: plain MSE;
        :func:`~critwin.models.shapes_t2i.training.noise_loss`).
    caption_dropout : probability that a training caption is replaced by the empty prompt (the null
        prompt of classifier-free guidance).
    guidance_scale, num_inference_steps : how the card's adherence is measured (DDIM, the saved
        scheduler) and the defaults critwin uses for this model.
    seed : seeds initialisation, batches, noise and caption dropout.
    """

    n_train: int = 20000
    data_seed: int = 0
    captions: CaptionProbabilities = field(default_factory=CaptionProbabilities)
    stereotype: Stereotype | None = None
    memorisation: Memorisation | None = None
    max_tokens: int = 20
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate: int = 128
    train_text_encoder: bool = True
    vae_channels: tuple[int, ...] = (16, 32)
    vae_steps: int = 500
    vae_batch_size: int = 64
    vae_learning_rate: float = 3e-3
    vae_kl_weight: float = 1e-5
    vae_n_train: int = 20000
    vae_data_seed: int = 0
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_heads: int = 2
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    steps: int = 900
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    snr_gamma: float = 5.0
    caption_dropout: float = 0.1
    guidance_scale: float = 5.0
    num_inference_steps: int = 25
    seed: int = 0

    def __post_init__(self):
        for name in (
            "n_train",
            "max_tokens",
            "text_hidden",
            "text_layers",
            "text_heads",
            "text_intermediate",
        ):
            check_positive_int(getattr(self, name), name)
        for name in ("vae_steps", "vae_batch_size", "vae_n_train", "attention_heads", "num_inference_steps"):
            check_positive_int(getattr(self, name), name)
        for name in ("data_seed", "vae_data_seed", "seed"):
            check_seed(getattr(self, name), name)
        if self.text_hidden % self.text_heads:
            raise ValueError(
                f"text_hidden={self.text_hidden} must be a multiple of text_heads={self.text_heads}"
            )
        channels = self.vae_channels
        if isinstance(channels, (int, str)) or len(tuple(channels)) != 2:
            raise ValueError(f"vae_channels must be two channel counts (one downsampling), got {channels!r}")
        object.__setattr__(
            self, "vae_channels", tuple(check_positive_int(c, "vae_channels") for c in channels)
        )
        # every size the memory guard reads (check_memory_needs, called by check_training) is checked above
        self.check_training(max_levels=3, image="an 8x8 latent")
        if any(c % self.norm_num_groups for c in self.vae_channels):
            raise ValueError(
                f"vae_channels {self.vae_channels} must be multiples of "
                f"norm_num_groups={self.norm_num_groups}"
            )
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be at most num_train_timesteps={self.num_train_timesteps}, "
                f"got {self.num_inference_steps}"
            )
        for name in ("vae_learning_rate", "vae_kl_weight", "guidance_scale", "snr_gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        _probability(self.caption_dropout, "caption_dropout")
        for name, kind in (
            ("captions", CaptionProbabilities),
            ("stereotype", Stereotype),
            ("memorisation", Memorisation),
        ):
            value = getattr(self, name)
            if not (isinstance(value, kind) or (value is None and name != "captions")):
                raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")

    def check_memory_needs(self) -> None:
        """The memory guard on the sizes of a config (typed, or read from a model card): the U-Net with its
        cross-attention, the text encoder and the VAE, each with an EMA or optimiser copies and a batch's
        activations, and the training images of the U-Net and of the VAE."""
        check_shapes_memory(self.n_train, f"n_train={self.n_train} caption-image pairs")
        check_shapes_memory(self.vae_n_train, f"vae_n_train={self.vae_n_train} images")
        tokens = self.max_tokens
        unet = unet_bytes(self.block_out_channels, self.layers_per_block)
        unet_batch = unet_bytes(
            self.block_out_channels, self.layers_per_block, LATENT_SHAPE[1], self.batch_size
        )
        # cross-attention: keys and values projected from text_hidden at every resnet of every level
        resnets = 2 * self.layers_per_block + 1
        cross = 4.0 * 2 * self.text_hidden * resnets * sum(self.block_out_channels)
        # the tokenizer's vocabulary is the captions' words (a few dozen ids): its embedding is negligible
        text = transformer_bytes(self.text_hidden, self.text_layers, 0, tokens, self.text_intermediate)
        text_batch = transformer_bytes(
            self.text_hidden,
            self.text_layers,
            0,
            tokens,
            self.text_intermediate,
            self.batch_size,
            self.text_heads,
        ) - transformer_bytes(self.text_hidden, self.text_layers, 0, tokens, self.text_intermediate)
        vae = unet_bytes(self.vae_channels, 1)
        vae_batch = unet_bytes(self.vae_channels, 1, 16, self.vae_batch_size) - vae
        check_memory(
            5 * (unet + cross + text) + (unet_batch - unet) + text_batch + 4 * vae + vae_batch,
            f"a text-to-image model with block_out_channels={list(self.block_out_channels)}, "
            f"text_hidden={self.text_hidden}, text_layers={self.text_layers}, "
            f"text_intermediate={self.text_intermediate}, max_tokens={tokens}, "
            f"vae_channels={list(self.vae_channels)}, batch_size={self.batch_size} and "
            f"vae_batch_size={self.vae_batch_size}",
        )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("captions", "stereotype", "memorisation"):
            value = out[name]
            out[name] = None if value is None else dataclasses.asdict(value)
        for name in ("block_out_channels", "vae_channels"):
            out[name] = list(out[name])
        for name in ("stereotype", "memorisation"):
            if out[name] is not None:
                out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in out[name].items()}
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        values = dict(values)
        try:
            values["captions"] = CaptionProbabilities(**values.get("captions", {}))
            for name, kind in (("stereotype", Stereotype), ("memorisation", Memorisation)):
                if values.get(name) is not None:
                    values[name] = kind(
                        **{k: tuple(v) if isinstance(v, list) else v for k, v in values[name].items()}
                    )
        except TypeError as exc:
            raise ValueError(f"config has an invalid entry: {exc}") from None
        return super().from_dict(values)

    def load_data(self) -> T2IData:
        """The caption–image pairs of this run."""
        return make_pairs(self.n_train, self.data_seed, self.captions, self.stereotype, self.memorisation)

    def unet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.UNet2DConditionModel`` (8x8x4 latents, cross-attention)."""
        levels = len(self.block_out_channels)
        return dict(
            sample_size=LATENT_SHAPE[1],
            in_channels=LATENT_SHAPE[0],
            out_channels=LATENT_SHAPE[0],
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            down_block_types=("CrossAttnDownBlock2D",) * levels,
            up_block_types=("CrossAttnUpBlock2D",) * levels,
            cross_attention_dim=self.text_hidden,
            attention_head_dim=self.attention_heads,
            norm_num_groups=self.norm_num_groups,
        )

    def vae_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.AutoencoderKL`` (16x16 RGB <-> 8x8x4; the scaling factor is set
        after training from the latents' spread)."""
        return dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=self.vae_channels,
            latent_channels=LATENT_SHAPE[0],
            norm_num_groups=self.norm_num_groups,
            layers_per_block=1,
            sample_size=16,
        )

    def scheduler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the noise schedule (training DDPM and saved DDIM schedulers)."""
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule="scaled_linear",
            prediction_type="epsilon",
        )


_FULL = {
    # 20 000 pairs, attributes independent and uniform; 2400 steps of 32 (with 900 steps of 64 the
    # samples of fully specified circle prompts showed a circle 30% of the time).
    "shapes-t2i": dict(batch_size=32, steps=2400),
    # "a circle" is on blue 80% of the time among the pairs captioned without a background.
    "shapes-t2i-biased": dict(batch_size=32, steps=2400, stereotype=Stereotype()),
    # 32 member pairs duplicated 1, 4, 16 and 64 times (8 each) among 1000 unique pairs, in batches of 32
    # for 2400 steps: a x64 member is then drawn about 3000 times, a x16 one about 750 (with 20 000
    # unique pairs and 900 steps of 64, 178 draws at x64 did not make the model copy).
    "shapes-t2i-memorise": dict(n_train=1000, batch_size=32, steps=2400, memorisation=Memorisation()),
}
# Seconds-long runs for tests and smoke checks (same code path, tiny networks and data).
_TINY = dict(
    n_train=96,
    text_hidden=16,
    text_intermediate=32,
    vae_channels=(8, 8),
    vae_steps=8,
    vae_batch_size=16,
    vae_n_train=64,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    steps=8,
    batch_size=16,
    warmup_steps=2,
    ema_decay=0.9,
    num_inference_steps=4,
)
PRESETS = Presets(
    T2IConfig,
    {
        **_FULL,
        "shapes-t2i-tiny": _TINY,
        "shapes-t2i-biased-tiny": dict(**_TINY, stereotype=Stereotype()),
        "shapes-t2i-memorise-tiny": dict(
            **_TINY,
            memorisation=Memorisation(counts=(1, 4), per_count=2, n_non_members=4, n_calibration=4),
        ),
    },
)
