"""Calibration inputs: images through the runtime's own preprocessing, as onnxruntime.quantization reads them.

Patch models contribute every patch of every calibration image, exactly what the runtime feeds the model.
:class:`ImageBatchReader` decodes and preprocesses the images batch by batch as onnxruntime's calibrators ask for
them (export uses it: 256 images at 384 px are 450 MB of float32 inputs, and held at once they were most of an int8
export's memory); :func:`load_inputs` and :class:`PreprocessedImageReader` hold every input (tools that take one
array, such as ModelOpt, and tests).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

import icrt.runtime.scoring.preprocess as preprocess
from icrt.runtime.base.errors import UserInputError
from icrt.runtime.bundle.manifest import INPUT_NAME
from icrt.runtime.bundle.preprocessing import Preprocessing

BATCH_SIZE = 16  # model inputs per calibration batch


def model_inputs(paths, prep: Preprocessing) -> Iterator[tuple[int, np.ndarray]]:
    """(image index, N x 3 x S x S float32) per image."""
    for i, p in enumerate(paths):
        x, _ = preprocess.to_model_input(preprocess.load_for_model(p, prep)[0], prep)
        yield i, x


@contextlib.contextmanager
def calibration_errors():
    """A ValueError while decoding or preprocessing calibration images (an ImageError, one line naming the file, or a
    patch-limit error) raised as a one-line ``UserInputError("calibration: ...")``."""
    try:
        yield
    except ValueError as e:
        raise UserInputError(f"calibration: {e}") from None


def load_inputs(paths, prep: Preprocessing) -> np.ndarray:
    """All calibration inputs in memory at once (for tools that take one array)."""
    return np.concatenate([x for _, x in model_inputs(paths, prep)])


try:
    from onnxruntime.quantization import CalibrationDataReader
except ImportError:  # pragma: no cover - onnxruntime is a runtime dependency
    CalibrationDataReader = object


class ImageBatchReader(CalibrationDataReader):
    """onnxruntime.quantization data reader over calibration images, decoded and preprocessed as the calibrator asks
    for each batch: one image's pixels and one batch are held at a time. The batches are those of slicing
    :func:`load_inputs` into ``batch_size`` inputs (every patch of every image, in order; the last batch shorter).

    ``len()`` is the number of batches and ``set_range(start, end)`` limits a pass to batches ``start:end``, so that
    onnxruntime can feed a calibrator the set a part at a time (``CalibStridedMinMax``). Counting them decodes every
    image once (:meth:`count`, holding none): a bad image is then a one-line ``UserInputError`` naming it, before any
    calibration runs."""

    def __init__(self, paths, prep: Preprocessing, input_name: str = INPUT_NAME, batch_size: int = BATCH_SIZE):
        self.paths, self.prep, self.input_name = list(paths), prep, input_name
        self.batch_size = max(1, int(batch_size))
        self._counts: np.ndarray | None = None  # model inputs per image
        self._span: tuple[int, int] | None = None  # the inputs of this pass (None: all)
        self._batches = None
        # the last image decoded for a batch, (index, inputs): a pass limited by set_range starts inside the image
        # the previous pass ended in (a patch model's image spans batches), which is then not decoded again
        self._last: tuple[int, np.ndarray] | None = None

    def _inputs_of(self, i: int):
        with calibration_errors():
            return preprocess.model_inputs(preprocess.load_for_model(self.paths[i], self.prep)[0], self.prep)[0]

    def _image(self, i: int):
        """Image ``i``'s inputs for a batch, decoded unless it is the last one decoded (only that one is held)."""
        if self._last is None or self._last[0] != i:
            self._last = None  # the previous image is let go before the next is decoded
            self._last = (i, self._inputs_of(i))
        return self._last[1]

    def count(self) -> np.ndarray:
        """Model inputs per image (1 for square models, the patch count for patch models)."""
        if self._counts is None:
            self._counts = np.array([len(self._inputs_of(i)) for i in range(len(self.paths))], np.int64)
        return self._counts

    @property
    def inputs(self) -> int:
        return int(self.count().sum())

    def _generate(self, lo: int, hi: int):
        """Batches of the inputs ``lo:hi`` of the whole set (a patch model's patches made a slice at a time)."""
        ends = np.cumsum(self.count())
        i = int(np.searchsorted(ends, lo, side="right"))  # the image holding input lo, and lo's place in it
        at, x, parts, held = lo - (int(ends[i - 1]) if i else 0), None, [], 0
        while lo < hi:
            if x is None:
                x = self._image(i)
            take = min(self.batch_size - held, len(x) - at, hi - lo)
            parts.append(np.asarray(x[at:at + take], np.float32))
            held, at, lo = held + take, at + take, lo + take
            if at == len(x):
                i, at, x = i + 1, 0, None
            if held == self.batch_size or lo == hi:
                yield np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0])
                parts, held = [], 0

    def get_next(self):
        if self._batches is None:
            lo, hi = self._span or (0, self.inputs)
            self._batches = self._generate(lo, hi)
        x = next(self._batches, None)
        return None if x is None else {self.input_name: x}

    def rewind(self):
        self._span, self._batches = None, None

    def set_range(self, start_index: int, end_index: int):
        b, n = self.batch_size, self.inputs
        self._span, self._batches = (min(n, max(0, start_index) * b), min(n, end_index * b)), None

    def __len__(self):
        return -(-self.inputs // self.batch_size)


class PreprocessedImageReader(CalibrationDataReader):
    """onnxruntime.quantization data reader over preprocessed calibration inputs held in memory (rewindable; ``len()``
    and ``set_range`` in batches, as :class:`ImageBatchReader`)."""

    def __init__(self, inputs: np.ndarray, input_name: str = INPUT_NAME, batch_size: int = BATCH_SIZE):
        self.inputs, self.input_name, self.batch_size = inputs, input_name, max(1, int(batch_size))
        self._pos, self._end = 0, len(inputs)

    def get_next(self):
        if self._pos >= self._end:
            return None
        x = self.inputs[self._pos : min(self._end, self._pos + self.batch_size)]
        self._pos += len(x)
        return {self.input_name: np.ascontiguousarray(x, np.float32)}

    def rewind(self):
        self._pos, self._end = 0, len(self.inputs)

    def set_range(self, start_index: int, end_index: int):
        n = len(self.inputs)
        self._pos, self._end = min(n, max(0, start_index) * self.batch_size), min(n, end_index * self.batch_size)

    def __len__(self):
        return -(-len(self.inputs) // self.batch_size)
