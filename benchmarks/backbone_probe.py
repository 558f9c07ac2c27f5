"""Frozen-backbone probes: which pretrained backbone, resolution and stages carry complexity?

    python -m benchmarks.backbone_probe --data ../shared/data/savoias/labels.csv --work runs/probe \
        --backbones tf_efficientnet_lite0,tf_efficientnet_lite1 --sizes 224,384,448

For each backbone and input side, every image goes through the runtime's preprocessing (square resize,
the backbone's own normalisation) and the frozen network once (and once mirrored); the mean and standard
deviation of every block's output (and of the final 1x1 head) are cached. A ridge head on chosen blocks is
then judged by 5-fold cross-validation **inside the development part** (the seeded 80% of
``benchmarks.default_model``); the held-out 20% is never read here. Prints a table and writes
``WORK/probe.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def stats_module(model):
    """The frozen network -> [mean, std] over space of every block stage's output and of the head."""
    import torch

    class BlockStats(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            m, out = self.m, []
            h = m.bn1(m.conv_stem(x))
            for stage in m.blocks:
                h = stage(h)
                out.append(torch.cat([h.mean((2, 3)), h.flatten(2).std(2)], 1))
            h = m.bn2(m.conv_head(h))
            out.append(torch.cat([h.mean((2, 3)), h.flatten(2).std(2)], 1))
            return torch.cat(out, 1)

    with torch.no_grad():  # channel counts of each stage, from a small forward
        h, dims = model.bn1(model.conv_stem(torch.zeros(1, 3, 64, 64))), []
        for stage in model.blocks:
            h = stage(h)
            dims.append(2 * h.shape[1])
    dims.append(2 * model.bn2.num_features)
    return BlockStats(model).eval(), dims


def extract(samples, backbone: str, size: int, cache: str, batch: int = 8):
    """Per-block statistics of every sample (and of its mirror), computed with onnxruntime; cached."""
    if os.path.isfile(cache):
        z = np.load(cache)
        return list(z["dims"]), z["feats"], z["flips"]
    import onnxruntime as ort
    import torch

    from runtime.preprocess import load_rgb, normalize, resize
    from train.weights import create_backbone, preprocessing_for

    prep = preprocessing_for(backbone, "imagenet")
    module, dims = stats_module(create_backbone(backbone, "imagenet"))
    onnx_path = cache + ".onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, size, size),), onnx_path, input_names=["x"], output_names=["f"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    feats, flips = [], []
    t0 = time.time()
    for i in range(0, len(samples), batch):
        imgs = [resize(load_rgb(s.image), size, size, prep["interpolation"]) for s in samples[i:i + batch]]
        x = normalize(np.stack(imgs), prep["mean"], prep["std"])
        feats.append(sess.run(None, {"x": x})[0])
        flips.append(sess.run(None, {"x": np.ascontiguousarray(x[..., ::-1])})[0])
    os.remove(onnx_path)
    feats, flips = np.concatenate(feats), np.concatenate(flips)
    assert feats.shape[1] == sum(dims), (feats.shape, dims)
    print(f"  {backbone} @ {size}: {len(samples)} images in {time.time() - t0:.0f} s", flush=True)
    np.savez(cache, dims=np.array(dims), feats=feats, flips=flips)
    return dims, feats, flips


def ridge_fit(x, y, alpha):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    ym = y.mean()
    k = z @ z.T
    a = np.linalg.solve(k + alpha * len(y) * np.eye(len(y)), y - ym)
    w = z.T @ a
    return w / sd, ym - (mu / sd) @ w


def cv_srcc(x, y, cats, alphas, folds=5, seed=0, x_flip=None):
    """5-fold CV inside the given set: pooled and mean per-category SRCC of the best alpha (and that alpha)."""
    from train import metrics

    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    for c in sorted(set(cats)):  # stratified folds
        idx = np.flatnonzero(np.asarray(cats) == c)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % folds
    best = None
    for alpha in alphas:
        pred = np.empty(len(y))
        for f in range(folds):
            tr, te = fold != f, fold == f
            xt, yt = x[tr], y[tr]
            if x_flip is not None:  # flips as extra training samples, averaged at test time
                xt, yt = np.concatenate([xt, x_flip[tr]]), np.concatenate([yt, yt])
            w, b = ridge_fit(xt, yt, alpha)
            pred[te] = x[te] @ w + b if x_flip is None else 0.5 * (x[te] + x_flip[te]) @ w + b
        rep = metrics.report(pred, y, cats)
        if best is None or rep["srcc"] > best[0]:
            best = (rep["srcc"], rep["mean_category_srcc"], alpha)
    return best


def main(argv=None) -> int:
    from benchmarks.default_model import split_samples

    p = argparse.ArgumentParser(prog="python -m benchmarks.backbone_probe", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/savoias/labels.csv")
    p.add_argument("--work", default="runs/probe")
    p.add_argument("--backbones", default="tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2")
    p.add_argument("--sizes", default="224,384,448")
    p.add_argument("--alphas", default="0.1,0.3,1,3,10,30")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    dev, _held = split_samples(args.data)
    y = np.array([s.score for s in dev])
    cats = [s.category for s in dev]
    alphas = [float(a) for a in args.alphas.split(",")]
    results = []
    for backbone in args.backbones.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            dims, all_feats, all_flips = extract(dev, backbone, size, os.path.join(args.work, f"{backbone}-{size}.npz"))
            edges = np.cumsum([0] + list(dims))
            feats = [all_feats[:, edges[i]:edges[i + 1]] for i in range(len(dims))]
            flips = [all_flips[:, edges[i]:edges[i + 1]] for i in range(len(dims))]
            n = len(feats)
            variants = {"final": [n - 1], "last block": [n - 2], "blocks 3+": list(range(2, n - 1)),
                        "blocks 3+ & head": list(range(2, n)), "blocks 4+ & head": list(range(3, n))}
            for vname, idx in variants.items():
                x = np.concatenate([feats[i] for i in idx], 1)
                xf = np.concatenate([flips[i] for i in idx], 1)
                for tta in (False, True):
                    s, m, a = cv_srcc(x, y, cats, alphas, x_flip=xf if tta else None)
                    row = {"backbone": backbone, "size": size, "features": vname, "dims": x.shape[1],
                           "flips": tta, "cv_srcc": round(s, 4), "cv_mean_category_srcc": round(m, 4), "alpha": a}
                    results.append(row)
                    print(f"{backbone:24s} {size:4d} {vname:18s} {x.shape[1]:5d} flips={int(tta)}  "
                          f"SRCC {s:.4f}  per-category {m:.4f}  alpha {a}", flush=True)
            with open(os.path.join(args.work, "probe.json"), "w") as f:
                json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
