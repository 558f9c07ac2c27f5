"""A bundle is untrusted input: file names must stay inside it, manifest values are checked when it is loaded,
and the model's input/output shapes and scores are checked when it runs.

Models here are a few ONNX nodes built with ``onnx.helper`` (no torch)."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from runtime.cli import main
from runtime.manifest import BundleError, Manifest, load_manifest
from runtime.preprocess import Preprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


# --- tiny ONNX models and bundles -----------------------------------------------------------------


def _const(name, value):
    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def tiny_onnx(path, variant="sigmoid", in_shape=("N", 3, SIZE, SIZE)):
    """image -> score. sigmoid: sigmoid(mean pixel) in (0, 1); sqrt: sqrt(mean), NaN for dark images;
    const:V: V for every image; column: [N, 1]; wide: [N, 3] declared; flat: [3N] (declared [M])."""
    all_axes = list(range(1, len(in_shape)))
    mean = lambda axes, keep=0: helper.make_node("ReduceMean", ["image"], ["m"], axes=axes, keepdims=keep)
    inits, out_shape = [], ["N"]
    if variant == "sigmoid":
        nodes = [mean(all_axes), helper.make_node("Sigmoid", ["m"], ["score"])]
    elif variant == "sqrt":
        nodes = [mean([1, 2, 3]), helper.make_node("Sqrt", ["m"], ["score"])]
    elif variant.startswith("const:"):
        inits = [_const("zero", 0.0), _const("v", float(variant[6:]))]
        nodes = [mean([1, 2, 3]), helper.make_node("Mul", ["m", "zero"], ["z"]), helper.make_node("Add", ["z", "v"], ["score"])]
    elif variant == "column":
        inits = [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])]
        nodes = [mean([1, 2, 3], 1), helper.make_node("Sigmoid", ["m"], ["s"]), helper.make_node("Reshape", ["s", "shape"], ["score"])]
        out_shape = ["N", 1]
    elif variant == "wide":
        nodes = [mean([2, 3]), helper.make_node("Sigmoid", ["m"], ["score"])]
        out_shape = ["N", 3]
    elif variant == "flat":
        inits = [helper.make_tensor("shape", TensorProto.INT64, [1], [-1])]
        nodes = [mean([2, 3]), helper.make_node("Sigmoid", ["m"], ["s"]), helper.make_node("Reshape", ["s", "shape"], ["score"])]
        out_shape = ["M"]
    else:
        raise ValueError(variant)
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def make_bundle(folder, variant="sigmoid", in_shape=("N", 3, SIZE, SIZE), files=None, score=None, **prep):
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    tiny_onnx(os.path.join(folder, "model.onnx"), variant, in_shape)
    prep = {"size": SIZE, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), **prep}
    m = Manifest(kind="d2s", name=f"tiny-{variant}", preprocessing=Preprocessing(**prep),
                 files=files or {"fp32": {"onnxruntime": "model.onnx", "tensorrt": "model.onnx"}})
    if score is not None:
        m.score = score
    m.save(folder)
    return folder


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


def icrt(*argv):
    """``python -m runtime.cli ARGV`` in a subprocess: (exit code, stdout, stderr lines)."""
    r = subprocess.run([sys.executable, "-m", "runtime.cli", *map(str, argv)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr.strip().splitlines()


def strict_json(text):
    """json.loads that refuses NaN / Infinity (not JSON, though Python's json writes them)."""
    def bad(name):
        raise ValueError(f"bare {name} in JSON output")
    return json.loads(text, parse_constant=bad)


def edit_manifest(folder, change):
    path = os.path.join(folder, "manifest.json")
    with open(path) as f:
        d = json.load(f)
    change(d)
    with open(path, "w") as f:
        json.dump(d, f)
    return folder


# --- item 2: file names stay inside the bundle ------------------------------------------------------


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "engine"])
def test_file_outside_the_bundle_is_refused(tmp_path, images, how):
    outside = tiny_onnx(tmp_path / "elsewhere.onnx")  # a working model: the old code scored with it
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
    from runtime import Scorer
    assert 0 < Scorer.load(bundle, backend="onnxruntime").score(images[0])["score"] < 1


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
    line = f"icrt: error: {bundle}/manifest.json: preprocessing.std: must be 3 positive numbers, got [0, 1, 1]"
    assert icrt("info", bundle) == (2, "", [line])
    assert icrt("score", images[0], "-m", bundle) == (2, "", [line])


def test_manifest_not_an_object_is_refused(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"manifest.json: must be a JSON object, got list"):
        load_manifest(str(bundle))


def test_shipped_and_test_bundles_validate(tmp_path):
    load_manifest(os.path.join(ROOT, "runtime", "default_bundle")).validate()
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
    from runtime import Scorer
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
    assert code == 1
    assert recs == [{"image": p, "error": error} for p in images]
    assert err == [f"icrt: {p}: {error}" for p in images] + ["icrt: 2 of 2 file(s) could not be scored"]


def test_one_bad_score_does_not_stop_the_batch(tmp_path, images):
    bundle = make_bundle(tmp_path / "b", "sqrt")  # sqrt of a negative mean (the dark image) is NaN
    code, out, err = icrt("score", *images, "-m", bundle, "--format", "json", "--batch-size", "2")
    bright, dark = strict_json(out)
    assert code == 1 and 0 < bright["score"] <= 1 and dark == {"image": images[1], "error": "model returned a non-finite score"}
    assert err == [f"icrt: {images[1]}: model returned a non-finite score", "icrt: 1 of 2 file(s) could not be scored"]


def test_scores_within_tolerance_are_clipped_and_range_comes_from_the_manifest(tmp_path, images):
    from runtime import Scorer
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
    bundle = make_bundle(tmp_path / "b", variant)
    code, out, err = icrt("score", *images, "-m", bundle, "--format", "json")
    assert (code, out, err) == (2, "", [f"icrt: error: {os.path.join(bundle, 'model.onnx')}: {words}"])
