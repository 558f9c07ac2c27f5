"""`icrt` command line: score, info, bench. A thin layer over :mod:`runtime.scorer` and :mod:`runtime.bench`.

Exit codes (runtime.errors): 0 every file scored; 1 some files failed (the rest are scored and written); 2
usage, model or destination errors (-o / --heatmap are checked before scoring; a write that fails at the end
leaves the scores in a fallback file, see ``_fallback``); EXIT_UNAVAILABLE when the backend asked for cannot
run here. Commands run through ``runtime.errors.run_command``, the one place that turns an ``IcrtError`` into
an ``icrt: error: ...`` line and its exit code; any other exception is a bug and keeps its traceback.

Start-up imports only argparse here (and the light registry / manifest names); numpy, Pillow and onnxruntime
load when a command needs them, and tqdm / matplotlib only when a progress bar or a plot is drawn.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, UserInputError, run_command, setup_logging

EXIT_SOME_FAILED = EXIT_FAILURES
PROGRESS_MIN_FILES = 10
log = logging.getLogger("icrt")


def _csv_list(kind):
    def parse(text):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


MAX_BATCH = 1024  # model inputs per call: beyond this, memory grows with no speed left to gain


def _batch_size(text):
    v = _positive_int(text)
    if v > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"at most {MAX_BATCH}, got {v}")
    return v


def _threads(text):
    """1 .. 4 x the CPUs: more threads than that only add scheduling overhead (5000 took 94 s per image)."""
    v = _positive_int(text)
    cap = 4 * (os.cpu_count() or 1)
    if v > cap:
        raise argparse.ArgumentTypeError(f"at most {cap} (4 x the {os.cpu_count()} CPUs), got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .backends import backend_choices
    from .formats import FORMATS
    from .manifest import PRECISIONS
    from .worklist import add_worklist_options

    backends = backend_choices()
    p = argparse.ArgumentParser(prog="icrt", description="Score image complexity with an exported icrt model bundle.")
    sub = p.add_subparsers(dest="command", title="commands")

    s = sub.add_parser("score", help="score images (files, folders, globs)")
    s.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders or glob patterns")
    s.add_argument("-m", "--model", metavar="BUNDLE", help="model bundle folder (default: the bundled default model)")
    s.add_argument("--backend", choices=backends, default="auto")
    s.add_argument("--precision", choices=PRECISIONS, default="fp32")
    s.add_argument("--format", choices=FORMATS, default="table")
    s.add_argument("-o", "--output", metavar="FILE", help="write the results here (atomically) instead of stdout")
    s.add_argument("--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    add_worklist_options(s)
    s.add_argument("--batch-size", type=_batch_size, default=None, metavar="N",
                   help="model inputs (images or patches, across images) per inference call (default: as many as "
                        "fit in 64 MB for the model's input size, at most 32: 1 for the default model; larger values "
                        "are lowered to what fits in 2 GB)")
    s.add_argument("--heatmap", metavar="DIR", help="write one patch-score heatmap PNG per image into DIR")
    s.add_argument("--threads", type=_threads, default=None, help="CPU threads for onnxruntime")
    s.add_argument("--url", metavar="URL", help="score through a server instead (icrt serve, or Triton with an "
                   "icrt triton repository): http://HOST:PORT or grpc://HOST:PORT; --batch-size: images per request")

    i = sub.add_parser("info", help="show a bundle's model card")
    i.add_argument("bundle", nargs="?", metavar="BUNDLE", help="model bundle folder (default: the bundled model)")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")

    b = sub.add_parser("bench", help="measure latency and throughput; writes report.md, report.json, latency.png")
    b.add_argument("-m", "--model", metavar="BUNDLE")
    b.add_argument("--backend", type=_csv_list(str), default=["auto"], metavar="|".join(backends) + "[,...]")
    b.add_argument("--precision", type=_csv_list(str), default=None, metavar=",".join(PRECISIONS),
                   help="default: every precision in the bundle")
    b.add_argument("--batch-sizes", type=_csv_list(int), default=[1, 8], metavar="1,8,32")
    b.add_argument("--warmup", type=int, default=3, metavar="N")
    b.add_argument("--iters", type=_positive_int, default=20, metavar="N")
    b.add_argument("--images", metavar="PATH", help="image file, folder or glob (default: synthetic JPEGs)")
    b.add_argument("--report", metavar="DIR", default="bench-report")
    b.add_argument("--threads", type=_threads, default=None)
    for name in COMMAND_MODULES:  # further commands, one module each: add_command(sub) -> (name, run)
        import importlib

        command, run = importlib.import_module(name).add_command(sub)
        COMMANDS[command] = run
    return p


def _err(msg: str) -> None:
    print(f"icrt: error: {msg}", file=sys.stderr)


def _bundle(path):
    from .defaults import default_bundle
    return path if path else default_bundle()


def _os_error(e: OSError) -> str:
    from .formats import printable
    if isinstance(e.filename, (str, bytes)) and e.strerror:
        return f"{printable(os.fsdecode(e.filename))}: {e.strerror}"
    return printable(str(e))


def _destination_problem(args) -> str | None:
    """Why -o or --heatmap could not be written, found before any scoring (None: they look fine)."""
    from .files import destination_problem, folder_problem
    from .formats import printable

    if args.output and (p := destination_problem(args.output)):
        return f"cannot write -o {printable(args.output)}: {p}"
    if args.heatmap and (p := folder_problem(args.heatmap)):
        return f"cannot write heatmaps into --heatmap {printable(args.heatmap)}: {p}"
    if args.heatmap and not getattr(args, "url", None):  # with --url, --heatmap is refused for its own reason
        from .bench import has_matplotlib

        if not has_matplotlib():
            return "--heatmap needs matplotlib, which the slim runtime leaves out: pip install 'icrt[plots]'"
    return None


def _records(scorer, paths, problems, heatmap_dir, progress, failures):
    """Records in input order: the scorer's, and an error record for each path found bad while listing
    (``problems``). A heatmap that cannot be written ends the heatmaps, not the scoring (told in ``failures``)."""
    done = 0
    while done < len(paths):
        rest = paths[done:]
        it = scorer.iter_score([p for p in rest if p not in problems], heatmap_dir=heatmap_dir, progress=progress)
        try:
            for p in rest:
                if p in problems:
                    rec = {"image": p, "error": problems[p]}
                    progress(rec)
                else:
                    rec = next(it)
                yield rec
                done += 1
        except OSError as e:
            if not heatmap_dir:
                raise
            failures.append(f"cannot write a heatmap: {_os_error(e)}; scoring goes on without heatmaps")
            _err(failures[-1])
            heatmap_dir = None


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
    from .formats import printable

    if args.output:
        from .files import write_bytes
        try:
            write_bytes(args.output, data)
            return EXIT_OK
        except BrokenPipeError:  # -o /dev/stdout | head: the reader stopped reading, as for stdout below
            return EXIT_SOME_FAILED
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
            return EXIT_SOME_FAILED
        except OSError as e:
            problem = f"cannot write the scores to stdout: {e.strerror or e}"
    saved = _fallback(data, args.format)
    _err(f"{problem}; the scores were saved in {printable(saved)}" if saved
         else f"{problem}; the scores could not be saved anywhere")
    return EXIT_USAGE


def cmd_score(args) -> int:
    from .formats import encode, printable, render
    from .worklist import gather

    problem = _destination_problem(args)
    if problem:
        raise UserInputError(problem)
    problems = {}  # paths found bad while listing (symlink loops) -> problem
    paths = gather(args, problems)  # PATHs, --files-from, --shard (runtime/worklist.py)
    if args.url:  # the same records, from a server (runtime/client.py)
        from .client import open_remote
        scorer = open_remote(args)
    else:
        from .scorer import Scorer
        scorer = Scorer.load(_bundle(args.model), backend=args.backend, precision=args.precision,
                             batch_size=args.batch_size, threads=args.threads)
    bar = None
    if len(paths) >= PROGRESS_MIN_FILES and (sys.stderr.isatty() or os.environ.get("ICRT_PROGRESS") == "1"):
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(paths), unit="image", file=sys.stderr, desc="scoring", leave=True)
        except ImportError:  # tqdm comes with the [plots] extra; without it, no bar
            pass

    def progress(rec):
        if "error" in rec:  # one line per file, whatever its name holds
            line = f"icrt: {printable(rec['image'])}: {printable(rec['error'])}"
            bar.write(line, file=sys.stderr) if bar else print(line, file=sys.stderr)
        if bar:
            bar.update(1)

    failures = []  # destination errors met while scoring
    try:
        records = list(_records(scorer, paths, problems, args.heatmap, progress, failures))
    finally:
        if bar:
            bar.close()
    code = _write_out(args, encode(render(records, args.format))) or (EXIT_USAGE if failures else EXIT_OK)
    failed = sum("error" in r for r in records)
    if failed:
        log.warning("icrt: %d of %d file(s) could not be scored", failed, len(records))
    run_failures = getattr(scorer, "run_failures", None)
    if run_failures:  # a model that fails at run time is a model error (exit 2), reported after every record is out
        _err(run_failures.message())
        return code or EXIT_USAGE
    return code or (EXIT_SOME_FAILED if failed else EXIT_OK)


def cmd_info(args) -> int:
    from .info import model_card
    from .manifest import load_manifest

    m = load_manifest(_bundle(args.bundle))
    if args.json:
        import json
        sys.stdout.write(json.dumps(m.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(model_card(m))
    return EXIT_OK


def cmd_bench(args) -> int:
    from .backends import backend_choices
    from .bench import run_bench
    from .manifest import PRECISIONS

    bad = [b for b in args.backend if b not in backend_choices()] + [p for p in args.precision or [] if p not in PRECISIONS]
    if bad or any(n < 1 for n in args.batch_sizes) or not args.batch_sizes:
        raise UserInputError(f"invalid --backend/--precision/--batch-sizes value(s): "
                             f"{', '.join(map(str, bad)) or args.batch_sizes}")
    report = run_bench(_bundle(args.model), backends=args.backend, precisions=args.precision,
                       batch_sizes=args.batch_sizes, warmup=args.warmup, iters=args.iters, images=args.images,
                       report_dir=args.report, threads=args.threads)
    if not report["results"]:
        raise UserInputError("nothing could be timed (see the skipped settings above)")
    print(os.path.join(args.report, "report.md"))
    return EXIT_OK


COMMANDS = {"score": cmd_score, "info": cmd_info, "bench": cmd_bench}
# Commands in their own modules (imported when the parser is built: they must import nothing heavy at module
# level). Each has ``add_command(subparsers) -> (name, run)``; ``run(args) -> exit code``.
COMMAND_MODULES: list[str] = ["runtime.build_cmd", "runtime.triton_cmd", "runtime.serve", "runtime.report_cmd", "runtime.batch_cmd"]


def main(argv=None) -> int:
    from .worklist import shard_argv

    parser = build_parser()
    args = parser.parse_args(shard_argv(sys.argv[1:] if argv is None else argv))
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    setup_logging()
    return run_command("icrt", COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
