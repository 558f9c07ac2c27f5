"""python -m export: see docs/export.md."""
from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .core import ExportError, ParityError, export_checkpoint

    try:
        export_checkpoint(args.checkpoint, args.out, fp16=args.fp16, int8=args.int8, calib_data=args.calib_data,
                          calib_images=args.calib_images, calib_method=args.calib_method,
                          calib_split=args.calib_split, check_data=args.check_data, check_split=args.check_split,
                          check_images=args.check_images, val_fraction=args.val_fraction,
                          split_seed=args.split_seed, opset=args.opset, trt=args.trt, max_batch=args.max_batch,
                          workspace_mb=args.workspace, exporter=args.exporter, int8_tool=args.int8_tool,
                          log=lambda m: print(m, file=sys.stderr))
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. no room or no permission for the bundle folder
        where = f"{e.filename}: " if isinstance(e.filename, str) else ""
        print(f"error: cannot write the bundle: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/manifest.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
