"""Self-describing checkpoints: model kind, config, preprocessing and weights in one file."""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings

import torch

from icrt.runtime.base.errors import UserInputError

FORMAT = "icrt-checkpoint/1"


class CheckpointError(UserInputError):
    pass


def brief(e: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its type and its message's first sentence."""
    text = " ".join(str(e).split())
    text = text.split(". ")[0]
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def safe_load(path: str, what: str = "checkpoint", allow: tuple = ()):
    """``torch.load(weights_only=True)``: only tensors, plain containers, numbers and strings are rebuilt,
    so a crafted file cannot run code (a pickle ``__reduce__`` payload is refused before it runs).
    ``allow`` adds globals to the safe set (see ``torch.serialization.safe_globals``). Every failure is a
    one-line :class:`CheckpointError`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {what} not found")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: not a readable {what} (empty file)")
    allowed = contextlib.nullcontext()
    if allow and hasattr(torch.serialization, "safe_globals"):
        allowed = torch.serialization.safe_globals(list(allow))
    elif allow:  # torch 2.4: no context manager
        torch.serialization.add_safe_globals(list(allow))
    try:
        with warnings.catch_warnings(), allowed:
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL (\S+)", str(e))
        if m:  # a class or function other than torch's own: the way a pickle runs code
            raise CheckpointError(f"{path}: refused: a {what} may hold only tensors and plain data, this one "
                                  f"refers to {m.group(1)}; nothing in it was run") from None
        raise CheckpointError(f"{path}: not a readable {what} (corrupt, or not written by torch.save)") from None
    except Exception as e:  # torch raises many types for a corrupt or truncated file
        raise CheckpointError(f"{path}: not a readable {what} ({brief(e)})") from None


def atomic_torch_save(obj, path: str) -> None:
    """torch.save through the runtime's atomic writer: ``path`` is complete or as it was."""
    from icrt.runtime.base.files import atomic_path

    with atomic_path(path, ".pt") as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str) -> dict:
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an icrt checkpoint (format {FORMAT!r} expected)")
    for key in ("kind", "config", "preprocessing", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict | str):
    """Rebuild the inference model (eval mode) from a checkpoint dict or path."""
    from icrt.train.models import create_model

    if isinstance(ckpt, str):
        ckpt = load_checkpoint(ckpt)
    model = create_model(ckpt["kind"], ckpt["config"], load_pretrained=False)
    model.load_state_dict(ckpt["model"])
    return model.eval()
