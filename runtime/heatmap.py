"""Per-patch scores drawn over the image, with a colour bar as the legend (matplotlib, imported lazily).

Overlapping patches are averaged per pixel, so the map shows where in the image the model found the
complexity. A square-policy model has one input per image; its map shows the scores of overlapping local
windows instead (``Scorer.local_windows``), while the image score stays the model's.

The Scorer hands out what a map is drawn from (:class:`ScoreMap`, in a record's ``map`` when asked for); a
consumer draws it: :class:`HeatmapWriter` (``icrt score --heatmap DIR``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

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


@dataclass
class ScoreMap:
    """What the heatmap of one image is drawn from."""

    rgb: np.ndarray  # the image, reduced (its long side at most runtime.scorer.HEATMAP_SIDE)
    geometry: tuple  # (height, width) of the frame the squares lie in (the fitted image, or ``rgb`` itself)
    positions: list  # (top, left) of each square
    side: int  # the squares' side, in that frame
    scores: np.ndarray  # one per square
    image_score: float
    note: str | None = None  # what the squares are, when not the model's own patches


class HeatmapWriter:
    """Draws the map of each record that carries one (``Scorer.iter_score(..., maps=...)``) into ``folder`` as
    ``<stem>.heatmap.png`` (numbered when stems repeat) and names it in the record's ``heatmap``.

    The first write that fails ends the heatmaps, not the scoring: :meth:`draw` returns the problem once, and
    :attr:`active` turns False (pass it to ``iter_score(maps=writer.wanted)`` so that no more maps are computed).
    """

    def __init__(self, folder: str, score_range=(0.0, 1.0)):
        self.folder, self.score_range = folder, score_range or (0.0, 1.0)
        self.used: set[str] = set()
        self.active = True

    def wanted(self) -> bool:
        return self.active

    def name_for(self, image: str) -> str:
        stem = os.path.splitext(os.path.basename(image))[0] or "image"
        name, i = f"{stem}.heatmap.png", 1
        while name in self.used:
            name, i = f"{stem}-{i}.heatmap.png", i + 1
        self.used.add(name)
        return os.path.join(self.folder, name)

    def draw(self, rec: dict) -> str | None:
        """Take the record's ``map`` and write its PNG; the problem (one line) when the write failed."""
        m = rec.pop("map", None)
        if m is None or not self.active:
            return None
        path = self.name_for(rec["image"])
        try:
            write_heatmap(path, m.rgb, m.geometry, m.positions, m.side, m.scores, m.image_score,
                          title=os.path.basename(rec["image"]), score_range=self.score_range, note=m.note)
        except OSError as e:
            self.active = False
            where = printable(os.fsdecode(e.filename)) if isinstance(e.filename, (str, bytes)) else ""
            what = f"{where}: {e.strerror}" if where and e.strerror else printable(str(e))
            return f"cannot write a heatmap: {what}; scoring goes on without heatmaps"
        rec["heatmap"] = path
        return None
