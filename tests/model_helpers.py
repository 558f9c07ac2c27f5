"""Helpers for tests of torch models: raw model outputs for tests that compare forms of one model input by input
(export's own checks score images through the runtime's Scorer; these look one level below it), and a crash in
training."""
from __future__ import annotations

import numpy as np
import pytest

from icrt.runtime.scoring.preprocess import to_model_input


def inputs_of(images, prep) -> np.ndarray:
    """Model inputs of RGB arrays (every patch of every image), concatenated."""
    return np.concatenate([to_model_input(np.asarray(img), prep)[0] for img in images])


def run_torch(module, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    from icrt.train.torch_backend import TorchBackend

    backend = TorchBackend(module)
    return np.concatenate([backend.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).astype(np.float64)


def run_onnx(path: str, x: np.ndarray, precision: str = "fp32", batch_size: int = 32) -> np.ndarray:
    from icrt.runtime.backends.onnxruntime import OrtBackend

    backend = OrtBackend.from_file(path, precision)
    return np.concatenate([backend.run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).astype(np.float64)


def interrupt_after_first_epoch(trainer) -> None:
    """Run ``trainer.fit()`` and kill it (KeyboardInterrupt) once epoch 1 was saved, as a crash would."""
    calls = []
    validate = type(trainer).validate

    def crash_in_second_epoch():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return validate(trainer)

    trainer.validate = crash_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
