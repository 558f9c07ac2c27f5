"""D2S (Describe-to-Score) scorer: timm CNN -> attention pooling -> MLP head -> sigmoid score.

Inference uses only this module; the projection and text teacher used in training live in
``train.d2s_trainer``. Attention pooling is timm's CLIP-style ``AttentionPool2d``: the mean token
attends over the spatial tokens, with learned positional embeddings defined at the training feature
size and resampled (bicubic) to other input sizes. The paper does not specify the pooling further.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class D2SConfig:
    backbone: str = "resnet18"
    pretrained: str = "imagenet"  # imagenet | none | FILE (a timm-loadable weights file)
    image_size: int = 512
    pool_head_dim: int = 64
    head_hidden: int = 512
    head_dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "D2SConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def create_backbone(name: str, pretrained: str = "none") -> nn.Module:
    """A timm CNN with its global pool and classifier removed (outputs the feature map)."""
    import timm

    kwargs = dict(num_classes=0, global_pool="")
    if pretrained in (None, "", "none"):
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained == "imagenet":
        return timm.create_model(name, pretrained=True, **kwargs)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=pretrained), **kwargs)


class D2S(nn.Module):
    def __init__(self, cfg: D2SConfig, load_pretrained: bool = True):
        super().__init__()
        from timm.layers import AttentionPool2d

        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, cfg.pretrained if load_pretrained else "none")
        dim = self.backbone.num_features
        reduction = self.backbone.feature_info[-1]["reduction"] if hasattr(self.backbone, "feature_info") else 32
        feat = max(1, cfg.image_size // reduction)
        self.pool = AttentionPool2d(dim, feat_size=feat, out_features=dim, head_dim=cfg.pool_head_dim,
                                    pool_type="token")
        self.head = nn.Sequential(
            nn.Linear(dim, cfg.head_hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.head_dropout),
            nn.Linear(cfg.head_hidden, 1),
        )
        self.feature_dim = dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z_v of Eq. 8: the pooled visual feature."""
        return self.pool(self.backbone(x))

    def score_from_features(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(z)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_from_features(self.features(x))
