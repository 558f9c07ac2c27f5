"""Frozen OpenCLIP text encoder used as a teacher during training (never exported).

``name`` is an OpenCLIP architecture (``ViT-B-16``) or the path of an OpenCLIP model-config JSON
(``embed_dim``, ``vision_cfg``, ``text_cfg``), so tests can build tiny towers. ``pretrained`` is an
OpenCLIP tag (``openai``), a local checkpoint file, or ``none`` (random init, for tests).
"""
from __future__ import annotations

import os

import torch
from torch import nn


def resolve_openclip_name(name: str) -> str:
    """Register a config JSON with OpenCLIP and return the name it is known by."""
    import open_clip

    if name.endswith(".json"):
        if not os.path.isfile(name):
            from icrt.runtime.base.errors import UserInputError

            raise UserInputError(f"{name}: OpenCLIP model config not found")
        open_clip.add_model_config(name)
        return os.path.splitext(os.path.basename(name))[0]
    return name


def resolve_pretrained(pretrained: str | None) -> str | None:
    if pretrained in (None, "", "none"):
        return None
    return pretrained


def create_openclip(name: str, pretrained: str | None):
    import open_clip

    model = open_clip.create_model(resolve_openclip_name(name), pretrained=resolve_pretrained(pretrained))
    return model, open_clip.get_tokenizer(resolve_openclip_name(name))


class TextTeacher(nn.Module):
    """The text tower of an OpenCLIP model, frozen, in eval mode."""

    def __init__(self, name: str = "ViT-B-16", pretrained: str | None = "openai"):
        super().__init__()
        clip, self.tokenizer = create_openclip(name, pretrained)
        clip.visual = nn.Identity()  # only encode_text is used
        self.clip = clip.eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        proj = getattr(self.clip, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return proj.shape[1]
        if isinstance(proj, nn.Linear):
            return proj.out_features
        return int(self.encode(["x"]).shape[-1])

    def train(self, mode: bool = True):  # stays frozen in eval mode
        return super().train(False)

    @torch.no_grad()
    def encode(self, captions: list[str], device=None) -> torch.Tensor:
        device = device or next(self.clip.parameters()).device
        tokens = self.tokenizer(list(captions)).to(device)
        return self.clip.encode_text(tokens).float()

    @torch.no_grad()
    def encode_all(self, captions: list[str], batch_size: int = 64, device=None) -> torch.Tensor:
        feats = [self.encode(captions[i : i + batch_size], device).cpu() for i in range(0, len(captions), batch_size)]
        return torch.cat(feats)
