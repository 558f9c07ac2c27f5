"""The parity stage of export: how closely each form of the model agrees with its reference on the check images.

fp32 ONNX is held to PyTorch per model input (the gate: ``ParityError`` beyond the tolerance); every other
precision is compared with fp32 ONNX per image (SRCC against its declared target, ``runtime.bundle.precisions``), and each
extra file of a precision (the TensorRT form of int8) too. With labels, each also gets its agreement with them.
"""
from __future__ import annotations

import numpy as np

from icrt.export.checks import CheckSet, Scores
from icrt.runtime.bundle.precisions import get_precision


def figures(ref: np.ndarray, scores: np.ndarray, labels) -> dict:
    from icrt.train.metrics import agreement, label_agreement

    d = agreement(ref, scores)
    if labels is not None:
        d.update(label_agreement(scores, labels))
    return d


# How each backend form of a precision is scored on the check set (onnxruntime CPU, this machine): the
# onnxruntime form as `icrt score` runs it; the TensorRT form with its Q/DQ simulated in fp32, the arithmetic
# TensorRT runs (int32 accumulation) rather than this CPU's integer kernels (which add u8 x s8 pairs in 16
# bits on CPUs without VNNI; export/int8.py).
RUN_ON = {"onnxruntime": "onnxruntime CPU kernels", "tensorrt": "onnxruntime CPU, Q/DQ simulated in fp32"}


def parity_figures(torch_scores: Scores, fp32: Scores, built: dict, checks: CheckSet, tolerance: float) -> dict:
    """precision -> figures (plain dicts, as export-report.json holds them). ``built``: precision -> (files,
    {form: Scores of that form's file}, how the onnxruntime form was run: None for onnxruntime CPU)."""
    from icrt.runtime.base.hardware import describe

    cpu = describe()
    labels = checks.labels
    diff = float(np.abs(fp32.inputs - torch_scores.inputs).max())
    parity = {"fp32": {**figures(torch_scores.images, fp32.images, labels), "reference": "pytorch",
                       "input_max_abs_diff": diff, "tolerance": tolerance, "passed": diff <= tolerance}}
    for name, (files, scores, run_on) in built.items():
        p = get_precision(name)
        target = p.target_srcc
        fig = {**figures(fp32.images, scores["onnxruntime"].images, labels), "reference": "fp32 onnx",
               "file": files["onnxruntime"], "target_srcc": target, "run_on": run_on or RUN_ON["onnxruntime"],
               "cpu": cpu}
        fig["meets_target"] = fig["srcc"] is not None and fig["srcc"] >= target
        if p.target_max_diff is not None:  # bf16: also no single score further than this from fp32's
            fig["target_max_diff"] = p.target_max_diff
            fig["meets_target"] = fig["meets_target"] and fig["max_abs_diff"] <= p.target_max_diff
        for form, s in scores.items():
            if form != "onnxruntime":
                fig[f"{form}_form"] = {**figures(fp32.images, s.images, labels), "file": files[form],
                                       "run_on": RUN_ON.get(form, RUN_ON["onnxruntime"])}
        parity[name] = fig
    if labels is not None:
        base = parity["fp32"].get("label_srcc")
        for name, fig in parity.items():
            for f in [fig] + [v for k, v in fig.items() if k.endswith("_form")]:
                if name != "fp32" and base is not None and f.get("label_srcc") is not None:
                    f["label_srcc_drop"] = base - f["label_srcc"]
    return parity
