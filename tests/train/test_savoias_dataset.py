"""``python -m train.datasets.savoias``: the Savoias repository as published (Images/<Category>/<N>.jpg|png and one
ground-truth workbook per category) -> the labels CSV the trainer reads. On a tiny fake of that layout."""
import csv
import os

import pytest

from icrt.runtime.base.errors import UserInputError
from icrt.train.datasets.savoias import CATEGORIES, convert, main
from tests.savoias_fake import published, workbook  # noqa: F401


def test_the_published_layout_becomes_the_labels_csv_with_paths_relative_to_it(tmp_path):
    root = tmp_path / "Savoias-Dataset"
    published(root)
    assert main([str(root)]) == 0
    rows = list(csv.DictReader(open(root / "labels.csv")))
    assert len(rows) == 3 * len(CATEGORIES) and list(rows[0]) == ["image", "score", "category"]
    assert rows[0] == {"image": "Images/Advertisement/0.png", "score": "0.1", "category": "advertisement"}
    assert {"image": "Images/Interior Design/2.jpg", "score": "0.3", "category": "interior_design"} in rows
    assert {r["category"] for r in rows} == {c for _, _, c in CATEGORIES}
    from icrt.train.data import load_samples

    samples = load_samples(str(root / "labels.csv"))  # the trainer reads it as written
    assert len(samples) == len(rows) and all(os.path.isfile(s.image) for s in samples)


def test_elsewhere_paths_climb_to_the_images_and_a_missing_image_is_left_out(tmp_path):
    root = tmp_path / "Savoias-Dataset"
    published(root, missing=("Scenes", 1))
    out, n, left_out = convert(str(root), str(tmp_path / "lists" / "savoias.csv"))
    rows = list(csv.DictReader(open(out)))
    assert n == len(rows) == 3 * len(CATEGORIES) - 1
    assert rows[0]["image"] == "../Savoias-Dataset/Images/Advertisement/0.png"
    assert left_out == ["scenes/1 (no image)"]


def test_not_the_published_layout_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match="not the Savoias repository as published"):
        convert(str(tmp_path))
    root = tmp_path / "s"
    published(root)
    (root / "Ground truth" / "xlsx" / "global_ranking_art.xlsx").write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="global_ranking_art.xlsx: not a readable .xlsx workbook"):
        convert(str(root))
