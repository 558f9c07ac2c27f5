"""icrt export: training checkpoint -> model bundle (folded ONNX fp32 / fp16 / int8, TensorRT engines).

    python -m export --checkpoint DIR/checkpoint.pt --out BUNDLE [--fp16] [--int8 --calib-data PATH] [--trt]

See docs/export.md and docs/bundle.md.
"""
from icrt.export.core import export_checkpoint, export_model
from icrt.export.errors import ExportError, ParityError
from icrt.export.options import ExportOptions

__all__ = ["ExportError", "ExportOptions", "ParityError", "export_checkpoint", "export_model"]
