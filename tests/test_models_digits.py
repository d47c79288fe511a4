"""The digits DDPM (critwin.models.digits): training loop, shipped weights, sampling, memorisation."""

import json
import shutil
import warnings

import pytest
import torch

from critwin.models.classifier import load_classifier
from critwin.models.data import nearest_neighbour_distance
from critwin.models.digits import (
    NULL_LABEL,
    PRESETS,
    DigitsConfig,
    DigitsModel,
    build_unet,
    load_digits_model,
    make_scheduler,
    training_steps,
)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def digits():
    return load_digits_model("digits")


@pytest.fixture(scope="module")
def memorise():
    return load_digits_model("digits-memorise")


# ---------------------------------------------------------------- training loop


def test_tiny_training_run_lowers_the_loss():
    losses = [state.loss for state in training_steps(PRESETS["tiny"].replace(steps=40))]
    assert len(losses) == 40
    # At initialisation the network predicts ~0 so the loss is E|eps|^2 ~ 1; forty steps bring it
    # to ~0.3. Single-batch losses scatter by ~0.05 here, so means of 5 and 10 losses are good to
    # ~0.03: a 40 % drop is far outside that noise.
    assert sum(losses[:5]) / 5 > 0.7
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5


def test_training_is_seeded_and_keeps_an_exact_ema():
    config = PRESETS["tiny"].replace(steps=3, ema_decay=0.5, seed=11)
    states, params = [], []
    for state in training_steps(config):
        states.append(state.loss)
        params.append([p.detach().clone() for p in state.model.parameters()])
    ema = [p.detach().clone() for p in state.ema_model.parameters()]
    again = [state.loss for state in training_steps(config)]
    other = [state.loss for state in training_steps(config.replace(seed=12))]
    assert states == again
    assert states != other
    # The EMA by hand: start from the seeded initial weights, then after step k (0-based)
    # ema <- d ema + (1 - d) theta_k with d = min(ema_decay, (1 + k) / (10 + k)).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        expected = [p.detach().clone() for p in build_unet(config).parameters()]
    for k, theta in enumerate(params):
        d = min(0.5, (1 + k) / (10 + k))
        expected = [d * e + (1 - d) * t for e, t in zip(expected, theta, strict=True)]
    for e, got in zip(expected, ema, strict=True):
        torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "changes, word",
    [
        ({"steps": -5}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"label_dropout": 1.0}, "label_dropout"),
        ({"block_out_channels": (30, 48)}, "norm_num_groups"),
        ({"subset_size": 3}, "subset_size"),
    ],
)
def test_nonsensical_configs_are_rejected(changes, word):
    with pytest.raises(ValueError, match=word):
        DigitsConfig().replace(**changes)


def test_config_round_trips_through_the_card_format():
    config = PRESETS["digits-memorise"]
    assert DigitsConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown keys"):
        DigitsConfig.from_dict({**config.to_dict(), "wings": 2})


# ---------------------------------------------------------------- shipped model


def test_shipped_model_card_and_size(digits):
    card = digits.card
    assert 0.5e6 <= digits.num_parameters <= 1.0e6
    assert card["parameters"] == digits.num_parameters
    assert card["conditional_accuracy"] == card["metrics"]["conditional_accuracy"] >= 0.9
    assert len(card["metrics"]["unconditional_class_histogram"]) == 10
    assert sum(card["metrics"]["unconditional_class_histogram"]) == pytest.approx(1.0)
    assert card["metrics"]["sampler"]["through"] == "critwin.adapters.diffusers.DiffusersProcess"
    assert digits.config.subset_size is None and card["data"]["n_train"] == 1437


def test_shipped_conditional_samples_are_the_requested_digits(digits, classifier):
    labels = torch.arange(10).repeat(5)
    samples = digits.sample(labels, num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (50, 1, 8, 8)
    accuracy = (classifier.predict(samples) == labels).double().mean().item()
    # The card measures ~0.98 on 500 samples; with n = 50 the binomial s.d. is ~0.02, so >= 0.9
    # is several s.d. of slack (and the seed is fixed).
    assert accuracy >= 0.9


def test_sampling_is_diffusers_own_ddpm_loop(digits):
    from diffusers import DDPMScheduler

    labels = torch.tensor([3, 1, 4, 1])
    got = digits.sample(labels, num_inference_steps=30, generator=torch.Generator().manual_seed(7))
    # The stock loop, written out: randn * init_noise_sigma, then scheduler.step at every timestep.
    scheduler = DDPMScheduler(**digits.config.scheduler_kwargs())
    scheduler.set_timesteps(30)
    g = torch.Generator().manual_seed(7)
    x = torch.randn((4, 1, 8, 8), generator=g) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = digits.unet(x, t, class_labels=labels).sample
            x = scheduler.step(eps, t, x, generator=g).prev_sample
    torch.testing.assert_close(got, x, rtol=0, atol=1e-6)


def test_guidance_scale_zero_is_unconditional_and_one_is_conditional(digits):
    labels = torch.tensor([0, 7, 7, 2])
    kwargs = dict(num_inference_steps=30)
    unconditional = digits.sample(n=4, generator=torch.Generator().manual_seed(3), **kwargs)
    explicit_null = digits.sample(
        torch.full((4,), NULL_LABEL), generator=torch.Generator().manual_seed(3), **kwargs
    )
    w0 = digits.sample(labels, guidance_scale=0.0, generator=torch.Generator().manual_seed(3), **kwargs)
    w1 = digits.sample(labels, guidance_scale=1.0, generator=torch.Generator().manual_seed(3), **kwargs)
    plain = digits.sample(labels, generator=torch.Generator().manual_seed(3), **kwargs)
    assert torch.equal(unconditional, explicit_null)
    # w = 0 evaluates the null branch inside a doubled batch; batched convolutions may differ from
    # single ones in the last float32 bits, amplified a little over 30 steps.
    torch.testing.assert_close(w0, unconditional, rtol=0, atol=1e-4)
    assert torch.equal(w1, plain)
    assert not torch.allclose(plain, unconditional, atol=1e-2)


def test_sample_rejects_bad_requests(digits):
    with pytest.raises(ValueError, match="labels"):
        digits.sample(torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="labels"):
        digits.sample(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="either labels"):
        digits.sample()
    with pytest.raises(ValueError, match="num_inference_steps"):
        digits.sample(n=2, num_inference_steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        digits.sample(n=2, guidance_scale=-1.0)


def test_memorising_model_copies_its_training_digits_and_the_main_model_does_not(digits, memorise):
    data = memorise.training_data()
    assert data.train_labels.numel() == 20
    labels = torch.arange(10).repeat(2)
    copies = memorise.sample(labels, num_inference_steps=50, generator=torch.Generator().manual_seed(1))
    copy_distance, _ = nearest_neighbour_distance(copies, data.train_images)
    test_distance, _ = nearest_neighbour_distance(data.test_images, data.train_images)
    # Held-out digits sit ~0.5 (RMS, pixels in [-1, 1]) from the 20 training digits; near-copies
    # sit within a tenth of that.
    assert copy_distance.median() < 0.1 * test_distance.median()
    main_data = digits.training_data()
    fresh = digits.sample(labels, num_inference_steps=50, generator=torch.Generator().manual_seed(1))
    fresh_distance, _ = nearest_neighbour_distance(fresh, main_data.train_images)
    main_test_distance, _ = nearest_neighbour_distance(main_data.test_images, main_data.train_images)
    assert fresh_distance.median() > 0.5 * main_test_distance.median()
    assert memorise.card["comparison"]["model"] == "digits"
    assert memorise.card["metrics"]["copy_fraction"] > 0.9 > digits.card["metrics"]["copy_fraction"]


# ---------------------------------------------------------------- weight files


def test_missing_corrupted_and_mismatched_weight_files(tmp_path):
    from critwin.models._store import SHIPPED_WEIGHTS_DIR

    with pytest.raises(ValueError, match="shipped models"):
        load_digits_model("digit")
    with pytest.raises(FileNotFoundError, match="digits.json.*critwin train digits --out"):
        load_digits_model("digits", tmp_path)
    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED_WEIGHTS_DIR / f"digits{suffix}", tmp_path)
    weights = tmp_path / "digits.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="digits.safetensors is corrupted.*critwin train digits"):
        load_digits_model("digits", tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="digits.safetensors"):
        load_digits_model("digits", tmp_path)
    # A card whose config describes another network than the file holds.
    shutil.copy(SHIPPED_WEIGHTS_DIR / "digits.safetensors", tmp_path)
    card_file = tmp_path / "digits.json"
    card = json.loads(card_file.read_text())
    card.pop("weights_sha256")
    card["config"]["block_out_channels"] = [16, 32]
    card_file.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not fit"):
        load_digits_model("digits", tmp_path)
    card["config"]["steps"] = -1
    card_file.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="invalid config"):
        load_digits_model("digits", tmp_path)


def test_untrained_model_samples_through_the_adapter_shape_and_dtype():
    config = PRESETS["tiny"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DigitsModel(build_unet(config), config, name="untrained")
    process = model.process(num_inference_steps=25)
    assert process.sample_shape == (1, 8, 8)
    # The process's grid is the scheduler's: OU times of the timesteps it visits, ending at 0.
    scheduler = make_scheduler(config)
    scheduler.set_timesteps(25)
    alpha_bar = scheduler.alphas_cumprod[scheduler.timesteps].double()
    torch.testing.assert_close(process.times[:-1], -0.5 * torch.log(alpha_bar), rtol=1e-12, atol=0)
    assert process.times[-1].item() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.sample(n=3, num_inference_steps=25, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 8, 8) and out.dtype == torch.float32


@pytest.mark.slow
def test_shipped_card_metrics_are_reproducible(digits, classifier):
    from critwin.models.digits import evaluate_digits_model

    card = digits.card["metrics"]
    again = evaluate_digits_model(
        digits,
        classifier,
        n_per_class=card["n_conditional_samples"] // 10,
        n_unconditional=card["n_unconditional_samples"],
        num_inference_steps=card["sampler"]["num_inference_steps"],
        generator=torch.Generator().manual_seed(digits.config.seed + 1),
    )
    # Same seed, same sampler: only float rounding (thread count) can differ, which may flip a
    # handful of borderline samples out of 500, i.e. <= 0.01.
    assert again["conditional_accuracy"] == pytest.approx(card["conditional_accuracy"], abs=0.01)
    assert again["nn_distance_test_median"] == pytest.approx(card["nn_distance_test_median"], rel=1e-6)
    assert again["nn_distance_samples_median"] == pytest.approx(card["nn_distance_samples_median"], abs=0.01)
    for got, want in zip(
        again["unconditional_class_histogram"], card["unconditional_class_histogram"], strict=True
    ):
        assert got == pytest.approx(want, abs=0.01)


def test_forward_reverse_keeps_the_class_at_small_t_and_falls_to_the_base_rate(digits, classifier):
    from critwin.experiments.forward_reverse import forward_reverse
    from critwin.models.classifier import classifier_feature

    data = digits.training_data()
    picks = torch.cat([torch.nonzero(data.test_labels == k).flatten()[:10] for k in range(10)])
    process = digits.process(num_inference_steps=50)
    res = forward_reverse(
        process,
        data.test_images[picks],
        [0.02, 4.4],
        feature=classifier_feature(classifier),
        seed=0,
        progress=False,
    )
    kept = res.agreement
    # With 10 sources per digit the base rate is sum_k 0.1 q_k = 0.1 whatever the model's class law q:
    # at t = 4.4 (signal e^-4.4 ~ 0.012) the output is an unconditional sample. Binomial SE at n = 100: 0.03.
    base = 0.1
    assert kept[0] >= 0.9
    assert abs(kept[1] - base) <= 4 * (base * (1 - base) / 100) ** 0.5
