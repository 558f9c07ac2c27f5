"""Evaluate a checkpoint on a data set with the runtime's preprocessing and metrics (a bundle: ``icrt eval``).

    python -m train.evaluate --checkpoint DIR/checkpoint.pt --data PATH [--out FILE.json]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import icrt.runtime.tools.metrics as metrics
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.runtime.scoring.preprocess import ImageError
from icrt.train.data import is_ic9600, load_samples
from icrt.train.dataset import GeometryCache


def predict(model, samples, prep: Preprocessing, device="cpu", batch_size: int = 32,
            cache: GeometryCache | None = None, progress: bool = False) -> np.ndarray:
    """Image scores through the runtime's Scorer (the loop ``icrt score`` runs), with a PyTorch backend.

    A file that cannot be scored raises ImageError naming it (a data set is checked before training).
    """
    from icrt.train.torch_backend import torch_scorer

    def from_cache(path):
        img = cache.get(path)
        return img, (img.shape[1], img.shape[0])

    scorer = torch_scorer(model, prep, device, batch_size, from_cache if cache is not None else None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), desc="evaluate", leave=False)
    scores = np.zeros(len(samples), np.float64)
    try:
        for i, rec in enumerate(scorer.iter_score([s.image for s in samples])):
            if "error" in rec:
                raise ImageError(rec["image"], rec["error"])
            scores[i] = rec["score"]
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return scores


def evaluate(model, samples, prep, device="cpu", batch_size=32, cache=None, progress=False) -> tuple[dict, np.ndarray]:
    pred = predict(model, samples, prep, device, batch_size, cache, progress)
    rep = metrics.report(pred, [s.score for s in samples], [s.category for s in samples])
    return rep, pred


def main(argv=None) -> int:
    from icrt.runtime.base.errors import run_command, setup_logging
    from icrt.train.checkpoint import CheckpointError, brief, load_checkpoint, model_from_checkpoint
    from icrt.train.kinds.common import positive_int

    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.strip().splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="IC9600 folder (its test.txt is used) or labels CSV")
    p.add_argument("--out", help="write the metrics JSON here")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    setup_logging()

    def run() -> int:
        ckpt = load_checkpoint(args.checkpoint)
        samples = load_samples(args.data, "test" if is_ic9600(args.data) else "train")
        device = ("cuda" if args.device == "auto" and torch.cuda.is_available()
                  else ("cpu" if args.device == "auto" else args.device))
        try:
            model = model_from_checkpoint(ckpt).to(device)
            prep = Preprocessing.from_dict(ckpt["preprocessing"])
        except (ValueError, KeyError, RuntimeError, TypeError) as e:  # unknown kind, mismatched weights
            raise CheckpointError(f"{args.checkpoint}: cannot rebuild the model ({brief(e)})") from None
        rep, _ = evaluate(model, samples, prep, device, args.batch_size, progress=True)
        print(metrics.format_line(rep))
        for cat, m in rep.get("per_category", {}).items():
            print(f"  {cat:<16} n={m['n']:<4} SRCC {m['srcc']:.4f}  PLCC {m['plcc']:.4f}")
        if args.out:
            from icrt.runtime.base.files import write_json

            write_json(args.out, rep)
        return 0

    return run_command(p.prog, run)


if __name__ == "__main__":
    sys.exit(main())
