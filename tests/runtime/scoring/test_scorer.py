"""Scorer API, backends and heatmaps on the tiny bundles of tests/runtime/fixtures.py (square_bundle and
patches_bundle: tests/runtime/conftest.py)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.images import textured
from tests.runtime.fixtures import (
    PARITY_TOL,
    awkward_inputs,
    broken_inputs,
    needs_matplotlib,
    reference_images,
    reference_scores,
    sample_images,
)


@pytest.fixture
def images(tmp_path):
    return sample_images(tmp_path)


@pytest.mark.parametrize("resize", ["square", "patches"])
def test_scores_match_the_stored_pytorch_reference_within_parity(resize, square_bundle, patches_bundle):
    """The PyTorch model's own scores of the reference images, stored when tiny.onnx was made (64 x 64 images: one
    input each under both policies, no resize). tests/export/test_tiny_models.py compares other images and sizes, patches
    pooled, against the live PyTorch model."""
    from icrt.runtime import Scorer

    bundle = square_bundle if resize == "square" else patches_bundle
    s = Scorer.load(bundle, backend="onnxruntime", precision="fp32")
    got = np.array([r["score"] for r in s.score_many([np.asarray(img) for img in reference_images()])])
    ref = np.array(reference_scores()["fp32"])
    assert np.abs(got - ref).max() <= PARITY_TOL
    assert np.ptp(ref) > 1e-3  # the images really score differently, so a mix-up would show


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_patches_of_many_images_share_batches_without_mixing(patches_bundle, images, batch_size):
    from icrt.runtime import Scorer

    alone = [Scorer.load(patches_bundle, batch_size=1).score(p)["score"] for p in images]
    s = Scorer.load(patches_bundle, batch_size=batch_size)
    calls = []
    run = s.backend.run
    s.backend.run = lambda x: calls.append(len(x)) or run(x)
    recs = s.score_many(images)
    assert [r["image"] for r in recs] == images
    np.testing.assert_allclose([r["score"] for r in recs], alone, atol=1e-6)
    total = sum(r["patches"] for r in recs)
    assert sum(calls) == total and max(calls) <= batch_size
    assert len(calls) == -(-total // batch_size)  # full batches across image boundaries, one partial at the end


def test_record_fields_and_details(patches_bundle, images):
    from icrt.runtime import Scorer

    rec = Scorer.load(patches_bundle).score(images[2], details=True)
    assert set(rec) >= {"image", "score", "patches", "width", "height", "patch_scores", "patch_positions", "geometry"}
    assert (rec["width"], rec["height"]) == (300, 110)
    assert rec["patches"] == len(rec["patch_scores"]) == len(rec["patch_positions"]) > 1
    assert rec["score"] == pytest.approx(float(np.mean(rec["patch_scores"])), abs=1e-6)


def test_score_accepts_arrays_pil_and_bytes(square_bundle, images):
    from icrt.runtime import Scorer

    s = Scorer.load(square_bundle)
    ref = s.score(images[0])["score"]
    pil = Image.open(images[0])
    assert s.score(np.asarray(pil.convert("RGB")))["score"] == ref
    assert s.score(pil)["score"] == ref
    assert s.score(open(images[0], "rb").read())["score"] == ref
    with pytest.raises(ValueError, match="uint8"):
        s.score(np.zeros((8, 8, 3), np.float32))


def test_score_raises_image_error_and_score_many_records_it(square_bundle, tmp_path, images):
    from icrt.runtime import ImageError, Scorer

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    s = Scorer.load(square_bundle)
    with pytest.raises(ImageError, match="bad.jpg: not a recognised image format"):
        s.score(str(bad))
    recs = s.score_many([images[0], str(bad), images[1]])
    assert recs[1] == {"image": str(bad), "error": "not a recognised image format"}
    assert "score" in recs[0] and "score" in recs[2]


def test_awkward_inputs_score_exactly_as_plain_rgb(square_bundle, patches_bundle, tmp_path):
    from icrt.runtime import Scorer

    cases = awkward_inputs(str(tmp_path))
    assert len(cases) >= 14
    for bundle in (square_bundle, patches_bundle):
        s = Scorer.load(bundle)
        recs = s.score_many([p for p, _ in cases.values()])
        for (name, (_, expected)), rec in zip(cases.items(), recs):
            assert "error" not in rec, (name, rec)
            assert rec["score"] == s.score(expected)["score"], name  # bit-identical input -> identical score
            assert (rec["height"], rec["width"]) == expected.shape[:2], name


def test_broken_inputs_get_one_clear_error_each_and_the_rest_is_scored(square_bundle, tmp_path, images):
    from icrt.runtime import Scorer

    cases = broken_inputs(str(tmp_path))
    good = images[:2]
    paths = [good[0]] + [p for p, _ in cases.values()] + [good[1]]
    s = Scorer.load(square_bundle)
    recs = s.score_many(paths)
    assert [r["image"] for r in recs] == paths
    assert recs[0]["score"] == s.score(good[0])["score"] and recs[-1]["score"] == s.score(good[1])["score"]
    for (name, (_, words)), rec in zip(cases.items(), recs[1:-1]):
        assert set(rec) == {"image", "error"}, name
        assert words in rec["error"] and rec["error"] and "\n" not in rec["error"], (name, rec["error"])


def test_too_elongated_for_patches_is_a_clear_error(patches_bundle, tmp_path):
    from icrt.runtime import Scorer
    from icrt.runtime.scoring.preprocess import MAX_FITTED_PIXELS

    scorer = Scorer.load(patches_bundle)
    side = scorer.prep.size
    p = tmp_path / "strip.png"  # upscaled to side px high, it would be wider than the pixel limit allows
    Image.new("RGB", (MAX_FITTED_PIXELS // side ** 2 + 10, 1), (1, 2, 3)).save(p)
    rec = scorer.score_many([str(p)])[0]
    assert "too elongated" in rec["error"] and f"limit {MAX_FITTED_PIXELS // 1_000_000} MP" in rec["error"]


def test_permission_denied_is_reported(monkeypatch, tmp_path, square_bundle):
    from PIL import Image as PILImage

    from icrt.runtime import Scorer

    p = tmp_path / "locked.png"
    textured(20, 20).save(p)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(PILImage, "open", denied)
    rec = Scorer.load(square_bundle).score_many([str(p)])[0]
    assert rec == {"image": str(p), "error": "permission denied"}


def test_int8_precision_uses_the_manifests_onnxruntime_file(square_bundle, images):
    from icrt.runtime import Scorer

    s8 = Scorer.load(square_bundle, backend="onnxruntime", precision="int8")
    assert os.path.basename(s8.backend.file) == "model.int8.onnx"
    s32 = Scorer.load(square_bundle, backend="onnxruntime", precision="fp32")
    a = np.array([r["score"] for r in s8.score_many(images)])
    b = np.array([r["score"] for r in s32.score_many(images)])
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.05  # a different, quantized model, close to fp32


def test_missing_precision_and_unknown_backend_are_clear(square_bundle):
    from icrt.runtime import BackendError, Scorer

    with pytest.raises(BackendError, match="no fp16 model in this bundle"):
        Scorer.load(square_bundle, backend="onnxruntime", precision="fp16")
    with pytest.raises(BackendError, match="unknown backend"):
        Scorer.load(square_bundle, backend="nosuch")


def test_auto_falls_back_to_onnxruntime_cpu_and_says_why(square_bundle, monkeypatch):
    import dataclasses

    import icrt.runtime.backends as backends
    from icrt.runtime import Scorer

    specs = dict(backends.registry())  # as without the [openvino] extra (with it, OpenVINO comes first)
    specs["openvino"] = dataclasses.replace(specs["openvino"], available=lambda: False)
    monkeypatch.setattr(backends.base, "_REGISTRY", specs)
    s = Scorer.load(square_bundle, backend="auto")
    assert s.backend.name == "onnxruntime" and s.backend.device == "cpu"
    assert any(n.startswith("tensorrt:") for n in s.backend.notes)


def test_default_bundle_is_a_clear_error_until_installed_and_env_overrides(monkeypatch, square_bundle, images):
    import icrt.runtime.bundle.defaults as defaults
    from icrt.runtime import BundleError, Scorer

    monkeypatch.delenv(defaults.ENV_VAR, raising=False)
    monkeypatch.setattr(defaults, "PACKAGE_BUNDLE", "/nonexistent/default_bundle")
    with pytest.raises(BundleError, match="no default model is installed"):
        Scorer.load()
    monkeypatch.setenv(defaults.ENV_VAR, square_bundle)
    assert Scorer.load().score(images[0])["score"] == Scorer.load(square_bundle).score(images[0])["score"]


def draw_heatmaps(scorer, images, folder):
    """Records of ``images`` with their heatmaps drawn into ``folder``, as ``icrt score --heatmap`` draws them."""
    from icrt.runtime.scoring.heatmap import HeatmapWriter

    writer = HeatmapWriter(folder, scorer.score_range)
    recs = list(scorer.iter_score(images, maps=writer.wanted))
    assert [writer.draw(r) for r in recs] == [None] * len(recs) and not any("map" in r for r in recs)
    return recs


@needs_matplotlib
def test_heatmap_png_is_written_per_image(patches_bundle, tmp_path, images):
    from icrt.runtime import Scorer

    out = tmp_path / "maps"
    recs = draw_heatmaps(Scorer.load(patches_bundle), images[:3] + [images[0]], str(out))
    names = sorted(os.listdir(out))
    assert names == ["img0-1.heatmap.png", "img0.heatmap.png", "img1.heatmap.png", "img2.heatmap.png"]
    assert all(os.path.isfile(r["heatmap"]) for r in recs)
    png = Image.open(recs[2]["heatmap"])
    assert png.format == "PNG" and png.width > 300 and png.height > 200
    assert not any(n.startswith(".tmp") for n in names)


def test_score_map_averages_overlapping_patches():
    from icrt.runtime.scoring.heatmap import CELL, score_map

    m = score_map((64, 96), [(0, 0), (0, 32)], 64, [0.2, 0.6])
    assert m.shape == (64 // CELL, 96 // CELL)
    assert m[0, 0] == pytest.approx(0.2) and m[0, -1] == pytest.approx(0.6) and m[0, 5] == pytest.approx(0.4)


def test_manifest_is_the_only_thing_read(square_bundle, tmp_path):
    """A bundle copied elsewhere (no training files around) scores the same."""
    import shutil

    from icrt.runtime import Scorer

    copy = tmp_path / "copy"
    shutil.copytree(square_bundle, copy)
    img = tmp_path / "x.png"
    textured(50, 40).save(img)
    assert Scorer.load(str(copy)).score(str(img))["score"] == Scorer.load(square_bundle).score(str(img))["score"]
    assert json.load(open(copy / "manifest.json"))["format"] == "icrt-bundle/1"


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from icrt.runtime.base.files import write_json

    mask = os.umask(0o022)
    try:
        write_json(str(tmp_path / "m.json"), {"a": 1})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == 0o644


@needs_matplotlib
def test_square_model_heatmap_maps_local_windows(square_bundle, tmp_path, images):
    from icrt.runtime import Scorer
    from icrt.runtime.scoring.preprocess import load_rgb

    scorer = Scorer.load(square_bundle)
    rgb = load_rgb(images[2])  # 300 x 110
    geometry, positions, side, scores = scorer.local_windows(rgb)
    assert geometry == (110, 300) and side == 55 and len(positions) == len(scores) > 4
    top, left = positions[3]
    crop_score = scorer.score(rgb[top:top + side, left:left + side])["score"]
    assert scores[3] == pytest.approx(crop_score, abs=1e-6)  # a window is scored like a whole image
    rec = draw_heatmaps(scorer, [images[2]], str(tmp_path / "maps"))[0]
    assert rec["score"] == scorer.score(images[2])["score"]  # the image score is unchanged
    assert Image.open(rec["heatmap"]).format == "PNG"


# --- N9: memory bounded by bytes --------------------------------------------------------------------------------


def test_batch_size_is_bounded_by_bytes_from_the_input_size():
    """The default batch and the largest one follow from what one model input costs (its float32 size times
    ACTIVATION_FACTOR): the default model's 384 px inputs get a small default batch and a cap well under 1024."""
    from icrt.runtime.scoring.scorer import (
        DEFAULT_BATCH,
        DEFAULT_BATCH_BYTES,
        MAX_BATCH_BYTES,
        batch_limits,
        input_cost,
    )

    assert batch_limits(64) == (DEFAULT_BATCH, MAX_BATCH_BYTES // input_cost(64))  # small inputs: 32, many
    default, cap = batch_limits(384)
    assert 1 <= default <= 8 and default * input_cost(384) <= DEFAULT_BATCH_BYTES and cap * input_cost(384) <= MAX_BATCH_BYTES
    assert cap < 64 and batch_limits(4096) == (1, 1)
    sizes = [64, 128, 224, 384, 512, 1024]
    assert [batch_limits(s)[1] for s in sizes] == sorted((batch_limits(s)[1] for s in sizes), reverse=True)


def test_a_batch_size_over_the_cap_is_lowered_with_a_line(square_bundle, caplog):
    import logging

    import icrt.runtime.scoring.scorer as scorer
    from icrt.runtime import Scorer
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.scoring.scorer import batch_limits

    scorer._LOWERED_TOLD.clear()  # told once per process
    caplog.set_level(logging.WARNING, logger="runtime")
    logging.getLogger("runtime").addHandler(caplog.handler)  # setup_logging (an earlier CLI test) stops propagation

    m = load_manifest(square_bundle)
    big = m.preprocessing.__class__(**{**m.preprocessing.to_dict(), "size": 384})
    s = Scorer.for_preprocessing(Scorer.load(square_bundle).backend, big, batch_size=1024)
    assert s.batch_size == batch_limits(384)[1]
    logging.getLogger("runtime").removeHandler(caplog.handler)
    assert any("batch size 1024 lowered to" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert Scorer.load(square_bundle).batch_size == batch_limits(64)[0]  # the default: 32 for 64 px inputs


@pytest.mark.slow
def test_the_default_model_peaks_under_600_mb_with_default_options(tmp_path):
    """N9 with the shipped model: 24 JPEGs (more than a few batches) through `icrt score` with default options; the
    child's peak RSS (ru_maxrss) under 600 MB. Skipped where the default bundle is not installed."""
    import subprocess
    import sys

    from icrt.runtime.bundle.defaults import PACKAGE_BUNDLE
    from tests.runtime.fixtures import ROOT

    if not os.path.isfile(os.path.join(PACKAGE_BUNDLE, "manifest.json")):
        pytest.skip("no default bundle in this copy")
    for i in range(24):
        textured(640, 480, seed=i, level=(i % 8) / 8).save(tmp_path / f"{i:02d}.jpg", quality=90)
    # VmHWM: the peak RSS of this process's own memory (ru_maxrss would also count the parent's peak, which Linux
    # carries over when the child is started with vfork + exec)
    code = ("import sys; from icrt.runtime.cli import main; c = main(sys.argv[1:]); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr); "
            "sys.exit(c)")
    r = subprocess.run([sys.executable, "-c", code, "score", str(tmp_path), "--format", "jsonl"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 24
    peak_mb = int(r.stderr.strip().splitlines()[-1]) / 1024
    assert peak_mb < 600, peak_mb


def test_onnxruntime_writes_no_telemetry_files(square_bundle, images, tmp_path):
    """N17: onnxruntime's device id and event database (~/.cache/Microsoft/DeveloperTools) are not written."""
    import subprocess
    import sys

    from tests.runtime.fixtures import ROOT

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", images[0], "-m", square_bundle, "--backend",
                        "onnxruntime"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**env, "HOME": str(home), "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert list(home.rglob("*")) == [] and "telemetry" not in r.stderr.lower()


@pytest.mark.parametrize("bundle_name", ["square_bundle", "patches_bundle"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_decoding_ahead_on_threads_gives_the_sequential_records_in_order(request, bundle_name, backend, tmp_path,
                                                                         monkeypatch):
    """Images decoded on 1 or 2 helper threads while the engine runs: the records of decoding on the calling thread
    (workers=0), in input order, each bad file its own error record, even when later images finish decoding first."""
    import time

    import icrt.runtime.scoring.scorer as scorer_module
    from icrt.runtime import Scorer

    if backend == "openvino":
        pytest.importorskip("openvino")
        monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "cache"))
    bundle = request.getfixturevalue(bundle_name)
    paths = sample_images(tmp_path)
    textured(700, 500, seed=9).convert("RGB").save(tmp_path / "big.jpg", quality=90)  # decoded with draft
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    images = [paths[0], str(tmp_path / "broken.jpg"), paths[2], str(tmp_path / "big.jpg"), str(tmp_path / "none.png"),
              paths[1], paths[3], paths[4]] * 2
    plain = scorer_module.load_resized
    order = {p: i for i, p in enumerate(dict.fromkeys(images))}

    def slow_first(source, prep):  # earlier images take longer: helper threads finish them out of order
        time.sleep(0.002 * (len(order) - order.get(source, 0)))
        return plain(source, prep)

    monkeypatch.setattr(scorer_module, "load_resized", slow_first)
    runs = [Scorer.load(bundle, backend=backend, batch_size=3, workers=w).score_many(images) for w in (0, 1, 2)]
    assert [r["image"] for r in runs[0]] == images
    for got in runs[1:]:
        assert [r["image"] for r in got] == images
        assert [r.get("error") for r in got] == [r.get("error") for r in runs[0]]
        np.testing.assert_allclose([r.get("score", 0.0) for r in got], [r.get("score", 0.0) for r in runs[0]],
                                   rtol=0, atol=1e-6)
    errors = [r["image"] for r in runs[0] if "error" in r]
    assert errors == [str(tmp_path / "broken.jpg"), str(tmp_path / "none.png")] * 2
    assert all("\n" not in r["error"] for r in runs[0] if "error" in r)


# --- R12: images given as objects, and what is no image ------------------------------------------------------------


@pytest.fixture
def scorer(square_bundle):
    from icrt.runtime import Scorer

    return Scorer.load(square_bundle, backend="onnxruntime")


def _truncated_jpeg(path):
    import io

    buf = io.BytesIO()
    textured(80, 60, seed=1).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def test_a_lazily_opened_truncated_image_is_an_error_record_not_an_oserror(scorer, tmp_path, images):
    """R12: Image.open() reads the header only; the truncated data was a raw OSError out of score() and out of
    score_many(), where it lost the whole list."""
    from icrt.runtime import ImageError

    with Image.open(_truncated_jpeg(tmp_path / "trunc.jpg")) as im:
        with pytest.raises(ImageError, match="truncated or corrupt image data"):
            scorer.score(im)
    with Image.open(tmp_path / "trunc.jpg") as im:
        bad, good = scorer.score_many([im, images[0]])
    assert bad["image"].endswith("trunc.jpg") and "truncated" in bad["error"] and 0 <= good["score"] <= 1


def test_a_closed_image_and_images_without_pixels_are_error_records(scorer, images):
    from icrt.runtime import ImageError

    closed = Image.open(images[0])
    closed.close()
    with pytest.raises(ImageError, match="the Pillow image is closed"):
        scorer.score(closed)
    empty = [Image.new("RGB", (0, 0)), np.zeros((0, 0, 3), np.uint8), np.zeros((0, 10, 3), np.uint8),
             np.zeros((10, 0), np.uint8)]
    recs = scorer.score_many(empty)
    assert all(r.get("error", "").startswith("image has no pixels") for r in recs), recs
    for im in empty:
        with pytest.raises(ImageError, match="image has no pixels"):
            scorer.score(im)


@pytest.mark.parametrize("thing", [None, 5, 2.5, {"a.png": 1}, [[1, 2, 3]], object()])
def test_what_is_no_image_is_a_type_error_alone_and_an_error_record_in_a_list(scorer, images, thing):
    """None, numbers, dicts (they used to iterate their keys) are no images: TypeError from score(); in a list, an
    error record for that item while the rest is scored."""
    with pytest.raises(TypeError, match="not an image"):
        scorer.score(thing)
    bad, good = scorer.score_many([thing, images[0]])
    assert "not an image" in bad["error"] and bad["image"] == "<image 0>" and 0 <= good["score"] <= 1


def test_score_many_of_one_path_or_a_dict_is_a_type_error(scorer, images):
    for wrong in (images[0], {images[0]: 1}, b"\x89PNG"):
        with pytest.raises(TypeError, match="iterable of images"):
            scorer.score_many(wrong)


def test_a_memoryview_is_the_bytes_of_an_encoded_file(scorer, images):
    """Decided: a memoryview is taken as bytes (an encoded file), not as a 1-D array."""
    data = open(images[0], "rb").read()
    assert scorer.score(memoryview(data))["score"] == pytest.approx(scorer.score(images[0])["score"], abs=1e-6)


@pytest.mark.parametrize("mode", ["La", "LA", "PA", "RGBa", "RGBX", "HSV", "LAB", "YCbCr", "I;16B", "F"])
def test_every_pillow_mode_is_scored(scorer, mode):
    """R12: mode La failed ("conversion from La to L not supported"); it scores as its LA form."""
    base = textured(40, 30, seed=2).convert("RGBA")
    im = base.convert(mode) if mode not in ("La", "PA", "I;16B", "F") else {
        "La": lambda: base.convert("LA").convert("La"), "PA": lambda: base.convert("P").convert("PA"),
        "F": lambda: base.convert("F"),
        "I;16B": lambda: Image.frombytes("I;16B", base.size, (np.asarray(base.convert("L"), ">u2") * 257).tobytes())}[mode]()
    rec = scorer.score(im)
    assert im.mode == mode and 0 <= rec["score"] <= 1
    if mode == "La":
        assert rec["score"] == pytest.approx(scorer.score(im.convert("LA"))["score"], abs=1e-6)


# --- R16: a file that is not what a check saw -------------------------------------------------------------------------


def test_an_image_swapped_for_a_fifo_after_any_check_does_not_block(square_bundle, tmp_path):
    """R16: the decoder opens the file once, without blocking (O_NONBLOCK), and checks what it opened; a FIFO that a
    stat-based check took for a regular file (os.stat patched to say so, the swap made certain) is an error record
    at once. Run as its own process: a decoder blocked in open() could never be stopped from here."""
    import subprocess
    import sys

    from tests.runtime.fixtures import ROOT

    textured(30, 30).save(tmp_path / "real.png")
    os.mkfifo(tmp_path / "swapped.png")
    code = ("import os, json, sys\n"
            f"real, fifo = {str(tmp_path / 'real.png')!r}, {str(tmp_path / 'swapped.png')!r}\n"
            "stat = os.stat\n"
            "os.stat = lambda p, *a, **k: stat(real if os.fspath(p) == fifo else p, *a, **k)  # the check sees a file\n"
            "from icrt.runtime import Scorer\n"
            f"s = Scorer.load({square_bundle!r}, backend='onnxruntime')\n"
            "print(json.dumps(s.score_many([fifo, real])))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    bad, good = json.loads(r.stdout)
    assert bad == {"image": str(tmp_path / "swapped.png"), "error": "not a regular file"} and 0 <= good["score"] <= 1


def test_closing_the_records_early_does_not_wait_for_a_decode_that_hangs(square_bundle, images):
    """R16: Ctrl+C (or a consumer that stops) ends the record generator; it no longer waits for the decode threads,
    one of which may be stuck on a file that never ends."""
    import threading

    from icrt.runtime import Scorer
    from icrt.runtime.scoring.preprocess import load_resized

    release = threading.Event()
    scorer = Scorer.load(square_bundle, backend="onnxruntime", batch_size=1)

    def loader(path):
        if path == images[1]:
            release.wait(600)  # a decode that does not return (a stuck file system)
        return load_resized(path, scorer.prep)
    scorer.loader = loader
    records = scorer.iter_score(images[:4])
    try:
        assert next(records)["image"] == images[0]
        closer = threading.Thread(target=records.close, daemon=True)
        closer.start()
        closer.join(60)
        assert not closer.is_alive(), "closing the records waited for the stuck decode"
    finally:
        release.set()


# --- R13: a model whose every score is NaN is a model error -----------------------------------------------------------


def test_a_model_that_gives_nan_for_every_image_is_a_model_error(tmp_path, capsys):
    """R13: every record is written with its own "non-finite score" error, and the run ends with exit code 2 and one
    line about the model (it was exit 1, as if the images were bad)."""
    from tests.runtime.fixtures import make_bundle, run_cli

    bundle = make_bundle(tmp_path / "nan", "const:nan")
    paths = sample_images(tmp_path)[:3]
    code, out, err = run_cli(capsys, "score", *paths, "-m", bundle, "--backend", "onnxruntime", "--format", "jsonl")
    recs = [json.loads(line) for line in out.splitlines()]
    assert code == 2 and [r["error"] for r in recs] == ["model returned a non-finite score"] * 3
    assert err.splitlines()[-1] == ("icrt: error: the model gave a non-finite score (NaN or infinity) for every image "
                                    "it scored (3 of them): the model is broken, not the images (each has its own "
                                    "error record)")


def test_nan_for_some_images_only_stays_an_image_failure(tmp_path, capsys):
    """sqrt(mean pixel) is NaN for dark images only: those images failed (exit 1), the model is not blamed."""
    from tests.runtime.fixtures import make_bundle, run_cli

    bundle = make_bundle(tmp_path / "sqrt", "sqrt")
    Image.new("RGB", (20, 20), (0, 0, 0)).save(tmp_path / "dark.png")
    Image.new("RGB", (20, 20), (250, 250, 250)).save(tmp_path / "bright.png")
    code, out, err = run_cli(capsys, "score", tmp_path / "dark.png", tmp_path / "bright.png", "-m", bundle, "--backend",
                             "onnxruntime", "--format", "json")
    recs = json.loads(out)
    assert code == 1 and "error" in recs[0] and "score" in recs[1] and "the model gave" not in err
