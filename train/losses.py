"""D2S training losses (paper: Describe-to-Score, Sec. 3.2-3.3, Appendix A.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_entropy(features: torch.Tensor) -> torch.Tensor:
    """Eq. 12: entropy of a softmax over the feature dimensions, one value per row."""
    logp = F.log_softmax(features.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared energy distance between two 1-D samples (Eq. 6).

    D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|, with the within-sample means over distinct pairs
    (1 / (n (n - 1))), as Eq. 7 estimates them. Eq. 7 as printed has a sign slip inside the bracket
    (``- (sum|v-v'| - sum|s-s'|)``); Eq. 6 and Szekely & Rizzo subtract both terms, which we follow.
    """
    x, y = x.reshape(-1).float(), y.reshape(-1).float()
    n, m = x.numel(), y.numel()
    if n < 2 or m < 2:
        raise ValueError("energy distance needs at least two values per sample")
    xy = (x[:, None] - y[None, :]).abs().mean()
    xx = (x[:, None] - x[None, :]).abs().sum() / (n * (n - 1))
    yy = (y[:, None] - y[None, :]).abs().sum() / (m * (m - 1))
    return 2 * xy - xx - yy


def info_nce(visual: torch.Tensor, text: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Eq. 10: image-to-caption InfoNCE, cosine similarity, positives on the diagonal."""
    v = F.normalize(visual.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    logits = v @ t.t() / temperature
    return F.cross_entropy(logits, torch.arange(len(v), device=v.device))


class EntropyBuffers:
    """The two FIFO entropy buffers of Algorithm 1 (visual B_v, textual B_s), capacity M each.

    Each entry remembers the data-set index of the sample it came from, so that the momentum model can
    refresh old entries. ``refresh_slots(r)`` hands out the r entries refreshed least recently (a
    rotating cursor), so with M = 2048 and r = 41 every entry is refreshed about every 50 steps, which
    is how the paper's "refresh step 50 (~40 entries per iteration)" reads.
    """

    def __init__(self, capacity: int = 2048):
        self.capacity = int(capacity)
        self.visual = torch.zeros(self.capacity)
        self.text = torch.zeros(self.capacity)
        self.index = torch.full((self.capacity,), -1, dtype=torch.long)
        self.ptr = 0  # next slot to write (oldest entry once full)
        self.count = 0
        self.refresh_ptr = 0

    def __len__(self) -> int:
        return self.count

    @property
    def half_full(self) -> bool:
        return self.count >= self.capacity // 2

    def push(self, visual: torch.Tensor, text: torch.Tensor, index: torch.Tensor) -> None:
        """Append a batch, overwriting the oldest entries once full."""
        visual, text = visual.detach().float().cpu().reshape(-1), text.detach().float().cpu().reshape(-1)
        index = torch.as_tensor(index).cpu().reshape(-1).long()
        for v, t, i in zip(visual[-self.capacity:], text[-self.capacity:], index[-self.capacity:]):
            self.visual[self.ptr], self.text[self.ptr], self.index[self.ptr] = v, t, i
            self.ptr = (self.ptr + 1) % self.capacity
            self.count = min(self.count + 1, self.capacity)

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count < self.capacity:
            order = torch.arange(self.count)
        else:
            order = (torch.arange(self.capacity) + self.ptr) % self.capacity  # oldest first
        return self.visual[order], self.text[order]

    def refresh_slots(self, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next r filled slots to refresh and the data-set indices stored there."""
        if self.count == 0 or r <= 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        r = min(r, self.count)
        slots = (torch.arange(r) + self.refresh_ptr) % self.count
        self.refresh_ptr = int((self.refresh_ptr + r) % self.count)
        return slots, self.index[slots].clone()

    def update(self, slots: torch.Tensor, visual: torch.Tensor) -> None:
        """Overwrite the visual entropy of refreshed slots (text is frozen, so its entries stay)."""
        self.visual[slots] = visual.detach().float().cpu().reshape(-1)

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("capacity", "visual", "text", "index", "ptr", "count", "refresh_ptr")}

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v.clone() if torch.is_tensor(v) else v)


def eal_loss(buffers: EntropyBuffers, visual_now: torch.Tensor, text_now: torch.Tensor) -> torch.Tensor:
    """L_eal once the buffers are half full, else 0.

    Entries made by the momentum model carry no gradient, so Algorithm 1 as written cannot move the
    trained model. We therefore add the current batch's entropies from the trained model (with gradient)
    to the visual sample, and the matching text entropies to the text sample.
    """
    if not buffers.half_full:
        return visual_now.sum() * 0.0
    bv, bs = buffers.values()
    v = torch.cat([bv.to(visual_now.device), visual_now.float()])
    s = torch.cat([bs.to(text_now.device), text_now.detach().float()])
    return energy_distance(v, s)
