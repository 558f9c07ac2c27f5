"""Self-describing checkpoints: model kind, config, preprocessing and weights in one file."""
from __future__ import annotations

import os
import tempfile

import torch

FORMAT = "icrt-checkpoint/1"


class CheckpointError(ValueError):
    pass


def atomic_torch_save(obj, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an icrt checkpoint (format {FORMAT!r} expected)")
    for key in ("kind", "config", "preprocessing", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict | str):
    """Rebuild the inference model (eval mode) from a checkpoint dict or path."""
    from .models import create_model

    if isinstance(ckpt, str):
        ckpt = load_checkpoint(ckpt)
    model = create_model(ckpt["kind"], ckpt["config"], load_pretrained=False)
    model.load_state_dict(ckpt["model"])
    return model.eval()
