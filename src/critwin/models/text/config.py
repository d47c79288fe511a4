"""The configuration of a text-model training run on the Random Hierarchy Model, and the presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from critwin._memory import GRID_BYTES, check_memory, transformer_bytes
from critwin._validation import check_positive_int, check_seed
from critwin.experiments.token_process import MASKED_SAMPLERS
from critwin.models._store import TEXT_MODELS
from critwin.models._training import Presets, TrainingConfig
from critwin.models.text.grammar import RandomHierarchy

__all__ = ["TextConfig", "PRESETS", "MODEL_NAMES", "KINDS"]

KINDS = ("masked", "autoregressive")
"""``"masked"``: a bidirectional masked-diffusion denoiser; ``"autoregressive"``: a causal LM."""
MODEL_NAMES = TEXT_MODELS
"""The shipped text models (registered in :data:`critwin.models._store.SHIPPED_MODELS`)."""


@dataclass(frozen=True)
class TextConfig(TrainingConfig):
    """Everything that defines one training run of a text model (stored in its card).

    Attributes
    ----------
    kind : ``"masked"`` or ``"autoregressive"`` (:data:`KINDS`).
    n_classes, vocab_size, n_rules, branching, depth, grammar_seed : the :class:`RandomHierarchy`
        (default: the shipped models' language, 256 strings of 8 tokens over 8 symbols; levels class
        (2 values) > level1 (4) > level2 (16) > string (256)).
    width, heads, layers : the :class:`~critwin.models.text.network.TokenTransformer`.
    steps, batch_size, learning_rate, warmup_steps : AdamW (linear warm-up, cosine decay); every batch
        is fresh strings drawn from the grammar.
    ema_decay : decay of the weights' moving average (the shipped weights).
    sampler, sampler_steps : masked diffusion: the sampler and the steps of the default kappa grid of
        :meth:`TextModel.process` (``"first-hitting"``: exact in continuous time, one model call per
        token whatever the grid; ``"ancestral"``: MDLM's grid sampler).
    seed : seeds initialisation, batches and masks.
    """

    kind: str = "masked"
    n_classes: int = 2
    vocab_size: int = 8
    n_rules: int = 2
    branching: int = 2
    depth: int = 3
    grammar_seed: int = 0
    width: int = 64
    heads: int = 4
    layers: int = 2
    steps: int = 6000
    batch_size: int = 256
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    ema_decay: float = 0.995
    sampler: str = "first-hitting"
    sampler_steps: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.sampler not in MASKED_SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(MASKED_SAMPLERS)}; got {self.sampler!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        for name in ("width", "heads", "layers", "steps", "batch_size", "sampler_steps"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_seed(self.seed, "seed")
        check_seed(self.grammar_seed, "grammar_seed")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        self.load_data()  # the grammar's own checks
        self.check_memory_needs()

    def check_memory_needs(self) -> None:
        """The memory guard on the sizes of a config (typed, or read from a model card): the network, its
        EMA copy, gradients and AdamW moments (5 copies of the weights), a batch's activations and the
        sampler's grid."""
        kw = self.network_kwargs()
        size = transformer_bytes(self.width, self.layers, kw["n_inputs"] + kw["n_outputs"], kw["length"])
        batch = transformer_bytes(
            self.width, self.layers, 0, kw["length"], batch=self.batch_size, heads=self.heads
        ) - transformer_bytes(self.width, self.layers, 0, kw["length"])
        check_memory(
            5 * size + batch + GRID_BYTES * self.sampler_steps,
            f"a text model with width={self.width}, layers={self.layers}, heads={self.heads}, "
            f"batch_size={self.batch_size} and sampler_steps={self.sampler_steps} "
            f"(strings of {kw['length']} tokens)",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_data(self) -> RandomHierarchy:
        """The grammar the model learns (its strings are the training data)."""
        return RandomHierarchy(
            self.n_classes, self.vocab_size, self.n_rules, self.branching, self.depth, self.grammar_seed
        )

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~critwin.models.text.network.TokenTransformer`."""
        length = self.branching**self.depth
        return dict(
            n_inputs=self.vocab_size + 1,  # the tokens and the mask / beginning-of-sequence id
            n_outputs=self.vocab_size,
            length=length,
            width=self.width,
            heads=self.heads,
            layers=self.layers,
            causal=self.kind == "autoregressive",
        )


_TINY = dict(width=16, heads=2, layers=1, steps=30, batch_size=32, warmup_steps=5, ema_decay=0.9)

PRESETS = Presets(
    TextConfig,
    {
        # ~100 k parameters each; a few minutes on one thread (see the cards for the measured times).
        "rhm-mdm": dict(kind="masked"),
        "rhm-ar": dict(kind="autoregressive"),
        # Seconds, for tests and smoke checks.
        "rhm-mdm-tiny": dict(kind="masked", **_TINY),
        "rhm-ar-tiny": dict(kind="autoregressive", **_TINY),
    },
)
