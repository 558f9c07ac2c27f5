"""``icrt info``: what each form of a bundle costs, from the figures the bundle records."""
import shutil

from icrt.runtime.bundle.manifest import ParityFigures, load_manifest
from icrt.runtime.tools.info import model_card
from tests.runtime.fixtures import build_bundle


def test_info_says_per_form_where_it_runs_and_what_it_loses(tmp_path):
    b = build_bundle(str(tmp_path / "b"), int8=True)
    shutil.copyfile(tmp_path / "b" / "model.int8.onnx", tmp_path / "b" / "model.int8.qdq.onnx")
    m = load_manifest(b)
    m.add_file("int8", "tensorrt", "model.int8.qdq.onnx")
    m.parity = {"fp32": ParityFigures(n=113, srcc=1.0),
                "int8": ParityFigures(n=113, srcc=0.9931, forms={"tensorrt": ParityFigures(n=113, srcc=0.9975)})}
    m.model_card.heldout = {"images": 227, "fp32": {"srcc": 0.85, "mean_category_srcc": 0.862},
                            "int8": {"srcc": 0.846, "mean_category_srcc": 0.86},
                            "int8-tensorrt": {"srcc": 0.8512, "mean_category_srcc": 0.861}}
    m.save()
    text = model_card(load_manifest(b), verbose=True)
    lines = [ln.strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("forms"))
    fp32, int8, trt = lines[start + 1:start + 4]
    assert fp32.startswith("fp32") and "held-out SRCC 0.850, per category 0.862" in fp32 and "loses" not in fp32
    assert int8.startswith("int8 ") and "model.int8.onnx" in int8 and "onnxruntime and OpenVINO CPU" in int8
    assert "agrees with fp32 at SRCC 0.9931 (113 images)" in int8 and "(loses 0.004)" in int8
    assert trt.startswith("int8-tensorrt") and "model.int8.qdq.onnx" in trt and "TensorRT" in trt
    assert "agrees with fp32 at SRCC 0.9975" in trt and "(gains 0.001)" in trt


def test_info_forms_without_recorded_figures_name_the_files_only(tmp_path):
    b = build_bundle(str(tmp_path / "b"))
    text = model_card(load_manifest(b), verbose=True)
    assert "    fp32           model.onnx" in text and "agrees with" not in text and "held-out SRCC" not in text


def test_info_shows_bf16_its_parity_and_whether_it_meets_its_target(tmp_path):
    """Issue 27: bf16's agreement with fp32 is shown per form, with its targets and whether they were met."""
    b = build_bundle(str(tmp_path / "b"))
    m = load_manifest(b)
    m.add_file("bf16", "onnxruntime", "model.onnx")
    m.parity = {"bf16": ParityFigures(n=114, srcc=0.9987, max_abs_diff=0.0304, target_srcc=0.999,
                                      target_max_diff=0.01, meets_target=False, run_on="OpenVINO 2026.4.1, bf16")}
    m.save()
    lines = [ln.strip() for ln in model_card(load_manifest(b), verbose=True).splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("forms"))
    bf16 = next(ln for ln in lines[start:] if ln.startswith("bf16"))
    assert "OpenVINO" in bf16 and "agrees with fp32 at SRCC 0.9987 (114 images)" in bf16
    parity = lines[lines.index("agreement with fp32 (check images)") + 1]
    assert parity.startswith("bf16") and "max_abs_diff 0.0304" in parity
    assert "target srcc >= 0.999, max_abs_diff <= 0.01: NOT met (OpenVINO 2026.4.1, bf16)" in parity
