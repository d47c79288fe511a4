"""Transformer backbones (DiT) through the diffusers adapter, against a hand loop over ``scheduler.step``."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from critwin.adapters.diffusers import DiffusersProcess
from tiny_models import tiny_dit

STEPS = 4


@pytest.mark.filterwarnings("ignore::critwin.adapters.diffusers.TerminalSNRWarning")
@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, FlowMatchEulerDiscreteScheduler])
def test_dit_class_guided_run_equals_hand_loop(scheduler_cls):
    model = tiny_dit(0)
    label, null, scale = torch.tensor([3]), torch.tensor([9]), 2.5
    process = DiffusersProcess(
        model,
        scheduler_cls(),
        STEPS,
        cond={"class_labels": label},
        uncond={"class_labels": null},
        guidance_scale=scale,
    )
    x = process.prior(2, torch.Generator().manual_seed(0))
    sched = scheduler_cls()
    sched.set_timesteps(STEPS)
    y = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            out = model(
                hidden_states=torch.cat([y, y]),
                timestep=t.expand(4),
                class_labels=torch.cat([null.repeat(2), label.repeat(2)]),
                return_dict=False,
            )[0]
            uncond, cond = out.chunk(2)
            y = sched.step(uncond + scale * (cond - uncond), t, y, return_dict=False)[0]
    assert torch.equal(process.run(x), y)
