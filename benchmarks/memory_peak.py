"""Peak memory (max RSS) of ``icrt score`` on 12-megapixel photos, for each bundle policy.

    python -m benchmarks.memory_peak [--images 3] [--photo-size 4000x3000] [--out runs/memory]
        [--backbone tf_efficientnet_lite0] [--patch 224] [--stride 64]

Writes N generated JPEG photos (12 megapixels by default), then runs ``icrt score`` in a fresh process
(``/usr/bin/time`` reports its peak resident memory: a finished child's own peak is what psutil cannot give)
with: the bundled default model (square policy), a patch-policy bundle (``--patch`` px patches on a grid of a
``--stride`` grid, as CM-SSA scores; a random-weight ``--backbone`` D2S exported by ``export``), and the same two
with ``--heatmap``. Prints a table and writes ``OUT/memory.json``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_peak", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--photo-size", default="4000x3000", metavar="WxH")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="the patch bundle's backbone (timm name)")
    p.add_argument("--patch", type=int, default=224, help="the patch bundle's patch side")
    p.add_argument("--stride", type=int, default=64, help="the patch bundle's patch grid stride")
    p.add_argument("--out", default="runs/memory")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
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
