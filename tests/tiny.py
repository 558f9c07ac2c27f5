"""Tiny model configurations shared by the tests: random weights, no downloads, seconds on a CPU. Plain data
(no torch import), so that any test module may read them."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

# --- D2S ---------------------------------------------------------------------------------------------------------

# D2SConfig of the tiny D2S: ResNet-10t from scratch, 64 px, a small head without dropout.
D2S = {"backbone": "resnet10t", "pretrained": "none", "image_size": 64, "head_hidden": 32, "head_dropout": 0.0}


def d2s(**changes) -> dict:
    """The tiny D2S config with ``changes`` (e.g. ``image_size=48``, ``cues=True``)."""
    return {**D2S, **changes}


# The tiny D2S on the training command line (`python -m train d2s ...`), text teacher off ...
D2S_ARGS = ["--backbone", D2S["backbone"], "--pretrained", "none", "--text", "none"]
# ... and a one-epoch CPU run of it at 48 px.
D2S_TRAIN_ARGS = [*D2S_ARGS, "--image-size", "48", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]

# --- OpenCLIP towers (CM-SSA, text teacher) ------------------------------------------------------------------------

def clip(embed_dim: int, *, image_size: int, layers: int, width: int, patch_size: int, head_width: int = 16,
         text_width: int = 32) -> dict:
    """An OpenCLIP ViT config: ``layers`` vision and as many text layers (CLIP's tokenizer: 77 tokens, 49408 words)."""
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "head_width": head_width,
                           "patch_size": patch_size},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width, "heads": 2, "layers": layers}}


# one vision + one text layer, 32 px
CLIP = clip(32, image_size=32, layers=1, width=32, patch_size=16)
# 3 vision + 3 text layers (so deep prompts have layers to reach), vision width != text width
CLIP3 = clip(24, image_size=32, layers=3, width=48, patch_size=16)
# a ViT with the real 224 input (7x7 grid of 32 px patches) for patch evaluation at the paper's size
CLIP224 = clip(16, image_size=224, layers=1, width=32, patch_size=32)
# 224 px, 16 px patches, two layers: the tower whose fp16 export once died with SIGSEGV (test_cli_matrix)
CLIP_SMALL = clip(64, image_size=224, layers=2, width=64, patch_size=16, head_width=32, text_width=64)


def write_clip_config(folder, name: str, cfg: dict) -> str:
    """An OpenCLIP config JSON at ``folder/name`` (models are named after the file); returns its path."""
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


# --- captioners (transformers BLIP / InstructBLIP) -----------------------------------------------------------------

BLIP_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                   patch_size=16)

# --- the runtime's tiny test model (tests/runtime/data/make_tiny_models.py) --------------------------------------

# three stride-2 3x3 convolutions with ReLU, global mean, a small MLP, sigmoid: N x 3 x 64 x 64 -> [N]
CONVNET = {"image_size": 64, "widths": (8, 16, 32), "hidden": 16}


# --- configs of model kinds defined in tests --------------------------------------------------------------------


class DictConfig:
    """``to_dict`` / ``from_dict`` for a dataclass model config, as ``train.kinds`` expects (unknown keys are
    left out when reading)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
