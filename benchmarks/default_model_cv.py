"""Which default model? Repeated, nested 5-fold cross-validation of the candidates inside the development part.

    python -m benchmarks.default_model_cv --data ../shared/data/savoias/labels.csv --work runs/default-cv

Every development image (the seeded 80% of ``train.recipes.default_model``; the held-out 20% is never read here)
and its mirror go once through each frozen backbone with the runtime's own decode (JPEG draft 0.5, bilinear:
``benchmarks.head_probe.extract``), and once through the in-graph colour counts (``ColourCounts``, as exported);
everything is cached in WORK. Each row then takes some of these columns and is judged by stratified 5-fold
cross-validation repeated with seeds 0, 1, 2. The head is the trainer's own (``train.kernel.fit_head``): its
(g, lambda[, cue share]) are chosen by its inner 5-fold CV on each outer training part only, so every figure is
of images the whole fit never saw. Figures per row: pooled SRCC and mean per-category SRCC of the out-of-fold
predictions (mean over the 3 seeds), and the paired gain over the first row per outer fold (mean, sd, folds
up of 15). Prints a table, writes ``WORK/default_model_cv.json``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from icrt.benchmarks.backbone_probe import run_features
from icrt.benchmarks.head_probe import ALL, extract
from icrt.runtime.base.files import write_json

LITE0, LITE1 = "tf_efficientnet_lite0", "tf_efficientnet_lite1"
STATS = ("mean", "relu")
FULL, SLIM = (2, None), (3, ("mean",))  # (first stage, statistics of the last stage: None = STATS)
ROWS = [  # name, backbones, stages, colour counts, kernel target
    ("lite0 (the previous default)", (LITE0,), FULL, False, "score"),
    ("lite1", (LITE1,), FULL, False, "score"),
    ("lite0 + lite1", (LITE0, LITE1), FULL, False, "score"),
    ("lite0 + colours", (LITE0,), FULL, True, "score"),
    ("lite0 + lite1 + colours", (LITE0, LITE1), FULL, True, "score"),
    ("lite0 + lite1, category targets", (LITE0, LITE1), FULL, False, "category"),
    ("lite0 + colours, category targets", (LITE0,), FULL, True, "category"),
    ("lite0 + lite1 + colours, category targets", (LITE0, LITE1), FULL, True, "category"),
    ("the same from stage 3, last stage mean only (the default)", (LITE0, LITE1), SLIM, True, "category"),
]
SEEDS = (0, 1, 2)
K = 5
SIZE, DRAFT, INTERPOLATION = 384, 0.5, "bilinear"  # the recipe's (train.recipes.default_model.PREPROCESSING)
BITS, STRIDE = (3, 4, 5), 2  # the recipe's --colour-counts 3,4,5 --colour-stride 2


def columns(widths: list[int], first: int, last) -> np.ndarray:
    """Indices of STATS of the stages from ``first`` on (``last``: the last stage's statistics) in head_probe's
    cache layout (stages from 2 on, per stage every statistic of ALL in turn)."""
    out, start = [], 0
    for i, w in enumerate(widths):
        stage = 2 + i
        wanted = (last or STATS) if i == len(widths) - 1 else STATS
        for s in ALL:
            if stage >= first and s in wanted:
                out.extend(range(start, start + w))
            start += w
    return np.array(out)


def colour_counts(samples, cache: str) -> np.ndarray:
    if os.path.isfile(cache):
        return np.load(cache)["cues"]
    from icrt.train.models.colours import ColourCounts
    from icrt.train.weights import preprocessing_for

    prep = preprocessing_for(LITE0, "imagenet")
    module = ColourCounts(prep["mean"], prep["std"], BITS, STRIDE).eval()
    cues, _ = run_features(module, samples, SIZE, prep, cache + ".onnx", 8, DRAFT, INTERPOLATION)
    np.savez(cache, cues=cues)
    return cues


def nested_cv(x, xf, y, cats, cue_dims: int, target: str) -> np.ndarray:
    """Out-of-fold predictions [seeds, n]: the trainer's fit_head (inner CV included) on each outer training part."""
    from icrt.train.kernel import fit_head, predict
    from icrt.train.ridge import folds

    oof = np.empty((len(SEEDS), len(y)))
    for si, seed in enumerate(SEEDS):
        fold = folds(list(cats), K, seed)
        for f in range(K):
            tr, te = fold != f, fold == f
            k = fit_head(x[tr], y[tr], list(cats[tr]), x_flip=xf[tr], target=target, cue_dims=cue_dims)
            oof[si, te] = predict(k, x[te])
    return oof


def figures(oof, y, cats, base=None) -> dict:
    from icrt.train.metrics import report
    from icrt.train.ridge import folds

    per_seed = [report(p, y, list(cats)) for p in oof]
    out = {"srcc": float(np.mean([r["srcc"] for r in per_seed])),
           "mean_category_srcc": float(np.mean([r["mean_category_srcc"] for r in per_seed]))}
    if base is not None:
        gains = []
        for si, seed in enumerate(SEEDS):
            fold = folds(list(cats), K, seed)
            for f in range(K):
                m = fold == f
                a, b = report(oof[si, m], y[m], list(cats[m])), report(base[si, m], y[m], list(cats[m]))
                gains.append((a["srcc"] - b["srcc"], a["mean_category_srcc"] - b["mean_category_srcc"]))
        g = np.array(gains)
        out["gain"] = {"srcc": float(g[:, 0].mean()), "mean_category_srcc": float(g[:, 1].mean()),
                       "sd": [float(g[:, 0].std()), float(g[:, 1].std())],
                       "folds_up": [int((g[:, 0] > 0).sum()), int((g[:, 1] > 0).sum())], "folds": len(g)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.default_model_cv", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/savoias/labels.csv")
    p.add_argument("--work", default="runs/default-cv")
    p.add_argument("--rows", help="comma-separated row numbers (1-based; default all; row 1 always runs)")
    args = p.parse_args(argv)
    from icrt.train.recipes.default_model import split_samples

    os.makedirs(args.work, exist_ok=True)
    dev = split_samples(args.data)[0]
    y = np.array([s.score for s in dev], np.float64)
    cats = np.array([s.category or "" for s in dev])
    feats = {}
    for bb in (LITE0, LITE1):
        widths, f, ff = extract(dev, bb, SIZE, os.path.join(args.work, f"{bb}-{SIZE}.npz"), draft=DRAFT,
                                interpolation=INTERPOLATION)
        feats[bb] = {stages: (f[:, columns(widths, *stages)].astype(np.float64),
                              ff[:, columns(widths, *stages)].astype(np.float64)) for stages in (FULL, SLIM)}
    cues = colour_counts(dev, os.path.join(args.work, f"colours-{SIZE}.npz")).astype(np.float64)
    wanted = {1} | ({int(r) for r in args.rows.split(",")} if args.rows else set(range(1, len(ROWS) + 1)))
    results, base = {}, None
    print(f"{len(dev)} development images; {len(SEEDS)} x {K}-fold CV, nested; pooled / mean per-category SRCC")
    for i, (name, backbones, stages, colours, target) in enumerate(ROWS, 1):
        if i not in wanted:
            continue
        t0 = time.time()
        x = np.concatenate([feats[b][stages][0] for b in backbones] + ([cues] if colours else []), 1)
        xf = np.concatenate([feats[b][stages][1] for b in backbones] + ([cues] if colours else []), 1)  # same counts
        oof = nested_cv(x, xf, y, cats, len(BITS) if colours else 0, target)
        r = figures(oof, y, cats, base)
        base = oof if base is None else base
        results[name] = {**r, "columns": int(x.shape[1]), "seconds": round(time.time() - t0)}
        gain = r.get("gain")
        print(f"{name:58s} {r['srcc']:.4f} / {r['mean_category_srcc']:.4f}" +
              (f"   gain {gain['srcc']:+.4f} / {gain['mean_category_srcc']:+.4f} (fold sd {gain['sd'][0]:.3f} / "
               f"{gain['sd'][1]:.3f}; up {gain['folds_up'][0]} / {gain['folds_up'][1]} of {gain['folds']})"
               if gain else "") + f"   [{time.time() - t0:.0f} s]", flush=True)
    write_json(os.path.join(args.work, "default_model_cv.json"), {"rows": results, "seeds": list(SEEDS), "k": K,
                                                                    "size": SIZE, "draft": DRAFT,
                                                                    "interpolation": INTERPOLATION})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
