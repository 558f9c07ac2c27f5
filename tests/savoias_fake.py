"""A fake of the published Savoias repository (Images/<Category>/<N>.jpg|png and one ground-truth workbook per
category), for ``python -m icrt.train.datasets.savoias`` and the docs test."""
import os
import zipfile

from icrt.train.datasets.savoias import CATEGORIES
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
