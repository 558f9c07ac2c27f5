"""Training data is checked before the first epoch: images decode, scores in range, no repeats, clean text."""
import logging
import os

import pytest

from icrt.train.data import DataError, load_samples, read_captions, read_ic9600, read_labels_csv
from icrt.train.trainer import RunConfig, load_splits
from tests.tiny import D2S_TRAIN_ARGS as TRAIN_ARGS


def _append(csv_path, *rows):
    with open(csv_path, "a") as f:
        f.writelines(r + "\n" for r in rows)


def _train(labels_csv, tmp_path, *extra):
    from icrt.train.cli import main

    return main(["d2s", "--data", labels_csv, "--out", str(tmp_path / "run"), *TRAIN_ARGS, *extra])


def _splits(data, **kw):
    return load_splits(RunConfig(data=data, **kw), need_captions=False)


# --- unreadable images ---------------------------------------------------------------------------------------


def test_a_corrupt_image_is_refused_before_training_with_file_and_line(labels_csv, tmp_path, capsys):
    bad = os.path.join(os.path.dirname(labels_csv), "images", "a_2.png")
    with open(bad, "r+b") as f:  # keep the PNG signature, break the rest
        f.seek(40)
        f.write(b"\0" * 64)
    f.close()
    rc = _train(labels_csv, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"python -m icrt.train d2s: error: {labels_csv}:4: {bad}: ") and "--skip-bad-images" in err[0]
    assert not os.path.exists(tmp_path / "run" / "last.pt")


def test_several_bad_images_are_listed_in_one_line(labels_csv, tmp_path, capsys):
    folder = os.path.join(os.path.dirname(labels_csv), "images")
    open(os.path.join(folder, "empty.png"), "wb").close()
    with open(os.path.join(folder, "text.png"), "w") as f:
        f.write("not an image\n")
    _append(labels_csv, "images/empty.png,0.5,a", "images/text.png,0.5,b")
    rc = _train(labels_csv, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("python -m icrt.train d2s: error: 2 unreadable images"), err
    first, second = err[0].split("; ")
    assert f"leave them out): {labels_csv}:34: " in first and "empty file" in first, first
    assert second.startswith(f"{labels_csv}:35: ") and "not a recognised image format" in second


@pytest.mark.slow
def test_skip_bad_images_leaves_them_out_and_says_how_many(labels_csv, tmp_path, capsys):
    folder = os.path.join(os.path.dirname(labels_csv), "images")
    open(os.path.join(folder, "empty.png"), "wb").close()
    _append(labels_csv, "images/empty.png,0.5,a")
    rc = _train(labels_csv, tmp_path, "--skip-bad-images", "--val-fraction", "0")
    assert rc == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable image(s) of 33" in captured.err
    assert "train 32 images" in captured.err


# --- scores ------------------------------------------------------------------------------------------------


def test_scores_outside_0_1_are_refused_unless_a_range_is_given(labels_csv):
    _append(labels_csv, "images/a_0.png,0.05,a")  # an identical repeat (dropped), then a score out of range
    with open(labels_csv) as f:
        text = f.read()
    with open(labels_csv, "w") as f:
        f.write(text.replace("images/b_1.png,0.1786,b", "images/b_1.png,1.5,b"))
    with pytest.raises(DataError, match=r"labels\.csv:3: score 1.5 is outside \[0, 1\]"):
        _splits(labels_csv)
    train, val = _splits(labels_csv, score_range=(0.0, 2.0))
    assert len(train) + len(val) == 32


def test_score_range_option_parses_and_reaches_the_config(labels_csv, tmp_path, capsys):
    from icrt.train.cli import build_parser, train_config

    args = build_parser().parse_args(["d2s", "--data", labels_csv, "--out", "x", "--score-range", "0,100"])
    assert train_config(args).score_range == (0.0, 100.0)
    for bad in ("1,0", "0", "a,b", "0,inf"):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(["d2s", "--data", labels_csv, "--out", "x", "--score-range", bad])
        assert e.value.code == 2
    assert "argument --score-range" in capsys.readouterr().err


# --- repeated images ---------------------------------------------------------------------------------------


def test_identical_repeat_is_dropped_and_never_reaches_both_sides(labels_csv):
    _append(labels_csv, "images/a_0.png,0.05,a", "./images/b_3.png,0.4357,b")  # same rows again (other spelling)
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("icrt.train.data").addHandler(handler)
    try:
        train, val = load_splits(RunConfig(data=labels_csv), need_captions=False)
    finally:
        logging.getLogger("icrt.train.data").removeHandler(handler)
    assert len(train) + len(val) == 32
    assert not {s.image for s in train} & {s.image for s in val}
    assert len(warnings) == 1 and "dropped 2 repeated row(s)" in warnings[0] and "labels.csv:34" in warnings[0]


@pytest.mark.parametrize("row,what", [("images/a_2.png,0.9,a", "score"), ("images/a_2.png,0.3071,b", "category")])
def test_repeat_with_another_score_or_category_is_refused_at_the_second_row(labels_csv, row, what):
    _append(labels_csv, row)
    with pytest.raises(DataError, match=rf"labels\.csv:34: .*a_2\.png is listed again with another {what}") as e:
        _splits(labels_csv)
    assert "labels.csv:4" in str(e.value)  # the first row


def test_validation_data_that_overlaps_training_is_refused(labels_csv, tmp_path):
    val = tmp_path / "val.csv"
    val.write_text("image,score,category\nimages/b_5.png,0.6929,b\n")
    with pytest.raises(DataError, match=r"val\.csv:2: .*also a training image .*labels\.csv:7"):
        _splits(labels_csv, val_data=str(val))


# --- text encoding ---------------------------------------------------------------------------------------


def test_utf8_bom_is_accepted_in_every_list(labels_csv, captions_csv, ic9600_dir):
    for path in (labels_csv, captions_csv, os.path.join(ic9600_dir, "train.txt")):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write("\ufeff" + text)
    assert len(read_labels_csv(labels_csv)) == 32
    assert len(read_captions(captions_csv)) == 64  # each key as written and as an absolute path
    assert read_ic9600(ic9600_dir)[0].key == "a_0.png"


def test_invalid_utf8_is_one_line_naming_the_file(labels_csv, tmp_path, capsys):
    with open(labels_csv, "ab") as f:
        f.write(b"images/a_0.png,0.05,caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8") as e:
        load_samples(labels_csv)
    assert str(e.value).startswith(labels_csv) and "\n" not in str(e.value)
    rc = _train(labels_csv, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"python -m icrt.train d2s: error: {labels_csv}: not UTF-8")


# --- command-line values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("option,value", [
    ("--batch-size", "0"), ("--image-size", "0"), ("--lr", "nan"), ("--lr", "-1"), ("--val-fraction", "1.5"),
    ("--val-fraction", "1"), ("--epochs", "0"), ("--workers", "-1"),
])
def test_bad_numbers_are_one_argparse_line(labels_csv, capsys, option, value):
    from icrt.train.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["d2s", "--data", labels_csv, "--out", "x", option, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith(f"python -m icrt.train d2s: error: argument {option}: "), err


def test_boundary_values_are_accepted(labels_csv):
    from icrt.train.cli import build_parser

    args = build_parser().parse_args(["d2s", "--data", labels_csv, "--out", "x", "--val-fraction", "0",
                                      "--epochs", "1", "--batch-size", "1", "--lr", "1e-6"])
    assert args.val_fraction == 0.0 and args.epochs == 1 and args.batch_size == 1


def test_jpeg_draft_and_interpolation_reach_the_trainers_preprocessing(labels_csv, tmp_path, capsys):
    """The trainer preprocesses as the bundle will (one Preprocessing, training and runtime): --jpeg-draft and
    --interpolation land in it; the backbone's own filter otherwise."""
    from icrt.train.cli import build_parser, trainer_for
    from tests.tiny import D2S_TRAIN_ARGS

    base = ["d2s", "--data", labels_csv, "--out", str(tmp_path / "r"), *D2S_TRAIN_ARGS]
    t = trainer_for(build_parser().parse_args([*base, "--jpeg-draft", "0.5", "--interpolation", "bicubic"]))
    assert (t.prep.draft, t.prep.interpolation) == (0.5, "bicubic")
    t = trainer_for(build_parser().parse_args(base))
    assert t.prep.draft == 1.0
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--jpeg-draft", "0.01"])
    assert "argument --jpeg-draft" in capsys.readouterr().err
