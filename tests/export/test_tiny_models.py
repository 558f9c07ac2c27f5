"""The runtime tests' committed models (tests/runtime/data) are what tests/runtime/data/make_tiny_models.py makes,
and the tiny conv net scores through the runtime as its PyTorch model does. Needs torch and onnx: tests/runtime
itself only reads the committed files."""
import os

import numpy as np
import onnx
import pytest
import torch

from icrt.runtime.backends.onnxruntime import OrtBackend
from icrt.runtime.scoring.preprocess import load_rgb, pool_scores, to_model_input
from tests.runtime.data import make_tiny_models
from tests.runtime.fixtures import DATA, PARITY_TOL, TINY_FILES, build_bundle, reference_scores, sample_images

REGENERATE = "committed file differs from a fresh run: run `python tests/runtime/data/make_tiny_models.py` and commit"
FP32_TOL = 1e-5
# quantize_static calibrates by fp32 inference, whose last bits vary with the CPU and onnxruntime version: a
# scale may round the other way, moving an output by a quantization step of the score (about 1/255)
INT8_TOL = 1e-2


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny-models"))
    return out, make_tiny_models.write_all(out)


def _inputs():
    """The reference images' inputs and a seeded batch of normal noise (other values than images give)."""
    noise = np.random.default_rng(0).standard_normal((6, 3, 64, 64)).astype(np.float32)
    return np.concatenate([make_tiny_models.reference_inputs(), noise])


def _run(path, precision):
    return OrtBackend.from_file(path, precision, threads=1).run(_inputs()).astype(np.float64)


def test_the_committed_files_are_exactly_the_scripts_files(fresh):
    out, written = fresh
    committed = sorted(os.path.relpath(os.path.join(d, f), DATA) for d, _, fs in os.walk(DATA) for f in fs
                       if f.endswith((".onnx", ".json")))
    assert committed == sorted(written), "data folder and make_tiny_models.py disagree on the files"


@pytest.mark.parametrize("precision,tol", [("fp32", FP32_TOL), ("int8", INT8_TOL)])
def test_committed_tiny_net_gives_what_a_fresh_run_gives(fresh, precision, tol):
    out, _ = fresh
    committed = _run(os.path.join(DATA, TINY_FILES[precision]), precision)
    again = _run(os.path.join(out, TINY_FILES[precision]), precision)
    assert np.abs(committed - again).max() <= tol, REGENERATE


def test_committed_reference_scores_are_a_fresh_runs(fresh):
    out, _ = fresh
    again = make_tiny_models.reference(make_tiny_models.tiny_model())["fp32"]
    assert np.abs(np.array(reference_scores()["fp32"]) - np.array(again)).max() <= FP32_TOL, REGENERATE


def test_committed_node_models_are_a_fresh_runs(fresh):
    out, written = fresh
    for name in written:
        if name.startswith(("nodes", "hostile")):
            assert onnx.load(os.path.join(DATA, name)) == onnx.load(os.path.join(out, name)), f"{name}: {REGENERATE}"


def test_tiny_net_spreads_scores_and_int8_stays_close():
    """What the runtime's tests rely on: scores in (0, 1), spread over the range; int8 a different model, close
    to fp32 on images (the noise inputs are outside its calibration)."""
    fp32, int8 = (_run(os.path.join(DATA, TINY_FILES[p]), p) for p in ("fp32", "int8"))
    assert ((fp32 > 0) & (fp32 < 1)).all() and np.ptp(fp32) > 0.3
    images = slice(0, len(make_tiny_models.reference_inputs()))
    assert not np.array_equal(fp32[images], int8[images]) and np.abs(fp32 - int8)[images].max() < 0.05


def torch_scores(paths, prep):
    """Reference: the PyTorch model on the runtime's preprocessing, pooled per image."""
    model = make_tiny_models.tiny_model()
    out = []
    with torch.no_grad():
        for p in paths:
            x, _ = to_model_input(load_rgb(p), prep)
            out.append(pool_scores(model(torch.from_numpy(x)).numpy(), prep))
    return np.array(out)


@pytest.mark.parametrize("resize", ["square", "patches"])
def test_scores_match_pytorch_within_parity(resize, tmp_path):
    """Images of several sizes (resized, or cut into patches and pooled) score through the runtime as the PyTorch
    model the committed tiny.onnx was made from scores them."""
    from icrt.runtime import Scorer

    images = sample_images(tmp_path)
    s = Scorer.load(build_bundle(str(tmp_path / "bundle"), resize), backend="onnxruntime", precision="fp32")
    got = np.array([r["score"] for r in s.score_many(images)])
    ref = torch_scores(images, s.prep)
    assert np.abs(got - ref).max() <= PARITY_TOL
    assert np.ptp(ref) > 1e-3  # the images really score differently, so a mix-up would show
