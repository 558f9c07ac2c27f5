"""``icrt batch``: score a large collection into Parquet parts (``runtime.batch``; docs/batch.md).

    icrt batch INPUT... --out DIR [-m BUNDLE] [--backend ...] [--precision ...] [--files-from LIST] [--shard I/N]
        [--runner local|ray] [--ray-address ADDR] [--workers N] [--batch-size N] [--resume]

``--runner`` was called ``--engine`` (still taken, with a warning: "engine" is a TensorRT plan everywhere else).
"""
from __future__ import annotations

import argparse
import logging

import icrt.runtime.cli.options as options
from icrt.runtime.cli.command import Command


class _EngineAlias(argparse.Action):
    """``--engine``: the old name of ``--runner``, taken with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        logging.getLogger("icrt").warning("icrt batch: --engine is now --runner (--engine will go)")
        namespace.runner = values


def _part_rows(text: str) -> int:
    """``--part-rows``: 1 .. MAX_PART_ROWS (a resume refuses a part with more rows as not icrt's)."""
    from icrt.runtime.batch.parts import MAX_PART_ROWS

    v = options.positive_int(text)
    if v > MAX_PART_ROWS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_PART_ROWS:,}, got {text!r}")
    return v


def arguments(p) -> None:
    from icrt.runtime.batch.job import RUNNERS
    from icrt.runtime.batch.parts import DEFAULT_PART_ROWS, MAX_PART_ROWS
    from icrt.runtime.batch.ray_runner import DEFAULT_RAY_BATCH
    from icrt.runtime.batch.watchdog import DEFAULT_STALL_TIMEOUT

    options.add_inputs(p, "image files, folders or glob patterns (or s3://, gs://, file:// URIs, read through "
                          "pyarrow)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (made if missing)")
    options.add_scorer_options(p, help={
        "threads": "CPU threads of the inference engine per Scorer (default: local, one per core; ray, the CPUs of a "
                   "worker)"})
    p.add_argument("--runner", choices=RUNNERS, default="local",
                   help="local: this process, the runtime's own batching; ray: a Ray Data actor pool (default local)")
    p.add_argument("--engine", choices=RUNNERS, action=_EngineAlias, help=argparse.SUPPRESS)
    p.add_argument("--ray-address", metavar="ADDR",
                   help="connect to this Ray cluster (e.g. auto, or HOST:6379 of `ray start --head`); without it a "
                        "local Ray with this machine's CPUs is started and shut down after")
    p.add_argument("--workers", type=options.positive_int, default=None, metavar="N",
                   help="ray: actors, one Scorer each (default 1); local: decode threads (default 1)")
    p.add_argument("--cpus-per-worker", type=options.positive_number(float), default=None, metavar="X",
                   help="ray: CPUs each actor reserves (default: the cluster's CPUs less 0.5 for reading, shared out; "
                        "at most 1 with GPUs)")
    p.add_argument("--gpus-per-worker", type=options.non_negative_float, default=0.0, metavar="X",
                   help="ray: GPUs each actor reserves (e.g. 1, or 0.5 to share one; default 0: CPU)")
    p.add_argument("--ray-cpus", type=options.positive_int, default=None, metavar="N",
                   help="CPUs of the local Ray started without --ray-address (default: this machine's)")
    p.add_argument("--images-per-task", type=options.positive_int, default=DEFAULT_RAY_BATCH, metavar="N",
                   help=f"ray: images handed to an actor at a time (default {DEFAULT_RAY_BATCH})")
    p.add_argument("--part-rows", type=_part_rows, default=DEFAULT_PART_ROWS, metavar="N",
                   help=f"rows per Parquet part (default {DEFAULT_PART_ROWS}, at most {MAX_PART_ROWS:,}; a killed run "
                        "loses at most one part's work)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in DIR: keep its rows and skip their paths")
    p.add_argument("--stall-timeout", type=options.non_negative_float, default=DEFAULT_STALL_TIMEOUT, metavar="S",
                   help=f"stop with an error when no row has come for S seconds (default {DEFAULT_STALL_TIMEOUT:g}; "
                        "0: never)")


def run(args) -> int:
    from icrt.runtime.base.errors import UserInputError
    from icrt.runtime.batch import Job, run_batch
    from icrt.runtime.scoring.inputs import gather

    if args.runner != "ray":
        for opt, val in (("--ray-address", args.ray_address), ("--cpus-per-worker", args.cpus_per_worker),
                         ("--gpus-per-worker", args.gpus_per_worker or None), ("--ray-cpus", args.ray_cpus)):
            if val is not None:
                raise UserInputError(f"{opt} is for --runner ray")
    problems = {}
    paths = gather(options.input_options(args, uris=True), problems)
    job = Job(out=args.out, scorer=options.scorer_options(args), runner=args.runner, ray_address=args.ray_address,
              ray_cpus=args.ray_cpus, workers=args.workers or 1, ray_batch=args.images_per_task,
              cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, part_rows=args.part_rows,
              resume=args.resume, stall_timeout=args.stall_timeout)
    return run_batch(job, paths, problems, shard=args.shard)


COMMAND = Command(
    "batch", help="score a large collection into Parquet parts (resumable; one machine or a Ray cluster)",
    description="Score images into DIR/part-*.parquet (columns path, score, error, width, height, patches; one row "
                "per input), DIR/summary.json and a DIR/_SUCCESS marker. See docs/batch.md (shipped in icrt/docs).",
    examples=(("icrt batch photos/ --recursive --out scores/", "one machine"),
              ("icrt batch photos/ --recursive --out scores/ --resume", "after a stop: the rest only"),
              ("icrt batch --files-from all.txt --out scores/ --runner ray --workers 2", "a local Ray"),
              ("icrt report scores/", "then one HTML page of it")),
    arguments=arguments, run=run)
