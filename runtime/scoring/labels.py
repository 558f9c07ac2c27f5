"""Labelled images, read once for everyone: ``icrt eval`` and ``python -m train`` (``train.data``) read the same two
formats here.

1. A labels CSV with the header ``image,score`` and optional ``category`` / ``caption`` columns (any order, any case);
   image paths are relative to the CSV's folder (the Savoias copy uses this).
2. The IC9600 layout: ``ROOT/images/`` with one list per split, ``ROOT/<split>.txt``, one ``name  score`` a line; the
   category is the name's prefix before its first ``_`` (``abstract_1.jpg``).

Text is read as UTF-8 (a leading byte-order mark is accepted). A file that cannot be read as a whole (missing, not
UTF-8, not CSV, no ``image`` / ``score`` header) is a :class:`LabelError`. A bad row is not: it becomes a
:class:`RowProblem` (the file and line, what is wrong) beside the rows that were read, so that ``icrt eval`` scores
the rest and ``python -m train`` refuses the data at the first one, each as it chooses.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
from dataclasses import dataclass, field

from icrt.runtime.base.errors import UserInputError

CSV_NAME = "labels.csv"  # a folder holding one is read as that CSV


class LabelError(UserInputError):
    """A labels file that cannot be read at all; the message names the file (and line)."""


@dataclass(frozen=True)
class Label:
    image: str  # absolute path
    score: float
    category: str | None = None
    caption: str | None = None
    key: str = ""  # the path as written in the list or CSV
    where: str = ""  # FILE:LINE of its row


@dataclass(frozen=True)
class RowProblem:
    where: str  # FILE:LINE
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class Labels:
    """What a labels file holds: its readable rows, and a problem for each row that is not."""

    source: str  # the file read
    rows: list[Label] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


@contextlib.contextmanager
def text_file(path: str):
    """A UTF-8 text file, opened for the csv module (BOM accepted); a file that cannot be opened, undecodable bytes and
    CSV syntax errors are one-line LabelErrors naming it."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise LabelError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        with f:
            yield f
    except UnicodeDecodeError as e:
        raise LabelError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); save it as UTF-8") from None
    except csv.Error as e:
        raise LabelError(f"{path}: not a readable CSV ({e})") from None


class _Bad(Exception):
    """One row's problem, raised inside a reader and kept as a RowProblem."""


def _score(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _Bad(f"score {text!r} is not a number") from None
    if not math.isfinite(v):
        raise _Bad(f"score {text!r} is not finite")
    return v


def _existing(path: str, check: bool) -> str:
    if check and not os.path.isfile(path):
        raise _Bad(f"image not found: {path}")
    return os.path.abspath(path)


def read_csv(csv_path: str, check_images: bool = False) -> Labels:
    """A labels CSV; ``check_images``: a row whose image is not a file is a problem (else the scorer finds out)."""
    base = os.path.dirname(os.path.abspath(csv_path))
    out = Labels(csv_path)
    with text_file(csv_path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise LabelError(f"{csv_path}:1: empty file")
        cols = [h.strip().lower() for h in header]
        if "image" not in cols or "score" not in cols:
            raise LabelError(f"{csv_path}:1: header must have 'image' and 'score' columns, got {header}")
        ii, si = cols.index("image"), cols.index("score")
        ci = cols.index("category") if "category" in cols else None
        ti = cols.index("caption") if "caption" in cols else None
        for row in reader:
            if not row or not any(c.strip() for c in row):
                continue
            where = f"{csv_path}:{reader.line_num}"
            try:
                if len(row) != len(cols):
                    raise _Bad(f"expected {len(cols)} fields, got {len(row)}")
                rel = row[ii].strip()
                if not rel:
                    raise _Bad("empty image path")
                path = _existing(rel if os.path.isabs(rel) else os.path.join(base, rel), check_images)
                category = row[ci].strip() or None if ci is not None else None
                caption = row[ti].strip() or None if ti is not None else None
                out.rows.append(Label(path, _score(row[si].strip()), category, caption, rel, where))
            except _Bad as e:
                out.problems.append(RowProblem(where, str(e)))
    return out


def read_ic9600(root: str, split: str, check_images: bool = False) -> Labels:
    """``ROOT/<split>.txt`` of an IC9600 folder, its images in ``ROOT/images``."""
    list_file = os.path.join(root, f"{split}.txt")
    if not os.path.isfile(list_file):
        raise LabelError(f"{list_file}: list file not found")
    out = Labels(list_file)
    with text_file(list_file) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{list_file}:{n}"
            try:
                parts = line.rstrip("\n").rsplit(None, 1)
                if len(parts) != 2:
                    raise _Bad(f"expected 'name  score', got {line.strip()!r}")
                name, score = parts[0].strip(), _score(parts[1])
                path = _existing(os.path.join(root, "images", name), check_images)
                category = name.split("_", 1)[0] if "_" in name else None
                out.rows.append(Label(path, score, category, None, name, where))
            except _Bad as e:
                out.problems.append(RowProblem(where, str(e)))
    return out


def is_ic9600(path: str, split: str) -> bool:
    """An IC9600 folder: it holds the list of ``split`` (``<split>.txt``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, f"{split}.txt"))


def labels_csv(path: str) -> str | None:
    """The labels CSV ``path`` names: the file itself, or a folder's ``labels.csv`` (None: neither)."""
    if os.path.isdir(path):
        inner = os.path.join(path, CSV_NAME)
        return inner if os.path.isfile(inner) else None
    return path if os.path.isfile(path) else None


DEFAULT_SPLIT = "test"  # icrt eval on an IC9600 folder: its test list unless --split names another


def read_labels(path: str, split: str | None = None, check_images: bool = False) -> Labels:
    """What ``icrt eval --data`` names: an IC9600 folder (its ``<split>.txt``, by default ``test.txt``), or a labels
    CSV (the file, or a folder's ``labels.csv``; read whole: ``split`` given for one is a LabelError)."""
    folder = os.path.isdir(path)
    if folder and (split is not None or is_ic9600(path, DEFAULT_SPLIT)):
        return read_ic9600(path, split or DEFAULT_SPLIT, check_images)
    csv_path = labels_csv(path)
    if csv_path is None:
        if folder:
            raise LabelError(f"{path}: neither an IC9600 folder (no {DEFAULT_SPLIT}.txt) nor a folder with a "
                             f"{CSV_NAME}")
        raise LabelError(f"{path}: no such file or folder" if not os.path.lexists(path) else
                         f"{path}: not a labels CSV (a regular file) nor an IC9600 folder")
    if split is not None:
        raise LabelError(f"{csv_path}: a labels CSV is read whole (a split, {split!r}, names a list of an IC9600 "
                         "folder)")
    return read_csv(csv_path, check_images)
