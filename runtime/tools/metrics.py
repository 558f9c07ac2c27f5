"""Accuracy figures of image-complexity scores against labels, in numpy alone: the one definition that ``icrt eval``,
training, ``python -m train.evaluate``, export parity and the recipe all use (the runtime has no scipy).

The correlations are scipy's (``spearmanr``, ``pearsonr``, ``kendalltau`` with its default tau-b), computed the same
way, and agree with them within 1e-9 (tests/runtime/tools/test_metrics.py): ties get their average rank; a
correlation that is undefined (fewer than 2 values, a constant side, a value that is not finite) is NaN. Kendall's
tau-b counts discordant pairs by merging sorted runs, O(n log^2 n): 10^4 images take milliseconds.

Two RMAE definitions are in use: IC9600 (and D2S's tables) define RMAE = sqrt(mean |e|) (:func:`rmae_ic9600`);
the CM-SSA reference code reports plain mean |e| under that name (:func:`mae`). ``rmae`` in reports is the IC9600
definition; ``mae`` is reported beside it.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

MIN_IMAGES = 3  # icrt eval: fewer scored images than this in a group and its figures are not computable


def _pair(pred, target):
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in length: {p.shape} vs {t.shape}")
    return p, t


def _undefined(p, t) -> bool:
    """A correlation of these is not defined: fewer than 2 values, a NaN or infinity, a constant side."""
    return len(p) < 2 or not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))) or np.ptp(p) == 0 or np.ptp(t) == 0


def rankdata(a) -> np.ndarray:
    """Ranks from 1, ties given the mean of their ranks (``scipy.stats.rankdata``'s default, ``average``)."""
    a = np.asarray(a, np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]]  # the first of each run of equal values
    dense = np.cumsum(new)[np.argsort(order, kind="mergesort")]  # each value's group, 1..k
    ends = np.r_[np.nonzero(new)[0], len(a)]  # group g holds sorted positions ends[g-1] .. ends[g]-1
    return 0.5 * (ends[dense - 1] + 1 + ends[dense])


def _pearson(p, t) -> float:
    """As ``scipy.stats.pearsonr``: centred, scaled by the largest deviation before the norm, clipped to [-1, 1]."""
    pm, tm = p - p.mean(), t - t.mean()
    pm, tm = pm / np.abs(pm).max(), tm / np.abs(tm).max()
    r = float(np.clip(np.dot(pm / np.linalg.norm(pm), tm / np.linalg.norm(tm)), -1.0, 1.0))
    return float(round(r)) if len(p) == 2 else r


def srcc(pred, target) -> float:
    """Spearman's rank correlation: Pearson's of the average ranks."""
    p, t = _pair(pred, target)
    return float("nan") if _undefined(p, t) else _pearson(rankdata(p), rankdata(t))


def plcc(pred, target) -> float:
    """Pearson correlation of raw predictions (no logistic fit, as the ICA papers report)."""
    p, t = _pair(pred, target)
    return float("nan") if _undefined(p, t) else _pearson(p, t)


def _inversions(y: np.ndarray) -> int:
    """Pairs i < j with y[i] > y[j], for integers 0 <= y < len(y): bottom-up merge sort, each level's runs merged
    by one sort of (run, value) keys and the pairs counted by ``searchsorted`` against the left runs."""
    n = len(y)
    y = y.astype(np.int64)
    idx = np.arange(n, dtype=np.int64)
    total, width = 0, 1
    while width < n:
        run = idx // (2 * width)  # the merged run each element goes into
        left = (idx // width) % 2 == 0
        key = run * n + y  # sorted within each half-run, so the left halves' keys are sorted as they stand
        lk = key[left]
        rk, rrun = key[~left], run[~left]
        end = np.searchsorted(lk, (rrun + 1) * n, "left")  # where each right element's left half ends in lk
        total += int((end - np.searchsorted(lk, rk, "right")).sum())  # its left partners with a larger value
        y = np.sort(key) - run * n
        width *= 2
    return total


def _tied_pairs(dense: np.ndarray) -> int:
    counts = np.bincount(dense).astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def krcc(pred, target) -> float:
    """Kendall's tau-b (``scipy.stats.kendalltau``'s default): (concordant - discordant) over the geometric mean of
    the pairs untied on each side; discordant pairs counted in O(n log^2 n)."""
    p, t = _pair(pred, target)
    if _undefined(p, t):
        return float("nan")
    n = len(p)
    order = np.lexsort((t, p))  # by p, ties in p by t: within a tie in p no pair counts as discordant
    xd = np.unique(p, return_inverse=True)[1].ravel()[order]
    yd = np.unique(t, return_inverse=True)[1].ravel()[order]
    dis = _inversions(yd)
    xtie, ytie = _tied_pairs(xd), _tied_pairs(yd)
    joint = np.r_[True, (xd[1:] != xd[:-1]) | (yd[1:] != yd[:-1]), True]
    runs = np.diff(np.nonzero(joint)[0]).astype(np.int64)
    ntie = int((runs * (runs - 1) // 2).sum())  # pairs tied on both sides
    tot = n * (n - 1) // 2
    tau = (tot - xtie - ytie + ntie - 2 * dis) / np.sqrt(tot - xtie) / np.sqrt(tot - ytie)
    return float(min(1.0, max(-1.0, tau)))


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


FIGURES = ("srcc", "plcc", "krcc", "rmse", "mae", "rmae")  # what summary() gives besides n


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


def not_computable(n: int) -> dict:
    """A group with too few images: its count, every figure NaN (null in JSON), and ``computable`` False."""
    return {"n": int(n), **{k: float("nan") for k in FIGURES}, "computable": False}


def report(pred, target, categories=None, min_images: int | None = None) -> dict:
    """Pooled metrics, plus ``per_category`` and the per-category means (``mean_category_srcc`` / ``_plcc``) when
    categories are given. ``min_images`` (``icrt eval``: :data:`MIN_IMAGES`): a group with fewer images is
    :func:`not_computable`, left out of the means, and every group says whether it is (``computable``)."""
    def figures(p, t) -> dict:
        if min_images is None:
            return summary(p, t)
        return summary(p, t) | {"computable": True} if len(p) >= min_images else not_computable(len(p))

    p, t = _pair(pred, target)
    out = figures(p, t)
    if categories is not None and any(c is not None for c in categories):
        groups = defaultdict(list)
        for i, c in enumerate(categories):
            groups[c].append(i)
        per = {str(c): figures(p[idx], t[idx]) for c, idx in sorted(groups.items(), key=lambda kv: str(kv[0]))}
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
