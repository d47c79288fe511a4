"""The validation experiment (forward-reverse TV against Blink Thm 2), the mixture-file loader and the
theory CLI commands (`critwin window|hierarchy|validate`)."""

import csv
import json
import math

import pytest
import torch

from critwin.cli import main
from critwin.io_mixture import load_mixture, save_mixture
from critwin.mixtures import GaussianMixture
from critwin.theory.divergence import tv
from critwin.theory.validate import forward_reverse_tv, validate

F64 = torch.float64


def _mixture():
    means = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.5, 0.0], [9.0, 0.0, 1.0]], dtype=F64)
    return GaussianMixture(means, weights=torch.tensor([0.3, 0.3, 0.4], dtype=F64))


def test_forward_reverse_tv_limits_match_exact_tv():
    m = _mixture()
    g = torch.Generator().manual_seed(0)
    # T = 0: the forward-reverse law is p^{init} itself, and h(x) = r(x) exactly (no inner noise),
    # so the estimator is unbiased: within 4 standard errors of the exact span quadrature.
    fr = forward_reverse_tv(m, [0], [0, 1], 0.0, n_outer=20000, n_inner=2, generator=g)
    exact = tv(m.subset([0]), m.subset([0, 1])).value
    assert abs(fr["tv"] - exact) < 4 * fr["tv_se"]
    # T large: the forward-reverse law is p (h = 1 up to e^{-T}): TV(p, p^{target}).
    fr = forward_reverse_tv(m, [0], [0, 1], 25.0, n_outer=20000, n_inner=2, generator=g)
    exact = tv(m, m.subset([0, 1])).value
    assert abs(fr["tv"] - exact) < 4 * fr["tv_se"]


def test_label_distribution_matches_core_posterior_sampler():
    m = _mixture()
    g = torch.Generator().manual_seed(1)
    t_hat, n = 1.2, 20000
    fr = forward_reverse_tv(m, [0], [0, 1], t_hat, n_outer=20000, n_inner=2, generator=g)
    y, _ = m.subset([0]).noised(t_hat).sample(n, generator=g)
    _, labels = m.sample_posterior(y, t_hat, generator=g)
    freq = torch.bincount(labels, minlength=3).to(F64) / n
    # Both are unbiased for the same probabilities; binomial SE <= 0.5/sqrt(n) each, so 4 * sqrt(2) SE.
    assert (freq - fr["label_dist"]).abs().max() < 4 * math.sqrt(2) * 0.5 / math.sqrt(n)


def test_forward_reverse_requires_identity_covariances():
    m = GaussianMixture(torch.zeros(2, 2, dtype=F64) + torch.tensor([[0.0], [3.0]], dtype=F64), covs=2.0)
    with pytest.raises(ValueError, match="identity covariances"):
        forward_reverse_tv(m, [0], [0, 1], 0.5)
    m = _mixture()
    for args, message in (
        (([3], [0, 1], 0.5), "init contains unknown component 3"),
        (([0, 2], [0, 1], 0.5), "init must be a subset of target"),
        (([0], [0, 1], -1.0), "t_hat must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            forward_reverse_tv(m, *args)
    with pytest.raises(ValueError, match="n_outer must be >= 2"):
        forward_reverse_tv(m, [0], [0, 1], 0.5, n_outer=1)


def test_validate_small_run_writes_outputs_and_has_no_violation(tmp_path):
    result = validate(
        tmp_path,
        quick=True,
        ks=(2,),
        dims=(2, 16),
        n_grid=6,
        n_outer=400,
        n_inner=32,
        n_tv=2000,
        n_check=100,
        seed=3,
    )
    s = result.summary
    assert s["violations"] == 0 and s["n_points_in_theorem_range"] > 0
    assert s["endpoint_checks"] > 0 and s["endpoint_check_failures"] == 0
    for name in ("validation.png", "validation.csv", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "validation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == s["n_points"] == len(result.rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["violations"] == 0 and len(summary["cases"]) == s["n_cases"]
    # Every row marked in range really lies in the conservative theorem range of its case.
    cases = {c["name"]: c for c in result.cases}
    for row in result.rows:
        c = cases[row["case"]]
        hi = math.inf if c["t_start_low"] is None else c["t_start_low"]
        assert row["in_theorem_range"] == (c["t_end_high"] <= row["t_hat"] <= hi)


def test_mixture_file_roundtrip_and_errors(tmp_path):
    m = GaussianMixture(
        torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=F64),
        covs=torch.tensor([[1.0, 2.0], [0.5, 0.5]]),
        weights=torch.tensor([0.25, 0.75], dtype=F64),
    )
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"m{suffix}"
        save_mixture(m, path)
        back = load_mixture(path)
        assert torch.equal(back.means, m.means) and torch.allclose(back.weights, m.weights)
        assert back.cov_kind == "diag" and torch.equal(back.covs, m.covs)
    (tmp_path / "w.yaml").write_text("means: [[0, 0], [1, 1]]\nweights: [1, 3]\n")
    assert torch.allclose(load_mixture(tmp_path / "w.yaml").weights, torch.tensor([0.25, 0.75], dtype=F64))
    bad = {
        "nomeans.yaml": "covs: 1\n",
        "extra.yaml": "means: [[0]]\ncolour: red\n",
        "w.json": '{"means": [[0], [1]], "weights": [1]}',
        "ragged.yaml": "means: [[0, 1], [2]]\n",
        "text.txt": "means: [[0]]\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError):
            load_mixture(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        load_mixture(tmp_path / "missing.yaml")


def _run_cli(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_window_and_hierarchy_json(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text("means: [[3.0, 0.0], [-3.0, 0.0]]\n")
    code, out, _ = _run_cli(["window", str(path), "--after", "0", "--eps", "0.1", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    # Exact endpoints for N(+-mu, I)/2, |mu| = 3: erf(a|mu|/sqrt2) = 1 - eps^2 and erf(a|mu|/sqrt2)/2 = eps.
    from scipy.special import erfinv

    assert data["window"]["t_after"] == pytest.approx(math.log(3 / (math.sqrt(2) * erfinv(0.99))), abs=1e-4)
    assert data["window"]["t_before"] == pytest.approx(math.log(3 / (math.sqrt(2) * erfinv(0.2))), abs=1e-4)
    assert data["transition_times"]["t_start"] is None
    code, out, _ = _run_cli(["hierarchy", str(path), "--json", "--plot", str(tmp_path / "t.png")], capsys)
    assert code == 0 and json.loads(out)["root"]["components"] == [0, 1]
    assert (tmp_path / "t.png").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["window", "{m}", "--after", "0", "--eps", "1.5"], "--eps"),
        (["window", "{m}", "--after", "4"], "unknown component 4"),
        (["window", "{m}", "--after", "0,1", "--before", "0"], "subset"),
        (["window", "{m}", "--after", "a"], "--after"),
        (["window", "{missing}", "--after", "0"], "not found"),
        (["hierarchy", "{m}", "--eps", "0"], "--eps"),
    ],
)
def test_cli_errors_one_line_exit_2(tmp_path, capsys, args, message):
    path = tmp_path / "m.yaml"
    path.write_text("means: [[3.0, 0.0], [-3.0, 0.0]]\n")
    argv = [a.format(m=path, missing=tmp_path / "nope.yaml") for a in args]
    code, out, err = _run_cli(argv, capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_validate_quick(tmp_path, capsys):
    code, out, _ = _run_cli(["validate", "--quick", "--out", str(tmp_path), "--json"], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["violations"] == 0 and summary["quick"]
    assert (tmp_path / "validation.png").exists()


def test_endpoint_checks_detect_wrong_transition_times():
    # Two unit Gaussians +-5 e1 (weights 0.3/0.7): the exact T_end of {0} in {0,1} comes from quadrature;
    # shifting it by 0.3 OU units (far below what the theorem's bound could reveal) must fail the check.
    from dataclasses import replace

    from critwin.theory.validate import ValidationCase, _endpoint_checks
    from critwin.theory.windows import transition_times

    mu = torch.tensor([[5.0, 0.0], [-5.0, 0.0]], dtype=F64)
    m = GaussianMixture(mu, weights=torch.tensor([0.3, 0.7], dtype=F64))
    case = ValidationCase("c", m, [0], [0, 1], 2, 2, "test")
    tt = transition_times(m, [0], [0, 1], 0.1)
    good = _endpoint_checks(m, case, tt, 0.1, 0)
    assert good["t_end_check"] is True and good["tv_at_t_end"] == pytest.approx(0.1, abs=1e-4)
    shifted = replace(tt, t_end=tt.t_end + 0.3, t_end_low=tt.t_end_low + 0.3, t_end_high=tt.t_end_high + 0.3)
    assert _endpoint_checks(m, case, shifted, 0.1, 0)["t_end_check"] is False
    sep = ValidationCase("s", m, [0], [0], 2, 2, "test")
    tt = transition_times(m, [0], [0], 0.1)
    assert _endpoint_checks(m, sep, tt, 0.1, 0)["t_start_check"] is True
    early = replace(tt, t_start_low=tt.t_start_low - 0.3, t_start_high=tt.t_start_high - 0.3)
    assert _endpoint_checks(m, sep, early, 0.1, 0)["t_start_check"] is False


def _small_validation(**kw):
    return validate(
        None,
        quick=True,
        ks=(2,),
        dims=(2, 16),
        n_grid=4,
        n_outer=300,
        n_inner=16,
        n_tv=2000,
        n_check=50,
        seed=3,
        plot=False,
        **kw,
    )


def test_validate_detects_a_distorted_tv(monkeypatch):
    # Every TV curve computed with distances x1.25 (transition times shifted by ln 1.25 = 0.22): the
    # endpoint checks recompute the TV with references that share no code with divergence.tv
    # (critwin.theory.references), so they must fail; with the same TV code they passed (issue 21.2).
    import critwin.theory.divergence as divergence

    original = divergence.TVCurve._whitened_means
    monkeypatch.setattr(divergence.TVCurve, "_whitened_means", lambda self, t: 1.25 * original(self, t))
    s = _small_validation().summary
    assert s["endpoint_checks"] > 0 and s["endpoint_check_failures"] >= s["endpoint_checks"] // 2
