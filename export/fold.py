"""Folding: turn a trained model into a plain image -> score module with nothing left that is constant.

Each model kind declares how (``fold`` of its ``train.kinds.ModelKind``); :func:`fold_for_export` dispatches on
the kind. The built-in ones:

- D2S: the inference model already is backbone -> attention pool -> head; the training-only projection and
  text teacher live outside it (the checkpoint's ``projection`` entry), so folding keeps the model.
- CM-SSA (``train.models.cmssa``): the text features of the complexity-level prompts, L2-normalised and
  multiplied by the logit scale, become one constant matrix; the learned visual (deep) prompts are parameters
  of the image encoder and so become graph constants on export. :class:`LevelScorer` is the folded graph:
  image -> image encoder -> L2 norm -> matmul -> softmax -> score (expectation over the level values),
  with the level probabilities as a second output.

A kind without a ``fold`` function (or a model of an unregistered kind) may define ``model.fold_for_export()``;
the folded module returns ``score`` (B,) or ``(score, levels)``.
"""
from __future__ import annotations

import torch
from torch import nn

# The five complexity levels of CM-SSA's prompts, scored 0, .25, ..., 1.
DEFAULT_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


class LevelScorer(nn.Module):
    """image -> encoder -> L2 norm -> @ text_matrix^T -> softmax -> (score, level probabilities).

    ``text_matrix`` is the normalised level text features times the logit scale (a constant buffer);
    ``levels`` are the score of each level.
    """

    def __init__(self, encoder: nn.Module, text_matrix: torch.Tensor, levels=DEFAULT_LEVELS):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("text_matrix", text_matrix.detach().float().clone())
        self.register_buffer("levels", torch.as_tensor(levels, dtype=torch.float32).clone())
        if self.text_matrix.shape[0] != self.levels.shape[0]:
            raise ValueError(f"{self.text_matrix.shape[0]} level text features but {self.levels.shape[0]} level values")

    def forward(self, x: torch.Tensor):
        f = self.encoder(x).float()
        f = f / f.norm(dim=-1, keepdim=True)
        probs = torch.softmax(f @ self.text_matrix.t(), dim=-1)
        return probs @ self.levels, probs


def fold_level_scorer(encoder: nn.Module, text_features: torch.Tensor, logit_scale, levels=DEFAULT_LEVELS) -> LevelScorer:
    """Build the folded CM-SSA graph from the image encoder (visual prompts inside) and the level text features.

    ``text_features``: (levels, dim) raw text-tower outputs for the level prompts with the learned context;
    ``logit_scale``: the multiplier itself (CLIP stores its log: pass ``clip.logit_scale.exp()``).
    """
    with torch.no_grad():
        t = text_features.detach().float()
        t = t / t.norm(dim=-1, keepdim=True)
        scale = float(logit_scale.detach().float().item() if torch.is_tensor(logit_scale) else logit_scale)
    return LevelScorer(encoder, t * scale, levels).eval()


def fold_for_export(model: nn.Module, kind: str) -> nn.Module:
    """The eval-mode image -> score[, levels] module to export for ``model`` of ``kind``: the kind's registered
    ``fold``, else the model's ``fold_for_export()``, else (a registered kind) the model itself."""
    from train.kinds import get_kind, is_kind

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
