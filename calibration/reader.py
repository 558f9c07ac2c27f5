"""Calibration inputs: images through the runtime's own preprocessing, as onnxruntime.quantization reads them.

Patch models contribute every patch of every calibration image, exactly what the runtime feeds the model.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from icrt.runtime.bundle.manifest import INPUT_NAME
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.runtime.scoring.preprocess import load_for_model, to_model_input


def model_inputs(paths, prep: Preprocessing) -> Iterator[tuple[int, np.ndarray]]:
    """(image index, N x 3 x S x S float32) per image."""
    for i, p in enumerate(paths):
        x, _ = to_model_input(load_for_model(p, prep)[0], prep)
        yield i, x


def load_inputs(paths, prep: Preprocessing) -> np.ndarray:
    """All calibration inputs in memory (calibration sets are small: a few hundred images)."""
    return np.concatenate([x for _, x in model_inputs(paths, prep)])


try:
    from onnxruntime.quantization import CalibrationDataReader
except ImportError:  # pragma: no cover - onnxruntime is a runtime dependency
    CalibrationDataReader = object


class PreprocessedImageReader(CalibrationDataReader):
    """onnxruntime.quantization data reader over preprocessed calibration inputs (held in memory, rewindable)."""

    def __init__(self, inputs: np.ndarray, input_name: str = INPUT_NAME, batch_size: int = 16):
        self.inputs, self.input_name, self.batch_size = inputs, input_name, max(1, int(batch_size))
        self._pos = 0

    def get_next(self):
        if self._pos >= len(self.inputs):
            return None
        x = self.inputs[self._pos : self._pos + self.batch_size]
        self._pos += len(x)
        return {self.input_name: np.ascontiguousarray(x, np.float32)}

    def rewind(self):
        self._pos = 0

    def __len__(self):
        return len(self.inputs)
