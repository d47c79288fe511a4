"""Bad inputs across the library API (issue 11): each raises ValueError naming the argument, fast.

Every case is tiny (a 2-component mixture in d = 2, a handful of samples) so that a case that hung or
built a huge tensor before checking would show up as a slow or failing test, not a pass.
"""

import math
import re

import pytest
import torch

import critwin
from critwin import (
    DiscreteSchedule,
    EmpiricalMixture,
    GaussianMixture,
    clone,
    critical_window,
    forward_reverse,
    hierarchy,
    ou_time,
    search_window,
    time_grid,
    transition_times,
    tv,
)
from critwin.clock import TimeGrid
from critwin.diagnostics.fairness import rebalance
from critwin.diagnostics.privacy import membership_audit
from critwin.experiments.estimation import estimate_window
from critwin.io_mixture import MAX_DEPTH, load_mixture, mixture_from_dict
from critwin.samplers import SAMPLERS
from critwin.theory.closed_forms import log_concave_times, window_isotropic, window_two_gaussians
from critwin.theory.windows import merge_time, separation_time, theorem_bound

F64 = torch.float64
NAN, INF = float("nan"), float("inf")
MIX = GaussianMixture(torch.tensor([[2.0, 0.0], [-2.0, 0.0]], dtype=F64))
EMP = EmpiricalMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=F64))
X0 = torch.tensor([[2.0, 0.1], [-2.0, 0.3], [1.5, -0.2]], dtype=F64)
GRID = [1.0, 0.5, 0.0]
FR = dict(seed=0, progress=False, n_steps=4)

CASES: list = []


def case(name: str, fn, pattern: str) -> None:
    """Register a bad input: ``fn()`` must raise ValueError whose message matches ``pattern`` (the name)."""
    CASES.append(pytest.param(fn, pattern, id=name))


def bad_values(kind: str):
    """Typical bad values of a kind of argument: (label, value)."""
    common = [("nan", NAN), ("inf", INF), ("-inf", -INF), ("bool", True), ("complex", 1 + 2j), ("str", "0.1")]
    extra = {
        "time": [("negative", -0.5)],
        "eps": [("zero", 0.0), ("one", 1.0), ("negative", -0.1), ("above", 1.5)],
        "tol": [("zero", 0.0), ("negative", -1e-3), ("tiny", 1e-300), ("one", 1.0)],
    }[kind]
    return common + extra


# ------------------------------------------------------------------------------------------- clock
for label, v in bad_values("time"):
    if label != "inf":  # t = inf is pure noise: alpha_bar(inf) = 0
        case(f"alpha_bar-t-{label}", lambda v=v: critwin.alpha_bar(v), r"\bt\b")
    case(f"time_grid-t_max-{label}", lambda v=v: time_grid(v, 4), "t_max")
    case(f"time_grid-t_min-{label}", lambda v=v: time_grid(2.0, 4, t_min=v), "t_min")
    case(f"noised-t-{label}", lambda v=v: MIX.noised(v), r"\bt\b")
for name, v in [("nan", NAN), ("bool", True), ("complex", 1j), ("str", "a"), ("none-list", [None])]:
    case(f"ou_time-alpha_bar-{name}", lambda v=v: ou_time(alpha_bar=v), "alpha_bar")
    case(f"ou_time-snr-{name}", lambda v=v: ou_time(snr=v), "snr")
    case(f"ou_time-log_snr-{name}", lambda v=v: ou_time(log_snr=v), "log_snr")
    case(f"ou_time-sigma-{name}", lambda v=v: ou_time(sigma=v), "sigma")
    case(f"ou_time-flow_s-{name}", lambda v=v: ou_time(flow_s=v), "flow_s")
    case(f"ou_time-alpha-{name}", lambda v=v: ou_time(alpha_sigma=(v, 0.5)), "alpha")
    case(f"ou_time-sigma-of-pair-{name}", lambda v=v: ou_time(alpha_sigma=(0.5, v)), "sigma")
case("ou_time-none", lambda: ou_time(), "exactly one of")
case("ou_time-two", lambda: ou_time(snr=1.0, sigma=1.0), "exactly one of")
case("ou_time-alpha_sigma-not-pair", lambda: ou_time(alpha_sigma=1.0), "alpha_sigma")
case("ou_time-alpha-zero", lambda: ou_time(alpha_sigma=(0.0, 1.0)), "alpha")
case("ou_time-alpha_bar-above-one", lambda: ou_time(alpha_bar=1.5), "alpha_bar")
case("time_grid-n_steps-zero", lambda: time_grid(1.0, 0), "n_steps")
case("time_grid-n_steps-float", lambda: time_grid(1.0, 2.5), "n_steps")
case("time_grid-spacing", lambda: time_grid(1.0, 3, spacing="cubic"), "spacing")
case("time_grid-order", lambda: time_grid(1.0, 3, t_min=2.0), "t_min")
for name, v in [("nan", [1.0, NAN]), ("increasing", [0.0, 1.0]), ("short", [1.0]), ("negative", [1.0, -1.0])]:
    case(f"TimeGrid-{name}", lambda v=v: TimeGrid(v), "times")
for name, v in [("nan", [0.1, NAN]), ("zero", [0.0, 0.1]), ("one", [1.0]), ("empty", []), ("bool", [True])]:
    case(
        f"DiscreteSchedule-betas-{name}",
        lambda v=(torch.tensor(v) if name == "bool" else torch.tensor(v, dtype=F64)): DiscreteSchedule(v),
        "betas",
    )
for name, v in [
    ("nan", [0.9, NAN, 0.5]),
    ("increasing", [0.5, 0.9]),
    ("one", [1.0, 0.5]),
    ("zero", [0.9, 0.0]),
    ("complex", [0.9j]),
]:
    case(
        f"DiscreteSchedule-alphas_cumprod-{name}",
        lambda v=v: DiscreteSchedule.from_alphas_cumprod(v),
        "alphas_cumprod",
    )
case("DiscreteSchedule-num_steps", lambda: DiscreteSchedule.linear(num_steps=0), "num_steps")
case("nearest_step-nan", lambda: DiscreteSchedule.linear(num_steps=10).nearest_step(NAN), r"\bt\b")
case(
    "nearest_step-steps", lambda: DiscreteSchedule.linear(num_steps=10).nearest_step(0.1, steps=[20]), "steps"
)

# ------------------------------------------------------------------------------------------ mixtures
for name, v in [
    ("nan", [[NAN, 0.0]]),
    ("inf", [[INF, 0.0]]),
    ("bool", torch.tensor([[True, False]])),
    ("complex", torch.tensor([[1 + 1j, 0]])),
    ("1d", [1.0, 2.0]),
    ("empty", torch.zeros(0, 2)),
    ("str", "means"),
    ("ragged", [[1.0], [1.0, 2.0]]),
]:
    case(f"GaussianMixture-means-{name}", lambda v=v: GaussianMixture(v), "means")
    case(f"EmpiricalMixture-points-{name}", lambda v=v: EmpiricalMixture(v), "points|means")
for name, v in [
    ("nan", [NAN, 1.0]),
    ("negative", [-0.5, 1.5]),
    ("sum", [0.2, 0.2]),
    ("shape", [1.0]),
    ("bool", torch.tensor([True, False])),
    ("complex", torch.tensor([0.5 + 0j, 0.5])),
]:
    case(
        f"GaussianMixture-weights-{name}",
        lambda v=v: GaussianMixture(torch.zeros(2, 2), weights=v),
        "weights",
    )
for name, v in [
    ("nan", NAN),
    ("negative", -1.0),
    ("shape", torch.ones(3)),
    ("asym", torch.tensor([[[1.0, 0.5], [0.0, 1.0]]] * 2)),
    ("bool", torch.tensor(True)),
    ("indefinite", torch.tensor([[[1.0, 2.0], [2.0, 1.0]]] * 2)),
]:
    case(f"GaussianMixture-covs-{name}", lambda v=v: GaussianMixture(torch.zeros(2, 2), covs=v), "covs")
for method in ("log_prob", "posterior", "score", "denoise", "component_log_prob"):
    for name, x in [
        ("nan", torch.tensor([[NAN, 0.0]], dtype=F64)),
        ("inf", torch.tensor([[INF, 0.0]], dtype=F64)),
        ("bool", torch.tensor([[True, False]])),
        ("complex", torch.tensor([[1j, 0]])),
        ("shape", torch.zeros(2, 3, dtype=F64)),
    ]:
        case(f"{method}-x-{name}", lambda m=method, x=x: getattr(MIX, m)(x, 0.5), r"\bx\b")
    case(f"{method}-t-nan", lambda m=method: getattr(MIX, m)(X0, NAN), r"\bt\b")
for name, n in [("zero", 0), ("float", 2.5), ("bool", True), ("negative", -3)]:
    case(f"sample-n-{name}", lambda n=n: MIX.sample(n), r"\bn\b")
case(
    "sample_posterior-y-nan", lambda: MIX.sample_posterior(torch.full((2, 2), NAN, dtype=F64), 0.5), r"\by\b"
)
case("sample_posterior-y-shape", lambda: MIX.sample_posterior(torch.zeros(2, 5, dtype=F64), 0.5), r"\by\b")
case("sample_reverse-s-order", lambda: MIX.sample_reverse(X0, 0.5, 1.0), r"\bs\b")
case("subset-unknown", lambda: MIX.subset([5]), "components")
case("subset-empty", lambda: MIX.subset([]), "components")
case("subset-float", lambda: MIX.subset([0.5]), "components")
case("empirical-log_prob-t0", lambda: EMP.log_prob(X0, 0.0), r"\bt\b")

# ------------------------------------------------------------------------------------------ samplers
for sampler_name, fn in SAMPLERS.items():
    for name, x in [
        ("int", torch.ones(3, 2, dtype=torch.long)),
        ("nan", torch.full((3, 2), NAN, dtype=F64)),
        ("inf", torch.full((3, 2), INF, dtype=F64)),
        ("bool", torch.ones(3, 2, dtype=torch.bool)),
        ("list", [[0.0, 0.0]]),
    ]:
        case(f"{sampler_name}-x-{name}", lambda fn=fn, x=x: fn(MIX, x, GRID), r"\bx\b")
    case(f"{sampler_name}-times-increasing", lambda fn=fn: fn(MIX, X0, [0.0, 1.0]), "times")
    case(f"{sampler_name}-times-nan", lambda fn=fn: fn(MIX, X0, [1.0, NAN]), "times")
    case(f"{sampler_name}-generator", lambda fn=fn: fn(MIX, X0, GRID, generator=0), "generator")

# ------------------------------------------------------------------------------------ theory entries
for label, v in bad_values("eps"):
    case(f"critical_window-eps-{label}", lambda v=v: critical_window(MIX, [0], eps=v), "eps")
    case(f"transition_times-eps-{label}", lambda v=v: transition_times(MIX, [0], [0, 1], eps=v), "eps")
    case(f"window_two_gaussians-eps-{label}", lambda v=v: window_two_gaussians([2.0, 0.0], eps=v), "eps")
    case(f"theorem_bound-eps-{label}", lambda v=v: theorem_bound(v, 1.0), "eps")
for label, v in bad_values("tol"):
    case(f"critical_window-tol-{label}", lambda v=v: critical_window(MIX, [0], tol=v), "tol")
    case(f"transition_times-tol-{label}", lambda v=v: transition_times(MIX, [0], [0, 1], tol=v), "tol")
    case(f"hierarchy-tol-{label}", lambda v=v: hierarchy(MIX, tol=v), "tol")
    case(f"merge_time-tol-{label}", lambda v=v: merge_time(MIX, [0], [0, 1], 0.1, tol=v), "tol")
    case(f"separation_time-tol-{label}", lambda v=v: separation_time(MIX, [0], 0.1, tol=v), "tol")
for name, W in [("nan", NAN), ("negative", -1.0), ("complex", 1j), ("str", "1")]:
    case(f"theorem_bound-W-{name}", lambda W=W: theorem_bound(0.1, W), r"\bW\b")
for name, mean in [
    ("nan", [NAN, 1.0]),
    ("zero", [0.0, 0.0]),
    ("bool", [True, False]),
    ("complex", [1j, 1.0]),
    ("str", "mu"),
]:
    case(f"window_two_gaussians-mean-{name}", lambda mean=mean: window_two_gaussians(mean), "mean")
for name, means in [
    ("nan", [[NAN, 0.0], [1.0, 0.0]]),
    ("one", [[1.0, 0.0]]),
    ("same", [[1.0, 0.0], [1.0, 0.0]]),
    ("complex", torch.tensor([[1j, 0], [0, 0]])),
]:
    case(f"window_isotropic-means-{name}", lambda means=means: window_isotropic(means, 0), "means")
case("window_isotropic-i", lambda: window_isotropic([[1.0, 0.0], [0.0, 0.0]], 5), r"\bi\b")
for name, w in [
    ("nan", [NAN, 1.0]),
    ("negative", [-1.0, 2.0]),
    ("length", [1.0]),
    ("bool", torch.tensor([True, True])),
]:
    case(
        f"window_isotropic-weights-{name}",
        lambda w=w: window_isotropic([[2.0, 0.0], [0.0, 0.0]], 0, weights=w),
        "weights",
    )
case("window_isotropic-form", lambda: window_isotropic([[2.0, 0.0], [0.0, 0.0]], 0, form="loose"), "form")
case("window_two_gaussians-form", lambda: window_two_gaussians(2.0, form="loose"), "form")
for name, alpha in [("nan", NAN), ("zero", 0.0), ("negative", -1.0), ("bool", True)]:
    case(
        f"log_concave_times-alpha-{name}",
        lambda alpha=alpha: log_concave_times(MIX, [0], [0, 1], alpha=alpha),
        "alpha",
    )
case("log_concave_times-mixture", lambda: log_concave_times("mix", [0], [0, 1]), "mixture")
case("critical_window-mixture", lambda: critical_window([[1.0]], [0]), "mixture")
case("critical_window-after-not-proper", lambda: critical_window(MIX, [0, 1]), "after")
case("critical_window-after-unknown", lambda: critical_window(MIX, [3]), "after")
case("transition_times-init-not-subset", lambda: transition_times(MIX, [1], [0]), "init")
case("critical_window-n", lambda: critical_window(MIX, [0], n=1), r"\bn\b")
case("critical_window-generator", lambda: critical_window(MIX, [0], generator=3), "generator")
case("hierarchy-eps", lambda: hierarchy(MIX, eps=NAN), "eps")
case("tv-P", lambda: tv("P", MIX), r"\bP\b")
case("tv-t", lambda: tv(MIX, MIX.subset([0]), NAN), r"\bt\b")
case("tv-method", lambda: tv(MIX, MIX.subset([0]), 0.5, method="magic"), "method")
case("tv-dim", lambda: tv(MIX, GaussianMixture(torch.zeros(1, 3)), 0.5), "dimension")

# --------------------------------------------------------------------------------------- experiments
for name, x in [
    ("nan", torch.full((2, 2), NAN, dtype=F64)),
    ("int", torch.ones(2, 2, dtype=torch.long)),
    ("empty", torch.zeros(0, 2, dtype=F64)),
    ("shape", torch.zeros(2, 5, dtype=F64)),
    ("list", [[0.0, 0.0]]),
]:
    case(f"forward_reverse-x0-{name}", lambda x=x: forward_reverse(MIX, x, [0.5], **FR), "x0")
    case(
        f"search_window-x0-{name}",
        lambda x=x: search_window(MIX, x, base_rate=0.5, seed=0, progress=False),
        "x0",
    )
for name, times in [
    ("nan", [NAN]),
    ("negative", [-1.0]),
    ("beyond", [1e6]),
    ("empty", []),
    ("bool", [True]),
    ("complex", [1j]),
]:
    case(f"forward_reverse-times-{name}", lambda times=times: forward_reverse(MIX, X0, times, **FR), "times")
    case(f"clone-times-{name}", lambda times=times: clone(MIX, 2, times, 2, **FR), "times")
case("clone-times-zero", lambda: clone(MIX, 2, [0.0], 2, **FR), "times")
for dtype in (torch.int64, torch.int32, torch.bool, torch.complex64, "float64"):
    case(f"clone-dtype-{dtype}", lambda dtype=dtype: clone(MIX, 2, [0.5], 2, dtype=dtype, **FR), "dtype")
for arg in ("n_trajectories", "n_clones"):
    for name, v in [("zero", 0), ("float", 1.5), ("bool", True)]:
        kw = {"n_trajectories": 2, "n_clones": 2, arg: v}
        case(
            f"clone-{arg}-{name}",
            lambda kw=kw: clone(MIX, kw["n_trajectories"], [0.5], kw["n_clones"], **FR),
            arg,
        )
for name, v in [("zero", 0), ("float", 1.5), ("bool", True)]:
    case(
        f"forward_reverse-n_per_time-{name}",
        lambda v=v: forward_reverse(MIX, X0, [0.5], n_per_time=v, **FR),
        "n_per_time",
    )
case(
    "forward_reverse-feature-name", lambda: forward_reverse(MIX, X0, [0.5], feature="colour", **FR), "feature"
)
case("forward_reverse-feature-type", lambda: forward_reverse(MIX, X0, [0.5], feature=3, **FR), "feature")
case(
    "forward_reverse-component-ddim",
    lambda: forward_reverse(MIX, X0, [0.5], feature="component", sampler="ddim", **FR),
    "bayes",
)
case(
    "clone-component-sde", lambda: clone(MIX, 2, [0.5], 2, feature="component", sampler="sde", **FR), "bayes"
)
case("forward_reverse-sampler", lambda: forward_reverse(MIX, X0, [0.5], sampler="euler", **FR), "sampler")
case(
    "forward_reverse-seed-negative", lambda: forward_reverse(MIX, X0, [0.5], seed=-1, progress=False), "seed"
)
case("forward_reverse-seed-float", lambda: forward_reverse(MIX, X0, [0.5], seed=1.5, progress=False), "seed")
case(
    "forward_reverse-generator",
    lambda: forward_reverse(MIX, X0, [0.5], generator=5, progress=False),
    "generator",
)
SW = dict(base_rate=0.5, seed=0, progress=False)
for label, v in [
    ("nan", NAN),
    ("zero", 0.0),
    ("tiny", 1e-300),
    ("negative", -0.1),
    ("inf", INF),
    ("bool", True),
    ("complex", 1j),
]:
    case(
        f"search_window-resolution-{label}",
        lambda v=v: search_window(MIX, X0, resolution=v, **SW),
        "resolution",
    )
for label, v in [("nan", NAN), ("half", 0.5), ("zero", 0.0), ("bool", True)]:
    case(f"search_window-delta-{label}", lambda v=v: search_window(MIX, X0, delta=v, **SW), "delta")
for label, v in [("nan", NAN), ("one", 1.0), ("negative", -0.1), ("complex", 1j)]:
    case(
        f"search_window-base_rate-{label}",
        lambda v=v: search_window(MIX, X0, resolution=0.5, base_rate=v, seed=0, progress=False),
        "base_rate",
    )
case("search_window-component", lambda: search_window(MIX, X0, feature="component", **SW), "bayes")
case("search_window-t_range", lambda: search_window(MIX, X0, t_range=(2.0, 1.0), **SW), "t_range")
case(
    "search_window-generator",
    lambda: search_window(MIX, X0, generator="g", base_rate=0.5, progress=False),
    "generator",
)
case("search_window-batch", lambda: search_window(MIX, X0, batch=0, **SW), "batch")

_RESULT = None


def _result():
    global _RESULT
    if _RESULT is None:
        _RESULT = forward_reverse(MIX, X0, [0.1, 1.0, 3.0], n_per_time=2, **FR)
    return _RESULT


for name, labels in [
    ("float", [0.0, 1.0]),
    ("bool", [True, False]),
    ("empty", []),
    ("negative", [-1, 0]),
    ("str", ["a"]),
]:
    case(
        f"estimate_window-reference_labels-{name}",
        lambda labels=labels: estimate_window(_result(), reference_labels=labels, n_boot=0),
        "reference_labels",
    )
for name, v in [("nan", NAN), ("one", 1.0), ("complex", 1j)]:
    case(
        f"estimate_window-base_rate-{name}",
        lambda v=v: estimate_window(_result(), base_rate=v, n_boot=0),
        "base_rate",
    )
for name, v in [("nan", NAN), ("half", 0.5)]:
    case(f"estimate_window-delta-{name}", lambda v=v: estimate_window(_result(), delta=v, n_boot=0), "delta")
case("estimate_window-level", lambda: estimate_window(_result(), level=1.5, n_boot=0), "level")
case("estimate_window-n_boot", lambda: estimate_window(_result(), n_boot=-1), "n_boot")
case("rebalance-component", lambda: rebalance(MIX, 4, "component", 2, 0.5), "bayes")
case("rebalance-generator", lambda: rebalance(MIX, 4, "bayes", 2, 0.5, generator=1), "generator")
case("rebalance-fork_time", lambda: rebalance(MIX, 4, "bayes", 2, NAN), "fork_time")
case("membership_audit-generator", lambda: membership_audit(MIX, X0, X0, [0.5], generator="g"), "generator")


# ------------------------------------------------------------------------------------ mixture files
def _file_case(name: str, content, pattern: str, suffix: str = ".json") -> None:
    def run(tmp_path_factory=None):
        import tempfile
        from pathlib import Path

        path = Path(tempfile.mkdtemp()) / f"mixture{suffix}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        try:
            load_mixture(path)
        except ValueError as exc:
            assert "mixture" in str(exc) and str(path.name) in str(exc)  # names the file
            raise

    case(f"load_mixture-{name}", run, pattern)


def _alias_bomb() -> str:
    # Ten levels of nine aliases each: 9^10 ~ 3.5e9 numbers if expanded, 400 bytes as text.
    lines = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nmeans: *l9\n"


_file_case("yaml-alias-bomb", _alias_bomb(), "alias", ".yaml")
_file_case("yaml-alias-simple", "a: &a [0.0, 1.0]\nmeans: [*a, *a]\n", "alias", ".yml")
_file_case("yaml-deep", "means: " + "[" * 3000 + "]" * 3000 + "\n", "nested", ".yaml")
_file_case("json-deep-100k", "[" * 100_000 + "]" * 100_000, "nested")
_file_case(
    "json-deep-field", '{"means": ' + "[" * (MAX_DEPTH + 2) + "1" + "]" * (MAX_DEPTH + 2) + "}", "nested"
)
_file_case("json-huge-int-5000-digits", '{"means": [[' + "9" * 5000 + "]]}", "digits|integer")
_file_case("json-huge-int-400-digits", '{"means": [[' + "9" * 400 + "]]}", "integer too large")
_file_case("json-non-utf8", b'{"means": [[1.0\xff]]}', "UTF-8")
_file_case("yaml-non-utf8", b"means: [[1.0, \xfe]]\n", "UTF-8", ".yaml")
_file_case("json-weights-inf", '{"means": [[1], [2]], "weights": [1e309, 1]}', "weights")
_file_case("json-weights-negative", '{"means": [[1], [2]], "weights": [-1, 2]}', "weights")
_file_case("json-weights-zero", '{"means": [[1], [2]], "weights": [0, 0]}', "weights")
_file_case("json-weights-length", '{"means": [[1], [2]], "weights": [1]}', "weights")
_file_case("json-means-string", '{"means": "abc"}', "means")
_file_case("json-means-bool", '{"means": [[true, 1]]}', "means")
_file_case("json-means-dict", '{"means": {"a": 1}}', "means")
_file_case("json-means-null-entry", '{"means": [[null, 1]]}', "means")
_file_case("json-means-ragged", '{"means": [[1, 2], [1]]}', "means")
_file_case("json-means-missing", '{"covs": 1}', "means")
_file_case("json-top-list", "[1, 2]", "mapping")
_file_case("json-unknown-field", '{"means": [[1]], "colour": 1}', "colour")
_file_case("json-covs-negative", '{"means": [[1], [2]], "covs": -1}', "covs")
_file_case("json-covs-nan", '{"means": [[1], [2]], "covs": NaN}', "covs")
_file_case("json-syntax", '{"means": [[1]', "parse")
_file_case("yaml-python-tag", "means: !!python/object/apply:os.system ['true']\n", "parse", ".yaml")
_file_case("suffix", '{"means": [[1]]}', r"\.json, \.yaml", ".txt")
case("mixture_from_dict-not-mapping", lambda: mixture_from_dict([1]), "mapping")
case("mixture_from_dict-means-inf", lambda: mixture_from_dict({"means": [[INF]]}), "means")


@pytest.mark.parametrize("fn, pattern", CASES)
def test_bad_input_raises_value_error_naming_the_argument(fn, pattern):
    with pytest.raises(ValueError) as info:
        fn()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


def test_suite_size():
    assert len(CASES) >= 200


def test_large_finite_weights_are_normalised_without_overflow(tmp_path):
    # 1e308 + 1e308 overflows a float: scale-free normalisation gives the exact weights (1/2, 1/2).
    path = tmp_path / "m.json"
    path.write_text('{"means": [[1], [2]], "weights": [1e308, 1e308]}')
    assert load_mixture(path).weights.tolist() == [0.5, 0.5]


def test_infinite_snr_is_still_time_zero():
    # inf is a meaningful level (snr = inf is clean data); only NaN is refused.
    assert ou_time(snr=INF) == 0.0 and math.isinf(ou_time(sigma=INF))
