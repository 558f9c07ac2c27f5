"""Peak memory (max RSS) of ``icrt score`` on 12-megapixel photos, for each bundle policy; or of an export.

    python -m benchmarks.memory_peak [--images 3] [--photo-size 4000x3000] [--out runs/memory]
        [--backbone tf_efficientnet_lite0] [--patch 224] [--stride 64]
    python -m benchmarks.memory_peak --export CHECKPOINT --calib-data PATH --check-data PATH [--calib-images 256]
        [--calib-methods minmax,entropy,percentile] [--out runs/memory]

Writes N generated JPEG photos (12 megapixels by default), then runs ``icrt score`` in a fresh process
(``/usr/bin/time`` reports its peak resident memory: a finished child's own peak is what psutil cannot give)
with: the bundled default model (square policy), a patch-policy bundle (``--patch`` px patches on a grid of a
``--stride`` grid, as CM-SSA scores; a random-weight ``--backbone`` D2S exported by ``export``), and the same two
with ``--heatmap``. Prints a table and writes ``OUT/memory.json``.

With ``--export``: ``python -m icrt.export`` of CHECKPOINT as the default model's recipe runs it (``--fp16 --int8
--calib-images N --calib-method M``, once per method), its peak from ``/usr/bin/time`` and each stage's peak sampled
(psutil, every 50 ms) while the stage runs; writes ``OUT/export-memory.json``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

from icrt.runtime.base.files import write_json


def photos(folder: str, n: int, size: tuple[int, int] = (4000, 3000)) -> list[str]:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    out = []
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (max(2, size[1] // 10), max(2, size[0] // 10), 3), dtype=np.uint8)  # texture
        img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        path = os.path.join(folder, f"photo{i}.jpg")
        img.save(path, quality=90)
        out.append(path)
    return out


def patch_bundle(folder: str, backbone: str = "tf_efficientnet_lite0", patch: int = 224, stride: int = 64) -> str:
    import torch

    from icrt.export import export_checkpoint
    from icrt.runtime.bundle.preprocessing import Preprocessing
    from icrt.train.checkpoint import FORMAT, atomic_torch_save
    from icrt.train.models.d2s import D2S, D2SConfig

    cfg = {"backbone": backbone, "pretrained": "none", "image_size": patch, "pool": "stats", "head": "linear"}
    torch.manual_seed(0)
    model = D2S(D2SConfig(**cfg), load_pretrained=False).eval()
    ckpt = os.path.join(folder, "patches.pt")
    prep = Preprocessing(resize="patches", size=patch, stride=stride, interpolation="bicubic")
    atomic_torch_save({"format": FORMAT, "kind": "d2s", "config": cfg, "preprocessing": prep.to_dict(),
                       "model": model.state_dict()}, ckpt)
    out = os.path.join(folder, "bundle-patches")
    export_checkpoint(ckpt, out)
    return out


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, int]:
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    kb = int(r.stderr.strip().splitlines()[-1])
    return kb / 1024, time.time() - t0, r.returncode


STAGE_LINE = re.compile(r"^export (.+?): (?:done in|failed after) ")


def export_peak(cmd: list[str]) -> dict:
    """Run an export command: its peak RSS (``/usr/bin/time``), time, exit status, and the peak RSS sampled while
    each of its stages ran (a stage's line, ``export STAGE: done in N s``, ends it)."""
    import psutil

    t0 = time.time()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    peak, done = [0], threading.Event()

    def sample():  # the export is /usr/bin/time's child
        while not done.is_set():
            try:
                rss = sum(c.memory_info().rss for c in psutil.Process(proc.pid).children(recursive=True))
            except psutil.Error:
                rss = 0
            peak[0] = max(peak[0], rss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines, stages = [], []
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        m = STAGE_LINE.match(line)
        if m:
            stages.append({"stage": m.group(1), "peak_rss_mb": round(peak[0] / 2**20)})
            peak[0] = 0
    rc = proc.wait()
    done.set()
    sampler.join()
    kb = lines.pop().strip() if lines else ""
    return {"peak_rss_mb": round(int(kb) / 1024) if kb.isdigit() else None, "seconds": round(time.time() - t0, 1),
            "exit": rc, "stages": stages, "stderr_tail": lines[-3:] if rc else []}


def export_rows(args) -> list[dict]:
    """The default recipe's export of ``args.export`` (train/recipes/default_model.py), once per calibration method."""
    rows = []
    for method in args.calib_methods.split(","):
        bundle = os.path.join(args.out, f"bundle-{method}")
        cmd = [sys.executable, "-m", "icrt.export", "--checkpoint", args.export, "--out", bundle, "--fp16", "--int8",
               "--calib-data", args.calib_data, "--calib-images", str(args.calib_images), "--calib-method", method,
               "--check-data", args.check_data or args.calib_data]
        row = {"calib_method": method, "calib_images": args.calib_images, **export_peak(cmd)}
        rows.append(row)
        print(f"export --calib-method {method:10s} peak RSS {row['peak_rss_mb']} MB  {row['seconds']:6.1f} s  exit "
              f"{row['exit']}  (" + ", ".join(f"{s['stage']} {s['peak_rss_mb']}" for s in row["stages"]) + ")",
              flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_peak", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--photo-size", default="4000x3000", metavar="WxH")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="the patch bundle's backbone (timm name)")
    p.add_argument("--patch", type=int, default=224, help="the patch bundle's patch side")
    p.add_argument("--stride", type=int, default=64, help="the patch bundle's patch grid stride")
    p.add_argument("--out", default="runs/memory")
    p.add_argument("--export", metavar="CHECKPOINT", help="measure the export of this checkpoint instead")
    p.add_argument("--calib-data", help="--export: calibration images (as python -m export takes them)")
    p.add_argument("--check-data", help="--export: check images (default: the calibration images)")
    p.add_argument("--calib-images", type=int, default=256, help="--export: calibration images used")
    p.add_argument("--calib-methods", default="minmax", help="--export: comma-separated calibration methods")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.export:
        if not args.calib_data:
            p.error("--export needs --calib-data")
        rows = export_rows(args)
        write_json(os.path.join(args.out, "export-memory.json"), rows)
        return 0 if all(r["exit"] == 0 for r in rows) else 1
    folder = os.path.join(args.out, "photos")
    w, h = (int(v) for v in args.photo_size.lower().split("x"))
    photos(folder, args.images, (w, h))
    icrt = [sys.executable, "-m", "icrt.runtime.cli", "score", "--format", "json", "-o", os.devnull]
    bundles = {"square (default model, 384 px)": None,
               f"patches ({args.patch} px, stride {args.stride})": patch_bundle(args.out, args.backbone, args.patch,
                                                                                args.stride)}
    rows = []
    for name, bundle in bundles.items():
        for heatmap in (False, True):
            cmd = icrt + (["-m", bundle] if bundle else []) + [folder]
            if heatmap:
                cmd += ["--heatmap", os.path.join(args.out, "maps")]
            mb, secs, rc = peak_rss_mb(cmd)
            row = {"bundle": name, "heatmap": heatmap, "images": args.images, "peak_rss_mb": round(mb),
                   "seconds": round(secs, 1), "exit": rc}
            rows.append(row)
            print(f"{name:32s} heatmap={int(heatmap)}  peak RSS {mb:7.0f} MB  {secs:6.1f} s  exit {rc}", flush=True)
    write_json(os.path.join(args.out, "memory.json"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
