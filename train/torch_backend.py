"""A PyTorch module behind the runtime's Backend interface, so that ``runtime.scoring.scorer.Scorer`` scores with it.

Training-time validation, ``python -m train.evaluate`` and export parity all score through the Scorer: the
figures they report come from the same preprocessing, batching and pooling as ``icrt score``.
"""
from __future__ import annotations

import numpy as np
import torch

from icrt.runtime.backends import Backend


class TorchBackend(Backend):
    name = "pytorch"

    def __init__(self, model: torch.nn.Module, device="cpu", precision: str = "fp32"):
        self.model, self.device, self.precision = model, str(device), precision
        self.file, self.notes = type(model).__name__, []

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> np.ndarray:
        self.model.eval()
        out = self.model(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        out = out[0] if isinstance(out, (tuple, list)) else out  # CM-SSA: (score, levels)
        return out.float().reshape(-1).cpu().numpy()


def torch_scorer(model, prep, device="cpu", batch_size: int = 32, loader=None):
    """A Scorer over ``model`` that returns raw scores (no range check), images decoded on this thread."""
    from icrt.runtime.scoring.scorer import Scorer

    return Scorer.for_preprocessing(TorchBackend(model, device), prep, batch_size=batch_size, workers=0, loader=loader)
