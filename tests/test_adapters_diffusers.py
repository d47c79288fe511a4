"""The diffusers adapter against hand-written ``scheduler.step`` loops and stock pipelines.

Byte-identical comparisons (``torch.equal``) are the point: the adapter must do exactly what diffusers
does, at exactly the noise level it claims. Where an independent implementation uses different
floating-point operations (critwin's own DDIM, separate CFG passes) the tolerance is a few float32 ulps
of values of order 1-10 accumulated over <= 10 steps, hence 1e-4.
"""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from critwin.adapters.diffusers import (
    SUPPORTED_SCHEDULERS,
    DiffusersProcess,
    TerminalSNRWarning,
    from_pipeline,
    predicted_x0,
    record_pipeline_trajectory,
)
from critwin.clock import DiscreteSchedule
from tiny_models import tiny_conditional_unet, tiny_stable_diffusion, tiny_unet

STEPS = 8

SCHEDULERS = {
    "ddpm": lambda **kw: DDPMScheduler(clip_sample=False, **kw),
    "ddim": lambda **kw: DDIMScheduler(clip_sample=False, **kw),
    "ddim-eta1": lambda **kw: DDIMScheduler(clip_sample=False, **kw),
    "euler": lambda **kw: EulerDiscreteScheduler(**kw),
    "euler-ancestral": lambda **kw: EulerAncestralDiscreteScheduler(**kw),
    "dpm++2m": lambda **kw: DPMSolverMultistepScheduler(**kw),
    "sde-dpm++": lambda **kw: DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", **kw),
    "unipc": lambda **kw: UniPCMultistepScheduler(**kw),
}
STEP_KWARGS = {"ddim-eta1": {"eta": 1.0}}


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(seed=0)


@pytest.fixture(scope="module")
def class_unet():
    return tiny_unet(seed=1, num_class_embeds=4)


def _x0(n=2, seed=0):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TerminalSNRWarning)
        return fn(*args, **kwargs)


def _hand_loop(unet, scheduler, x0, start, seed, step_kwargs, model_kwargs=None):
    """diffusers' documented recipe: set_timesteps, set_begin_index, add_noise, then step."""
    scheduler.set_timesteps(STEPS)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    x = scheduler.add_noise(x0, noise, scheduler.timesteps[start : start + 1].repeat(x0.shape[0]))
    noised = x.clone()
    # As diffusers pipelines do (prepare_extra_step_kwargs): a generator only where step accepts one.
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs = {**step_kwargs, "generator": g}
    with torch.no_grad():
        for t in scheduler.timesteps[start:]:
            out = unet(scheduler.scale_model_input(x, t), t, **(model_kwargs or {})).sample
            x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return noised, x


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_byte_identical_to_hand_loop(unet, name, spacing):
    kwargs = {"timestep_spacing": spacing}
    if spacing == "leading":
        kwargs["steps_offset"] = 1
    make = SCHEDULERS[name]
    step_kwargs = STEP_KWARGS.get(name, {})
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # leading spacing warns about terminal SNR, DDIM linspace about landing
        process = DiffusersProcess(unet, make(**kwargs), STEPS, step_kwargs=step_kwargs)
    x0 = _x0()
    for start in (0, 3, STEPS - 1):
        g = torch.Generator().manual_seed(11)
        noised = process.add_noise(x0, start, generator=g)
        out = process.run(noised, start=start, generator=g)
        ref_noised, ref_out = _hand_loop(unet, make(**kwargs), x0, start, 11, step_kwargs)
        assert torch.equal(noised, ref_noised), (name, spacing, start)
        assert torch.equal(out, ref_out), (name, spacing, start)


class _Spy(torch.nn.Module):
    """Records the timesteps the UNet is called with."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.calls = []

    @property
    def config(self):
        return self.unet.config

    def forward(self, sample, timestep, **kwargs):
        self.calls.append(float(timestep))
        return self.unet(sample, timestep, **kwargs)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "dpm++2m"])
def test_no_off_by_one(unet, name):
    """Noise at grid index k is exactly timestep k's level, and denoising starts at timestep k."""
    scheduler = SCHEDULERS[name](timestep_spacing="leading", steps_offset=1)
    spy = _Spy(unet)
    process = _quiet(DiffusersProcess, spy, scheduler, STEPS)
    reference = SCHEDULERS[name](timestep_spacing="leading", steps_offset=1)
    reference.set_timesteps(STEPS)
    # Leading spacing: k_i = i * ratio + steps_offset; DPM-Solver divides by n + 1 intervals, not n.
    ratio = 1000 // (STEPS + 1) if name.startswith("dpm") else 1000 // STEPS
    first = STEPS if name.startswith("dpm") else STEPS - 1  # DPM-Solver drops the 0 of its n + 1 points
    expected_steps = [int(k) for k in torch.arange(first, first - STEPS, -1) * ratio + 1]
    assert [int(k) for k in reference.timesteps] == expected_steps
    ac = reference.alphas_cumprod.double()
    x0 = _x0()
    k = 3
    g = torch.Generator().manual_seed(5)
    noised = process.add_noise(x0, k, generator=g)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    ab = ac[expected_steps[k]]
    if process.kind == "vp":
        expected = ab.sqrt() * x0.double() + (1 - ab).sqrt() * z.double()
    else:
        expected = x0.double() + ((1 - ab) / ab).sqrt() * z.double()
    # add_noise runs in float32: a few ulps of values of order 1 (Euler: sigma ~ 3).
    assert torch.allclose(noised.double(), expected, atol=1e-5)
    assert process.times[k].item() == pytest.approx(-0.5 * math.log(ab.item()), rel=1e-6)
    assert process.step_label(k) == expected_steps[k]
    seen = []
    process.run(noised, start=k, callback=lambda i, t, x, x0_hat: seen.append((i, t)))
    assert spy.calls == [float(s) for s in expected_steps[k:]]
    assert [i for i, _ in seen] == list(range(k, STEPS))
    assert seen[0][1] == process.times[k].item()


def test_grid_spacings_offsets_and_final_point():
    ac = DDIMScheduler().alphas_cumprod.double()

    def ou(step):
        return -0.5 * math.log(ac[step].item())

    cases = {
        ("leading", 1): [901, 801, 701, 601, 501, 401, 301, 201, 101, 1],
        ("leading", 0): [900, 800, 700, 600, 500, 400, 300, 200, 100, 0],
        ("trailing", 0): [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
        ("linspace", 0): [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    }
    for (spacing, offset), steps in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            process = DiffusersProcess(
                tiny_unet(),
                DDIMScheduler(timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=True),
                10,
            )
        assert [process.step_label(i) for i in range(10)] == steps
        assert process.times[:-1].tolist() == pytest.approx([ou(s) for s in steps], rel=1e-12)
        assert process.times[-1].item() == 0.0
    # Stable Diffusion's DDIM: set_alpha_to_one=False ends at alphas_cumprod[0], not at clean data.
    sd = _quiet(DiffusersProcess, tiny_unet(), DDIMScheduler(set_alpha_to_one=False, steps_offset=1), 10)
    assert sd.times[-1].item() == pytest.approx(ou(0), rel=1e-12)
    assert sd.describe()["final_ou_time"] > 0
    # Sigma schedulers: final_sigmas_type="sigma_min" ends at the smallest training sigma.
    euler = _quiet(DiffusersProcess, tiny_unet(), EulerDiscreteScheduler(final_sigmas_type="sigma_min"), 10)
    sigma_min = math.sqrt((1 - ac[0].item()) / ac[0].item())
    assert euler.times[-1].item() == pytest.approx(0.5 * math.log1p(sigma_min**2), rel=1e-5)  # float32 sigmas
    assert DiffusersProcess(tiny_unet(), EulerDiscreteScheduler(), 10).times[-1].item() == 0.0


def test_ddim_linspace_landing_is_reported():
    # DDIM steps by a fixed stride T // n = 100, so from 999 it lands on 899, not on the next listed 888.
    with pytest.warns(UserWarning, match="lands between listed timesteps"):
        process = DiffusersProcess(tiny_unet(), DDIMScheduler(timestep_spacing="linspace"), 10)
    ac = DDIMScheduler().alphas_cumprod.double()
    report = process.schedule_report()
    assert report[0]["lands_at"] == pytest.approx(-0.5 * math.log(ac[899].item()), rel=1e-12)
    assert report[1]["ou_time"] == pytest.approx(-0.5 * math.log(ac[888].item()), rel=1e-12)


def test_terminal_snr_is_reported():
    with pytest.warns(TerminalSNRWarning, match="still carry signal"):
        sd = DiffusersProcess(
            tiny_unet(),
            DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1),
            10,
        )
    ab = (
        DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        .alphas_cumprod[901]
        .item()
    )
    assert sd.terminal_snr == pytest.approx(ab / (1 - ab), rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TerminalSNRWarning)
        zero = DiffusersProcess(
            tiny_unet(), DDIMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing"), 10
        )
    assert zero.times[0].item() == math.inf
    assert zero.terminal_snr == 0.0
    finite = zero.times[1:-1]
    # Finite requests land on the nearest finite grid point, never on the infinite one.
    assert zero.realise(3.0)["index"] == 1 + int((finite - 3.0).abs().argmin())
    # Beyond the largest finite grid time no request is realised: refused, not run at index 1 (issue 22).
    assert zero.realise(finite[0].item())["index"] == 1
    with pytest.raises(ValueError, match=r"t=30 is beyond the sampler's range of OU times \[0, "):
        zero.realise(30.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predicted_x0_closed_form(prediction_type):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    z = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    t = 0.7
    a, s = math.exp(-t), math.sqrt(1 - math.exp(-2 * t))
    x = a * x0 + s * z
    output = {"epsilon": z, "v_prediction": a * z - s * x0, "sample": x0}[prediction_type]
    assert torch.allclose(predicted_x0(output, x, t, prediction_type), x0, atol=1e-12)
    per_sample = torch.full((4,), t, dtype=torch.float64)
    assert torch.allclose(predicted_x0(output, x, per_sample, prediction_type), x0, atol=1e-12)


@pytest.mark.parametrize("name", ["ddim", "euler"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_callback_x0_hat_matches_scheduler(unet, name, prediction_type):
    """The callback's x̂₀ equals the scheduler's own pred_original_sample (computed independently)."""
    make = SCHEDULERS[name]
    process = _quiet(DiffusersProcess, unet, make(prediction_type=prediction_type), STEPS)
    x = process.prior(2, generator=torch.Generator().manual_seed(1))
    ours = []
    process.run(x, callback=lambda i, t, state, x0_hat: ours.append(x0_hat))
    scheduler = make(prediction_type=prediction_type)
    scheduler.set_timesteps(STEPS)
    theirs = []
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t).sample
            step = scheduler.step(out, t, x)
            theirs.append(step.pred_original_sample)
            x = step.prev_sample
    for a, b in zip(ours, theirs, strict=True):
        # Different float32 formulas for the same quantity; |x̂₀| can reach ~1e2 at the noisiest step.
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)


def test_denoise_drives_critwins_own_ddim(unet):
    """critwin's DDIM (critwin.samplers) on adapter.denoise reproduces diffusers' DDIM."""
    from critwin.experiments.process import DiscreteProcess

    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
    adapter = _quiet(DiffusersProcess, unet, scheduler, STEPS)
    schedule = DiscreteSchedule.from_alphas_cumprod(scheduler.alphas_cumprod.double())
    ours = DiscreteProcess(
        adapter, schedule, n_steps=STEPS, sampler="ddim", spacing="leading", sample_shape=(3, 8, 8)
    )
    assert torch.allclose(ours.times, adapter.times, rtol=1e-6)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    a = adapter.run(x)
    b = ours.run(x.double()).float()
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_denoise_nearest_and_interpolated_timesteps(unet):
    process = _quiet(DiffusersProcess, unet, DDPMScheduler(), STEPS)
    ac = process.scheduler.alphas_cumprod.double()
    k = 400
    t_k = -0.5 * math.log(ac[k].item())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = unet(x, torch.tensor(k)).sample
    expected = predicted_x0(eps, x, t_k, "epsilon")
    assert torch.allclose(process.denoise(x, t_k + 1e-6), expected, atol=1e-6)
    assert torch.allclose(process.denoise(x.flatten(1), t_k).reshape(x.shape), expected, atol=1e-6)
    # Interpolated mode at a training step's exact time feeds that step (up to float32 rounding).
    assert torch.allclose(process.denoise(x, t_k, timestep_mode="interpolate"), expected, atol=1e-4)
    with pytest.raises(ValueError, match="timestep_mode"):
        process.denoise(x, t_k, timestep_mode="bogus")


def test_class_conditional_guidance(class_unet):
    """CFG with the null label equals uncond + g (cond - uncond) from separate UNet calls."""
    scheduler = DDIMScheduler(clip_sample=False)
    g_scale = 3.0
    process = _quiet(
        DiffusersProcess,
        class_unet,
        scheduler,
        STEPS,
        cond={"class_labels": torch.tensor([1])},
        uncond={"class_labels": torch.tensor([3])},
        guidance_scale=g_scale,
    )
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    out = process.run(x)
    ref = DDIMScheduler(clip_sample=False)
    ref.set_timesteps(STEPS)
    y = x.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            e_c = class_unet(y, t, class_labels=torch.tensor([1, 1])).sample
            e_u = class_unet(y, t, class_labels=torch.tensor([3, 3])).sample
            y = ref.step(e_u + g_scale * (e_c - e_u), t, y).prev_sample
    assert torch.allclose(out, y, atol=1e-4)
    # Per-run override: labels per sample and guidance 1 (conditional branch only).
    per_sample = process.run(x, cond={"class_labels": torch.tensor([0, 2]), "guidance_scale": 1.0})
    ref.set_timesteps(STEPS)
    y = x.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            y = ref.step(class_unet(y, t, class_labels=torch.tensor([0, 2])).sample, t, y).prev_sample
    assert torch.equal(per_sample, y)


@pytest.fixture(scope="module")
def sd_pipe():
    return tiny_stable_diffusion(seed=0)


def _embeds(seed=0, n=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, 16, generator=g), torch.randn(n, 5, 16, generator=g)


@pytest.mark.parametrize(
    "scheduler_cls",
    [None, EulerDiscreteScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler],
)
def test_stable_diffusion_pipeline_trajectory_is_byte_identical(sd_pipe, scheduler_cls):
    """The stock pipeline's latents (recorded by callback_on_step_end) equal the adapter's at every index."""
    pipe = sd_pipe
    scheduler = None if scheduler_cls is None else scheduler_cls.from_config(pipe.scheduler.config)
    if scheduler is not None:
        original, pipe.scheduler = pipe.scheduler, scheduler
    try:
        pe, ne = _embeds()
        process = _quiet(from_pipeline, pipe, 6, 4.0, prompt_embeds=pe, negative_prompt_embeds=ne)
        states, _ = record_pipeline_trajectory(
            pipe,
            process,
            n=2,
            generator=torch.Generator().manual_seed(4),
            prompt_embeds=pe,
            negative_prompt_embeds=ne,
            guidance_scale=4.0,
        )
        g = torch.Generator().manual_seed(4)
        ours = []
        final = process.run(
            process.prior(2, generator=g), generator=g, callback=lambda i, t, x, x0_hat: ours.append(x)
        )
        ours.append(final)
        assert states.shape == (7, 2, 4, 8, 8)
        for k, (a, b) in enumerate(zip(states, ours, strict=True)):
            assert torch.equal(a, b), k
        if scheduler_cls in (None, EulerDiscreteScheduler):
            # Deterministic single-step schedulers: continuing the recorded trajectory mid-way reproduces it.
            assert torch.equal(process.run(states[3], start=3), states[-1])
    finally:
        if scheduler is not None:
            pipe.scheduler = original


def test_split_runs_keep_multistep_history(unet):
    process = DiffusersProcess(unet, DPMSolverMultistepScheduler(), STEPS)
    x = process.prior(2, generator=torch.Generator().manual_seed(0))
    whole = process.run(x)
    half = process.run(x, stop=4)
    assert torch.equal(process.run(half, start=4), whole)
    # A state the last run did not stop at is a fresh start: DPM-Solver++ restarts at first order, so it
    # differs (the last run stopped at the end, not at index 4).
    assert not torch.equal(process.run(half, start=4), whole)


def test_resuming_depends_on_the_state_not_on_the_tensor_object(unet):
    """An equal-valued copy of the last output continues the run as the output itself does (the
    identity of the tensor object decided it before)."""
    process = DiffusersProcess(unet, DPMSolverMultistepScheduler(), STEPS)
    x = process.prior(2, generator=torch.Generator().manual_seed(0))
    whole = process.run(x)
    half = process.run(x, stop=4)
    assert torch.equal(process.run(half.clone(), start=4), whole)
    half = process.run(x, stop=4)
    half += 0.0  # changed in place to the same values: still the same state
    assert torch.equal(process.run(half, start=4), whole)
    # Another state at the same index is no continuation: it runs as on a process with no history.
    fresh = DiffusersProcess(unet, DPMSolverMultistepScheduler(), STEPS)
    nudged = process.run(x, stop=4) + 1e-3
    assert torch.equal(process.run(nudged, start=4), fresh.run(nudged, start=4))


def test_latents_encode_decode(sd_pipe):
    pe, ne = _embeds()
    process = _quiet(from_pipeline, sd_pipe, 4, 2.0, prompt_embeds=pe, negative_prompt_embeds=ne)
    assert process.sample_shape == (4, 8, 8)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    vae = sd_pipe.vae
    with torch.no_grad():
        expected_latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        latents = process.encode(images)
        assert torch.equal(latents, expected_latents)
        assert torch.equal(process.decode(latents), vae.decode(latents / vae.config.scaling_factor).sample)


def test_sdxl_pipeline_trajectory():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from tiny_models import tiny_vae

    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(0),
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=tiny_conditional_unet(0, xl=True, pooled_dim=8),
        scheduler=EulerDiscreteScheduler(),
    )
    g = torch.Generator().manual_seed(0)
    pe, ne = torch.randn(1, 5, 16, generator=g), torch.randn(1, 5, 16, generator=g)
    pooled, neg_pooled = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    kwargs = dict(
        prompt_embeds=pe,
        negative_prompt_embeds=ne,
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=neg_pooled,
    )
    process = _quiet(from_pipeline, pipe, 4, 5.0, **kwargs)
    states, _ = record_pipeline_trajectory(
        pipe, process, n=1, generator=torch.Generator().manual_seed(1), guidance_scale=5.0, **kwargs
    )
    g = torch.Generator().manual_seed(1)
    final = process.run(process.prior(1, generator=g), generator=g)
    assert torch.equal(final, states[-1])


def test_engine_forward_reverse_and_clone(unet, tmp_path):
    from critwin.experiments.cloning import clone
    from critwin.experiments.features import SourceSimilarity
    from critwin.experiments.forward_reverse import forward_reverse

    process = DiffusersProcess(unet, EulerAncestralDiscreteScheduler(), STEPS)
    x0 = _x0(3)
    feature = SourceSimilarity(x0)
    result = forward_reverse(
        process,
        x0,
        [0.0, 0.3, 2.0],
        n_per_time=2,
        feature=feature,
        seed=0,
        out=tmp_path / "fr",
        progress=False,
    )
    index = process.realise(0.3)["index"]
    assert result.times.tolist() == [
        0.0,
        process.times[index].item(),
        process.times[process.locate(2.0)[0]].item(),
    ]
    assert result.agreement[0].item() == 1.0  # t = 0 returns the sources themselves
    # Euler's linspace timesteps are fractional; the engine keeps them exactly, in memory and on disk.
    assert not float(process.step_label(index)).is_integer()
    assert result.steps[1].item() == process.step_label(index)
    assert result.table()["step"][result.n_per_time * x0.shape[0]] == process.step_label(index)
    assert type(result).load(tmp_path / "fr").steps.tolist() == result.steps.tolist()
    cloned = clone(
        process,
        2,
        [0.5, 2.0],
        2,
        feature=SourceSimilarity(process.prior(3, torch.Generator())),
        seed=1,
        progress=False,
    )
    assert cloned.clone_labels.shape == (2, 2, 2)


def test_bad_input(unet, sd_pipe):
    with pytest.raises(
        ValueError, match="PNDMScheduler is not supported; supported schedulers: DDPMScheduler"
    ):
        DiffusersProcess(unet, PNDMScheduler(), STEPS)
    assert set(SUPPORTED_SCHEDULERS) >= {
        "DDPMScheduler",
        "DDIMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
    }
    process = DiffusersProcess(unet, EulerDiscreteScheduler(), STEPS)
    with pytest.raises(ValueError, match="beyond the sampler's range"):
        process.realise(50.0)
    with pytest.raises(ValueError, match="x must have shape"):
        process.run(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="index must be a grid index"):
        process.add_noise(_x0(), STEPS + 1)
    with pytest.raises(ValueError, match="num_inference_steps must be <="):
        DiffusersProcess(unet, DDPMScheduler(num_train_timesteps=10), 20)
    with pytest.raises(ValueError, match="guidance_scale"):
        DiffusersProcess(unet, DDPMScheduler(), STEPS, guidance_scale=-1)
    pe, ne = _embeds()
    with pytest.raises(
        ValueError, match=r"prompt embeddings cond\['encoder_hidden_states'\] must have shape"
    ):
        _quiet(from_pipeline, sd_pipe, 4, 1.0, prompt_embeds=torch.zeros(1, 5, 7)).run(
            torch.zeros(1, 4, 8, 8)
        )
    with pytest.raises(ValueError, match="needs the pipeline's tokenizer"):
        from_pipeline(sd_pipe, 4, 7.5, prompt_embeds=pe)
    with pytest.raises(ValueError, match="needs the pipeline's tokenizer"):
        from_pipeline(sd_pipe, 4, 1.0, prompt="a cat")
    conditional = _quiet(
        DiffusersProcess, sd_pipe.unet, sd_pipe.scheduler, 4, cond={"prompt_embeds": pe}, guidance_scale=3.0
    )
    with pytest.raises(ValueError, match="needs unconditional conditioning"):
        conditional.run(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="text-conditional"):
        _quiet(DiffusersProcess, sd_pipe.unet, sd_pipe.scheduler, 4).run(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="must match"):
        _quiet(
            DiffusersProcess,
            sd_pipe.unet,
            sd_pipe.scheduler,
            4,
            cond={"prompt_embeds": pe},
            uncond={"prompt_embeds": torch.zeros(1, 3, 16)},
            guidance_scale=2.0,
        ).run(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="class indices"):
        _quiet(
            DiffusersProcess, tiny_unet(num_class_embeds=4), DDPMScheduler(), 4, cond={"class_labels": 7}
        ).run(torch.zeros(1, 3, 8, 8))


def test_load_prompt_embeds_formats(tmp_path):
    from safetensors.torch import save_file

    from critwin.adapters.diffusers import load_prompt_embeds

    pe, ne = _embeds()
    save_file({"prompt_embeds": pe, "negative_prompt_embeds": ne}, str(tmp_path / "e.safetensors"))
    loaded = load_prompt_embeds(tmp_path / "e.safetensors")
    assert torch.equal(loaded["prompt_embeds"], pe) and torch.equal(loaded["negative_prompt_embeds"], ne)
    torch.save(pe, tmp_path / "single.pt")
    assert torch.equal(load_prompt_embeds(tmp_path / "single.pt")["prompt_embeds"], pe)
    torch.save({"prompt_embeds": pe, "other": ne}, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="unknown entries"):
        load_prompt_embeds(tmp_path / "extra.pt")
    torch.save({"prompt_embeds": pe[0]}, tmp_path / "flat.pt")
    with pytest.raises(ValueError, match="must have shape"):
        load_prompt_embeds(tmp_path / "flat.pt")
    (tmp_path / "evil.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        load_prompt_embeds(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError):
        load_prompt_embeds(tmp_path / "missing.safetensors")


def test_record_needs_a_callback_pipeline(unet):
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    process = _quiet(from_pipeline, pipe, 4)
    with pytest.raises(ValueError, match="does not accept callback_on_step_end"):
        record_pipeline_trajectory(pipe, process)
    # The pixel pipeline itself runs through the adapter: DDPMPipeline's latents are the adapter's.
    expected = pipe(
        batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np"
    ).images
    g = torch.Generator().manual_seed(0)
    ours = process.run(process.prior(1, generator=g), generator=g)
    # DDPMPipeline maps to [0, 1] and NHWC in float32 numpy: compare in that space (a few float32 ulps).
    assert torch.allclose(
        (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1), torch.from_numpy(expected), atol=1e-6
    )


@pytest.mark.parametrize("scheduler_cls", [None, EulerAncestralDiscreteScheduler])
def test_cloning_through_the_stock_pipeline_call(sd_pipe, scheduler_cls):
    """Cloning trunks run by the unmodified pipe(...) (stopped in callback_on_step_end): same result."""
    from critwin.experiments.cloning import clone

    pipe = sd_pipe
    original = pipe.scheduler
    if scheduler_cls is not None:
        pipe.scheduler = scheduler_cls.from_config(original.config)
    try:
        pe, ne = _embeds()
        kwargs = dict(prompt_embeds=pe, negative_prompt_embeds=ne)
        stock = _quiet(from_pipeline, pipe, 5, 3.0, use_pipeline_call=True, **kwargs)
        adapter = _quiet(from_pipeline, pipe, 5, 3.0, **kwargs)
        g = torch.Generator().manual_seed(0)
        x = stock.prior(2, generator=g)
        # An equal copy of the prior draw is the draw (the tensor object decided it before).
        partial = stock.run(x.clone(), stop=3, generator=g)
        assert stock.pipeline_calls == 1
        g = torch.Generator().manual_seed(0)
        assert torch.equal(partial, adapter.run(adapter.prior(2, generator=g), stop=3, generator=g))

        def feature(images):
            return (images.mean(dim=(1, 2, 3)) > 0).long()

        a = clone(stock, 3, [0.4, 1.0], 2, feature=feature, seed=5, progress=False)
        b = clone(adapter, 3, [0.4, 1.0], 2, feature=feature, seed=5, progress=False)
        assert stock.pipeline_calls > 1
        assert torch.equal(a.own_labels, b.own_labels) and torch.equal(a.clone_labels, b.clone_labels)
    finally:
        pipe.scheduler = original


def test_tiny_models_depend_only_on_their_seed_and_keep_the_global_rng():
    from tiny_models import tiny_unet

    torch.manual_seed(5)
    first = tiny_unet(3)
    after_build = torch.rand(4)
    torch.manual_seed(5)
    expected = torch.rand(4)
    assert torch.equal(after_build, expected)  # building did not consume the caller's stream
    again, other = tiny_unet(seed=3), tiny_unet(4)
    pairs = list(zip(first.parameters(), again.parameters(), other.parameters(), strict=True))
    assert all(torch.equal(p, q) for p, q, _ in pairs)
    assert not all(torch.equal(p, r) for p, _, r in pairs)


def test_a_network_that_raises_is_a_model_error_naming_it_and_the_step_with_its_cause():
    """Issue 22: the network's own exception (here a RuntimeError) enters the engine as a ModelError
    (a ValueError: one line on the command line) naming the network and the step, the original kept."""
    from critwin._validation import ModelError

    net = tiny_unet(seed=0)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    net.forward = broken
    process = _quiet(DiffusersProcess, net, DDIMScheduler(), 3)
    with pytest.raises(
        ModelError, match=r"network 'UNet2DModel' raised RuntimeError \(timestep \d+, grid index 0\): boom"
    ) as info:
        process.run(process.prior(2, generator=torch.Generator().manual_seed(0)))
    assert isinstance(info.value.__cause__, RuntimeError)
