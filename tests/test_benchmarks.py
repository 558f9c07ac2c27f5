"""Benchmark scripts run end to end on tiny models (their figures come from real runs; see docs/benchmarks.md)."""
import json

from tests.tiny import D2S


def test_compare_torch_times_the_exporters_bundle(tmp_path):
    from benchmarks import compare_torch

    out, bundle = tmp_path / "cmp.json", tmp_path / "bundle"
    args = ["--backbone", D2S["backbone"], "--image-size", str(D2S["image_size"]), "--iters", "2", "--warmup", "1",
            "--precisions", "fp32,int8", "--save-bundle", str(bundle), "--json", str(out)]
    assert compare_torch.main(args) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"torch eager fp32 (cpu)", "runtime onnxruntime fp32 (cpu)", "runtime onnxruntime int8 (cpu)"}
    assert rows["runtime onnxruntime fp32 (cpu)"]["max_abs_diff_vs_torch"] <= 1e-4
    # the bundle came from export's pipeline (folding, parity, both int8 forms), not a private export path
    report = json.loads((bundle / "export-report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["fold", "check set", "fp32", "int8", "parity", "write"]
    assert report["parity"]["fp32"]["passed"] and (bundle / "model.int8.qdq.onnx").is_file()
