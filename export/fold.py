"""Folding: turn a trained model into a plain image -> score module with nothing left that is constant.

Each model kind declares how (``fold`` of its ``train.kinds.ModelKind``); :func:`fold_for_export` dispatches on
the kind. The built-in ones:

- D2S: the inference model already is backbone -> attention pool -> head; the training-only projection and
  text teacher live outside it (the checkpoint's ``projection`` entry), so folding keeps the model.
- CM-SSA (``train.models.cmssa``): the text features of the complexity-level prompts, L2-normalised and
  multiplied by the logit scale, become one constant matrix; the learned visual (deep) prompts are parameters
  of the image encoder and so become graph constants on export. ``train.models.cmssa.LevelScorer`` is the
  folded graph: image -> image encoder -> L2 norm -> matmul -> softmax -> score (expectation over the level
  values), with the level probabilities as a second output.

A kind without a ``fold`` function (or a model of an unregistered kind) may define ``model.fold_for_export()``;
the folded module returns ``score`` (B,) or ``(score, levels)``.
"""
from __future__ import annotations

from torch import nn


def fold_for_export(model: nn.Module, kind: str) -> nn.Module:
    """The eval-mode image -> score[, levels] module to export for ``model`` of ``kind``: the kind's registered
    ``fold``, else the model's ``fold_for_export()``, else (a registered kind) the model itself."""
    from icrt.train.kinds import get_kind, is_kind

    spec = get_kind(kind) if is_kind(kind) else None
    if spec is not None and spec.fold is not None:
        folded = spec.fold(model)
    elif hasattr(model, "fold_for_export"):
        folded = model.fold_for_export()
    elif spec is not None:
        folded = model
    else:
        raise ValueError(f"no folding for model kind {kind!r}: register it (train.kinds.register_kind) "
                         f"or give the model a fold_for_export() method")
    return folded.eval()


def count_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def count_constants(module: nn.Module) -> int:
    """Buffers that become graph constants (e.g. the folded text matrix), excluding BatchNorm counters."""
    return int(sum(b.numel() for n, b in module.named_buffers() if not n.endswith("num_batches_tracked")))
