"""``icrt report``: one self-contained HTML page (histogram, folders, thumbnails, errors) from scores.

    icrt report DIR_OR_FILE [-o report.html] [--thumbs N] [--title TEXT] [--images-root DIR]

DIR_OR_FILE: a folder written by ``icrt batch --out`` (its Parquet parts; pyarrow, from the ``[scale]`` extra), one
Parquet part, or the JSON / JSONL / CSV of ``icrt score -o``. See ``runtime.report`` and docs/report.md.
"""
from __future__ import annotations

import argparse

from icrt.runtime.cli.command import Command


def _thumbs(text: str) -> int:
    from icrt.runtime.report import MAX_THUMBS

    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= MAX_THUMBS:
        raise argparse.ArgumentTypeError(f"expected 0 .. {MAX_THUMBS}, got {text!r}")
    return v


def arguments(p) -> None:
    from icrt.runtime.report import DEFAULT_THUMBS

    p.add_argument("source", metavar="DIR_OR_FILE",
                   help="an `icrt batch --out` folder, a part-*.parquet file, or a scores file of `icrt score -o`")
    p.add_argument("-o", "--output", metavar="FILE", default="report.html",
                   help="the HTML page to write, atomically (default: report.html)")
    p.add_argument("--thumbs", type=_thumbs, default=DEFAULT_THUMBS, metavar="N",
                   help=f"thumbnails evenly spaced by rank, simplest to most complex (default {DEFAULT_THUMBS}; "
                        "0: no thumbnails)")
    p.add_argument("--title", metavar="TEXT", help="page title (default: 'icrt report: ' and the input's name)")
    p.add_argument("--images-root", metavar="DIR",
                   help="thumbnails only of images below DIR (default: for an icrt batch folder, the folder its "
                        "images were in as its run.json records it, when this machine's icrt batch wrote that very "
                        "folder, else none; for a scores file or a part, the folder that holds it); relative paths "
                        "are looked up from it too")


def run(args) -> int:
    import sys

    from icrt.runtime.base.files import fd_target
    from icrt.runtime.base.text import printable
    from icrt.runtime.report import write_report

    rep = write_report(args.source, args.output, thumbs=args.thumbs, title=args.title, images_root=args.images_root)
    # the page may have gone to stdout (-o /dev/stdout): then the count line goes to stderr
    stream = sys.stderr if fd_target(args.output) is not None else sys.stdout
    print(f"{printable(args.output)}: {rep.rows:,} images, {rep.scored:,} scored, {rep.error_count:,} errors",
          file=stream)
    return 0


COMMAND = Command(
    "report", help="one self-contained HTML page from icrt batch output or icrt score results",
    description=("Write one self-contained HTML page (score histogram, per-folder counts and medians, contact "
                 "sheets of thumbnails from the simplest to the most complex image, the error list) from a folder "
                 "written by `icrt batch` or the JSON/JSONL/CSV of `icrt score -o`."),
    examples=(("icrt report scores/ -o scores.html", "an icrt batch folder"),
              ("icrt score photos/ --format json -o scores.json && icrt report scores.json --thumbs 96", "")),
    arguments=arguments, run=run)
