"""``icrt report``: one self-contained HTML page from scores (an ``icrt batch`` folder, or ``icrt score -o``).

Reading (``readers``), what the page shows (``statistics``) and the page itself (``html``) are this package's
modules; :func:`make_report` and :func:`write_report` put them together.

Input (untrusted, read twice, streamed both times):

- a folder written by ``icrt batch --out DIR``: its ``part-*.parquet`` files (columns path, score, error and
  optionally width, height, patches; read with pyarrow, imported only here, from the ``[scale]`` extra), plus
  ``summary.json`` when present (its plain fields are shown);
- a single ``.parquet`` part;
- a scores file of ``icrt score -o``: JSON (a list of objects), JSONL (one object a line) or CSV
  (``image,score,patches,width,height[,heatmap],error``; a leading ``'`` that ``icrt score`` puts before a
  formula-like cell is taken off). The format is sniffed from the content, not the file name.

Pass 1 checks every record (a malformed one stops the report with one line naming the file and the record)
and finds the score range; pass 2 fills what the page shows, in bounded memory whatever the number of rows:

- a histogram and global quantiles, per-folder figures, the simplest and most complex images and ``--thumbs N``
  images evenly spaced by rank, the errors (``runtime.report.statistics`` says how each stays exact or bounded).

Thumbnails are decoded by the runtime's own decoding and embedded (``runtime.report.html``), only of images below
the images root: ``--images-root``; for a batch folder, where its run recorded its images (``runtime.batch.origin``)
when this machine's run wrote that very folder, never where the folder sits; for a scores file, its folder. A
missing, unreadable or withheld image shows a placeholder with the reason.

Every text taken from the input is made printable (``runtime.base.text.printable``), cut to a length, and
HTML-escaped; the page has no script, no external resource, and a Content-Security-Policy that forbids both.
"""
from __future__ import annotations

import math
import os
import stat

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.base.text import printable
from icrt.runtime.batch.layout import SUMMARY_FILE
from icrt.runtime.report.html import render
from icrt.runtime.report.readers import Source, bad_input
from icrt.runtime.report.statistics import Report

DEFAULT_THUMBS = 48
MAX_THUMBS = 500


def check_output(output: str, source: Source) -> None:
    from icrt.runtime.base.files import destination_problem, resolve

    try:
        target, st = resolve(output)
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot write -o {printable(output)}: {getattr(e, 'strerror', None) or e}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UserInputError(f"cannot write -o {printable(output)}: not a regular file (refusing to replace it)")
    problem = destination_problem(output)
    if problem:
        raise UserInputError(f"cannot write -o {printable(output)}: {problem}")
    inputs = [source.path, *source.parts, os.path.join(source.path, SUMMARY_FILE)]
    if st is not None:
        for p in inputs:
            try:
                if os.path.samefile(p, target):
                    raise UserInputError(f"cannot write -o {printable(output)}: it is the input {printable(p)}")
            except OSError:
                pass


def check_images_root(images_root: str | None) -> None:
    """UserInputError unless ``images_root`` (when given) is a folder."""
    if images_root is not None and not os.path.isdir(images_root):
        raise UserInputError(f"--images-root {printable(images_root)}: not a folder")


def make_report(source_path: str, thumbs: int = DEFAULT_THUMBS, title: str | None = None,
                images_root: str | None = None) -> str:
    """The HTML page for ``source_path`` (a batch folder, a Parquet part, or a scores file); thumbnails only of
    images below ``images_root`` (default: see ``runtime.report.html.ImagesRoot``)."""
    check_images_root(images_root)
    return render_source(Source(source_path), thumbs, title, images_root)[0]


def render_source(source: Source, thumbs: int, title: str | None, images_root: str | None = None
                   ) -> tuple[str, Report]:
    lo, hi, n = math.inf, -math.inf, 0
    for r in source.rows():  # pass 1: check everything, find the range
        n += 1
        if r.score is not None:
            lo, hi = min(lo, r.score), max(hi, r.score)
    if not n:
        raise bad_input(source.path, "", "no records")
    if lo > hi:  # nothing scored
        lo, hi = 0.0, 1.0
    elif lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # the usual score range: show all of it
    elif lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    rep = Report(lo, hi, thumbs)
    for r in source.rows():  # pass 2
        rep.add(r)
    name = os.path.basename(os.path.normpath(source.path)) or source.path
    return render(rep, source, title or f"icrt report: {name}", images_root), rep


def write_report(source_path: str, output: str, thumbs: int = DEFAULT_THUMBS, title: str | None = None,
                 images_root: str | None = None) -> Report:
    from icrt.runtime.base.files import write_text

    check_images_root(images_root)
    source = Source(source_path)
    check_output(output, source)
    page, rep = render_source(source, thumbs, title, images_root)
    try:
        write_text(output, page)
    except OSError as e:
        raise UserInputError(f"cannot write -o {printable(output)}: {e.strerror or e}") from None
    return rep
