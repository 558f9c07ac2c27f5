"""How export builds a precision declared in ``runtime.precisions``: the declaration names its builder
(``build="export.int8:build"``), which takes a :class:`BuildInput` and returns :class:`Built`; the builder's module
may also define ``check(options)`` (run before anything slow, an ``ExportError`` for options it cannot take).
Export then scores every file it wrote on the check images (onnxruntime CPU) and compares it with fp32.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from icrt.runtime.precisions import Precision


@dataclass(frozen=True)
class BuildInput:
    """What a precision's builder gets."""

    fp32_path: str  # the fp32 ONNX file in the staging folder
    folder: str  # the staging folder: write the precision's files here, under the names its declaration gives
    kind: str  # the model kind (train.kinds): which ONNX nodes are the fp32 scoring tail
    prep: object  # runtime.preprocess.Preprocessing
    options: object  # export.options.ExportOptions
    calib_items: list | None = None  # export.images.LabeledImage of the calibration images (when --calib-data)


@dataclass(frozen=True)
class Built:
    """What a builder wrote: backend form -> file name (the declaration's), details for export-report.json, and the
    manifest's calibration section when it calibrated."""

    files: dict
    details: dict = field(default_factory=dict)
    calibration: dict | None = None


def builder_module(p: Precision):
    return importlib.import_module(p.build.partition(":")[0])


def build(p: Precision, inp: BuildInput) -> Built:
    """Run ``p``'s builder."""
    return getattr(builder_module(p), p.build.partition(":")[2])(inp)
