"""``icrt build``: TensorRT engines for this machine's GPU, built from a bundle's ONNX files
(``runtime.backends.tensorrt_build``).

    icrt build [-m BUNDLE] [--precision fp16,int8] [--max-batch N] [--opt-batch N] [--workspace MB]

Writes ``engine.<precision>.trt<version>.sm<cc>.plan`` files and ``timing.trt<version>.sm<cc>.cache`` into the
bundle and records the engines in its manifest; prints each engine and the equivalent ``trtexec`` command line.
No torch: TensorRT's Python API, and cuda-python or pycuda for the GPU's name and compute capability. Without
TensorRT (or a GPU) it stops with one ``icrt: error:`` line saying how to get it.

Imports nothing heavy at module level (the parser is built at every ``icrt`` start).
"""
from __future__ import annotations

import icrt.runtime.cli.options as options
from icrt.runtime.cli.command import Command


def arguments(p) -> None:
    from icrt.runtime.backends.tensorrt_build import DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB

    options.add_scorer_options(p, ("model", "precision"), many=("precision",),
                               help={"precision": "engines to build (default: every precision in the bundle)"})
    p.add_argument("--max-batch", type=options.positive_int, default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"largest batch of model inputs the engines take (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--opt-batch", type=options.positive_int, default=None, metavar="N",
                   help="batch TensorRT optimises for (default: 1 for square models, the patches of a 640x480 "
                        "image for patch models)")
    p.add_argument("--workspace", type=options.positive_int, default=DEFAULT_WORKSPACE_MB, metavar="MB",
                   help=f"TensorRT builder workspace limit in MiB (default {DEFAULT_WORKSPACE_MB})")


def run(args) -> int:
    from icrt.runtime.backends.tensorrt_build import build_bundle
    from icrt.runtime.base.text import printable
    from icrt.runtime.bundle.manifest import manifest_path

    bundle = options.bundle(args)
    build = build_bundle(bundle, precisions=args.precision, max_batch=args.max_batch, opt_batch=args.opt_batch,
                         workspace_mb=args.workspace)
    print(f"{printable(bundle)}: TensorRT {build.tensorrt}, GPU {build.gpu} (sm {build.compute_capability}, "
          f"via {build.cuda_binding})")
    for e in build.engines:
        d = e.entry
        how = ", ".join([*(["strongly typed"] if d.strongly_typed else []), *(f"+{f}" for f in d.builder_flags),
                         *(f"-{f}" for f in d.cleared_builder_flags or [])])
        print(f"{d.precision:5}  {d.file}  from {d.onnx}  ({how or 'default flags'}), "
              f"batch {d.min_batch}/{d.opt_batch}/{d.max_batch}, {e.seconds:.1f} s")
        print(f"       trtexec: {e.trtexec}")
    cache = build.timing
    state = ("written" if cache.changed and cache.blob else "unchanged")
    print(f"timing cache: {cache.name} ({state})" + "".join(f"; {n}" for n in build.notes))
    print(f"manifest: {printable(manifest_path(bundle))}")
    return 0


COMMAND = Command(
    "build", help="build TensorRT engines for this machine's GPU into a bundle",
    description=("Build TensorRT engines for this machine's GPU from the bundle's ONNX files (TensorRT Python "
                 "API, no torch) and record them in its manifest."),
    examples=(("icrt build", "the default model's engines (needs write access)"),
              ("icrt build -m bundles/d2s --precision fp16,int8", ""),
              ("icrt build -m bundles/d2s --max-batch 32 --workspace 2048", "a smaller memory budget (Jetson)")),
    arguments=arguments, run=run)
