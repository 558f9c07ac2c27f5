"""The OpenVINO backend (the [openvino] extra) on the committed tiny models: the scores of onnxruntime's fp32 and of
PyTorch, its uint8 pixel input, fp32 meaning fp32, its model cache (private, per user, keyed by the file's digest),
the bundle checks and run errors in one line, and its place in ``auto``. Skipped where OpenVINO is not installed."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from icrt.runtime.backends import BackendError, open_backend
from icrt.runtime.bundle.manifest import BundleError, load_manifest
from icrt.runtime.scoring.options import ScorerOptions
from tests.runtime.fixtures import (
    PARITY_TOL,
    ROOT,
    SIZE,
    make_bundle,
    needs,
    node_model,
    reference_images,
    reference_scores,
    run_cli,
    sample_images,
)

pytestmark = needs("openvino", "the openvino backend, the [openvino] extra")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Each test's compiled models in its own cache folder (never the user's)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ICRT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def images(tmp_path):
    return sample_images(tmp_path)


def scores(bundle, backend, precision="fp32", images=None, batch_size=None):
    from icrt.runtime import Scorer

    s = Scorer.load(bundle, backend=backend, precision=precision, batch_size=batch_size)
    return s, np.array([r["score"] for r in s.score_many(images)])


@pytest.mark.parametrize("bundle_name", ["square_bundle", "patches_bundle"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_scores_as_onnxruntime_fp32_and_pytorch(request, bundle_name, batch_size, images):
    bundle = request.getfixturevalue(bundle_name)
    s, got = scores(bundle, "openvino", images=images, batch_size=batch_size)
    _, ref = scores(bundle, "onnxruntime", images=images, batch_size=batch_size)
    assert s.backend.name == "openvino" and s.pixels  # uint8 pixels in, normalised inside the model
    assert np.abs(got - ref).max() <= 1e-5 and np.ptp(ref) > 1e-3
    _, torch = scores(bundle, "openvino", images=[np.asarray(img) for img in reference_images()])
    assert np.abs(torch - np.array(reference_scores()["fp32"])).max() <= PARITY_TOL


def test_int8_reads_the_bundles_qdq_file_and_stays_close_to_fp32(square_bundle, images):
    s, got = scores(square_bundle, "openvino", "int8", images)
    _, fp32 = scores(square_bundle, "onnxruntime", "fp32", images)
    assert os.path.basename(s.backend.file) == "model.int8.onnx"
    assert not np.array_equal(got, fp32) and np.abs(got - fp32).max() < 0.05


def test_float_and_pixel_inputs_give_the_same_scores(square_bundle):
    from icrt.runtime.scoring.preprocess import to_model_input

    m = load_manifest(square_bundle)
    b = open_backend(m, ScorerOptions(backend="openvino", precision="fp32"))
    rgb = [np.asarray(img) for img in reference_images()]
    px = np.concatenate([to_model_input(x, m.preprocessing, pixels=True)[0] for x in rgb])
    x = np.concatenate([to_model_input(x, m.preprocessing)[0] for x in rgb])
    assert px.dtype == np.uint8 and px.shape == (8, 64, 64, 3) and x.shape == (8, 3, 64, 64)
    np.testing.assert_allclose(b.run(px), b.run(x), atol=1e-6)
    assert b.takes_pixels(m.preprocessing) and not b.takes_pixels(m.preprocessing.__class__(size=64, mean=(0.5,) * 3))


def test_fp32_is_fp32_and_the_backend_says_so(square_bundle):
    b = open_backend(load_manifest(square_bundle), ScorerOptions(backend="openvino", precision="fp32"))
    d = b.describe()
    assert d["backend"] == "openvino" and d["inference_precision"] == "f32" and d["device"] == "cpu"
    b.run(np.zeros((1, 3, 64, 64), np.float32))  # the float model too
    for compiled, *_ in b._compiled.values():  # what OpenVINO compiled, not only what was asked
        assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"


def test_the_model_cache_is_private_keyed_by_the_file_and_reused(square_bundle, cache_dir):
    m = load_manifest(square_bundle)
    first = open_backend(m, ScorerOptions(backend="openvino", precision="fp32")).describe()["model_cache"]
    assert os.path.dirname(first) == str(cache_dir / "openvino") and not first.startswith(square_bundle)
    assert [f for f in os.listdir(first) if f.endswith(".blob")]  # OpenVINO wrote its compiled model there
    for folder in (cache_dir / "openvino", first):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    again = open_backend(m, ScorerOptions(backend="openvino", precision="fp32"))
    assert again.describe()["model_cache"] == first  # the same file: the same folder
    # one OpenVINO Core per process: two, unloaded out of order, left a freed signal stack and the next SIGTERM
    # crashed the process (test_outputs.py's SIGTERM test, run after this module, caught it)
    assert again.core is open_backend(m, ScorerOptions(backend="openvino", precision="int8")).core
    int8 = open_backend(m, ScorerOptions(backend="openvino", precision="int8"))
    assert int8.describe()["model_cache"] != first  # another file: another folder
    assert not [f for f in os.listdir(square_bundle) if "blob" in f or "cache" in f]  # nothing in the bundle


def test_a_cache_folder_others_can_write_is_not_used(square_bundle, cache_dir, monkeypatch):
    (cache_dir / "openvino").mkdir(parents=True)
    os.chmod(cache_dir / "openvino", 0o777)
    b = open_backend(load_manifest(square_bundle), ScorerOptions(backend="openvino", precision="fp32"))
    assert b.describe()["model_cache"] is None
    assert any("can be written by other users" in n for n in b.notes)
    monkeypatch.setenv("ICRT_CACHE_DIR", "off")
    b = open_backend(load_manifest(square_bundle), ScorerOptions(backend="openvino", precision="fp32"))
    assert b.describe()["model_cache"] is None and "no model cache (ICRT_CACHE_DIR=off)" in b.notes


def test_bundle_checks_and_a_failing_batch_are_one_line_each(tmp_path, images):
    from icrt.runtime.backends.openvino import OpenVinoBackend

    for variant, shape, words in (("sigmoid", ("N", 4, SIZE, SIZE), "input 'image' has shape"),
                                  ("wide", None, "output 'score' has shape")):
        folder = tmp_path / variant
        bundle = make_bundle(folder, variant, *([shape] if shape else []))
        with pytest.raises(BundleError, match=words):
            open_backend(load_manifest(bundle), ScorerOptions(backend="openvino"))
    with pytest.raises(BundleError, match="no input named 'pixels'"):
        OpenVinoBackend(node_model(tmp_path / "plain.onnx"), input_name="pixels")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(BackendError, match="onnxruntime cannot load this model .*; OpenVINO runs only what "
                                           "onnxruntime runs too") as e:  # onnxruntime reads a file first
        OpenVinoBackend(str(tmp_path / "junk.onnx"))
    assert "\n" not in str(e.value)
    bundle = make_bundle(tmp_path / "fails", "fails-bright")
    for name, grey in (("dark.png", 30), ("white.png", 255)):
        Image.new("RGB", (40, 40), (grey,) * 3).save(tmp_path / name)
    from icrt.runtime import Scorer

    s = Scorer.load(bundle, backend="openvino", batch_size=1)
    recs = s.score_many([str(tmp_path / "dark.png"), str(tmp_path / "white.png")])
    assert "score" in recs[0] and recs[1]["error"].startswith("the model failed on this image's batch (OpenVINO: ")
    assert "Reshape" in recs[1]["error"] and "\n" not in recs[1]["error"] and s.run_failures.batches == 1


def test_cli_score_batch_and_bench_take_it_by_name(square_bundle, images, tmp_path, capsys):
    code, out, err = run_cli(capsys, "score", *images, "-m", square_bundle, "--backend", "openvino", "--format", "json")
    assert code == 0, err
    ov = [r["score"] for r in json.loads(out)]
    code, out, _ = run_cli(capsys, "score", *images, "-m", square_bundle, "--backend", "onnxruntime", "--format",
                           "json")
    np.testing.assert_allclose(ov, [r["score"] for r in json.loads(out)], atol=1e-5)
    code, _, err = run_cli(capsys, "batch", *images, "-m", square_bundle, "--backend", "openvino", "--out",
                           tmp_path / "batch")
    assert code == 0, err


def test_auto_takes_it_before_onnxruntime_where_it_was_measured_faster(square_bundle, monkeypatch):
    import icrt.runtime.base.hardware as cpu

    monkeypatch.setattr(cpu, "cpu_features", lambda cpuinfo=None: ["avx2", "avx512", "avx512_vnni", "amx_int8"])
    b = open_backend(load_manifest(square_bundle), ScorerOptions(backend="auto", precision="fp32"))
    assert b.name == "openvino" and any(n.startswith("tensorrt:") for n in b.notes)
    # an AVX2-only CPU (this project's, where the two engines were at parity): onnxruntime, and the note says why
    monkeypatch.setattr(cpu, "cpu_features", lambda cpuinfo=None: ["avx2"])
    b = open_backend(load_manifest(square_bundle), ScorerOptions(backend="auto", precision="fp32"))
    assert b.name == "onnxruntime" and any(n.startswith("openvino:") and "AVX-512" in n for n in b.notes)


def test_without_openvino_by_name_is_one_line_with_the_install_hint(square_bundle, images, tmp_path):
    """The module made unimportable, as in an environment without the extra: exit 2, one line."""
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from icrt.runtime.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "score", images[0], "-m", square_bundle, "--backend", "openvino"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("icrt: error: OpenVINO is not installed") and len(r.stderr.splitlines()) == 1
    assert "install the [openvino] extra: pip install " in r.stderr and "[openvino]" in r.stderr.split("pip install")[1]


def test_it_writes_nothing_but_its_cache_under_home(square_bundle, images, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ICRT_CACHE_DIR", "XDG_CACHE_HOME")}
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", images[0], "-m", square_bundle, "--backend",
                        "openvino"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**env, "HOME": str(home), "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    written = {p.relative_to(home).parts[:3] for p in home.rglob("*") if p.is_file()}
    assert written == {(".cache", "icrt", "openvino"), (".cache", "icrt", "verdicts")}  # compiled model, verdict
    assert "telemetry" not in r.stderr.lower()


def test_bench_puts_backends_side_by_side_with_their_agreement_and_the_cpu_flags(square_bundle, images, tmp_path,
                                                                                capsys):
    from icrt.runtime.base.hardware import describe

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in images:
        Image.open(p).save(folder / (os.path.basename(p).rsplit(".", 1)[0] + ".png"))
    out = tmp_path / "report"
    code, _, err = run_cli(capsys, "bench", "-m", square_bundle, "--backend", "onnxruntime,openvino", "--precision",
                           "fp32,int8", "--batch-sizes", "1,2", "--warmup", "0", "--iters", "2", "--images", folder,
                           "--report", out)
    assert code == 0, err
    r = json.loads((out / "report.json").read_text())
    assert [(x["backend"], x["precision"], x["batch_size"]) for x in r["results"]] == [
        (b, p, n) for b in ("onnxruntime", "openvino") for p in ("fp32", "int8") for n in (1, 2)]
    assert r["agreement_reference"] == "onnxruntime fp32" and r["cpu"] == describe()
    for x in r["results"]:
        a = x["agreement"]
        assert x["cpu"] == describe() and a["n"] == len(images) and x["e2e_vs_inference"] > 0
        if x["precision"] == "fp32":  # the reference itself, and OpenVINO's fp32 held to f32
            assert a["srcc"] == pytest.approx(1.0) and a["max_abs_diff"] <= 1e-5
        else:
            assert a["max_abs_diff"] < 0.1
    md = (out / "report.md").read_text()
    assert "## Side by side (speed-up against onnxruntime; CPU " + describe() + ")" in md
    assert "| openvino vs onnxruntime |" in md and md.count("\n| fp32 | 1 |") == 1 and "| int8 | 2 |" in md
