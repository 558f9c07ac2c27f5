"""Frozen-backbone probes: which pretrained backbone, resolution and stages carry complexity?

    python -m benchmarks.backbone_probe --data ../shared/data/savoias/labels.csv --work runs/probe \
        --backbones tf_efficientnet_lite0,tf_efficientnet_lite1 --sizes 224,384,448

For each backbone and input side, every image goes through the runtime's preprocessing (square resize,
the backbone's own normalisation) and the frozen network once (and once mirrored); the mean and standard
deviation of every block's output (and of the final 1x1 head) are cached. A ridge head on chosen blocks is
then judged by 5-fold cross-validation **inside the development part** (the seeded 80% of
``train.recipes.default_model``); the held-out 20% is never read here. Prints a table and writes
``WORK/probe.json``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from icrt.runtime.base.files import write_json


def stats_module(model):
    """The frozen network -> [mean, std] over space of every block stage's output and of the 1x1 head
    (train.models.d2s walks the stages); also the width of each part."""
    import torch

    from icrt.train.models.d2s import mean_std, stage_outputs

    class BlockStats(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            stages = stage_outputs(self.m, x, 0)
            head = self.m.bn2(self.m.conv_head(stages[-1]))
            return torch.cat([mean_std(f) for f in stages + [head]], 1)

    module = BlockStats(model).eval()
    with torch.no_grad():  # channel counts of each part, from a small forward
        stages = stage_outputs(model, torch.zeros(1, 3, 64, 64), 0)
    return module, [2 * f.shape[1] for f in stages] + [2 * model.bn2.num_features]


def extract(samples, backbone: str, size: int, cache: str, batch: int = 8):
    """Per-block statistics of every sample (and of its mirror), computed with onnxruntime; cached."""
    if os.path.isfile(cache):
        z = np.load(cache)
        return list(z["dims"]), z["feats"], z["flips"]

    from icrt.train.weights import create_backbone, preprocessing_for

    prep = preprocessing_for(backbone, "imagenet")
    module, dims = stats_module(create_backbone(backbone, "imagenet"))
    t0 = time.time()
    feats, flips = run_features(module, samples, size, prep, cache + ".onnx", batch)
    assert feats.shape[1] == sum(dims), (feats.shape, dims)
    print(f"  {backbone} @ {size}: {len(samples)} images in {time.time() - t0:.0f} s", flush=True)
    np.savez(cache, dims=np.array(dims), feats=feats, flips=flips)
    return dims, feats, flips


def run_features(module, samples, size: int, prep: dict, onnx_path: str, batch: int = 8, draft: float = 1.0,
                 interpolation: str | None = None):
    """``module`` (images -> features) exported to ONNX at ``size`` and run by onnxruntime on every sample (the
    runtime's own decode + square resize, ``load_resized``, with JPEG ``draft`` and ``interpolation``, default the
    backbone's, and the backbone's normalisation) and on its mirror image: (features, mirrored)."""
    import onnxruntime as ort
    import torch

    from icrt.runtime.bundle.preprocessing import Preprocessing
    from icrt.runtime.scoring.preprocess import load_resized, normalize

    square = Preprocessing(resize="square", size=size, mean=tuple(prep["mean"]), std=tuple(prep["std"]),
                           interpolation=interpolation or prep["interpolation"], draft=draft)

    torch.onnx.export(module, (torch.zeros(1, 3, size, size),), onnx_path, input_names=["x"], output_names=["f"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    feats, flips = [], []
    for i in range(0, len(samples), batch):
        imgs = [load_resized(s.image, square)[0] for s in samples[i:i + batch]]
        x = normalize(np.stack(imgs), prep["mean"], prep["std"])
        feats.append(sess.run(None, {"x": x})[0])
        flips.append(sess.run(None, {"x": np.ascontiguousarray(x[..., ::-1])})[0])
    os.remove(onnx_path)
    return np.concatenate(feats), np.concatenate(flips)


def cv_srcc(x, y, cats, alphas, x_flip=None):
    """Best (pooled SRCC, mean per-category SRCC, alpha) of a ridge head by stratified 5-fold CV (train.ridge),
    on the raw scores; with ``x_flip``, mirrors are extra training samples and averaged at test time."""
    from icrt.train.ridge import cross_validate

    rows = cross_validate(x, y, cats, alphas, x_flip=x_flip, target=lambda v: v, average_flips=True)
    best = max(rows, key=lambda r: r["srcc"])
    return best["srcc"], best["mean_category_srcc"], best["alpha"]


def main(argv=None) -> int:
    from icrt.train.recipes.default_model import split_samples

    p = argparse.ArgumentParser(prog="python -m benchmarks.backbone_probe", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/savoias/labels.csv")
    p.add_argument("--work", default="runs/probe")
    p.add_argument("--backbones", default="tf_efficientnet_lite0,tf_efficientnet_lite1,tf_efficientnet_lite2")
    p.add_argument("--sizes", default="224,384,448")
    p.add_argument("--alphas", default="0.1,0.3,1,3,10,30")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    dev = split_samples(args.data)[0]  # the development part only: the held-out images are never read here
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
            write_json(os.path.join(args.work, "probe.json"), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
