"""Which images calibrate (and check) an export, read with the same data readers as training (``train.data``).

``PATH`` is a labels CSV (``image,score[,category]``), an IC9600 folder (its ``train.txt``), a folder of images,
or a text file with one image path per line. ``split`` picks the training or held-out part of the seeded,
stratified split that training uses (``train.data.split_train_val``), so that calibration never sees the
held-out images the export is checked on.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.scoring.inputs import is_image_name

SPLITS = ("all", "train", "val")


class CalibrationDataError(UserInputError):
    """No usable images at the given path; the message names it."""


@dataclass(frozen=True)
class LabeledImage:
    path: str
    score: float | None = None
    category: str | None = None


def _folder_images(root: str) -> list[LabeledImage]:
    out = []
    for d, _, files in os.walk(root):
        out += [LabeledImage(os.path.join(d, f)) for f in files if is_image_name(f)]
    return sorted(out, key=lambda s: s.path)


def _list_file(path: str) -> list[LabeledImage]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        names = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    return [LabeledImage(n if os.path.isabs(n) else os.path.join(base, n)) for n in names]


def read_images(path: str, split: str = "all", val_fraction: float = 0.2, seed: int = 42) -> list[LabeledImage]:
    """The images at ``path`` (with labels where the format has them), restricted to ``split``."""
    from icrt.train.data import DataError, is_ic9600, load_samples, split_train_val

    if split not in SPLITS:
        raise CalibrationDataError(f"unknown split {split!r} ({'|'.join(SPLITS)})")
    if not os.path.exists(path):
        raise CalibrationDataError(f"{path}: no such file or folder")
    labelled = is_ic9600(path) or path.lower().endswith(".csv") or (
        os.path.isdir(path) and os.path.isfile(os.path.join(path, "labels.csv")))
    if labelled:
        try:
            samples = load_samples(path, "train")
        except DataError as e:
            raise CalibrationDataError(str(e)) from None
        if split != "all":
            train, val = split_train_val(samples, val_fraction, seed=seed, stratify=True)
            samples = train if split == "train" else val
        images = [LabeledImage(s.image, s.score, s.category) for s in samples]
    else:
        if split != "all":
            raise CalibrationDataError(f"{path}: --*-split {split} needs a labelled set (labels CSV or IC9600 folder)")
        images = _folder_images(path) if os.path.isdir(path) else _list_file(path)
    if not images:
        raise CalibrationDataError(f"{path}: no images found")
    return images


def choose(images: list[LabeledImage], n: int | None, seed: int = 0) -> list[LabeledImage]:
    """A seeded random subset of ``n`` images (all when ``n`` is None or larger than the set)."""
    if not n or n >= len(images):
        return list(images)
    return random.Random(seed).sample(list(images), n)
