"""Data set readers and splits.

Formats:
1. IC9600 layout: ``ROOT/images/`` with ``ROOT/train.txt`` / ``ROOT/test.txt``, one ``name  score`` per line.
2. A labels CSV with header ``image,score`` and optional ``category`` / ``caption`` columns; image paths are
   relative to the CSV's folder (the Savoias copy uses this).
3. A captions CSV ``image,caption`` joined to either of the above by image path.

The first two are read by the runtime (``runtime.scoring.labels``, which ``icrt eval`` reads them with too); training
refuses a data set at its first bad row, where ``icrt eval`` goes on past it.

Text files are read as UTF-8 (a leading byte-order mark is accepted). Training checks its samples before the
first epoch (``check_training_samples``): every score must lie in the declared range, [0, 1] unless
``--score-range LO,HI`` says otherwise (IC9600 and Savoias scores are in [0, 1], and the models' sigmoid
output cannot leave it); an image listed twice with the same score (and category) is dropped with a warning,
with another score or category it is refused; and every image must decode (refused, or left out with
``--skip-bad-images``).
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace

import icrt.runtime.scoring.labels as labels
from icrt.runtime.base.errors import UserInputError
from icrt.runtime.scoring.labels import LabelError, text_file

logger = logging.getLogger(__name__)


class DataError(UserInputError):
    """A malformed data file; the message names the file and line."""


@dataclass(frozen=True)
class Sample:
    image: str  # absolute path
    score: float
    category: str | None = None
    caption: str | None = None
    key: str = ""  # the path as written in the list/CSV (used to join captions)
    source: str = ""  # the data set it came from (the domain under --dataset-domain)
    where: str = field(default="", compare=False)  # FILE:LINE of the row it came from (for messages)


@contextlib.contextmanager
def _data_errors():
    """The runtime's LabelError (a labels file that cannot be read) as this module's DataError."""
    try:
        yield
    except LabelError as e:
        raise DataError(str(e)) from None


@contextlib.contextmanager
def _text(path: str):
    """A UTF-8 text file (BOM accepted) for the csv module; problems are one-line DataErrors naming the file."""
    with _data_errors(), text_file(path) as f:
        yield f


def _samples(read, *args) -> list[Sample]:
    """The runtime's reader's rows as Samples; its first row problem, or no rows at all, is a DataError."""
    with _data_errors():
        found = read(*args)
    if found.problems:
        raise DataError(str(found.problems[0]))
    if not found.rows:
        raise DataError(f"{found.source}: no samples")
    return [Sample(r.image, r.score, r.category, r.caption, r.key, where=r.where) for r in found.rows]


def read_ic9600(root: str, split: str = "train", check_images: bool = True) -> list[Sample]:
    """``ROOT/{split}.txt`` (``runtime.scoring.labels.read_ic9600``); refused at its first bad line."""
    return _samples(labels.read_ic9600, root, split, check_images)


def read_labels_csv(csv_path: str, check_images: bool = True) -> list[Sample]:
    """A labels CSV (``runtime.scoring.labels.read_csv``); refused at its first bad row."""
    return _samples(labels.read_csv, csv_path, check_images)


def read_captions(csv_path: str) -> dict[str, str]:
    """``image,caption`` CSV -> {image key: caption}; keys are as written and as absolute paths."""
    base = os.path.dirname(os.path.abspath(csv_path))
    out: dict[str, str] = {}
    with _text(csv_path) as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in (next(reader, None) or [])]
        if "image" not in header or "caption" not in header:
            raise DataError(f"{csv_path}:1: header must have 'image' and 'caption' columns")
        ii, ci = header.index("image"), header.index("caption")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{csv_path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}")
            key = row[ii].strip()
            out[key] = row[ci].strip()
            out[os.path.abspath(os.path.join(base, key))] = row[ci].strip()
    return out


def attach_captions(samples: list[Sample], captions: dict[str, str], source: str = "captions") -> list[Sample]:
    """Join captions by image; every sample must have one."""
    out, missing = [], []
    for s in samples:
        cap = captions.get(s.key) or captions.get(s.image) or captions.get(os.path.basename(s.image))
        if cap is None:
            missing.append(s.key or s.image)
        out.append(replace(s, caption=cap))
    if missing:
        raise DataError(f"{source}: no caption for {len(missing)} image(s), e.g. {missing[:3]}")
    return out


def is_ic9600(path: str, split: str = "train") -> bool:
    """An IC9600 folder: it holds the list of ``split`` (``train.txt``)."""
    return labels.is_ic9600(path, split)


def load_samples(path: str, split: str = "train", check_images: bool = True) -> list[Sample]:
    """``path`` is an IC9600 folder (``split`` picks train.txt / test.txt) or a labels CSV."""
    if is_ic9600(path):
        return read_ic9600(path, split, check_images)
    csv_path = labels.labels_csv(path)
    if csv_path is not None:
        return read_labels_csv(csv_path, check_images)
    raise DataError(f"{path}: not an IC9600 folder (with train.txt) or a labels CSV")


def data_paths(data) -> list[str]:
    """``--data`` as a list: comma-separated and/or repeated paths."""
    items = [data] if isinstance(data, str) else list(data or [])
    return [p.strip() for item in items for p in item.split(",") if p.strip()]


def load_many(data, split: str = "train", check_images: bool = True) -> list[Sample]:
    """Samples of one or several data sets, each tagged with its path as ``source``."""
    out = []
    for path in data_paths(data):
        out += [replace(s, source=path) for s in load_samples(path, split, check_images)]
    return out


def split_train_val(samples: list[Sample], val_fraction: float = 0.2, seed: int = 42,
                    stratify: bool = True) -> tuple[list[Sample], list[Sample]]:
    """Seeded random split; stratified by category when categories exist (and ``stratify``)."""
    rng = random.Random(seed)
    groups: dict = defaultdict(list)
    for s in samples:
        groups[s.category if stratify else None].append(s)
    train, val = [], []
    for key in sorted(groups, key=lambda k: (k is None, str(k))):
        g = list(groups[key])
        rng.shuffle(g)
        n_val = int(round(len(g) * val_fraction))
        if len(g) > 1:
            n_val = min(max(n_val, 1), len(g) - 1)
        val += g[:n_val]
        train += g[n_val:]
    return train, val


# --- checks before training -------------------------------------------------------------------------


def _at(s: Sample) -> str:
    return s.where or s.image


def check_scores(samples: list[Sample], score_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Refuse a score outside ``score_range`` (inclusive), naming the file and line."""
    lo, hi = score_range
    for s in samples:
        if not lo <= s.score <= hi:
            raise DataError(f"{_at(s)}: score {s.score:g} is outside [{lo:g}, {hi:g}] "
                            f"(pass --score-range LO,HI for data on another scale)")


def drop_repeats(samples: list[Sample]) -> list[Sample]:
    """The samples with each image once. A repeat with the same score and category is dropped (one
    warning line); a repeat with another score or category is refused at its file and line. An image is
    the same file, whatever path or symbolic link names it."""
    first: dict[str, Sample] = {}
    out, dropped = [], []
    for s in samples:
        key = os.path.realpath(s.image)
        seen = first.get(key)
        if seen is None:
            first[key] = s
            out.append(s)
        elif seen.score == s.score and seen.category == s.category:
            dropped.append((s, seen))
        else:
            what = "score" if seen.score != s.score else "category"
            a, b = (seen.score, s.score) if what == "score" else (seen.category, s.category)
            raise DataError(f"{_at(s)}: {s.image} is listed again with another {what} ({b} here, {a} at "
                            f"{_at(seen)})")
    if dropped:
        s, seen = dropped[0]
        logger.warning(f"warning: dropped {len(dropped)} repeated row(s) (same image, same score), "
                       f"e.g. {_at(s)} repeats {_at(seen)}")
    return out


def refuse_overlap(train: list[Sample], val: list[Sample]) -> None:
    """Validation must not score images the model trained on."""
    seen = {os.path.realpath(s.image): s for s in train}
    for s in val:
        t = seen.get(os.path.realpath(s.image))
        if t is not None:
            raise DataError(f"{_at(s)}: {s.image} is also a training image ({_at(t)}); "
                            f"validation must not see training images")


_DECODED: dict[tuple, str | None] = {}  # (path, size, mtime) -> problem or None; protocols check once


def _decode_problem(path: str) -> str | None:
    from icrt.runtime.scoring.preprocess import ImageError, load_rgb

    try:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _DECODED:
        return _DECODED[key]
    try:
        load_rgb(path)
        problem = None
    except ImageError as e:
        problem = e.problem
    if key is not None:
        _DECODED[key] = problem
    return problem


def bad_images(samples: list[Sample]) -> list[tuple[Sample, str]]:
    """(sample, problem) for every image that does not decode (the runtime's decoder; a few threads)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(_decode_problem, [s.image for s in samples]))
    return [(s, p) for s, p in zip(samples, problems) if p is not None]


def drop_bad_images(samples: list[Sample], skip: bool = False) -> list[Sample]:
    """Decode every image once. Unreadable ones are refused (a one-line DataError listing the first few, ``; ``
    between them), or with ``skip`` left out and counted in one warning (the ``train.data`` logger)."""
    bad = bad_images(samples)
    if not bad:
        return samples
    lines = [f"{_at(s)}: {s.image}: {p}" for s, p in bad[:5]] + ([f"... and {len(bad) - 5} more"] if len(bad) > 5 else [])
    if not skip:
        if len(bad) == 1:
            raise DataError(f"{lines[0]} (pass --skip-bad-images to leave unreadable images out)")
        raise DataError(f"{len(bad)} unreadable images (pass --skip-bad-images to leave them out): " + "; ".join(lines))
    logger.warning(f"warning: skipped {len(bad)} unreadable image(s) of {len(samples)}, e.g. {lines[0]}")
    drop = {id(s) for s, _ in bad}
    return [s for s in samples if id(s) not in drop]


def check_training_samples(samples: list[Sample], score_range=(0.0, 1.0), skip_bad_images: bool = False) -> list[Sample]:
    """All checks before training, in order: scores in range, repeats, images decode."""
    check_scores(samples, score_range)
    return drop_bad_images(drop_repeats(samples), skip_bad_images)

