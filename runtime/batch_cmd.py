"""``icrt batch``: score a large collection into Parquet parts (runtime/batch.py; docs/batch.md).

    icrt batch INPUT... --out DIR [-m BUNDLE] [--backend ...] [--precision ...] [--files-from LIST] [--shard I/N]
        [--engine local|ray] [--ray-address ADDR] [--workers N] [--batch-size N] [--resume]

Imports nothing heavy at module level (the parser is built at every ``icrt`` start): pyarrow, numpy, onnxruntime
and Ray load when the command runs.
"""
from __future__ import annotations

import argparse


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            v = 0
        if not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return v
    return parse


def _non_negative_float(text):
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def add_command(subparsers):
    from .backends import backend_choices
    from .batch import DEFAULT_PART_ROWS, DEFAULT_RAY_BATCH, DEFAULT_STALL_TIMEOUT
    from .cli import _batch_size, _threads
    from .manifest import PRECISIONS
    from .worklist import add_worklist_options

    p = subparsers.add_parser(
        "batch", help="score a large collection into Parquet parts (resumable; one machine or a Ray cluster)",
        description="Score images into DIR/part-*.parquet (columns path, score, error, width, height, patches; one "
                    "row per input), DIR/summary.json and a DIR/_SUCCESS marker. See docs/batch.md.")
    p.add_argument("paths", nargs="*", metavar="INPUT",
                   help="image files, folders or glob patterns (or s3://, gs://, file:// URIs, read through pyarrow)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (made if missing)")
    p.add_argument("-m", "--model", metavar="BUNDLE", help="model bundle folder (default: the bundled default model)")
    p.add_argument("--backend", choices=backend_choices(), default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    add_worklist_options(p)
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process, the runtime's own batching; ray: a Ray Data actor pool (default local)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="connect to this Ray cluster (e.g. auto, or HOST:6379 of `ray start --head`); without it a "
                        "local Ray with this machine's CPUs is started and shut down after")
    p.add_argument("--workers", type=_positive(int), default=None, metavar="N",
                   help="ray: actors, one Scorer each (default 1); local: decode threads (default 1)")
    p.add_argument("--cpus-per-worker", type=_positive(float), default=None, metavar="X",
                   help="ray: CPUs each actor reserves (default: the cluster's CPUs less 0.5 for reading, shared out; "
                        "at most 1 with GPUs)")
    p.add_argument("--gpus-per-worker", type=_non_negative_float, default=0.0, metavar="X",
                   help="ray: GPUs each actor reserves (e.g. 1, or 0.5 to share one; default 0: CPU)")
    p.add_argument("--ray-cpus", type=_positive(int), default=None, metavar="N",
                   help="CPUs of the local Ray started without --ray-address (default: this machine's)")
    p.add_argument("--batch-size", type=_batch_size, default=None, metavar="N",
                   help="model inputs (images or patches) per inference call (default: as many as fit in 64 MB for the "
                        "model's input size, at most 32: 1 for the default model; larger values are lowered to what "
                        "fits in 2 GB)")
    p.add_argument("--images-per-task", type=_positive(int), default=DEFAULT_RAY_BATCH, metavar="N",
                   help=f"ray: images handed to an actor at a time (default {DEFAULT_RAY_BATCH})")
    p.add_argument("--threads", type=_threads, default=None,
                   help="onnxruntime CPU threads per Scorer (default: local, one per core; ray, the CPUs of a worker)")
    p.add_argument("--part-rows", type=_positive(int), default=DEFAULT_PART_ROWS, metavar="N",
                   help=f"rows per Parquet part (default {DEFAULT_PART_ROWS}; a killed run loses at most one part's "
                        "work)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in DIR: keep its rows and skip their paths")
    p.add_argument("--stall-timeout", type=_non_negative_float, default=DEFAULT_STALL_TIMEOUT, metavar="S",
                   help=f"stop with an error when no row has come for S seconds (default {DEFAULT_STALL_TIMEOUT:g}; "
                        "0: never)")
    return "batch", run


def run(args) -> int:
    from .batch import Job, gather_inputs, run_batch
    from .defaults import default_bundle
    from .errors import UserInputError

    if args.engine != "ray":
        for opt, val in (("--ray-address", args.ray_address), ("--cpus-per-worker", args.cpus_per_worker),
                         ("--gpus-per-worker", args.gpus_per_worker or None), ("--ray-cpus", args.ray_cpus)):
            if val is not None:
                raise UserInputError(f"{opt} is for --engine ray")
    problems = {}
    paths = gather_inputs(args, problems)
    job = Job(out=args.out, bundle=args.model or default_bundle(), backend=args.backend, precision=args.precision,
              engine=args.engine, ray_address=args.ray_address, ray_cpus=args.ray_cpus, workers=args.workers or 1,
              batch_size=args.batch_size, ray_batch=args.images_per_task, threads=args.threads,
              cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, part_rows=args.part_rows,
              resume=args.resume, stall_timeout=args.stall_timeout)
    return run_batch(job, paths, problems, shard=args.shard)
