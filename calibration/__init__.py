"""Calibration for INT8 export: preprocessed inputs (the runtime's own preprocessing), the
onnxruntime.quantization data reader, and the optional NVIDIA ModelOpt path. Which images calibrate an export is
export's choice (``export.images``); agreement figures between precisions live with the other metrics, in
``train.metrics``."""
from icrt.calibration.reader import ImageBatchReader, PreprocessedImageReader, load_inputs, model_inputs

__all__ = ["ImageBatchReader", "PreprocessedImageReader", "load_inputs", "model_inputs"]
