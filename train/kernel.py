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

The centres are stored in int8 with one power-of-two scale per feature (:func:`int8_columns`, kept by
:class:`train.models.d2s.KernelHead`): they are most of the head's size. The fit solves with the rounded centres,
so the stored head is exactly the fitted one.

Two icrt extensions, both chosen inside the same cross-validation (docs/default_model.md):

- ``cue_dims``: the last columns are a few hand-made cues (the colour counts) beside thousands of deep features.
  Standardised like the rest they would carry a negligible share of the distance, so their columns are scaled
  for the cue block to hold a share (``CUE_SHARES``) of the expected squared distance, the share picked by CV.
- ``target="category"``: Savoias scores are comparable only within a category. The head regresses 1 + C columns
  at once, the within-category standardised score and a one-hot of the category, and scores
  ``softmax(SHARPNESS * affinities) . category means + mean category sd * z`` (:class:`KernelHead`'s category
  mode). No category is needed at inference.
"""
from __future__ import annotations

import numpy as np

from icrt.train.ridge import folds
from icrt.train.ridge import standardise as _standardise

GAMMAS = (0.35, 0.5, 0.7)  # g: gamma = g / dim
LAMBDAS = (0.1, 0.15, 0.3)
CUE_SHARES = (0.02, 0.035, 0.05, 0.08)  # the cue block's share of the expected squared distance
SHARPNESS = 10.0  # category mode: softmax(SHARPNESS * affinities); affinities are one-hot regressions (~0..1)
TARGETS = ("score", "category")


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd per column; a column (nearly) constant in training gets sd 1: it carries nothing to the fit, and
    dividing by ~0 would blow an input's tiny deviation there (fp16 noise on a dead ReLU channel) up to a distance
    that zeroes every kernel value."""
    mu, sd = _standardise(x)
    return mu, np.where(sd < 1e-4, 1.0, sd)


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)


def int8_columns(z) -> tuple[np.ndarray, np.ndarray]:
    """``z`` [n, dim] as int8 codes and one power-of-two scale per column (``z ~ codes * scale``), the scale the
    smallest that holds the column's largest magnitude in +-127. Powers of two keep ``codes * scale`` exact in fp32
    and fp16 (the export stores such a constant back as int8 losslessly, ``export.onnx_export.store_exact``), and
    re-quantising stored values gives the same codes and scales."""
    z = np.asarray(z, np.float64)
    peak = np.abs(z).max(0) if len(z) else np.zeros(z.shape[1])
    scale = np.exp2(np.ceil(np.log2(np.where(peak > 0, peak, 1.0) / 127)))
    return np.clip(np.rint(z / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def as_stored(z: np.ndarray) -> np.ndarray:
    """Standardised features as the head stores them (:func:`int8_columns`), back in float64."""
    codes, scale = int8_columns(z)
    return codes * scale.astype(np.float64)


def solve(k: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Dual coefficients and bias of kernel ridge on the kernel matrix ``k`` of the training samples (``y``: one
    target column, or several solved together)."""
    ym = y.mean(0)
    return np.linalg.solve(k + lam * np.eye(len(y)), y - ym), ym


def centres_of(x: np.ndarray, x_flip: np.ndarray | None) -> np.ndarray:
    """One training sample per image: its features, averaged with its mirror image's when given."""
    return x if x_flip is None else 0.5 * (x + x_flip)


class Targets:
    """What the head regresses for ``target`` and how its outputs become a score.
    score: the scores. category: [z, one-hot(category)], z = (y - mean_c) / sd_c within the category."""

    def __init__(self, y, groups, target: str = "score"):
        if target not in TARGETS:
            raise ValueError(f"kernel target {target!r}: expected {' or '.join(TARGETS)}")
        y = np.asarray(y, np.float64)
        self.target = target
        if target == "score":
            self.columns, self.levels, self.spread = y, None, 0.0
            return
        groups = np.asarray([str(g) for g in groups])
        cats = sorted(set(groups))
        self.levels = np.array([y[groups == c].mean() for c in cats])
        sds = np.array([y[groups == c].std() for c in cats])
        self.spread = float(sds.mean())
        z = np.zeros_like(y)
        for c, sd in zip(cats, sds):
            m = groups == c
            z[m] = (y[m] - y[m].mean()) / sd if sd > 0 else 0.0
        onehot = (groups[:, None] == np.array(cats)[None]).astype(np.float64)
        self.columns = np.concatenate([z[:, None], onehot], 1)

    def score(self, out: np.ndarray) -> np.ndarray:
        return out if self.target == "score" else category_scores(out, self.levels, self.spread, SHARPNESS)


def category_scores(out: np.ndarray, levels, spread: float, sharpness: float) -> np.ndarray:
    """Category mode's score from the head's [z, affinities] (as :class:`KernelHead` computes it)."""
    s = sharpness * out[:, 1:]
    q = np.exp(s - s.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return q @ levels + spread * out[:, 0]


def predict(fit: dict, x: np.ndarray) -> np.ndarray:
    """Scores of ``x`` by a :func:`fit_head` result, as the exported head gives them (clamped to [0, 1])."""
    out = np.exp(-fit["gamma"] * sq_distances((x - fit["mean"]) / fit["std"], fit["centres"])) @ fit["alpha"] + fit["bias"]
    if fit["target"] == "category":
        out = category_scores(out, fit["levels"], fit["spread"], fit["sharpness"])
    return np.clip(out, 0.0, 1.0)


def cue_scale(dim: int, cue_dims: int, share: float | None) -> np.ndarray:
    """Per-column factors on standardised features: the last ``cue_dims`` columns scaled for their block to hold
    ``share`` of the expected squared distance (each standardised column holds the same), the others 1."""
    s = np.ones(dim)
    if cue_dims and share is not None:
        n_o = dim - cue_dims
        s[dim - cue_dims:] = np.sqrt(share * n_o / ((1 - share) * cue_dims))
    return s


def cross_validate(x, y, groups, gammas=GAMMAS, lambdas=LAMBDAS, k: int = 5, x_flip=None, target: str = "score",
                   cue_dims: int = 0, cue_shares=CUE_SHARES) -> list[dict]:
    """Pooled and per-group SRCC of every (g, lam[, cue share]) by stratified k-fold CV; mirrors (``x_flip``) are
    averaged into the training centres (held-out images are scored as they come, unmirrored)."""
    import icrt.train.metrics as metrics

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    groups = list(groups)
    fold = folds(groups, k)
    dim = x.shape[1]
    shares = tuple(cue_shares) if cue_dims else (None,)
    preds = {(g, lam, sh): np.empty(len(y)) for sh in shares for g in gammas for lam in lambdas}
    for f in range(k):
        tr, te = fold != f, fold == f
        xt = centres_of(x[tr], None if x_flip is None else x_flip[tr])
        t = Targets(y[tr], [groups[i] for i in np.flatnonzero(tr)], target)
        mu, sd = standardise(xt)
        for sh in shares:
            c = cue_scale(dim, cue_dims, sh)
            zt, ze = as_stored((xt - mu) / sd * c), (x[te] - mu) / sd * c
            d_tt, d_et = sq_distances(zt, zt), sq_distances(ze, zt)
            for g in gammas:
                k_tt, k_et = np.exp(-g / dim * d_tt), np.exp(-g / dim * d_et)
                for lam in lambdas:
                    a, b = solve(k_tt, t.columns, lam)
                    preds[(g, lam, sh)][te] = t.score(k_et @ a + b)
    rows = []
    for (g, lam, sh), pred in preds.items():
        rep = metrics.report(pred, y, groups)
        rows.append({"g": g, "lambda": lam, "cue_share": sh, "srcc": rep["srcc"],
                     "mean_category_srcc": rep["mean_category_srcc"]})
    return rows


def fit_head(x, y, groups, gammas=GAMMAS, lambdas=LAMBDAS, k: int = 5, x_flip=None, target: str = "score",
             cue_dims: int = 0, cue_shares=CUE_SHARES) -> dict:
    """Choose (g, lam[, cue share]) by CV (pooled + mean per-group SRCC), fit on everything; returns what
    :meth:`train.models.d2s.KernelHead.set` takes, the choice with its CV figures, and the CV table."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    shares = tuple(cue_shares) if cue_dims else (None,)
    grid = len(gammas) * len(lambdas) * len(shares) > 1 and len(y) >= 2 * k
    cv = cross_validate(x, y, groups, gammas, lambdas, k, x_flip, target, cue_dims, shares) if grid else []
    best = (max(cv, key=lambda r: r["srcc"] + r["mean_category_srcc"]) if cv else
            {"g": gammas[0], "lambda": lambdas[0], "cue_share": shares[0], "srcc": float("nan"),
             "mean_category_srcc": float("nan")})
    xt = centres_of(x, x_flip)
    t = Targets(y, groups, target)
    mu, sd = standardise(xt)
    sd = sd / cue_scale(x.shape[1], cue_dims, best["cue_share"])  # the cue scaling folded into the standardisation
    zt = as_stored((xt - mu) / sd)
    gamma = best["g"] / x.shape[1]
    alpha, bias = solve(np.exp(-gamma * sq_distances(zt, zt)), t.columns, best["lambda"])
    return {"g": best["g"], "lambda": best["lambda"], "cue_share": best["cue_share"], "cv_srcc": best["srcc"],
            "cv_mean_category_srcc": best["mean_category_srcc"], "cv": cv, "target": target,
            "mean": mu, "std": sd, "centres": zt, "alpha": alpha, "gamma": gamma, "bias": bias,
            "levels": t.levels, "spread": t.spread, "sharpness": SHARPNESS if target == "category" else 0.0}
