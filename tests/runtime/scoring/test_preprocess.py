import numpy as np
import pytest
from PIL import Image

from icrt.runtime.bundle.preprocessing import Preprocessing, grid_positions, patch_grid
from icrt.runtime.scoring.preprocess import ImageError, load_rgb, normalize, to_model_input
from tests.images import textured


def test_grid_covers_edges_with_stride():
    assert grid_positions(224, 224, 64) == [0]
    assert grid_positions(300, 224, 64) == [0, 64, 76]
    assert grid_positions(352, 224, 64) == [0, 64, 128]
    pos = patch_grid(300, 400, 224, 64)
    assert (300 - 224, 400 - 224) in pos and (0, 0) in pos


def test_square_policy_gives_one_normalised_input():
    img = np.full((50, 80, 3), 255, np.uint8)
    prep = Preprocessing(resize="square", size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x, pos = to_model_input(img, prep)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and pos == [(0, 0)]
    np.testing.assert_allclose(x, 1.0, atol=1e-6)


def test_small_image_is_upscaled_to_one_patch():
    prep = Preprocessing(resize="patches", size=224, stride=64)
    x, pos = to_model_input(np.zeros((100, 150, 3), np.uint8), prep)
    assert x.shape[1:] == (3, 224, 224)
    assert len(pos) == 3  # short side 224 -> long side 336: offsets 0, 64, 112


def test_long_side_cap_applies_before_patching():
    prep = Preprocessing(resize="patches", size=224, stride=64, max_long_side=448)
    x, _ = to_model_input(np.zeros((1000, 500, 3), np.uint8), prep)
    assert len(x) == len(patch_grid(448, 224, 224, 64))


def test_normalize_channel_order():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0] = 255
    x = normalize(img, (0, 0, 0), (1, 1, 1))
    assert x.shape == (3, 2, 2) and x[0].min() == 1.0 and x[1].max() == 0.0


def test_modes_match_rgb_equivalent(tmp_path):
    rgb = Image.new("RGB", (20, 10), (40, 80, 120))
    rgb.save(tmp_path / "a.png")
    pal = rgb.convert("P")
    pal.save(tmp_path / "p.png")
    rgb.convert("L").save(tmp_path / "l.png")
    Image.new("RGBA", (20, 10), (0, 0, 0, 0)).save(tmp_path / "t.png")
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "p.png")), np.asarray(pal.convert("RGB")))
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "l.png")), np.asarray(rgb.convert("L").convert("RGB")))
    assert (load_rgb(str(tmp_path / "t.png")) == 255).all()  # transparent -> white


@pytest.mark.parametrize("content,problem", [(b"", "empty"), (b"hello, not an image", "not a recognised image")])
def test_broken_files_name_file_and_problem(tmp_path, content, problem):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError) as e:
        load_rgb(str(p))
    assert str(p) in str(e.value) and problem in str(e.value)


def test_preprocessing_round_trips_through_dict():
    prep = Preprocessing(resize="patches", size=224, stride=64, max_long_side=1024)
    assert Preprocessing.from_dict(prep.to_dict()) == prep


@pytest.mark.parametrize("shape", [(1000, 500), (100, 150), (300, 400), (1, 1), (3, 200), (224, 224), (225, 5000)])
def test_fitted_size_and_patch_count_predict_geometry(shape):
    from icrt.runtime.bundle.preprocessing import fitted_size, patch_count
    from icrt.runtime.scoring.preprocess import geometry

    prep = Preprocessing(resize="patches", size=224, stride=64, max_long_side=448)
    img = np.zeros(shape + (3,), np.uint8)
    g = geometry(img, prep)
    assert g.shape[:2] == fitted_size(*shape, prep)
    assert patch_count(*shape, prep) == len(to_model_input(img, prep)[1])


def test_too_many_patches_is_an_image_error_before_any_resize():
    from icrt.runtime.scoring.preprocess import MAX_FITTED_PIXELS, MAX_PATCHES

    with pytest.raises(ImageError, match=f"limit {MAX_FITTED_PIXELS // 1_000_000} MP"):  # 224 x 4.5 M px once fitted
        to_model_input(np.zeros((1, 20000, 3), np.uint8), Preprocessing(resize="patches", size=224))
    with pytest.raises(ImageError, match=f"limit {MAX_PATCHES}"):  # ~34,000 patches of 64 px
        to_model_input(np.zeros((3000, 3000, 3), np.uint8), Preprocessing(resize="patches", size=64, stride=16))


def test_patch_inputs_are_made_slice_by_slice_with_the_same_values():
    from icrt.runtime.scoring.preprocess import PatchInputs, model_inputs

    img = np.random.default_rng(0).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    prep = Preprocessing(resize="patches", size=64, stride=32)
    lazy, pos = model_inputs(img, prep)
    full, pos2 = to_model_input(img, prep)
    assert isinstance(lazy, PatchInputs) and len(lazy) == len(full) == len(pos) and pos == pos2
    assert np.array_equal(lazy[3:7], full[3:7]) and np.array_equal(lazy[5], full[5])


def test_corrupt_pixel_data_is_not_hidden_by_exif_handling(tmp_path):
    """Regression: decoding must happen before EXIF transposition, whose errors are forgiven."""
    from tests.runtime.fixtures import broken_inputs

    path, _ = broken_inputs(str(tmp_path))["corrupt.png"]
    with pytest.raises(ImageError, match="corrupt.png: truncated or corrupt image data"):
        load_rgb(path)


def test_bytes_and_special_files(tmp_path):
    import os

    with pytest.raises(ImageError, match="empty file"):
        load_rgb(b"")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match="pipe.png: not a regular file"):
        load_rgb(str(tmp_path / "pipe.png"))
    buf = __import__("io").BytesIO()
    Image.new("RGB", (5, 4), (1, 2, 3)).save(buf, format="PNG")
    assert load_rgb(buf.getvalue()).shape == (4, 5, 3)


def test_large_jpeg_is_decoded_at_reduced_scale_for_square_models(tmp_path):
    """Pillow's draft decodes big JPEGs at 1/2..1/8 scale, never below the model input; the full size is
    still reported, EXIF rotation included, and the model input moves by little."""
    from PIL import Image

    from icrt.runtime.bundle.preprocessing import Preprocessing
    from icrt.runtime.scoring.preprocess import load_for_model, load_rgb, to_model_input

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((1600, 1200), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=92)
    prep = Preprocessing(resize="square", size=160)
    rgb, size = load_for_model(str(path), prep)
    assert size == (1600, 1200)
    assert min(rgb.shape[:2]) >= 160 and rgb.shape[1] < 1600  # decoded smaller, not below the input side
    x_draft = to_model_input(rgb, prep)[0]
    x_full = to_model_input(load_rgb(str(path)), prep)[0]
    assert np.abs(x_draft - x_full).mean() < 0.05  # normalised units (ImageNet std ~0.23 per 0.05 of pixel range)
    # patch models and PNGs decode at full size
    assert load_for_model(str(path), Preprocessing(resize="patches", size=160))[0].shape[:2] == (1200, 1600)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: width and height swap
    big.save(rotated, quality=92, exif=exif)
    rgb, size = load_for_model(str(rotated), prep)
    assert size == (1200, 1600) and rgb.shape[0] > rgb.shape[1]


def test_symlink_loop_is_named_as_such(tmp_path):
    import os

    from icrt.runtime.scoring.preprocess import ImageError, load_rgb

    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "c.jpg")
    with pytest.raises(ImageError, match="symlink loop"):
        load_rgb(str(tmp_path / "a.jpg"))
    with pytest.raises(ImageError, match="broken symbolic link"):
        load_rgb(str(tmp_path / "c.jpg"))


@pytest.mark.parametrize("prep", [Preprocessing(resize="square", size=160, interpolation="bicubic"),
                                  Preprocessing(resize="patches", size=64, stride=32, max_long_side=300)],
                         ids=["square", "patches"])
def test_load_resized_gives_the_pixels_of_decode_then_geometry(tmp_path, prep):
    """One pass on the Pillow image (no full-size numpy copy): the same pixels and full size as load_for_model then
    geometry, for a big JPEG (decoded at reduced scale), an EXIF-rotated one, a PNG with transparency, a small GIF."""
    from icrt.runtime.scoring.preprocess import geometry, load_for_model, load_resized

    rng = np.random.default_rng(1)
    big = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((1600, 1200))
    big.save(tmp_path / "big.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    big.resize((500, 320)).save(tmp_path / "rotated.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 256, (90, 70, 4), dtype=np.uint8), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert("P").save(tmp_path / "small.gif")
    for name in ("big.jpg", "rotated.jpg", "alpha.png", "small.gif"):
        path = str(tmp_path / name)
        got, size = load_resized(path, prep)
        full, full_size = load_for_model(path, prep)
        assert size == full_size and np.array_equal(got, geometry(full, prep)), name
    with pytest.raises(ImageError, match="too elongated"):  # checked before the resize
        Image.new("RGB", (5000, 1)).save(tmp_path / "strip.png")
        load_resized(str(tmp_path / "strip.png"), Preprocessing(resize="patches", size=224))


def test_pixel_inputs_are_the_resized_uint8_image_channels_last():
    from icrt.runtime.scoring.preprocess import model_inputs

    img = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    for prep in (Preprocessing(resize="square", size=32), Preprocessing(resize="patches", size=32, stride=16)):
        px, pos = to_model_input(img, prep, pixels=True)
        x, pos2 = to_model_input(img, prep)
        assert px.dtype == np.uint8 and px.shape == (len(x), 32, 32, 3) and pos == pos2
        np.testing.assert_array_equal(normalize(px, prep.mean, prep.std), x)
        lazy, _ = model_inputs(img, prep, pixels=True)
        assert np.array_equal(lazy[1:3], px[1:3])


def test_jpeg_draft_decodes_at_the_dct_scale_its_policy_allows(tmp_path):
    """Preprocessing.draft: 1.0 (every bundle made before the field) never decodes below the input side, as before;
    0.5 lets a 640 x 480 JPEG decode at 320 x 240 for a 384 px input; the patch policy always decodes whole."""
    from icrt.runtime.bundle.preprocessing import draft_scale
    from icrt.runtime.scoring.preprocess import load_for_model, load_resized

    path = tmp_path / "a.jpg"
    textured(640, 480, seed=3).save(path, quality=90)
    lossless, half = Preprocessing(size=384), Preprocessing(size=384, draft=0.5)
    assert [draft_scale(w, h, p) for w, h, p in ((640, 480, lossless), (640, 480, half), (768, 768, lossless),
                                                   (3200, 2400, half), (300, 200, half))] == [1, 2, 2, 8, 1]
    assert draft_scale(4000, 3000, Preprocessing(resize="patches", size=224, draft=0.5)) == 1
    full, size = load_for_model(str(path), lossless)
    small, size2 = load_for_model(str(path), half)
    assert full.shape == (480, 640, 3) and small.shape == (240, 320, 3) and size == size2 == (640, 480)
    x1, _ = load_resized(str(path), half)
    x2, _ = load_resized(str(path), half)
    assert x1.shape == (384, 384, 3) and np.array_equal(x1, x2)  # deterministic
    assert not np.array_equal(x1, load_resized(str(path), lossless)[0])
    assert Preprocessing.from_dict(lossless.to_dict()) == lossless and "draft" not in lossless.to_dict()
    assert Preprocessing.from_dict(half.to_dict()).draft == 0.5
    with pytest.raises(ValueError, match="draft"):
        Preprocessing(draft=0.01)
