"""bf16: the fp32 file computed in bfloat16, by OpenVINO on CPUs with bf16 units (AMX-BF16, AVX512-BF16); refused in
one line by onnxruntime and on CPUs without such units (issue 27)."""
import pytest

import icrt.runtime.base.hardware as hardware
from icrt.runtime.backends import BackendError, open_backend
from icrt.runtime.bundle.manifest import load_manifest
from icrt.runtime.cli import main
from icrt.runtime.scoring.options import ScorerOptions
from tests.runtime.fixtures import make_bundle, needs, sample_images

needs_openvino = needs("openvino", "[openvino]")
BF16_CPU = ["avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"]


@pytest.fixture
def bf16_bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("ICRT_CACHE_DIR", str(tmp_path / "cache"))
    fp32 = {"onnxruntime": "model.onnx", "tensorrt": "model.onnx"}
    return make_bundle(tmp_path / "b", files={"fp32": fp32, "bf16": dict(fp32)})


def test_onnxruntime_refuses_bf16_in_one_line_naming_where_it_runs(bf16_bundle):
    with pytest.raises(BackendError, match="onnxruntime does not compute in bf16.*OpenVINO.*amx_bf16"):
        open_backend(load_manifest(bf16_bundle), ScorerOptions(backend="onnxruntime", precision="bf16"))


@needs_openvino
def test_a_cpu_without_bf16_units_refuses_bf16_naming_the_flags_it_needs(bf16_bundle, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_features", lambda cpuinfo=None: ["avx2", "avx512", "avx512_vnni"])
    with pytest.raises(BackendError, match=r"bf16 needs a CPU with amx_bf16 or avx512_bf16 \(this one has: avx2 "
                                           r"avx512 avx512_vnni\)"):
        open_backend(load_manifest(bf16_bundle), ScorerOptions(backend="openvino", precision="bf16"))


@needs_openvino
@pytest.mark.skipif(not hardware.bf16_units(), reason="this CPU has no bf16 units (amx_bf16, avx512_bf16)")
def test_openvino_runs_bf16_close_to_fp32_and_says_so(bf16_bundle, tmp_path, capsys):
    images = sample_images(tmp_path)
    m = load_manifest(bf16_bundle)
    b = open_backend(m, ScorerOptions(backend="openvino", precision="bf16"))
    assert b.describe()["inference_precision"] == "bf16" and b.precision == "bf16"
    code = main(["score", *images, "-m", bf16_bundle, "--precision", "bf16", "--format", "json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and err[-1].endswith(", bf16, cpu") and " by openvino " in err[-1]
    from icrt.runtime.scoring.scorer import Scorer

    fp32 = Scorer.load(bf16_bundle, backend="onnxruntime").score_many(images)
    bf16 = Scorer.load(bf16_bundle, precision="bf16").score_many(images)  # auto: OpenVINO on this CPU
    assert max(abs(a["score"] - b["score"]) for a, b in zip(fp32, bf16)) <= 0.01
