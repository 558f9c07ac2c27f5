"""python -m export: see docs/export.md."""
from __future__ import annotations

import argparse
import os
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export",
                                description="Turn a training checkpoint into a deployable model bundle.")
    p.add_argument("--checkpoint", required=True, help="DIR/checkpoint.pt written by python -m train")
    p.add_argument("--out", required=True,
                   help="bundle folder to write (built beside it, then renamed into place; an old bundle is replaced)")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx and model.int8.qdq.onnx")
    p.add_argument("--calib-data", help="calibration images: labels CSV, IC9600 folder, image folder or list file")
    p.add_argument("--calib-images", type=int, default=256, help="calibration images drawn (seeded; default 256)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--calib-split", default="all", choices=["all", "train", "val"],
                   help="part of a labelled --calib-data to use (train: never the held-out images)")
    p.add_argument("--int8-tool", default="ort", choices=["ort", "modelopt"],
                   help="quantizer of the TensorRT form (modelopt: NVIDIA ModelOpt, optional extra)")
    p.add_argument("--check-data", help="images to check parity on (default: calibration images, else generated)")
    p.add_argument("--check-split", default="all", choices=["all", "train", "val"])
    p.add_argument("--check-images", type=int, default=None, help="at most this many check images")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of the split (as training)")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the split (as training)")
    p.add_argument("--trt", action="store_true", help="build TensorRT engines (needs tensorrt and a GPU)")
    p.add_argument("--max-batch", type=int, default=64, help="TensorRT profile max batch")
    p.add_argument("--workspace", type=int, default=4096, help="TensorRT workspace limit, MB")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    return p


def export(args) -> int:
    from runtime.errors import UserInputError

    from runtime.manifest import MANIFEST_FILE

    from .core import export_checkpoint

    try:
        export_checkpoint(args.checkpoint, args.out, fp16=args.fp16, int8=args.int8, calib_data=args.calib_data,
                          calib_images=args.calib_images, calib_method=args.calib_method,
                          calib_split=args.calib_split, check_data=args.check_data, check_split=args.check_split,
                          check_images=args.check_images, val_fraction=args.val_fraction,
                          split_seed=args.split_seed, opset=args.opset, trt=args.trt, max_batch=args.max_batch,
                          workspace_mb=args.workspace, exporter=args.exporter, int8_tool=args.int8_tool)
    except OSError as e:  # e.g. no room or no permission for the bundle folder
        where = f"{e.filename}: " if isinstance(e.filename, str) else ""
        raise UserInputError(f"cannot write the bundle: {where}{e.strerror or e}") from None
    print(f"wrote {os.path.join(args.out, MANIFEST_FILE)}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    from runtime.errors import run_command, setup_logging

    p = parser()
    args = p.parse_args(argv)
    setup_logging()
    return run_command(p.prog, export, args)


if __name__ == "__main__":
    sys.exit(main())
