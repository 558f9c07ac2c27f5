import itertools

import numpy as np
import pytest

import icrt.train.metrics as metrics


def _ranks(a):
    order = np.argsort(a)
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    return r


def test_correlations_match_their_definitions():
    rng = np.random.default_rng(0)
    t = rng.random(40)
    p = t + 0.3 * rng.random(40)
    pear = np.corrcoef(p, t)[0, 1]
    spear = np.corrcoef(_ranks(p), _ranks(t))[0, 1]  # no ties in continuous data
    conc = sum(np.sign((p[i] - p[j]) * (t[i] - t[j])) for i, j in itertools.combinations(range(40), 2))
    kend = conc / (40 * 39 / 2)
    assert metrics.plcc(p, t) == pytest.approx(pear, abs=1e-12)
    assert metrics.srcc(p, t) == pytest.approx(spear, abs=1e-12)
    assert metrics.krcc(p, t) == pytest.approx(kend, abs=1e-12)


def test_error_metrics_and_both_rmae_definitions():
    p, t = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.5, 0.5])
    assert metrics.rmse(p, t) == pytest.approx(np.sqrt((0.01 + 0 + 0.16) / 3))
    assert metrics.mae(p, t) == pytest.approx(0.5 / 3)  # what CM-SSA's code calls RMAE
    assert metrics.rmae_ic9600(p, t) == pytest.approx(np.sqrt(0.5 / 3))  # IC9600's RMAE


def test_report_has_per_category_and_means():
    p = [0.1, 0.2, 0.3, 0.9, 0.5, 0.1]
    t = [0.1, 0.2, 0.3, 0.1, 0.5, 0.9]
    r = metrics.report(p, t, ["x", "x", "x", "y", "y", "y"])
    assert r["per_category"]["x"]["srcc"] == pytest.approx(1.0)
    assert r["per_category"]["y"]["srcc"] == pytest.approx(-1.0)
    assert r["mean_category_srcc"] == pytest.approx(0.0)
    assert set(r) >= {"srcc", "plcc", "krcc", "rmse", "mae", "rmae", "n"}


def test_constant_prediction_gives_nan_not_crash():
    assert np.isnan(metrics.srcc([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))


def test_agreement_figures():
    a = np.array([0.1, 0.2, 0.3, 0.4])
    d = metrics.agreement(a, a + np.array([0, 0.01, 0, -0.02]))
    assert d["srcc"] == 1.0 and d["max_abs_diff"] == pytest.approx(0.02) and d["mean_abs_diff"] == pytest.approx(0.0075)
    assert metrics.agreement(a, a[::-1])["srcc"] == pytest.approx(-1.0)
    lab = metrics.label_agreement(a, [1, 2, 3, 5])
    assert lab["label_srcc"] == pytest.approx(1.0) and 0.9 < lab["label_plcc"] < 1.0
    assert metrics.agreement(np.ones(3), np.ones(3))["srcc"] is None  # constant: undefined, not NaN
