"""The backend registry: registration, `auto` order and its notes, what reads the registry (CLI, manifest
validation, bench), and `OrtBackend.from_file`. Models are a few ONNX nodes (tests/runtime/data/nodes)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import icrt.runtime.backends as backends
import icrt.runtime.bundle.precisions as precisions
from icrt.runtime.backends import Backend, BackendError, NotInBundleError, open_backend, register_backend
from icrt.runtime.bundle.manifest import BundleError, load_manifest
from icrt.runtime.scoring.options import ScorerOptions
from tests.runtime.fixtures import SIZE, edit_manifest, make_bundle, needs_matplotlib, node_model


class ConstBackend(Backend):
    """A backend that needs no library: every input scores ``value``."""

    name = "const"

    def __init__(self, precision, value=0.25, notes=None):
        self.precision, self.value, self.notes, self.file = precision, value, list(notes or []), "const.bin"

    def run(self, batch):
        return np.full(len(batch), self.value, np.float32)


@pytest.fixture
def registry(monkeypatch):
    """The registry as a scratch copy: backends (and the bundle forms they bring) registered in a test vanish
    after it."""
    monkeypatch.setattr(backends.base, "_REGISTRY", dict(backends.registry()))
    monkeypatch.setattr(precisions, "_FORMS", dict(precisions._FORMS))
    return backends


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "b")


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 120, 40)).save(path)
    return str(path)


def without_openvino(registry):
    """``auto`` as where the [openvino] extra is not installed (it comes before onnxruntime where it is)."""
    spec = registry.registry()["openvino"]
    registry.base._REGISTRY["openvino"] = dataclasses.replace(spec, available=lambda: False)


def test_builtins_are_registered_in_auto_order(registry):
    assert registry.backend_choices() == ("auto", "onnxruntime", "openvino", "tensorrt")
    assert [s.name for s in registry.auto_order()] == ["tensorrt", "openvino", "onnxruntime"]
    assert precisions.forms() == ("onnxruntime", "tensorrt")  # openvino reads the onnxruntime form
    spec = registry.backend_spec("onnxruntime")
    assert spec.files_key == "onnxruntime" and spec.available() is True
    assert registry.backend_spec("openvino").unavailable == "not installed (install the [openvino] extra)"
    with pytest.raises(BackendError, match=r"unknown backend 'nosuch' \(choose from auto, onnxruntime, openvino, "
                                           r"tensorrt\)"):
        registry.backend_spec("nosuch")
    with pytest.raises(ValueError):
        register_backend("auto", lambda *a, **k: None, lambda: True)


def test_registry_imports_no_inference_library():
    code = ("import sys, icrt.runtime.backends as b; b.registry(); import icrt.runtime.cli.app; "
            "icrt.runtime.cli.app.build_parser(); "
            "print(sorted(m for m in ('numpy', 'PIL', 'onnxruntime', 'tensorrt', 'openvino') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_auto_walks_the_registry_and_notes_what_it_passed_over(registry, bundle):
    opened = []

    def open_const(manifest, options, *, notes=None):
        opened.append(list(notes or []))
        return ConstBackend(options.precision, notes=notes)

    def open_broken(manifest, options, *, notes=None):
        raise BackendError("no device here")

    register_backend("absent", open_const, lambda: False, auto_order=1, unavailable="not installed (pip install x)")
    register_backend("broken", open_broken, lambda: True, auto_order=2)
    register_backend("const", open_const, lambda: True, auto_order=3)
    register_backend("manual", open_const, lambda: True)  # never chosen by auto
    m = load_manifest(bundle)
    b = open_backend(m, ScorerOptions(backend="auto", precision="fp32"))
    assert b.name == "const" and b.notes == ["absent: not installed (pip install x)", "broken: no device here"]
    assert [s.name for s in registry.auto_order()] == ["absent", "broken", "const", "tensorrt", "openvino",
                                                       "onnxruntime"]
    assert open_backend(m, ScorerOptions(backend="manual")).name == "const" and opened[-1] == []
    assert "manual" in registry.backend_choices()


def test_auto_falls_through_to_onnxruntime_and_raises_the_last_error(registry, bundle):
    def open_broken(manifest, options, *, notes=None):
        raise BackendError("no device here")

    register_backend("broken", open_broken, lambda: True, auto_order=1)
    without_openvino(registry)
    m = load_manifest(bundle)
    b = open_backend(m, ScorerOptions(backend="auto", precision="fp32"))
    assert b.name == "onnxruntime" and b.device == "cpu" and b.notes[0] == "broken: no device here"
    assert any(n.startswith("tensorrt:") for n in b.notes)
    assert "openvino: not installed (install the [openvino] extra)" in b.notes
    with pytest.raises(NotInBundleError, match="no int8 model in this bundle") as e:  # onnxruntime's own error
        open_backend(m, ScorerOptions(backend="auto", precision="int8"))
    assert e.value.exit_code == 2 and isinstance(e.value, BundleError)


@needs_matplotlib  # the bench's plot
def test_a_registered_backend_serves_the_cli_bench_and_manifest(registry, bundle, image, tmp_path, capsys):
    from icrt.runtime.cli import main

    def open_const(manifest, options, *, notes=None):
        manifest.file_for(options.precision, "constfile")  # the bundle's file for this backend (checked inside it)
        return ConstBackend(options.precision, 0.75, notes)

    # a files key nobody registered is refused, naming the known ones
    edit_manifest(bundle, lambda d: d["files"]["fp32"].update(constfile="model.onnx"))
    with pytest.raises(BundleError, match=r"files\.fp32: unknown backend 'constfile' \(known: onnxruntime, tensorrt\)"):
        load_manifest(bundle)
    register_backend("const", open_const, lambda: True, files_key="constfile")
    assert load_manifest(bundle).file_name("fp32", "constfile") == "model.onnx"
    assert main(["score", image, "-m", bundle, "--backend", "const", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["score"] == 0.75
    assert main(["bench", "-m", bundle, "--backend", "const", "--precision", "fp32", "--batch-sizes", "2",
                 "--warmup", "0", "--iters", "1", "--report", str(tmp_path / "rep")]) == 0
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["results"]
    assert [(r["backend"], r["batch_size"]) for r in rows] == [("const", 2)]
    assert "interleaved: const/fp32 (cpu)" in capsys.readouterr().err  # bench progress goes through logging, to stderr


def test_any_object_with_the_backend_interface_scores(bundle, image):
    from icrt.runtime.scoring.scorer import Scorer

    m = load_manifest(bundle)
    rec = Scorer(m, ConstBackend("fp32", 0.5)).score(image)
    assert rec["score"] == 0.5 and rec["patches"] == 1


def test_ort_backend_from_a_plain_onnx_file(tmp_path):
    from icrt.runtime.backends.onnxruntime import OrtBackend

    path = node_model(tmp_path / "plain.onnx")
    b = OrtBackend.from_file(path, precision="fp32", threads=1)
    x = np.zeros((3, 3, SIZE, SIZE), np.float32)
    assert b.file == path and b.device == "cpu" and b.threads == 1 and b.describe()["backend"] == "onnxruntime"
    np.testing.assert_allclose(b.run(x), np.full(3, 0.5), atol=1e-6)  # sigmoid(mean 0)
    with pytest.raises(BundleError, match=r"has shape \['N', 3, 32, 32\]; the manifest expects \[N, 3, 64, 64\]"):
        OrtBackend.from_file(path, size=64)
    with pytest.raises(BackendError, match="no such ONNX file"):
        OrtBackend.from_file(str(tmp_path / "missing.onnx"))
    with pytest.raises(BundleError, match="no input named 'pixels'"):
        OrtBackend.from_file(path, input_name="pixels")


def test_unavailable_backend_and_missing_precision_exit_codes(bundle, image, capsys):
    from icrt.runtime.backends.tensorrt import tensorrt_available
    from icrt.runtime.base.errors import EXIT_UNAVAILABLE
    from icrt.runtime.cli import main

    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    assert main(["score", image, "-m", bundle, "--backend", "tensorrt"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.startswith("icrt: error: TensorRT is not installed") and len(err.splitlines()) == 1
    assert main(["score", image, "-m", bundle, "--backend", "onnxruntime", "--precision", "int8"]) == 2
    assert "no int8 model in this bundle" in capsys.readouterr().err
    assert os.path.isdir(bundle)
