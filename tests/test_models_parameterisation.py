"""Digits models trained as v-prediction or rectified flow: training targets, loading, cards, CLI."""

import json
import math

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from critwin.adapters.diffusers.flow import flow_x0
from critwin.cli import main
from critwin.models._store import SHIPPED_MODELS
from critwin.models.classifier import load_classifier
from critwin.models.data import load_digits_data
from critwin.models.digits import (
    NULL_LABEL,
    PRESETS,
    DigitsConfig,
    build_unet,
    load_digits_model,
    make_scheduler,
    shipped_process,
    train_digits,
    training_steps,
)
from critwin.models.digits.training import training_pair

TINY = PRESETS["tiny"]
LINEAR_BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # the DDPM presets' schedule


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = load_digits_data().train_images[:n]
    return x0, torch.randn(x0.shape, generator=g)


def test_flow_pair_is_the_straight_line_and_its_velocity():
    config = TINY.replace(parameterisation="flow")
    x0, noise = _batch()
    noisy, timesteps, target = training_pair(
        config, make_scheduler(config), x0, noise, torch.Generator().manual_seed(5)
    )
    s = torch.rand(6, generator=torch.Generator().manual_seed(5))  # the same draw, by hand
    s4 = s.view(-1, 1, 1, 1)
    torch.testing.assert_close(noisy, (1 - s4) * x0 + s4 * noise, rtol=0, atol=1e-6)
    torch.testing.assert_close(target, noise - x0, rtol=0, atol=0)
    torch.testing.assert_close(timesteps, 1000 * s, rtol=0, atol=0)
    # The adapter reads x̂₀ from a velocity on the OU clock: the exact velocity gives x0 back.
    t = 0.5 * torch.log1p((s.double() / (1 - s.double())) ** 2)
    x_ou = noisy / torch.sqrt((1 - s4) ** 2 + s4**2)
    torch.testing.assert_close(flow_x0(target, x_ou, t), x0, rtol=0, atol=1e-5)


def test_v_prediction_pair_is_the_v_target_of_the_linear_schedule():
    config = TINY.replace(parameterisation="v_prediction")
    x0, noise = _batch()
    noisy, timesteps, target = training_pair(
        config, make_scheduler(config), x0, noise, torch.Generator().manual_seed(2)
    )
    k = torch.randint(0, 1000, (6,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(timesteps, k)
    alpha_bar = torch.cumprod(1 - LINEAR_BETAS, 0)[k].view(-1, 1, 1, 1)
    signal, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    torch.testing.assert_close(noisy.double(), signal * x0 + sigma * noise, rtol=0, atol=1e-6)
    torch.testing.assert_close(target.double(), signal * noise - sigma * x0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("parameterisation", ["epsilon", "flow", "v_prediction"])
def test_first_training_step_regresses_the_target_computed_by_hand(parameterisation):
    """The loss of step 1 is the MSE of the initial network against the target, with the generator
    draws in their documented order: batch, noise, time, label dropout."""
    config = TINY.replace(parameterisation=parameterisation, steps=1, seed=4)
    loss = next(iter(training_steps(config))).loss
    data = config.load_data()
    g = torch.Generator().manual_seed(4)
    batch = torch.randint(0, data.train_labels.numel(), (config.batch_size,), generator=g)
    x0 = data.train_images[batch]
    noise = torch.randn(x0.shape, generator=g)
    B = config.batch_size
    if parameterisation == "flow":
        s = torch.rand(B, generator=g).view(-1, 1, 1, 1)
        noisy, timesteps, target = (1 - s) * x0 + s * noise, 1000 * s.flatten(), noise - x0
    else:
        timesteps = torch.randint(0, 1000, (B,), generator=g)
        ab = torch.cumprod(1 - LINEAR_BETAS, 0)[timesteps].view(-1, 1, 1, 1).float()
        noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        target = noise if parameterisation == "epsilon" else ab.sqrt() * noise - (1 - ab).sqrt() * x0
    dropped = torch.rand(B, generator=g) < config.label_dropout
    labels = torch.where(dropped, torch.full((B,), NULL_LABEL), data.train_labels[batch])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        unet = build_unet(config)
    with torch.no_grad():
        expected = torch.mean((unet(noisy, timesteps, class_labels=labels).sample - target) ** 2).item()
    # float32 noising by hand vs diffusers' add_noise differ in the last bits only.
    assert loss == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("bad", ["eps", "flow_matching", "", None, 1])
def test_unknown_parameterisation_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="parameterisation"):
        DigitsConfig(parameterisation=bad)
    with pytest.raises(ValueError, match="parameterisation"):
        DigitsConfig.from_dict({**DigitsConfig().to_dict(), "parameterisation": bad})


def test_epsilon_card_config_reads_and_writes_as_before():
    card = load_digits_model("digits").card
    assert "parameterisation" not in card["config"] and "scheduler_class" not in card
    assert DigitsConfig.from_dict(card["config"]).to_dict() == card["config"]
    flow = PRESETS["digits-flow"]
    assert DigitsConfig.from_dict(json.loads(json.dumps(flow.to_dict()))) == flow
    assert flow.replace(parameterisation="epsilon") == PRESETS["digits"]


@pytest.fixture(scope="module")
def tiny_flow(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow")
    config = TINY.replace(parameterisation="flow", steps=6)
    train_digits(
        config,
        name="tiny-flow",
        out_dir=out,
        classifier=load_classifier(),
        eval_every=0,
        final_per_class=1,
        final_unconditional=0,
        num_inference_steps=4,
        progress=False,
        log=None,
    )
    return out


def test_tiny_flow_model_card_and_loading(tiny_flow):
    model = load_digits_model("tiny-flow", tiny_flow)
    card = model.card
    assert model.config.parameterisation == "flow"
    assert card["scheduler_class"] == "diffusers.FlowMatchEulerDiscreteScheduler"
    assert card["scheduler_config"] == {"num_train_timesteps": 1000, "shift": 1.0}
    assert card["metrics"]["sampler"]["scheduler"] == "diffusers.FlowMatchEulerDiscreteScheduler"
    assert "flow" in card["architecture"] and card["metrics"]["n_conditional_samples"] == 10
    assert isinstance(model.make_scheduler(), FlowMatchEulerDiscreteScheduler)


def test_tiny_flow_process_grid_is_the_flow_sigmas_on_the_ou_clock(tiny_flow):
    process = load_digits_model("tiny-flow", tiny_flow).process(num_inference_steps=10)
    assert isinstance(process.scheduler, FlowMatchEulerDiscreteScheduler)
    # shift 1: sigmas are the linspace from 1 to 1/1000 (then 0); s <-> t by hand,
    # X_s = (1 - s) X_0 + s Z is e^-t X_0 + sqrt(1 - e^-2t) Z scaled, so e^{2t} = 1 + s^2 / (1 - s)^2.
    s = torch.linspace(1.0, 1e-3, 10, dtype=torch.float64)
    expected = 0.5 * torch.log1p((s / (1 - s)) ** 2)
    assert math.isinf(process.times[0].item())
    torch.testing.assert_close(process.times[1:-1], expected[1:], rtol=1e-6, atol=1e-9)
    assert process.times[-1].item() == 0.0
    out = load_digits_model("tiny-flow", tiny_flow).sample(
        torch.tensor([1, 2]), num_inference_steps=5, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_train_cli_flow_model(capsys, tmp_path):
    out = tmp_path / "w"
    args = ["train", "digits-flow", "--steps", "2", "--batch-size", "4", "--out", str(out), "--no-progress"]
    args += ["--eval-every", "0", "--eval-samples", "1", "--unconditional-samples", "0"]
    with pytest.raises(SystemExit) as exc:
        main(args + ["--inference-steps", "2"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    card = json.loads((out / "digits-flow.json").read_text())
    assert card["config"]["parameterisation"] == "flow" and card["config"]["steps"] == 2
    assert card["scheduler_class"] == "diffusers.FlowMatchEulerDiscreteScheduler"
    assert card["config"]["block_out_channels"] == list(PRESETS["digits"].block_out_channels)


# ---------------------------------------------------------------- shipped models


@pytest.mark.parametrize("name", [n for n in ("digits-flow", "digits-v") if n in SHIPPED_MODELS])
def test_shipped_parameterised_model_matches_the_epsilon_models_run(name):
    model = load_digits_model(name)
    card, reference = model.card, load_digits_model("digits")
    assert card["conditional_accuracy"] == card["metrics"]["conditional_accuracy"] >= 0.9
    assert card["metrics"]["sampler"]["scheduler"] == f"diffusers.{model.config.scheduler_class_name}"
    assert card["data"] == reference.card["data"] and card["parameters"] == reference.num_parameters
    expected = PRESETS[name]
    assert model.config.parameterisation == expected.parameterisation
    assert model.config.replace(parameterisation="epsilon", steps=2000) == reference.config


@pytest.mark.parametrize("name", [n for n in ("digits-flow", "digits-v") if n in SHIPPED_MODELS])
def test_shipped_parameterised_model_draws_the_requested_digits(name):
    labels = torch.arange(10).repeat(5)
    samples = load_digits_model(name).sample(
        labels, num_inference_steps=50, generator=torch.Generator().manual_seed(0)
    )
    accuracy = (load_classifier().predict(samples) == labels).double().mean().item()
    # The card measures >= 0.9 on 500 samples (100 sampler steps); n = 50 at 50 steps has a binomial
    # s.d. of ~0.03-0.04, so 0.8 leaves about three s.d. of slack.
    assert accuracy >= 0.8


@pytest.mark.skipif("digits-flow" not in SHIPPED_MODELS, reason="digits-flow not shipped")
def test_shipped_flow_process_and_scheduler_checks():
    process = shipped_process("digits-flow", num_inference_steps=8)
    assert isinstance(process.scheduler, FlowMatchEulerDiscreteScheduler)
    with pytest.raises(ValueError, match="scheduler DDIMScheduler cannot sample 'digits-flow'"):
        shipped_process("digits-flow", scheduler=DDIMScheduler)
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler cannot sample 'digits'"):
        shipped_process("digits", scheduler=FlowMatchEulerDiscreteScheduler)
