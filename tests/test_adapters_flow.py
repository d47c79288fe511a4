"""Flow matching (FlowMatchEulerDiscreteScheduler) and SD3 transformers through the diffusers adapter.

Trajectories are compared byte for byte (``torch.equal``) with a hand loop over ``scheduler.step`` and with
the stock ``StableDiffusion3Pipeline`` (``callback_on_step_end``). Noise levels are compared with the shift
formula written out by hand; states in float32 agree to a few ulps of order-1 values (1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from adapter_checks import assert_sweeps_report_realised_times
from critwin.adapters.diffusers import DiffusersProcess, from_pipeline, record_pipeline_trajectory
from critwin.adapters.diffusers.flow import dynamic_shift_mu, flow_ou_times
from critwin.clock import alpha_sigma
from tiny_models import tiny_sd3

STEPS = 6


def _embeds(seed: int, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, 16, generator=g), torch.randn(batch, 8, generator=g)


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd3(0)


def _hand_sigmas(shift: float, n: int, num_train: int = 1000) -> np.ndarray:
    """SD3's schedule by hand: the shifted training range, linearly spaced, shifted again, then 0."""

    def shifted(u):
        return shift * u / (1 + (shift - 1) * u)

    u = np.linspace(1.0, shifted(1.0 / num_train), n)
    return np.append(shifted(u), 0.0)


def _process(pipe, guidance_scale=1.0, **kwargs):
    pe, pp = _embeds(1)
    ne, npp = _embeds(2)
    uncond = {"prompt_embeds": ne, "pooled_prompt_embeds": npp} if guidance_scale != 1.0 else None
    return DiffusersProcess(
        pipe.transformer,
        pipe.scheduler,
        STEPS,
        cond={"prompt_embeds": pe, "pooled_prompt_embeds": pp},
        uncond=uncond,
        guidance_scale=guidance_scale,
        **kwargs,
    )


def test_flow_grid_matches_shift_formula_and_ou_state(pipe):
    process = _process(pipe)
    s = _hand_sigmas(3.0, STEPS)
    expected = [math.inf] + [0.5 * math.log1p((v / (1 - v)) ** 2) for v in s[1:]]
    # float32 sigmas in the scheduler: relative 1e-6 on the OU times.
    assert process.times[0].item() == math.inf
    np.testing.assert_allclose(process.times[1:].numpy(), expected[1:], rtol=2e-6, atol=1e-9)
    assert process.describe()["state_space"].startswith("flow")
    # add_noise(x0, i) is (1 - s) x0 + s z; to_ou of it is the OU state e^-t x0 + sqrt(1 - e^-2t) z.
    x0 = torch.randn(3, *process.sample_shape, generator=torch.Generator().manual_seed(5))
    for i in (1, 3, 5):
        noised = process.add_noise(x0, i, generator=torch.Generator().manual_seed(9))
        z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
        assert torch.allclose(noised, (1 - s[i]) * x0 + s[i] * z, atol=1e-6)
        a, sd = alpha_sigma(process.times[i].item())
        assert torch.allclose(process.to_ou(noised, i), a * x0 + sd * z, atol=1e-6)
        assert torch.allclose(process.from_ou(process.to_ou(noised, i), i), noised, atol=1e-6)
    # s = 1 (OU time inf) is pure noise with scale 1: the prior is the OU state there.
    prior = process.prior(2, torch.Generator().manual_seed(0))
    assert torch.equal(process.to_ou(prior, 0), prior)


def test_flow_run_equals_hand_loop(pipe):
    process = _process(pipe)
    pe, pp = _embeds(1)
    x = process.prior(2, torch.Generator().manual_seed(3))
    sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(STEPS)
    y = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            v = pipe.transformer(
                hidden_states=y,
                timestep=t.expand(2),
                encoder_hidden_states=pe.repeat(2, 1, 1),
                pooled_projections=pp.repeat(2, 1),
                return_dict=False,
            )[0]
            y = sched.step(v, t, y, return_dict=False)[0]
    assert torch.equal(process.run(x), y)
    # Split at grid index 2: the Euler flow step has no history, so the halves compose exactly.
    half = process.run(x, stop=2)
    assert torch.equal(process.run(half.clone(), start=2), y)


def test_flow_pipeline_callback_trajectory_and_x0(pipe):
    process = from_pipeline(
        pipe,
        STEPS,
        3.0,
        prompt_embeds=_embeds(1)[0],
        pooled_prompt_embeds=_embeds(1)[1],
        negative_prompt_embeds=_embeds(2)[0],
        negative_pooled_prompt_embeds=_embeds(2)[1],
    )
    pe, pp = _embeds(1)
    ne, npp = _embeds(2)
    # SD3's encode_prompt does not repeat given embeddings per image: pass one row per sample.
    states, _ = record_pipeline_trajectory(
        pipe,
        process,
        n=2,
        generator=torch.Generator().manual_seed(4),
        prompt_embeds=pe.repeat(2, 1, 1),
        pooled_prompt_embeds=pp.repeat(2, 1),
        negative_prompt_embeds=ne.repeat(2, 1, 1),
        negative_pooled_prompt_embeds=npp.repeat(2, 1),
        guidance_scale=3.0,
    )
    seen = {}
    final = process.run(states[0], callback=lambda i, t, x, x0: seen.setdefault(i, (t, x, x0)))
    assert torch.equal(final, states[-1])
    for k in range(1, STEPS):
        assert torch.equal(process.run(states[k], start=k, stop=k + 1), states[k + 1])
    # x0_hat = x_s - s v with v the guided velocity, computed here without the adapter.
    i = 2
    t, x, x0_hat = seen[i]
    s = float(process.scheduler.sigmas[i])
    with torch.no_grad():
        out = pipe.transformer(
            hidden_states=torch.cat([x, x]),
            timestep=process.timesteps[i].expand(4),
            encoder_hidden_states=torch.cat([ne.repeat(2, 1, 1), pe.repeat(2, 1, 1)]),
            pooled_projections=torch.cat([npp.repeat(2, 1), pp.repeat(2, 1)]),
            return_dict=False,
        )[0]
    u, c = out.chunk(2)
    v = u + 3.0 * (c - u)
    assert t == process.times[i].item()
    assert torch.allclose(x0_hat, x - s * v, atol=1e-5)


class _GaussianVelocity(torch.nn.Module):
    """The exact velocity E[z - x0 | x_s] for x0 ~ N(0, I): a transformer-shaped stand-in."""

    def forward(self, hidden_states, timestep, return_dict=True):
        s = (timestep.double() / 1000).reshape(-1, 1, 1, 1)
        x = hidden_states.double()
        x0 = (1 - s) * x / ((1 - s) ** 2 + s**2)
        z = s * x / ((1 - s) ** 2 + s**2)
        return ((z - x0).float(),)


def test_flow_denoise_exact_for_gaussian_data():
    # For x0 ~ N(0, I) the OU posterior mean is E[x0 | x_t] = e^-t x_t; the adapter must recover it from
    # the exact velocity through s(t), the state scale and x0 = x_s - s v.
    process = DiffusersProcess(
        _GaussianVelocity(), FlowMatchEulerDiscreteScheduler(shift=3.0), 4, sample_shape=(2, 4, 4)
    )
    x = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.05, 0.3, 1.0, 2.0, 4.0], dtype=torch.float64)
    got = process.denoise(x, t)
    expected = torch.exp(-t).float().reshape(-1, 1, 1, 1) * x
    assert torch.allclose(got, expected, atol=1e-5)


def test_flow_dynamic_shifting_needs_mu_and_matches_formula(pipe):
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="exponential")
    with pytest.raises(ValueError, match="mu is required"):
        DiffusersProcess(pipe.transformer, sched, 4, sample_shape=(4, 8, 8))
    with pytest.raises(ValueError, match="mu applies only"):
        DiffusersProcess(pipe.transformer, FlowMatchEulerDiscreteScheduler(), 4, mu=0.5)
    # 16 patches of 2x2 in an 8x8 latent: mu on the line through (256, 0.5) and (4096, 1.15).
    mu = dynamic_shift_mu(sched.config, 16)
    assert mu == pytest.approx(0.5 + (16 - 256) * (1.15 - 0.5) / (4096 - 256), rel=1e-12)
    pe, pp = _embeds(1)
    dyn_pipe = tiny_sd3(0, scheduler=sched)
    process = from_pipeline(dyn_pipe, 4, 1.0, prompt_embeds=pe, pooled_prompt_embeds=pp)
    assert process.describe()["mu"] == pytest.approx(mu)
    u = np.linspace(1.0, 1.0 / 1000, 4)
    s = math.exp(mu) / (math.exp(mu) + (1 / u - 1))
    np.testing.assert_allclose(process.times[:-1].numpy(), flow_ou_times(torch.tensor(s)).numpy(), rtol=2e-6)
    states, _ = record_pipeline_trajectory(
        dyn_pipe,
        process,
        generator=torch.Generator().manual_seed(0),
        prompt_embeds=pe,
        pooled_prompt_embeds=pp,
        guidance_scale=1.0,
    )
    assert torch.equal(process.run(states[0]), states[-1])


def test_flow_forward_reverse_and_clone_report_realised_time(pipe):
    process = _process(pipe)
    assert_sweeps_report_realised_times(
        process, torch.randn(2, *process.sample_shape, generator=torch.Generator().manual_seed(0))
    )


def test_sd3_stock_pipeline_call_with_one_row_embeddings(pipe):
    # SD3 does not repeat given embeddings per image: the stock call gets them repeated per sample.
    pe, pp = _embeds(1)
    ne, npp = _embeds(2)
    kwargs = dict(
        prompt_embeds=pe,
        pooled_prompt_embeds=pp,
        negative_prompt_embeds=ne,
        negative_pooled_prompt_embeds=npp,
    )
    stock = from_pipeline(pipe, STEPS, 3.0, use_pipeline_call=True, **kwargs)
    adapter = from_pipeline(pipe, STEPS, 3.0, **kwargs)
    out = stock.run(stock.prior(2, generator=torch.Generator().manual_seed(0)))
    assert stock.pipeline_calls == 1
    assert torch.equal(out, adapter.run(adapter.prior(2, generator=torch.Generator().manual_seed(0))))


def test_flow_bad_input(pipe):
    with pytest.raises(ValueError, match="flow times s must lie in"):
        flow_ou_times(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="invert_sigmas"):
        DiffusersProcess(pipe.transformer, FlowMatchEulerDiscreteScheduler(invert_sigmas=True), 4)
    with pytest.raises(ValueError, match="needs pooled_prompt_embeds"):
        from_pipeline(pipe, 4, 1.0, prompt_embeds=_embeds(1)[0])


def test_cli_sweep_on_a_saved_tiny_sd3(pipe, tmp_path, capsys):
    import csv

    from safetensors.torch import save_file

    from critwin.adapters.diffusers import load_local
    from critwin.cli import main

    pipe.save_pretrained(tmp_path / "sd3")
    pe, pp = _embeds(1)
    ne, npp = _embeds(2)
    embeds = {
        "prompt_embeds": pe,
        "pooled_prompt_embeds": pp,
        "negative_prompt_embeds": ne,
        "negative_pooled_prompt_embeds": npp,
    }
    save_file(embeds, str(tmp_path / "embeds.safetensors"))
    out = tmp_path / "out"
    argv = [
        "sweep", "--model", str(tmp_path / "sd3"), "--prompt-embeds", str(tmp_path / "embeds.safetensors"),
        "--guidance", "3", "--steps", "4", "--times", "0.5,1.5", "--n", "2", "--n-per-time", "1",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    process = from_pipeline(load_local(tmp_path / "sd3"), 4, 3.0, **embeds)
    with open(out / "table.csv", newline="") as handle:
        realised = sorted({float(row["t"]) for row in csv.DictReader(handle)})
    assert realised == sorted(process.times[process.locate(t)[0]].item() for t in (0.5, 1.5))
