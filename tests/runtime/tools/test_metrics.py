"""The runtime's accuracy figures (runtime/tools/metrics.py): numpy alone, equal to scipy's where scipy is installed
(the slim CI environment has none: those comparisons are skipped there)."""
import importlib.util
import itertools
import time
import warnings

import numpy as np
import pytest

import icrt.runtime.tools.metrics as metrics

needs_scipy = pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy is not installed")


def _data_with_ties(rng, n):
    """Scores on a coarse grid (many ties) against labels with their own ties, and a few pairs of every kind."""
    p = rng.integers(0, max(2, n // 4), n) / 7.0
    t = np.round(p + rng.normal(0, 0.3, n), 1)
    return p, t


@needs_scipy
@pytest.mark.parametrize("seed", range(20))
def test_correlations_equal_scipy_within_1e_9_on_data_with_ties(seed):
    from scipy import stats

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    p, t = _data_with_ties(rng, n) if seed % 2 else (rng.random(n), rng.random(n))
    assert metrics.rankdata(p) == pytest.approx(stats.rankdata(p), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about near-constant input
        expected = {"srcc": stats.spearmanr(p, t)[0], "plcc": stats.pearsonr(p, t)[0], "krcc": stats.kendalltau(p, t)[0]}
    for name, want in expected.items():
        got = getattr(metrics, name)(p, t)
        assert (np.isnan(got) and np.isnan(want)) or abs(got - want) <= 1e-9, (name, got, want)


def test_average_ranks_and_kendall_tau_b_by_their_definitions():
    """Without scipy too: ties share the mean of their ranks, and tau-b counts pairs as its formula says."""
    assert list(metrics.rankdata([0.3, 0.1, 0.3, 0.2, 0.3])) == [4.0, 1.0, 4.0, 2.0, 4.0]
    rng = np.random.default_rng(3)
    p, t = _data_with_ties(rng, 60)
    conc = disc = xt = yt = 0
    for i, j in itertools.combinations(range(60), 2):
        s = np.sign(p[i] - p[j]) * np.sign(t[i] - t[j])
        conc, disc = conc + (s > 0), disc + (s < 0)
        xt, yt = xt + (p[i] == p[j]), yt + (t[i] == t[j])
    tot = 60 * 59 // 2
    assert metrics.krcc(p, t) == pytest.approx((conc - disc) / np.sqrt((tot - xt) * (tot - yt)), abs=1e-12)
    r = lambda a: metrics.rankdata(a) - metrics.rankdata(a).mean()  # noqa: E731
    assert metrics.srcc(p, t) == pytest.approx(r(p) @ r(t) / np.sqrt((r(p) @ r(p)) * (r(t) @ r(t))), abs=1e-12)


def test_undefined_correlations_are_nan():
    for p, t in (([0.5], [0.1]), ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]), ([0.1, 0.2], [0.3, 0.3]),
                 ([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3])):
        assert all(np.isnan(f(p, t)) for f in (metrics.srcc, metrics.plcc, metrics.krcc)), (p, t)
    assert metrics.plcc([0.1, 0.2], [0.4, 0.3]) == -1.0  # two values: exactly +-1, as scipy


def test_kendall_is_fast_at_ten_thousand_images():
    rng = np.random.default_rng(0)
    p, t = _data_with_ties(rng, 10_000)
    started = time.perf_counter()
    metrics.krcc(p, t)
    assert time.perf_counter() - started < 1.0  # milliseconds here: O(n log^2 n), never the n^2 pairs


def test_report_leaves_groups_too_small_to_measure_out():
    p = [0.1, 0.2, 0.3, 0.9, 0.5, 0.4, 0.6]
    t = [0.1, 0.2, 0.3, 0.1, 0.5, 0.5, 0.7]
    r = metrics.report(p, t, ["x", "x", "x", "y", "y", "z", "z"], min_images=metrics.MIN_IMAGES)
    assert r["computable"] and r["n"] == 7
    assert r["per_category"]["x"]["computable"] and r["per_category"]["x"]["srcc"] == pytest.approx(1.0)
    assert r["per_category"]["y"]["computable"] is False and np.isnan(r["per_category"]["y"]["rmse"])
    assert r["mean_category_srcc"] == pytest.approx(1.0)  # x alone: y and z are not computable
    assert "computable" not in metrics.report(p, t, ["x"] * 7)["per_category"]["x"]  # training's reports as before
