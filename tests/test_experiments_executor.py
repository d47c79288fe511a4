"""Sweeps on Ray: tables byte-identical to the local executor's, lost workers, killed drivers, inputs.

The reference of every Ray result is the same sweep run by the local executor (same seed): units are
seeded per unit, so where and in which order they run must not change a single byte of the table.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from critwin.clock import DiscreteSchedule
from critwin.experiments.checkpoint import CLAIM_FILE
from critwin.experiments.cloning import clone
from critwin.experiments.executor import LocalExecutor, RayExecutor, resolve_executor
from critwin.experiments.forward_reverse import forward_reverse
from critwin.experiments.process import DiscreteProcess
from critwin.experiments.search import SearchResult, search_window
from critwin.mixtures import GaussianMixture
from sweep_driver import N_UNITS, SCRIPT, kill_mid_sweep

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster (2 CPUs) for the module; workers import this test module (its features)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'critwin[ray]')")
    old = os.environ.get("PYTHONPATH")
    # Workers inherit the environment of the cluster started here: let them import this module.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), *([old] if old else [])])
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - any failure to start means "no Ray here"
        pytest.skip(f"Ray cannot start a local cluster here: {exc}")
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    yield ray
    ray.shutdown()


def two_gaussians() -> GaussianMixture:
    mu = torch.full((1, 2), 3.0 / math.sqrt(2), dtype=torch.float64)
    return GaussianMixture(torch.cat([mu, -mu]))


def discrete_process() -> DiscreteProcess:
    return DiscreteProcess(
        two_gaussians(), DiscreteSchedule.linear(), n_steps=12, sampler="ddpm", sample_shape=(2,)
    )


def diffusers_process():
    from diffusers import DDIMScheduler

    from critwin.adapters.diffusers import DiffusersProcess
    from tiny_models import tiny_unet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DiffusersProcess(tiny_unet(), DDIMScheduler(), 6)


def brightness(x: torch.Tensor) -> torch.Tensor:
    """A label of images (bright or dark): the feature of the tiny diffusers model."""
    return (x.flatten(1).mean(1) > 0).long()


def sources(kind: str, n: int = 10) -> torch.Tensor:
    if kind == "diffusers":
        return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x0 = two_gaussians().subset([0]).sample(n, generator=torch.Generator().manual_seed(1))[0]
    return x0 if kind in ("mixture", "latent") else x0.float()


def model_and_feature(kind: str):
    if kind == "mixture":
        mixture = two_gaussians()
        return mixture, mixture.bayes_label, {"sampler": "sde", "n_steps": 8}
    if kind == "latent":  # the component drawn by the exact sampler: a marker object crosses to workers
        return two_gaussians(), "component", {"sampler": "exact"}
    if kind == "discrete":
        return discrete_process(), two_gaussians().bayes_label, {}
    return diffusers_process(), brightness, {}


def saved(directory: Path) -> dict[str, bytes]:
    """Every file of a sweep directory, by relative path (units included), but the claim file (it names
    the writer's pid); ``metadata.json`` without its provenance (UTC time and call differ by design)."""
    paths = [p for p in sorted(directory.rglob("*")) if p.is_file() and p.name != CLAIM_FILE]
    files = {str(p.relative_to(directory)): p.read_bytes() for p in paths}
    if "metadata.json" in files:
        files["metadata.json"] = json.dumps(_without_provenance(json.loads(files["metadata.json"]))).encode()
    return files


def _without_provenance(obj):
    if isinstance(obj, dict):
        return {k: _without_provenance(v) for k, v in obj.items() if k != "provenance"}
    return obj


# ------------------------------------------------------------------------------------------- inputs
def test_executor_must_be_local_or_ray():
    mixture = two_gaussians()
    x0 = sources("mixture")
    with pytest.raises(ValueError, match="executor must be one of 'local', 'ray'"):
        forward_reverse(mixture, x0, [1.0], seed=0, progress=False, executor="dask")
    with pytest.raises(ValueError, match="ray_address is only used with executor='ray'"):
        clone(mixture, 4, [1.0], 2, seed=0, progress=False, ray_address="auto")
    with pytest.raises(ValueError, match="ray_address: pass the address to the RayExecutor"):
        search_window(mixture, x0, seed=0, progress=False, executor=LocalExecutor(), ray_address="auto")
    assert isinstance(resolve_executor("local"), LocalExecutor)


def test_ray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if not installed
    with pytest.raises(ValueError, match=r"executor='ray' needs Ray.*pip install 'critwin\[ray\]'"):
        forward_reverse(two_gaussians(), sources("mixture"), [1.0], seed=0, progress=False, executor="ray")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"max_retries": -1}, "max_retries"), ({"num_cpus": 0}, "num_cpus"), ({"address": 5}, "ray_address")],
)
def test_ray_executor_arguments(kwargs, message):
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match=message):
        RayExecutor(**kwargs)


def test_a_cuda_model_needs_a_cluster_with_gpus(ray_cluster):
    # The module's cluster has CPUs only: GPU tasks would never be scheduled.
    with pytest.raises(ValueError, match="has no GPU"):
        with RayExecutor().bind(None, gpu=True):
            pass


# ------------------------------------------------------------------------------ identical to local
@pytest.mark.parametrize("kind", ["mixture", "latent", "discrete", "diffusers"])
def test_forward_reverse_on_ray_equals_local(ray_cluster, kind, tmp_path):
    model, feature, knobs = model_and_feature(kind)
    args = dict(
        n_per_time=3, feature=feature, seed=5, chunk_size=7, progress=False, feature_label="f", **knobs
    )
    x0 = sources(kind)
    local = forward_reverse(model, x0, [0.1, 0.8, 2.0], out=tmp_path / "local", **args)
    ray = forward_reverse(model, x0, [0.1, 0.8, 2.0], out=tmp_path / "ray", executor="ray", **args)
    assert saved(tmp_path / "ray") == saved(tmp_path / "local")  # table, metadata and every unit
    assert len(list((tmp_path / "ray" / "units").glob("*.npz"))) == 3 * 5  # 30 samples, 7 per unit
    assert torch.equal(ray.labels, local.labels) and ray.nfe == local.nfe


@pytest.mark.parametrize("kind", ["mixture", "latent", "discrete", "diffusers"])
def test_clone_on_ray_equals_local(ray_cluster, kind, tmp_path):
    model, feature, knobs = model_and_feature(kind)
    args = dict(feature=feature, seed=6, chunk_size=3, progress=False, feature_label="f", **knobs)
    local = clone(model, 8, [0.3, 1.0, 1.0], 2, out=tmp_path / "local", **args)
    ray = clone(model, 8, [0.3, 1.0, 1.0], 2, out=tmp_path / "ray", executor="ray", **args)
    assert saved(tmp_path / "ray") == saved(tmp_path / "local")
    assert torch.equal(ray.clone_labels, local.clone_labels) and ray.nfe == local.nfe


@pytest.mark.parametrize("kind", ["mixture", "discrete"])
def test_search_window_on_ray_equals_local(ray_cluster, kind, tmp_path):
    model, feature, knobs = model_and_feature(kind)
    args = dict(feature=feature, seed=7, resolution=0.1, batch=8, max_per_probe=48, progress=False, **knobs)
    local = search_window(model, sources(kind, 16), **args)
    ray = search_window(model, sources(kind, 16), executor="ray", **args)
    local.save(tmp_path / "local")
    ray.save(tmp_path / "ray")
    assert saved(tmp_path / "ray") == saved(tmp_path / "local")
    assert ray.nfe == local.nfe  # batches drawn ahead and not used are not counted
    assert SearchResult.load(tmp_path / "ray").probes == local.probes


# --------------------------------------------------------------------------------------- failures
class DiesOnce:
    """The Bayes label, but the first call in a Ray worker kills that worker's process (marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker
        self.driver = os.getpid()
        self.mixture = two_gaussians()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.driver and not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # a worker lost mid-unit, as on a preempted node
        return self.mixture.bayes_label(x)


def test_a_lost_worker_is_replaced_and_nothing_is_lost(ray_cluster, tmp_path):
    mixture, x0 = two_gaussians(), sources("mixture")
    marker = tmp_path / "died"
    args = dict(n_per_time=2, feature=DiesOnce(marker), seed=8, chunk_size=5, progress=False)
    args.update(feature_label="bayes", sampler="sde", n_steps=6)
    ray = forward_reverse(mixture, x0, [0.2, 1.0], out=tmp_path / "ray", executor="ray", **args)
    local = forward_reverse(mixture, x0, [0.2, 1.0], out=tmp_path / "local", **args)
    assert marker.exists()  # a worker did die
    assert saved(tmp_path / "ray") == saved(tmp_path / "local")
    assert torch.equal(ray.labels, local.labels)


def worker_settings(shared) -> dict:
    """A unit that reports how its worker runs: MKL's reproducibility setting and whether oneDNN is on."""
    import numpy as np

    return {
        "mkl_cbwr": np.array(os.environ.get("MKL_CBWR", "")),
        "reproducible": np.array(os.environ.get("CRITWIN_REPRODUCIBLE", "")),
        "mkldnn": np.array(torch.backends.mkldnn.enabled),
    }


def test_ray_workers_apply_the_drivers_reproducible_setting(ray_cluster, monkeypatch):
    def settings() -> dict:
        with RayExecutor().bind(None) as runner:
            (_, unit), *_ = list(runner.map_unordered(worker_settings, [("u", ())]))
        return {name: value.item() for name, value in unit.items()}

    monkeypatch.delenv("CRITWIN_REPRODUCIBLE", raising=False)
    monkeypatch.delenv("MKL_CBWR", raising=False)
    default = settings()
    assert default["mkldnn"] is True and default["reproducible"] in ("", "0")
    monkeypatch.setenv("CRITWIN_REPRODUCIBLE", "1")
    # the cluster was started without it: the driver's setting reaches workers started for these tasks
    assert settings() == {"mkl_cbwr": "AUTO,STRICT", "reproducible": "1", "mkldnn": False}


@pytest.mark.slow
def test_a_killed_ray_driver_resumes_with_nothing_lost_or_duplicated(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'critwin[ray]')")
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT)
    out = tmp_path / "killed"
    # The driver and the cluster it started die together (a killed machine, not a clean exit).
    done = kill_mid_sweep(script, out, "ray")
    assert 3 <= done < N_UNITS and not (out / "table.csv").exists()  # killed mid-sweep
    subprocess.run([sys.executable, str(script), str(out), "ray"], check=True)
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(script), str(reference), "local"], check=True)
    assert saved(out) == saved(reference)  # same table, and exactly the 18 units: none lost or duplicated


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_sweep_on_ray_writes_the_local_table(ray_cluster, tmp_path):
    """``critwin sweep --executor ray`` on the shipped digits model: the same table as the local run."""
    from critwin.cli import main

    def sweep(out, *extra):
        argv = ["sweep", "--model", "digits", "--steps", "4", "--n", "3", "--times", "0.3,1.5"]
        with pytest.raises(SystemExit) as done:
            main([*argv, "--seed", "2", "--no-progress", "--out", str(out), *extra])
        assert done.value.code == 0
        return (out / "table.csv").read_bytes()

    assert sweep(tmp_path / "ray", "--executor", "ray") == sweep(tmp_path / "local")
