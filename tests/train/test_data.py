import os

import pytest

from icrt.train.data import (
    DataError,
    attach_captions,
    load_samples,
    read_captions,
    read_ic9600,
    read_labels_csv,
    split_train_val,
)


def test_ic9600_layout(ic9600_dir):
    train = read_ic9600(ic9600_dir, "train")
    test = load_samples(ic9600_dir, "test")
    assert len(train) == 8 and len(test) == 4
    assert all(os.path.isabs(s.image) and os.path.isfile(s.image) for s in train)
    assert train[0].category == "a" and 0 <= train[0].score <= 1


def test_labels_csv(labels_csv):
    s = read_labels_csv(labels_csv)
    assert len(s) == 32 and {x.category for x in s} == {"a", "b"}
    assert load_samples(os.path.dirname(labels_csv))[0] == s[0]  # a folder with labels.csv works too


@pytest.mark.parametrize("line,problem", [
    ("a_0.png  high", "not a number"),
    ("a_0.png", "expected 'name  score'"),
    ("missing.png  0.5", "image not found"),
])
def test_bad_ic9600_line_names_file_and_line(ic9600_dir, line, problem):
    with open(os.path.join(ic9600_dir, "train.txt"), "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError) as e:
        read_ic9600(ic9600_dir, "train")
    msg = str(e.value)
    assert "train.txt:9" in msg and problem in msg


@pytest.mark.parametrize("row,problem", [
    ("images/a_0.png,0.3,a,extra", "expected 3 fields"),
    ("images/a_0.png,nan,a", "not finite"),
    ("images/nope.png,0.3,a", "image not found"),
])
def test_bad_csv_row_names_file_and_line(labels_csv, row, problem):
    with open(labels_csv, "a") as f:
        f.write(row + "\n")
    with pytest.raises(DataError) as e:
        read_labels_csv(labels_csv)
    assert "labels.csv:34" in str(e.value) and problem in str(e.value)


def test_csv_needs_image_and_score_header(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("path,value\na.png,1\n")
    with pytest.raises(DataError, match="header"):
        read_labels_csv(str(p))


def test_captions_join_by_image(labels_csv, captions_csv):
    s = attach_captions(read_labels_csv(labels_csv), read_captions(captions_csv))
    assert all(x.caption and x.caption.startswith("This image shows") for x in s)
    with pytest.raises(DataError, match="no caption for 1 image"):
        attach_captions(read_labels_csv(labels_csv), {k: v for k, v in read_captions(captions_csv).items()
                                                      if "a_0.png" not in k})


def test_split_is_seeded_stratified_and_disjoint(labels_csv):
    s = read_labels_csv(labels_csv)
    tr, va = split_train_val(s, 0.2, seed=42)
    tr2, va2 = split_train_val(s, 0.2, seed=42)
    _, va3 = split_train_val(s, 0.2, seed=7)
    assert [x.image for x in va] == [x.image for x in va2]
    assert {x.image for x in va} != {x.image for x in va3}
    assert not {x.image for x in tr} & {x.image for x in va}
    assert len(tr) + len(va) == len(s)
    assert sum(x.category == "a" for x in va) == sum(x.category == "b" for x in va) == 3  # 20% of 16 per category
