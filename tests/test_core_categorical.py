"""CategoricalMixture against brute-force enumeration of every clean and noised string."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from categorical_oracle import codes, index_of, joint, position_kernel, step_kernel
from critwin import CategoricalMixture

LEVELS = {"mask": [0.0, 0.3, 1.0], "uniform": [0.0, 0.4, 1.0], "autoregressive": [0, 1, 3]}


def random_mixture(noise: str, seed: int = 0, K: int = 3, L: int = 3, V: int = 3) -> CategoricalMixture:
    """Random rows with some exact zeros (impossible tokens exercise the -inf paths)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(V), size=(K, L))
    probs[0, 0, 0] = 0.0
    probs[1, L - 1, :] = np.eye(V)[1]
    probs /= probs.sum(-1, keepdims=True)
    weights = rng.dirichlet(np.ones(K))
    return CategoricalMixture(torch.tensor(probs), torch.tensor(weights), noise=noise)


def five_se(p: np.ndarray, n: int) -> np.ndarray:
    """Five binomial standard errors of a frequency (plus rounding slack): a cell fails by chance with
    probability < 6e-7, so a test over ~100 cells fails by chance with probability < 1e-4."""
    return 5 * np.sqrt(p * (1 - p) / n) + 1e-9


CASES = [(noise, level) for noise, levels in LEVELS.items() for level in levels]


@pytest.mark.parametrize("noise,level", CASES)
def test_probabilities_and_posteriors_match_enumeration(noise, level):
    m = random_mixture(noise)
    xs, ys, P = joint(m, level)
    V, L = m.vocab_size, m.length
    # the noised strings the noise can write: no mask id under uniform noise; under autoregression the
    # mask id exactly on the hidden positions (the library ignores what they hold: tested below)
    hidden = np.arange(L) >= L - level if noise == "autoregressive" else np.zeros(L, bool)
    keep = (
        ((ys == V) == hidden).all(1)
        if noise == "autoregressive"
        else ~((ys == V).any(1) & (noise == "uniform"))
    )
    ys, P = ys[keep], P[:, :, keep]
    law = P.sum(1)  # (K, Y): w_k p_k(y)
    total = law.sum(0)
    y = torch.tensor(ys)
    with np.errstate(divide="ignore"):
        expected_component = np.log(law / m.weights.numpy()[:, None]).T
        expected_log = np.log(total)
    got_component = m.component_log_prob(y, level).numpy()
    finite = np.isfinite(expected_component)
    assert (np.isfinite(got_component) == finite).all()
    np.testing.assert_allclose(got_component[finite], expected_component[finite], rtol=1e-10, atol=1e-12)
    possible = total > 0
    np.testing.assert_allclose(
        m.log_prob(y, level).numpy()[possible], expected_log[possible], rtol=1e-10, atol=1e-12
    )
    post = m.posterior(y[possible], level).numpy()
    np.testing.assert_allclose(post, (law[:, possible] / total[possible]).T, atol=1e-12)
    # P(X_l = v | y) from the joint over clean strings
    marginal = m.denoise(y[possible], level).numpy()
    px_y = P.sum(0)[:, possible] / total[possible]  # (X, Y')
    for pos in range(m.length):
        for v in range(m.vocab_size):
            expected = px_y[xs[:, pos] == v].sum(0)
            np.testing.assert_allclose(marginal[:, pos, v], expected, atol=1e-12)


@pytest.mark.parametrize("noise,level", [("mask", 0.5), ("uniform", 0.6), ("autoregressive", 2)])
def test_sample_posterior_is_the_exact_posterior(noise, level):
    m = random_mixture(noise, seed=1)
    xs, ys, P = joint(m, level)
    law = P.sum((0, 1))
    y = ys[np.argsort(law)[-3]]  # a likely noised string, not the most likely
    n = 20000
    x0, labels = m.sample_posterior(torch.tensor(y).expand(n, -1), level, torch.Generator().manual_seed(3))
    exact = P[:, :, index_of(ys, y)] / law[index_of(ys, y)]  # (K, X): P(k, x | y)
    counts = np.zeros_like(exact)
    rows = codes(x0.numpy(), m.vocab_size)
    np.add.at(counts, (labels.numpy(), rows), 1)
    assert (np.abs(counts / n - exact) <= five_se(exact, n)).all()


@pytest.mark.parametrize(
    "noise,level,to_level", [("mask", 0.7, 0.3), ("uniform", 0.8, 0.3), ("autoregressive", 3, 1)]
)
def test_sample_reverse_is_the_exact_transition(noise, level, to_level):
    m = random_mixture(noise, seed=2)
    K, L, V = m.probs.shape
    xs, ys, P_s = joint(m, to_level)  # P_s[k, x, y_s]
    step = np.ones((len(ys), len(ys)))
    for pos in range(L):
        step *= step_kernel(noise, V, L, to_level, level, pos)[np.ix_(ys[:, pos], ys[:, pos])]
    # P(k, y_s, y_t) = sum_x P_s[k, x, y_s] P(y_t | y_s)
    chain = P_s.sum(1)[:, :, None] * step[None]
    law_t = chain.sum((0, 1))
    # the noised law at `level` is the same whether reached in one step or two
    np.testing.assert_allclose(law_t, joint(m, level)[2].sum((0, 1)), atol=1e-12)
    y_t = ys[np.argsort(law_t)[-1]]
    j = index_of(ys, y_t)
    exact = chain[:, :, j] / law_t[j]  # (K, Y): P(k, y_s | y_t)
    n = 20000
    y_s, labels = m.sample_reverse(
        torch.tensor(y_t).expand(n, -1), level, to_level, torch.Generator().manual_seed(4)
    )
    counts = np.zeros_like(exact)
    rows = codes(y_s.numpy(), V + 1)
    np.add.at(counts, (labels.numpy(), rows), 1)
    assert (np.abs(counts / n - exact) <= five_se(exact, n)).all()


@pytest.mark.parametrize("noise,level", [("mask", 0.4), ("uniform", 0.5), ("autoregressive", 2)])
def test_noise_tokens_and_sample_follow_the_laws(noise, level):
    m = random_mixture(noise, seed=3, K=2, L=2, V=3)
    K, L, V = m.probs.shape
    n = 20000
    g = torch.Generator().manual_seed(5)
    x, labels = m.sample(n, g)
    xs, ys, P = joint(m, level)
    exact_clean = P.sum(2)  # (K, X)
    counts = np.zeros_like(exact_clean)
    np.add.at(counts, (labels.numpy(), codes(x.numpy(), V)), 1)
    assert (np.abs(counts / n - exact_clean) <= five_se(exact_clean, n)).all()
    source = torch.tensor([[1, 2]]).expand(n, -1)
    y = m.noise_tokens(source, level, g)
    kernel = np.outer(*(position_kernel(noise, V, L, level, pos)[[1, 2][pos]] for pos in range(L))).ravel()
    freq = np.bincount(codes(y.numpy(), V + 1), minlength=(V + 1) ** L) / n
    assert (np.abs(freq - kernel) <= five_se(kernel, n)).all()


def test_same_seed_same_draws_and_dirac_strings():
    m = CategoricalMixture.from_strings([[0, 1, 2, 1], [2, 1, 0, 0]], [0.25, 0.75], vocab_size=3)
    assert m.is_dirac and m.strings.tolist() == [[0, 1, 2, 1], [2, 1, 0, 0]]
    assert m.clock == "kappa" and m.level_range == (0.0, 1.0) and m.mask_id == 3

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        x, _ = m.sample(50, g)
        y = m.noise_tokens(x, 0.6, g)
        return x, y, m.sample_reverse(y, 0.6, 0.2, g)[0], m.sample_posterior(y, 0.6, g)[0]

    for a, b in zip(draw(7), draw(7), strict=True):
        assert torch.equal(a, b)
    # a Dirac posterior sample agrees with y wherever y is visible, and is one of the strings
    _, y, _, x0 = draw(8)
    assert ((y == 3) | (x0 == y)).all()
    assert all(row in m.strings.tolist() for row in x0.tolist())
    ar = m.with_noise("autoregressive")
    assert ar.clock == "hidden" and ar.level_range == (0, 4)
    # the subset keeps the noise and renormalises
    assert m.subset([1]).weights.tolist() == [1.0]
    assert math.isclose(float(m.log_prob(torch.tensor([3, 3, 3, 3]), 1.0)), 0.0, abs_tol=1e-15)


def test_autoregressive_ignores_hidden_positions():
    m = random_mixture("autoregressive", seed=4)
    a = torch.tensor([[0, 1, 0]])
    b = torch.tensor([[0, 1, 3]])  # the mask id at the hidden position
    assert torch.equal(m.component_log_prob(a, 1), m.component_log_prob(b, 1))
    assert m.sample_reverse(b, 2, 1, torch.Generator().manual_seed(0))[0][0, 2] == 3


BAD = [
    (lambda: CategoricalMixture(torch.ones(2, 3, 4)), "probs"),
    (lambda: CategoricalMixture(torch.full((2, 3), 0.5)), "probs must have shape"),
    (lambda: CategoricalMixture(torch.full((2, 3, 2), 0.5), noise="gauss"), "noise must be one of"),
    (lambda: CategoricalMixture(torch.full((2, 3, 2), 0.5), weights=[1.0]), "weights"),
    (lambda: CategoricalMixture.from_strings([[0, 1]]), "vocab_size is required"),
    (lambda: CategoricalMixture.from_strings([[0, 5]], vocab_size=3), "strings must hold token ids"),
    (lambda: CategoricalMixture.from_strings([[0.0, 1.0]], vocab_size=3), "strings must be integer"),
    (lambda: CategoricalMixture.from_strings([0, 1], vocab_size=3), "strings must have shape"),
]


@pytest.mark.parametrize("make,match", BAD)
def test_bad_construction_names_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_calls_name_the_argument():
    m = CategoricalMixture.from_strings([[0, 1, 2], [2, 1, 0]], vocab_size=3)
    y = torch.tensor([[0, 3, 1]])
    with pytest.raises(
        ValueError, match=r"level \(kappa, the per-token masking probability\) must lie in \[0, 1\]"
    ):
        m.posterior(y, 1.5)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., L\) = \(\.\.\., 3\)"):
        m.posterior(torch.tensor([[0, 1]]), 0.5)
    with pytest.raises(ValueError, match="y holds token 4"):
        m.posterior(torch.tensor([[0, 4, 1]]), 0.5)
    with pytest.raises(ValueError, match="y must be integer token ids"):
        m.posterior(torch.tensor([[0.0, 1.0, 1.0]]), 0.5)
    with pytest.raises(ValueError, match="tokens holds token 3"):
        m.noise_tokens(torch.tensor([[0, 3, 1]]), 0.5)
    with pytest.raises(ValueError, match="probability 0"):
        m.posterior(torch.tensor([[1, 1, 1]]), 0.5)
    with pytest.raises(ValueError, match="to_level must be smaller than level"):
        m.sample_reverse(y, 0.3, 0.5)
    with pytest.raises(ValueError, match="uniform noise has no mask id"):
        m.with_noise("uniform").posterior(y, 0.5)
    ar = m.with_noise("autoregressive")
    with pytest.raises(ValueError, match=r"level must be an integer number of hidden positions in \[0, 3\]"):
        ar.posterior(torch.tensor([[0, 1, 2]]), 1.5)
    with pytest.raises(ValueError, match=r"to_level must be an integer number of hidden positions"):
        ar.sample_reverse(torch.tensor([[0, 1, 2]]), 2, 5)
    with pytest.raises(ValueError, match="the first 2 positions are visible"):
        ar.posterior(torch.tensor([[0, 3, 2]]), 1)
    with pytest.raises(ValueError, match="generator"):
        m.sample(3, generator=0)
