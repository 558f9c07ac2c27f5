"""PyTorch eager (as the papers ran it) against the icrt runtime on the exported bundle, same machine, same input.

    python -m benchmarks.compare_torch --checkpoint runs/d2s/checkpoint.pt --bundle bundles/d2s
    python -m benchmarks.compare_torch --backbone resnet18 --image-size 512       # random D2S-R18, plain export
    python -m benchmarks.compare_torch ... --device cuda                          # torch fp32 vs fp16 + CUDA graphs
    python -m benchmarks.compare_torch ... --cold-start                           # `icrt score` vs `import torch`

Without ``--bundle`` the model is exported here by icrt's exporter (``export.core.export_model``: folding,
constant padding, parity checks, the int8 forms), so the runtime rows time exactly what ``python -m export``
ships.
Prints a table and the speed-up ratios; ``--json FILE`` keeps them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from icrt.runtime.tools.bench import rounds


def interleaved(calls: dict, warmup: int, iters: int) -> dict:
    """name -> timing figures (ms) of each callable, timed in :func:`rounds`."""
    return {name: summary([t * 1000 for t in v]) for name, v in rounds(calls, iters, warmup).items()}


def summary(ts) -> dict:
    ts = np.asarray(ts)
    return {"mean_ms": float(ts.mean()), "p50_ms": float(np.median(ts)), "p90_ms": float(np.percentile(ts, 90)),
            "min_ms": float(ts.min()), "max_ms": float(ts.max())}


def timed(fn, warmup: int, iters: int, sync=None) -> dict:
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append((time.perf_counter() - t) * 1000)
    ts = np.asarray(ts)
    return {"mean_ms": float(ts.mean()), "p50_ms": float(np.median(ts)), "p90_ms": float(np.percentile(ts, 90)),
            "min_ms": float(ts.min())}


def load_model(args):
    """(torch model in eval mode, checkpoint fields for the exporter, description)."""
    if args.checkpoint:
        from icrt.export.core import load_source

        source, model = load_source(args.checkpoint)
        return model.eval(), source, args.checkpoint
    from icrt.runtime.bundle.preprocessing import Preprocessing
    from icrt.train.models.d2s import D2S, D2SConfig

    cfg = D2SConfig(backbone=args.backbone, pretrained="none", image_size=args.image_size)
    model = D2S(cfg, load_pretrained=False).eval()
    source = {"kind": "d2s", "preprocessing": Preprocessing(resize="square", size=args.image_size).to_dict(),
              "config": {"backbone": args.backbone, "image_size": args.image_size}, "path": None}
    return model, source, f"random-weight D2S-{args.backbone}"


def export_bundle(model, source: dict, folder: str, precisions, calib_images: str | None, tmp: str) -> str:
    """The bundle through icrt's exporter (folding, parity checks, both int8 forms); without calibration
    images, int8 calibrates on generated ones (latency does not depend on them)."""
    from icrt.export.core import ExportOptions, export_model

    if "int8" in precisions and not calib_images:
        from PIL import Image

        from icrt.export.checks import generated_images

        calib_images = os.path.join(tmp, "calibration")
        os.makedirs(calib_images, exist_ok=True)
        for i, img in enumerate(generated_images(16)):
            Image.fromarray(img).save(os.path.join(calib_images, f"{i:02d}.png"))
    export_model(model, source, folder, ExportOptions(fp16="fp16" in precisions, int8="int8" in precisions,
                                                      calib_data=calib_images))
    return folder


def input_batch(prep, image, batch: int) -> np.ndarray:
    from icrt.runtime.scoring.preprocess import load_rgb, to_model_input

    if image:
        x = to_model_input(load_rgb(image), prep)[0]
    else:
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (prep.size // 8, prep.size // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        x = to_model_input(img, prep)[0]
    return np.ascontiguousarray(np.concatenate([x] * (-(-batch // len(x))))[:batch])


def cold_start(bundle: str, image: str, backends=("onnxruntime",), repeats: int = 3) -> dict:
    """Wall time of a fresh `icrt score` process for one image on each backend against a bare `import torch`, the
    commands taking turns (median of ``repeats``). OpenVINO's first start (an empty model cache, its own folder) is
    timed apart from the later ones (the cache filled)."""
    cache = tempfile.mkdtemp(prefix="icrt-cold-cache-")
    env = {**os.environ, "ICRT_CACHE_DIR": cache}
    cmds = {f"icrt_score_{b}_ms": [sys.executable, "-m", "icrt.runtime.cli", "score", image, "-m", bundle, "--backend", b]
            for b in backends}
    cmds["import_torch_ms"] = [sys.executable, "-c", "import torch"]

    def wall(cmd):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return (time.perf_counter() - t) * 1000

    out = {}
    try:
        if "openvino" in backends:
            out["icrt_score_openvino_first_ms"] = wall(cmds["icrt_score_openvino_ms"])  # compiles, fills the cache
        ts = {k: [] for k in cmds}
        for _ in range(repeats):
            for k, cmd in cmds.items():
                ts[k].append(wall(cmd))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    out.update({k: statistics.median(v) for k, v in ts.items()})
    return out


def agreement_images(args, prep, tmp: str) -> list[str]:
    """The images each runtime's scores are compared on: ``--images`` (a folder or glob, at most 64), else 16
    generated ones (export's check images)."""
    if args.images:
        from icrt.runtime.scoring.inputs import collect

        return collect([args.images], recursive=True)[:64]
    from PIL import Image

    from icrt.export.checks import generated_images

    folder = os.path.join(tmp, "agreement")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, img in enumerate(generated_images(16)):
        paths.append(os.path.join(folder, f"{i:02d}.png"))
        Image.fromarray(img).save(paths[-1])
    return paths


def run_cpu(args, model, prep, bundle, x, rows, images=()):
    """torch eager and every runtime backend x precision asked for, timed in the same interleaved rounds; each
    runtime's scores of ``images`` compared with onnxruntime fp32's (SRCC, largest difference)."""
    import torch

    from icrt.runtime.backends import BackendError, open_backend
    from icrt.runtime.base.hardware import describe, physical_cores
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.scoring.options import ScorerOptions
    from icrt.runtime.tools.bench import agreement, image_scores

    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        ref = model(xt).numpy()
    calls, extra = {}, {}

    def torch_call():
        with torch.inference_mode():
            model(xt)

    calls["torch eager fp32 (cpu)"] = torch_call
    manifest = load_manifest(bundle)
    if args.plain_ort:  # what a plain export gets with onnxruntime's default session options
        import onnxruntime as ort
        plain = ort.InferenceSession(manifest.file_for("fp32"), providers=["CPUExecutionProvider"])
        feed = {manifest.input_name: x}
        calls["onnxruntime fp32, default options (cpu)"] = lambda: plain.run(None, feed)
    fp32 = ScorerOptions(backend="onnxruntime", precision="fp32", threads=threads)
    reference = image_scores(manifest, open_backend(manifest, fp32), images) if images else None
    for name in args.backends:
        for prec in args.precisions:
            try:
                be = open_backend(manifest, ScorerOptions(backend=name, precision=prec, threads=threads))
            except BackendError as e:
                print(f"skipped {name} {prec}: {e}", file=sys.stderr)
                continue
            label = f"runtime {be.name} {prec} ({be.device})"
            extra[label] = {"max_abs_diff_vs_torch": float(np.abs(be.run(x) - ref).max())}
            if reference:
                extra[label]["agreement_vs_onnxruntime_fp32"] = agreement(image_scores(manifest, be, images), reference)
            calls[label] = lambda be=be: be.run(x)
    cpu = describe()
    for name, fig in interleaved(calls, args.warmup, args.iters).items():
        rows.append({"name": name, **extra.get(name, {}), **fig, "cpu": cpu})


def run_cuda(args, model, prep, bundle, x, rows):
    import torch

    dev = torch.device("cuda")
    model = model.to(dev)
    xt = torch.from_numpy(x).to(dev)
    sync = torch.cuda.synchronize
    with torch.inference_mode():
        ref = model(xt).float().cpu().numpy()
        rows.append({"name": f"torch eager fp32 ({torch.cuda.get_device_name()})",
                     **timed(lambda: model(xt), args.warmup, args.iters, sync)})
        half = model.half()
        static = xt.half().clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                half(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = half(static)
        graph.replay()
        sync()
        diff = float((out.float().cpu() - torch.from_numpy(ref)).abs().max())
        rows.append({"name": "torch fp16 + CUDA graph", "max_abs_diff_vs_torch": diff,
                     **timed(graph.replay, args.warmup, args.iters, sync)})
    from icrt.runtime.backends import BackendError, open_backend
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.scoring.options import ScorerOptions

    manifest = load_manifest(bundle)
    for prec in args.precisions:
        try:
            be = open_backend(manifest, ScorerOptions(precision=prec))
        except BackendError as e:
            print(f"skipped runtime {prec}: {e}", file=sys.stderr)
            continue
        if be.device == "cpu":
            print(f"skipped runtime {prec}: no GPU backend here ({'; '.join(be.notes)})", file=sys.stderr)
            continue
        rows.append({"name": f"runtime {be.name} {prec} ({be.device})",
                     "max_abs_diff_vs_torch": float(np.abs(be.run(x) - ref).max()),
                     **timed(lambda be=be: be.run(x), args.warmup, args.iters)})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="icrt training checkpoint (default: a random-weight D2S)")
    p.add_argument("--bundle", help="exported bundle of the same model (default: exported here)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--image", help="image to score (default: a synthetic one)")
    p.add_argument("--calib-images", help="int8 calibration images for the export (default: generated ones)")
    p.add_argument("--precisions", default="fp32,int8")
    p.add_argument("--backend", default="onnxruntime", help="runtime backends, side by side (onnxruntime,openvino)")
    p.add_argument("--images", help="images (folder or glob) each runtime's scores are compared with onnxruntime fp32's "
                                    "on (default: 16 generated ones)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both torch and onnxruntime")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--cold-start", action="store_true", help="also time a fresh `icrt score` vs `import torch`")
    p.add_argument("--plain-ort", action="store_true", help="also time onnxruntime with default session options")
    p.add_argument("--save-bundle", metavar="DIR", help="keep the bundle exported here (for icrt bench)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    args.precisions = [s for s in args.precisions.split(",") if s]
    args.backends = [s for s in args.backend.split(",") if s]

    model, source, what = load_model(args)
    from icrt.runtime.bundle.preprocessing import Preprocessing

    prep = Preprocessing.from_dict(source["preprocessing"])
    with tempfile.TemporaryDirectory(prefix="icrt-cmp-") as tmp:
        bundle = args.bundle or export_bundle(model, source, args.save_bundle or os.path.join(tmp, "bundle"),
                                              args.precisions, args.calib_images, tmp)
        x = input_batch(prep, args.image, args.batch_size)
        rows = []
        if args.device == "cuda":
            run_cuda(args, model, prep, bundle, x, rows)
        else:
            run_cpu(args, model, prep, bundle, x, rows, agreement_images(args, prep, tmp))
        cold = None
        if args.cold_start:
            image = args.image
            if not image:
                from PIL import Image
                image = os.path.join(tmp, "cold.jpg")
                Image.fromarray((x[0].transpose(1, 2, 0) * 60 + 120).clip(0, 255).astype(np.uint8)).save(image)
            cold = cold_start(bundle, image, args.backends)

    base = rows[0]["mean_ms"]
    from icrt.runtime.base.hardware import describe

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\n{what}, input {prep.size}x{prep.size} ({prep.resize}), batch {args.batch_size}, "
          f"{args.iters} interleaved rounds after {args.warmup} warm-up; CPU {describe()}; load average {load}")
    print(f"{'':<42} {'mean ms':>9} {'p50 ms':>9} {'min ms':>9} {'speed-up':>9}  max|diff| vs torch  "
          "SRCC / max|diff| vs onnxruntime fp32")
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        r["speedup_vs_torch"] = base / r["mean_ms"]
        r["speedup_vs_torch_p50"] = rows[0]["p50_ms"] / r["p50_ms"]
        d = r.get("max_abs_diff_vs_torch")
        a = r.get("agreement_vs_onnxruntime_fp32") or {}
        agree = "" if not a else f"{a['srcc']:.4f} / {a['max_abs_diff']:.2e} ({a['n']} images)" \
            if a.get("srcc") is not None else f"- / {a.get('max_abs_diff')}"
        print(f"{r['name']:<42} {r['mean_ms']:>9.2f} {r['p50_ms']:>9.2f} {r['min_ms']:>9.2f} "
              f"{r['speedup_vs_torch']:>8.2f}x  {'' if d is None else f'{d:.2e}':<18} {agree}")
    for name in args.backends:
        fp32 = by_name.get(f"runtime {name} fp32 (cpu)")
        int8 = by_name.get(f"runtime {name} int8 (cpu)")
        if fp32 and int8:
            print(f"{name} int8 vs {name} fp32: {fp32['mean_ms'] / int8['mean_ms']:.2f}x")
    if cold:
        print("cold start, one image (median of 3, taking turns): " + "; ".join(
            f"{k.removesuffix('_ms').replace('_', ' ')} {v:.0f} ms" for k, v in cold.items()))
    if args.json:
        from icrt.runtime.base.files import write_json
        from icrt.runtime.tools.bench import machine
        write_json(args.json, {"model": what, "input": prep.size, "batch_size": args.batch_size, "device": args.device,
                               "rows": rows, "cold_start": cold, "machine": machine(), "cpu": describe(),
                               "load_average": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
