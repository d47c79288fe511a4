"""The configuration of a digits DDPM training run, and the shipped presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from critwin._validation import check_positive_int
from critwin.models._store import SHIPPED_MODELS
from critwin.models._training import TrainingConfig, ddpm_scheduler_kwargs
from critwin.models.data import IMAGE_SHAPE, NUM_CLASSES, DigitsData, load_digits_data

__all__ = ["NULL_LABEL", "MODEL_NAMES", "DigitsConfig", "PRESETS"]

NULL_LABEL = NUM_CLASSES
"""Class label meaning "no digit requested" (unconditional sampling, guidance's reference)."""

MODEL_NAMES = tuple(name for name in SHIPPED_MODELS if name.startswith("digits"))


@dataclass(frozen=True)
class DigitsConfig(TrainingConfig):
    """Everything that defines one training run of the digits DDPM (stored in the model card).

    Attributes
    ----------
    block_out_channels, layers_per_block, norm_num_groups : U-Net size (channels per resolution).
    num_train_timesteps, beta_start, beta_end : the linear DDPM schedule.
    steps, batch_size, learning_rate, warmup_steps : AdamW with linear warm-up then cosine decay.
    ema_decay : decay of the exponential moving average of the weights (the shipped weights).
    label_dropout : probability of replacing a label by the null label (classifier-free guidance).
    split_seed, test_fraction, subset_size : the data split (``subset_size`` training digits kept).
    seed : seeds initialisation, batches, noise and label dropout.
    """

    block_out_channels: tuple[int, ...] = (32, 48, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    split_seed: int = 0
    test_fraction: float = 0.2
    subset_size: int | None = None
    seed: int = 0

    def __post_init__(self):
        self.check_training(max_levels=4, image="an 8x8 image")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.subset_size is not None:
            check_positive_int(self.subset_size, "subset_size", minimum=NUM_CLASSES)

    def load_data(self) -> DigitsData:
        """The data split of this run (``split_seed``, ``test_fraction``, ``subset_size``)."""
        return load_digits_data(
            seed=self.split_seed, test_fraction=self.test_fraction, subset_size=self.subset_size
        )

    def unet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.UNet2DModel`` for this configuration."""
        levels = len(self.block_out_channels)
        return dict(
            sample_size=IMAGE_SHAPE[1],
            in_channels=IMAGE_SHAPE[0],
            out_channels=IMAGE_SHAPE[0],
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=self.norm_num_groups,
            num_class_embeds=NUM_CLASSES + 1,
        )

    def scheduler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.DDPMScheduler`` (diffusers' defaults otherwise)."""
        return ddpm_scheduler_kwargs(self)


PRESETS: dict[str, DigitsConfig] = {
    # ~0.9 M parameters; the shipped model.
    "digits": DigitsConfig(),
    # Same network on 20 training digits (two per class), trained long enough to copy them.
    "digits-memorise": DigitsConfig(subset_size=20, steps=4000, batch_size=64),
    # A few-second run for tests and smoke checks.
    "tiny": DigitsConfig(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        steps=60,
        batch_size=32,
        warmup_steps=5,
        ema_decay=0.9,
        learning_rate=3e-3,
    ),
}
