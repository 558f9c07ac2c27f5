"""Generated test images, torch-free (numpy + Pillow): shared by tests/ and tests/runtime/.

(``export.checks.generated_images`` is the exporter's own set of check images, product code.)"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


def textured(w: int, h: int, seed: int = 0, level: float = 0.5) -> Image.Image:
    """A flat grey w x h image with a share ``level`` of its pixels replaced by random colours: more noise, more
    'complex'."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    mask = rng.random((h, w)) < level
    img[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return Image.fromarray(img)


def make_images(folder, n: int, categories=("a", "b"), size: int = 48, seed: int = 0):
    """Write n square images to ``folder/images``; returns [(relative path, score, category)] with score a function
    of the noise level."""
    rows = []
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    for i in range(n):
        level = (i % 8) / 7.0
        cat = categories[i % len(categories)]
        name = f"{cat}_{i}.png"
        textured(size, size, seed=seed + i, level=level).save(os.path.join(folder, "images", name))
        rows.append((f"images/{name}", round(0.05 + 0.9 * level, 4), cat))
    return rows
