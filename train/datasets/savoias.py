"""``python -m train.datasets.savoias FOLDER``: the Savoias data set as published -> ``FOLDER/labels.csv``.

Savoias (Saraee, Jalal, Betke; arXiv:1810.01771; Apache License 2.0) is published as a Git repository
(github.com/esaraee/Savoias-Dataset): ``Images/<Category>/<N>.jpg|png`` (N counted from 0; seven categories,
1,420 images) and, per category, ``Ground truth/xlsx/global_ranking_<key>.xlsx``: one column headed ``gt`` whose
row N + 2 is image N's score, 0-100 (Bradley-Terry over pairwise comparisons, within the category). The labels
CSV has ``image,score,category``: the image path relative to the CSV, the score divided by 100, and the category
as icrt names it (``advertisement``, ``art``, ``interior_design``, ``objects``, ``scenes``, ``suprematism``,
``visualizations``). Scores are comparable only within a category.

The workbooks are read with the standard library (an .xlsx file is a zip of XML): no spreadsheet package. The
``Ground truth/npy`` copies are pickled numpy object arrays, which this converter never loads (unpickling runs
code). Images without a score, and scores without an image, are counted and named in one warning line.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import re
import sys
import zipfile
from xml.etree import ElementTree

from icrt.runtime.base.errors import UserInputError

log = logging.getLogger("icrt.train.datasets.savoias")

# folder under Images/, key of its ground-truth workbook, icrt's category name
CATEGORIES = (
    ("Advertisement", "ad", "advertisement"),
    ("Art", "art", "art"),
    ("Interior Design", "interior_design", "interior_design"),
    ("Objects", "objects", "objects"),
    ("Scenes", "scenes", "scenes"),
    ("Suprematism", "sup", "suprematism"),
    ("Visualizations", "vis", "visualizations"),
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_XML_BYTES = 16 << 20  # a workbook's sheet is ~20 kB; anything this large is not the published file
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
CELL = re.compile(r"([A-Z]+)(\d+)")


def _member(z: zipfile.ZipFile, name: str, path: str) -> bytes:
    info = z.getinfo(name)
    if info.file_size > MAX_XML_BYTES:
        raise UserInputError(f"{path}: {name} is {info.file_size >> 20} MB; not a Savoias ground-truth workbook")
    return z.read(name)


def read_scores(path: str) -> dict[int, float]:
    """Image number -> score (0-100) from one ground-truth workbook: column A, row N + 2 for image N (row 1 is
    the ``gt`` header)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            sheet = ElementTree.fromstring(_member(z, "xl/worksheets/sheet1.xml", path))
            shared = []
            if "xl/sharedStrings.xml" in names:
                sst = ElementTree.fromstring(_member(z, "xl/sharedStrings.xml", path))
                shared = ["".join(t.text or "" for t in si.iter(f"{{{NS['m']}}}t")) for si in sst.findall("m:si", NS)]
    except (OSError, zipfile.BadZipFile, KeyError, ElementTree.ParseError) as e:
        raise UserInputError(f"{path}: not a readable .xlsx workbook ({type(e).__name__}: {e})") from None
    scores = {}
    for c in sheet.iter(f"{{{NS['m']}}}c"):
        m = CELL.fullmatch(c.get("r", ""))
        v = c.find("m:v", NS)
        if not m or m.group(1) != "A" or v is None or v.text is None:
            continue
        row = int(m.group(2))
        text = shared[int(v.text)] if c.get("t") == "s" and v.text.isdigit() and int(v.text) < len(shared) else v.text
        if row == 1:
            if text.strip().lower() != "gt":
                raise UserInputError(f"{path}: cell A1 is {text!r}, not the 'gt' header of a Savoias workbook")
            continue
        try:
            scores[row - 2] = float(text)
        except ValueError:
            raise UserInputError(f"{path}: cell A{row}: {text!r} is not a score") from None
    if not scores:
        raise UserInputError(f"{path}: no scores in column A")
    return scores


def _images(folder: str) -> dict[int, str]:
    """Image number -> file name in one category folder (``<N>.jpg`` / ``.png``)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES and stem.isdigit() and os.path.isfile(os.path.join(folder, name)):
            out.setdefault(int(stem), name)
    return out


def convert(root: str, out: str | None = None) -> tuple[str, int, list[str]]:
    """Write the labels CSV of the Savoias repository ``root`` (default ``root/labels.csv``); (its path, rows, the
    images left out: ``category/N (no score|no image)``)."""
    from icrt.runtime.base.files import write_text

    out = out or os.path.join(root, "labels.csv")
    base = os.path.dirname(os.path.abspath(out))
    rows, unmatched = [], []
    for folder, key, category in CATEGORIES:
        images_dir = os.path.join(root, "Images", folder)
        workbook = os.path.join(root, "Ground truth", "xlsx", f"global_ranking_{key}.xlsx")
        for path in (images_dir, workbook):
            if not os.path.exists(path):
                raise UserInputError(f"{root}: no {os.path.relpath(path, root)}: not the Savoias repository as "
                                     "published (git clone https://github.com/esaraee/Savoias-Dataset)")
        scores, images = read_scores(workbook), _images(images_dir)
        for n in sorted(set(scores) | set(images)):
            if n not in scores or n not in images:
                unmatched.append(f"{category}/{n}" + (" (no score)" if n not in scores else " (no image)"))
                continue
            image = os.path.relpath(os.path.join(images_dir, images[n]), base).replace(os.sep, "/")
            rows.append((image, f"{scores[n] / 100:.4g}", category))
    if unmatched:
        log.warning("savoias: %d left out: %s%s", len(unmatched), ", ".join(unmatched[:10]),
                    " ..." if len(unmatched) > 10 else "")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "score", "category"])
    w.writerows(rows)
    write_text(out, buf.getvalue())
    return out, len(rows), unmatched


def main(argv=None) -> int:
    from icrt.runtime.base.errors import run_command, setup_logging

    p = argparse.ArgumentParser(prog="python -m train.datasets.savoias",
                                description="Write the labels CSV (image,score,category) of the Savoias data set as "
                                            "published (a clone of github.com/esaraee/Savoias-Dataset).")
    p.add_argument("root", metavar="FOLDER", help="the clone: it holds Images/ and 'Ground truth/'")
    p.add_argument("-o", "--out", metavar="CSV", help="where to write it (default FOLDER/labels.csv); image paths "
                   "are relative to it")
    args = p.parse_args(argv)
    setup_logging()

    def run():
        out, n, _ = convert(args.root, args.out)
        print(f"{out}: {n} images", file=sys.stderr)
        return 0
    return run_command(p.prog, run)


if __name__ == "__main__":
    sys.exit(main())
