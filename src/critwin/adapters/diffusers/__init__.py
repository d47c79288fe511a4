"""Any diffusers UNet + scheduler (or a whole pipeline) as a critwin :class:`ReverseProcess`.

Grid and clock
--------------
After ``scheduler.set_timesteps(num_inference_steps)`` the scheduler visits ``L`` timesteps. Grid index
``i < L`` is the state from which the scheduler's step ``i`` (at ``scheduler.timesteps[i]``) starts, and
``times[i]`` is the OU time of the noise level that step assumes: ``ou_time(alpha_bar=alphas_cumprod[k])`` for
DDPM/DDIM (timestep ``k``), ``ou_time(sigma=sigmas[i])`` for schedulers that carry a sigma table (Euler,
Euler-ancestral, DPM-Solver++, UniPC; sigma is the ratio ``sqrt((1 - alpha_bar) / alpha_bar)``). ``times[L]``
is where the last step lands: OU time 0 unless ``set_alpha_to_one=False`` (DDIM: ``alphas_cumprod[0]``) or
``final_sigmas_type="sigma_min"`` says otherwise. ``add_noise(x0, i)`` noises to exactly that level and
``run(x, start=i)`` starts the scheduler at step ``i`` (``set_begin_index`` where the scheduler has it), so
``run(add_noise(x0, i), start=i)`` has no off-by-one.

State space
-----------
``add_noise``, ``run``, ``prior`` and the callback's ``x`` all use the scheduler's own scaling (what the
stock pipeline's ``latents`` hold), so trajectories are byte-identical to a hand-written ``scheduler.step``
loop. For VP schedulers (DDPM, DDIM, DPM-Solver++, UniPC) that is the OU state. For sigma schedulers (Euler,
Euler-ancestral) it is ``x = x0 + sigma z``; the OU state is ``x / sqrt(1 + sigma^2)`` (:meth:`to_ou`).
For the flow-matching scheduler (SD3, Flux-style ``FlowMatchEulerDiscreteScheduler``) it is
``x = (1 - s) x0 + s z``; the OU state is ``x / sqrt((1 - s)^2 + s^2)`` at
``t = 1/2 log(1 + s^2 / (1 - s)^2)``, so the first grid point (``s = 1``) is OU time ``inf``
(see :mod:`critwin.adapters.diffusers.flow`).
``denoise(x, t)`` (for critwin's own samplers) always takes the OU state.

Schedulers
----------
Supported (:data:`SUPPORTED_SCHEDULERS`): DDPM, DDIM, Euler, Euler-ancestral, DPM-Solver++ (multistep;
tested with ``dpmsolver++`` and ``sde-dpmsolver++``), UniPC and flow-matching Euler (velocity prediction;
``shift`` or dynamic shifting, whose ``mu`` :func:`from_pipeline` computes from the latent size as SD3/Flux
do). Networks: UNets, and transformers called as ``net(hidden_states=, timestep=, ...)`` (SD3 with prompt
and pooled embeddings, PixArt with T5 embeddings and attention masks, DiT with class labels and its null
class, Flux on packed latents with its distilled guidance). Learned-variance outputs (DiT, PixArt: twice
the input channels) step the scheduler with the mean half. v-prediction with zero terminal SNR starts at
OU time ``inf``; ``denoise`` reads ``t = inf`` at the last training step (x̂₀ = -v). Anything else is
refused with
``ValueError: scheduler PNDMScheduler is not supported; supported schedulers: ...``; in particular
PNDM (Stable Diffusion 1.x's saved default), Heun/KDPM2 (two model calls per step: repeated timesteps),
LMS, DEIS, single-step DPM-Solver, EDM and the other flow-matching schedulers. Build a supported one from
the same config: ``DDIMScheduler.from_config(pipe.scheduler.config)``.

Modules
-------
``schedule`` (supported schedulers, scheduler <-> OU grid, terminal-SNR warning), ``flow`` (rectified-flow
time and state <-> OU), ``guidance`` (conditioning, classifier-free guidance, VAE), ``families`` (which
pipeline family a network is; PixArt and DiT conditioning), ``flux`` (:class:`PackedLatents`,
:class:`FluxNetwork`), ``process`` (:class:`DiffusersProcess`), ``pipeline`` (:func:`from_pipeline`,
:class:`PipelineProcess`, :func:`record_pipeline_trajectory`), ``loading`` (:func:`load_local`,
:func:`load_prompt_embeds`). Everything public is importable from ``critwin.adapters.diffusers``.

Usage
-----
::

    process = from_pipeline(pipe, num_inference_steps=50, guidance_scale=7.5,
                            prompt_embeds=pe, negative_prompt_embeds=ne)
    process.realise(1.0)  # grid index, timestep, alpha_bar and OU time actually used
    forward_reverse(process, images, times=[0.3, 1.0, 2.0], feature=SourceSimilarity(images), seed=0)
"""

from __future__ import annotations

from critwin.adapters.diffusers.flux import FluxNetwork, PackedLatents
from critwin.adapters.diffusers.loading import LocalPipeline, load_local, load_prompt_embeds
from critwin.adapters.diffusers.pipeline import PipelineProcess, from_pipeline, record_pipeline_trajectory
from critwin.adapters.diffusers.process import DiffusersProcess
from critwin.adapters.diffusers.schedule import (
    PREDICTION_TYPES,
    SUPPORTED_SCHEDULERS,
    TerminalSNRWarning,
    predicted_x0,
    scheduler_class,
)

__all__ = [
    "DiffusersProcess",
    "FluxNetwork",
    "LocalPipeline",
    "PREDICTION_TYPES",
    "PackedLatents",
    "PipelineProcess",
    "SUPPORTED_SCHEDULERS",
    "TerminalSNRWarning",
    "from_pipeline",
    "predicted_x0",
    "load_local",
    "load_prompt_embeds",
    "record_pipeline_trajectory",
    "scheduler_class",
]
