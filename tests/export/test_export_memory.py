"""Export's memory is bounded: int8 calibration decodes images batch by batch and gives the ranges (and files) that
every input held at once gave; its batches are sized from the model's tensors; every calibrator is fed one batch at a
time; the check set is scored in batches sized to the input."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import icrt.export.int8 as int8
from icrt.calibration.reader import ImageBatchReader, PreprocessedImageReader, load_inputs
from icrt.export.onnx_export import export_onnx
from icrt.runtime.bundle.preprocessing import Preprocessing
from icrt.train.models.d2s import D2S, D2SConfig
from tests.tiny import D2S as TINY

PREP = Preprocessing(resize="square", size=64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny D2S as fp32 ONNX, pre-processed for quantization, and 10 calibration images."""
    from tests.images import make_images

    root = tmp_path_factory.mktemp("int8cal")
    rows = make_images(root, 10)
    torch.manual_seed(0)
    fp32 = str(root / "model.onnx")
    export_onnx(D2S(D2SConfig(**TINY), load_pretrained=False).eval(), fp32, PREP.size)
    pre = str(root / "model.pre.onnx")
    int8.preprocess(fp32, pre)
    return pre, [str(root / r) for r, _, _ in rows]


def _ranges(cache: str) -> dict:
    from onnxruntime.quantization.calibrate import load_tensors_data

    return {k: tuple(np.asarray(v.range_value).tolist()) for k, v in load_tensors_data(cache).items()}


def test_streamed_minmax_calibration_gives_the_same_ranges_and_files(tiny_model, tmp_path, monkeypatch):
    """Every input held and calibrated in one go (the old way: batches of 16, no parts) and decoded per batch of 3 (4
    parts, their ranges merged) calibrate alike: the same ranges, the same file."""
    import onnxruntime.quantization as ortq

    pre, paths = tiny_model
    whole_set = ortq.quantize_static

    def in_one_go(*args, extra_options, **kwargs):
        return whole_set(*args, extra_options={k: v for k, v in extra_options.items() if k != "CalibStridedMinMax"},
                         **kwargs)

    a, b = tmp_path / "held", tmp_path / "streamed"
    with monkeypatch.context() as m:
        m.setattr(ortq, "quantize_static", in_one_go)
        held = PreprocessedImageReader(load_inputs(paths, PREP), "image", batch_size=16)
        int8.quantize(pre, f"{a}.onnx", held, "onnxruntime", cache=f"{a}.json")
    streamed = ImageBatchReader(paths, PREP, "image", batch_size=3)
    int8.quantize(pre, f"{b}.onnx", streamed, "onnxruntime", cache=f"{b}.json")
    want, got = _ranges(f"{a}.json"), _ranges(f"{b}.json")
    assert want.keys() == got.keys() and len(want) > 10
    np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-6, atol=0)
    assert (tmp_path / "held.onnx").read_bytes() == (tmp_path / "streamed.onnx").read_bytes()


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_calibrators_are_fed_one_batch_at_a_time(tiny_model, tmp_path, monkeypatch, method):
    """Entropy and percentile calibration keep every calibrated tensor of what they are fed, MinMax a range per
    tensor and batch: each gets one batch per part (onnxruntime's CalibStridedMinMax over the reader's batches)."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater, MinMaxCalibrater

    pre, paths = tiny_model
    fed = []  # inputs per collect_data call
    calibrator = MinMaxCalibrater if method == "minmax" else HistogramCalibrater
    collect = calibrator.collect_data

    def counting(self, reader):
        fed.append(0)
        get_next = reader.get_next

        def counted():
            batch = get_next()
            fed[-1] += 0 if batch is None else len(batch["image"])
            return batch

        reader.get_next = counted
        try:
            return collect(self, reader)
        finally:
            del reader.get_next

    monkeypatch.setattr(calibrator, "collect_data", counting)
    reader = ImageBatchReader(paths, PREP, "image", batch_size=4)
    int8.quantize(pre, str(tmp_path / "m.onnx"), reader, "onnxruntime", method)
    assert fed == [4, 4, 2] and len(reader) == 3
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))


def test_the_calibration_batch_fits_the_memory_budget():
    """Sized from the model's intermediate tensors (times onnxruntime's measured overhead): a graph with 1 MB of
    them per input."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 4, 128, 128])  # not counted: an input
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 4, 128, 128])
    nodes = [helper.make_node("Relu", ["image"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["score"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    assert int8.activation_bytes(model) == 2 * 4 * 128 * 128 * 4  # a and b: 256 KB each
    per_input = int8.ARENA_FACTOR * (512 << 10)
    assert int8.calibration_batch(model, budget=5 * per_input) == 5
    assert int8.calibration_batch(model, budget=per_input // 2) == 1  # never 0
    assert int8.calibration_batch(model, budget=1 << 40) == 16


def test_the_check_set_is_scored_in_batches_sized_to_the_input():
    """Batches of 32 at 384 px took 1.5 GB per form: 9 there, 32 for small inputs."""
    from icrt.export.checks import check_batch

    assert [check_batch(Preprocessing(resize="square", size=s)) for s in (64, 384, 2048)] == [32, 9, 1]
