"""Inference backends: a bundle file in, ``run(batch) -> scores`` out.

Two implementations: onnxruntime (CPU, or CUDA / TensorRT execution providers with onnxruntime-gpu) and
native TensorRT engines. ``open_backend(manifest, "auto", ...)`` tries TensorRT, then onnxruntime with GPU
providers, then onnxruntime on CPU, and remembers why each earlier choice was passed over.
"""
from __future__ import annotations

import numpy as np

BACKEND_CHOICES = ("auto", "onnxruntime", "tensorrt")


class BackendError(RuntimeError):
    """The requested backend or precision cannot run here; the message says why and what to do."""


class Backend:
    """What the scorer needs from an inference engine."""

    name = "?"
    precision = "fp32"
    device = "cpu"
    max_batch: int | None = None  # largest batch the engine accepts (None: any)
    file = ""
    notes: list

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x S x S float32 -> N float32 scores."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"backend": self.name, "precision": self.precision, "device": self.device, "file": self.file,
                "max_batch": self.max_batch, "notes": list(getattr(self, "notes", []))}


def open_backend(manifest, backend: str = "auto", precision: str = "fp32", threads: int | None = None,
                 device_id: int = 0) -> Backend:
    """Open ``precision`` of the bundle on ``backend`` (auto: TensorRT, then ORT GPU, then ORT CPU)."""
    from ..manifest import PRECISIONS

    if backend not in BACKEND_CHOICES:
        raise BackendError(f"unknown backend {backend!r} (choose from {', '.join(BACKEND_CHOICES)})")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if backend == "tensorrt":
        from .tensorrt import TensorRTBackend
        return TensorRTBackend.open(manifest, precision, device_id=device_id)
    if backend == "onnxruntime":
        from .onnxruntime import OrtBackend
        return OrtBackend.open(manifest, precision, threads=threads, device_id=device_id)
    passed_over = []
    from .tensorrt import TensorRTBackend, tensorrt_available
    if tensorrt_available():
        try:
            return TensorRTBackend.open(manifest, precision, device_id=device_id)
        except BackendError as e:
            passed_over.append(f"tensorrt: {e}")
    else:
        passed_over.append("tensorrt: not installed")
    from .onnxruntime import OrtBackend, gpu_providers
    if gpu_providers():
        try:
            return OrtBackend.open(manifest, precision, gpu=True, threads=threads, device_id=device_id,
                                   notes=passed_over)
        except BackendError as e:
            passed_over.append(f"onnxruntime-gpu: {e}")
    else:
        passed_over.append("onnxruntime GPU providers: not available")
    return OrtBackend.open(manifest, precision, gpu=False, threads=threads, notes=passed_over)
