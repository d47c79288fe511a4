"""The theory wing: exact answers on mixtures (docs/theory.md §2–§7, docs/discrete.md).

Divergences between noised sub-mixtures (:mod:`~critwin.theory.divergence`, with the two-Gaussian
closed forms in :mod:`~critwin.theory.gaussian_divergences`), transition times and critical windows
(:mod:`~critwin.theory.windows`), the sufficient closed forms (:mod:`~critwin.theory.closed_forms`),
isotropic mixtures worked in the span of their means (:mod:`~critwin.theory.span`,
:mod:`~critwin.theory.span_crossings`), the ε-mixture tree (:mod:`~critwin.theory.tree`) and the
synthetic check of the theorem (:mod:`~critwin.theory.validate`). Token sequences
(:class:`~critwin.mixtures.CategoricalMixture`): exact and Monte Carlo TV (:mod:`~critwin.theory.discrete`),
levels on the discrete clocks and the tree's engine (:mod:`~critwin.theory.discrete_times`), Blink's
Examples 3–5 (:mod:`~critwin.theory.discrete_closed_forms`).

This wing imports the core (clock, mixtures, samplers) and never the engine (``critwin.experiments``),
the adapters or the models; they never import it either (``tests/test_architecture.py``).
"""
