"""What every kind's ``python -m train`` subcommand shares: argument types, the data / run / SIND options, and
the train-config fields they fill (:func:`run_options`)."""
from __future__ import annotations

import argparse
import math


# --- argument types: a bad value is one argparse line ("python -m train d2s: error: argument ...") --------
def int_at_least(lo: int):
    """An argparse type: an integer >= lo."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {text!r}")
        return v
    return parse


positive_int, nonnegative_int = int_at_least(1), int_at_least(0)


def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def positive_float(text: str) -> float:
    v = _finite(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return v


def fraction(text: str) -> float:
    """A held-out share: 0 <= f < 1."""
    v = _finite(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return v


def score_range(text: str) -> tuple[float, float]:
    """``LO,HI`` with LO < HI."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 0,1), got {text!r}")
    lo, hi = (_finite(p.strip()) for p in parts)
    if lo >= hi:
        raise argparse.ArgumentTypeError(f"LO must be below HI, got {text!r}")
    return lo, hi


def draft(text: str) -> float:
    """``--jpeg-draft F``: a number in the Preprocessing.draft range."""
    from icrt.runtime.bundle.preprocessing import DRAFT_RANGE

    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not DRAFT_RANGE[0] <= v <= DRAFT_RANGE[1]:
        raise argparse.ArgumentTypeError(f"expected a number in [{DRAFT_RANGE[0]}, {DRAFT_RANGE[1]}], got {text!r}")
    return v


def preprocessing_options(args) -> dict:
    """The preprocessing fields the common arguments set (``Preprocessing``); the kind adds its own."""
    out = {"resize": args.resize, "max_long_side": args.max_long_side, "draft": args.jpeg_draft}
    if args.interpolation:
        out["interpolation"] = args.interpolation
    return out


def add_common_args(p: argparse.ArgumentParser) -> None:
    from icrt.runtime.bundle.preprocessing import INTERPOLATIONS

    g = p.add_argument_group("data and run")
    g.add_argument("--data", required=True, action="append",
                   help="IC9600 folder (train.txt) or labels CSV (image,score[,category,caption]); several data sets: "
                        "comma-separated or --data repeated")
    g.add_argument("--val-data", help="validation set; default: a seeded, category-stratified 20%% of --data")
    g.add_argument("--val-fraction", type=fraction, default=0.2,
                   help="held out of --data for validation when no --val-data; 0: train on all, keep the last epoch")
    g.add_argument("--out", required=True, help="run folder: checkpoint.pt, metrics.json, config.json, last.pt")
    g.add_argument("--captions", help="captions CSV (image,caption) joined to --data by image")
    g.add_argument("--epochs", type=positive_int, default=20)
    g.add_argument("--batch-size", type=positive_int, default=32)
    g.add_argument("--image-size", type=positive_int, default=512, help="model input side (the patch side with --resize patches)")
    g.add_argument("--resize", choices=["square", "patches"], default="square",
                   help="square: resize the whole image; patches: train on random crops, score a patch grid")
    g.add_argument("--max-long-side", type=positive_int, help="patches: cap the image's long side first")
    g.add_argument("--interpolation", choices=list(INTERPOLATIONS), default=None,
                   help="resize filter (default: the backbone's weights' own, e.g. bicubic for TF-Lite)")
    g.add_argument("--jpeg-draft", type=draft, default=1.0, metavar="F",
                   help="square: decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) whose short side stays >= F x "
                        "the input side (1: never below it; 0.5: ~2x cheaper decoding); the bundle runs the same")
    g.add_argument("--patch-stride", type=positive_int, default=64, help="patches: grid stride at evaluation")
    g.add_argument("--lr", type=positive_float, default=1e-3)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--workers", type=nonnegative_int, default=0, help="data-loader processes")
    g.add_argument("--cache", choices=["auto", "on", "off"], default="auto",
                   help="keep decoded, resized images in memory (auto: when they fit in 2 GiB and --workers 0)")
    g.add_argument("--resume", action="store_true", help="continue the interrupted run in --out (from last.pt)")
    g.add_argument("--score-range", type=score_range, default=(0.0, 1.0), metavar="LO,HI",
                   help="scores outside this range are refused (IC9600 and Savoias are in 0,1)")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave out listed images that do not decode (default: refuse them, naming file:line)")
    s = p.add_argument_group("scene-invariant training (SIND)")
    s.add_argument("--scene-sampling", type=nonnegative_int, default=0, metavar="K",
                   help="each batch holds K scenes with batch-size // K images each; 0: plain shuffled batches")
    s.add_argument("--loss", choices=["mse", "l1", "scale-shift"], default="mse",
                   help="score loss; scale-shift: MSE after aligning the predictions to the labels by the "
                        "least-squares (positive) scale and shift within each scene of the batch")
    s.add_argument("--dataset-domain", action="store_true",
                   help="the scene is the data set (of several --data), not the category")


def sind_options(args) -> dict:
    """The shared data / SIND fields of every train config."""
    from icrt.train.data import data_paths

    return {"data": ",".join(data_paths(args.data)), "scene_sampling": args.scene_sampling, "loss": args.loss,
            "dataset_domain": args.dataset_domain, "score_range": tuple(args.score_range),
            "skip_bad_images": args.skip_bad_images}


def run_options(args) -> dict:
    """Every :class:`train.trainer.RunConfig` field the common arguments fill (not ``model`` / ``preprocessing``,
    which are the kind's)."""
    return {**sind_options(args), "val_data": args.val_data, "out": args.out, "captions": args.captions,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "val_fraction": args.val_fraction,
            "seed": args.seed, "device": args.device, "workers": args.workers, "cache": args.cache}
