"""How export builds a precision declared in ``icrt.runtime.bundle.precisions``: a builder module registers its
``build(BuildInput) -> Built`` against the precision's name (:func:`register_builder`), with an optional
``check(options)`` (run before anything slow: an ``ExportError`` for options it cannot take). Builder modules import
this module; ``icrt.export.builders`` loads the built-in ones. Export then scores every file a builder wrote on the
check images (onnxruntime CPU) and compares it with fp32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class BuildInput:
    """What a precision's builder gets."""

    fp32_path: str  # the fp32 ONNX file in the staging folder
    folder: str  # the staging folder: write the precision's files here, under the names its declaration gives
    kind: str  # the model kind (train.kinds): which ONNX nodes are the fp32 scoring tail
    prep: object  # icrt.runtime.bundle.preprocessing.Preprocessing
    options: object  # export.options.ExportOptions
    calib_items: list | None = None  # export.images.LabeledImage of the calibration images (when --calib-data)


@dataclass(frozen=True)
class Built:
    """What a builder wrote: backend form -> file name (the declaration's), details for export-report.json, and the
    manifest's calibration section when it calibrated."""

    files: dict
    details: dict = field(default_factory=dict)
    calibration: dict | None = None
    # how the files are run to measure their parity: None, onnxruntime CPU (the TensorRT form with its Q/DQ simulated);
    # else ``open(path) -> (backend, run_on text)``, the backend that computes the one file (the onnxruntime form) in
    # this precision (bf16: OpenVINO with its bf16 inference precision, which onnxruntime does not compute); it raises
    # ``PrecisionRefused`` when the backend cannot be opened for this model
    open: Callable | None = None


@dataclass(frozen=True)
class Builder:
    precision: str
    build: Callable[[BuildInput], Built]
    check: Callable | None = None


_BUILDERS: dict[str, Builder] = {}


def register_builder(precision: str, build: Callable[[BuildInput], Built], check: Callable | None = None) -> Builder:
    """Make ``build`` the writer of ``precision``'s files (``check(options)``: refuses options before any work)."""
    b = Builder(precision, build, check)
    _BUILDERS[precision] = b
    return b
