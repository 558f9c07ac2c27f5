"""Agreement figures between precisions (and against labels), for export-report.json and the manifest."""
from __future__ import annotations

import numpy as np
from scipy import stats


def _corr(fn, a, b) -> float | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(fn(a, b)[0])


def agreement(reference, scores) -> dict:
    """How closely ``scores`` follow ``reference`` (same images): SRCC and |difference|."""
    r, s = np.asarray(reference, np.float64), np.asarray(scores, np.float64)
    if r.shape != s.shape:
        raise ValueError(f"score lists differ in length: {r.shape} vs {s.shape}")
    d = np.abs(r - s)
    return {"n": int(len(r)), "srcc": _corr(stats.spearmanr, r, s),
            "max_abs_diff": float(d.max()) if len(d) else 0.0, "mean_abs_diff": float(d.mean()) if len(d) else 0.0}


def label_agreement(scores, labels) -> dict:
    return {"label_srcc": _corr(stats.spearmanr, scores, labels), "label_plcc": _corr(stats.pearsonr, scores, labels)}
