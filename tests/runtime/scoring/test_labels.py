"""Labelled images (runtime/scoring/labels.py): the CSV and IC9600 formats, read once for icrt eval and training; a
bad row is a problem beside the rows read, a file that cannot be read is one LabelError."""
import os

import pytest

from icrt.runtime.scoring.labels import LabelError, read_csv, read_ic9600, read_labels


def test_csv_rows_keep_category_caption_path_as_written_and_line(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "labels.csv").write_text("\ufeffImage,Category,Score,caption\n../a.png,art,0.25,busy\n"
                                                 "\n/abs/b.png,,1,\n")
    found = read_labels(str(tmp_path / "sub"))  # a folder with labels.csv
    a, b = found.rows
    assert found.problems == [] and found.source.endswith("labels.csv")
    assert (a.image, a.score, a.category, a.caption, a.key) == (str(tmp_path / "a.png"), 0.25, "art", "busy", "../a.png")
    assert a.where.endswith("labels.csv:2") and b.where.endswith("labels.csv:4")
    assert (b.image, b.category, b.caption) == ("/abs/b.png", None, None)


def test_bad_rows_are_problems_with_their_line_and_the_rest_is_read(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("image,score\na.png,0.1\nb.png,high\nc.png\n,0.3\nd.png,inf\ne.png,0.5\n")
    found = read_csv(str(csv))
    assert [r.key for r in found.rows] == ["a.png", "e.png"]
    assert [str(p) for p in found.problems] == [
        f"{csv}:3: score 'high' is not a number", f"{csv}:4: expected 2 fields, got 1", f"{csv}:5: empty image path",
        f"{csv}:6: score 'inf' is not finite"]


def test_missing_images_are_a_problem_only_when_asked(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("image,score\nnope.png,0.1\n")
    assert len(read_csv(str(csv)).rows) == 1  # icrt eval: the scorer reports it, as an image that failed
    assert "image not found" in str(read_csv(str(csv), check_images=True).problems[0])


def test_ic9600_split_category_and_bad_lines(ic9600_dir):
    with open(os.path.join(ic9600_dir, "test.txt"), "a") as f:
        f.write("b_99.png  lots\nlonely\n")
    found = read_labels(ic9600_dir)  # test.txt unless a split is named
    assert len(found.rows) == 4 and found.rows[0].category == "a" and found.rows[0].key == "a_8.png"
    assert [p.where.rsplit(":", 1)[1] for p in found.problems] == ["5", "6"]
    assert len(read_labels(ic9600_dir, "train").rows) == 8
    assert len(read_ic9600(ic9600_dir, "train").rows) == 8


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"), (b"path,value\na.png,1\n", "header must have 'image' and 'score'"),
    (b"image,score\nx.png,0.5,caf\xe9\n", "not UTF-8"),
    (b"image,score\n" + b"a" * 200_000 + b",0.5\n", "not a readable CSV")])  # a cell over csv's field limit
def test_a_file_that_cannot_be_read_is_one_line(tmp_path, content, message):
    (tmp_path / "l.csv").write_bytes(content)
    with pytest.raises(LabelError, match=message) as e:
        read_labels(str(tmp_path / "l.csv"))
    assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path / "l.csv"))


def test_what_data_names(tmp_path, labels_csv, ic9600_dir):
    with pytest.raises(LabelError, match="no such file or folder"):
        read_labels(str(tmp_path / "missing.csv"))
    with pytest.raises(LabelError, match="neither an IC9600 folder"):
        read_labels(str(tmp_path / "images"))
    with pytest.raises(LabelError, match="read whole"):
        read_labels(labels_csv, "test")
    with pytest.raises(LabelError, match="val.txt: list file not found"):
        read_labels(ic9600_dir, "val")
