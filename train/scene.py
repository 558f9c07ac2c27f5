"""Scene-invariant training (SIND): scene-balanced batches and a per-scene scale-and-shift aligned loss.

ICA labels are comparable only within a scene (a category, or a whole data set with ``--dataset-domain``):
a photo scored 0.6 among interiors and one scored 0.6 among art works need not be equally complex. A plain
regression loss asks the model to learn each scene's offset and spread as well as the ranking; aligning the
predictions to the labels per scene before the loss leaves only what holds across scenes, the ranking and
the relative spacing within a scene.

``SceneBatchSampler``: every batch holds K scenes with ``batch_size // K`` images each, so each scene in a
batch has enough images for a per-scene alignment. ``scale_shift_loss``: the exact form is in its docstring.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

LOSSES = ("mse", "l1", "scale-shift")


class SceneBatchSampler(torch.utils.data.Sampler):
    """Batches of ``k`` distinct scenes x ``batch_size // k`` images (``domains[i]`` is image i's scene).

    K above the number of scenes means every scene in every batch (K = the number of scenes), so the same
    option serves leave-one-scene-out, where training has one scene fewer. One epoch has
    ``len(domains) // (k * per_scene)`` batches (at least 1). Scenes are drawn at random, without replacement
    within a batch; each scene's images are drawn from its own shuffled queue, refilled
    (reshuffled) when empty, so small scenes repeat within an epoch rather than drop out. A scene with fewer
    than ``per_scene`` images gives all its images (a smaller batch). Randomness comes from ``generator``
    (the trainer saves its state in last.pt, so ``--resume`` continues the same sequence).
    """

    def __init__(self, domains, batch_size: int, k: int, generator: torch.Generator | None = None):
        groups = defaultdict(list)
        for i, d in enumerate(domains):
            groups[d].append(i)
        self.scenes = [groups[d] for d in sorted(groups, key=str)]
        if k < 1:
            raise ValueError(f"--scene-sampling {k}: need at least one scene per batch")
        k = min(k, len(self.scenes))  # e.g. leave-one-scene-out leaves one scene fewer: all scenes per batch
        if batch_size < k:
            raise ValueError(f"--batch-size {batch_size} is smaller than --scene-sampling {k}")
        self.k, self.per_scene = k, batch_size // k
        self.generator = generator if generator is not None else torch.Generator()
        self.n_batches = max(1, len(domains) // (k * self.per_scene))
        self._queues = [[] for _ in self.scenes]

    def __len__(self) -> int:
        return self.n_batches

    def _take(self, s: int, n: int) -> list[int]:
        members = self.scenes[s]
        n = min(n, len(members))
        out = []
        while len(out) < n:
            if not self._queues[s]:
                perm = torch.randperm(len(members), generator=self.generator).tolist()
                self._queues[s] = [members[j] for j in perm if members[j] not in out]
                if not self._queues[s]:
                    break
            out.append(self._queues[s].pop())
        return out

    def __iter__(self):
        for _ in range(self.n_batches):
            chosen = torch.randperm(len(self.scenes), generator=self.generator)[: self.k].tolist()
            batch = []
            for s in chosen:
                batch += self._take(s, self.per_scene)
            yield batch


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``a * pred + b`` for one scene, with a positive scale a and the least-squares shift b.

    a = |cov(pred, target)| / var(pred), b = mean(target) - a * mean(pred). When predictions and labels
    agree in order (cov > 0) this is the least-squares fit and the MSE after it is var(y) * (1 - r^2)
    (r: Pearson correlation). When they disagree (cov < 0) the least-squares scale would be negative and
    would align an inverted ranking away; taking its magnitude instead gives var(y) * (1 + 3 r^2), so the
    loss falls monotonically as r goes from -1 to 1 and is continuous at r = 0. Constant predictions
    (var(pred) <= eps): scale 1, shift only (loss var(y), with a gradient towards the labels' order).
    Constant labels: a = 0, the prediction is the label, loss 0. a and b are differentiable functions of
    the predictions (the gradient goes through them). Because a scales with 1 / std(pred), the aligned
    prediction, and so the loss, is unchanged by any positive affine map of the predictions.
    """
    pm, tm = pred.mean(), target.mean()
    dp, dt = pred - pm, target - tm
    var, cov = (dp * dp).mean(), (dp * dt).mean()
    if bool(var <= eps):
        return dp + tm
    return (cov.abs() / var) * dp + tm


def scale_shift_loss(pred: torch.Tensor, target: torch.Tensor, domains, base: str = "mse") -> torch.Tensor:
    """Per-scene aligned regression loss.

    For each scene s of the batch with n_s >= 2 images: r_i = a_s * p_i + b_s - y_i (``align_scale_shift``);
    the loss is sum over those scenes and images of r_i ** 2 (``base`` mse) or |r_i| (l1), divided by the
    number of such images. Scenes with one image are skipped (any a, b fits one point exactly, so they carry
    no ranking information); a batch with no scene of two or more images gives 0 (with a graph, no gradient).
    Zero for predictions p = a * y + b (a > 0) within each scene, and unchanged when the predictions of a
    scene go through any positive affine map (a negative scale changes it: inverted rankings are penalised).
    """
    pred, target = pred.reshape(-1).float(), target.reshape(-1).float()
    groups = defaultdict(list)
    for i, d in enumerate(domains):
        groups[d].append(i)
    total, count = pred.sum() * 0.0, 0
    for idx in groups.values():
        if len(idx) < 2:
            continue
        ix = torch.as_tensor(idx, device=pred.device)
        r = align_scale_shift(pred[ix], target[ix]) - target[ix]
        total = total + (r.abs() if base == "l1" else r * r).sum()
        count += len(idx)
    return total / max(count, 1)


def regression_loss(name: str, pred: torch.Tensor, target: torch.Tensor, domains=None) -> torch.Tensor:
    """``mse`` / ``l1`` on the raw predictions, or ``scale-shift`` (MSE after per-scene alignment)."""
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "l1":
        return F.l1_loss(pred, target)
    if name == "scale-shift":
        if domains is None:
            raise ValueError("scale-shift loss needs each image's scene")
        return scale_shift_loss(pred, target, domains, "mse")
    raise ValueError(f"unknown loss {name!r}; one of {', '.join(LOSSES)}")
