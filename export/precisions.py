"""The precisions export can write besides fp32, as a registry: name -> how to build its files.

A precision's ``build(job)`` writes its ONNX file(s) into ``job.folder`` and returns ``(files, details)``:
``files`` maps a runtime backend to the file it loads (``{"onnxruntime": ..., "tensorrt": ...}``) and
``details`` goes into export-report.json. Export then scores every file on the check set (onnxruntime CPU)
and compares it with fp32. A new precision is one module calling :func:`register_precision`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from runtime.manifest import FILE_NAMES


@dataclass(frozen=True)
class Precision:
    name: str
    build: Callable  # (job) -> (files: {backend: file name}, details: dict)
    target_srcc: float  # agreement with fp32 ONNX on the check images, image scores
    help: str = ""


PRECISIONS: dict[str, Precision] = {}


def register_precision(p: Precision) -> Precision:
    PRECISIONS[p.name] = p
    return p


def get_precision(name: str) -> Precision:
    from runtime.errors import UserInputError

    if name not in PRECISIONS:
        raise UserInputError(f"unknown precision {name!r} (export knows: {', '.join(PRECISIONS)})")
    return PRECISIONS[name]


def _fp16(job):
    from .fp16 import convert_fp16

    name = FILE_NAMES["fp16"]
    details = convert_fp16(job.fp32_path, os.path.join(job.folder, name), kind=job.source["kind"])
    return {"onnxruntime": name, "tensorrt": name}, details


def _int8(job):
    import onnx

    from calibration.reader import PreprocessedImageReader, load_inputs
    from runtime.errors import UserInputError
    from runtime.manifest import INPUT_NAME

    from .checks import data_name
    from .fp16 import tail_nodes
    from .int8 import quantize_both

    o = job.options
    if not job.calib_items:
        raise UserInputError("--int8 needs --calib-data (images to calibrate on)")
    try:
        calib_x = load_inputs([s.path for s in job.calib_items], job.prep)
    except ValueError as e:
        raise UserInputError(f"calibration: {e}") from None
    names = {"onnxruntime": FILE_NAMES["int8"], "tensorrt": FILE_NAMES["int8_qdq"]}
    forms = quantize_both(job.fp32_path, job.folder, PreprocessedImageReader(calib_x, INPUT_NAME), o.calib_method,
                          exclude_nodes=tail_nodes(onnx.load(job.fp32_path), kind=job.source["kind"]), names=names)
    if o.int8_tool == "modelopt":  # the TensorRT form from ModelOpt instead (optional extra, see calibration/)
        from calibration.modelopt import quantize_tensorrt_form

        forms["tensorrt"] = {**quantize_tensorrt_form(job.fp32_path, os.path.join(job.folder, names["tensorrt"]),
                                                      calib_x, o.calib_method, INPUT_NAME), "file": names["tensorrt"]}
    job.calibration = {"method": o.calib_method, "images": len(job.calib_items), "inputs": int(len(calib_x)),
                       "data": data_name(o.calib_data), "split": o.calib_split,
                       "split_rule": {"val_fraction": o.val_fraction, "seed": o.split_seed, "stratify": True}
                       if o.calib_split != "all" else None,
                       "tool": "onnxruntime.quantization.quantize_static", "forms": forms}
    return names, {"forms": forms}


register_precision(Precision("fp16", _fp16, 0.999, "model.fp16.onnx: fp16 weights and activations, fp32 scoring tail"))
register_precision(Precision("int8", _int8, 0.99, "model.int8.onnx (onnxruntime CPU form) and model.int8.qdq.onnx "
                                                  "(TensorRT form), calibrated on --calib-data"))
