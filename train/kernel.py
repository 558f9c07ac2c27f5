"""Closed-form RBF kernel ridge heads on frozen features (``--fit kernel``).

On Savoias' ~1k images, a kernel head on the same frozen EfficientNet-Lite statistics beats the linear ridge
head by ~0.02 SRCC in cross-validation (docs/default_model.md): complexity is not linear in these features.
The fit is exact: features standardised, ``K = exp(-gamma |z_i - z_j|^2)`` with ``gamma = g / dim`` (``g`` is
scale-free: the mean squared distance of standardised features is ~2 dim), dual coefficients from
``(K + lam I) a = y - mean(y)``, and ``(g, lam)`` chosen by stratified k-fold cross-validation on the training
images only (pooled + mean per-group SRCC). Targets are the raw scores (logit targets, which the linear head
uses, lost 0.005-0.008 SRCC here). A training image's centre is the mean of its features and its mirror
image's: as good in cross-validation as both as separate samples (0.868 / 0.874 vs 0.868 / 0.874 pooled / per
category), at half the centres, i.e. half the head's size.

The centres are stored in fp16 by :class:`train.models.d2s.KernelHead`; the fit solves with the rounded
centres, so the stored head is exactly the fitted one.
"""
from __future__ import annotations

import numpy as np

from icrt.train.ridge import folds, standardise

GAMMAS = (0.35, 0.5, 0.7)  # g: gamma = g / dim
LAMBDAS = (0.1, 0.15, 0.3)


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)


def as_stored(z: np.ndarray) -> np.ndarray:
    """Standardised features as the head stores them (fp16), back in float64."""
    return z.astype(np.float16).astype(np.float64)


def solve(k: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Dual coefficients and bias of kernel ridge on the kernel matrix ``k`` of the training samples."""
    ym = float(y.mean())
    return np.linalg.solve(k + lam * np.eye(len(y)), y - ym), ym


def centres_of(x: np.ndarray, x_flip: np.ndarray | None) -> np.ndarray:
    """One training sample per image: its features, averaged with its mirror image's when given."""
    return x if x_flip is None else 0.5 * (x + x_flip)


def cross_validate(x, y, groups, gammas=GAMMAS, lambdas=LAMBDAS, k: int = 5, x_flip=None) -> list[dict]:
    """Pooled and per-group SRCC of every (g, lam) by stratified k-fold CV; mirrors (``x_flip``) are averaged
    into the training centres (held-out images are scored as they come, unmirrored)."""
    import icrt.train.metrics as metrics

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    fold = folds(groups, k)
    dim = x.shape[1]
    preds = {(g, lam): np.empty(len(y)) for g in gammas for lam in lambdas}
    for f in range(k):
        tr, te = fold != f, fold == f
        xt, yt = centres_of(x[tr], None if x_flip is None else x_flip[tr]), y[tr]
        mu, sd = standardise(xt)
        zt, ze = as_stored((xt - mu) / sd), (x[te] - mu) / sd
        d_tt, d_et = sq_distances(zt, zt), sq_distances(ze, zt)
        for g in gammas:
            k_tt, k_et = np.exp(-g / dim * d_tt), np.exp(-g / dim * d_et)
            for lam in lambdas:
                a, b = solve(k_tt, yt, lam)
                preds[(g, lam)][te] = k_et @ a + b
    rows = []
    for (g, lam), pred in preds.items():
        rep = metrics.report(pred, y, list(groups))
        rows.append({"g": g, "lambda": lam, "srcc": rep["srcc"], "mean_category_srcc": rep["mean_category_srcc"]})
    return rows


def fit_head(x, y, groups, gammas=GAMMAS, lambdas=LAMBDAS, k: int = 5, x_flip=None) -> dict:
    """Choose (g, lam) by CV (pooled + mean per-group SRCC), fit on everything; returns what
    :meth:`train.models.d2s.KernelHead.set` takes, the choice with its CV figures, and the CV table."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    grid = len(gammas) * len(lambdas) > 1 and len(y) >= 2 * k
    cv = cross_validate(x, y, groups, gammas, lambdas, k, x_flip) if grid else []
    best = (max(cv, key=lambda r: r["srcc"] + r["mean_category_srcc"]) if cv else
            {"g": gammas[0], "lambda": lambdas[0], "srcc": float("nan"), "mean_category_srcc": float("nan")})
    xt, yt = centres_of(x, x_flip), y
    mu, sd = standardise(xt)
    zt = as_stored((xt - mu) / sd)
    gamma = best["g"] / x.shape[1]
    alpha, bias = solve(np.exp(-gamma * sq_distances(zt, zt)), yt, best["lambda"])
    return {"g": best["g"], "lambda": best["lambda"], "cv_srcc": best["srcc"],
            "cv_mean_category_srcc": best["mean_category_srcc"], "cv": cv,
            "mean": mu, "std": sd, "centres": zt, "alpha": alpha, "gamma": gamma, "bias": bias}
