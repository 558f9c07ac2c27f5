"""Accuracy metrics for image complexity assessment.

Two RMAE definitions are in use: IC9600 (and D2S's tables) define RMAE = sqrt(mean |e|)
(:func:`rmae_ic9600`); the CM-SSA reference code reports plain mean |e| under that name (:func:`mae`).
``rmae`` in reports is the IC9600 definition; ``mae`` is reported beside it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import stats


def _pair(pred, target):
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in length: {p.shape} vs {t.shape}")
    return p, t


def _corr(fn, p, t) -> float:
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(fn(p, t)[0])


def srcc(pred, target) -> float:
    return _corr(stats.spearmanr, *_pair(pred, target))


def plcc(pred, target) -> float:
    """Pearson correlation of raw predictions (no logistic fit, as the ICA papers report)."""
    return _corr(stats.pearsonr, *_pair(pred, target))


def krcc(pred, target) -> float:
    return _corr(stats.kendalltau, *_pair(pred, target))


def rmse(pred, target) -> float:
    p, t = _pair(pred, target)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred, target) -> float:
    """Mean absolute error; what the CM-SSA reference code calls RMAE."""
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def rmae_ic9600(pred, target) -> float:
    """IC9600's RMAE: sqrt(mean |e|)."""
    return float(np.sqrt(mae(pred, target)))


def summary(pred, target) -> dict:
    return {
        "n": int(len(np.ravel(pred))),
        "srcc": srcc(pred, target),
        "plcc": plcc(pred, target),
        "krcc": krcc(pred, target),
        "rmse": rmse(pred, target),
        "mae": mae(pred, target),
        "rmae": rmae_ic9600(pred, target),
    }


def report(pred, target, categories=None) -> dict:
    """Pooled metrics, plus ``per_category`` and the per-category means when categories are given."""
    out = summary(pred, target)
    if categories is not None and any(c is not None for c in categories):
        groups = defaultdict(list)
        for i, c in enumerate(categories):
            groups[c].append(i)
        p, t = _pair(pred, target)
        per = {str(c): summary(p[idx], t[idx]) for c, idx in sorted(groups.items(), key=lambda kv: str(kv[0]))}
        out["per_category"] = per
        for k in ("srcc", "plcc"):
            vals = [m[k] for m in per.values() if np.isfinite(m[k])]
            out[f"mean_category_{k}"] = float(np.mean(vals)) if vals else float("nan")
    return out


# --- agreement between two forms of one model (export parity, calibration) ------------------------------
def _or_none(v: float) -> float | None:
    return None if not np.isfinite(v) else v


def agreement(reference, scores) -> dict:
    """How closely ``scores`` follow ``reference`` (same images): SRCC (None when undefined) and |difference|."""
    r, s = _pair(reference, scores)
    d = np.abs(r - s)
    return {"n": int(len(r)), "srcc": _or_none(srcc(r, s)),
            "max_abs_diff": float(d.max()) if len(d) else 0.0, "mean_abs_diff": float(d.mean()) if len(d) else 0.0}


def label_agreement(scores, labels) -> dict:
    return {"label_srcc": _or_none(srcc(scores, labels)), "label_plcc": _or_none(plcc(scores, labels))}


def format_line(m: dict) -> str:
    s = (f"SRCC {m['srcc']:.4f}  PLCC {m['plcc']:.4f}  KRCC {m['krcc']:.4f}  "
         f"RMSE {m['rmse']:.4f}  RMAE {m['rmae']:.4f}  MAE {m['mae']:.4f}")
    if "mean_category_srcc" in m:
        s += f"  | per-category mean SRCC {m['mean_category_srcc']:.4f}"
    return s
