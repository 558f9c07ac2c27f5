"""Per-patch scores drawn over the image, with a colour bar as the legend (Pillow only: the slim runtime draws them).

Overlapping patches are averaged per pixel, so the map shows where in the image the model found the
complexity. A square-policy model has one input per image; its map shows the scores of overlapping local
windows instead (``Scorer.local_windows``), while the image score stays the model's: a window is scored as if it
were a whole image, so its colours span the windows' own range and the legend says that they are on their own
scale.

The colours are laid over a lightened grey copy of the image (never below :data:`FLOOR` of full brightness), so
a dark photo keeps its detail under the map, and the colour map has no black end (blue, cyan, yellow, red).

The Scorer hands out what a map is drawn from (:class:`ScoreMap`, in a record's ``map`` when asked for); a
consumer draws it: :class:`HeatmapWriter` (``icrt score --heatmap DIR``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from icrt.runtime.base.files import owned_problem, write_owned
from icrt.runtime.base.text import printable

CELL = 8  # the score map is computed on an 8 px grid of the fitted image: plenty for a 64 px stride
MIN_SIDE = 384  # small images are drawn enlarged to this long side, so that the legend fits beside them
ALPHA = 0.45  # weight of the map's colour over the grey image
FLOOR = 0.3  # the grey copy's darkest value, as a share of white: a black image stays visible under the map
# colour map stops (position, RGB): no black end, so low scores do not hide the image
STOPS = ((0.0, (49, 54, 149)), (0.25, (69, 160, 220)), (0.5, (250, 240, 150)), (0.75, (245, 140, 55)),
         (1.0, (200, 25, 30)))
BAR_W, MARGIN, TITLE_H = 18, 10, 26


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


def colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (NaN: none) -> uint8 RGB of the colour map (NaN -> 0, masked by the caller)."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    pos = np.array([p for p, _ in STOPS])
    rgb = np.array([c for _, c in STOPS], dtype=np.float64)
    return np.stack([np.interp(v, pos, rgb[:, k]) for k in range(3)], axis=-1).round().astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's own TrueType font (FreeType builds)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_width(draw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def draw_heatmap(rgb, geometry, positions, patch, scores, image_score, title="", score_range=(0.0, 1.0),
                 note=None):
    """The heatmap as a Pillow image: the image in grey with the score map over it, a title line, and a colour bar
    labelled with its ends. ``note`` (the squares are not the model's patches: local windows) puts the colours on
    the windows' own range and says so."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    m = score_map(geometry, positions, patch, scores)
    own_scale = note is not None
    if own_scale:  # windows: their own range (a flat range is widened so that the bar has two ends)
        lo, hi = float(np.min(scores)), float(np.max(scores))
        if hi - lo < 1e-6:
            lo, hi = lo - 0.005, hi + 0.005
    else:
        lo, hi = (float(score_range[0]), float(score_range[1])) if score_range else (0.0, 1.0)
    scale = max(1.0, MIN_SIDE / max(h, w))
    W, H = round(w * scale), round(h * scale)
    base = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("L")
    if (W, H) != (w, h):
        base = base.resize((W, H), Image.Resampling.BILINEAR)
    grey = np.asarray(base, dtype=np.float64) * (1 - FLOOR) + 255 * FLOOR
    values = (m - lo) / (hi - lo)
    cells = Image.fromarray(colours(values)).resize((W, H), Image.Resampling.NEAREST)
    covered = Image.fromarray(np.where(np.isnan(m), 0, 255).astype(np.uint8)).resize((W, H), Image.Resampling.NEAREST)
    a = ALPHA * (np.asarray(covered, dtype=np.float64)[..., None] / 255)
    over = grey[..., None] * (1 - a) + np.asarray(cells, dtype=np.float64) * a
    font, small = _font(13), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [f"{v:.3g}" for v in (hi, (lo + hi) / 2, lo)]
    legend = ["window score", "(own scale)"] if own_scale else ["patch score"]
    bar_area = max(BAR_W + 2 * MARGIN + max(_text_width(probe, t, small) for t in labels),
                   max(_text_width(probe, t, small) for t in legend) + MARGIN)
    caption = (f"{note}: each window scored as a whole image, on its own scale (not the image score)" if own_scale
               else f"{len(scores)} patch{'es' if len(scores) != 1 else ''}; higher = more complex")
    text_h = TITLE_H + 18
    caption_w = max(_text_width(probe, t, f) for t, f in ((caption, small), (title, font))) + 2 * MARGIN
    canvas = Image.new("RGB", (max(W + bar_area + 2 * MARGIN, min(caption_w, 2 * W)), H + text_h + 13 * len(legend)
                               + MARGIN), "white")
    canvas.paste(Image.fromarray(over.round().astype(np.uint8)), (MARGIN, text_h))
    d = ImageDraw.Draw(canvas)
    d.text((MARGIN, 5), f"{printable(title)}  score {image_score:.3f}", fill=(20, 24, 32), font=font)
    d.text((MARGIN, 5 + 18), caption, fill=(80, 88, 100), font=small)
    x0, y0, y1 = W + 2 * MARGIN, text_h, text_h + H
    ramp = colours(np.linspace(1.0, 0.0, max(2, y1 - y0)))[:, None, :].repeat(BAR_W, axis=1)
    canvas.paste(Image.fromarray(ramp), (x0, y0))
    d.rectangle((x0, y0, x0 + BAR_W - 1, y1 - 1), outline=(90, 90, 90))
    for k, text in enumerate(labels):
        y = y0 + (y1 - y0 - 1) * k / 2
        d.line((x0 + BAR_W, y, x0 + BAR_W + 4, y), fill=(90, 90, 90))
        d.text((x0 + BAR_W + 7, y - 6), text, fill=(40, 44, 52), font=small)
    for k, line in enumerate(legend):
        d.text((x0, y1 + 3 + 13 * k), line, fill=(80, 88, 100), font=small)
    return canvas


def write_heatmap(path, rgb, geometry, positions, patch, scores, image_score, title="", score_range=(0.0, 1.0),
                  note=None):
    """Write the heatmap (:func:`draw_heatmap`) as a PNG, atomically and never through a link or into a FIFO: the
    name is icrt's, in a folder others may write to (``runtime.base.files.write_owned``; OSError saying why)."""
    import io

    image = draw_heatmap(rgb, geometry, positions, patch, scores, image_score, title, score_range, note)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    write_owned(path, buf.getvalue())
    return path


@dataclass
class ScoreMap:
    """What the heatmap of one image is drawn from."""

    rgb: np.ndarray  # the image, reduced (its long side at most runtime.scoring.scorer.HEATMAP_SIDE)
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
            os.makedirs(self.folder, exist_ok=True)
            write_heatmap(path, m.rgb, m.geometry, m.positions, m.side, m.scores, m.image_score,
                          title=os.path.basename(rec["image"]), score_range=self.score_range, note=m.note)
        except OSError as e:
            self.active = False
            where = printable(os.fsdecode(e.filename)) if isinstance(e.filename, (str, bytes)) else ""
            what = f"{where}: {e.strerror}" if where and e.strerror else printable(str(e))
            return f"cannot write a heatmap: {what}; scoring goes on without heatmaps"
        rec["heatmap"] = path
        return None


def heatmap_names_problem(folder: str, images) -> str | None:
    """Why the heatmaps of ``images`` could not be written into ``folder`` (checked before scoring): a name one of
    them would get that is a symbolic link, a FIFO, a folder or a device (someone else's, in a shared folder: icrt
    never writes through it); None when there is none."""
    names = HeatmapWriter(folder)
    for image in images:
        path = names.name_for(image)
        problem = owned_problem(path)
        if problem:
            return f"cannot write heatmaps into --heatmap {printable(folder)}: {printable(path)} {problem}"
    return None
