"""The ``cmssa`` kind: CM-SSA (frozen OpenCLIP with learned prompts), ``train.models.cmssa`` trained by
``train.cmssa_trainer``."""
from __future__ import annotations

from icrt.train.kinds.common import nonnegative_int, preprocessing_options, run_options
from icrt.train.kinds.registry import ModelKind, register_kind
from icrt.train.models.cmssa import CMSSA, CMSSAConfig, fold_level_scorer


def add_arguments(p) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default="ViT-B-16", help="OpenCLIP ViT architecture (ViT-B-16, ViT-B-32) or model-config JSON")
    m.add_argument("--pretrained", default="openai", help="openai | none | FILE (OpenCLIP weights)")
    m.add_argument("--levels", type=int, choices=[3, 5, 7], default=5, help="complexity level prompts (Table 4)")
    m.add_argument("--n-ctx", type=int, default=8, help="learned context / prompt tokens")
    m.add_argument("--prompt-depth", type=int, default=12, help="layers with deep prompts (capped at the tower depth)")
    m.add_argument("--score", choices=["expectation", "first-level"], default="expectation",
                   help="expectation over the level values 0..1, or the first level's probability (paper Eq. 6)")
    m.add_argument("--normalize", choices=["clip", "imagenet"], default="clip",
                   help="input mean/std (the reference code uses ImageNet's on CLIP)")
    lo = p.add_argument_group("losses (paper defaults)")
    lo.add_argument("--alpha", type=float, default=0.1, help="weight of L_A (scene alignment); 0: no captions needed")
    lo.add_argument("--beta", type=float, default=0.9, help="weight of L_C (complexity)")
    lo.add_argument("--early-stop", type=nonnegative_int, default=15, help="stop after N epochs without val SRCC gain; 0: never")


def train_config(args):
    from icrt.runtime.bundle.preprocessing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

    mean, std = (CLIP_MEAN, CLIP_STD) if args.normalize == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    return dict(
        **run_options(args), alpha=args.alpha, beta=args.beta, early_stop=args.early_stop,
        model={"backbone": args.backbone, "pretrained": args.pretrained, "levels": args.levels, "n_ctx": args.n_ctx,
               "prompt_depth": args.prompt_depth, "score": args.score, "mean": mean, "std": std},
        preprocessing={**preprocessing_options(args), "size": args.image_size, "stride": args.patch_stride},
    )


def fold(model: CMSSA):
    """CMSSA -> ``train.models.cmssa.LevelScorer``: the complexity branch's visual prompts (projected from the text and
    alignment prompts) become buffers of the image encoder; the level text features (learned context and deep
    text prompts run through the text tower once) become the constant matrix; the alignment branch and the
    text tower are dropped. The score rule is carried by the level values (0..1 for the expectation,
    (1, 0, ..., 0) for the first-level probability)."""
    encoder, text_features, logit_scale, levels = model.folded_parts()
    return fold_level_scorer(encoder, text_features, logit_scale, levels)


register_kind(ModelKind(
    name="cmssa", config=CMSSAConfig, model=CMSSA,
    train_config=train_config, add_arguments=add_arguments,
    help="CM-SSA: frozen OpenCLIP ViT, learned multi-modal prompts, scene semantic alignment",
    # the paper's settings (Sec. 4.2); the patch side is the CLIP image tower's input size (224 for ViT-B)
    defaults={"epochs": 50, "batch_size": 64, "lr": 1e-4, "resize": "patches", "image_size": None},
    fold=fold,
    # LevelScorer's tail (L2 norm, level matmul, softmax, expectation) is its own top-level code, always fp32;
    # its only submodule is the image encoder
    tail=(),
))
