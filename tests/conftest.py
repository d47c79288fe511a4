import os

# Before torch is imported (OpenMP reads these once): one thread, no spin-waiting, in this process and
# in the CLI subprocesses the tests start (they inherit the environment). Same settings as the
# Makefile's QUIET_THREADS; the reason is in critwin/_threads.py.
for _name, _value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE")):
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores are shared by the whole suite: one intra-op thread per test process is fastest overall.
torch.set_num_threads(int(os.environ.get("CRITWIN_TEST_THREADS", "1")))


def _random_mixture(kind: str, K: int, d: int, seed: int, dtype=torch.float64, spread: float = 2.0):
    from critwin import GaussianMixture

    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(K, d, generator=g, dtype=dtype)
    weights = torch.rand(K, generator=g, dtype=dtype) + 0.2
    weights = weights / weights.sum()
    if kind == "iso":
        covs = torch.rand(K, generator=g, dtype=dtype) + 0.3
    elif kind == "diag":
        covs = torch.rand(K, d, generator=g, dtype=dtype) + 0.3
    else:
        A = torch.randn(K, d, d, generator=g, dtype=dtype)
        covs = A @ A.transpose(1, 2) / d + 0.3 * torch.eye(d, dtype=dtype)
    return GaussianMixture(means, covs, weights)


@pytest.fixture(scope="session")
def random_mixture():
    return _random_mixture
