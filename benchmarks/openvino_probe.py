"""Which OpenVINO settings make a bundle fastest at batch 1 on this CPU, against PyTorch eager, in one run.

    python -m benchmarks.openvino_probe --bundle BUNDLE [--checkpoint CKPT] [--iters 20] [--json out.json]
        [--profile]

Each setting is one (file, OpenVINO config) compiled once, then every setting (and PyTorch eager on the checkpoint,
when given) is timed in the same interleaved rounds on one preprocessed input, so the ratios come from one run on
one machine. The settings: each int8 form the bundle ships (the onnxruntime form: uint8 activations, 7-bit
weights; the TensorRT form: symmetric int8 Q/DQ) and extra int8 forms quantized here from model.onnx (per-tensor,
per-channel 8-bit, symmetric activations), each with the f32 and the bf16 inference precision for its float parts;
model.onnx in f32 and bf16; the latency hint against the throughput hint, one stream against two, 1 and 2 threads,
CPU pinning on and off. ``--profile`` adds OpenVINO's per-layer counters (``PERF_COUNT``) of the fastest setting:
where the time goes, by layer type and precision (the executed kernel). CPU flags and the load average are printed
with every table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile


def _load_model_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def quantized_forms(fp32: str, folder: str, calib, input_name: str) -> dict:
    """Extra int8 files from ``fp32``, with onnxruntime's quantizer on ``calib`` (N x 3 x S x S float32):
    per-tensor (8-bit weights, QInt8 symmetric activations) and per-channel 8-bit (no 7-bit reduce range)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from icrt.calibration.reader import PreprocessedImageReader

    out = {}
    for name, per_channel in (("int8 per-tensor symmetric", False), ("int8 per-channel symmetric 8-bit", True)):
        dst = os.path.join(folder, name.replace(" ", "_") + ".onnx")
        reader = PreprocessedImageReader(calib, input_name, batch_size=1)  # one input a batch
        quantize_static(fp32, dst, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=False,
                        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        out[name] = dst
    return out


def settings(files: dict, threads: int) -> list[tuple[str, str, dict]]:
    """(name, file, OpenVINO config) to time."""
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    out = []
    for form, path in files.items():
        out.append((f"{form}, f32", path, {**base, "INFERENCE_PRECISION_HINT": "f32"}))
        out.append((f"{form}, bf16", path, {**base, "INFERENCE_PRECISION_HINT": "bf16"}))
    best_int8 = next((p for f, p in files.items() if f.startswith("int8")), None)
    if best_int8:
        for name, extra in (("throughput hint", {"PERFORMANCE_HINT": "THROUGHPUT"}),
                            ("latency, 2 streams", {"NUM_STREAMS": 2}),
                            ("latency, 1 thread", {"INFERENCE_NUM_THREADS": 1}),
                            ("latency, pinned", {"ENABLE_CPU_PINNING": True})):
            out.append((f"{next(f for f, p in files.items() if p == best_int8)}, f32, {name}", best_int8,
                        {**base, "INFERENCE_PRECISION_HINT": "f32", **extra}))
    return out


def main(argv=None) -> int:
    import numpy as np

    from icrt.runtime.backends.openvino import import_openvino, shared_core
    from icrt.runtime.base.hardware import describe, physical_cores
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.scoring.preprocess import normalize
    from icrt.runtime.tools.bench import machine, rounds

    p = argparse.ArgumentParser(prog="python -m benchmarks.openvino_probe", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--checkpoint", help="the bundle's training checkpoint: PyTorch eager timed in the same rounds")
    p.add_argument("--iters", type=int, default=20, help="interleaved rounds (one call of each setting a round)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="default: physical cores")
    p.add_argument("--no-requantize", action="store_true", help="only the bundle's own files")
    p.add_argument("--profile", action="store_true", help="per-layer counters of the fastest setting")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    m = load_manifest(args.bundle)
    size = m.input_size
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(128, 60, (size, size, 3)), 0, 255).astype(np.uint8)
    x = normalize(img, m.preprocessing.mean, m.preprocessing.std)[None]
    threads = args.threads or physical_cores()
    files = {"fp32": m.path(m.file_name("fp32", "onnxruntime"))}
    if "int8" in m.precisions():
        files["int8 onnxruntime form (uint8, 7-bit weights)"] = m.path(m.file_name("int8", "onnxruntime"))
        trt = m.file_name("int8", "tensorrt")
        if trt and trt != m.file_name("int8", "onnxruntime"):
            files["int8 TensorRT form (symmetric Q/DQ)"] = m.path(trt)
    tmp = tempfile.mkdtemp(prefix="icrt-ovprobe-")
    if not args.no_requantize:
        calib = normalize(np.clip(rng.normal(128, 60, (8, size, size, 3)), 0, 255).astype(np.uint8),
                          m.preprocessing.mean, m.preprocessing.std)
        files.update(quantized_forms(files["fp32"], tmp, calib, m.input_name))
    ov = import_openvino()
    core = shared_core(ov)
    runs = {}
    for name, path, config in settings(files, threads):
        try:
            compiled = core.compile_model(core.read_model(_load_model_bytes(path)), "CPU",
                                          {**config, "PERF_COUNT": bool(args.profile)})
        except Exception as e:  # a setting this OpenVINO refuses: said, not fatal
            print(f"skipped {name}: {str(e).splitlines()[0][:160]}", file=sys.stderr)
            continue
        req = compiled.create_infer_request()
        runs[name] = (req, config, compiled)
    calls = {name: (lambda r=req: r.infer({0: x})) for name, (req, _, _) in runs.items()}
    if args.checkpoint:
        import torch

        from icrt.train.checkpoint import load_checkpoint, model_from_checkpoint

        model = model_from_checkpoint(load_checkpoint(args.checkpoint)).eval()
        xt = torch.from_numpy(x)
        torch.set_num_threads(threads)

        def eager():
            with torch.inference_mode():
                model(xt)
        calls = {"torch eager fp32": eager, **calls}
    times = rounds(calls, args.iters, args.warmup)  # interleaved: every setting sees the same load
    ref = "torch eager fp32" if "torch eager fp32" in times else "fp32, f32"
    ref_ms = statistics.median(times[ref]) * 1000
    rows = []
    for name, t in times.items():
        med = statistics.median(t) * 1000
        rows.append({"setting": name, "median_ms": round(med, 2), "min_ms": round(min(t) * 1000, 2),
                     "p90_ms": round(sorted(t)[int(0.9 * (len(t) - 1))] * 1000, 2),
                     "vs_" + ref.replace(" ", "_"): round(ref_ms / med, 2)})
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"{args.bundle} (input {size}), batch 1, {args.iters} interleaved rounds; CPU {describe()}; "
          f"{threads} thread(s); load average {load}")
    print(f"{'setting':<70} {'median ms':>10} {'min ms':>8} {'vs ' + ref:>24}")
    for r in sorted(rows, key=lambda r: r["median_ms"]):
        print(f"{r['setting']:<70} {r['median_ms']:>10.2f} {r['min_ms']:>8.2f} {r['vs_' + ref.replace(' ', '_')]:>23.2f}x")
    profile = None
    if args.profile:
        best = min((r for r in rows if r["setting"] in runs), key=lambda r: r["median_ms"])["setting"]
        req = runs[best][0]
        req.infer({0: x})
        by = {}
        for c in req.profiling_info:
            key = (c.node_type, c.exec_type)
            us = c.real_time.total_seconds() * 1e6
            by[key] = by.get(key, 0.0) + us
        total = sum(by.values())
        profile = {"setting": best, "total_us": round(total, 1),
                   "by_layer": [{"layer": k[0], "kernel": k[1], "us": round(v, 1), "share": round(v / total, 3)}
                                for k, v in sorted(by.items(), key=lambda kv: -kv[1])]}
        print(f"\nper-layer counters of {best!r} (one call, {total / 1000:.2f} ms in layers):")
        for e in profile["by_layer"][:15]:
            print(f"  {e['layer']:<24} {e['kernel']:<40} {e['us'] / 1000:8.3f} ms  {100 * e['share']:5.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bundle": args.bundle, "input": size, "threads": threads, "cpu": describe(),
                       "load_average": load, "machine": machine(), "rows": rows, "profile": profile}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
