"""Bad-input recount of issue 22: a corpus over its classes, each case classified by what critwin did.

    python scripts/bad_inputs.py [--timeout 60] [--only SUBSTRING] [--json]

Each case is a snippet of the API (a clear ``ValueError`` naming the argument is good) or a command line
run through ``critwin.cli.main`` (exit status 2 with one ``critwin: error:`` line naming the option is
good); a few cases are inputs that must be *accepted* (NumPy images for a reader, a scheduler by name).
A case that raises another exception (a traceback), a ``ValueError`` that does not name what it should,
returns a result (silent), runs past ``--timeout`` (a hang), or, for a command, leaves behind an output
it names (wrote) is mishandled. Seeds must give the one message of ``check_seed`` word for word, in every
public function that takes one (a model argument that fails on any use shows the seed is refused
first) and every ``--seed`` command. Cases run in one worker
process, one after another, each under its own alarm; a worker that stops answering is killed and the
next one resumes after the stuck case. Prints one line per mishandled case and the counts per class.
Tiny models are built from ``tests/tiny_models.py``; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HUGE = 10**12

# (class, name, kind, code or argv, needle): kind "api" (code raises ValueError matching needle),
# "accept" (code runs without error), "cli" (argv exits 2 with one line matching needle).
CASES: list[tuple[str, str, str, object, str]] = []


def api(klass: str, name: str, code: str, needle: str) -> None:
    CASES.append((klass, name, "api", code, needle))


def accept(klass: str, name: str, code: str) -> None:
    CASES.append((klass, name, "accept", code, ""))


def cli(klass: str, name: str, argv: list[str], needle: str) -> None:
    CASES.append((klass, name, "cli", argv, needle))


# ------------------------------------------------------------------------ model outputs at the seam
OUTPUTS = {
    "wrong-shape": "torch.zeros(x.shape[0], *[s + 1 for s in x.shape[1:]])",
    "wrong-batch": "torch.zeros(1, *x.shape[1:])",
    "nan": "torch.full_like(x, float('nan'))",
    "inf": "torch.full_like(x, float('inf'))",
    "int": "torch.zeros(x.shape, dtype=torch.int64)",
    "half": "torch.zeros(x.shape, dtype=torch.float16)",
    "none": "None",
    "numpy": "x.detach().numpy()",
    "tuple": "(x, x)",
    "raises": "(_ for _ in ()).throw(RuntimeError('boom'))",
}
for label, expr in OUTPUTS.items():
    api(
        "model output",
        f"callable-{label}",
        f"p = CallableProcess(lambda x, sigma: {expr}, sample_shape=(2,), n_steps=3)\n"
        "p.run(p.prior(3, generator=torch.Generator().manual_seed(0)))",
        r"(?s)lambda.*(step|t=)",
    )
    api(
        "model output",
        f"mixture-{label}",
        "class Bad(GaussianMixture):\n"
        f"    def denoise(self, x, t, *a, **k): return {expr}\n"
        f"    def score(self, x, t, *a, **k): return {expr}\n"
        f"    def score_and_denoise(self, x, t, *a, **k): return {expr}, {expr}\n"
        "m = Bad(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]))\n"
        "forward_reverse(m, m.sample(2, generator=torch.Generator().manual_seed(0))[0], [0.5], "
        "n_per_time=1, seed=0, progress=False, n_steps=3, sampler='ddim')",
        r"(?s)(denoise|score|Bad).*(step|t=)",
    )
    api(
        "model output",
        f"diffusers-{label}",
        "unet = tiny_unet()\n"
        f"unet.forward = lambda x, *a, **k: UNet2DOutput(sample={expr})\n"
        "p = DiffusersProcess(unet, DDIMScheduler(), 3)\n"
        "p.run(p.prior(2, generator=torch.Generator().manual_seed(0)))",
        r"(?s)(unet|UNet|network|model).*(step|t=)",
    )
    api(
        "model output",
        f"flow-{label}",
        "pipe = tiny_sd3()\n"
        f"pipe.transformer.forward = lambda hidden_states, *a, **k: Transformer2DModelOutput(sample="
        f"{expr.replace('x', 'hidden_states')})\n"
        "p = DiffusersProcess(pipe.transformer, pipe.scheduler, 3, cond=SD3_COND)\n"
        "p.run(p.prior(2, generator=torch.Generator().manual_seed(0)))",
        r"(?s)(transformer|SD3|network|model).*(step|t=)",
    )

# ---------------------------------------------------------------------------------------- readers
READER_INPUTS = {
    "nan": "torch.full((2, 3, 16, 16), float('nan'))",
    "inf": "torch.full((2, 3, 16, 16), float('inf'))",
    "int": "torch.zeros((2, 3, 16, 16), dtype=torch.int64)",
    "wrong-shape": "torch.zeros((2, 3, 5, 5))",
}
for label, expr in READER_INPUTS.items():
    for reader in ("background", "colour", "mark", "shape"):
        api("readers", f"shapes-{reader}-{label}", f"shape_readers()[{reader!r}]({expr})", r"\b(x|images?)\b")
    digits = expr.replace("(2, 3, 16, 16)", "(2, 1, 8, 8)").replace("(2, 3, 5, 5)", "(2, 1, 5, 5)")
    api("readers", f"digit-classifier-{label}", f"classifier_feature()({digits})", r"\b(x|images?)\b")
for reader in ("background", "colour", "mark", "shape"):
    accept("readers", f"shapes-{reader}-numpy", f"shape_readers()[{reader!r}](make_shapes(2).images.numpy())")
accept("readers", "digit-classifier-numpy", "classifier_feature()(torch.zeros(2, 1, 8, 8).numpy())")
api("readers", "attribute_readers-classifier-str", "shape_readers(classifier='x')", "classifier")
api("readers", "attribute_readers-classifier-int", "shape_readers(classifier=3)", "classifier")

# -------------------------------------------------------------- schedules, targets, features, data
api(
    "flow time past range",
    "flow-forward-reverse-t30",
    "pipe = tiny_sd3()\np = DiffusersProcess(pipe.transformer, pipe.scheduler, 3, cond=SD3_COND)\n"
    "forward_reverse(p, p.prior(1, generator=torch.Generator().manual_seed(0)), [30.0], "
    "feature=lambda x: torch.zeros(len(x), dtype=torch.long), seed=0, progress=False)",
    "beyond",
)
for label, target in (("nan", "[float('nan'), 0.5]"), ("negative", "[-0.5, 1.5]"), ("short", "[1.0]")):
    api(
        "rebalance target",
        f"rebalance-target-{label}",
        f"rebalance(MIX, 4, 'bayes', 2, 0.5, target={target}, seed=0)",
        "target",
    )
cli("duplicated names", "atlas-features-shape-shape", ["atlas", "--features", "shape,shape"], "--features")
cli("duplicated names", "window-after-0-0", ["window", "{mixture}", "--after", "0,0"], "--after")
for label, data in (("int", "3"), ("triple", "(1, 2, 3)"), ("pair-of-none", "(None, None)"), ("str", "'x'")):
    api(
        "malformed data=",
        f"atlas-data-{label}",
        f"atlas(SHAPES_PROCESS, shape_readers(), data={data}, n_sources=2, progress=False)",
        "data",
    )
api("bad process", "callable-sigma_min-0", "CallableProcess(lambda x, s: x, sigma_min=0)", "sigma_min")
api(
    "bad process",
    "callable-sample_shape-neg",
    "CallableProcess(lambda x, s: x, sample_shape=(-2,))",
    "sample_shape",
)
api(
    "bad process",
    "callable-sample_shape-float",
    "CallableProcess(lambda x, s: x, sample_shape=(2.5,))",
    "sample_shape",
)
api("bad process", "shipped-scheduler-number", "shipped_process('digits', scheduler=5)", "scheduler")
api("bad process", "shipped-scheduler-unknown", "shipped_process('digits', scheduler='nope')", "scheduler")
accept(
    "bad process",
    "shipped-scheduler-name",
    "shipped_process('digits', num_inference_steps=3, scheduler='ddim')",
)
api("bad process", "shipped-device-tpu", "shipped_process('digits', device='tpu')", "device")
api("bad process", "shipped-dtype-int", "shipped_process('digits', dtype=torch.int64)", "dtype")
# The scheduler as a number or an unknown name, and device="tpu", on every loader that takes them; a known
# name must be accepted.
for model in (
    "digits-flow",
    "digits-v",
    "digits-memorise",
    "shapes",
):  # shapes-t2i is a pipeline: refused by name
    for label, given in (
        ("number", "scheduler=5"),
        ("float", "scheduler=1.5"),
        ("unknown", "scheduler='nope'"),
    ):
        api(
            "bad process",
            f"shipped-{model}-scheduler-{label}",
            f"shipped_process('{model}', {given})",
            "scheduler",
        )
    api("bad process", f"shipped-{model}-device-tpu", f"shipped_process('{model}', device='tpu')", "device")
accept(
    "bad process",
    "shipped-shapes-scheduler-name",
    "shipped_process('shapes', num_inference_steps=3, scheduler='ddim')",
)
api(
    "bad process",
    "digits-process-scheduler-number",
    "load_digits_model('digits').process(scheduler=5)",
    "scheduler",
)
api("bad process", "load_local-scheduler-number", "load_local(ddpm_dir(), scheduler=5)", "scheduler")
api("bad process", "load_local-scheduler-unknown", "load_local(ddpm_dir(), scheduler='nope')", "scheduler")
api("bad process", "load_local-device-tpu", "load_local(ddpm_dir(), device='tpu')", "device")
accept("bad process", "load_local-scheduler-name", "load_local(ddpm_dir(), scheduler='ddim')")
api("bad process", "text_process-device-tpu", "text_process('rhm-mdm', device='tpu')", "device")
api("bad process", "unit_generator-device-tpu", "unit_generator(0, 1, device='tpu')", "device")
api("bad process", "mixture-to-device-tpu", "MIX.to(device='tpu')", "device")
cli(
    "bad process",
    "sweep-feature-no-argument",
    ["sweep", "--model", "digits", "--out", "{tmp}/o", "--feature", "os:getcwd"],
    "--feature",
)
cli(
    "bad process",
    "sweep-feature-two-arguments",
    ["sweep", "--model", "digits", "--out", "{tmp}/o", "--feature", "os.path:join"],
    "feature 'os.path:join' raised",
)
api(
    "bad process",
    "feature-raises",
    "forward_reverse(MIX, X0, [0.5], feature=lambda x: 1 / 0, seed=0, progress=False, n_steps=3)",
    "lambda",
)
api(
    "bad process",
    "feature-returns-none",
    "forward_reverse(MIX, X0, [0.5], feature=lambda x: None, seed=0, progress=False, n_steps=3)",
    "lambda",
)
api(
    "bad process",
    "feature-returns-tuple",
    "forward_reverse(MIX, X0, [0.5], feature=lambda x: (x, x), seed=0, progress=False, n_steps=3)",
    "lambda",
)

# --------------------------------------------------------------------------------- model directories
for label, edit in (
    ("unet-sample_size-negative", "edit_json(d / 'unet' / 'config.json', sample_size=-8)"),
    (
        "unet-block_out_channels-huge",
        f"edit_json(d / 'unet' / 'config.json', block_out_channels=[{HUGE}, {HUGE}])",
    ),
    ("scheduler-beta_end-nan", "edit_json(d / 'scheduler' / 'scheduler_config.json', beta_end=float('nan'))"),
    (
        "scheduler-train-steps-huge",
        f"edit_json(d / 'scheduler' / 'scheduler_config.json', num_train_timesteps={HUGE})",
    ),
):
    key = re.search(r"(\w+)=", edit).group(1)
    api(
        "model directory",
        f"ddpm-dir-{label}",
        f"d = ddpm_dir()\n{edit}\nload_local(d)",
        rf"(?s)(config.json.*{key}|{key}.*config.json)",
    )
for dtype in ("float64", "int8"):
    api(
        "model directory",
        f"digits-weights-{dtype}",
        f"d = digits_dir(torch.{dtype})\nload_digits_model('digits', d).process(num_inference_steps=2)",
        dtype,
    )

# ---------------------------------------------------------------------------------------------- seeds
SEED_CALLS = {
    "forward_reverse": "forward_reverse(MIX, X0, [0.5], seed={s}, progress=False, n_steps=3)",
    "clone": "clone(MIX, 2, [0.5], 2, seed={s}, progress=False, n_steps=3)",
    "search_window": "search_window(MIX, X0, seed={s}, progress=False, n_steps=3)",
    "rebalance": "rebalance(MIX, 4, 'bayes', 2, 0.5, seed={s})",
    "membership_audit": "membership_audit(MIX, X0, X0, [0.5], seed={s})",
    "estimate_window": "estimate_window(FR_RESULT, seed={s})",
    "atlas": "atlas(SHAPES_PROCESS, shape_readers(), seed={s}, progress=False)",
    "make_shapes": "make_shapes(4, seed={s})",
    "load_digits_data": "load_digits_data(seed={s})",
}
# Every other public function that takes a seed. ``P`` is a model that fails on any use: a seed must be
# refused before the model is touched (the one rule, before any work). (name, call, parameter).
MORE_SEED_CALLS = [
    ("window_fork_time", "window_fork_time(MIX, X0, lambda x: (x[:, 0] > 0).long(), times=[0.5], seed={s})"),
    ("augmented_samples", "augmented_samples(P, 'a circle', 2, lambda p, i: p, 2, seed={s})"),
    ("interval_guided_samples", "interval_guided_samples(P, 'a circle', 2, seed={s})"),
    ("plain_samples", "plain_samples(P, 'a circle', 2, seed={s})"),
    (
        "prompt_fairness",
        "prompt_fairness(P, 'a circle', 'colour', selector=P, judges={{'colour': P}}, n_classes=2, seed={s})",
    ),
    ("prompt_windows", "prompt_windows(P, 'a circle', {{'r': P}}, seed={s})"),
    (
        "memorisation_audit",
        "memorisation_audit(P, PromptSets(['a', 'b'], [1, 1], ['c', 'd'], ['e', 'f']), seed={s})",
    ),
    ("commitment_scores", "commitment_scores(P, ['a'], seed={s})"),
    ("denoising_loss_scores", "denoising_loss_scores(P, ['a'], torch.zeros(1, 3, 8, 8), seed={s})"),
    ("prompt_scores.generate", "prompt_generate(P, ['a'], 1, seed={s})"),
    ("wen_scores", "wen_scores(P, ['a'], seed={s})"),
    ("reference_features", "reference_features({{'shape': 0}}, n=4, seed={s})"),
    ("text_atlas", "text_atlas(P, P, seed={s})"),
    ("derive_seed", "derive_seed({s}, 1)", "seed"),
    ("resolve_seed", "resolve_seed({s}, None)", "seed"),
    ("unit_generator", "unit_generator({s}, 1)", "seed"),
    ("DigitsConfig", "DigitsConfig(seed={s})"),
    ("DigitsConfig-split_seed", "DigitsConfig(split_seed={s})", "split_seed"),
    (
        "fit_classifier",
        "fit_classifier(P, torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), epochs=1, "
        "batch_size=2, learning_rate=0.01, seed={s})",
    ),
    ("evaluate_shapes_selector", "evaluate_shapes_selector(P, n=4, seed={s})"),
    ("train_digit_judge", "train_digit_judge(P, epochs=1, seed={s})"),
    ("train_shapes_selector", "train_shapes_selector(n_train=8, epochs=1, seed={s})"),
    ("train_shapes_selector", "train_shapes_selector(n_train=8, epochs=1, data_seed={s})", "data_seed"),
    ("ShapesConfig", "ShapesConfig(seed={s})"),
    ("ShapesConfig-data_seed", "ShapesConfig(data_seed={s})", "data_seed"),
    ("evaluate_readers", "evaluate_readers({{'r': P}}, n=4, seed={s})"),
    (
        "attribute_histograms",
        "attribute_histograms({{'a': torch.zeros(4, dtype=torch.long)}}, "
        "{{'a': torch.zeros(4, dtype=torch.long)}}, n_bootstrap=2, seed={s})",
    ),
    ("train_shape_classifier", "train_shape_classifier(n_train=8, epochs=1, seed={s})"),
    ("train_shape_classifier", "train_shape_classifier(n_train=8, epochs=1, data_seed={s})", "data_seed"),
    ("T2IConfig", "T2IConfig(seed={s})"),
    ("T2IConfig-data_seed", "T2IConfig(data_seed={s})", "data_seed"),
    ("T2IConfig-vae_data_seed", "T2IConfig(vae_data_seed={s})", "vae_data_seed"),
    ("caption_adherence", "caption_adherence(P, {{'r': P}}, 1.0, 2, n_per_prompt=1, seed={s})"),
    ("copying", "copying(P, P, 1.0, 2, seed={s})"),
    ("evaluate_t2i", "evaluate_t2i(P, P, P, {{}}, seed={s})"),
    ("t2i.generate", "t2i_generate(P, ['a'], 1.0, 2, seed={s})"),
    ("make_pairs", "make_pairs(4, seed={s})"),
    ("prompt_histograms", "prompt_histograms(P, {{}}, 'a', 2, 1.0, 2, seed={s})"),
    ("RandomHierarchy", "RandomHierarchy(seed={s})"),
    ("TextConfig", "TextConfig(seed={s})"),
    ("TextConfig-grammar_seed", "TextConfig(grammar_seed={s})", "grammar_seed"),
    ("evaluate_text_model", "evaluate_text_model(P, n_samples=4, seed={s})"),
    ("train_classifier", "train_classifier(P, epochs=1, seed={s})"),
    ("run_demo", "run_demo(TMP / 'demo-seed', quick=True, seed={s}, progress=False)", "seed"),
    ("bootstrap_generator", "bootstrap_generator({s}, 0)", "seed"),
    ("compare_levels", "compare_levels(P, P, seed={s})"),
    ("paired_differences", "paired_differences({{}}, {{}}, 2, seed={s})"),
    ("reference_tv", "reference_tv(np.zeros((2, 1)), np.array([0.5, 0.5]), [0], [1], 0.5, n=10, seed={s})"),
    ("validate", "validate(None, quick=True, seed={s})"),
    ("validation_cases", "validation_cases(seed={s})"),
]
SEED_VALUES = {"negative": -1, "float": 1.5, "str": "a", "2**64": 2**64, "bool": True}
CLI_SEEDS = {"negative": "-1", "float": "1.5", "str": "a", "2**64": str(2**64), "empty": ""}


def _typed(text: str):
    """A ``--seed`` as the message shows it: a number when it is one, else the text."""
    return int(text) if text.lstrip("-").isdigit() else text


def seed_message(name: str, value) -> str:
    """The one message of the seed rule (``critwin._validation.check_seed``), as a regex."""
    return re.escape(f"{name} must be an integer in [0, 2**63), got {value!r}")


for fn, call in SEED_CALLS.items():
    for label, value in SEED_VALUES.items():
        api("seeds", f"{fn}-seed-{label}", call.format(s=repr(value)), seed_message("seed", value))
for fn, call, *param in MORE_SEED_CALLS:  # (name, call) or (name, call, parameter): seed by default
    name = param[0] if param else "seed"
    for label, value in SEED_VALUES.items():
        api("seeds", f"{fn}-{name}-{label}", call.format(s=repr(value)), seed_message(name, value))
SEED_COMMANDS = {
    "window": ["window", "{mixture}", "--after", "0"],
    "hierarchy": ["hierarchy", "{mixture}"],
    "validate": ["validate", "--out", "{tmp}/v"],
    "sweep": ["sweep", "--model", "digits", "--out", "{tmp}/s"],
    "atlas": ["atlas"],
    "text": ["text"],
    "train": ["train", "digits-tiny", "--out", "{tmp}/w"],
    "demo": ["demo", "--out", "{tmp}/d"],
    "privacy": ["privacy"],
    "fairness": ["fairness"],
    "estimate": ["estimate", "{tmp}/no-result"],
}
for command, argv in SEED_COMMANDS.items():
    for label, value in CLI_SEEDS.items():
        cli(
            "seeds",
            f"cli-{command}-seed-{label}",
            [*argv, "--seed", value],
            seed_message("--seed", _typed(value)),
        )

# ------------------------------------------------------------------------------------------- sizes
api("terabytes", "make_shapes", f"make_shapes({HUGE})", r"\bn\b|make_shapes")
api("terabytes", "time_grid", f"time_grid(1.0, {HUGE})", "n_steps")
api("terabytes", "mixture-sample", f"MIX.sample({HUGE})", r"\bn\b")
api(
    "terabytes",
    "forward_reverse-n_per_time",
    f"forward_reverse(MIX, X0, [0.5], n_per_time={HUGE}, seed=0, progress=False)",
    "n_per_time",
)
api(
    "terabytes",
    "clone-n_trajectories",
    f"clone(MIX, {HUGE}, [0.5], 2, seed=0, progress=False)",
    "n_trajectories",
)
api(
    "terabytes",
    "callable-n_steps",
    f"CallableProcess(lambda x, s: x, sample_shape=(2,), n_steps={HUGE})",
    "n_steps",
)
api(
    "terabytes",
    "shipped-num_inference_steps",
    f"shipped_process('digits', num_inference_steps={HUGE})",
    "num_inference_steps",
)
api("terabytes", "rebalance-n", f"rebalance(MIX, {HUGE}, 'bayes', 2, 0.5, seed=0)", r"\bn\b")
cli(
    "terabytes",
    "sweep-n-per-time",
    ["sweep", "--model", "digits", "--out", "{tmp}/s", "--n-per-time", str(HUGE)],
    "--n-per-time",
)
cli("terabytes", "fairness-n", ["fairness", "--n", str(HUGE)], "--n")
cli("terabytes", "privacy-replicates", ["privacy", "--replicates", str(HUGE)], "--replicates")
cli(
    "terabytes",
    "train-batch-size",
    ["train", "digits-tiny", "--batch-size", str(HUGE), "--out", "{tmp}/w"],
    "batch",
)
cli("terabytes", "atlas-sources", ["atlas", "--sources", str(HUGE)], "--sources")
cli("terabytes", "text-sources", ["text", "--sources", str(HUGE)], "sources")

PRELUDE = """
import functools, json, shutil, tempfile
from pathlib import Path
import torch
from critwin import (CallableProcess, DiffusersProcess, GaussianMixture, atlas, clone, estimate_window,
    forward_reverse, load_digits_data, load_digits_model, load_local, membership_audit, rebalance,
    search_window, time_grid, classifier_feature)
from critwin.models import shipped_process
from critwin.models.shapes import attribute_readers as shape_readers, make_shapes
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler
from diffusers.models.unets.unet_2d import UNet2DOutput
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from tiny_models import tiny_unet, tiny_sd3

import numpy as np
from critwin import PromptSets, prompt_fairness, memorisation_audit
from critwin.diagnostics.fairness import window_fork_time
from critwin.diagnostics.prompt_fairness import (augmented_samples, interval_guided_samples, plain_samples,
    prompt_windows)
from critwin.diagnostics.prompt_scores import commitment_scores, denoising_loss_scores, wen_scores
from critwin.diagnostics.prompt_scores import generate as prompt_generate
from critwin.diagnostics.prompt_shapes import reference_features
from critwin.diagnostics.text_windows import text_atlas
from critwin.experiments.checkpoint import derive_seed, resolve_seed, unit_generator
from critwin.models import DigitsConfig, train_classifier
from critwin.models.classifier import fit_classifier
from critwin.models.judges import evaluate_shapes_selector, train_digit_judge, train_shapes_selector
from critwin.models.shapes import ShapesConfig, evaluate_readers, train_shape_classifier
from critwin.models.shapes.evaluation import attribute_histograms
from critwin.models.shapes_t2i import T2IConfig, caption_adherence, make_pairs, prompt_histograms
from critwin.models.shapes_t2i import generate as t2i_generate
from critwin.models.shapes_t2i.evaluation import copying, evaluate_t2i
from critwin.models.text import RandomHierarchy, TextConfig, evaluate_text_model, text_process
from critwin.report.demo import run_demo
from critwin.report.invariance import bootstrap_generator
from critwin.report.text import compare_levels, paired_differences
from critwin.theory.references import reference_tv
from critwin.theory.validate import validate, validation_cases


class _Poison:  # a model that fails on any use: what must be refused first never reaches it

    def __getattr__(self, key):
        raise AssertionError(f"the model was used (model.{key}) before the bad argument was refused")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model was called before the bad argument was refused")


P = _Poison()
TMP = Path(tempfile.mkdtemp(prefix="critwin-bad-inputs-"))
MIX = GaussianMixture(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]))
X0 = torch.tensor([[2.0, 0.1], [-2.0, 0.3]])
SD3_COND = {"encoder_hidden_states": torch.zeros(1, 4, 16), "pooled_projections": torch.zeros(1, 8)}


class _Lazy:
    @functools.cached_property
    def FR_RESULT(self):
        return forward_reverse(MIX, X0, [0.0, 1.0], n_per_time=2, seed=0, progress=False, n_steps=3)

    @functools.cached_property
    def SHAPES_PROCESS(self):
        return shipped_process("shapes", num_inference_steps=3)


_LAZY = _Lazy()


def edit_json(path, **changes):
    value = json.loads(Path(path).read_text())
    value.update(changes)
    Path(path).write_text(json.dumps(value))


def ddpm_dir():
    d = Path(tempfile.mkdtemp(dir=TMP)) / "ddpm"
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(d)
    return d


def digits_dir(dtype):
    from safetensors.torch import load_file, save_file
    from critwin.models._store import SHIPPED_WEIGHTS_DIR, file_sha256
    d = Path(tempfile.mkdtemp(dir=TMP))
    shutil.copy(SHIPPED_WEIGHTS_DIR / "digits.json", d / "digits.json")
    shipped = load_file(SHIPPED_WEIGHTS_DIR / "digits.safetensors")
    tensors = {k: (v * 100).to(dtype) for k, v in shipped.items()}
    save_file(tensors, str(d / "digits.safetensors"))
    edit_json(d / "digits.json", weights_sha256=file_sha256(d / "digits.safetensors"))
    return d
"""


def _namespace() -> dict:
    namespace: dict = {}
    exec(PRELUDE, namespace)
    return namespace


def _run_case(case, namespace, alarm: int) -> dict:
    import contextlib
    import io
    import signal

    klass, name, kind, body, needle = case
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError(f"over {alarm} s")))
    signal.alarm(alarm)
    try:
        if kind == "cli":
            return _run_cli(body, needle, namespace)
        local = dict(namespace)
        local.update(FR_RESULT=None, SHAPES_PROCESS=None)
        for lazy in ("FR_RESULT", "SHAPES_PROCESS"):
            if lazy in body:
                local[lazy] = getattr(namespace["_LAZY"], lazy)
        with contextlib.redirect_stderr(io.StringIO()):
            exec(body, local)
        return {"outcome": "good" if kind == "accept" else "silent", "detail": "returned a result"}
    except TimeoutError as exc:
        return {"outcome": "hang", "detail": str(exc)}
    except ValueError as exc:
        text = " ".join(str(exc).split())
        if kind == "accept":
            return {"outcome": "refused", "detail": text[:200]}
        named = re.search(needle, text) is not None
        return {"outcome": "good" if named else "unnamed", "detail": f"{type(exc).__name__}: {text[:200]}"}
    except Exception as exc:
        return {"outcome": "traceback", "detail": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
    finally:
        signal.alarm(0)


def _run_cli(argv, needle, namespace) -> dict:
    import contextlib
    import io

    from critwin.cli import main

    paths = {"tmp": str(namespace["TMP"]), "mixture": str(ROOT / "examples" / "two_gaussians.yaml")}
    argv = [a.format(**paths) for a in argv]
    # Outputs named in the command line: a refused command must not have created any of them.
    outputs = [Path(a) for a in argv if a.startswith(paths["tmp"]) and not Path(a).exists()]
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    lines = [
        line for line in err.getvalue().splitlines() if line.strip() and not line.startswith("critwin: note:")
    ]
    if code == 0:
        return {"outcome": "silent", "detail": "exit 0"}
    if code != 2 or len(lines) != 1 or not lines[0].startswith("critwin: error: "):
        return {"outcome": "traceback", "detail": f"exit {code}: {' | '.join(lines)[-300:]}"}
    written = [str(path) for path in outputs if path.exists()]
    if written:
        return {"outcome": "wrote", "detail": f"refused but left {', '.join(written)}"}
    named = re.search(needle, lines[0]) is not None
    return {"outcome": "good" if named else "unnamed", "detail": lines[0][:200]}


def worker(start: int, indices: list[int], alarm: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    namespace = _namespace()
    for index in indices[start:]:
        print(json.dumps({"index": index, **_run_case(CASES[index], namespace, alarm)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=int, default=60, help="seconds per case before it counts as a hang")
    parser.add_argument("--only", default=None, help="run the cases whose class or name holds this text")
    parser.add_argument("--json", action="store_true", help="one JSON line per case")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--indices", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    indices = [i for i, c in enumerate(CASES) if args.only is None or args.only in c[0] or args.only in c[1]]
    if args.worker is not None:
        worker(args.worker, [int(i) for i in args.indices.split(",")], args.timeout)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.setdefault("CRITWIN_MEMORY_LIMIT", "4G")
    results: dict[int, dict] = {}
    start = 0
    while start < len(indices):
        cmd = [sys.executable, __file__, "--worker", str(start), "--indices", ",".join(map(str, indices))]
        cmd += ["--timeout", str(args.timeout)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        chooser = selectors.DefaultSelector()
        chooser.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + args.timeout + 120  # the first case also pays the imports
        while True:
            if not chooser.select(timeout=max(deadline - time.monotonic(), 0)):
                proc.kill()  # stuck in C past its alarm: a hang; resume after it
                results[indices[start]] = {"index": indices[start], "outcome": "hang", "detail": "no answer"}
                start += 1
                break
            line = proc.stdout.readline()
            if not line:  # the worker died (a crash): that case is a traceback
                if start < len(indices):
                    detail = f"worker exited {proc.wait()}"
                    results[indices[start]] = {
                        "index": indices[start],
                        "outcome": "traceback",
                        "detail": detail,
                    }
                start += 1
                break
            record = json.loads(line)
            results[record["index"]] = record
            start += 1
            deadline = time.monotonic() + args.timeout + 10
        proc.wait()
    _summary(results, args.json)


def _summary(results: dict[int, dict], as_json: bool) -> None:
    counts: dict[str, list[int]] = {}
    for index, record in sorted(results.items()):
        klass, name, kind = CASES[index][:3]
        bad = record["outcome"] != "good"
        counts.setdefault(klass, [0, 0])
        counts[klass][0] += 1
        counts[klass][1] += bad
        if as_json:
            print(json.dumps({"class": klass, "name": name, "kind": kind, **record}))
        elif bad:
            print(f"MISHANDLED [{record['outcome']}] {klass} / {name}: {record['detail']}")
    total, mishandled = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    for klass, (n, bad) in counts.items():
        print(f"{klass:>22}: {n:3d} cases, {bad:3d} mishandled")
    print(f"{'total':>22}: {total:3d} cases, {mishandled:3d} mishandled")


if __name__ == "__main__":
    main()
