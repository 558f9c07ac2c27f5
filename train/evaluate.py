"""Evaluate a checkpoint on a data set with the runtime's preprocessing.

    python -m train.evaluate --checkpoint DIR/checkpoint.pt --data PATH [--out FILE.json]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from runtime.preprocess import ImageError, Preprocessing, load_for_model, pool_scores, to_model_input

from . import metrics
from .data import DataError, is_ic9600, load_samples
from .dataset import GeometryCache


@torch.no_grad()
def predict(model, samples, prep: Preprocessing, device="cpu", batch_size: int = 32,
            cache: GeometryCache | None = None, progress: bool = False) -> np.ndarray:
    """Image scores: each image -> model inputs (1 or many patches) -> batched forward -> pooled."""
    model.eval()
    scores = np.zeros(len(samples), np.float64)
    pending, owners, patch_scores = [], [], [[] for _ in samples]

    def flush():
        if not pending:
            return
        out = model(torch.from_numpy(np.concatenate(pending)).to(device)).float().cpu().numpy()
        for owner, s in zip(owners, out):
            patch_scores[owner].append(s)
        pending.clear()
        owners.clear()

    it = range(len(samples))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="evaluate", leave=False)
    for i in it:
        img = cache.get(samples[i].image) if cache is not None else load_for_model(samples[i].image, prep)[0]
        x, _ = to_model_input(img, prep)
        pending.append(x)
        owners.extend([i] * len(x))
        if len(owners) >= batch_size:
            flush()
    flush()
    for i, ps in enumerate(patch_scores):
        scores[i] = pool_scores(np.asarray(ps), prep)
    return scores


def evaluate(model, samples, prep, device="cpu", batch_size=32, cache=None, progress=False) -> tuple[dict, np.ndarray]:
    pred = predict(model, samples, prep, device, batch_size, cache, progress)
    rep = metrics.report(pred, [s.score for s in samples], [s.category for s in samples])
    return rep, pred


def main(argv=None) -> int:
    from .__main__ import positive_int
    from .checkpoint import CheckpointError, brief, load_checkpoint, model_from_checkpoint

    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="IC9600 folder (its test.txt is used) or labels CSV")
    p.add_argument("--out", help="write the metrics JSON here")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        samples = load_samples(args.data, "test" if is_ic9600(args.data) else "train")
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    try:
        model = model_from_checkpoint(ckpt).to(device)
        prep = Preprocessing.from_dict(ckpt["preprocessing"])
    except (ValueError, KeyError, RuntimeError, TypeError) as e:  # unknown kind, mismatched weights
        print(f"error: {args.checkpoint}: cannot rebuild the model ({brief(e)})", file=sys.stderr)
        return 2
    try:
        rep, _ = evaluate(model, samples, prep, device, args.batch_size, progress=True)
    except ImageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(metrics.format_line(rep))
    for cat, m in rep.get("per_category", {}).items():
        print(f"  {cat:<16} n={m['n']:<4} SRCC {m['srcc']:.4f}  PLCC {m['plcc']:.4f}")
    if args.out:
        from runtime.files import write_json

        write_json(args.out, rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
