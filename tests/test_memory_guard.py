"""The one memory guard (critwin._memory.check_memory) on every size a user or a file can give.

Each case asks for terabytes through a public constructor or function and must be refused with a
ValueError that names the argument and the memory limit, before anything that size is allocated: a
case that reached the allocator would fail with torch's RuntimeError (or run out of memory), and one
that accepted the size without a check would not raise at all. Nothing here builds more than a few
kilobytes, so every case is fast by construction.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from critwin import (
    CategoricalMixture,
    GaussianMixture,
    clone,
    forward_reverse,
    random_walk_modes,
    time_grid,
    tv,
)
from critwin._memory import memory_limit, set_memory_limit, transformer_bytes
from critwin.experiments.callable_process import CallableProcess
from critwin.experiments.process import MixtureProcess
from critwin.experiments.token_process import CategoricalProcess, MaskedDiffusionProcess, kappa_levels
from critwin.models.digits.config import PRESETS as DIGITS_PRESETS
from critwin.models.digits.config import DigitsConfig
from critwin.models.shapes.config import PRESETS as SHAPES_PRESETS
from critwin.models.shapes.config import ShapesConfig
from critwin.models.shapes.data import make_shapes
from critwin.models.shapes_t2i.config import PRESETS as T2I_PRESETS
from critwin.models.shapes_t2i.config import T2IConfig
from critwin.models.shapes_t2i.data import make_pairs
from critwin.models.text.config import PRESETS as TEXT_PRESETS
from critwin.models.text.config import TextConfig
from critwin.models.text.grammar import RandomHierarchy
from critwin.models.text.network import TokenTransformer
from critwin.theory.discrete import categorical_tv

HUGE = 10**12
F64 = torch.float64
STRINGS = CategoricalMixture.from_strings([[0, 1], [1, 1]], vocab_size=2)
SPREAD = CategoricalMixture(torch.tensor([[[0.5, 0.5]], [[0.2, 0.8]]], dtype=F64))
GAUSS = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64))
# distinct covariances: no shared span, Monte Carlo in the full dimension
THREE = GaussianMixture(torch.eye(3, 10, dtype=F64), torch.tensor([0.5, 1.0, 2.0], dtype=F64))


def _masked_process(n_steps: int = 4) -> MaskedDiffusionProcess:
    return MaskedDiffusionProcess(lambda x: torch.zeros(*x.shape, 2), 2, 2, n_steps=n_steps)


CASES = {
    # a default grid of n_steps Karras levels: named as the user typed it (was karras_sigmas(n=...))
    "CallableProcess-n_steps": (
        lambda: CallableProcess(lambda x, sigma: x, sample_shape=(2,), n_steps=HUGE),
        "n_steps=1000000000000",
    ),
    # product-categorical laws over token sequences
    "CategoricalMixture.from_strings-vocab_size": (
        lambda: CategoricalMixture.from_strings([[0]], vocab_size=HUGE),
        "vocab_size=1000000000000",
    ),
    "CategoricalMixture.sample-n-dirac": (lambda: STRINGS.sample(HUGE), r"sample\(n=1000000000000\)"),
    "CategoricalMixture.sample-n": (lambda: SPREAD.sample(HUGE), r"sample\(n=1000000000000\)"),
    "random_walk_modes-length": (lambda: random_walk_modes(HUGE, 0.1), "length=1000000000000"),
    "categorical_tv-n": (
        lambda: categorical_tv(SPREAD.subset([0]), SPREAD.subset([1]), 0.5, n=HUGE, method="monte-carlo"),
        "n=1000000000000",
    ),
    # discrete processes
    "kappa_levels-n_steps": (lambda: kappa_levels(HUGE), "n_steps=1000000000000"),
    "MaskedDiffusionProcess-n_steps": (lambda: _masked_process(HUGE), "n_steps=1000000000000"),
    "MaskedDiffusionProcess.prior-n": (lambda: _masked_process().prior(HUGE), "n=1000000000000"),
    "CategoricalProcess.prior-n": (lambda: CategoricalProcess(STRINGS).prior(HUGE), "n=1000000000000"),
    # the text models: grammar, network, config (a card's sizes)
    "RandomHierarchy-vocab_size": (
        lambda: RandomHierarchy(n_classes=2, vocab_size=10**6, n_rules=1, branching=2, depth=1),
        "vocab_size=1000000, branching=2",
    ),
    "RandomHierarchy.sample-n": (
        lambda: RandomHierarchy(2, 4, 2, 2, 2).sample(HUGE, torch.Generator()),
        r"sample\(n=1000000000000\)",
    ),
    "TokenTransformer-width": (lambda: TokenTransformer(9, 8, 8, width=2**20, heads=1), "width=1048576"),
    "TokenTransformer-layers": (lambda: TokenTransformer(9, 8, 8, layers=10**7), "layers=10000000"),
    "TextConfig-width": (lambda: TextConfig(width=2**20, heads=1), "width=1048576"),
    "TextConfig-layers": (lambda: TextConfig(layers=10**7), "layers=10000000"),
    "TextConfig-batch_size": (lambda: TextConfig(batch_size=HUGE), "batch_size=1000000000000"),
    "TextConfig-sampler_steps": (lambda: TextConfig(sampler_steps=HUGE), "sampler_steps=1000000000000"),
    "TextConfig.from_dict-width": (
        lambda: TextConfig.from_dict({"width": 2**20, "heads": 1}),
        "width=1048576",
    ),
    # data sets and the image models' configs
    "make_shapes-n": (lambda: make_shapes(HUGE), r"make_shapes\(n=1000000000000\)"),
    "make_pairs-n": (lambda: make_pairs(HUGE), r"make_pairs\(n=1000000000000\)"),
    "DigitsConfig-block_out_channels": (
        lambda: DigitsConfig.from_dict({"block_out_channels": [2**20] * 2}),
        "block_out_channels=",
    ),
    "ShapesConfig-n_train": (lambda: ShapesConfig.from_dict({"n_train": HUGE}), "n_train=1000000000000"),
    # mixtures, grids and the sweeps
    "GaussianMixture.sample-n": (lambda: GAUSS.sample(HUGE), r"sample\(n=1000000000000\)"),
    "time_grid-n_steps": (lambda: time_grid(1.0, HUGE), "n_steps=1000000000000"),
    "tv-n-monte-carlo": (
        lambda: tv(THREE.subset([0, 1]), THREE.subset([2]), 0.1, n=HUGE, method="monte-carlo"),
        "n=1000000000000 points in dimension 10",
    ),
    "tv-n-span": (
        lambda: tv(GAUSS.subset([0]), GAUSS.subset([1]), 0.1, n=HUGE, method="monte-carlo"),
        "n=1000000000000 points in a span",
    ),
    "forward_reverse-n_per_time": (
        lambda: forward_reverse(
            MixtureProcess(GAUSS, n_steps=4), torch.zeros(2, 2), [0.5], n_per_time=HUGE, progress=False
        ),
        "n_per_time=1000000000000",
    ),
    "clone-n_trajectories": (
        lambda: clone(MixtureProcess(GAUSS, n_steps=4), HUGE, [1.0], 2, progress=False),
        "n_trajectories=1000000000000",
    ),
    "clone-n_clones": (
        lambda: clone(MixtureProcess(GAUSS, n_steps=4), 2, [1.0], HUGE, progress=False),
        "n_clones=1000000000000",
    ),
}
# a text-to-image card's sizes
for _name, _value in [
    ("text_hidden", 2**20),
    ("text_layers", 10**9),
    ("text_intermediate", HUGE),
    ("max_tokens", 10**9),
    ("vae_channels", [2**20, 2**20]),
    ("n_train", HUGE),
    ("vae_n_train", HUGE),
    ("batch_size", HUGE),
]:
    _extra = {"text_heads": 1} if _name == "text_hidden" else {}
    CASES[f"T2IConfig.from_dict-{_name}"] = (
        lambda n=_name, v=_value, e=_extra: T2IConfig.from_dict({n: v, **e}),
        f"{_name}=",
    )


@pytest.fixture
def default_limit():
    """The default limit (4 GiB) whatever the environment says."""
    set_memory_limit("4G")
    yield
    set_memory_limit(None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_huge_request_is_refused_before_allocation(name, default_limit):
    fn, pattern = CASES[name]
    with pytest.raises(ValueError, match=pattern) as info:
        fn()
    assert "above the memory limit of 4 GiB" in str(info.value)


def test_the_refusal_follows_the_limit():
    # 3 tables of 8 bytes x 1 x 4 x 2^16 = 6 MiB: accepted under 4 GiB, refused under 1 MiB
    strings = [[0, 1, 2, 3]]
    assert CategoricalMixture.from_strings(strings, vocab_size=2**16).vocab_size == 2**16
    set_memory_limit("1M")
    try:
        assert memory_limit() == 2**20
        with pytest.raises(ValueError, match="vocab_size=65536.*about 0.00586 GiB"):
            CategoricalMixture.from_strings(strings, vocab_size=2**16)
    finally:
        set_memory_limit(None)


def test_posterior_tables_of_many_rows_are_refused():
    # denoise builds (n, L, V) tables: 4 x 8 x 2000 x 10 x 500 bytes = 320 MB, from a 2000 x 10 input
    m = CategoricalMixture.from_strings([[0] * 10, [1] * 10], vocab_size=500)
    y = torch.full((2000, 10), 500)  # everything masked
    assert m.denoise(y[:4], 0.5).shape == (4, 10, 500)
    set_memory_limit("64M")
    try:
        with pytest.raises(ValueError, match=r"denoise of 2000 sequences: \(n, L, V\) = \(2000, 10, 500\)"):
            m.denoise(y, 0.5)
        uniform = m.with_noise("uniform")
        with pytest.raises(ValueError, match="2000 sequences"):
            uniform.sample_posterior(torch.zeros(2000, 10, dtype=torch.long), 0.5)
    finally:
        set_memory_limit(None)


def test_the_shipped_configs_pass_the_guard(default_limit):
    for config in [*TEXT_PRESETS.values(), *T2I_PRESETS.values()]:
        type(config).from_dict(config.to_dict())  # the card round trip runs the guard again


def test_a_preset_is_checked_when_looked_up_not_at_import():
    # Importing the model modules under a 1 KiB limit: their presets are not built then (a spawned
    # demo worker imports them under the limit it inherits) ...
    modules = "critwin.models.digits, critwin.models.shapes, critwin.models.text, critwin.models.shapes_t2i"
    env = {**os.environ, "CRITWIN_MEMORY_LIMIT": "1K"}
    imported = subprocess.run([sys.executable, "-c", f"import {modules}"], env=env, capture_output=True)
    assert imported.returncode == 0, imported.stderr.decode()[-2000:]
    # ... each is built, and refused, when used under the limit in force then
    families = [DIGITS_PRESETS, SHAPES_PRESETS, TEXT_PRESETS, T2I_PRESETS]
    set_memory_limit("1K")
    try:
        for presets in families:
            for name in presets:
                with pytest.raises(ValueError, match="above the memory limit of"):
                    presets[name]
    finally:
        set_memory_limit(None)
    assert DIGITS_PRESETS["digits"] == DigitsConfig()  # and equal to the config it names


def test_the_transformer_estimate_counts_the_parameters():
    # within 5% of the shipped text network's parameters (the biases and norms are left out)
    net = TokenTransformer(9, 8, length=8, width=64, heads=4, layers=2)
    params = sum(p.numel() for p in net.parameters())
    assert abs(transformer_bytes(64, 2, 9 + 8, 8) / 4 / params - 1) < 0.05


def test_the_number_of_inference_steps_is_bounded_by_the_schedule():
    with pytest.raises(ValueError, match="num_inference_steps must be at most num_train_timesteps=1000"):
        T2IConfig.from_dict({"num_inference_steps": 1001})
