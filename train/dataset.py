"""Torch data set over :class:`train.data.Sample` lists, using the runtime's numpy preprocessing."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.runtime.scoring.preprocess import load_resized, normalize


class GeometryCache:
    """Decoded-and-resized uint8 images kept in memory (resizing is deterministic, so this is exact)."""

    def __init__(self, prep: Preprocessing, enabled: bool = True):
        self.prep, self.enabled, self._store = prep, enabled, {}

    def get(self, path: str) -> np.ndarray:
        img = self._store.get(path)
        if img is None:
            img = load_resized(path, self.prep)[0]  # decode + geometry, as the runtime's Scorer
            if self.enabled:
                self._store[path] = img
        return img


class ImageScoreDataset(Dataset):
    """Training inputs built on the runtime's resize step.

    ``square``: the resized image, with a random horizontal flip when ``train``. ``patches``: a random
    ``size x size`` crop of the fitted image (as CM-SSA trains) plus the flip; the centre crop when not
    ``train``. D2S (Appendix A.3) states no augmentation; a flip leaves complexity unchanged.
    """

    def __init__(self, samples, prep: Preprocessing, train: bool = False, cache: GeometryCache | None = None):
        self.samples, self.prep, self.train = list(samples), prep, train
        self.cache = cache or GeometryCache(prep, enabled=False)

    def __len__(self) -> int:
        return len(self.samples)

    def _crop(self, img: np.ndarray) -> np.ndarray:
        s = self.prep.size
        h, w = img.shape[:2]
        if self.train:
            top = int(torch.randint(0, h - s + 1, ()))
            left = int(torch.randint(0, w - s + 1, ()))
        else:
            top, left = (h - s) // 2, (w - s) // 2
        return img[top : top + s, left : left + s]

    def __getitem__(self, i: int):
        img = self.cache.get(self.samples[i].image)
        if self.prep.resize == "patches":
            img = self._crop(img)
        if self.train and torch.rand(()) < 0.5:
            img = img[:, ::-1]
        x = torch.from_numpy(normalize(img, self.prep.mean, self.prep.std))
        return x, torch.tensor(self.samples[i].score, dtype=torch.float32), i
