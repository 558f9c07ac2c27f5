"""A bundle is untrusted input: file names must stay inside it, manifest values are checked when it is loaded,
and the model's input/output shapes and scores are checked when it runs.

Models here are a few ONNX nodes, committed (tests/runtime/data/nodes, written with ``onnx.helper`` by
data/make_tiny_models.py)."""
import json
import os
import re

import pytest
from PIL import Image

from icrt.runtime.bundle.manifest import INPUT_NAME, BundleError, Manifest, load_manifest, write_bundle
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.runtime.cli import main
from tests.runtime.fixtures import ROOT, SIZE, edit_manifest, make_bundle, node_model
from tests.runtime.fixtures import icrt_lines as icrt


@pytest.fixture
def images(tmp_path):
    """A bright and a dark image (the sqrt model gives the dark one NaN)."""
    paths = []
    for name, value in (("bright.png", 230), ("dark.png", 20)):
        p = tmp_path / "imgs" / name
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (40, 30), (value, value, value)).save(p)
        paths.append(str(p))
    return paths


def strict_json(text):
    """json.loads that refuses NaN / Infinity (not JSON, though Python's json writes them)."""
    def bad(name):
        raise ValueError(f"bare {name} in JSON output")
    return json.loads(text, parse_constant=bad)


# --- item 2: file names stay inside the bundle ------------------------------------------------------


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "engine"])
def test_file_outside_the_bundle_is_refused(tmp_path, images, how):
    outside = node_model(tmp_path / "elsewhere.onnx")  # a working model: the old code scored with it
    bundle = make_bundle(tmp_path / "b")
    key = "files.fp32.onnxruntime"
    if how == "dotdot":
        edit_manifest(bundle, lambda d: d["files"]["fp32"].update(onnxruntime="../elsewhere.onnx"))
    elif how == "absolute":
        edit_manifest(bundle, lambda d: d["files"]["fp32"].update(onnxruntime=outside))
    elif how == "symlink":
        os.symlink(outside, os.path.join(bundle, "linked.onnx"))
        edit_manifest(bundle, lambda d: d["files"]["fp32"].update(onnxruntime="linked.onnx"))
    else:
        key = "engines[0].file"
        edit_manifest(bundle, lambda d: d.update(engines=[{"precision": "fp32", "file": "../../etc/passwd",
                                                           "tensorrt": "10.3.0", "compute_capability": "8.7"}]))
    with pytest.raises(BundleError) as e:
        load_manifest(bundle)
    msg = str(e.value)
    assert msg.startswith(os.path.join(bundle, "manifest.json") + f": {key}: ") and "outside the bundle" in msg
    code, out, err = icrt("score", images[0], "-m", bundle, "--backend", "onnxruntime")
    assert (code, out, err) == (2, "", [f"icrt: error: {msg}"])


def test_symlink_inside_the_bundle_is_fine(tmp_path, images):
    bundle = make_bundle(tmp_path / "b")
    os.symlink("model.onnx", os.path.join(bundle, "alias.onnx"))
    edit_manifest(bundle, lambda d: d["files"]["fp32"].update(onnxruntime="alias.onnx"))
    from icrt.runtime import Scorer
    assert 0 < Scorer.load(bundle, backend="onnxruntime").score(images[0])["score"] < 1


def test_a_files_entry_whose_file_is_missing_is_refused(tmp_path, images):
    """A manifest that lists a form the bundle does not carry (as the default bundle once listed its TensorRT
    int8 form) is a broken bundle: refused when loaded, with one line naming the entry."""
    bundle = make_bundle(tmp_path / "b")
    edit_manifest(bundle, lambda d: d["files"].update(int8={"onnxruntime": "model.onnx",
                                                            "tensorrt": "model.int8.qdq.onnx"}))
    with pytest.raises(BundleError) as e:
        load_manifest(bundle)
    assert str(e.value) == (os.path.join(bundle, "manifest.json") + ": files.int8.tensorrt: names "
                            '"model.int8.qdq.onnx", which is not in the bundle')
    code, out, err = icrt("info", bundle)
    assert (code, out, err) == (2, "", [f"icrt: error: {e.value}"])


def test_copy_bundle_copies_exactly_what_the_manifest_names(tmp_path):
    from icrt.runtime.bundle.staging import copy_bundle

    src = make_bundle(tmp_path / "src")
    for junk in ("notes.txt", "model.int8.onnx", "timing.trt10.sm87.cache"):
        (tmp_path / "src" / junk).write_text("not part of the bundle")
    (tmp_path / "src" / "export-report.json").write_text("{}")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "manifest.json").write_text("{}")  # an old bundle there is replaced as a whole
    (dst / "old.onnx").write_text("old")
    copy = copy_bundle(src, str(dst))
    assert sorted(os.listdir(dst)) == ["export-report.json", "manifest.json", "model.onnx"]
    assert copy.root == str(dst) and load_manifest(str(dst)).to_dict() == load_manifest(src).to_dict()
    assert sorted(os.listdir(tmp_path)) == ["dst", "src"]  # no temporary folder left
    edit_manifest(src, lambda d: d["files"]["fp32"].update(tensorrt="gone.onnx"))
    with pytest.raises(BundleError, match="gone.onnx"):
        copy_bundle(src, str(dst))
    assert sorted(os.listdir(dst)) == ["export-report.json", "manifest.json", "model.onnx"]


# --- item 3: manifest values are checked once, at load ----------------------------------------------


def _prep(**kw):
    return lambda d: d["preprocessing"].update(kw)


BAD_MANIFESTS = [
    # (id, change, field named in the one-line error)
    ("huge size", _prep(size=100000), "preprocessing.size"),
    ("zero size", _prep(size=0), "preprocessing.size"),
    ("negative size", _prep(size=-32), "preprocessing.size"),
    ("fractional size", _prep(size=32.5), "preprocessing.size"),
    ("string size", _prep(size="32"), "preprocessing.size"),
    ("zero std", _prep(std=[0, 1, 1]), "preprocessing.std"),
    ("negative std", _prep(std=[0.2, -0.2, 0.2]), "preprocessing.std"),
    ("nan mean", _prep(mean=[float("nan"), 0.5, 0.5]), "preprocessing.mean"),
    ("five means", _prep(mean=[0.5] * 5), "preprocessing.mean"),
    ("mean in 0-255", _prep(mean=[124, 116, 104]), "preprocessing.mean"),
    ("string std", _prep(std="0.5"), "preprocessing.std"),
    ("unknown resize", _prep(resize="zoom"), "preprocessing.resize"),
    ("unknown interpolation", _prep(interpolation="lanczos9"), "preprocessing.interpolation"),
    ("unknown pool", _prep(pool="max"), "preprocessing.pool"),
    ("zero stride", _prep(resize="patches", stride=0), "preprocessing.stride"),
    ("negative stride", _prep(stride=-4), "preprocessing.stride"),
    ("stride over size", _prep(resize="patches", stride=64), "preprocessing.stride"),
    # N13: checked as float32 in a sane range; a patch stride of at least size / 8
    ("huge std", _prep(std=[1e300] * 3), "preprocessing.std"),
    ("tiny std", _prep(std=[1e-50] * 3), "preprocessing.std"),
    ("std over 10", _prep(std=[11.0, 0.5, 0.5]), "preprocessing.std"),
    ("std under 0.001", _prep(std=[0.5, 0.0009, 0.5]), "preprocessing.std"),
    ("stride 1", _prep(resize="patches", stride=1), "preprocessing.stride"),
    ("stride under size / 8", _prep(resize="patches", stride=3), "preprocessing.stride"),
    ("long side under size", _prep(resize="patches", stride=16, max_long_side=8), "preprocessing.max_long_side"),
    ("preprocessing a string", lambda d: d.update(preprocessing="square"), "preprocessing"),
    ("preprocessing missing", lambda d: d.pop("preprocessing"), "preprocessing"),
    ("files a list", lambda d: d.update(files=["model.onnx"]), "files"),
    ("files entry a string", lambda d: d.update(files={"fp32": "model.onnx"}), "files.fp32"),
    ("file name a number", lambda d: d.update(files={"fp32": {"onnxruntime": 5}}), "files.fp32.onnxruntime"),
    ("unknown precision", lambda d: d.update(files={"fp64": {"onnxruntime": "model.onnx"}}), "files"),
    ("engines a string", lambda d: d.update(engines="engine.plan"), "engines"),
    ("engine a string", lambda d: d.update(engines=["engine.plan"]), "engines[0]"),
    ("engine batch 0", lambda d: d.update(engines=[{"precision": "fp16", "file": "e.plan", "tensorrt": "10.3.0",
                                                    "compute_capability": "8.7", "max_batch": 0}]), "engines[0].max_batch"),
    ("engine batches unordered", lambda d: d.update(engines=[{"precision": "fp16", "file": "e.plan", "tensorrt": "10.3.0",
                                                              "compute_capability": "8.7", "min_batch": 8, "max_batch": 4}]),
     "engines[0]"),
    ("engine no version", lambda d: d.update(engines=[{"precision": "fp16", "file": "e.plan",
                                                       "compute_capability": "8.7"}]), "engines[0].tensorrt"),
    ("kind a number", lambda d: d.update(kind=5), "kind"),
    ("input name a number", lambda d: d["input"].update(name=3), "input.name"),
    ("score output null", lambda d: d["outputs"].update(score=None), "outputs.score"),
    ("score range reversed", lambda d: d["score"].update(range=[1, 0]), "score.range"),
    ("model card a list", lambda d: d.update(model_card=["x"]), "model_card"),
    ("input a list", lambda d: d.update(input=["image"]), "input"),
    ("input shape of another size", lambda d: d["input"].update(shape=[None, 3, 64, 64]), "input.shape"),
    ("input shape with 4 channels", lambda d: d["input"].update(shape=[None, 4, SIZE, SIZE]), "input.shape"),
    ("input shape of 3 dims", lambda d: d["input"].update(shape=[None, 3, SIZE]), "input.shape"),
    ("input shape batch a string", lambda d: d["input"].update(shape=["N", 3, SIZE, SIZE]), "input.shape"),
    ("input shape batch 0", lambda d: d["input"].update(shape=[0, 3, SIZE, SIZE]), "input.shape"),
    ("input shape side a float", lambda d: d["input"].update(shape=[None, 3, 32.0, SIZE]), "input.shape"),
    ("input shape a string", lambda d: d["input"].update(shape="NCHW"), "input.shape"),
    ("input dtype float16", lambda d: d["input"].update(dtype="float16"), "input.dtype"),
    ("input layout NHWC", lambda d: d["input"].update(layout="NHWC"), "input.layout"),
]


@pytest.mark.parametrize("change,field", [b[1:] for b in BAD_MANIFESTS], ids=[b[0] for b in BAD_MANIFESTS])
def test_bad_manifest_value_is_one_line_naming_the_field(tmp_path, capsys, change, field):
    bundle = edit_manifest(make_bundle(tmp_path / "b"), change)
    with pytest.raises(BundleError) as e:
        load_manifest(bundle)
    msg = str(e.value)
    assert msg.startswith(os.path.join(bundle, "manifest.json") + f": {field}: ") and "\n" not in msg
    assert main(["info", bundle]) == 2  # icrt info uses the same validation
    out, err = capsys.readouterr()
    assert out == "" and err == f"icrt: error: {msg}\n"


def test_bad_manifest_exits_2_with_the_example_line(tmp_path, images):
    bundle = edit_manifest(make_bundle(tmp_path / "b"), _prep(std=[0, 1, 1]))
    line = f"icrt: error: {bundle}/manifest.json: preprocessing.std: must be 3 numbers in [0.001, 10] (as float32), got [0, 1, 1]"
    assert icrt("info", bundle) == (2, "", [line])
    assert icrt("score", images[0], "-m", bundle) == (2, "", [line])


def test_input_shape_line_names_the_expected_shape(tmp_path):
    bundle = edit_manifest(make_bundle(tmp_path / "b"), lambda d: d["input"].update(shape=[None, 3, 64, 64]))
    with pytest.raises(BundleError) as e:
        load_manifest(bundle)
    assert str(e.value) == (f"{bundle}/manifest.json: input.shape: must be [null or batch, 3, 32, 32] "
                            "(preprocessing.size 32), got [null, 3, 64, 64]")


@pytest.mark.parametrize("change", [
    lambda d: d.update(input={"name": "image"}),  # older bundles: no shape, dtype or layout
    lambda d: d.pop("input"),
    lambda d: d["input"].update(shape=[8, 3, SIZE, SIZE]),  # a fixed batch is still an N x 3 x S x S input
], ids=["name only", "no input", "fixed batch"])
def test_input_shape_dtype_layout_may_be_missing(tmp_path, change):
    bundle = edit_manifest(make_bundle(tmp_path / "b"), change)
    m = load_manifest(bundle)
    assert m.input_name == INPUT_NAME and m.to_dict()["input"] == {
        "name": "image", "shape": [None, 3, SIZE, SIZE], "dtype": "float32", "layout": "NCHW"}


# --- the manifest module is the one reader and writer: typed sections, nothing lost on a round trip -------------


def test_shipped_manifest_round_trips_unchanged():
    path = os.path.join(ROOT, "runtime", "bundle", "default", "manifest.json")
    with open(path) as f:
        d = json.load(f)
    m = Manifest.from_dict(d, os.path.dirname(path))
    assert m.to_dict() == d
    assert json.dumps(m.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)


def test_unknown_keys_and_nulls_survive_load_and_save(tmp_path):
    def add(d):
        d["future_section"] = {"anything": [1, 2]}
        d["parity"] = {"fp32": {"n": 4, "srcc": None, "label_srcc": None, "new_figure": 0.5},
                       "int8": {"srcc": 0.99, "tensorrt_form": {"srcc": 0.98, "run_on": "x", "more": 1},
                                "onnxruntime_form": {"srcc": 0.97}}}
        d["calibration"] = {"method": "minmax", "split_rule": None, "new_field": {"a": 1}}
        d["model_card"] = {"summary": "s", "val_metrics": None, "figures": {"srcc": 0.8}, "extra": "a key named extra"}
        d["engines"] = [{"precision": "fp16", "file": "e.plan", "tensorrt": "10.3.0", "compute_capability": "8.7",
                         "future_flag": True}]
        d["versions"] = {"icrt": "0.1.0"}

    bundle = edit_manifest(make_bundle(tmp_path / "b"), add)
    with open(os.path.join(bundle, "manifest.json")) as f:
        before = json.load(f)
    m = load_manifest(bundle)
    assert m.to_dict() == before
    m.save()
    with open(os.path.join(bundle, "manifest.json")) as f:
        assert json.load(f) == before
    assert m.parity["fp32"].srcc is None and m.parity["fp32"].extra == {"srcc": None, "label_srcc": None,
                                                                         "new_figure": 0.5}
    assert m.parity["int8"].forms["tensorrt"].srcc == 0.98 and m.parity["int8"].forms["onnxruntime"].srcc == 0.97
    assert m.parity["int8"].forms["tensorrt"].extra == {"more": 1}
    assert m.model_card.extra == {"val_metrics": None, "figures": {"srcc": 0.8}, "extra": "a key named extra"}
    assert m.engines[0].extra == {"future_flag": True} and m.extra == {"future_section": {"anything": [1, 2]}}


def test_sections_are_plain_typed_objects_read_by_attribute():
    from icrt.runtime.bundle.manifest import Calibration, EngineRecord, ModelCard, ParityFigures, ScoreSpec

    d = {"format": "icrt-bundle/1", "kind": "d2s", "name": "x", "preprocessing": {"size": SIZE},
         "files": {"fp32": {"onnxruntime": "model.onnx", "tensorrt": "model.onnx"}},
         "engines": [{"precision": "fp32", "file": "e.plan", "tensorrt": "10.3.0", "compute_capability": "8.7",
                      "max_batch": 16}],
         "parity": {"fp32": {"srcc": 1.0, "passed": True}, "int8": {"srcc": 0.99, "tensorrt_form": {"srcc": 0.98}}},
         "calibration": {"method": "minmax", "images": 8}, "model_card": {"summary": "tiny", "figures": [1]}}
    m = Manifest.from_dict(d)
    assert isinstance(m.preprocessing, Preprocessing) and m.input_size == SIZE and isinstance(m.score, ScoreSpec)
    assert isinstance(m.engines[0], EngineRecord) and isinstance(m.parity["int8"], ParityFigures)
    assert isinstance(m.calibration, Calibration) and isinstance(m.model_card, ModelCard)
    assert m.files["fp32"] == {"onnxruntime": "model.onnx", "tensorrt": "model.onnx"} and m.precisions() == ["fp32"]
    assert m.engines[0].max_batch == 16 and m.engines[0].opt_batch is None and m.parity["fp32"].passed is True
    assert m.parity["int8"].forms["tensorrt"].srcc == 0.98 and m.calibration.images == 8
    assert m.score.range == (0.0, 1.0) and m.model_card.summary == "tiny" and m.model_card.extra == {"figures": [1]}
    m.model_card.checkpoint = "c.pt"
    m.model_card.update({"licence": "MIT", "new": 1})
    assert m.model_card.to_dict() == {"figures": [1], "new": 1, "summary": "tiny", "licence": "MIT", "checkpoint": "c.pt"}
    m.add_file("int8", "onnxruntime", "model.int8.onnx")
    assert m.file_name("int8") == "model.int8.onnx" and m.precisions() == ["fp32", "int8"]
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))).to_dict() == m.to_dict()  # plain JSON all the way


@pytest.mark.parametrize("section, value, words", [
    ("parity", {"fp32": {"srcc": "high"}}, "parity.fp32.srcc: must be a finite number"),
    ("parity", {"fp32": 0.9}, "parity.fp32: must be an object"),
    ("parity", {"int8": {"tensorrt_form": {"passed": "yes"}}}, "parity.int8.tensorrt_form.passed: must be true or false"),
    ("calibration", {"images": -1}, "calibration.images: must be a whole number >= 0"),
    ("engines", [{"precision": "fp16", "file": "e.plan", "tensorrt": "10.3.0", "compute_capability": "8.7",
                  "gpu": 5}], "engines[0].gpu: must be a non-empty string"),
])
def test_sections_check_their_fields_as_they_are_built(tmp_path, section, value, words):
    bundle = edit_manifest(make_bundle(tmp_path / "b"), lambda d: d.update({section: value}))
    with pytest.raises(BundleError, match=re.escape(words)):
        load_manifest(bundle)


def test_save_validates_first_and_writes_atomically(tmp_path):
    bad = Manifest(kind="d2s", name="x", preprocessing=Preprocessing(size=SIZE),
                   files={"fp32": {"onnxruntime": "../outside.onnx"}})
    with pytest.raises(BundleError, match=r"files\.fp32\.onnxruntime: .* outside the bundle"):
        bad.save(str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "manifest.json").exists()
    folder = tmp_path / "new" / "bundle"  # made when missing
    good = Manifest(kind="d2s", name="x", preprocessing=Preprocessing(size=SIZE))
    assert write_bundle(str(folder), good) == str(folder) and good.root == str(folder)
    assert os.listdir(folder) == ["manifest.json"]  # no temporary file left behind
    assert load_manifest(str(folder)).to_dict() == good.to_dict()


def test_manifest_not_an_object_is_refused(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"manifest.json: must be a JSON object, got list"):
        load_manifest(str(bundle))


def test_shipped_and_test_bundles_validate(tmp_path):
    load_manifest(os.path.join(ROOT, "runtime", "bundle", "default")).validate()
    load_manifest(make_bundle(tmp_path / "sq")).validate()
    load_manifest(make_bundle(tmp_path / "p", resize="patches", stride=16, max_long_side=256)).validate()
    Manifest(kind="d2s", name="x", preprocessing=Preprocessing(size=16, stride=64)).validate()  # square: stride unused


@pytest.mark.parametrize("in_shape,words", [
    (("N", 3, 64, 64), "has shape ['N', 3, 64, 64]; the manifest expects [N, 3, 32, 32]"),
    (("N", 4, SIZE, SIZE), "has shape ['N', 4, 32, 32]"),
    (("N", 3, SIZE), "has shape ['N', 3, 32]"),
])
def test_onnx_input_shape_must_match_preprocessing(tmp_path, images, in_shape, words):
    bundle = make_bundle(tmp_path / "b", in_shape=in_shape)
    code, out, err = icrt("score", images[0], "-m", bundle, "--backend", "onnxruntime")
    assert code == 2 and out == "" and len(err) == 1
    assert err[0].startswith(f"icrt: error: {os.path.join(bundle, 'model.onnx')}: input 'image' ") and words in err[0]


def test_dynamic_spatial_input_is_accepted(tmp_path, images):
    from icrt.runtime import Scorer
    bundle = make_bundle(tmp_path / "b", in_shape=("N", 3, "H", "W"))
    assert 0 < Scorer.load(bundle, backend="onnxruntime").score(images[0])["score"] < 1


# --- item 4: model outputs are checked ----------------------------------------------------------------


@pytest.mark.parametrize("variant,error", [
    ("const:nan", "model returned a non-finite score"),
    ("const:inf", "model returned a non-finite score"),
    ("const:1e30", "score 1e+30 outside the model's range [0, 1]"),
    ("const:-1e30", "score -1e+30 outside the model's range [0, 1]"),
    ("const:1.5", "score 1.5 outside the model's range [0, 1]"),
])
def test_bad_scores_are_per_image_errors_and_json_stays_json(tmp_path, images, variant, error):
    bundle = make_bundle(tmp_path / "b", variant)
    code, out, err = icrt("score", *images, "-m", bundle, "--format", "json")
    recs = strict_json(out)
    nan = "non-finite" in error  # every image NaN/inf: the model is broken (R13), exit 2
    assert code == (2 if nan else 1)
    assert recs == [{"image": p, "error": error} for p in images]
    assert err == [f"icrt: {p}: {error}" for p in images] + ["icrt: 2 of 2 file(s) could not be scored"] + (
        ["icrt: error: the model gave a non-finite score (NaN or infinity) for every image it scored (2 of them): "
         "the model is broken, not the images (each has its own error record)"] if nan else [])


def test_one_bad_score_does_not_stop_the_batch(tmp_path, images):
    bundle = make_bundle(tmp_path / "b", "sqrt")  # sqrt of a negative mean (the dark image) is NaN
    code, out, err = icrt("score", *images, "-m", bundle, "--format", "json", "--batch-size", "2")
    bright, dark = strict_json(out)
    assert code == 1 and 0 < bright["score"] <= 1 and dark == {"image": images[1], "error": "model returned a non-finite score"}
    assert err == [f"icrt: {images[1]}: model returned a non-finite score", "icrt: 1 of 2 file(s) could not be scored"]


def test_scores_within_tolerance_are_clipped_and_range_comes_from_the_manifest(tmp_path, images):
    from icrt.runtime import Scorer
    s = Scorer.load(make_bundle(tmp_path / "a", "const:1.0005"), backend="onnxruntime")
    assert s.score(images[0])["score"] == 1.0
    s = Scorer.load(make_bundle(tmp_path / "b", "const:7", score={"range": [0, 10]}), backend="onnxruntime")
    assert s.score(images[0])["score"] == pytest.approx(7.0)
    s = Scorer.load(make_bundle(tmp_path / "c", "const:12", score={"range": [0, 10]}), backend="onnxruntime")
    assert s.score_many(images[:1])[0]["error"] == "score 12 outside the model's range [0, 10]"


def test_batch_by_one_column_output_is_fine(tmp_path, images):
    code, out, _ = icrt("score", *images, "-m", make_bundle(tmp_path / "b", "column"), "--format", "json")
    assert code == 0 and all(0 < r["score"] < 1 for r in strict_json(out))


@pytest.mark.parametrize("variant,words", [
    ("wide", "output 'score' has shape ['N', 3]; the score output must be [batch] or [batch, 1]"),  # declared
    ("flat", "output 'score' has shape [6] for a batch of 2; the score output must be [batch] or [batch, 1]"),  # at run
])
def test_wrongly_shaped_output_is_a_bundle_error(tmp_path, images, variant, words):
    bundle = make_bundle(tmp_path / "b", variant)  # onnxruntime's words (OpenVINO's: tests/runtime/backends/test_openvino.py)
    code, out, err = icrt("score", *images, "-m", bundle, "--format", "json", "--backend", "onnxruntime")
    assert (code, out, err) == (2, "", [f"icrt: error: {os.path.join(bundle, 'model.onnx')}: {words}"])


def test_deeply_nested_manifest_is_one_line(tmp_path, capsys):
    """N10/N11: a manifest nested 100,000 deep is one line (json's RecursionError caught), for info and score."""
    bundle = make_bundle(tmp_path / "b")
    with open(os.path.join(bundle, "manifest.json"), "w") as f:
        f.write('{"format": "icrt-bundle/1", "model_card": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert main(["info", bundle]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "nested too deeply" in err


def test_extreme_std_values_are_refused_not_scored(tmp_path, images):
    """N13: std 1e300 (overflows float32: every image the same score) and 1e-50 (0 in float32) are bundle errors."""
    for std in (1e300, 1e-50):
        bundle = edit_manifest(make_bundle(tmp_path / f"b{std}"), _prep(std=[std] * 3))
        code, out, err = icrt("score", images[0], "-m", bundle)
        assert code == 2 and out == "" and len(err) == 1 and "preprocessing.std" in err[0]


@pytest.mark.parametrize("draft", [0, 0.05, 2, "half", None])
def test_a_jpeg_draft_outside_its_range_is_a_bundle_error(tmp_path, draft):
    bundle = make_bundle(tmp_path / "b")
    edit_manifest(bundle, lambda d: d["preprocessing"].update(draft=draft))
    with pytest.raises(BundleError, match=r"preprocessing\.draft: must be a number in \[0.125, 1.0\]"):
        load_manifest(bundle)
    edit_manifest(bundle, lambda d: d["preprocessing"].update(draft=0.5))
    assert load_manifest(bundle).preprocessing.draft == 0.5
