"""``icrt score``: score images (files, folders, globs, ``--files-from``, ``--shard``) with a bundle, or through a
server (``--url``); a table, JSON, JSONL or CSV on stdout or ``-o``.

Exit codes (runtime.base.errors): 0 every file scored; 1 some files failed (the rest are scored and written); 2
usage, model or destination errors (-o / --heatmap are checked before scoring; a write that fails at the end
leaves the scores in a fallback file, see ``_fallback``); EXIT_UNAVAILABLE when the backend asked for cannot
run here.
"""
from __future__ import annotations

import logging
import os
import sys

import icrt.runtime.cli.options as options
from icrt.runtime.base.errors import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, UserInputError
from icrt.runtime.cli.command import Command

log = logging.getLogger("icrt")


def arguments(p) -> None:
    from icrt.runtime.tools.formats import FORMATS

    options.add_inputs(p)
    options.add_scorer_options(p)
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (aligned columns, default), json (one list), jsonl (one object a line) or csv")
    p.add_argument("-o", "--output", metavar="FILE", help="write the results here (atomically) instead of stdout")
    p.add_argument("--heatmap", metavar="DIR", help="write one heatmap PNG per image into DIR: patch scores (local "
                   "window scores for whole-image models) over the image")
    p.add_argument("--url", metavar="URL", help="score through a server instead (icrt serve, or Triton with an "
                   "icrt triton repository): http://HOST:PORT or grpc://HOST:PORT; --batch-size: images per request")


def _err(msg: str) -> None:
    print(f"icrt: error: {msg}", file=sys.stderr)


def _destination_problem(args) -> str | None:
    """Why -o or --heatmap could not be written, found before any scoring (None: they look fine)."""
    from icrt.runtime.base.files import destination_problem, folder_problem
    from icrt.runtime.base.text import printable

    if args.output and (p := destination_problem(args.output)):
        return f"cannot write -o {printable(args.output)}: {p}"
    if args.heatmap and (p := folder_problem(args.heatmap)):
        return f"cannot write heatmaps into --heatmap {printable(args.heatmap)}: {p}"
    return None


def _fallback(data: bytes, fmt: str) -> str | None:
    """Save the scores in ./icrt-scores-<pid>.<fmt>, else in the temporary folder; the name, or None."""
    import tempfile

    name = f"icrt-scores-{os.getpid()}.{'txt' if fmt == 'table' else fmt}"
    for folder in (os.curdir, tempfile.gettempdir()):
        path = os.path.join(folder, name)
        try:
            with open(path, "xb") as f:
                f.write(data)
            return path
        except OSError:
            continue
    return None


def _write_out(args, data: bytes) -> int:
    """Write the rendered scores to -o or stdout; when that fails, to a fallback file (exit 2)."""
    from icrt.runtime.base.text import printable

    if args.output:
        from icrt.runtime.base.files import write_bytes
        try:
            write_bytes(args.output, data)
            return EXIT_OK
        except BrokenPipeError:  # -o /dev/stdout | head: the reader stopped reading, as for stdout below
            return EXIT_FAILURES
        except OSError as e:
            problem = f"cannot write -o {printable(args.output)}: {e.strerror or e}"
    else:
        try:
            out = getattr(sys.stdout, "buffer", None)
            sys.stdout.flush()
            if out is None:  # a text-only stream (tests, embedding)
                sys.stdout.write(data.decode("utf-8", "surrogateescape"))
                sys.stdout.flush()
            else:
                out.write(data)
                out.flush()
            return EXIT_OK
        except BrokenPipeError:  # the reader stopped reading (| head): nothing to save, nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILURES
        except OSError as e:
            problem = f"cannot write the scores to stdout: {e.strerror or e}"
    saved = _fallback(data, args.format)
    _err(f"{problem}; the scores were saved in {printable(saved)}" if saved
         else f"{problem}; the scores could not be saved anywhere")
    return EXIT_USAGE


def run(args) -> int:
    from icrt.runtime.base.text import printable
    from icrt.runtime.scoring.heatmap import HeatmapWriter
    from icrt.runtime.scoring.inputs import gather, in_input_order
    from icrt.runtime.tools.formats import encode, render
    from icrt.runtime.tools.progress import Progress

    problem = _destination_problem(args)
    if problem:
        raise UserInputError(problem)
    problems = {}  # paths found bad while listing (symlink loops) -> problem
    paths = gather(options.input_options(args), problems)  # PATHs, --files-from, --shard
    if args.url:  # the same records, from a server (icrt.runtime.serving.client)
        from icrt.runtime.serving.client import open_remote
        if args.heatmap:
            raise UserInputError("--heatmap with --url: the server has the model and draws no maps")
        scorer = open_remote(args.url, options.scorer_options(args))
    else:
        from icrt.runtime.scoring.scorer import Scorer
        scorer = Scorer.open(options.scorer_options(args))
    failures = []  # destination errors met while scoring
    heatmaps = HeatmapWriter(args.heatmap, scorer.score_range) if args.heatmap else None
    records = []
    with Progress(len(paths)) as bar:
        for rec in in_input_order(scorer, paths, problems, maps=heatmaps.wanted if heatmaps else False):
            if heatmaps is not None and (problem := heatmaps.draw(rec)):
                failures.append(problem)
                _err(problem)
            if "error" in rec:  # one line per file, whatever its name holds
                bar.line(f"icrt: {printable(rec['image'])}: {printable(rec['error'])}")
            bar.update(1)
            records.append(rec)
    code = _write_out(args, encode(render(records, args.format))) or (EXIT_USAGE if failures else EXIT_OK)
    failed = sum("error" in r for r in records)
    if failed:
        log.warning("icrt: %d of %d file(s) could not be scored", failed, len(records))
    run_failures = getattr(scorer, "run_failures", None)
    if run_failures:  # a model that fails at run time is a model error (exit 2), reported after every record is out
        _err(run_failures.message())
        return code or EXIT_USAGE
    return code or (EXIT_FAILURES if failed else EXIT_OK)


COMMAND = Command(
    "score", help="score images (files, folders, globs)",
    description="Score images with a model bundle (default: the bundled model), or through a server (--url). Scores "
                "are in [0, 1], higher = more complex. Exit 0: every file scored; 1: some failed (the rest are "
                "written); 2: usage, model or output errors.",
    examples=(("icrt score examples/*.jpg", "a table on stdout"),
              ("icrt score photos/ --recursive --format csv -o scores.csv", "every image below photos/"),
              ("icrt score photo.jpg -m bundles/d2s --precision int8", "your own bundle, int8"),
              ("icrt score photos/ --heatmap maps/", "also where each image is complex"),
              ("icrt score --files-from list.txt --shard 0/4", "a quarter of a list")),
    arguments=arguments, run=run)
