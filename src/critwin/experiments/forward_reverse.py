"""The forward–reverse (noise–denoise) experiment (docs/theory.md §4–§5).

Call shape (stable; ``critwin sweep`` and the diffusers adapter use it)::

    result = forward_reverse(process_or_mixture, x0, times, n_per_time, feature,
                             sampler=None, generator=None, seed=None, out=DIR, cond=None,
                             executor="local", ray_address=None)

For every requested OU time ``t`` and every sample of ``x0`` (data space), ``n_per_time`` times:
noise ``x0`` to the grid point of the process nearest to ``t`` with fresh noise, run the sampler from
that same grid index to the end (no off-by-one), and read ``feature`` on the output. The realised OU
time and step of every requested time are recorded. Sample column ``m`` of the result belongs to
source ``m // n_per_time``.

With ``out=DIR`` each completed (time, chunk) unit is written atomically to ``DIR/units`` and
``DIR/config.json`` records all settings that determine the results; rerunning the same call after a
kill resumes and gives an identical table. The final table is saved to ``DIR/table.csv`` +
``DIR/metadata.json``. With ``executor="ray"`` the units run as Ray tasks
(:mod:`critwin.experiments.executor`); the table is byte-identical to the local one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from critwin._display import Table
from critwin._files import fingerprint
from critwin._validation import check_positive_int
from critwin.experiments.checkpoint import (
    SweepStore,
    check_chunk_size,
    check_resumable,
    holds_outputs,
    progress_bar,
    resolve_seed,
    unit_generator,
)
from critwin.experiments.executor import resolve_executor, run_units
from critwin.experiments.features import (
    UNNAMED,
    describe_features,
    labelled,
    read_features,
    resolve_features,
    split_labels,
)
from critwin.experiments.process import (
    RealisedTimes,
    as_process,
    check_cond,
    check_model_shape,
    check_samples,
    check_sweep_memory,
    nfe_since,
    realise_times,
    select_cond,
)
from critwin.experiments.results import (
    FeatureLabels,
    ResultTable,
    at_edge,
    clock_of,
    feature_columns,
    grid_columns,
    grid_from_metadata,
    grid_metadata,
    result_metadata,
)

__all__ = ["forward_reverse", "ForwardReverseResult"]

DEFAULT_CHUNK = 512


@dataclass(repr=False)
class ForwardReverseResult(FeatureLabels, ResultTable):
    """Per-sample outcome of a forward–reverse sweep.

    Attributes
    ----------
    requested_times : (T,) float64 OU times asked for (levels on the process's clock: ``metadata["clock"]``).
    times : (T,) float64 realised OU times (grid points actually used).
    indices : (T,) long grid indices of the process where noising stopped and sampling started.
    steps : (T,) long model step labels (diffusers timesteps; -1 for t = 0) or None.
    labels : (T, M) long feature labels of the outputs, ``M = N * n_per_time``.
    source_labels : (T, M) long feature labels of the inputs, repeated to match ``labels``.
    source_ids : (M,) long index into ``x0`` of every column.
    probabilities : (T, M, C) float32 output probabilities when the feature returns them, else None.
    n_per_time : replicates per source and time.
    nfe : total per-sample denoiser evaluations (None if the process does not count them).
    metadata : provenance (process description, seed, feature name...).

    With several features (``feature={name: f, ...}``) ``labels``, ``source_labels`` and
    ``probabilities`` are ``{name: tensor}`` (every feature read from the same outputs), the method
    ``select(name)`` gives one feature's result, and the table has ``label[name]`` and
    ``source_label[name]`` columns instead of ``label`` and ``source_label``.

    Examples
    --------
    What :func:`critwin.forward_reverse` returns. With the exact sampler, ``c(t)`` (``agreement``) is
    ``E[1 / (1 + exp(2 m X))]`` for ``X ~ N(-m, 1)``, ``m = 4 e^-t``, the posterior probability of the
    source's component, found here by quadrature; 4 standard errors at 1000 sources are at most 0.063:

    >>> import math, torch, critwin
    >>> from scipy.integrate import quad
    >>> from scipy.stats import norm
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> x0, _ = mix.subset([0]).sample(1000, generator=torch.Generator().manual_seed(0))
    >>> res = critwin.forward_reverse(
    ...     mix, x0, [0.5, 2.0], feature="component", sampler="exact", seed=0, progress=False
    ... )
    >>> tuple(res.labels.shape), res.times.tolist(), res.nfe
    ((2, 1000), [0.5, 2.0], 2000)
    >>> def c(t):
    ...     m = 4 * math.exp(-t)
    ...     return quad(lambda x: norm.pdf(x, -m, 1) / (1 + math.exp(2 * m * x)), -20, 20)[0]
    >>> [bool(abs(res.agreement[i] - c(t)) < 0.063) for i, t in enumerate([0.5, 2.0])]
    [True, True]
    >>> res.rows()[0]  # one row per output
    {'t': 0.5, 'requested_t': 0.5, 'step': None, 'index': 152, 'source_id': 0, 'replicate': 0, ...}
    """

    requested_times: torch.Tensor
    times: torch.Tensor
    indices: torch.Tensor
    steps: torch.Tensor | None
    labels: torch.Tensor | dict[str, torch.Tensor]
    source_labels: torch.Tensor | dict[str, torch.Tensor]
    source_ids: torch.Tensor
    probabilities: torch.Tensor | dict[str, torch.Tensor] | None = None
    n_per_time: int = 1
    nfe: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "forward_reverse"
    _label_fields: ClassVar[tuple[str, ...]] = ("labels", "source_labels", "probabilities")

    @property
    def agreement(self) -> torch.Tensor:
        """(T,) commitment curve c(t): fraction of outputs whose label equals their source's."""
        self._single("agreement")
        return (self.labels == self.source_labels).double().mean(1)

    def summary(self) -> dict[str, Any]:
        out = {
            "clock": self.metadata.get("clock", "ou"),
            "times": int(self.times.numel()),
            "sources": int(self.source_ids.max()) + 1 if self.source_ids.numel() else 0,
            "n_per_time": self.n_per_time,
        }
        return {**out, **self._feature_summary(), "nfe": self.nfe}

    def kept(self) -> torch.Tensor:
        """(T, M) bool: output label equals source label."""
        self._single("kept()")
        return self.labels == self.source_labels

    def table(self) -> dict[str, list]:
        """Tidy columns, one row per (time, sample): t, requested_t, step, index, source_id,
        replicate, label, source_label (``label[name]``, ``source_label[name]`` per feature)."""
        T, M = self._first("labels").shape
        t_rep = np.repeat(np.arange(T), M)
        col = np.tile(np.arange(M), T)
        columns = {
            **grid_columns(self, t_rep),
            "source_id": self.source_ids.numpy()[col].tolist(),
            "replicate": (col % self.n_per_time).tolist(),
        }
        labels = self._label_columns(("label", "labels", None), ("source_label", "source_labels", None))
        return Table({**columns, **labels})

    def _saved_metadata(self) -> dict[str, Any]:
        meta = dict(self.metadata)
        meta.update(
            n_per_time=self.n_per_time,
            nfe=self.nfe,
            **grid_metadata(self.requested_times, self.times, self.indices, self.steps),
        )
        return meta

    @classmethod
    def _from_saved(cls, columns, meta) -> ForwardReverseResult:
        # Probabilities are not stored in the table.
        T = len(meta["times"])

        def tensor(values):
            return torch.tensor([int(v) for v in values], dtype=torch.long).reshape(T, -1)

        labels = {k: tensor(v) for k, v in feature_columns(columns, "label").items()}
        source = {k: tensor(v) for k, v in feature_columns(columns, "source_label").items()}
        if not labels or set(labels) != set(source):
            raise ValueError("the label columns are missing")
        return cls(
            **grid_from_metadata(meta),
            labels=at_edge(labels),
            source_labels=at_edge(source),
            source_ids=tensor(columns["source_id"])[0],
            n_per_time=int(meta["n_per_time"]),
            nfe=meta.get("nfe"),
            metadata=meta,
        )


@holds_outputs
def forward_reverse(
    model,
    x0,
    times,
    n_per_time: int = 1,
    feature="bayes",
    sampler: str | None = None,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
    out=None,
    cond: dict[str, Any] | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    n_steps: int | None = None,
    t_max: float | None = None,
    eta: float | None = None,
    feature_label: str | None = None,
    executor="local",
    ray_address: str | None = None,
    ray_timeout: float | None = None,
) -> ForwardReverseResult:
    """Noise ``x0`` to each OU time, denoise with the model's sampler, and read the feature.

    Parameters
    ----------
    model : a ``GaussianMixture`` / ``EmpiricalMixture`` (wrapped in
        :class:`~critwin.experiments.process.MixtureProcess` with ``sampler``, default ``"exact"``) or
        any :class:`~critwin.experiments.process.ReverseProcess` (then ``sampler`` is None or its own).
    x0 : (N, ...) samples in data space (encoded with ``process.encode`` before noising).
    times : (T,) OU times, each finite, >= 0 and within the process's range.
    n_per_time : replicates (fresh noise) per sample and time, >= 1.
    feature : callable ``f(x_data) -> (n,)`` integer labels or ``(n, C)`` probabilities, ``"bayes"``
        (a mixture's Bayes label at t = 0) or ``"component"``: the latent component, known exactly only
        with ``sampler="exact"`` (the posterior sampler draws it; other samplers raise ValueError). A
        source's own component is drawn from its exact posterior ``pi_0(. | x0)`` (for Dirac components:
        its atom), which gives the right joint law of (component, x0); ``agreement`` is then
        ``P(component kept)``. Or a mapping ``{name: feature}`` (not ``"component"``): every feature is
        read from the same outputs (one sweep; labels identical to single-feature runs with the same
        seed), and the result holds one label set per name (:meth:`ForwardReverseResult.select`).
    sampler : for mixtures, one of ``"exact"``, ``"ddpm"``, ``"ddim"``, ``"sde"``, ``"sde_exp"``, ``"heun"``.
    generator : source of the base seed when ``seed`` is None (same generator state, same result).
    seed : base seed; every unit's randomness derives from ``(seed, time index, chunk)``.
    out : checkpoint/result directory (resumable). Needs ``seed`` or ``generator``.
    cond : conditioning passed to ``process.run``; tensors with first dim N are per sample.
    chunk_size : samples per unit (default 512).
    progress : show a progress bar.
    n_steps, t_max, eta : grid and knobs of a mixture's sampler.
    feature_label : name recorded for the feature (default: its qualified name).
    executor : ``"local"`` (units run in this process), ``"ray"`` (units run as Ray tasks; needs
        ``critwin[ray]``) or an :class:`~critwin.experiments.executor.Executor`. Same seed, same table.
    ray_address : cluster to join with ``executor="ray"`` (default: start a local one).
    ray_timeout : seconds to wait for that cluster before a ValueError (default 30).

    Returns
    -------
    ForwardReverseResult

    Examples
    --------
    Samples of component 0 of two unit Gaussians at -4 and +4, noised to each time and denoised
    exactly: the share that comes back as component 0 falls from 1 towards 1/2.

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> x0, _ = mix.subset([0]).sample(200, generator=torch.Generator().manual_seed(0))
    >>> times = [0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
    >>> res = critwin.forward_reverse(
    ...     mix, x0, times, feature="component", sampler="exact", seed=0, progress=False
    ... )
    >>> res.agreement.tolist()
    [1.0, 0.995, 0.925, 0.79, 0.645, 0.565, 0.45]
    """
    runs_on = resolve_executor(executor, ray_address, ray_timeout)
    process = as_process(model, sampler, n_steps, t_max, eta)
    x0 = check_samples(x0, process)
    grid = realise_times(process, times)
    process = grid.process
    n_per_time = check_positive_int(n_per_time, "n_per_time")
    chunk = check_chunk_size(chunk_size, DEFAULT_CHUNK)
    cond = check_cond(cond)
    feature_fn = resolve_features(feature, process, latent=True)
    recorded = describe_features(feature, feature_fn, feature_label)
    check_resumable(out, seed, generator)
    base_seed = resolve_seed(seed, generator)

    z0 = check_model_shape(process.encode(x0), process)
    if feature_fn.latent:
        generator = unit_generator(base_seed, "source", device=z0.device)
        source_labels = {UNNAMED: source_components(process.mixture, z0, generator)}
    else:
        source_labels = split_labels(feature_fn, read_features(feature_fn, x0))
    T, M = grid.requested.numel(), x0.shape[0] * n_per_time
    check_sweep_memory(
        T * M * len(source_labels),
        T * -(-M // chunk),
        f"forward_reverse of {x0.shape[0]} sources with n_per_time={n_per_time} at {T} times",
    )
    # User-facing settings first: a refused resume names the first setting that differs.
    config = {
        "kind": "forward_reverse",
        "requested_times": grid.requested.tolist(),
        "n_per_time": n_per_time,
        "seed": base_seed,
        "feature": recorded,
        "n_samples": x0.shape[0],
        "chunk_size": chunk,
        "x0": fingerprint(x0),
        "cond": fingerprint(cond) if cond else None,
        "process": process.describe(),
        "realised_times": grid.times.tolist(),
    }
    store = SweepStore(out, config) if out is not None else None
    jobs = [
        (
            f"t{i:05d}_c{j:05d}",
            _Unit(i, j, int(grid.indices[i]), j * chunk, min(M, (j + 1) * chunk), n_per_time),
        )
        for i in range(T)
        for j in range(-(-M // chunk))
    ]
    shared = SweepSources(
        process=process, z0=z0, feature_fn=feature_fn, cond=cond, seed=base_seed, source_labels=source_labels
    )
    with runs_on.bind(shared, gpu=z0.is_cuda) as runner:
        with progress_bar(len(jobs), "forward-reverse", progress, store) as advance:
            units = run_units(runner, _run_unit, jobs, store, advance)
    result = _assemble(jobs, units, grid, source_labels, config, z0)
    if process.nfe is None:
        result.nfe = None
    if out is not None:
        result.save(out)
    return result


class SweepSources(NamedTuple):
    """What every unit of a sweep from source samples needs (shipped once to each Ray worker).

    Attributes
    ----------
    process : the ``ReverseProcess`` (its grid holds the sweep's times).
    z0 : (N, ...) encoded sources in model space.
    feature_fn : the resolved feature.
    cond : validated conditioning (per-sample tensors have first dim N).
    seed : the sweep's base seed.
    source_labels : ``{name: (N,)}`` long labels of the sources (their latent components for
        :data:`~critwin.experiments.features.LATENT`).
    """

    process: Any
    z0: torch.Tensor
    feature_fn: Any
    cond: dict[str, Any]
    seed: int
    source_labels: dict[str, torch.Tensor]


class _Unit(NamedTuple):
    """The arguments of one unit: requested time ``time`` (grid index ``index``), chunk ``chunk`` of
    the output columns ``lo:hi`` (column ``m`` is a replicate of source ``m // n_per_time``)."""

    time: int
    chunk: int
    index: int
    lo: int
    hi: int
    n_per_time: int


def _assemble(jobs, units, grid: RealisedTimes, source_labels, config, z0) -> ForwardReverseResult:
    """The result from every unit, in the canonical unit order (whatever order they completed in).

    ``grid`` holds the sweep's process and times; ``source_labels`` ``{name: (N,)}`` the sources'
    labels; the provenance records the device and dtype of ``z0``.
    """
    n_per_time = jobs[0][1].n_per_time
    requested = grid.requested
    names = list(source_labels)
    T, M = requested.numel(), source_labels[names[0]].numel() * n_per_time
    labels = {name: torch.empty(T, M, dtype=torch.long) for name in names}
    probabilities: dict = {}
    nfe = 0
    for unit_name, args in jobs:
        unit, columns = units[unit_name], slice(args.lo, args.hi)
        for name in names:
            labels[name][args.time, columns] = torch.from_numpy(unit[labelled("labels", name)])
            probs = unit.get(labelled("probs", name))
            if probs is not None:
                if name not in probabilities:
                    probabilities[name] = torch.zeros(T, M, probs.shape[1])
                probabilities[name][args.time, columns] = torch.from_numpy(probs)
        nfe += int(unit["nfe"])
    source_ids = torch.arange(M) // n_per_time
    expanded = {name: source_labels[name][source_ids].unsqueeze(0).expand(T, M).clone() for name in names}
    return ForwardReverseResult(
        requested_times=requested,
        times=grid.times,
        indices=grid.indices,
        steps=grid.steps,
        labels=at_edge(labels),
        source_labels=at_edge(expanded),
        source_ids=source_ids,
        probabilities=at_edge(probabilities),
        n_per_time=n_per_time,
        nfe=nfe,
        metadata=result_metadata(
            {
                "clock": clock_of(grid.process),
                **{k: v for k, v in config.items() if k not in ("requested_times", "realised_times")},
            },
            z0.device,
            getattr(grid.process, "dtype", z0.dtype),
        ),
    )


def noise_and_denoise(process, z0, rows, index: int, cond, generator) -> torch.Tensor:
    """Data-space outputs of the forward–reverse experiment for the encoded sources ``z0[rows]``.

    Noise them to grid index ``index`` and run the sampler from that same index to the end; at the last
    index (t = 0) they are returned as they are. Per-sample ``cond`` tensors (first dim ``len(z0)``)
    follow ``rows``.
    """
    x = z0[rows.to(z0.device)]
    if index < process.times.numel() - 1:
        x = process.add_noise(x, index, generator=generator)
        row_cond = select_cond(cond, rows, z0.shape[0]) or None
        x = process.run(x, start=index, generator=generator, cond=row_cond)
    return process.decode(x)


def source_components(mixture, z0, generator) -> torch.Tensor:
    """(N,) the component of each source, drawn from ``pi_0(. | x0)`` (the atom for Dirac components;
    a mixture without covariances, such as a ``CategoricalMixture``, draws it from its posterior)."""
    covs = getattr(mixture, "covs", None)
    if covs is not None and bool((torch.as_tensor(covs) == 0).all()):
        return mixture.bayes_label(z0).cpu()
    return mixture.sample_posterior(z0, 0.0, generator=generator)[1].cpu()


def run_exact_with_components(process, x, start, generator):
    """``process.run(x, start)`` for a mixture with ``sampler="exact"`` (the same draws), also returning
    the latent component of every output (the one its final exact transition drew)."""
    mixture, times = process.mixture, process.times
    process.nfe += int(x.shape[0])
    t, s = times[start].item(), times[-1].item()
    if s == 0.0:
        return mixture.sample_posterior(x, t, generator=generator)
    return mixture.sample_reverse(x, t, s, generator=generator)


def _run_latent_unit(process, z0, index, rows, source, generator):
    """Latent components of the outputs for the sources ``z0[rows]`` (at t = 0: the sources' own)."""
    if index >= process.times.numel() - 1:
        return source[rows]
    x = process.add_noise(z0[rows.to(z0.device)], index, generator=generator)
    return run_exact_with_components(process, x, index, generator)[1].cpu()


def feature_outputs(process, z0, feature_fn, rows, index: int, cond, generator) -> dict[str, np.ndarray]:
    """One unit's arrays: ``labels[name]`` (n,), ``probs[name]`` (n, C) if the feature gives them
    (named by :func:`~critwin.experiments.features.labelled`), and ``nfe``, for the forward–reverse
    outputs of the sources ``z0[rows]`` from grid index ``index``."""
    before = process.nfe
    unit = read_features(feature_fn, noise_and_denoise(process, z0, rows, index, cond, generator))
    unit["nfe"] = nfe_since(process, before)
    return unit


def _run_unit(shared: SweepSources, i, j, index, lo, hi, n_per_time):
    generator = unit_generator(shared.seed, "fr", i, j, device=shared.z0.device)
    rows = torch.arange(lo, hi) // n_per_time
    if shared.feature_fn.latent:
        before = shared.process.nfe
        [(name, source)] = shared.source_labels.items()
        labels = _run_latent_unit(shared.process, shared.z0, index, rows, source, generator)
        return {labelled("labels", name): labels.numpy(), "nfe": nfe_since(shared.process, before)}
    return feature_outputs(shared.process, shared.z0, shared.feature_fn, rows, index, shared.cond, generator)
