"""``icrt bench``: latency and throughput of a bundle per backend, precision and batch size (``runtime.tools.bench``);
writes report.md, report.json and latency.png."""
from __future__ import annotations

import os

import icrt.runtime.cli.options as options
from icrt.runtime.base.errors import EXIT_OK, UserInputError
from icrt.runtime.cli.command import Command


def arguments(p) -> None:
    options.add_scorer_options(p, many=("backend", "precision"), exclude=("batch_size",), help={  # --batch-sizes
        "backend": "backends to time, comma-separated (default auto)",
        "precision": "precisions, comma-separated (default: every precision in the bundle)"})
    p.add_argument("--batch-sizes", type=options.csv_list(options.positive_int), default=[1, 8], metavar="1,8,32",
                   help="model inputs per call to time, comma-separated (default 1,8)")
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed calls first (default 3)")
    p.add_argument("--iters", type=options.positive_int, default=20, metavar="N", help="timed calls (default 20)")
    p.add_argument("--images", metavar="PATH", help="image file, folder or glob (default: synthetic JPEGs)")
    p.add_argument("--report", metavar="DIR", default="bench-report",
                   help="folder for report.md, report.json and latency.png (default bench-report)")


def run(args) -> int:
    from icrt.runtime.backends import backend_choices
    from icrt.runtime.base.text import printable
    from icrt.runtime.bundle.precisions import precision_names
    from icrt.runtime.tools.bench import run_bench

    args.backend = args.backend or ["auto"]
    options.check_choices(args.backend, backend_choices(), "--backend")
    options.check_choices(args.precision or [], precision_names(), "--precision")
    base = options.scorer_options(args, model=options.bundle(args), backend="auto", precision="fp32")
    report = run_bench(base, backends=args.backend, precisions=args.precision, batch_sizes=args.batch_sizes,
                       warmup=args.warmup, iters=args.iters, images=args.images, report_dir=args.report)
    if not report["results"]:
        raise UserInputError("nothing could be timed (see the skipped settings above)")
    print(printable(os.path.join(args.report, "report.md")))
    return EXIT_OK


COMMAND = Command(
    "bench", help="measure latency and throughput; writes report.md, report.json, latency.png",
    description="Time a bundle per backend, precision and batch size: inference alone and end to end (decoding "
                "included); writes DIR/report.md, report.json and (with matplotlib) latency.png.",
    examples=(("icrt bench", "the default model, every precision, batches 1 and 8"),
              ("icrt bench -m bundles/d2s --precision fp32,int8 --batch-sizes 1,8,32 --report bench/", ""),
              ("icrt bench --images photos/ --iters 50", "timed on your own images")),
    arguments=arguments, run=run)
