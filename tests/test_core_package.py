import subprocess
import sys

import pytest

import critwin


def test_every_export_resolves_to_the_module_named():
    for name, module in critwin._EXPORTS.items():
        value = getattr(critwin, name)
        assert getattr(sys.modules[module], name) is value


def test_import_is_light():
    # ``import critwin`` must not pull diffusers or matplotlib: they load when a model or plot is used.
    code = "import sys, critwin; print(sorted(m for m in ('diffusers', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("k, n", [(0, 1), (0, 17), (3, 17), (17, 17), (480, 500), (1, 10_000)])
@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_wilson_bounds_equal_scipy(k, n, level):
    """The one Wilson interval against scipy's binomtest for integer counts."""
    from scipy.stats import binomtest, norm

    from critwin._stats import wilson_bounds

    ref = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    low, high = wilson_bounds(k / n, n, norm.ppf(0.5 + level / 2))
    assert low == pytest.approx(ref.low, abs=1e-12)
    assert high == pytest.approx(ref.high, abs=1e-12)


@pytest.mark.parametrize("k, n", [(0, 1), (0, 17), (3, 17), (17, 17), (480, 500), (1, 10_000)])
@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_clopper_pearson_bounds_equal_scipy(k, n, level):
    """The one exact binomial interval against scipy's binomtest (method "exact")."""
    from scipy.stats import binomtest

    from critwin._stats import clopper_pearson_bounds

    ref = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    low, high = clopper_pearson_bounds(k, n, level)
    assert low == pytest.approx(ref.low, abs=1e-10)
    assert high == pytest.approx(ref.high, abs=1e-10)
    lows, highs = clopper_pearson_bounds([k, k], n, level)  # broadcasts
    assert lows.tolist() == [low, low] and highs.tolist() == [high, high]
