"""Registry of trainable model kinds (one config dataclass each), after timm's create_model."""
from __future__ import annotations

from .cmssa import CMSSA, CMSSAConfig
from .d2s import D2S, D2SConfig

MODELS = {"d2s": (D2S, D2SConfig), "cmssa": (CMSSA, CMSSAConfig)}


def create_model(kind: str, config: dict | object, load_pretrained: bool = True):
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODELS)}")
    cls, cfg_cls = MODELS[kind]
    cfg = config if isinstance(config, cfg_cls) else cfg_cls.from_dict(dict(config))
    return cls(cfg, load_pretrained=load_pretrained)
