"""onnxruntime's own output: a model it cannot initialise (the path a std::bad_alloc takes) is icrt's one line and
no red onnxruntime log (M3); with both onnxruntime builds installed, ``auto`` says so once whichever CPU engine it
picks, OpenVINO included (M4)."""
import logging
import os
import subprocess
import sys

import pytest

import icrt.runtime.backends.onnxruntime as ort_backend
from icrt.runtime.backends import open_backend
from icrt.runtime.bundle.manifest import load_manifest
from icrt.runtime.scoring.options import ScorerOptions
from tests.runtime.fixtures import ROOT, make_bundle, needs, sample_images


@pytest.mark.slow
def test_a_model_onnxruntime_cannot_initialise_is_one_line_without_its_red_log(tmp_path):
    """M3: a bundle whose load ran out of memory printed onnxruntime's red '[E:onnxruntime:...] std::bad_alloc' line
    before icrt's; a Resize with an unknown mode fails at the same place (session initialisation)."""
    from tests.runtime.onnx_models import copy_hostile

    b = make_bundle(tmp_path / "b")
    copy_hostile("bad_resize.onnx", os.path.join(b, "model.onnx"))
    env = {**os.environ, "PYTHONPATH": ROOT, "ICRT_CACHE_DIR": str(tmp_path / "cache")}
    for argv in (["score", sample_images(tmp_path)[0], "--backend", "onnxruntime"], ["triton", "--out", tmp_path / "r"]):
        r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", *map(str, argv), "-m", b], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith("icrt: error: ") and "Exception during initialization" in r.stderr
        assert "[E:onnxruntime" not in r.stderr


@needs("openvino", "the [openvino] extra")
def test_auto_picking_openvino_says_once_that_both_onnxruntime_builds_are_installed(square_bundle, monkeypatch,
                                                                                   caplog, tmp_path):
    import icrt.runtime.base.hardware as hardware
    import icrt.runtime.base.packages as packages

    monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hardware, "cpu_features", lambda cpuinfo=None: ["avx2", "avx512", "avx512_vnni", "amx_int8"])
    monkeypatch.setattr(packages, "onnxruntime_shadowed", lambda: "both onnxruntime and onnxruntime-gpu are installed")
    monkeypatch.setattr(ort_backend, "_told", set())
    logger = logging.getLogger("icrt")
    logger.addHandler(caplog.handler)  # also where an earlier command set up icrt's own handler (no propagation)
    try:
        for _ in range(2):
            b = open_backend(load_manifest(square_bundle), ScorerOptions(backend="auto"))
            assert b.name == "openvino"
    finally:
        logger.removeHandler(caplog.handler)
    records = {id(r): r for r in caplog.records}.values()  # a record reaches caplog's handler once or twice
    warned = [r.getMessage() for r in records if "onnxruntime-gpu" in r.getMessage()]
    assert warned == ["icrt: warning: scoring on the CPU: both onnxruntime and onnxruntime-gpu are installed"]
