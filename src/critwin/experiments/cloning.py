"""The cloning (branching) experiment (docs/theory.md §5).

Call shape::

    result = clone(process_or_mixture, n_trajectories, times, n_clones, feature,
                   sampler=None, generator=None, seed=None, out=DIR, cond=None)

Generate ``n_trajectories`` trajectories from the prior; at every fork time (an OU time, realised on
the process's grid) fork ``n_clones`` continuations with fresh noise and run them to the end; record
whether each continuation's final feature equals its trajectory's own final feature. The trunk is
simulated once: one pass from the prior through all fork points serves every fork.

With ``out=DIR`` the trunk of every chunk (its states at the fork points and final labels) and every
(fork, chunk) unit of continuations are written atomically; a rerun resumes with identical results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from critwin._display import Table
from critwin._files import fingerprint
from critwin._validation import check_float_dtype, check_positive_int
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
    FeatureSet,
    describe_features,
    feature_names,
    labelled,
    read_features,
    resolve_features,
)
from critwin.experiments.forward_reverse import run_exact_with_components
from critwin.experiments.process import (
    as_process,
    check_cond,
    check_prior_memory,
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

__all__ = ["clone", "CloneResult"]

DEFAULT_CHUNK = 256


@dataclass(repr=False)
class CloneResult(FeatureLabels, ResultTable):
    """Outcome of a cloning sweep.

    Attributes
    ----------
    requested_times : (T,) float64 fork times asked for (on the process's clock: ``metadata["clock"]``).
    times : (T,) float64 realised fork times (grid points).
    indices : (T,) long grid indices of the forks.
    steps : (T,) long model step labels or None.
    own_labels : (N,) long final feature label of every trajectory.
    clone_labels : (T, N, n_clones) long final labels of the continuations.
    nfe : per-sample denoiser evaluations of the whole sweep (trunks + continuations), or None.
    metadata : provenance.

    With several features (``feature={name: f, ...}``) ``own_labels`` and ``clone_labels`` are
    ``{name: tensor}`` (all read from the same trajectories and continuations); :meth:`select` gives one
    feature's result and the table has ``label[name]``/``source_label[name]`` columns.

    Examples
    --------
    What :func:`critwin.clone` returns: the final label of every trajectory and of each of its
    continuations from every fork time.

    >>> import torch, critwin
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> process = critwin.MixtureProcess(mix, "exact", times=torch.linspace(4.0, 0.0, 41).tolist())
    >>> res = critwin.clone(process, 50, [0.5, 3.0], 4, seed=0, progress=False)
    >>> tuple(res.own_labels.shape), tuple(res.clone_labels.shape), res.n_clones
    ((50,), (2, 50, 4), 4)
    >>> bool((res.kept().double().mean(1) == res.agreement).all()), res.agreement.tolist()
    (True, [0.955, 0.495])
    """

    requested_times: torch.Tensor
    times: torch.Tensor
    indices: torch.Tensor
    steps: torch.Tensor | None
    own_labels: torch.Tensor | dict[str, torch.Tensor]
    clone_labels: torch.Tensor | dict[str, torch.Tensor]
    nfe: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str] = "clone"
    _label_fields: ClassVar[tuple[str, ...]] = ("own_labels", "clone_labels")

    @property
    def n_clones(self) -> int:
        return int(self._first("clone_labels").shape[2])

    @property
    def agreement(self) -> torch.Tensor:
        """(T,) fraction of continuations whose final feature equals their trajectory's own."""
        self._single("agreement")
        return (self.clone_labels == self.own_labels.view(1, -1, 1)).double().mean((1, 2))

    def kept(self) -> torch.Tensor:
        """(T, N * n_clones) bool agreement of every continuation (trajectory-major columns)."""
        self._single("kept()")
        T = self.clone_labels.shape[0]
        return (self.clone_labels == self.own_labels.view(1, -1, 1)).reshape(T, -1)

    @property
    def source_ids(self) -> torch.Tensor:
        """(N * n_clones,) trajectory of every column of :meth:`kept`."""
        return torch.arange(self._first("own_labels").numel()).repeat_interleave(self.n_clones)

    def summary(self) -> dict[str, Any]:
        out = {
            "clock": self.metadata.get("clock", "ou"),
            "times": int(self.times.numel()),
            "trajectories": int(self._first("own_labels").numel()),
            "n_clones": self.n_clones,
        }
        return {**out, **self._feature_summary(), "nfe": self.nfe}

    def table(self) -> dict[str, list]:
        """Columns, one row per continuation, named as the forward–reverse table's
        (:data:`~critwin.experiments.results.SHARED_COLUMNS`): t, requested_t, step, index, source_id
        (the trajectory), replicate (the continuation), label, source_label (the trajectory's own label).
        Tables saved before these names (trajectory, clone, own_label) still load. Several features:
        ``label[name]``, ``source_label[name]`` per feature."""
        T, N, C = self._first("clone_labels").shape
        t_rep = np.repeat(np.arange(T), N * C)
        traj = np.tile(np.repeat(np.arange(N), C), T)
        columns = {
            **grid_columns(self, t_rep),
            "source_id": traj.tolist(),
            "replicate": np.tile(np.arange(C), T * N).tolist(),
        }
        labels = self._label_columns(("label", "clone_labels", None), ("source_label", "own_labels", traj))
        return Table({**columns, **labels})

    def _saved_metadata(self) -> dict[str, Any]:
        meta = dict(self.metadata)
        meta.update(
            n_trajectories=int(self._first("own_labels").numel()),
            n_clones=self.n_clones,
            nfe=self.nfe,
            **grid_metadata(self.requested_times, self.times, self.indices, self.steps),
        )
        return meta

    @classmethod
    def _from_saved(cls, columns, meta) -> CloneResult:
        T, N, C = len(meta["times"]), int(meta["n_trajectories"]), int(meta["n_clones"])

        def tensor(values):
            return torch.tensor([int(v) for v in values], dtype=torch.long).reshape(T, N, C)

        if "own_label" in columns and "source_label" not in columns:
            # "own_label" is the column's name in tables saved before the shared names.
            columns = {**columns, "source_label": columns["own_label"]}
        labels = {k: tensor(v) for k, v in feature_columns(columns, "label").items()}
        own = {k: tensor(v)[0, :, 0] for k, v in feature_columns(columns, "source_label").items()}
        if not labels or set(labels) != set(own):
            raise ValueError("the label columns are missing")
        return cls(
            **grid_from_metadata(meta),
            own_labels=at_edge(own),
            clone_labels=at_edge(labels),
            nfe=meta.get("nfe"),
            metadata=meta,
        )


@holds_outputs
def clone(
    model,
    n_trajectories: int,
    times,
    n_clones: int,
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
    dtype: torch.dtype | None = None,
    executor="local",
    ray_address: str | None = None,
    ray_timeout: float | None = None,
) -> CloneResult:
    """Fork trajectories at OU times and measure agreement with their own final feature.

    Parameters
    ----------
    model : mixture (wrapped with ``sampler``, default ``"exact"``) or a ``ReverseProcess``.
    n_trajectories : number of trunks N (>= 1).
    times : (T,) fork OU times (> 0 and within the process's range; realised on its grid).
    n_clones : continuations per trajectory and fork (>= 1).
    feature : callable ``f(x_data) -> (n,)`` labels / ``(n, C)`` probabilities, ``"bayes"`` (Bayes label
        of the output) or ``"component"`` (the latent component drawn by ``sampler="exact"``; other
        samplers raise ValueError); or a mapping ``{name: feature}`` read from the same trajectories
        and continuations (as in :func:`~critwin.experiments.forward_reverse.forward_reverse`).
    sampler, generator, seed, out, cond, chunk_size, progress, n_steps, t_max, eta, feature_label :
        as in :func:`~critwin.experiments.forward_reverse.forward_reverse`; ``chunk_size`` counts
        trajectories per unit; per-sample ``cond`` tensors have first dim ``n_trajectories``.
    dtype : dtype of the prior draw (default float64 for mixtures, float32 otherwise).
    executor, ray_address, ray_timeout : where the units run, as in
        :func:`~critwin.experiments.forward_reverse.forward_reverse`. Trunks and their forks run in
        waves of as many chunks as the executor runs at once, so only those chunks' trunk states are
        held in memory.

    Returns
    -------
    CloneResult

    Examples
    --------
    Fifty trajectories of two unit Gaussians at -4 and +4, each forked at three times into four fresh
    continuations: early forks (small ``t``) keep the trajectory's component, late ones are near 1/2.

    >>> import torch, critwin
    >>> from critwin.experiments.process import MixtureProcess
    >>> mix = critwin.GaussianMixture(torch.tensor([[-4.0], [4.0]], dtype=torch.float64))
    >>> process = MixtureProcess(mix, "exact", times=torch.linspace(4.0, 0.0, 41).tolist())
    >>> res = critwin.clone(process, 50, [0.5, 1.5, 3.0], 4, seed=0, progress=False)
    >>> res.agreement.tolist()
    [0.98, 0.685, 0.525]
    """
    runs_on = resolve_executor(executor, ray_address, ray_timeout)
    dtype = None if dtype is None else check_float_dtype(dtype)
    process = as_process(model, sampler, n_steps, t_max, eta)
    n_trajectories = check_positive_int(n_trajectories, "n_trajectories")
    n_clones = check_positive_int(n_clones, "n_clones")
    grid = realise_times(process, times)
    process = grid.process
    if (grid.requested <= 0).any():
        raise ValueError("times must be > 0: a fork at t = 0 is the finished sample")
    chunk = check_chunk_size(chunk_size, DEFAULT_CHUNK)
    cond = check_cond(cond)
    feature_fn = resolve_features(feature, process, latent=True)
    recorded = describe_features(feature, feature_fn, feature_label)
    check_resumable(out, seed, generator)
    base_seed = resolve_seed(seed, generator)
    mixture = getattr(process, "mixture", None)
    if dtype is None:
        dtype = mixture.dtype if mixture is not None and hasattr(mixture, "dtype") else torch.float32
    device = getattr(mixture, "device", None) or getattr(process, "device", None) or torch.device("cpu")

    # User-facing settings first: a refused resume names the first setting that differs.
    config = {
        "kind": "clone",
        "requested_times": grid.requested.tolist(),
        "n_trajectories": n_trajectories,
        "n_clones": n_clones,
        "seed": base_seed,
        "feature": recorded,
        "chunk_size": chunk,
        "dtype": str(dtype),
        "cond": fingerprint(cond) if cond else None,
        "process": process.describe(),
        "realised_times": grid.times.tolist(),
    }
    store = SweepStore(out, config) if out is not None else None
    # The trunk visits forks in the order of the reverse process (decreasing time).
    forks = sorted(set(grid.indices.tolist()))
    # a unit's clones at once, and the labels of every trunk and clone (per fork, then per time)
    per_unit = min(chunk, n_trajectories)
    check_prior_memory(
        per_unit * n_clones,
        process.sample_shape,
        f"a unit of {per_unit} trajectories x n_clones={n_clones} states",
    )
    check_sweep_memory(
        n_trajectories * (1 + (len(forks) + grid.requested.numel()) * n_clones),
        -(-n_trajectories // chunk),
        f"clone of n_trajectories={n_trajectories} with n_clones={n_clones} at {len(grid.requested)} times",
    )
    shared = _Trunks(
        process=process,
        feature_fn=feature_fn,
        cond=cond,
        seed=base_seed,
        n_trajectories=n_trajectories,
        n_clones=n_clones,
        forks=forks,
        dtype=dtype,
        device=device,
    )
    own, by_fork, nfe = _run_all(runs_on, shared, chunk, store, progress)
    result = CloneResult(
        requested_times=grid.requested,
        times=grid.times,
        indices=grid.indices,
        steps=grid.steps,
        own_labels=at_edge(own),
        clone_labels=at_edge(_by_time(by_fork, [forks.index(int(k)) for k in grid.indices])),
        nfe=nfe if process.nfe is not None else None,
        metadata=result_metadata(
            {
                "clock": clock_of(process),
                **{k: v for k, v in config.items() if k not in ("requested_times", "realised_times")},
            },
            device,
            dtype,
        ),
    )
    if out is not None:
        result.save(out)
    return result


class _Trunks(NamedTuple):
    """What every unit of a cloning sweep needs (shipped once to each Ray worker)."""

    process: Any
    feature_fn: Any
    cond: dict[str, Any]
    seed: int
    n_trajectories: int
    n_clones: int
    forks: list[int]  # increasing grid indices of the distinct fork points
    dtype: torch.dtype
    device: Any


class _Chunk(NamedTuple):
    """Chunk ``number`` of the trajectories: ``lo:hi`` (the arguments of its trunk unit)."""

    number: int
    lo: int
    hi: int


class _Fork(NamedTuple):
    """The arguments of a fork unit: the continuations of chunk ``number`` (trajectories ``lo:hi``)
    from the distinct fork ``fork``, whose trunk ``state`` is a CPU array."""

    fork: int
    number: int
    lo: int
    hi: int
    state: np.ndarray


def _run_all(runs_on, shared: _Trunks, chunk: int, store, progress: bool):
    """Every trunk and fork: own labels ``{name: (N,)}``, labels by distinct fork ``{name: (F, N,
    n_clones)}``, NFEs spent."""
    N, F = shared.n_trajectories, len(shared.forks)
    names = feature_names(shared.feature_fn)
    own = {name: torch.empty(N, dtype=torch.long) for name in names}
    by_fork = {name: torch.empty(F, N, shared.n_clones, dtype=torch.long) for name in names}
    n_chunks = -(-N // chunk)
    nfe = 0
    with runs_on.bind(shared, gpu=torch.device(shared.device).type == "cuda") as runner:
        with progress_bar(n_chunks * (1 + F), "cloning", progress, store) as advance:
            for first in range(0, n_chunks, runner.parallelism):
                wave = range(first, min(n_chunks, first + runner.parallelism))
                chunks = [_Chunk(j, j * chunk, min(N, (j + 1) * chunk)) for j in wave]
                nfe += _run_wave(runner, chunks, shared, store, advance, own, by_fork)
    return own, by_fork, nfe


def _by_time(by_fork: dict[str, torch.Tensor], positions) -> dict[str, torch.Tensor]:
    """Labels by requested fork time ``{name: (T, N, n_clones)}`` from labels by distinct fork."""
    return {name: labels[positions] for name, labels in by_fork.items()}


def _run_wave(runner, chunks: list[_Chunk], shared: _Trunks, store, advance, own, by_fork) -> int:
    """Run the trunks of ``chunks``, then all their forks; fill ``own`` ``{name: (N,)}`` and
    ``by_fork`` ``{name: (F, N, n_clones)}`` and return the NFEs spent."""
    trunk_jobs = [(f"trunk_c{c.number:05d}", c) for c in chunks]
    trunks = run_units(runner, _run_trunk, trunk_jobs, store, advance)
    fork_jobs = [
        (f"fork{f:05d}_c{c.number:05d}", _Fork(f, *c, trunks[f"trunk_c{c.number:05d}"]["states"][f]))
        for c in chunks
        for f in range(len(shared.forks))
    ]
    units = run_units(runner, _run_fork, fork_jobs, store, advance)
    for name in own:
        key = labelled("labels", name)
        for unit_name, c in trunk_jobs:
            own[name][c.lo : c.hi] = torch.from_numpy(trunks[unit_name][key])
        for unit_name, job in fork_jobs:
            labels = units[unit_name][key].reshape(job.hi - job.lo, shared.n_clones)
            by_fork[name][job.fork, job.lo : job.hi] = torch.from_numpy(labels)
    return sum(int(unit["nfe"]) for unit in [*trunks.values(), *units.values()])


def _chunk_cond(shared, lo, hi):
    return select_cond(shared.cond, torch.arange(lo, hi), shared.n_trajectories) or None


def _run_trunk(shared: _Trunks, j, lo, hi):
    """One pass of the trajectories ``lo:hi`` from the prior through every fork index to the end."""
    process, cond = shared.process, _chunk_cond(shared, lo, hi)
    generator = unit_generator(shared.seed, "trunk", j, device=shared.device)
    before = process.nfe
    x = process.prior(hi - lo, generator=generator, device=shared.device, dtype=shared.dtype)
    states = []
    position = 0
    for index in shared.forks:
        x = process.run(x, start=position, stop=index, generator=generator, cond=cond)
        states.append(x.detach().cpu().numpy())
        position = index
    unit = _final_labels(process, x, position, shared.feature_fn, cond, generator)
    return {"states": np.stack(states), **unit, "nfe": nfe_since(process, before)}


def _run_fork(shared: _Trunks, f, j, lo, hi, state):
    """``n_clones`` continuations of every trunk state (a CPU array) from the fork ``f``."""
    process, n_clones = shared.process, shared.n_clones
    generator = unit_generator(shared.seed, "fork", f, j, device=shared.device)
    before = process.nfe
    x = torch.from_numpy(state).to(device=generator.device).repeat_interleave(n_clones, dim=0)
    cond = _chunk_cond(shared, lo, hi)
    if cond:
        cond = select_cond(cond, torch.arange(hi - lo).repeat_interleave(n_clones), hi - lo)
    unit = _final_labels(process, x, shared.forks[f], shared.feature_fn, cond or None, generator)
    return {**unit, "nfe": nfe_since(process, before)}


def _final_labels(process, x, start, feature_fn: FeatureSet, cond, generator) -> dict[str, np.ndarray]:
    """Run from grid index ``start`` to the end and read the features: ``labels[name]`` (named by
    :func:`~critwin.experiments.features.labelled`; the latent component with the exact sampler)."""
    if feature_fn.latent:
        [name] = feature_fn.names
        components = run_exact_with_components(process, x, start, generator)[1]
        return {labelled("labels", name): components.cpu().numpy()}
    x = process.run(x, start=start, generator=generator, cond=cond)
    unit = read_features(feature_fn, process.decode(x))
    return {key: value for key, value in unit.items() if key.startswith("labels")}
