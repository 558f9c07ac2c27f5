"""``icrt triton``: write a bundle as an NVIDIA Triton model repository (``runtime.serving.repository``,
docs/serving.md)."""
from __future__ import annotations

import sys

import icrt.runtime.cli.options as options
from icrt.runtime.base.errors import EXIT_OK
from icrt.runtime.cli.command import Command


def arguments(p) -> None:
    from icrt.runtime.serving.limits import ACCELERATOR_MODES

    options.add_scorer_options(p, ("model",))
    p.add_argument("--out", required=True, metavar="REPO", help="repository folder: new, empty, or a model repository")
    options.add_serving(p)
    options.add_scorer_options(p, ("precision",))
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where the ONNX / TensorRT models run")
    p.add_argument("--tensorrt-accelerator", choices=ACCELERATOR_MODES, default=None, metavar="PRECISION",
                   help="run the ONNX model through onnxruntime's TensorRT accelerator at this precision (GPU)")
    p.add_argument("--tensorrt-version", default=None, metavar="X.Y.Z",
                   help="the bundle's engines to use when it has engines for several TensorRT versions")
    options.add_scorer_options(p, ("threads",), help={"threads": "onnxruntime threads per ONNX model instance"})
    p.add_argument("--execution-env", default=None, metavar="PATH",
                   help="EXECUTION_ENV_PATH of the Python model (a conda-pack archive with numpy and Pillow, as Triton "
                        "sees it, e.g. $$TRITON_MODEL_DIRECTORY/icrt-env.tar.gz)")


def run(args) -> int:
    from icrt.runtime.base.install import doc
    from icrt.runtime.base.text import printable
    from icrt.runtime.serving.repository import write_repository

    report = write_repository(options.bundle(args), args.out, name=args.name, precision=args.precision,
                              max_batch=args.max_batch, instances=args.instances, device=args.device,
                              tensorrt_accelerator=args.tensorrt_accelerator, max_queue_delay_us=args.max_queue_delay_us,
                              threads=args.threads, tensorrt_version=args.tensorrt_version,
                              execution_env=args.execution_env)
    repo = printable(report["repository"])
    lines = [f"{repo}: Triton model repository for {printable(report['bundle'])} ({report['precision']}, "
             f"{report['device']})"]
    for model, what in report["models"].items():  # the bundle's file names: printable, as everything it supplies
        lines.append(f"  {printable(model):<16} {printable(what)}")
    lines += [f"  note: {printable(n)}" for n in report["notes"]]
    lines.append(f"  clients call {args.name!r} (input image: encoded files as BYTES); "
                 f"it calls {' then '.join(report['targets'])}")
    gpus = "--gpus all " if args.device == "gpu" else ""
    lines.append(f"  run it: docker run --rm {gpus}--shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 -v {repo}:/models "
                 "IMAGE tritonserver --model-repository=/models  (IMAGE: nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
                 f"with Pillow added, see {doc('serving.md')})")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


COMMAND = Command(
    "triton", help="write a Triton model repository (ONNX / TensorRT model + Python front model)",
    description=("Write a model repository that NVIDIA Triton Inference Server loads as it is: REPO/NAME (Python "
                 "backend: encoded image files in, scores out), REPO/NAME_onnx (onnxruntime) and, with TensorRT "
                 "engines in the bundle and --device gpu, REPO/NAME_trt."),
    examples=(("icrt triton -m bundles/d2s --out models", "CPU (onnxruntime)"),
              ("icrt triton -m bundles/d2s --out models --device gpu --precision fp16", "GPU"),
              ("docker run ... -v $PWD/models:/models IMAGE tritonserver --model-repository=/models",
               "then serve it (docs/serving.md, shipped in icrt/docs)")),
    arguments=arguments, run=run)
