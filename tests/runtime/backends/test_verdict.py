"""OpenVINO's verdict on a model file is held to onnxruntime's (runtime/backends/verdict.py): a graph onnxruntime
refuses to run (an out-of-bounds Gather) is refused by OpenVINO too, in one line, instead of scoring whatever memory
held; scores further apart than the precision's tolerance, or non-finite in one engine only, are refused; the verdict
is cached by the exact bytes' SHA-256, so the probe runs once per file."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import icrt.runtime.backends.verdict as verdict
from icrt.runtime.backends import open_backend
from icrt.runtime.bundle.manifest import BundleError, load_manifest
from icrt.runtime.scoring.options import ScorerOptions
from tests.runtime.fixtures import ROOT, make_bundle, needs, sample_images

pytestmark = needs("openvino", "the openvino backend, the [openvino] extra")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test's verdicts in its own cache folder, none remembered from an earlier test."""
    monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(verdict, "_KNOWN", {})
    return tmp_path / "cache"


@pytest.fixture
def gather_bundle(tmp_path):
    from tests.runtime.onnx_models import copy_hostile

    b = make_bundle(tmp_path / "gather")
    copy_hostile("gather_out_of_bounds.onnx", os.path.join(b, "model.onnx"))
    return b


def test_a_gather_out_of_bounds_is_refused_by_openvino_as_onnxruntime_refuses_it(gather_bundle, tmp_path):
    """The issue: in onnxruntime a run-time error, in OpenVINO a number, and the run exited 0 (auto picks OpenVINO
    on AVX-512 / AMX CPUs)."""
    img = sample_images(tmp_path)[0]
    env = {**os.environ, "PYTHONPATH": ROOT}
    for backend in ("openvino", "auto"):
        r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", img, "-m", gather_bundle, "--backend",
                            backend], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if backend == "auto" and "openvino" not in r.stderr:
            continue  # this CPU has no AVX-512 / AMX: auto runs onnxruntime, which fails the batch (exit 2)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"icrt: error: {gather_bundle}/model.onnx: refused: onnxruntime fails to run it on a "
                                   "probe batch, so OpenVINO may not run it (onnxruntime failed to run the model")
        assert "Gather" in r.stderr and "out of data bounds" in r.stderr
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", img, "-m", gather_bundle, "--backend",
                        "onnxruntime"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "the model failed on a batch" in r.stderr  # onnxruntime: as before


def test_the_verdict_is_kept_by_the_bytes_digest_and_the_probe_runs_once(square_bundle, tmp_path, cache,
                                                                         monkeypatch):
    m = load_manifest(square_bundle)
    runs = []
    real = verdict.onnxruntime_side
    monkeypatch.setattr(verdict, "onnxruntime_side", lambda *a, **k: runs.append(a[0]) or real(*a, **k))
    open_backend(m, ScorerOptions(backend="openvino", precision="fp32"))
    assert len(runs) == 1 and len(os.listdir(cache / "verdicts")) == 1
    open_backend(m, ScorerOptions(backend="openvino", precision="fp32"))  # this process remembers it
    monkeypatch.setattr(verdict, "_KNOWN", {})
    open_backend(m, ScorerOptions(backend="openvino", precision="fp32"))  # the private cache remembers it
    assert len(runs) == 1
    open_backend(m, ScorerOptions(backend="openvino", precision="int8"))  # another file: its own probe
    assert len(runs) == 2
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(square_bundle, copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\xa0\x06\x01")  # field 100 = 1, unknown to ONNX: the same model, other bytes
    open_backend(load_manifest(str(copy)), ScorerOptions(backend="openvino", precision="fp32"))
    assert len(runs) == 3


@pytest.mark.parametrize("shift, words", [
    (0.5, "OpenVINO and onnxruntime disagree on a probe batch by 0.5 (at most 0.001 for fp32)"),
    (np.nan, "a non-finite score on a probe batch where the other engine gives another"),
])
def test_disagreement_beyond_the_tolerance_or_a_non_finite_score_in_one_engine_is_refused(square_bundle, monkeypatch,
                                                                                         shift, words):
    real = verdict.onnxruntime_side

    def shifted(*args, **kwargs):  # onnxruntime's scores moved, as if the engines ran the graph differently
        pixels, scores = real(*args, **kwargs)
        return pixels, scores + np.float32(shift)

    monkeypatch.setattr(verdict, "onnxruntime_side", shifted)
    with pytest.raises(BundleError, match=re.escape(f"model.onnx: refused: {words}")) as e:
        open_backend(load_manifest(square_bundle), ScorerOptions(backend="openvino"))
    assert "\n" not in str(e.value)
    monkeypatch.setattr(verdict, "onnxruntime_side", real)  # refused from the cache, without a probe
    with pytest.raises(BundleError, match=re.escape(words)):
        open_backend(load_manifest(square_bundle), ScorerOptions(backend="openvino"))


def test_tolerances_follow_the_precisions_and_the_same_non_finite_scores_are_the_models_own(tmp_path):
    assert verdict.tolerance("fp32") < verdict.tolerance("fp16") < verdict.tolerance("int8")
    nan = np.array([0.5, np.nan], np.float32)
    assert verdict.compare("fp32", nan, nan.copy(), 1.0)["verdict"] == "good"
    assert verdict.compare("int8", np.array([0.5, 0.6]), np.array([0.55, 0.6]), 1.0)["verdict"] == "good"
    assert verdict.compare("fp32", np.array([0.5, 0.6]), np.array([0.55, 0.6]), 1.0)["verdict"] == "refused"
    assert verdict.compare("fp32", np.array([5.0]), np.array([5.005]), 10.0)["verdict"] == "good"  # range [0, 10]
    # a model that gives NaN for some images still scores per image on OpenVINO, as on onnxruntime
    from icrt.runtime import Scorer

    s = Scorer.load(make_bundle(tmp_path / "nan", "const:nan"), backend="openvino")
    assert s.score_many(sample_images(tmp_path)[:1])[0]["error"] == "model returned a non-finite score"
