"""Calibration for INT8 export: which images, their preprocessed inputs (the runtime's own preprocessing),
the onnxruntime.quantization data reader, the optional NVIDIA ModelOpt path, and agreement figures."""
from .images import CalibrationDataError, LabeledImage, choose, read_images
from .reader import PreprocessedImageReader, batches, load_inputs, model_inputs
from .report import agreement, label_agreement

__all__ = ["CalibrationDataError", "LabeledImage", "choose", "read_images", "PreprocessedImageReader", "batches",
           "load_inputs", "model_inputs", "agreement", "label_agreement"]
