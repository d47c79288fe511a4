"""Experiments: reverse processes, forward–reverse, cloning, window estimation, adaptive search.

- ``process``: :class:`ReverseProcess` (the interface), :class:`MixtureProcess` (exact mixtures with
  critwin's samplers or exact posterior draws), :class:`DiscreteProcess` (DDIM/DDPM on a discrete VP
  schedule over any denoiser).
- ``forward_reverse``: ``forward_reverse(model, x0, times, n_per_time, feature, sampler=None,
  generator=None, seed=None, out=DIR, cond=None) -> ForwardReverseResult``.
- ``cloning``: ``clone(model, n_trajectories, times, n_clones, feature, ...) -> CloneResult``.
- ``estimation``: ``estimate_window(result, delta=0.1, ...) -> WindowEstimate`` (Wilson and bootstrap
  CIs, isotonic fit, Blink's jump rule, per-class breakdown, susceptibility).
- ``search``: ``search_window(model, x0, feature, delta=0.1, resolution=0.05, ...) -> SearchResult``.
- ``store``: unit seeds, checkpoint directories (``config.json`` + ``units/``), feature validation.

Submodules are imported on use (``critwin.forward_reverse`` etc. are exported lazily).
"""
