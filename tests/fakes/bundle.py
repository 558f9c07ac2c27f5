"""A small bundle to build fake TensorRT engines into (torch-free): the runtime tests' tiny ONNX model
(tests/runtime/data/tiny.onnx) when it is there, else a few placeholder bytes (the fake parser does not read the
model), under every file name a bundle with fp32 / fp16 / int8 has; the manifest is written through
runtime.bundle.manifest."""
from __future__ import annotations

import os

from icrt.runtime.bundle.manifest import EngineRecord, Manifest, write_bundle
from icrt.runtime.bundle.precisions import get_precision
from icrt.runtime.bundle.preprocessing import Preprocessing

TINY_ONNX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime", "data", "tiny.onnx")
SIZE = 64


def onnx_bytes() -> bytes:
    if os.path.isfile(TINY_ONNX):
        with open(TINY_ONNX, "rb") as f:
            return f.read()
    return b"\x08\x07placeholder onnx model"


def fake_bundle(folder: str, precisions=("fp32", "fp16", "int8"), qdq: bool = True, engines=(),
                resize: str = "square") -> str:
    """A bundle folder with the ONNX files of ``precisions`` (int8: the onnxruntime form, and with ``qdq`` the
    TensorRT Q/DQ form) and ``engines`` (EngineRecord fields as dicts; their files are written with placeholder
    bytes)."""
    os.makedirs(folder, exist_ok=True)
    data = onnx_bytes()
    files = {}
    for p in precisions:
        names = dict(get_precision(p).files)
        if p == "int8" and not qdq:
            del names["tensorrt"]
        files[p] = names
        for name in names.values():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
    for e in engines:
        with open(os.path.join(folder, e["file"]), "wb") as f:
            f.write(b"an engine built elsewhere")
    prep = (Preprocessing(resize="square", size=SIZE) if resize == "square"
            else Preprocessing(resize="patches", size=SIZE, stride=32, max_long_side=256))
    m = Manifest(kind="d2s", name="fake-trt", preprocessing=prep, files=files,
                 engines=[EngineRecord.from_dict(e) for e in engines])
    return write_bundle(folder, m)


def snapshot(folder: str) -> dict:
    """{file name: bytes} of everything in ``folder`` (to check that it was left as it was)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out
