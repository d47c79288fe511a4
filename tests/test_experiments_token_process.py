"""Token processes on discrete clocks: masked diffusion, autoregression and the exact categorical engine.

References are exact: the theory's TV by enumeration, the exact expected commitment curve (enumerated
masking patterns), closed-form reveal probabilities and posteriors of small mixtures. Monte Carlo
tolerances are 4 binomial standard errors (one source per column, so columns are independent draws;
a test with fixed seeds fails with probability < 1e-4 per comparison if the code is right).
"""

from __future__ import annotations

import math

import pytest
import torch

from critwin.diagnostics.text_windows import exact_commitment_curves
from critwin.experiments import (
    AutoregressiveProcess,
    CategoricalProcess,
    MaskedDiffusionProcess,
    MixtureProcess,
    estimate_window,
)
from critwin.experiments.cloning import clone
from critwin.experiments.forward_reverse import ForwardReverseResult, forward_reverse
from critwin.experiments.search import search_window
from critwin.mixtures import CategoricalMixture, GaussianMixture
from critwin.models.text import RandomHierarchy, TokenTransformer
from critwin.theory.discrete import categorical_tv


def four_sigma(p: float, n: int) -> float:
    return 4 * math.sqrt(max(p * (1 - p), 1e-4) / n)


def small_grammar() -> RandomHierarchy:
    return RandomHierarchy(n_classes=2, vocab_size=4, n_rules=2, branching=2, depth=2, seed=3)


# ------------------------------------------------------------------- the exact engine against exact laws
def test_exact_engine_forward_reverse_follows_the_exact_tv_of_two_strings():
    # Two equal-weight Dirac strings: an output keeps its source's string with probability
    # 1/2 + TV/2 (the differing positions are either all hidden, posterior 1/2, or one is shown).
    strings = torch.tensor([[0, 1, 1, 0, 1], [1, 0, 0, 0, 1]])
    mixture = CategoricalMixture.from_strings(strings, vocab_size=2)
    process = CategoricalProcess(mixture, n_steps=8)
    x0 = strings.repeat(1500, 1)
    levels = [0.25, 0.5, 0.75, 0.9]
    fr = forward_reverse(process, x0, levels, feature=lambda x: x[:, 0], seed=1, progress=False)
    for i, kappa in enumerate(levels):
        tv = categorical_tv(mixture.subset([0]), mixture.subset([1]), kappa).value
        assert tv == pytest.approx(1 - kappa**3, abs=1e-12)
        expected = 0.5 + 0.5 * tv
        assert abs(fr.agreement[i].item() - expected) < four_sigma(expected, x0.shape[0])


@pytest.mark.parametrize("noise", ["mask", "autoregressive"])
def test_exact_engine_forward_reverse_and_cloning_match_the_exact_curves(noise):
    grammar = small_grammar()
    mixture = grammar.mixture(noise)
    levels = [0.3, 0.6, 0.85] if noise == "mask" else [1.0, 2.0, 3.0]
    exact = exact_commitment_curves(mixture, grammar.partitions(), levels)
    process = CategoricalProcess(mixture) if noise == "autoregressive" else CategoricalProcess(mixture, 20)
    n = 3000
    x0, _ = grammar.sample(n, torch.Generator().manual_seed(0))
    fr = forward_reverse(process, x0, levels, feature=grammar.features(), seed=2, progress=False)
    # Cloning from an exact trunk: two independent posterior draws agree with the same probability.
    cl = clone(process, n, levels, 1, feature=grammar.features(), seed=3, progress=False)
    for name, curve in exact.items():
        for result in (fr, cl):
            measured = result.select(name).agreement.numpy()
            for i, c in enumerate(curve.c):
                assert abs(measured[i] - c) < four_sigma(c, n), (name, levels[i], measured[i], c)
    assert fr.metadata["clock"] == cl.metadata["clock"] == process.clock


def test_exact_commitment_curve_is_brute_force_enumeration():
    # Direct enumeration of (source, pattern, output) for a 3-string mixture with unequal weights.
    strings = torch.tensor([[0, 1, 2], [0, 2, 2], [1, 1, 0]])
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    mixture = CategoricalMixture.from_strings(strings, weights, vocab_size=3)
    labels = torch.tensor([0, 0, 1])
    kappa = 0.37
    expected = 0.0
    for k in range(3):
        for bits in range(8):
            hidden = [(bits >> j) & 1 == 1 for j in range(3)]
            p = math.prod(kappa if h else 1 - kappa for h in hidden)
            seen = [j for j in range(3) if not hidden[j]]
            fits = [i for i in range(3) if all(strings[i, j] == strings[k, j] for j in seen)]
            same = sum(weights[i] for i in fits if labels[i] == labels[k]) / sum(weights[i] for i in fits)
            expected += weights[k] * p * same
    curve = exact_commitment_curves(mixture, {"a": labels}, [kappa])["a"]
    assert curve.c[0] == pytest.approx(float(expected), abs=1e-12)
    assert curve.b == pytest.approx(0.8**2 + 0.2**2)


# -------------------------------------------------------------------------------------- masked diffusion
def fixed_logits(probs: torch.Tensor):
    """A 'model' whose prediction ignores its input: every position drawn from ``probs`` (L, V)."""

    def model(x):
        return torch.log(probs).expand(x.shape[0], -1, -1)

    return model


@pytest.mark.parametrize("sampler", ["ancestral", "first-hitting"])
def test_masked_sampler_reveals_at_the_right_rate_and_draws_from_the_softmax(sampler):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    process = MaskedDiffusionProcess(fixed_logits(probs), 2, 3, times=[1.0, 0.4, 0.0], sampler=sampler)
    g = torch.Generator().manual_seed(0)
    n = 4000
    half = process.run(process.prior(n), start=0, stop=1, generator=g)
    # kappa 1 -> 0.4: a token stays masked with probability 0.4 / 1.
    assert abs((half == 3).double().mean().item() - 0.4) < four_sigma(0.4, 2 * n)
    out = process.run(half, start=1, generator=g)
    for position in range(2):
        freq = torch.bincount(out[:, position], minlength=3).double() / n
        for v in range(3):
            assert abs(freq[v] - probs[position, v]) < four_sigma(probs[position, v].item(), n)
    assert process.nfe <= 2 * n  # at most one call per revealed token


def exact_oracle(mixture):
    def model(y):
        return torch.log(mixture.denoise(y, 0.5).clamp_min(1e-300))

    return model


def test_first_hitting_with_exact_marginals_samples_the_exact_posterior_and_ancestral_factorises():
    strings = torch.tensor([[0, 0, 1], [1, 1, 1], [0, 1, 0]])
    mixture = CategoricalMixture.from_strings(strings, vocab_size=2)
    y = torch.tensor([[2, 2, 1]]).repeat(4000, 1)  # strings 0 and 1 fit, equally likely
    fh = MaskedDiffusionProcess(exact_oracle(mixture), 3, 2, n_steps=1, sampler="first-hitting")
    out = fh.run(y, generator=torch.Generator().manual_seed(1))
    share = (out == strings[0]).all(1).double().mean().item()
    assert abs(share - 0.5) < four_sigma(0.5, 4000)
    assert ((out == strings[0]).all(1) | (out == strings[1]).all(1)).all()  # only posterior strings
    # One ancestral step reveals both tokens independently from their marginals (1/2 each): the
    # inconsistent strings 01x and 10x appear with probability 1/2 — the factorisation error.
    anc = MaskedDiffusionProcess(exact_oracle(mixture), 3, 2, n_steps=1, sampler="ancestral")
    out = anc.run(y, generator=torch.Generator().manual_seed(1))
    mixed = (out[:, 0] != out[:, 1]).double().mean().item()
    assert abs(mixed - 0.5) < four_sigma(0.5, 4000)


def test_masked_cache_gives_the_outputs_of_calling_the_model_every_step():
    grammar = small_grammar()
    L, V = grammar.length, grammar.vocab_size
    torch.manual_seed(0)
    network = TokenTransformer(V + 1, V, L, 8, 2, 1).eval()
    process = MaskedDiffusionProcess(network, L, V, n_steps=16)
    y = process.prior(64)
    cached = process.run(y, generator=torch.Generator().manual_seed(2))
    assert process.nfe <= 64 * L  # a call per sequence only where it changed
    # The sampler written out without a cache: every step calls the network on every sequence.
    g = torch.Generator().manual_seed(2)
    x, kappas = y.clone(), process.times.tolist()
    for kappa, to in zip(kappas[:-1], kappas[1:], strict=True):
        with torch.no_grad():
            probs = torch.softmax(network(x).double(), -1)
        u = torch.rand(x.shape, generator=g, dtype=torch.float64)
        r, p = ((x == V) & (u < (kappa - to) / kappa)).nonzero(as_tuple=True)
        if r.numel():
            x[r, p] = torch.multinomial(probs[r, p], 1, generator=g)[:, 0]
    assert torch.equal(cached, x)
    seen = []
    process.run(y, generator=torch.Generator().manual_seed(2), callback=lambda *a: seen.append(a[0]))
    assert seen == list(range(16))


# --------------------------------------------------------------------------------------- autoregression
def counting(ids):
    return 10.0 * torch.nn.functional.one_hot((ids + 1) % 5, 5).float()


def test_autoregressive_forward_reverse_keeps_the_prefix_and_resamples_the_rest():
    process = AutoregressiveProcess(counting, 4, 5, prompt=[3], do_sample=False)
    assert process.clock == "hidden" and process.times.tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert process.run(process.prior(1)).tolist() == [[4, 0, 1, 2]]
    x0 = torch.tensor([[2, 2, 2, 2]])
    fr = forward_reverse(process, x0, [0, 1, 2, 4], feature=lambda x: x[:, -1], seed=0, progress=False)
    # Hiding h tokens keeps 4 - h of them; the greedy counter continues from the last one kept.
    assert fr.labels[:, 0].tolist() == [2, 3, 4, 2]
    assert fr.metadata["clock"] == "hidden" and "clock=hidden" in repr(fr)


# ------------------------------------------------------------------- the estimators on token processes
def test_estimates_search_and_resume_on_a_masked_process(tmp_path):
    grammar = small_grammar()
    mixture = grammar.mixture()
    process = MaskedDiffusionProcess(
        exact_oracle(mixture), grammar.length, grammar.vocab_size, sampler="first-hitting"
    )
    x0, _ = grammar.sample(32, torch.Generator().manual_seed(4))
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    features = grammar.features()
    first = forward_reverse(
        process, x0, times, 2, feature=features, seed=5, out=tmp_path / "fr", chunk_size=16, progress=False
    )
    units = sorted((tmp_path / "fr" / "units").glob("*.npz"))
    for unit in units[::2]:
        unit.unlink()  # as if killed: resuming redraws exactly these
    again = forward_reverse(
        process, x0, times, 2, feature=features, seed=5, out=tmp_path / "fr", chunk_size=16, progress=False
    )
    for name in features:
        assert torch.equal(first.select(name).labels, again.select(name).labels)
    loaded = ForwardReverseResult.load(tmp_path / "fr")
    assert loaded.metadata["clock"] == "kappa"
    est = estimate_window(first, feature="class", n_boot=30)
    assert est.clock == "kappa" and "clock=kappa" in repr(est)
    assert est.t_half_ci[0] <= est.t_half <= est.t_half_ci[1]
    found = search_window(
        process, x0, features["class"], seed=6, resolution=0.1, batch=32, max_per_probe=256, progress=False
    )
    assert found.metadata["clock"] == "kappa" and found.nfe > 0
    assert 0.0 <= found.t_after <= found.t_before <= 1.0


def test_search_on_the_autoregressive_clock_bisects_grid_positions():
    grammar = small_grammar()
    process = CategoricalProcess(grammar.mixture("autoregressive"))
    x0, _ = grammar.sample(32, torch.Generator().manual_seed(7))
    found = search_window(
        process, x0, grammar.feature("class"), seed=8, batch=32, max_per_probe=64, progress=False
    )
    assert {p["t"] for p in found.probes} <= {1.0, 2.0, 3.0, 4.0}
    assert found.metadata["clock"] == "hidden"


def test_component_feature_on_the_exact_engine_and_ou_clock_elsewhere():
    grammar = small_grammar()
    process = CategoricalProcess(grammar.mixture(), n_steps=10)
    x0 = grammar.strings()[:6]
    fr = forward_reverse(process, x0, [0.0, 0.5], feature="component", seed=0, progress=False)
    assert fr.agreement[0].item() == 1.0  # at kappa = 0 every output is its source's own string
    gaussian = forward_reverse(
        GaussianMixture(torch.tensor([[-3.0], [3.0]])), torch.tensor([[1.0]]), [0.5], seed=0, progress=False
    )
    assert gaussian.metadata["clock"] == "ou" and MixtureProcess.clock == "ou"


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_their_argument():
    grammar = small_grammar()
    mdm = MaskedDiffusionProcess(exact_oracle(grammar.mixture()), grammar.length, grammar.vocab_size)
    x0 = grammar.strings()[:4]
    with pytest.raises(ValueError, match=r"times\[1\] \(kappa, a masking level\) must lie in \[0, 1\]"):
        forward_reverse(mdm, x0, [0.5, 1.5], seed=0, feature=grammar.feature("class"), progress=False)
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, 4\)"):
        forward_reverse(mdm, x0[:, :3], [0.5], seed=0, feature=grammar.feature("class"), progress=False)
    bad = x0.clone()
    bad[1, 2] = 9
    with pytest.raises(ValueError, match=r"x0 holds token id 9 at row 1, position 2, outside 0..3"):
        forward_reverse(mdm, bad, [0.5], seed=0, feature=grammar.feature("class"), progress=False)
    ar = CategoricalProcess(grammar.mixture("autoregressive"))
    with pytest.raises(ValueError, match=r"times\[0\] must be an integer number of hidden positions in 0..4"):
        forward_reverse(ar, x0, [2.5], seed=0, feature=grammar.feature("class"), progress=False)
    with pytest.raises(ValueError, match="mixture must be a CategoricalMixture"):
        CategoricalProcess(GaussianMixture(torch.zeros(2, 1)))
    with pytest.raises(ValueError, match="prompt must hold at least one token"):
        AutoregressiveProcess(counting, 4, 5, prompt=[])


@pytest.mark.parametrize(
    "shape, message",
    [
        (
            (4, 8),
            r"returned logits of shape \(2, 4, 8\) at step 0 .* expected \(2, 4, 5\) \(vocabulary mismatch",
        ),
        ((4,), r"returned logits of shape \(2, 4\) at step 0"),
        (None, "returned non-finite logits at step 0"),
    ],
)
def test_a_model_with_wrong_outputs_is_named_with_its_step(shape, message):
    def bad(x):
        if shape is None:
            return torch.full((x.shape[0], 4, 5), math.nan)
        return torch.zeros(x.shape[0], *shape)

    process = MaskedDiffusionProcess(bad, 4, 5, n_steps=2, name="bad-model")
    with pytest.raises(ValueError, match="model bad-model " + message):
        process.run(process.prior(2), generator=torch.Generator().manual_seed(0))
    ar = AutoregressiveProcess(
        lambda ids: torch.zeros(ids.shape[0], ids.shape[1], 7), 3, 5, prompt=[0], name="lm"
    )
    with pytest.raises(
        ValueError, match=r"model lm returned logits of shape \(1, 1, 7\) at position 0 .*vocabulary"
    ):
        ar.run(ar.prior(1))


@pytest.mark.slow
def test_token_sweeps_on_ray_equal_local(tmp_path):
    ray = pytest.importorskip("ray")
    grammar = small_grammar()
    process = CategoricalProcess(grammar.mixture(), n_steps=8)
    x0 = grammar.strings()
    args = dict(feature=grammar.features(), seed=9, chunk_size=8, progress=False)
    try:
        local = forward_reverse(process, x0, [0.25, 0.75], 2, **args)
        remote = forward_reverse(process, x0, [0.25, 0.75], 2, executor="ray", **args)
        for name in args["feature"]:
            assert torch.equal(local.select(name).labels, remote.select(name).labels)
        cl_local = clone(process, 16, [0.5], 2, **args)
        cl_remote = clone(process, 16, [0.5], 2, executor="ray", **args)
        assert torch.equal(cl_local.select("class").clone_labels, cl_remote.select("class").clone_labels)
    finally:
        ray.shutdown()
