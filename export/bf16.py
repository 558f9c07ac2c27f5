"""The bf16 precision's builder: nothing to write (bf16 is model.onnx computed in bfloat16, by OpenVINO on CPUs with
bf16 units and by TensorRT 10 engines), only its parity to measure, which needs OpenVINO on such a CPU: export runs
the fp32 file with OpenVINO's bf16 inference precision on the check images and holds it to fp32 (SRCC and the
largest per-image difference, the precision table's targets)."""
from __future__ import annotations

from icrt.export.precisions import Built, register_builder


def check(o) -> None:
    """ExportError for --bf16 where its parity cannot be measured: no OpenVINO, or a CPU without bf16 units."""
    from icrt.export.errors import ExportError
    from icrt.runtime.backends.base import installed
    from icrt.runtime.base.hardware import BF16_UNITS, bf16_units, cpu_features

    if not o.bf16:
        return
    if not installed("openvino"):
        from icrt.runtime.base.install import extra_hint

        raise ExportError(f"--bf16 measures its parity with OpenVINO, which is not installed: {extra_hint('openvino')}")
    if not bf16_units():
        raise ExportError(f"--bf16 measures its parity with OpenVINO on a CPU with {' or '.join(BF16_UNITS)}; this "
                          f"one has {' '.join(cpu_features()) or 'none of them'} (export on such a CPU, or leave bf16 "
                          "out: fp32 is the same file)")


def opener(prep, name: str = "bf16"):
    """``open(path) -> (backend, run_on text)``: the file opened by OpenVINO in precision ``name`` as the runtime opens
    it (uint8 pixels, the bundle's normalisation), its probe included; ``PrecisionRefused`` where the runtime would
    refuse it."""

    def open_openvino(path: str):
        from icrt.export.errors import PrecisionRefused
        from icrt.runtime.backends.openvino import OpenVinoBackend
        from icrt.runtime.base.errors import IcrtError

        try:
            backend = OpenVinoBackend(path, precision=name, size=prep.size, norm=(prep.mean, prep.std), score_scale=1.0)
        except IcrtError as e:
            raise PrecisionRefused(f"{name} not offered: the runtime would refuse it for this model "
                                   f"({str(e).replace(path + ': ', '')})") from None
        return backend, f"OpenVINO {backend.version}, {name} inference precision, CPU"

    return open_openvino


def build(inp) -> Built:
    from icrt.runtime.bundle.precisions import get_precision

    files = dict(get_precision("bf16").files)
    return Built(files, {"arithmetic": "bfloat16 (OpenVINO INFERENCE_PRECISION_HINT bf16 on the fp32 file)"},
                 open=opener(inp.prep))


register_builder("bf16", build, check)
