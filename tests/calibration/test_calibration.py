"""Calibration and check images (export.images), splits and the onnxruntime data reader (calibration)."""
import os

import numpy as np
import pytest

from icrt.calibration import PreprocessedImageReader, load_inputs
from icrt.export.images import CalibrationDataError, choose, read_images
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.train.data import load_samples, split_train_val


def test_splits_match_training_and_never_overlap(labels_csv):
    train, val = read_images(labels_csv, "train"), read_images(labels_csv, "val")
    ref_train, ref_val = split_train_val(load_samples(labels_csv), 0.2, seed=42, stratify=True)
    assert [s.path for s in train] == [s.image for s in ref_train]
    assert [s.path for s in val] == [s.image for s in ref_val]
    assert not {s.path for s in train} & {s.path for s in val}
    assert len(read_images(labels_csv)) == len(train) + len(val)
    assert all(s.score is not None for s in val)


def test_folder_and_list_file(labels_csv, tmp_path):
    folder = os.path.join(os.path.dirname(labels_csv), "images")
    imgs = read_images(folder)
    assert len(imgs) == 32 and imgs[0].score is None
    lst = tmp_path / "list.txt"
    lst.write_text("images/a_0.png\n# comment\nimages/b_1.png\n")
    assert [os.path.basename(s.path) for s in read_images(str(lst))] == ["a_0.png", "b_1.png"]
    with pytest.raises(CalibrationDataError, match="needs a labelled set"):
        read_images(folder, "train")
    with pytest.raises(CalibrationDataError, match="no such file"):
        read_images(str(tmp_path / "missing"))


def test_choose_is_seeded_and_bounded(labels_csv):
    imgs = read_images(labels_csv)
    assert choose(imgs, 5, seed=0) == choose(imgs, 5, seed=0) and len(choose(imgs, 5)) == 5
    assert len(choose(imgs, 1000)) == len(imgs) and len(choose(imgs, None)) == len(imgs)


def test_reader_uses_runtime_preprocessing_and_patches(labels_csv):
    paths = [s.path for s in read_images(labels_csv)][:6]
    square = load_inputs(paths, Preprocessing(resize="square", size=32))
    assert square.shape == (6, 3, 32, 32) and square.dtype == np.float32
    patches = load_inputs(paths, Preprocessing(resize="patches", size=32, stride=16))  # 48 px -> 2 x 2 patches
    assert patches.shape == (24, 3, 32, 32)
    r = PreprocessedImageReader(patches, "image", batch_size=10)
    sizes = []
    while (b := r.get_next()) is not None:
        sizes.append(b["image"].shape[0])
    assert sizes == [10, 10, 4] and r.get_next() is None
    r.rewind()
    np.testing.assert_array_equal(r.get_next()["image"], patches[:10])


def test_one_image_extension_list_for_the_cli_and_calibration(tmp_path):
    """`icrt score FOLDER` and calibration folders take the same files: runtime.scoring.inputs.IMAGE_EXTENSIONS."""
    from icrt.export.images import _folder_images
    from icrt.runtime.scoring.inputs import IMAGE_EXTENSIONS, list_folder

    names = ["a.jpg", "b.JPEG", "c.png", "d.webp", "e.ppm", "f.tif", "notes.txt", "g.jpg.bak", "h"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    listed = [os.path.basename(p) for p in list_folder(str(tmp_path))]
    assert listed == ["a.jpg", "b.JPEG", "c.png", "d.webp", "e.ppm", "f.tif"]
    assert [os.path.basename(s.path) for s in _folder_images(str(tmp_path))] == listed
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)
