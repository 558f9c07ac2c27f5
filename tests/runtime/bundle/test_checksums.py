"""A bundle records the SHA-256 of every file it names; the runtime checks the file it opens, and a bundle copied
with a damaged file is refused in one line."""
import json
import os
import shutil

import pytest

from icrt.runtime.base.errors import BundleError
from icrt.runtime.bundle.manifest import file_sha256, load_manifest
from tests.runtime.fixtures import ROOT, build_bundle, run_cli
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
