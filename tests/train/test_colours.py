"""ColourCounts (train.models.colours): distinct colours at a few bit depths, in PyTorch and exported to ONNX."""
import math
import warnings

import numpy as np
import pytest
import torch

from icrt.train.models.colours import ColourCounts

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TFLITE = ((127 / 255,) * 3, (128 / 255,) * 3)  # x = (p - 127) / 128


def colour_counts_numpy(img, bits=(3, 4, 5)):
    """The definition: log of the number of distinct colours of uint8 pixels [H, W, 3] at k bits per channel."""
    x = img.reshape(-1, 3).astype(np.int64)
    out = []
    for k in bits:
        s = 8 - k
        q = ((x[:, 0] >> s) << (2 * k)) | ((x[:, 1] >> s) << k) | (x[:, 2] >> s)
        out.append(math.log(len(np.unique(q))))
    return np.array(out)


def images(h, w, seed=0):
    """[5, h, w, 3] uint8: noise, one flat colour, a ramp through every value of each channel, few colours, and
    smooth noise (many colours close together)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    flat = np.full((h, w, 3), (200, 17, 99), dtype=np.uint8)
    ramp = (np.arange(h * w * 3).reshape(h, w, 3) * np.array([1, 7, 13])) % 256
    few = rng.choice(np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [12, 200, 40]]), size=(h, w))
    smooth = np.clip(128 + np.cumsum(rng.integers(-3, 4, (h, w, 3)), axis=1), 0, 255)
    return np.stack([noise, flat, ramp, few, smooth]).astype(np.uint8)


def normalise(img, mean, std):
    """uint8 [N, H, W, 3] -> the model input [N, 3, H, W] float32, (p / 255 - mean) / std."""
    x = (img.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def reference(img, bits=(3, 4, 5)):
    return np.stack([colour_counts_numpy(i, bits) for i in img])


@pytest.mark.parametrize("norm", [IMAGENET, TFLITE], ids=["imagenet", "tflite"])
@pytest.mark.parametrize("bits", [(3, 4, 5), (2, 6)])
@pytest.mark.parametrize("size", [(37, 53), (64, 64)])
def test_colour_counts_match_the_numpy_definition(norm, bits, size):
    img = images(*size)
    out = ColourCounts(*norm, bits=bits)(torch.from_numpy(normalise(img, *norm)))
    want = reference(img, bits)
    assert out.dtype == torch.float32 and out.shape == (len(img), len(bits))
    np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=1e-6)
    assert np.all(out[1].numpy() == 0)  # the flat image: one colour, log 1


def test_colour_counts_are_per_image_and_recover_the_pixels_exactly():
    img = images(37, 53, seed=1)
    norm = IMAGENET
    m = ColourCounts(*norm, bits=(8,))  # 8 bits: every distinct pixel counts, so any pixel recovered wrongly shows
    together = m(torch.from_numpy(normalise(img, *norm)))
    alone = torch.cat([m(torch.from_numpy(normalise(i[None], *norm))) for i in img])
    assert torch.equal(together, alone)
    np.testing.assert_allclose(together.numpy(), reference(img, (8,)), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="bits"):
        ColourCounts(*norm, bits=(0, 3))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ColourCounts (bits 3, 4, 5) exported with the TorchScript exporter at opset 17, batch dynamic, 64x64."""
    path = str(tmp_path_factory.mktemp("colours") / "colours.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter (dynamo=False) is deprecated, and what export uses
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(ColourCounts(*IMAGENET).eval(), (torch.zeros(1, 3, 64, 64),), path, input_names=["input"],
                          output_names=["counts"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "counts": {0: "batch"}})
    return path


def test_exported_graph_scatters_without_reduction(exported):
    import onnx

    graph = onnx.load(exported).graph
    scatters = [n for n in graph.node if n.op_type in ("ScatterElements", "Scatter", "ScatterND")]
    assert [n.op_type for n in scatters] == ["ScatterElements"]  # one scatter serves every bit depth
    reductions = {a.name: onnx.helper.get_attribute_value(a) for a in scatters[0].attribute}.get("reduction", b"none")
    assert reductions == b"none"  # TensorRT's core has ScatterElements only without reduction
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # the batch stays dynamic


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_runs_the_exported_counts(exported, batch):
    import onnxruntime as ort

    img = images(64, 64, seed=2)[:batch]
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": normalise(img, *IMAGENET)})
    assert out.shape == (batch, 3)
    np.testing.assert_allclose(out, reference(img), rtol=0, atol=1e-5)


def test_openvino_runs_the_exported_counts(exported):
    ov = pytest.importorskip("openvino")

    compiled = ov.Core().compile_model(exported, "CPU")
    for batch in (1, 3):
        img = images(64, 64, seed=3)[:batch]
        out = compiled(normalise(img, *IMAGENET))[0]
        np.testing.assert_allclose(out, reference(img), rtol=0, atol=1e-5)


def test_codes_and_counts_are_integers_so_low_precision_backends_cannot_round_them(exported):
    """OpenVINO's bf16 hint runs float operations in bf16, which holds integers exactly only up to 256: the colour
    codes (up to 32767) and counts are int32 in the graph, and the counts come out right under the hint."""
    import onnx

    from icrt.runtime.base.hardware import bf16_units

    model = onnx.shape_inference.infer_shapes(onnx.load(exported))
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    scatter = next(n for n in model.graph.node if n.op_type == "ScatterElements")
    assert types[scatter.input[0]] == types[scatter.input[2]] == onnx.TensorProto.INT32
    if not bf16_units():
        pytest.skip("no bf16 units on this CPU: OpenVINO's bf16 hint would not apply")
    ov = pytest.importorskip("openvino")
    path = exported.replace(".onnx", "-tflite.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(ColourCounts(*TFLITE).eval(), (torch.zeros(1, 3, 64, 64),), path, input_names=["input"],
                          output_names=["counts"], opset_version=17, dynamo=False, dynamic_axes={"input": {0: "batch"}})
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    img = images(64, 64, seed=4)
    out = compiled(normalise(img, *TFLITE))[0]
    np.testing.assert_allclose(out, reference(img), rtol=0.01, atol=0)  # the log itself may run in bf16


def test_a_stride_counts_every_nth_pixel_of_every_nth_row():
    img = images(37, 53, seed=5)
    out = ColourCounts(*IMAGENET, bits=(3, 4, 5), stride=2)(torch.from_numpy(normalise(img, *IMAGENET)))
    np.testing.assert_allclose(out.numpy(), reference(np.ascontiguousarray(img[:, ::2, ::2])), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="stride"):
        ColourCounts(*IMAGENET, stride=0)


def test_the_graph_never_takes_the_batch_size_as_a_value(exported):
    """No Gather of a Shape (the batch size as a number): OpenVINO 2026.4 resolved such a chain to another branch's
    convolution and then dropped that convolution's bias in int8 graphs."""
    import onnx

    graph = onnx.load(exported).graph
    shapes = {n.output[0] for n in graph.node if n.op_type == "Shape"}
    assert not [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in shapes]
