"""Calibration and check images (export.images), splits and the onnxruntime data reader (calibration)."""
import os

import numpy as np
import pytest

from icrt.calibration import ImageBatchReader, PreprocessedImageReader, load_inputs
from icrt.export.images import CalibrationDataError, choose, read_images
from icrt.runtime.base.errors import UserInputError
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


def _drain(reader) -> list:
    out = []
    while (b := reader.get_next()) is not None:
        out.append(b["image"])
    return out


@pytest.mark.parametrize("prep", [Preprocessing(resize="square", size=32),
                                  Preprocessing(resize="patches", size=32, stride=16)])  # 48 px: 2 x 2 patches
def test_streaming_reader_gives_the_batches_of_the_whole_set(labels_csv, prep):
    """Decoded per batch, the batches are those of every input held at once; len() and set_range count batches."""
    paths = [s.path for s in read_images(labels_csv)][:7]
    whole = load_inputs(paths, prep)
    held = _drain(PreprocessedImageReader(whole, "image", batch_size=5))
    r = ImageBatchReader(paths, prep, "image", batch_size=5)
    streamed = _drain(r)
    assert [len(b) for b in streamed] == [len(b) for b in held] and len(r) == len(held) == -(-len(whole) // 5)
    for a, b in zip(streamed, held):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and a.flags.c_contiguous
    assert r.inputs == len(whole)
    r.set_range(1, 3)  # the second and third batches only
    np.testing.assert_array_equal(np.concatenate(_drain(r)), whole[5:15])
    r.rewind()
    assert len(_drain(r)) == len(held)


def test_a_bad_calibration_image_is_one_line_before_any_batch(labels_csv, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    paths = [s.path for s in read_images(labels_csv)][:3] + [str(bad)]
    r = ImageBatchReader(paths, Preprocessing(resize="square", size=32), "image")
    with pytest.raises(UserInputError, match=r"^calibration: .*broken\.jpg: not a recognised image format$"):
        len(r)


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
