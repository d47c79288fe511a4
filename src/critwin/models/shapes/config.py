"""The configuration of a shapes DDPM training run, and the shipped presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from critwin._validation import check_positive_int, check_seed
from critwin.models._store import PIPELINE_MODELS, SHIPPED_MODELS
from critwin.models._training import Presets, TrainingConfig, ddpm_scheduler_kwargs
from critwin.models.shapes.data import IMAGE_SHAPE, ShapesData, check_bias, check_shapes_memory, make_shapes

__all__ = ["ShapesConfig", "PRESETS", "MODEL_NAMES", "BIASED_BACKGROUND", "HELD_OUT_SEED"]

MODEL_NAMES = tuple(
    name for name in SHIPPED_MODELS if name.startswith("shapes") and name not in PIPELINE_MODELS
)
HELD_OUT_SEED = 10_000
"""Seed offset of held-out images (``data_seed + HELD_OUT_SEED``): never a training seed."""
BIASED_BACKGROUND = (0.8, 0.1, 0.1)
"""Background marginal of ``shapes-biased`` (black 80%, blue and grey 10% each)."""


@dataclass(frozen=True)
class ShapesConfig(TrainingConfig):
    """Everything that defines one training run of an unconditional shapes DDPM (stored in the card).

    Attributes
    ----------
    block_out_channels, layers_per_block, norm_num_groups : U-Net size (channels per resolution).
    num_train_timesteps, beta_start, beta_end : the linear DDPM schedule.
    steps, batch_size, learning_rate, warmup_steps : AdamW with linear warm-up then cosine decay.
    ema_decay : decay of the exponential moving average of the weights (the shipped weights).
    n_train : training images, ``make_shapes(n_train, seed=data_seed, bias=bias)``.
    data_seed : seed of the training images (held-out images use other seeds).
    bias : attribute -> probabilities (``make_shapes``'s ``bias``); empty: independent uniform.
    seed : seeds initialisation, batches and noise.
    """

    block_out_channels: tuple[int, ...] = (32, 48, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 1.5e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    n_train: int = 20000
    data_seed: int = 0
    bias: dict[str, tuple[float, ...]] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        self.check_training(max_levels=4, image="a 16x16 image")
        check_shapes_memory(check_positive_int(self.n_train, "n_train"), f"n_train={self.n_train} images")
        check_seed(self.data_seed, "data_seed")
        marginals = check_bias(self.bias)
        # Only the attributes the caller biased are kept (uniform ones are implied).
        object.__setattr__(self, "bias", {name: marginals[name] for name in self.bias})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["bias"] = {name: list(p) for name, p in self.bias.items()}
        return out

    def load_data(self) -> ShapesData:
        """The training images of this run."""
        return make_shapes(self.n_train, seed=self.data_seed, bias=self.bias or None)

    def load_held_out(self, n: int) -> ShapesData:
        """``n`` held-out images of the training distribution (non-members, memorisation scale)."""
        return make_shapes(n, seed=self.data_seed + HELD_OUT_SEED, bias=self.bias or None)

    def unet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.UNet2DModel`` (unconditional, RGB 16x16)."""
        return self.plain_unet_kwargs(IMAGE_SHAPE)

    def scheduler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.DDPMScheduler``."""
        return ddpm_scheduler_kwargs(self)


PRESETS = Presets(
    ShapesConfig,
    {
        # ~0.9 M parameters on 20 000 independent uniform images; the shipped model.
        "shapes": {},
        # The same network on images whose background is 80/10/10 (fairness experiments); 2000 steps to
        # fit the shared machine's time (a shorter cosine schedule, same peak learning rate).
        "shapes-biased": dict(bias={"background": BIASED_BACKGROUND}, steps=2000),
        # The same network on 24 training images (1500 steps: 4000 passes over them), trained until its
        # samples copy them (privacy demo).
        "shapes-memorise": dict(n_train=24, steps=1500),
        # A few-second run for tests and smoke checks.
        "tiny": dict(
            block_out_channels=(8, 16),
            norm_num_groups=4,
            steps=20,
            batch_size=16,
            warmup_steps=5,
            ema_decay=0.9,
            learning_rate=3e-3,
            n_train=256,
        ),
    },
)
