"""``python -m train.datasets.savoias``: the Savoias repository as published (Images/<Category>/<N>.jpg|png and one
ground-truth workbook per category) -> the labels CSV the trainer reads. On a tiny fake of that layout."""
import csv
import os
import zipfile

import pytest

from icrt.runtime.base.errors import UserInputError
from icrt.train.datasets.savoias import CATEGORIES, convert, main
from tests.images import textured

SHEET = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/'
         'spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c></row>{rows}</sheetData>'
         '</worksheet>')
STRINGS = ('<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/'
           'main" count="1" uniqueCount="1"><si><t>gt</t></si></sst>')


def workbook(path, scores):
    rows = "".join(f'<row r="{i + 2}"><c r="A{i + 2}"><v>{s}</v></c></row>' for i, s in enumerate(scores))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/worksheets/sheet1.xml", SHEET.format(rows=rows))
        z.writestr("xl/sharedStrings.xml", STRINGS)


def published(root, n=3, missing=None):
    """A fake clone: every category with n images (the first a PNG) and their scores 10, 20, ... (one image
    ``missing`` = (folder, N) left out)."""
    os.makedirs(root / "Ground truth" / "xlsx")
    for folder, key, _ in CATEGORIES:
        d = root / "Images" / folder
        d.mkdir(parents=True)
        for i in range(n):
            if (folder, i) != missing:
                textured(24, 20, seed=i).save(d / f"{i}.{'png' if i == 0 else 'jpg'}")
        workbook(root / "Ground truth" / "xlsx" / f"global_ranking_{key}.xlsx", [10 * (i + 1) for i in range(n)])
    (root / "Images" / "Name_Mappings").mkdir()  # other folders and files of the repository are ignored
    (root / "README.md").write_text("# SAVOIAS Dataset\n")


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
