"""``icrt score``: score images (files, folders, globs, ``--files-from``, ``--shard``) with a bundle, or through a
server (``--url``); a table, JSON, JSONL or CSV on stdout or ``-o``. JSONL and CSV are written a row at a time as
images are scored (:class:`Rows`): a run stopped half-way keeps its rows in ``FILE.partial``.

Exit codes (runtime.base.errors): 0 every file scored; 1 some files failed (the rest are scored and written); 2
usage, model or destination errors (-o / --heatmap are checked before scoring; a write that fails leaves the scores
in a fallback file, see ``_fallback``; a model that fails at run time, or whose every score is NaN);
EXIT_UNAVAILABLE when the backend asked for cannot run here.
"""
from __future__ import annotations

import logging
import os
import stat
import sys
import time

import icrt.runtime.cli.options as options
from icrt.runtime.base.errors import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, UserInputError
from icrt.runtime.cli.command import Command, pipe_closed, ran_line, write_stdout

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
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no closing line on stderr (what ran: backend and version, precision, device; images "
                        "scored and failed, images/s, wall time); errors are still told")


def _err(msg: str) -> None:
    print(f"icrt: error: {msg}", file=sys.stderr)


def _destination_problem(args) -> str | None:
    """Why -o or --heatmap could not be written, found before any scoring (None: they look fine)."""
    from icrt.runtime.base.files import (
        PARTIAL_SUFFIX,
        destination_problem,
        fd_target,
        folder_problem,
        owned_problem,
        resolve,
    )
    from icrt.runtime.base.text import printable
    from icrt.runtime.tools.formats import STREAMED

    if args.output and (p := destination_problem(args.output)):
        return f"cannot write -o {printable(args.output)}: {p}"
    if args.output and args.format in STREAMED and fd_target(args.output) is None:
        target, st = resolve(args.output)
        partial = target + PARTIAL_SUFFIX
        if (st is None or stat.S_ISREG(st.st_mode)) and (p := owned_problem(partial)):
            return f"cannot write -o {printable(args.output)}: {printable(partial)} (where its rows go while they " \
                   f"are scored) {p}"
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


def _save_instead(problem: str, data: bytes, fmt: str) -> int:
    from icrt.runtime.base.text import printable

    saved = _fallback(data, fmt)
    _err(f"{problem}; the scores were saved in {printable(saved)}" if saved
         else f"{problem}; the scores could not be saved anywhere")
    return EXIT_USAGE


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
            write_stdout(data)
            return EXIT_OK
        except BrokenPipeError:  # the reader stopped reading (| head): nothing to save, nothing to say
            pipe_closed()
            return EXIT_FAILURES
        except OSError as e:
            problem = f"cannot write the scores to stdout: {e.strerror or e}"
    return _save_instead(problem, data, args.format)


class Rows:
    """Where the records of a run go. ``jsonl`` and ``csv`` are written a row at a time as records come: to stdout
    (flushed per row) or, for ``-o FILE``, to ``FILE.partial`` beside it, renamed over FILE at the end
    (``runtime.base.files.GrowingFile``), so that an interrupted run keeps the rows scored so far and FILE stays as
    it was. ``table`` and ``json`` are written whole at the end (:func:`_write_out`). A write that fails mid-run
    ends the writing, not the scoring: every record goes to a fallback file at the end, as for a write that fails
    there."""

    def __init__(self, args):
        from icrt.runtime.tools.formats import STREAMED, stream_columns

        self.args, self.records, self.file, self.problem = args, [], None, None
        self.streamed = args.format in STREAMED
        self.columns = stream_columns(bool(args.heatmap)) if self.streamed else None
        self.pipe_closed = False  # the reader of stdout went away: the run ends

    def open(self) -> None:
        """Create -o's partial file and write the CSV header (before scoring; a UserInputError when it cannot be)."""
        from icrt.runtime.base.files import GrowingFile
        from icrt.runtime.base.text import printable
        from icrt.runtime.tools.formats import header

        if not self.streamed:
            return
        if self.args.output:
            try:
                self.file = GrowingFile(self.args.output)
            except OSError as e:
                where = printable(os.fsdecode(e.filename)) + " " if isinstance(e.filename, (str, bytes)) else ""
                raise UserInputError(f"cannot write -o {printable(self.args.output)}: {where}{e.strerror or e}") \
                    from None
        self._put(header(self.args.format, self.columns))

    def add(self, rec: dict) -> bool:
        """Keep ``rec`` and write its row (streamed formats); False when the run should end (stdout's reader left)."""
        from icrt.runtime.tools.formats import row

        self.records.append(rec)
        if self.streamed:
            self._put(row(rec, self.args.format, self.columns))
        return not self.pipe_closed

    def _put(self, text: str) -> None:
        from icrt.runtime.base.text import printable
        from icrt.runtime.tools.formats import encode

        if not text or self.problem or self.pipe_closed:
            return
        try:
            if self.file is not None:
                self.file.write(encode(text))
            else:
                write_stdout(encode(text))
        except BrokenPipeError:  # | head, or -o /dev/stdout | head
            self.pipe_closed = True
            if self.file is None:
                pipe_closed()
        except OSError as e:
            self.problem = (f"cannot write -o {printable(self.args.output)}: {e.strerror or e}" if self.file is not None
                            else f"cannot write the scores to stdout: {e.strerror or e}")

    def finish(self) -> int:
        """Write what is left; the exit code of the writing (0, or 1 for a closed pipe, 2 for a fallback file)."""
        from icrt.runtime.base.text import printable
        from icrt.runtime.tools.formats import encode, render

        if not self.streamed:
            return _write_out(self.args, encode(render(self.records, self.args.format)))
        if self.pipe_closed:
            if self.file is not None:
                self.file.stop()
            return EXIT_FAILURES
        if self.problem is None and self.file is not None:
            try:
                self.file.commit()
            except OSError as e:
                self.problem = f"cannot write -o {printable(self.args.output)}: {e.strerror or e}"
        if self.problem is None:
            return EXIT_OK
        code = _save_instead(self.problem, encode(render(self.records, self.args.format)), self.args.format)
        if self.file is not None:
            self.file.discard()  # the fallback file holds every row
        return code

    def stopped(self) -> str | None:
        """The run stops before its end: the partial file holding the rows written so far (None: there is none; one
        with no row, a CSV header at most, is removed)."""
        if self.file is None:
            return None
        if self.problem is not None:  # the writing had stopped already: what it wrote stays, not told as complete
            self.file.stop()
            return None
        if not self.records:
            self.file.discard()
            return None
        return self.file.stop()


def run(args) -> int:
    from icrt.runtime.base.text import printable
    from icrt.runtime.scoring.heatmap import HeatmapWriter, heatmap_names_problem
    from icrt.runtime.scoring.inputs import gather, in_input_order
    from icrt.runtime.tools.progress import Progress

    problem = _destination_problem(args)
    if problem:
        raise UserInputError(problem)
    problems = {}  # paths found bad while listing (symlink loops) -> problem
    paths = gather(options.input_options(args), problems)  # PATHs, --files-from, --shard
    if args.heatmap and (problem := heatmap_names_problem(args.heatmap, paths)):
        raise UserInputError(problem)  # a link or FIFO where a heatmap would go: refused before scoring
    if args.url:  # the same records, from a server (icrt.runtime.serving.client)
        from icrt.runtime.serving.client import open_remote
        if args.heatmap:
            raise UserInputError("--heatmap with --url: the server has the model and draws no maps")
        scorer = open_remote(args.url, options.scorer_options(args))
    else:
        from icrt.runtime.scoring.scorer import Scorer
        scorer = Scorer.open(options.scorer_options(args))
    heatmaps = HeatmapWriter(args.heatmap, scorer.score_range) if args.heatmap else None
    started = time.monotonic()
    failures = []  # destination errors met while scoring
    rows = Rows(args)
    rows.open()
    try:
        with Progress(len(paths)) as bar:
            for rec in in_input_order(scorer, paths, problems, maps=heatmaps.wanted if heatmaps else False):
                if heatmaps is not None and (problem := heatmaps.draw(rec)):
                    failures.append(problem)
                    _err(problem)
                if "error" in rec:  # one line per file, whatever its name holds
                    bar.line(f"icrt: {printable(rec['image'])}: {printable(rec['error'])}")
                bar.update(1)
                if not rows.add(rec):
                    break
    except BaseException:  # Ctrl+C, SIGTERM, an error: the rows written so far stay in the partial file
        partial = rows.stopped()
        if partial:
            _err(f"stopped after {len(rows.records)} of {len(paths)} image(s): their rows are in "
                 f"{printable(partial)} (-o {printable(args.output)} was left as it was)")
        raise
    records = rows.records
    code = rows.finish() or (EXIT_USAGE if failures else EXIT_OK)
    failed = sum("error" in r for r in records)
    if failed:
        log.warning("icrt: %d of %d file(s) could not be scored", failed, len(records))
    # a model that failed at run time, or gave NaN / infinity for every image: a model error (exit 2), told after every
    # record is out (a remote scorer has no such check: the server's own records say it)
    problem = getattr(scorer, "model_problem", lambda: None)()
    if problem:
        _err(problem)
        code = code or EXIT_USAGE
    if not args.quiet:  # the last line: what ran
        print(ran_line(scorer.what_ran(), len(records) - failed, failed, time.monotonic() - started), file=sys.stderr)
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
