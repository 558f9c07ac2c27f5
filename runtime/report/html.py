"""The page of ``icrt report``: self-contained HTML (a score histogram as inline SVG, per-folder table, contact
sheets, errors, the run's summary). Thumbnails are decoded by the runtime's own checked decoding
(``runtime.scoring.preprocess.load_for_model``: folders, FIFOs, empty files and decompression bombs refused, JPEG draft
decoding), shrunk to :data:`THUMB_PX` px and embedded as base64 JPEG, only of images below the images root
(:class:`ImagesRoot`); a missing or unreadable image shows a placeholder with the reason.

Every text taken from the input is made printable (``runtime.base.text.printable``), cut to a length, and
HTML-escaped; the page has no script, no external resource, and a Content-Security-Policy that forbids both.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import os

from icrt.runtime.base.text import printable
from icrt.runtime.batch.layout import SUMMARY_FILE
from icrt.runtime.report.readers import Source
from icrt.runtime.report.statistics import (
    EXACT_FOLDER,
    EXACT_GLOBAL,
    GLOBAL_BINS,
    HIST_BINS,
    MAX_FOLDERS,
    SAMPLE_SIZE,
    SHOW_ERROR,
    SHOW_PATH,
    Pick,
    Report,
    frac,
    lerp,
    width,
)

THUMB_PX = 160  # thumbnail bounding box
THUMB_QUALITY = 80
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


OUTSIDE_ROOT = "not shown: outside the images root (--images-root)"
NOT_BELOW_ROOT = "not shown: not found below the images root (--images-root)"
NO_ROOT = "not shown: no images root for this batch folder (--images-root)"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class ImagesRoot:
    """Where thumbnails may come from: files below ``root`` only, symbolic links resolved, so that scores someone
    sends cannot make the page embed any image of this machine (``/home/you/id.jpg``, ``../../x.jpg``, a link out).
    The root is ``--images-root`` when given; else, for a batch folder, the root its run.json records when that
    record is this machine's for this very folder (``runtime.batch.origin``; none otherwise, ``why`` says why), and
    for a scores file or a single part, the folder that holds it. Relative paths are looked up from ``bases``
    (:meth:`for_source`). A placeholder never tells whether a path outside the root exists: :data:`OUTSIDE_ROOT`
    when every place it was looked for is outside, :data:`NOT_BELOW_ROOT` when some are below the root (and missing
    there); ``no such file`` only when it was looked for below the root alone."""

    def __init__(self, root: str | None, bases: list[str], why: str | None = None):
        self.root = os.path.abspath(root) if root else None
        self.real_root = os.path.realpath(self.root) if self.root else None
        self.bases = list(dict.fromkeys(os.path.abspath(b) for b in bases))
        self.why = why  # why there is no root (a batch folder from elsewhere)

    @classmethod
    def for_source(cls, source: Source, images_root: str | None = None) -> "ImagesRoot":
        from icrt.runtime.batch.origin import recorded_cwd, recorded_root

        cwd = os.path.abspath("")
        if source.kind == "batch":  # relative to the run's working folder, as icrt batch recorded it
            bases = [b for b in (recorded_cwd(source.origin), images_root, cwd) if b]
            root, why = (images_root, None) if images_root else recorded_root(source.origin, source.path)
            return cls(root, bases, why)
        return cls(images_root or source.base, [b for b in (images_root, source.base, cwd) if b])

    def locate(self, path: str) -> tuple[str | None, str | None]:
        """(the file to decode, resolved; or None and why not)."""
        if self.real_root is None:
            return None, NO_ROOT
        if not path or "\0" in path:
            return None, OUTSIDE_ROOT
        candidates = [path] if os.path.isabs(path) else list(dict.fromkeys(os.path.join(b, path) for b in self.bases))
        below = []
        for c in candidates:
            try:
                real = os.path.realpath(c)
            except (OSError, ValueError):
                continue
            if _inside(real, self.real_root):
                if os.path.lexists(real):
                    return real, None
                below.append(real)
        if below and len(below) == len(candidates):  # looked for below the root only: the decoder says it is missing
            return below[0], None
        return None, NOT_BELOW_ROOT if below else OUTSIDE_ROOT


def thumbnail(path: str) -> tuple[str | None, str | None]:
    """(base64 JPEG, None) or (None, why not): decoded by the runtime's own checked decoding, never raising."""
    from PIL import Image

    from icrt.runtime.bundle.preprocessing import Preprocessing
    from icrt.runtime.scoring.preprocess import ImageError, load_for_model

    try:
        rgb, _ = load_for_model(path, Preprocessing(resize="square", size=THUMB_PX))
        im = Image.fromarray(rgb)
        del rgb
        im.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
        return base64.b64encode(buf.getvalue()).decode("ascii"), None
    except ImageError as e:
        return None, e.problem
    except Exception as e:  # a placeholder, whatever an odd file does to the decoder
        return None, f"cannot read the image ({type(e).__name__})"


def esc(text, limit: int | None = None) -> str:
    """Untrusted text -> printable, cut to ``limit`` characters, HTML-escaped (quotes too)."""
    text = printable(str(text))
    if limit and len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    return html.escape(text, quote=True)


def fmt(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "&ndash;"
    return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.{digits}g}"  # 1e308 in fixed point is 309 digits


CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:1220px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px}
.sub{color:#5b6475;margin:0 0 18px;word-break:break-all}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px 18px;margin:0 0 18px}
.cards{display:flex;gap:12px;flex-wrap:wrap;background:none;border:0;padding:0}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:22px}.card span{color:#5b6475;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.bad b{color:#b3261e}
.note{color:#5b6475;font-size:12.5px;margin:6px 0 0}
.warn{color:#8a5300;background:#fff6e0;border:1px solid #f0d9a0;border-radius:6px;padding:6px 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{color:#5b6475;font-weight:600;background:#fafbfc}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.p{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.q{display:flex;gap:18px;flex-wrap:wrap;margin-top:8px;font-variant-numeric:tabular-nums}
.q span{color:#5b6475}
.sheet{display:grid;grid-template-columns:repeat(8,minmax(0,1fr));gap:10px}
@media (max-width:900px){.sheet{grid-template-columns:repeat(auto-fill,minmax(120px,1fr))}}
figure{margin:0;background:#fafbfc;border:1px solid #eceef2;border-radius:6px;padding:6px;text-align:center}
figure img,.ph{width:100%;height:124px;object-fit:contain;display:block;background:#e9ecf1;border-radius:4px}
.ph{display:flex;align-items:center;justify-content:center;color:#8a93a3;font-size:11.5px;padding:8px;word-break:break-word}
figcaption{font-size:12px;margin-top:4px;line-height:1.3}
figcaption b{font-size:14px;font-variant-numeric:tabular-nums}
figcaption .f{display:block;color:#3d4554;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figcaption .d{color:#8a93a3;font-size:11px}
.bar{height:8px;background:#e9ecf1;border-radius:4px;position:relative;min-width:120px}
.bar i{position:absolute;top:-2px;width:3px;height:12px;background:#2f6fdb;border-radius:1px}
.bar s{position:absolute;top:0;height:8px;background:#c9d8f5;border-radius:4px}
footer{color:#5b6475;font-size:12px}
"""


def count_ticks(peak: int) -> tuple[int, int]:
    """(step, number of steps) of the count axis: whole counts, every label different (1, 2, 3 ... for small
    peaks; 1, 2 or 5 times a power of ten otherwise), at most 5 steps, the last at or above ``peak``."""
    peak = max(1, int(peak))
    if peak <= 5:
        return 1, peak
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step * 5 >= peak:
                return m * step, -(-peak // (m * step))
        step *= 10


def score_ticks(lo: float, hi: float, n: int = 10) -> list[str]:
    """The labels of the score axis's n + 1 evenly spaced ticks, with just enough digits that no two are the same
    (a narrow range such as 0.9990 .. 0.9999 needs more than three)."""
    values = [lerp(lo, hi, k / n) for k in range(n + 1)]
    for digits in range(3, 18):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def common_root(keys: list[str]) -> str:
    """The folder every key lies in, when there are several keys and it is not empty ("" otherwise)."""
    if len(keys) < 2 or len({os.path.isabs(k) for k in keys}) > 1:
        return ""
    try:
        root = os.path.commonpath(keys)
    except ValueError:
        return ""
    return "" if root in ("", ".", os.sep) else root


def relative_to(key: str, root: str) -> str:
    if not root:
        return key
    rel = os.path.relpath(key, root)
    return "." if rel == "." else rel


SCORE_SCALE_NOTE = ("Compare folders that hold the same kind of image: the default model learned from Savoias, where "
                    "people rated each kind of image (adverts, art, interiors, objects, scenes, ...) on its own, so "
                    "its scores are comparable only within a kind (icrt info: model card).")


def _hist_svg(rep: Report, median: float | None) -> str:
    w, h, left, right, top, bottom = 1100, 250, 52, 12, 22, 34
    pw, ph = w - left - right, h - top - bottom
    step, ticks = count_ticks(max(rep.hist))
    peak = step * ticks  # the top of the count axis: a whole number of steps, each label a different count
    bw = pw / HIST_BINS
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" role="img" '
           f'aria-label="score histogram" style="max-width:{w}px;display:block">']
    for k in range(ticks + 1):  # horizontal grid lines and count labels
        y = top + ph - ph * k / ticks
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceef2"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#5b6475">'
                   f'{step * k:,}</text>')
    for i, c in enumerate(rep.hist):
        if c:
            bh = ph * c / peak
            lo, hi = lerp(rep.lo, rep.hi, i / HIST_BINS), lerp(rep.lo, rep.hi, (i + 1) / HIST_BINS)
            out.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{top + ph - bh:.1f}" width="{bw - 1:.1f}" '
                       f'height="{bh:.1f}" fill="#5b8def"><title>{lo:.4g} to {hi:.4g}: {c}'
                       f'</title></rect>')
    for k, label in enumerate(score_ticks(rep.lo, rep.hi)):  # score ticks, every label different
        x = left + pw * k / 10
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#8a93a3"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 17}" font-size="11" text-anchor="middle" fill="#5b6475">'
                   f'{esc(label)}</text>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}" stroke="#8a93a3"/>')
    if median is not None:
        x = left + pw * frac(median, rep.lo, rep.hi)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#d9480f" '
                   f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{top - 8}" font-size="11" text-anchor="middle" '
                   f'fill="#d9480f">'
                   f'median {median:.4f}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{h - 2}" font-size="11" text-anchor="middle" fill="#5b6475">'
               f'score ({HIST_BINS} bins)</text></svg>')
    return "".join(out)


def _figure(p: Pick, thumbs: dict, images: ImagesRoot) -> str:
    if p.image not in thumbs:
        where, why = images.locate(p.image)
        thumbs[p.image] = thumbnail(where) if where else (None, why)
    data, why = thumbs[p.image]
    full = esc(p.image, SHOW_PATH)
    size = f" \u00b7 {p.width}\u00d7{p.height}" if p.width and p.height else ""
    title = f'{full} ({fmt(p.score)}{esc(size)})'
    if data:
        img = f'<img src="data:image/jpeg;base64,{data}" alt="{full}" title="{title}">'
    else:
        img = f'<div class="ph" title="{title}">{esc(why, 120)}</div>'
    parts = p.image.replace(os.sep, "/").rstrip("/").split("/")
    name = esc(parts[-1] or p.image, 80)
    parent = esc(parts[-2] + "/" if len(parts) > 1 else "\u00a0", 80)
    return (f'<figure>{img}<figcaption><b>{fmt(p.score)}</b> <span class="note">p{100 * p.rank:.0f}</span>'
            f'<span class="f" title="{full}">{name}</span><span class="f d">{parent}</span></figcaption></figure>')


def _sheet(picks: list[Pick], thumbs: dict, images: ImagesRoot) -> str:
    return '<div class="sheet">' + "".join(_figure(p, thumbs, images) for p in picks) + "</div>"


def _plain(v) -> str | None:
    """A summary value as short text; None for what is not plain (nested objects, long lists)."""
    if isinstance(v, bool) or v is None:
        return None if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        return f"{v:,.6g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, str):
        return v
    if isinstance(v, list) and len(v) <= 12 and all(isinstance(x, (int, float, str)) for x in v):
        return ", ".join(_plain(x) or "" for x in v)
    return None


def _get(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _summary_items(summary: dict) -> list[tuple[str, str]]:
    """summary.json as rows a person reads: what ran, on what, how fast; then its other plain fields. What the page
    shows elsewhere (errors, histogram, score quantiles) is left out. Every value is taken as untrusted: a field of
    an unexpected type is skipped."""
    def text(*keys):
        return _plain(_get(summary, *keys))

    def join(*parts):
        return ", ".join(p for p in parts if p)

    rows = [
        ("finished", text("finished")),
        ("images", join(text("counts", "rows") and f"{text('counts', 'rows')} rows",
                        text("counts", "scored") and f"{text('counts', 'scored')} scored",
                        text("counts", "errors") and f"{text('counts', 'errors')} errors",
                        text("counts", "parts") and f"in {text('counts', 'parts')} Parquet parts")),
        ("this run", join(text("counts", "scored_this_run") and f"{text('counts', 'scored_this_run')} scored",
                          text("counts", "inputs") and f"of {text('counts', 'inputs')} inputs",
                          text("counts", "skipped_resume") and f"{text('counts', 'skipped_resume')} kept from "
                                                               "before (--resume)")),
        ("speed", join(text("speed", "images_per_s") and f"{text('speed', 'images_per_s')} images/s",
                       text("speed", "seconds") and f"{text('speed', 'seconds')} s")),
        ("runner", join(text("runner"), text("workers") and f"{text('workers')} worker(s)",
                        text("shard") and f"shard {text('shard')}")),
        ("model", join(" ".join(filter(None, (text("bundle", "name"), text("bundle", "kind") and
                                              f"({text('bundle', 'kind')})"))),
                       text("bundle", "precision"), text("bundle", "backend") and f"backend {text('bundle', 'backend')}")),
        ("bundle", text("bundle", "path")),
        ("versions", ", ".join(f"{k} {_plain(v)}" for k, v in (_get(summary, "versions") or {}).items()
                               if _plain(v) is not None) if isinstance(_get(summary, "versions"), dict) else None),
    ]
    shown = {"finished", "counts", "speed", "runner", "workers", "shard", "bundle", "versions", "errors",
             "errors_listed", "errors_by_problem", "scores", "histogram", "format", "complete"}
    for k, v in summary.items():
        if k not in shown and (t := _plain(v)) is not None:
            rows.append((str(k), t))
    return [(k, v) for k, v in rows if v][:60]


def render(rep: Report, source: Source, title: str, images_root: str | None = None) -> str:
    d = rep.dist
    median = d.quantile(0.5)
    approx = "" if d.exact else "\u2248"
    thumbs: dict = {}
    base = ImagesRoot.for_source(source, images_root)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    h = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
         f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
         f'<meta name="viewport" content="width=device-width,initial-scale=1">'
         f'<title>{esc(title, 200)}</title><style>{CSS}</style></head><body><main>',
         f'<h1>{esc(title, 200)}</h1><p class="sub">{esc(source.path, SHOW_PATH)} &middot; {esc(source.describe())}'
         f' &middot; made {now} by icrt report</p>']
    if source.kind == "batch" and not source.complete:
        h.append('<p class="warn">No completion marker in this folder: the batch may be unfinished or still '
                 'running; this page shows the rows written so far.</p>')
    cards = [("images", f"{rep.rows:,}", ""), ("scored", f"{rep.scored:,}", ""),
             ("errors", f"{rep.error_count:,}", " bad" if rep.error_count else ""),
             ("median", approx + fmt(median), ""), ("mean", fmt(d.mean), ""),
             ("min \u2013 max", f"{fmt(d.min if d.n else None, 3)} \u2013 {fmt(d.max if d.n else None, 3)}", "")]
    h.append('<section class="cards">' + "".join(f'<div class="card{c}"><span>{k}</span><b>{v}</b></div>'
                                                for k, v, c in cards) + "</section>")

    h.append("<section><h2>Score distribution</h2>")
    if d.n:
        h.append(_hist_svg(rep, median))
        qs = [("min", 0), ("p5", .05), ("p10", .1), ("p25", .25), ("median", .5), ("p75", .75), ("p90", .9),
              ("p95", .95), ("max", 1)]
        h.append('<div class="q">' + "".join(f"<div><span>{k}</span> {approx if 0 < q < 1 else ''}"
                                             f"{fmt(d.quantile(q))}</div>" for k, q in qs) + "</div>")
        if not d.exact:
            h.append(f'<p class="note">Quantiles over {d.n:,} scores from {GLOBAL_BINS} fine bins (to within '
                     f'{width(rep.lo, rep.hi, GLOBAL_BINS):.2g}).</p>')
    else:
        h.append('<p class="note">No image was scored.</p>')
    h.append("</section>")

    if rep.thumbs and d.n:
        if base.why:
            h.append(f'<p class="warn">Thumbnails not shown: this batch folder {esc(base.why, 200)}, so where its '
                     'images are on this machine is unknown; <code>--images-root DIR</code> shows the images below '
                     'DIR.</p>')
        h.append(f"<section><h2>Simplest</h2>{_sheet(rep.simplest(), thumbs, base)}</section>")
        spread = rep.spread()
        how = ("all scored images ranked" if rep.sample_exact
               else f"ranks from a uniform random sample of {SAMPLE_SIZE:,} of the {rep.scored:,} scored images")
        h.append(f'<section><h2>From simplest to most complex</h2><p class="note" style="margin:0 0 10px">'
                 f'{len(spread)} images evenly spaced by rank ({how}); pN under each: its rank percentile.</p>'
                 f'{_sheet(spread, thumbs, base)}</section>')
        h.append(f"<section><h2>Most complex</h2>{_sheet(rep.most_complex(), thumbs, base)}</section>")

    more = "+" if rep.other.rows else ""
    root = common_root(list(rep.folders))
    h.append(f"<section><h2>Folders ({len(rep.folders):,}{more})</h2>"
             f'<p class="warn" style="margin:0 0 10px">{esc(SCORE_SCALE_NOTE)}</p>')
    if root:
        h.append(f'<p class="note" style="margin:0 0 8px">Folders below <code>{esc(root, SHOW_PATH)}</code></p>')
    h.append("<table><tr><th>folder</th>"
             '<th class="n">images</th><th class="n">errors</th><th class="n">median</th><th class="n">mean</th>'
             '<th class="n">min</th><th class="n">max</th><th>range (bar: min to max, mark: median)</th></tr>')
    for key, f in rep.folder_rows():
        fd = f.dist
        name = esc(relative_to(key, root), SHOW_PATH) if key is not None else "<i>other folders</i>"
        bar = ""
        if fd.n:
            a, b, m = (frac(v, rep.lo, rep.hi) * 100 for v in (fd.min, fd.max, fd.quantile(0.5)))
            bar = (f'<div class="bar"><s style="left:{a:.1f}%;width:{max(b - a, 0.5):.1f}%"></s>'
                   f'<i style="left:calc({m:.1f}% - 1px)"></i></div>')
        fa = "" if fd.exact else "\u2248"
        h.append(f'<tr><td class="p">{name}</td><td class="n">{f.rows:,}</td><td class="n">{f.errors:,}</td>'
                 f'<td class="n">{fa if fd.n else ""}{fmt(fd.quantile(0.5))}</td><td class="n">{fmt(fd.mean)}</td>'
                 f'<td class="n">{fmt(fd.min if fd.n else None)}</td><td class="n">{fmt(fd.max if fd.n else None)}'
                 f'</td><td>{bar}</td></tr>')
    h.append("</table>")
    if rep.other.rows:
        h.append(f'<p class="note">Only the first {MAX_FOLDERS} folders met are listed one by one.</p>')
    h.append("</section>")

    h.append(f"<section><h2>Errors ({rep.error_count:,})</h2>")
    if rep.error_count:
        if len(rep.error_kinds) > 1:
            kinds = sorted(rep.error_kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
            h.append('<table><tr><th>error message</th><th class="n">files</th></tr>' + "".join(
                f'<tr><td>{esc(k, SHOW_ERROR) if k else "<i>other messages</i>"}</td><td class="n">{n:,}</td></tr>'
                for k, n in kinds) + '</table><p class="note" style="margin-bottom:14px"></p>')
        h.append('<table><tr><th>path</th><th>error</th></tr>' + "".join(
            f'<tr><td class="p">{esc(p, SHOW_PATH)}</td><td>{esc(e, SHOW_ERROR)}</td></tr>' for p, e in rep.errors)
            + "</table>")
        if rep.error_count > len(rep.errors):
            h.append(f'<p class="note">The first {len(rep.errors):,} of {rep.error_count:,} errors.</p>')
    else:
        h.append('<p class="note">None: every image was scored.</p>')
    h.append("</section>")

    if source.summary_note:
        h.append(f'<section><h2>Run ({SUMMARY_FILE})</h2><p class="note">{esc(source.summary_note, 300)}</p></section>')
    if source.summary:
        items = _summary_items(source.summary)
        h.append(f"<section><h2>Run ({SUMMARY_FILE})</h2><table>" + "".join(
            f'<tr><th style="width:30%">{esc(k, 120)}</th><td>{esc(v, 300)}</td></tr>' for k, v in items)
            + "</table></section>")

    h.append(f'<footer>Thumbnails: the {rep.extremes} simplest and most complex images exactly; between them, images '
             f'evenly spaced by rank{" (exact)" if rep.sample_exact else f" in a random sample of {SAMPLE_SIZE:,}"}. '
             f'Folder = the parent directory of each path. Medians are exact up to {EXACT_FOLDER:,} scores per folder '
             f'({EXACT_GLOBAL:,} overall), then read from fine bins (marked \u2248).</footer></main></body></html>\n')
    return "".join(h)
