"""The configuration of a digits DDPM training run, and the shipped presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from critwin._validation import check_positive_int, check_seed
from critwin.models._store import SHIPPED_MODELS
from critwin.models._training import Presets, TrainingConfig, ddpm_scheduler_kwargs
from critwin.models.data import IMAGE_SHAPE, NUM_CLASSES, DigitsData, load_digits_data

__all__ = ["NULL_LABEL", "MODEL_NAMES", "PARAMETERISATIONS", "DigitsConfig", "PRESETS"]

NULL_LABEL = NUM_CLASSES
"""Class label meaning "no digit requested" (unconditional sampling, guidance's reference)."""

MODEL_NAMES = tuple(name for name in SHIPPED_MODELS if name.startswith("digits"))

PARAMETERISATIONS = ("epsilon", "v_prediction", "flow")
"""What the network regresses: the noise or the v-target (DDPM schedule), or the rectified-flow velocity."""

# The diffusers scheduler class each parameterisation trains and samples with.
_SCHEDULER_CLASSES = {
    "epsilon": "DDPMScheduler",
    "v_prediction": "DDPMScheduler",
    "flow": "FlowMatchEulerDiscreteScheduler",
}


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
    parameterisation : one of :data:`PARAMETERISATIONS`. ``"epsilon"`` and ``"v_prediction"`` train on the
        linear DDPM schedule (targets ``z`` and ``sqrt(alpha_bar) z - sqrt(1 - alpha_bar) x0``);
        ``"flow"`` is rectified flow: ``x_s = (1 - s) x0 + s z`` with ``s ~ U(0, 1)``, target velocity
        ``z - x0``, network timestep ``s * num_train_timesteps`` (``beta_*`` unused).
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
    parameterisation: str = "epsilon"

    def __post_init__(self):
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(
                f"parameterisation must be one of {list(PARAMETERISATIONS)}, got {self.parameterisation!r}"
            )
        self.check_training(max_levels=4, image="an 8x8 image")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.subset_size is not None:
            check_positive_int(self.subset_size, "subset_size", minimum=NUM_CLASSES)
        check_seed(self.split_seed, "split_seed")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.parameterisation == "epsilon":
            # The default is left out so that epsilon cards read exactly as before the field existed.
            del out["parameterisation"]
        return out

    def load_data(self) -> DigitsData:
        """The data split of this run (``split_seed``, ``test_fraction``, ``subset_size``)."""
        return load_digits_data(
            seed=self.split_seed, test_fraction=self.test_fraction, subset_size=self.subset_size
        )

    def unet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``diffusers.UNet2DModel`` for this configuration."""
        return self.plain_unet_kwargs(IMAGE_SHAPE, num_class_embeds=NUM_CLASSES + 1)

    @property
    def scheduler_class_name(self) -> str:
        """The diffusers scheduler class this model trains and samples with."""
        return _SCHEDULER_CLASSES[self.parameterisation]

    def scheduler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :attr:`scheduler_class_name` (diffusers' defaults otherwise)."""
        if self.parameterisation == "flow":
            # shift = 1: the flow sigmas are the plain linspace the model is trained on (no SD3 shift).
            return dict(num_train_timesteps=self.num_train_timesteps, shift=1.0)
        return {**ddpm_scheduler_kwargs(self), "prediction_type": self.parameterisation}


PRESETS = Presets(
    DigitsConfig,
    {
        # ~0.9 M parameters; the shipped model.
        "digits": {},
        # Same network on 20 training digits (two per class), trained long enough to copy them.
        "digits-memorise": dict(subset_size=20, steps=4000, batch_size=64),
        # The same network, data and run on other parameterisations (the parameterisation-invariance check).
        "digits-flow": dict(parameterisation="flow"),
        "digits-v": dict(parameterisation="v_prediction"),
        # A few-second run for tests and smoke checks.
        "tiny": dict(
            block_out_channels=(8, 16),
            norm_num_groups=4,
            steps=60,
            batch_size=32,
            warmup_steps=5,
            ema_decay=0.9,
            learning_rate=3e-3,
        ),
    },
)
