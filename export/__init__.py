"""icrt export: training checkpoint -> model bundle (folded ONNX fp32 / fp16 / int8, TensorRT engines).

    python -m export --checkpoint DIR/checkpoint.pt --out BUNDLE [--fp16] [--int8 --calib-data PATH] [--trt]

See docs/export.md and docs/bundle.md.
"""
from .core import ExportError, ParityError, export_checkpoint

__all__ = ["ExportError", "ParityError", "export_checkpoint"]
