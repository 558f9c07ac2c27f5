"""Raw model outputs for tests that compare forms of one model input by input (export's own checks
score images through the runtime's Scorer; these look one level below it)."""
from __future__ import annotations

import numpy as np

from runtime.preprocess import to_model_input


def inputs_of(images, prep) -> np.ndarray:
    """Model inputs of RGB arrays (every patch of every image), concatenated."""
    return np.concatenate([to_model_input(np.asarray(img), prep)[0] for img in images])


def run_torch(module, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    from train.torch_backend import TorchBackend

    backend = TorchBackend(module)
    return np.concatenate([backend.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).astype(np.float64)


def run_onnx(path: str, x: np.ndarray, precision: str = "fp32", batch_size: int = 32) -> np.ndarray:
    from runtime.backends.onnxruntime import OrtBackend

    backend = OrtBackend.from_file(path, precision)
    return np.concatenate([backend.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).astype(np.float64)
