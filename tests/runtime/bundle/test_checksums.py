"""A bundle records the SHA-256 of every file it names; the runtime checks the file it opens, and a bundle copied
with a damaged file is refused in one line. A table of digests covers every named file, and an engine loads the
bytes that were checked (R14)."""
import json
import os
import shutil

import numpy as np
import pytest

from icrt.runtime.base.errors import BundleError
from icrt.runtime.bundle.manifest import file_sha256, load_manifest
from tests.runtime.fixtures import ROOT, build_bundle, needs, run_cli
from tests.runtime.fixtures import icrt_lines as icrt


@pytest.fixture
def summed(tmp_path):
    b = build_bundle(str(tmp_path / "b"), int8=True)
    m = load_manifest(b)
    m.engines = []  # the fixture names an engine it does not build
    m.record_checksums()
    m.save()
    return b


def _damage(path):
    with open(path, "r+b") as f:  # one byte flipped in the middle, the size kept: what a broken copy can leave
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_every_named_file_is_recorded_and_a_damaged_one_stops_scoring_in_one_line(summed, tmp_path, capsys):
    m = load_manifest(summed)
    assert sorted(m.sha256) == ["model.int8.onnx", "model.onnx"]
    assert m.sha256["model.onnx"] == file_sha256(os.path.join(summed, "model.onnx"))
    assert json.load(open(os.path.join(summed, "manifest.json")))["sha256"] == m.sha256
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (9, 99, 200)).save(img)
    assert run_cli(capsys, "score", img, "-m", summed, "--precision", "int8")[0] == 0
    _damage(os.path.join(summed, "model.onnx"))
    code, out, err = icrt("score", img, "-m", summed)
    assert code == 2 and out == "" and len(err) == 1
    assert err[0].startswith("icrt: error: ") and "model.onnx: SHA-256" in err[0] and "copy the bundle again" in err[0]
    assert run_cli(capsys, "score", img, "-m", summed, "--precision", "int8")[0] == 0  # only the file opened counts


def test_copy_bundle_refuses_a_damaged_file_and_leaves_the_destination_alone(summed, tmp_path):
    from icrt.runtime.bundle.staging import copy_bundle

    copy_bundle(summed, tmp_path / "copy")
    assert load_manifest(str(tmp_path / "copy")).verify_files() is None
    _damage(os.path.join(summed, "model.int8.onnx"))
    with pytest.raises(BundleError, match="model.int8.onnx: SHA-256"):
        copy_bundle(summed, tmp_path / "copy2")
    assert not os.path.exists(tmp_path / "copy2")


def test_a_bundle_without_checksums_is_not_checked_and_a_malformed_entry_is_refused(tmp_path):
    b = build_bundle(str(tmp_path / "b"))
    m = load_manifest(b)
    assert m.sha256 == {} and m.verify_files() is None and "sha256" not in json.load(open(m.root + "/manifest.json"))
    d = json.load(open(os.path.join(b, "manifest.json")))
    d["sha256"] = {"model.onnx": "not hex"}
    with open(os.path.join(b, "manifest.json"), "w") as f:
        json.dump(d, f)
    with pytest.raises(BundleError, match="sha256.model.onnx: must be 64 lowercase hex digits"):
        load_manifest(b)
    d["sha256"] = {"../x": "0" * 64}
    with open(os.path.join(b, "manifest.json"), "w") as f:
        json.dump(d, f)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_manifest(b)


def test_the_default_bundle_records_every_file_it_names_and_they_match():
    m = load_manifest(os.path.join(ROOT, "runtime", "bundle", "default"))
    assert m.sha256  # the recipe records them (train/recipes/default_model.py, write_card)
    assert sorted(m.sha256) == sorted(m.named_files()) and m.verify_files() is None


def test_export_report_and_manifest_name_no_path_of_the_machine(summed, tmp_path):
    dst = tmp_path / "moved"
    shutil.copytree(summed, dst)
    assert load_manifest(str(dst)).verify_files() is None  # the sums travel with the folder: names, not paths


def test_a_named_file_without_a_digest_is_refused_when_the_others_have_one(summed, tmp_path, capsys):
    """R14: with the int8 entry deleted, the fp32 model put under model.int8.onnx ran unchecked."""
    d = json.load(open(os.path.join(summed, "manifest.json")))
    del d["sha256"]["model.int8.onnx"]
    with open(os.path.join(summed, "manifest.json"), "w") as f:
        json.dump(d, f)
    shutil.copyfile(os.path.join(summed, "model.onnx"), os.path.join(summed, "model.int8.onnx"))
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (9, 99, 200)).save(img)
    for backend in ("onnxruntime", "auto"):
        code, out, err = run_cli(capsys, "score", img, "-m", summed, "--precision", "int8", "--backend", backend)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"icrt: error: {summed}/model.int8.onnx: the manifest records the SHA-256 of its other "
                              "files but not of this one: refused")
    assert "model.int8.onnx: the manifest records" in load_manifest(summed).verify_files()
    assert run_cli(capsys, "score", img, "-m", summed)[0] == 0  # fp32 keeps its digest


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=needs("openvino", "[openvino]"))])
def test_the_engine_loads_the_bytes_that_were_checked(summed, backend, tmp_path, monkeypatch):
    """R14: the file was hashed by path, then opened again by path: exchanged in between, the other model scored."""
    import icrt.runtime.backends.onnxruntime as ort_backend
    import icrt.runtime.backends.verdict as verdict
    from icrt.runtime.backends import open_backend
    from icrt.runtime.scoring.options import ScorerOptions

    monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(verdict, "_KNOWN", {})
    m = load_manifest(summed)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 64, 64)).astype(np.float32)
    want = open_backend(m, ScorerOptions(backend="onnxruntime")).run(x)
    real = ort_backend.open_session

    def swap_then_open(*args, **kwargs):  # model.onnx exchanged for the int8 model after it was read and checked
        shutil.copyfile(os.path.join(summed, "model.int8.onnx"), os.path.join(summed, "model.onnx"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ort_backend, "open_session", swap_then_open)
    got = open_backend(load_manifest(summed), ScorerOptions(backend=backend)).run(x)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert file_sha256(os.path.join(summed, "model.onnx")) != m.sha256["model.onnx"]  # it was exchanged


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=needs("openvino", "[openvino]"))])
def test_a_model_with_external_data_is_refused_in_one_line(tmp_path, backend, monkeypatch, capsys):
    """Loaded from its checked bytes, a model's external data would be looked up in the current folder (and is not
    covered by the digests): refused, whatever is there."""
    from tests.runtime.fixtures import make_bundle
    from tests.runtime.onnx_models import copy_hostile

    b = make_bundle(tmp_path / "b")
    copy_hostile("external_data.onnx", os.path.join(b, "model.onnx"))
    monkeypatch.chdir(b)  # the data file is in the current folder too
    monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "cache"))
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (9, 99, 200)).save(img)
    code, out, err = run_cli(capsys, "score", img, "-m", b, "--backend", backend)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "the model keeps its weights in external data files, which icrt does not load" in err
