"""Which statistics of the frozen stages, and which closed-form head? Cross-validated inside the development part.

    python -m benchmarks.head_probe --data ../shared/data/savoias/labels.csv --work runs/head-probe

Every development image (the seeded 80% of ``train.recipes.default_model``; the held-out 20% is never read
here) and its mirror image go once through the frozen backbone (the trainer's own ``StageStats`` on the block
stages from the third on, exported to ONNX and run by onnxruntime); every statistic of every channel is cached.
Each row of ``SETS`` then takes some statistics and is judged by stratified 5-fold cross-validation with the
head the trainer fits: ridge (``train.ridge``, alphas as ``--fit ridge`` tries them) or RBF kernel ridge
(``train.kernel``, its (g, lambda) grid), mirrors as in training. The best grid point of each row is reported
(pooled SRCC, mean per-category SRCC), so the figures are a little optimistic for every row alike; a difference
under ~0.005 is within the spread of a 905-image cross-validation. Prints a table, writes ``WORK/head_probe.json``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from icrt.benchmarks.backbone_probe import run_features
from icrt.runtime.base.files import write_json
from icrt.runtime.bundle.preprocessing import INTERPOLATIONS

ALL = ("mean", "std", "relu", "q10", "median", "q90", "max")
SETS = [  # (head, statistics)
    ("ridge", ("mean", "std")),  # the first Lite0 default
    ("kernel", ("mean", "std")),
    ("kernel", ("mean", "std", "max")),
    ("kernel", ("mean", "median", "q90")),
    ("kernel", ("mean", "std", "q10", "median", "q90")),
    ("kernel", ("mean", "relu")),  # the default
    ("ridge", ("mean", "relu")),
]


def extract(samples, backbone: str, size: int, cache: str, batch: int = 8, draft: float = 1.0,
            interpolation: str | None = None):
    """[n, stages x statistics x channels] features of every sample and of its mirror; cached in ``cache``."""
    if os.path.isfile(cache):
        z = np.load(cache)
        return list(z["widths"]), z["feats"], z["flips"]
    import torch

    from icrt.train.models.d2s import StageStats, stage_outputs
    from icrt.train.weights import create_backbone, preprocessing_for

    prep = preprocessing_for(backbone, "imagenet")
    net = create_backbone(backbone, "imagenet").eval()

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.stats = net, StageStats(ALL)

        def forward(self, x):
            return self.stats(stage_outputs(self.net, x, 2))

    with torch.no_grad():
        widths = [int(f.shape[1]) for f in stage_outputs(net, torch.zeros(1, 3, 64, 64), 2)]
    t0 = time.time()
    feats, flips = run_features(Features().eval(), samples, size, prep, cache + ".onnx", batch, draft, interpolation)
    print(f"  {backbone} @ {size}: {len(samples)} images (+ mirrors) in {time.time() - t0:.0f} s", flush=True)
    np.savez(cache, widths=np.array(widths), feats=feats, flips=flips)
    return widths, feats, flips


def columns(widths: list[int], stats: tuple) -> np.ndarray:
    """Indices of ``stats`` in the StageStats(ALL) layout: per stage, each statistic's channels in ALL's order."""
    out, start = [], 0
    for w in widths:
        for s in ALL:
            if s in stats:
                out.extend(range(start, start + w))
            start += w
    return np.array(out)


def score(head: str, x, xf, y, cats) -> dict:
    if head == "ridge":
        from icrt.train.ridge import cross_validate

        rows = cross_validate(x, y, cats, (0.1, 0.3, 1, 3, 10, 30), x_flip=xf, target=lambda v: v, average_flips=True)
    else:
        from icrt.train.kernel import cross_validate

        rows = cross_validate(x, y, cats, x_flip=xf)
    return max(rows, key=lambda r: r["srcc"] + r["mean_category_srcc"])


def main(argv=None) -> int:
    from icrt.train.recipes.default_model import split_samples

    p = argparse.ArgumentParser(prog="python -m benchmarks.head_probe", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/savoias/labels.csv")
    p.add_argument("--work", default="runs/head-probe")
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--jpeg-draft", type=float, default=1.0, help="the preprocessing's draft (python -m train's flag)")
    p.add_argument("--interpolation", choices=list(INTERPOLATIONS), help="default: the backbone's")
    p.add_argument("--sets", default="all", help="'default': only the default model's head and statistics")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    dev = split_samples(args.data)[0]  # the development part only
    y = np.array([s.score for s in dev])
    cats = [s.category for s in dev]
    tag = f"-draft{args.jpeg_draft:g}-{args.interpolation}" if args.jpeg_draft != 1.0 or args.interpolation else ""
    widths, feats, flips = extract(dev, args.backbone, args.size,
                                   os.path.join(args.work, f"{args.backbone}-{args.size}{tag}.npz"), 8,
                                   args.jpeg_draft, args.interpolation)
    results = []
    for head, stats in (SETS if args.sets == "all" else [("kernel", ("mean", "relu"))]):
        idx = columns(widths, stats)
        best = score(head, feats[:, idx], flips[:, idx], y, cats)
        row = {"head": head, "stats": ",".join(stats), "dims": len(idx), "cv_srcc": round(best["srcc"], 4),
               "cv_mean_category_srcc": round(best["mean_category_srcc"], 4),
               "choice": {k: float(v) for k, v in best.items()
                          if k not in ("srcc", "mean_category_srcc") and v is not None}}
        results.append(row)
        print(f"{head:7s} {row['stats']:28s} {len(idx):5d}  SRCC {row['cv_srcc']:.4f}  per-category "
              f"{row['cv_mean_category_srcc']:.4f}  {row['choice']}", flush=True)
    write_json(os.path.join(args.work, f"head_probe{tag}.json"),
               {"images": len(dev), "backbone": args.backbone, "size": args.size, "draft": args.jpeg_draft,
                "interpolation": args.interpolation, "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
