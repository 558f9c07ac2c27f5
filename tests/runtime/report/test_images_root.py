"""Which thumbnails ``icrt report`` shows of an ``icrt batch`` folder (issue 26: R4 and the report-root bug): a batch
folder records where its images were (run.json ``images``: the working folder, the images root, this host, the
folder's own identity); the report shows images below that root only for the folder this machine's run wrote, or
below ``--images-root``, never below the folder the batch folder sits in; each placeholder says the true reason.
Torch-free; needs pyarrow."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

import icrt.runtime.report.html as report_html  # noqa: E402
from tests.images import textured  # noqa: E402
from tests.runtime.fixtures import run_cli  # noqa: E402

THUMB = 'src="data:image/jpeg;base64,'


def page_of(capsys, tmp_path, source, *extra) -> str:
    dest = tmp_path / "page.html"
    code, _, err = run_cli(capsys, "report", source, "-o", dest, *extra)
    assert code == 0, err
    return dest.read_text(encoding="utf-8")


def spread(page: str) -> str:
    start = page.index("<h2>From simplest to most complex")
    return page[start:page.index("</section>", start)]


def placeholders(section: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<div class="ph" title="[^"]*">([^<]*)</div>', section)]


@pytest.fixture
def photos_run(tmp_path, capsys, monkeypatch, square_bundle):
    """``icrt batch photos/ --out out/run1`` run from ``tmp_path/work`` (relative paths, the batch folder below the
    working folder): 3 images, a file that is no image, and a link to an image outside ``photos/``."""
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    for i in range(3):
        textured(60, 50, seed=i, level=0.2 * i).save(work / "photos" / f"p{i}.png")
    (work / "photos" / "notes.png").write_bytes(b"not an image at all")
    (tmp_path / "private").mkdir()
    textured(50, 50, seed=9).save(tmp_path / "private" / "id.png")
    (work / "photos" / "link.png").symlink_to(tmp_path / "private" / "id.png")
    monkeypatch.chdir(work)
    code, _, err = run_cli(capsys, "batch", "photos/", "--out", "out/run1", "-m", square_bundle)
    assert code == 1, err  # notes.png
    return work


def test_a_batch_folder_below_the_working_folder_shows_its_thumbnails(photos_run, capsys, tmp_path):
    """The bug: `icrt batch photos/ --out out/run1 && icrt report out/run1` showed 0 thumbnails, each saying `no such
    file`. Now the images below the recorded root are shown; a link out of it is not; the reasons are true."""
    run = json.loads((photos_run / "out" / "run1" / "run.json").read_text())["images"]
    assert run["cwd"] == str(photos_run) and run["root"] == os.path.realpath(photos_run / "photos")
    assert run["host"] == socket.gethostname()
    page = page_of(capsys, tmp_path, "out/run1")
    sheet = spread(page)
    assert sheet.count(THUMB) == 3  # p0, p1, p2
    assert placeholders(sheet) == [report_html.OUTSIDE_ROOT]  # the link to ../private/id.png
    assert "no such file" not in page and "Thumbnails not shown" not in page
    os.remove(photos_run / "photos" / "p1.png")  # missing now: that, and only that, says no such file
    sheet = spread(page_of(capsys, tmp_path, "out/run1"))
    assert sheet.count(THUMB) == 2 and sorted(placeholders(sheet)) == sorted(["no such file",
                                                                               report_html.OUTSIDE_ROOT])


def test_the_record_follows_the_folder_when_it_is_moved_and_the_report_runs_anywhere(photos_run, capsys, tmp_path,
                                                                                     monkeypatch):
    os.rename(photos_run / "out" / "run1", tmp_path / "run1")  # mv on one disk: the same folder
    monkeypatch.chdir(tmp_path / "private")
    assert spread(page_of(capsys, tmp_path, tmp_path / "run1")).count(THUMB) == 3


def _part(folder, images):
    pq.write_table(pa.table({"image": pa.array(images, pa.string()), "score": pa.array([0.5] * len(images)),
                             "error": pa.nulls(len(images), pa.string())}), folder / "part-000000.parquet")


def test_a_batch_folder_from_elsewhere_shows_no_image_of_this_machine(photos_run, capsys, tmp_path, monkeypatch):
    """R4: a batch folder someone sends, unpacked as ~/out, named images under ~ (absolute, ../ and relative). Its
    run.json may be missing, or claim this host and ~ as its root: a copy is not the folder this machine's run wrote,
    so nothing is shown (whether or not the files exist) until the user names a root."""
    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    textured(50, 50, seed=1).save(home / "Pictures" / "id.jpg")
    images = [str(home / "Pictures" / "id.jpg"), "../Pictures/id.jpg", "Pictures/id.jpg", str(home / "gone.jpg")]
    claimed = json.loads((photos_run / "out" / "run1" / "run.json").read_text())
    claimed["images"].update(cwd=str(home), root=str(home))  # this host's name, a root over all of ~
    for case in ("no run.json", "forged run.json"):
        out = home / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        _part(out, images)
        if case == "forged run.json":
            (out / "run.json").write_text(json.dumps(claimed))
        for where in (home, out):  # wherever the report is made
            monkeypatch.chdir(where)
            page = page_of(capsys, tmp_path, out)
            assert page.count(THUMB) == 0, case
            assert set(placeholders(spread(page))) == {report_html.NO_ROOT}, case
            assert "Thumbnails not shown: this batch folder" in page and "--images-root" in page
    page = page_of(capsys, tmp_path, out, "--images-root", home / "Pictures")  # the user's own choice
    assert spread(page).count(THUMB) == 3 and "no such file" not in page


def test_a_copied_batch_folder_says_why_and_images_root_brings_the_thumbnails_back(photos_run, capsys, tmp_path):
    shutil.copytree(photos_run / "out" / "run1", tmp_path / "copy")
    page = page_of(capsys, tmp_path, tmp_path / "copy")
    assert page.count(THUMB) == 0 and "is a copy of the one icrt batch wrote" in page
    page = page_of(capsys, tmp_path, tmp_path / "copy", "--images-root", photos_run / "photos")
    assert spread(page).count(THUMB) == 3  # relative paths: from the recorded working folder


def test_a_relative_path_missing_below_the_root_never_tells_whether_it_exists_elsewhere(capsys, tmp_path,
                                                                                        monkeypatch):
    """Looked for below the root (missing there) and in the working folder (outside it): the same placeholder
    whether or not the file exists in the working folder, and not `no such file` when it may exist."""
    scores = tmp_path / "scores"
    scores.mkdir()
    (scores / "s.json").write_text(json.dumps([{"image": "x.jpg", "score": 0.4}, {"image": "y.jpg", "score": 0.6}]))
    work = tmp_path / "work"
    work.mkdir()
    textured(40, 40, seed=2).save(work / "x.jpg")  # x.jpg exists in the working folder, y.jpg nowhere
    monkeypatch.chdir(work)
    sheet = spread(page_of(capsys, tmp_path, scores / "s.json"))
    assert sheet.count(THUMB) == 0 and placeholders(sheet) == [report_html.NOT_BELOW_ROOT] * 2
