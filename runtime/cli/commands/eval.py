"""``icrt eval``: score the images of a labels file with a bundle and say how well the scores follow the labels
(pooled and per-category SRCC, PLCC, KRCC, RMSE): ``runtime.tools.evaluate``, torch- and scipy-free.

Exit codes (runtime.base.errors): 0 every row read and every image scored; 1 some images failed or some rows could
not be read (one stderr line each; the figures are over the images scored); 2 usage, labels-file, model or output
errors (a file that cannot be read at all, no readable row, -o not writable, a model that fails while running or
gives NaN for every image).
"""
from __future__ import annotations

import sys
import time

import icrt.runtime.cli.options as options
from icrt.runtime.base.errors import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, UserInputError
from icrt.runtime.cli.command import Command, pipe_closed, ran_line, write_stdout


def arguments(p) -> None:
    p.add_argument("--data", required=True, metavar="LABELS",
                   help="the labelled images: a CSV with the header image,score[,category] (image paths relative to "
                        "the CSV; a folder holding labels.csv works too) or an IC9600 folder (images/ and one "
                        "'name  score' list per split)")
    p.add_argument("--split", metavar="SPLIT", help="IC9600 folders: score the images of SPLIT.txt (default test); a "
                   "labels CSV is scored whole")
    options.add_scorer_options(p)
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (for people, default) or json (for scripts: pooled, per_category, n, failed, ...)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the figures here (atomically) instead of stdout")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no closing line on stderr (what ran, images scored and failed, images/s, wall time); "
                        "errors are still told")


def _write(args, data: bytes) -> int:
    from icrt.runtime.base.files import write_bytes
    from icrt.runtime.base.text import printable

    try:
        if args.output:
            write_bytes(args.output, data)
        else:
            write_stdout(data)
    except BrokenPipeError:
        pipe_closed()
        return EXIT_FAILURES
    except OSError as e:
        where = f"-o {printable(args.output)}" if args.output else "the figures to stdout"
        raise UserInputError(f"cannot write {where}: {e.strerror or e}") from None
    return EXIT_OK


def run(args) -> int:
    from icrt.runtime.base.files import destination_problem
    from icrt.runtime.base.text import printable
    from icrt.runtime.scoring.labels import read_labels
    from icrt.runtime.scoring.scorer import Scorer
    from icrt.runtime.tools.evaluate import failure_line, render, score_labels
    from icrt.runtime.tools.formats import encode
    from icrt.runtime.tools.progress import Progress

    if args.output and (problem := destination_problem(args.output)):
        raise UserInputError(f"cannot write -o {printable(args.output)}: {problem}")
    labels = read_labels(args.data, args.split)
    for p in labels.problems:  # one line per row that cannot be read; the rest go on
        print(f"icrt: {printable(str(p))}", file=sys.stderr)
    if not labels.rows:
        raise UserInputError(f"{labels.source}: no readable row with an image and a score, nothing to evaluate")
    scorer = Scorer.open(options.scorer_options(args))
    started = time.monotonic()
    with Progress(len(labels.rows), desc="evaluating") as bar:
        def told(label, rec):
            if "error" in rec:  # one line per image, whatever its name holds
                bar.line(failure_line(label, rec["error"]))
            bar.update(1)

        result = score_labels(scorer, labels, progress=told)
    code = _write(args, encode(render(result, args.format)))
    if result["model_problem"]:  # the model is broken, not the images: a model error, after the figures are out
        print(f"icrt: error: {printable(result['model_problem'])}", file=sys.stderr)
        code = EXIT_USAGE
    if not args.quiet:
        print(ran_line(scorer.what_ran(), result["n"], result["failed"], time.monotonic() - started), file=sys.stderr)
    if code:
        return code
    return EXIT_FAILURES if result["failed"] or result["unreadable_rows"] else EXIT_OK


COMMAND = Command(
    "eval", help="how good a model is on your labelled images (SRCC, PLCC, KRCC, RMSE)",
    description="Score the images of a labels file (a CSV image,score[,category], or an IC9600 folder: its test split "
                "unless --split says otherwise) with a model bundle (default: the bundled model), and measure the "
                "scores against the labels: SRCC, PLCC, KRCC and RMSE over the images scored, pooled and per "
                "category (a category with fewer than 3 scored images is not computable). Exit 0: every row read "
                "and every image scored; 1: some images failed or rows could not be read (the figures are over the "
                "rest); 2: usage, labels file, model or output errors.",
    examples=(("icrt eval --data labels.csv", "the default model on your labelled images"),
              ("icrt eval -m bundles/d2s --data IC9600/ --precision int8", "a bundle on IC9600's test split, int8"),
              ("icrt eval --data labels.csv --format json -o eval.json", "the figures for a script")),
    arguments=arguments, run=run)
