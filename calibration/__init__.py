"""Calibration for INT8 export: which images, their preprocessed inputs (the runtime's own preprocessing),
the onnxruntime.quantization data reader, and the optional NVIDIA ModelOpt path. Agreement figures between
precisions live with the other metrics, in ``train.metrics``."""
from .images import CalibrationDataError, LabeledImage, choose, read_images
from .reader import PreprocessedImageReader, batches, load_inputs, model_inputs

__all__ = ["CalibrationDataError", "LabeledImage", "choose", "read_images", "PreprocessedImageReader", "batches",
           "load_inputs", "model_inputs"]
