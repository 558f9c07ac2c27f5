"""Per-patch scores drawn over the image, with a colour bar as the legend (matplotlib, imported lazily).

Overlapping patches are averaged per pixel, so the map shows where in the image the model found the
complexity. A square-policy model has one input per image; its map shows the scores of overlapping local
windows instead (``Scorer.local_windows``), while the image score stays the model's.
"""
from __future__ import annotations

import numpy as np

from .files import atomic_path
from .formats import printable

CELL = 8  # the score map is computed on an 8 px grid of the fitted image: plenty for a 64 px stride


def score_map(geometry, positions, patch: int, scores) -> np.ndarray:
    """Mean score of the patches covering each CELL x CELL cell of the fitted (height, width) image."""
    gh, gw = geometry
    h, w = -(-gh // CELL), -(-gw // CELL)
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for (top, left), s in zip(positions, scores):
        t0, l0 = top // CELL, left // CELL
        t1, l1 = -(-min(top + patch, gh) // CELL), -(-min(left + patch, gw) // CELL)
        total[t0:t1, l0:l1] += float(s)
        count[t0:t1, l0:l1] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def write_heatmap(path, rgb, geometry, positions, patch, scores, image_score, title="", score_range=(0.0, 1.0),
                  note=None):
    """Write a PNG: the image, the patch-score map over it (semi-transparent), and a labelled colour bar."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads

    h, w = rgb.shape[:2]
    m = score_map(geometry, positions, patch, scores)
    scale = 8.0 / max(h, w)
    fig = Figure(figsize=(max(3.0, w * scale) + 1.4, max(3.0, h * scale) + 0.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgb, extent=(0, w, h, 0), interpolation="antialiased")
    lo, hi = (float(score_range[0]), float(score_range[1])) if score_range else (0.0, 1.0)
    im = ax.imshow(m, extent=(0, w, h, 0), cmap="inferno", vmin=lo, vmax=hi, alpha=0.55, interpolation="nearest")
    ax.set_axis_off()
    note = note or f"{len(scores)} patch{'es' if len(scores) != 1 else ''}"
    # a file name is not mathtext ($), and undecodable bytes / control characters are shown escaped
    ax.set_title(f"{printable(title)}  score {image_score:.3f}  ({note})", fontsize=9, parse_math=False)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("patch complexity score (higher = more complex)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
