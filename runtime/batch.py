"""``icrt batch``: score a large collection into Parquet parts, on one machine or a Ray cluster, resumably.

Output folder (``--out DIR``), every file written atomically (``runtime.files``: a temporary file in DIR, then a
rename, so no reader ever sees half a file):

- ``part-NNNNNN.parquet``: one row per input, columns :data:`COLUMNS` (``path``, ``score``, ``error``,
  ``width``, ``height``, ``patches``); a file that could not be scored has ``error`` set (the text ``icrt score``
  gives) and nulls in the other columns. A part exists only complete: the parts *are* the record of finished work.
- ``run.json``: what the run scores with (bundle, precision), checked when the run is resumed.
- ``summary.json``: counts, errors, score quantiles and histogram, images/s, the bundle's name and versions.
- ``_SUCCESS``: the completion marker, written last.

Engines:

- ``local``: the runtime's ``Scorer`` (its own batching and decode-ahead thread) in this process; records are
  written part by part as they come (at most one part's rows in memory).
- ``ray``: ``ray.data.read_binary_files(paths, include_paths=True)`` -> ``map_batches(ScoreActor)`` on an actor
  pool (one ``Scorer`` per actor, CPU or GPU) -> rows streamed back to this process, which writes the parts. The
  actors decode the bytes with icrt's own decoder, so scores and error texts equal ``icrt score``'s. Files that
  cannot be read as files at all (missing, folders, FIFOs, broken links) get their error rows here, with the
  texts ``icrt score`` gives, and are never handed to Ray (a missing file would fail Ray's whole read).

``--resume`` keeps the rows of the parts already in DIR and skips their paths; a run killed at any moment loses
at most the rows of the part it was filling, and the resumed run ends with exactly one row per input.

A run that cannot make progress fails with a clear message instead of hanging: a watchdog stops it when no row
has come for ``--stall-timeout`` seconds (and Ray Data's own no-progress guard gets the same limit), and a Ray
actor pool that cannot be placed next to its read tasks is refused before it starts (the feasibility note of
issue 14: two 1-CPU actors on 2 CPUs starved the read task forever).
"""
from __future__ import annotations

import _thread
import dataclasses
import functools
import glob
import json
import logging
import math
import os
import sys
import threading
import time

from .errors import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, IcrtError, UnavailableError, UserInputError, one_line

log = logging.getLogger("icrt")

COLUMNS = ("path", "score", "error", "width", "height", "patches")
PART_GLOB = "part-*.parquet"
PART_FORMAT = "part-{:06d}.parquet"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
SUCCESS_FILE = "_SUCCESS"
LOCK_FILE = ".lock"
DEFAULT_PART_ROWS = 5000
DEFAULT_PART_SECONDS = 300.0  # a part is written at least this often while rows come (a kill loses less)
DEFAULT_RAY_BATCH = 16  # images per Ray task given to one actor (64 brought the first rows ~4 s later, more memory)
DEFAULT_STALL_TIMEOUT = 600.0  # seconds without a row before the run is stopped
READ_CPUS = 0.25  # CPUs one Ray read task reserves (Ray's default, 1, starves actors on small machines)
READ_RESERVE = 2 * READ_CPUS  # CPUs kept free of actors, so that reading always goes on
MAX_ERRORS_LISTED = 1000  # errors named in summary.json (all of them are in the parts)
MAX_ERRORS_CHARS = 256 * 1024  # ... and at most this many characters of paths and texts (summary.json stays small)
MAX_ERROR_KINDS = 100  # kinds of problem counted one by one in summary.json (then "other problems")
MAX_LISTED_PATH = 1024  # characters of a path listed there (longer ones are cut, marked with "...")
MAX_ERROR_LINES = 200  # error lines printed on stderr
HISTOGRAM_BINS = 20
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
WATCHDOG_GRACE = 30.0  # seconds the main thread gets to stop after the watchdog fired, before a hard exit


class StalledError(IcrtError):
    """The run made no progress for the stall timeout."""


def row_path(path: str) -> str:
    """The ``path`` cell for an input: the name itself; bytes that are not UTF-8 (lone surrogates of
    ``os.fsdecode``) as ``\\xNN`` escapes, since Parquet strings are UTF-8."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UnavailableError("icrt batch writes Parquet and needs pyarrow: pip install 'icrt[scale]'") from None
    return pa


def schema():
    pa = _pa()
    return pa.schema([("path", pa.string()), ("score", pa.float64()), ("error", pa.string()),
                      ("width", pa.int32()), ("height", pa.int32()), ("patches", pa.int32())])


def records_table(records, names=None):
    """Score records (``runtime.scorer`` dicts) -> a pyarrow Table of :data:`COLUMNS`; ``names`` replaces the
    records' ``image`` (the inputs, in the same order)."""
    pa = _pa()
    cols = {c: [] for c in COLUMNS}
    for i, r in enumerate(records):
        cols["path"].append(row_path(names[i] if names is not None else r["image"]))
        err = r.get("error")
        cols["error"].append(err)
        cols["score"].append(None if err is not None else float(r["score"]))
        for c in ("width", "height", "patches"):
            cols[c].append(None if err is not None else int(r[c]))
    return pa.Table.from_pydict(cols, schema=schema())


# --- the output folder -------------------------------------------------------------------------------


def part_files(out: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(out), PART_GLOB)))


def _part_number(path: str) -> int:
    stem = os.path.basename(path)[len("part-"):-len(".parquet")]
    return int(stem) if stem.isdigit() else -1


def _part_problem(table) -> str | None:
    """What makes ``table`` (a part read back) something other than an icrt batch part, or None: the column types
    of :func:`schema`, a path in every row, and in each row either a finite score or an error."""
    pa = _pa()
    want = schema()
    for name in table.column_names:
        if table.schema.field(name).type != want.field(name).type:
            return f"column {name} has type {table.schema.field(name).type}, not {want.field(name).type}"
    if "path" in table.column_names and table.column("path").null_count:
        return "a row without a path"
    if "score" in table.column_names:
        import numpy as np
        score = table.column("score")
        values = score.drop_null().to_numpy()
        if values.size and not np.all(np.isfinite(values)):
            return "a score that is not a finite number (NaN or infinity)"
        if "error" in table.column_names:
            both = pa.compute.and_(pa.compute.is_valid(score), pa.compute.is_valid(table.column("error")))
            neither = pa.compute.and_(pa.compute.is_null(score), pa.compute.is_null(table.column("error")))
            if pa.compute.any(both).as_py() or pa.compute.any(neither).as_py():
                return "a row with both a score and an error, or neither"
    return None


def read_part(path: str, columns):
    """The pyarrow Table of ``columns`` of one part, checked (:func:`_part_problem`); the part is opened without
    following a link and never blocks (``runtime.files.open_owned``). UserInputError naming the part otherwise."""
    pa = _pa()
    from .files import open_owned
    from .formats import printable

    def bad(problem):
        return UserInputError(f"{printable(path)}: not an icrt batch part ({problem}); move it away and rerun with "
                              "--resume (its rows will be scored again)")
    try:
        with os.fdopen(open_owned(path), "rb") as f:  # read here, parsed from memory (parts are small)
            data = f.read()
        table = pa.parquet.read_table(pa.BufferReader(data), columns=list(columns))
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as e:
        text = getattr(e, "strerror", None) if isinstance(e, OSError) else None
        raise bad(text or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    problem = _part_problem(table)
    if problem:
        raise bad(problem)
    return table


def read_parts(out: str, columns):
    """Yield (part file, checked pyarrow Table of ``columns``) for each finished part (:func:`read_part`)."""
    for p in part_files(out):
        yield p, read_part(p, columns)


def done_paths(out: str) -> set[str]:
    """The ``path`` cells of every finished part, each part checked whole first (a tampered part is refused
    before anything is scored, not when the summary is written)."""
    done = set()
    for _, t in read_parts(out, ["path", "score", "error"]):
        done.update(t.column("path").to_pylist())
    return done


RUN_FORMAT = "icrt-batch/1"
MAX_RUN_BYTES = 1 << 20
OWNED_FILES = (RUN_FILE, SUMMARY_FILE, SUCCESS_FILE, LOCK_FILE)  # besides the parts and .tmp-* files


def file_digest(path: str) -> str | None:
    """SHA-256 of a regular file (hex); None when it is missing or not a regular file."""
    import hashlib

    from .files import open_owned
    try:
        fd = open_owned(path)
    except OSError:
        return None
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(m, precision: str) -> dict:
    """What scores a folder, for ``run.json``: the SHA-256 of each model file the bundle has for ``precision``
    (one per backend form: the file that scores is one of them), of the preprocessing, and the score range."""
    import hashlib

    files = {}
    for key, name in sorted((m.files.get(precision) or {}).items()):
        try:
            path = m.path(name, f"files.{precision}.{key}")
        except IcrtError:
            continue
        files[key] = {"file": name, "sha256": file_digest(path)}
    prep = m.preprocessing.to_dict()
    text = json.dumps(prep, sort_keys=True)
    return {"files": files, "preprocessing": prep,
            "preprocessing_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "score_range": [float(v) for v in m.score.get("range", [0.0, 1.0])]}


def _run_config(job) -> dict:
    return {"format": RUN_FORMAT, "bundle": job.bundle_name, "bundle_path": job.bundle,
            "precision": job.precision, "kind": job.bundle_kind, "model": job.extra.get("model")}


def _read_run(run_file: str) -> dict:
    """A previous run's ``run.json`` (read without following a link); UserInputError when it is not icrt's."""
    from .files import read_owned
    from .formats import printable
    try:
        prev = json.loads(read_owned(run_file, MAX_RUN_BYTES).decode("utf-8"))
        if not isinstance(prev, dict) or prev.get("format") != RUN_FORMAT:
            raise ValueError(f"not an {RUN_FORMAT} run file")
    except (OSError, ValueError, RecursionError) as e:
        why = (getattr(e, "strerror", None) if isinstance(e, OSError) else None) or str(e) or type(e).__name__
        raise UserInputError(f"{printable(run_file)}: {one_line(why)}; is --out an icrt batch folder? (choose a new "
                             "or empty folder)") from None
    return prev


def _check_folder(out: str) -> tuple[dict | None, list[str]]:
    """(the previous run.json or None, the parts) of DIR, or UserInputError: icrt's own files there must be
    regular files (never links, FIFOs or folders), and a folder that is not empty must be an icrt batch folder
    (a run.json of icrt's), so that nothing of someone else's is replaced or removed."""
    from .files import owned_problem
    from .formats import printable

    for name in OWNED_FILES:
        path = os.path.join(out, name)
        problem = owned_problem(path)
        if problem:
            raise UserInputError(f"{printable(path)} {problem}")
    parts = part_files(out)
    for p in parts:
        problem = owned_problem(p)
        if problem:
            raise UserInputError(f"{printable(p)} {problem}")
    run_file = os.path.join(out, RUN_FILE)
    prev = _read_run(run_file) if os.path.lexists(run_file) else None
    if prev is None:
        if parts:
            raise UserInputError(f"--out {printable(out)} holds {len(parts)} part(s) but no {RUN_FILE}: which model "
                                 "scored them cannot be checked, so icrt will not add to them; choose another --out")
        try:
            others = [e for e in os.listdir(out) if e != LOCK_FILE]
        except OSError as e:
            raise UserInputError(f"cannot list --out {printable(out)}: {e.strerror or e}") from None
        if others:
            raise UserInputError(f"--out {printable(out)} is not empty and is not an icrt batch folder (no {RUN_FILE}; "
                                 f"it holds {printable(sorted(others)[0])}{' ...' if len(others) > 1 else ''}): icrt "
                                 "batch would replace or remove files in it; choose a new or empty folder")
    return prev, parts


def _same_model(prev: dict, mine: dict, out: str) -> None:
    """UserInputError unless the previous run scored with the same model (bundle name, precision, model file
    digests, preprocessing, score range)."""
    from .formats import printable

    def refuse(what, there, here):
        raise UserInputError(f"--resume: {printable(out)} was scored with {what} {there}, this run uses {here}; one "
                             "folder holds the scores of one model (use another --out)")
    for key in ("bundle", "precision"):
        if prev.get(key) != mine[key]:
            refuse(key, printable(repr(prev.get(key))), printable(repr(mine[key])))
    was, now = prev.get("model"), mine["model"]
    if not isinstance(was, dict):
        raise UserInputError(f"--resume: {printable(os.path.join(out, RUN_FILE))} records no model digest (an older "
                             "icrt wrote it), so the model cannot be checked; use another --out")
    files_was = was.get("files") if isinstance(was.get("files"), dict) else {}
    for key, entry in now["files"].items():
        old = files_was.get(key)
        old_digest = old.get("sha256") if isinstance(old, dict) else None
        if old_digest != entry["sha256"]:
            refuse(f"another {key} model file", f"({entry['file']}: sha256 {str(old_digest)[:12]}...)",
                   f"sha256 {str(entry['sha256'])[:12]}...")
    if set(files_was) != set(now["files"]):
        refuse("model files for", printable(", ".join(sorted(map(str, files_was)))), ", ".join(sorted(now["files"])))
    if was.get("preprocessing_sha256") != now["preprocessing_sha256"]:
        refuse("other preprocessing", printable(json.dumps(was.get("preprocessing"))[:200]),
               json.dumps(now["preprocessing"]))
    if was.get("score_range") != now["score_range"]:
        refuse("the score range", printable(repr(was.get("score_range"))), repr(now["score_range"]))


def prepare_out(job) -> set[str]:
    """Check DIR (before any work), clean what a killed run left, and return the paths already done."""
    from .files import folder_problem
    from .formats import printable

    out = job.out
    problem = folder_problem(out)
    if problem:
        raise UserInputError(f"cannot write into --out {printable(out)}: {problem}")
    os.makedirs(out, exist_ok=True)
    prev, parts = _check_folder(out)
    job.extra["lock"] = _lock(out)
    parts = part_files(out)  # again, under the lock
    if parts and not job.resume:
        raise UserInputError(f"--out {printable(out)} already holds a batch run ({len(parts)} part(s)): pass "
                             "--resume to continue it, or choose another folder")
    if parts:
        if prev is None:
            prev, _ = _check_folder(out)
        _same_model(prev, _run_config(job), out)
    done = done_paths(out) if parts else set()
    for stale in glob.glob(os.path.join(glob.escape(out), ".tmp-*")):  # a killed run's half-written file
        try:
            os.remove(stale)  # a link is removed, never what it points to
        except OSError:
            pass
    try:
        os.remove(os.path.join(out, SUCCESS_FILE))
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserInputError(f"cannot remove {printable(os.path.join(out, SUCCESS_FILE))}: {e.strerror or e}") from None
    write_owned_file(os.path.join(out, RUN_FILE), json.dumps(_run_config(job), indent=2) + "\n")
    return done


def write_owned_file(path: str, data) -> None:
    """Write one of icrt's files in DIR (``runtime.files.write_owned``: atomic, never through a link); an
    IcrtError naming the file and the problem (the parts already written are kept)."""
    from .files import write_owned
    from .formats import printable
    try:
        write_owned(path, data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as e:
        raise IcrtError(f"cannot write {printable(path)}: {e.strerror or e} (the parts written so far are kept: fix "
                        "the cause, then rerun with --resume)") from None


def _lock(out: str):
    """Hold ``DIR/.lock`` (an advisory lock, released when the process ends, even by SIGKILL): one run writes a
    folder at a time (two would number their parts alike). The open file; keep it for the run. The lock file is
    opened without following a link and must be a regular file (``runtime.files.open_owned``)."""
    import fcntl

    from .files import open_owned
    from .formats import printable
    path = os.path.join(out, LOCK_FILE)
    try:
        f = os.fdopen(open_owned(path, write=True), "r+")
    except OSError as e:
        raise UserInputError(f"{printable(path)} {e.strerror or e}" if e.strerror and e.strerror.startswith(("is ", "has "))
                             else f"cannot open {printable(path)}: {e.strerror or e}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = printable(f.read(200).strip())
        f.close()
        raise UserInputError(f"--out {printable(out)} is being written by another icrt batch run ({holder or 'unknown'}); "
                             "give each run (each shard) its own folder") from None
    f.seek(0)
    f.truncate()
    import socket
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


class PartWriter:
    """Buffers rows and writes ``part-NNNNNN.parquet`` files of ``part_rows`` rows, each atomically."""

    def __init__(self, out: str, part_rows: int = DEFAULT_PART_ROWS, progress=None,
                 part_seconds: float = DEFAULT_PART_SECONDS):
        self.out, self.part_rows, self.progress = out, max(1, int(part_rows)), progress
        self.part_seconds = part_seconds
        self.buffer, self.buffered = [], 0
        self.oldest = None  # when the oldest buffered row came
        self.next_part = max([_part_number(p) for p in part_files(out)] + [-1]) + 1
        self.rows = self.errors = 0
        self.parts = []
        self.error_lines = 0

    def add(self, table) -> None:
        """Add a Table of :data:`COLUMNS` rows."""
        if table.num_rows == 0:
            return
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.oldest is None:
            self.oldest = time.monotonic()
        self.rows += table.num_rows
        errors = table.column("error")
        n_err = table.num_rows - errors.null_count
        self.errors += n_err
        if n_err:
            self._tell_errors(table)
        if self.progress:
            self.progress(table.num_rows)
        while self.buffered >= self.part_rows:
            self._flush(self.part_rows)
        if self.buffered and time.monotonic() - self.oldest >= self.part_seconds:  # a slow run still checkpoints
            self._flush(self.buffered)

    def _tell_errors(self, table) -> None:
        from .formats import printable
        for p, e in zip(table.column("path").to_pylist(), table.column("error").to_pylist()):
            if e is None:
                continue
            self.error_lines += 1
            if self.error_lines <= MAX_ERROR_LINES:
                _stderr_line(f"icrt: {printable(p)}: {printable(e)}")
            elif self.error_lines == MAX_ERROR_LINES + 1:
                _stderr_line("icrt: more files could not be scored; their errors are in the parts' error column")

    def _flush(self, n: int) -> None:
        pa = _pa()
        table = pa.concat_tables(self.buffer)
        head, rest = table.slice(0, n), table.slice(n)
        self.buffer = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows
        self.oldest = time.monotonic() if rest.num_rows else None
        self._write(head)

    def _write(self, table) -> None:
        pa = _pa()
        sink = pa.BufferOutputStream()
        pa.parquet.write_table(table.combine_chunks(), sink, compression="zstd")
        path = os.path.join(self.out, PART_FORMAT.format(self.next_part))
        write_owned_file(path, sink.getvalue().to_pybytes())
        self.next_part += 1
        self.parts.append(path)

    def close(self) -> None:
        while self.buffered:
            self._flush(min(self.buffered, self.part_rows))


def _stderr_line(line: str) -> None:
    bar = _BAR[0]
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


_BAR = [None]


# --- the watchdog ------------------------------------------------------------------------------------


class Watchdog:
    """Stops the run when :meth:`tick` was not called for ``timeout`` seconds: interrupts the main thread
    (which turns it into :class:`StalledError`); if that does not end the run within :data:`WATCHDOG_GRACE`
    seconds (a call that never returns), prints the error and ends the process (exit code 2)."""

    def __init__(self, timeout: float, what: str = ""):
        self.timeout, self.what = float(timeout), what
        self.last = time.monotonic()
        self.fired = False
        self._stop = threading.Event()
        self._thread = None

    def tick(self) -> None:
        self.last = time.monotonic()

    def message(self) -> str:
        return (f"no progress for {self.timeout:g} s{self.what}: stopped (the rows written so far are kept: fix the "
                "cause, e.g. resources, then rerun with --resume; a slow start can be given longer with "
                "--stall-timeout)")

    def __enter__(self):
        if self.timeout > 0:
            self._thread = threading.Thread(target=self._watch, name="icrt-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        return False

    def _watch(self) -> None:
        step = min(1.0, self.timeout / 4)
        while not self._stop.wait(step):
            if time.monotonic() - self.last >= self.timeout:
                self.fired = True
                _thread.interrupt_main()
                if not self._stop.wait(WATCHDOG_GRACE):
                    print(f"icrt: error: {self.message()}", file=sys.stderr, flush=True)
                    os._exit(EXIT_USAGE)
                return


# --- inputs ------------------------------------------------------------------------------------------


def path_problem(path: str, problems: dict) -> str | None:
    """Why ``path`` cannot even be read as a file, in the words ``icrt score`` uses (runtime.preprocess), or
    None. Only such files are kept from Ray: its read of a missing file or a folder fails the whole run."""
    from .preprocess import ImageError, check_image_file

    if path in problems:
        return problems[path]
    try:
        check_image_file(path)
    except ImageError as e:
        return e.problem
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


BUCKET_SCHEMES = ("s3", "gs", "gcs")  # their paths are bucket/key: one file system per bucket serves all keys


@functools.lru_cache(maxsize=64)
def _filesystem(base: str):
    _pa()
    import pyarrow.fs as pafs
    try:
        return pafs.FileSystem.from_uri(base)[0]
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for unknown schemes and bad URIs
        raise UserInputError(f"{base}: cannot open through pyarrow ({type(e).__name__}: {e})") from None


def uri_filesystem(uri: str):
    """(pyarrow FileSystem, path within it) for ``s3://bucket/key``, ``gs://...``, ``file:///...``; the file
    system of a bucket is made once (for S3 that may mean a region look-up)."""
    scheme, rest = uri.split("://", 1)
    if scheme in BUCKET_SCHEMES:
        bucket = rest.split("/", 1)[0]
        return _filesystem(f"{scheme}://{bucket}"), rest
    if scheme == "file":
        return _filesystem("file:///"), "/" + rest.lstrip("/") if not rest.startswith("/") else rest
    _pa()
    import pyarrow.fs as pafs
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:
        raise UserInputError(f"{uri}: cannot open through pyarrow ({type(e).__name__}: {e})") from None


def list_uri(uri: str, recursive: bool) -> list[str]:
    """A URI naming a file -> [uri]; naming a folder (prefix) -> the image-named files in it, as URIs, sorted."""
    import pyarrow.fs as pafs

    from .inputs import is_image_name

    fs, path = uri_filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        return [uri]
    scheme = uri.split("://", 1)[0]
    if scheme not in BUCKET_SCHEMES and scheme != "file":
        raise UserInputError(f"{uri}: only s3://, gs:// and file:// folders can be listed; name the files")
    found = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    names = sorted(f.path for f in found if f.type == pafs.FileType.File and is_image_name(f.path))
    return [f"{scheme}://{n}" for n in names]


def read_uri(uri: str) -> bytes:
    from .preprocess import ImageError
    fs, path = uri_filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise ImageError(uri, "no such file") from None
    except Exception as e:
        raise ImageError(uri, f"cannot read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def gather_inputs(args, problems: dict) -> list[str]:
    """PATHs (local: the runtime's walker, ``runtime.inputs.collect``; URIs: listed through pyarrow), then the
    ``--files-from`` list, duplicates dropped, then ``--shard``."""
    from .formats import printable
    from .worklist import collect_paths, is_uri, read_path_list, select_shard, unique

    if not args.paths and not args.files_from:
        raise UserInputError("nothing to score: give image PATHs or --files-from LIST")
    paths = []
    local = [a for a in args.paths if not is_uri(a)]
    paths += collect_paths(local, args.recursive, problems)
    for u in args.paths:
        if is_uri(u):
            paths += list_uri(u, args.recursive)
    if args.files_from:
        paths += read_path_list(args.files_from)
    paths = unique(paths)
    if not paths:
        what = " ".join(printable(p) for p in args.paths)
        if args.files_from:
            what = (what + " and " if what else "") + f"--files-from {printable(args.files_from)}"
        raise UserInputError("no images found in " + what)
    return select_shard(paths, args.shard)


# --- the job -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    out: str
    bundle: str
    backend: str = "auto"
    precision: str = "fp32"
    engine: str = "local"
    ray_address: str | None = None
    ray_cpus: int | None = None  # CPUs of the local Ray started without --ray-address
    workers: int = 1
    batch_size: int | None = None  # model inputs per inference call
    ray_batch: int = DEFAULT_RAY_BATCH  # images per Ray task
    threads: int | None = None  # onnxruntime threads per Scorer
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    part_rows: int = DEFAULT_PART_ROWS
    resume: bool = False
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    bundle_name: str = ""
    bundle_kind: str = ""
    versions: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)  # facts for summary.json (Ray resources, ...)


def run_batch(job: Job, paths: list[str], problems: dict, shard=None) -> int:
    """Score ``paths`` into ``job.out``; the exit code (0: no error rows in DIR, 1: some)."""
    from .manifest import load_manifest

    _pa()
    m = load_manifest(job.bundle)
    if job.precision not in m.precisions():
        raise UserInputError(f"precision {job.precision} is not in the bundle (it has {', '.join(m.precisions())})")
    job.bundle_name, job.bundle_kind, job.versions = m.name, m.kind, dict(m.versions or {})
    job.extra["score_range"] = list(m.score.get("range", [0.0, 1.0]))
    job.extra["model"] = model_identity(m, job.precision)
    try:
        done = prepare_out(job)
        return _run(job, paths, problems, shard, done)
    finally:
        lock = job.extra.pop("lock", None)
        if lock is not None:
            lock.close()


def _run(job: Job, paths: list[str], problems: dict, shard, done: set) -> int:
    todo = [p for p in paths if row_path(p) not in done] if done else paths
    skipped = len(paths) - len(todo)
    if skipped:
        log.info("icrt: --resume: %d of %d input(s) already scored in %s, %d to go", skipped, len(paths), job.out,
                 len(todo))
    bar = _progress_bar(len(todo))
    writer = PartWriter(job.out, job.part_rows, progress=bar.update if bar else None)
    t0 = time.monotonic()
    try:
        if todo:
            if job.engine == "ray":
                run_ray(job, todo, problems, writer)
            else:
                run_local(job, todo, problems, writer)
        writer.close()
    finally:
        if bar is not None:
            bar.close()
            _BAR[0] = None
    seconds = time.monotonic() - t0
    summary = write_summary(job, stats={"inputs": len(paths), "skipped_resume": skipped, "scored_this_run": writer.rows,
                                        "seconds": seconds, "parts_this_run": len(writer.parts)}, shard=shard)
    c = summary["counts"]
    print(f"{job.out}: {c['rows']} row(s) ({c['scored']} scored, {c['errors']} error(s)) in {c['parts']} part(s); "
          f"this run: {writer.rows} image(s) in {seconds:.1f} s ({summary['speed']['images_per_s']:.1f} images/s)")
    failures = job.extra.get("run_failures")
    if failures:  # the model failed at run time: its images have error rows; a model error (exit 2)
        print(f"icrt: error: {failures.message()}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILURES if c["errors"] else EXIT_OK


def _progress_bar(total: int):
    if total < 10 or not (sys.stderr.isatty() or os.environ.get("ICRT_PROGRESS") == "1"):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    _BAR[0] = tqdm(total=total, unit="image", file=sys.stderr, desc="scoring", leave=True)
    return _BAR[0]


# --- the local engine --------------------------------------------------------------------------------


def run_local(job: Job, paths: list[str], problems: dict, writer: PartWriter) -> None:
    """The runtime's Scorer in this process; rows go to the writer as they come (one part in memory)."""
    from .preprocess import load_for_model
    from .scorer import Scorer
    from .worklist import is_uri

    scorer = Scorer.load(job.bundle, backend=job.backend, precision=job.precision, batch_size=job.batch_size,
                         threads=job.threads, workers=max(1, job.workers))
    job.extra["run_failures"] = scorer.run_failures
    if any(is_uri(p) for p in paths):
        def loader(image):  # URIs read through pyarrow, local files as the Scorer reads them
            if isinstance(image, str) and is_uri(image):
                return load_for_model(read_uri(image), scorer.prep)
            return load_for_model(image, scorer.prep)
        scorer.loader = loader
    chunk = max(1, min(job.part_rows, 256))
    buf, since = [], time.monotonic()
    with Watchdog(job.stall_timeout) as dog:
        try:
            for rec in _local_records(scorer, paths, problems):
                dog.tick()
                buf.append(rec)
                if len(buf) >= chunk or time.monotonic() - since >= 5:
                    writer.add(records_table(buf))
                    buf, since = [], time.monotonic()
            writer.add(records_table(buf))
        except KeyboardInterrupt:
            if dog.fired:
                raise StalledError(dog.message()) from None
            raise


def _local_records(scorer, paths: list[str], problems: dict):
    """Records in input order: the scorer's, and an error record for each path found bad while listing."""
    it = scorer.iter_score([p for p in paths if p not in problems])
    for p in paths:
        yield {"image": p, "error": problems[p]} if p in problems else next(it)


# --- the Ray engine ----------------------------------------------------------------------------------


class ScoreActor:
    """``map_batches`` callable class: one Scorer per Ray actor. Input batches (pyarrow) have ``path`` and
    ``bytes``; output rows have :data:`COLUMNS`, ``path`` as given."""

    def __init__(self, bundle, backend, precision, batch_size, threads):
        from .scorer import Scorer
        self.scorer = Scorer.load(bundle, backend=backend, precision=precision, batch_size=batch_size,
                                  threads=threads, workers=1)

    def __call__(self, batch):
        names = batch.column("path").to_pylist()
        data = batch.column("bytes").to_pylist()
        readable = [i for i, b in enumerate(data) if b is not None]
        recs = [{"image": n, "error": "cannot read the file"} for n in names]
        for i, rec in zip(readable, self.scorer.iter_score([data[i] for i in readable])):
            recs[i] = rec
        return records_table(recs, names)


def _read_named(row):
    """Ray ``map`` for names pyarrow cannot carry (not UTF-8): read the file by its bytes name."""
    try:
        with open(row["name"], "rb") as f:
            data = f.read()
    except OSError:
        data = None
    return {"bytes": data, "path": row["path"]}


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UnavailableError("--engine ray needs Ray Data: pip install 'icrt[scale]'") from None
    return ray


def ray_budget(job: Job, resources: dict, node_cpus: float) -> tuple[float, float, int]:
    """(CPUs per actor, GPUs per actor, onnxruntime threads per Scorer), checked against the cluster: the actors
    and :data:`READ_RESERVE` CPUs for reading must fit, else UnavailableError (a pool that cannot be placed
    would wait forever)."""
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    w = job.workers
    gpw = float(job.gpus_per_worker or 0)
    if gpw and w * gpw > gpus + 1e-9:
        raise UnavailableError(f"--workers {w} x --gpus-per-worker {gpw:g} = {w * gpw:g} GPUs, but the Ray cluster has "
                               f"{gpus:g}: lower --workers or --gpus-per-worker")
    cpw = job.cpus_per_worker
    if cpw is None:
        cpw = (cpus - READ_RESERVE) / w
        cpw = min(cpw, node_cpus - READ_RESERVE, 1.0 if gpw else cpw)
        cpw = math.floor(cpw * 100) / 100
    if cpw <= 0 or w * cpw + READ_RESERVE > cpus + 1e-9:
        raise UnavailableError(
            f"--workers {w} x {cpw:g} CPUs per worker and {READ_RESERVE:g} CPUs for reading need "
            f"{w * max(cpw, 0) + READ_RESERVE:g} CPUs, but the Ray cluster has {cpus:g}: the read tasks would wait "
            "for CPUs forever; lower --workers or --cpus-per-worker")
    threads = job.threads or max(1, math.ceil(cpw - 1e-9))
    return cpw, gpw, threads


def _ray_keys(paths: list[str], problems: dict):
    """Split the inputs: (error records for files that cannot be read at all, [what read_binary_files reads],
    {the path Ray gives back: [inputs]}, {escaped name: [inputs]} for local names pyarrow cannot carry)."""
    from .worklist import is_uri

    errors, reads, owners, odd = [], [], {}, {}
    for p in paths:
        if is_uri(p):
            _fs, key = uri_filesystem(p)  # Ray gives back the path within the file system (no scheme)
            if key not in owners:
                reads.append(p)
            owners.setdefault(key, []).append(p)
            continue
        problem = path_problem(p, problems)
        if problem:
            errors.append({"image": p, "error": problem})
            continue
        key = os.path.abspath(p)
        if row_path(key) != key:
            odd.setdefault(row_path(key), []).append(p)
            continue
        if key not in owners:
            reads.append(key)
        owners.setdefault(key, []).append(p)
    return errors, reads, owners, odd


def run_ray(job: Job, paths: list[str], problems: dict, writer: PartWriter) -> None:
    ray = _ray()
    import pyarrow as pa

    errors, reads, plain, odd = _ray_keys(paths, problems)
    for i in range(0, len(errors), 256):
        writer.add(records_table(errors[i:i + 256]))
    if not reads and not odd:
        return
    started = False
    t0 = time.monotonic()
    if not ray.is_initialized():
        started = True
        _ray_init(ray, job)
    t_init = time.monotonic() - t0
    try:
        ctx = ray.data.DataContext.get_current()
        _quiet_ray(ctx, job)
        resources = ray.cluster_resources()
        node_cpus = max([n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [0])
        cpw, gpw, threads = ray_budget(job, resources, node_cpus)
        job.extra["ray"] = {"version": ray.__version__, "address": job.ray_address or "local",
                            "cluster_cpus": resources.get("CPU", 0), "cluster_gpus": resources.get("GPU", 0),
                            "workers": job.workers, "cpus_per_worker": cpw, "gpus_per_worker": gpw,
                            "threads_per_worker": threads, "read_cpus": READ_CPUS, "images_per_task": job.ray_batch,
                            "start_s": round(t_init, 2)}
        log.info("icrt: Ray %s (%s): %d worker(s) x %g CPU%s, %d onnxruntime thread(s) each; %d file(s) to score",
                 ray.__version__, job.ray_address or f"local, {resources.get('CPU', 0):g} CPUs", job.workers, cpw,
                 f" + {gpw:g} GPU" if gpw else "", threads, len(plain) + len(odd))
        ds = None
        if reads:
            ds = ray.data.read_binary_files(reads, include_paths=True, num_cpus=READ_CPUS)
        if odd:
            items = [{"name": os.fsencode(os.path.abspath(v[0])), "path": k} for k, v in odd.items()]
            more = ray.data.from_items(items).map(_read_named, num_cpus=READ_CPUS)
            ds = more if ds is None else ds.union(more)
        ds = ds.map_batches(
            ScoreActor, fn_constructor_kwargs={"bundle": os.path.abspath(job.bundle), "backend": job.backend,
                                               "precision": job.precision, "batch_size": job.batch_size,
                                               "threads": threads},
            batch_size=job.ray_batch, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=job.workers),
            num_cpus=cpw, num_gpus=gpw or None)
        owners = {**plain, **odd}
        left = len(owners)
        with Watchdog(job.stall_timeout, " from the Ray workers") as dog:
            try:
                for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    dog.tick()
                    if "first_rows_s" not in job.extra["ray"]:
                        job.extra["ray"]["first_rows_s"] = round(time.monotonic() - t0, 2)
                        job.extra["ray"]["first_rows"] = table.num_rows
                    table, n = _map_back(pa, table, owners)
                    left -= n
                    writer.add(table)
            except KeyboardInterrupt:
                if dog.fired:
                    raise StalledError(dog.message()) from None
                raise
            except Exception as e:
                raise _ray_error(e, dog) from None
        if left:
            raise IcrtError(f"Ray returned no rows for {left} input(s); the rows written are kept: rerun with --resume")
    finally:
        if started:
            ray.shutdown()


def _map_back(pa, table, owners: dict):
    """Ray paths -> the inputs they were read for (several inputs may name one file); rows for each."""
    keys = table.column("path").to_pylist()
    take, names = [], []
    found = 0
    for i, k in enumerate(keys):
        inputs = owners.pop(k, None)
        if inputs is None:
            alt = os.path.normpath(k) if not k.startswith("/") else k
            inputs = owners.pop(alt, None) or owners.pop("/" + k, None)
        if inputs is None:
            log.warning("icrt: Ray returned a row for %s, which is no input; dropped", k)
            continue
        found += 1
        for p in inputs:
            take.append(i)
            names.append(row_path(p))
    out = table.take(pa.array(take, pa.int64())) if len(take) != len(keys) or take != list(range(len(keys))) else table
    out = out.set_column(0, "path", pa.array(names, pa.string()))
    return out, found


def _ray_init(ray, job: Job) -> None:
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if job.ray_address:
        try:
            ray.init(address=job.ray_address, **kwargs)
        except Exception as e:
            raise UnavailableError(f"cannot connect to the Ray cluster at {job.ray_address} ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from None
        return
    cpus = job.ray_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
    # the object store holds images in flight only; bounded, so a small machine keeps its memory
    store = 512 * 1024 * 1024
    ray.init(address="local", num_cpus=cpus, object_store_memory=store, **kwargs)  # always a new one


def _quiet_ray(ctx, job: Job) -> None:
    """Ray Data's own progress output off (icrt draws its own), and its no-progress guard set to ours."""
    for name, value in (("enable_progress_bars", False), ("print_on_execution_start", False),
                        ("enable_auto_log_stats", False), ("execution_no_progress_timeout_s",
                                                           job.stall_timeout if job.stall_timeout > 0 else -1)):
        # (not wait_for_min_actors_s: a positive value makes the executor wait for the actors before it starts
        # any read, so reading no longer overlaps the actors' start; the watchdog covers actors that never start)
        if hasattr(ctx, name):
            setattr(ctx, name, value)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)


def _ray_error(e: Exception, dog: Watchdog) -> IcrtError:
    """A Ray failure -> one line: the stall, or the first line of the root cause."""
    name = type(e).__name__
    if name in ("ExecutionTimeoutError", "TimeoutError") or dog.fired:
        return StalledError(dog.message() + f" [Ray: {str(e).splitlines()[0] if str(e) else name}]")
    cause = e
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = " ".join(str(cause).split())
    if isinstance(cause, IcrtError):
        return type(cause)(text) if type(cause) is not IcrtError else IcrtError(text)
    return IcrtError(f"the Ray run failed ({type(cause).__name__}: {text[:500]}); the rows written are kept: "
                     "rerun with --resume")


# --- the summary -------------------------------------------------------------------------------------


def write_summary(job: Job, stats: dict, shard=None) -> dict:
    """summary.json from every part in DIR (not only this run's), then the _SUCCESS marker."""
    import datetime
    import platform

    import numpy as np

    from . import __version__
    from .files import _clean

    pa = _pa()
    scores, errors, by_problem = [], [], {}
    rows = n_err = chars = 0
    parts = part_files(job.out)
    for _, t in read_parts(job.out, ["path", "score", "error"]):
        rows += t.num_rows
        s = t.column("score").drop_null().to_numpy()
        scores.append(s.astype(np.float64, copy=False))
        err = t.column("error")
        if err.null_count < t.num_rows:
            mask = pa.compute.is_valid(err)
            bad = t.filter(mask)
            n_err += bad.num_rows
            for p, e in zip(bad.column("path").to_pylist(), bad.column("error").to_pylist()):
                kind = e.split(" (", 1)[0][:200]
                if kind not in by_problem and len(by_problem) >= MAX_ERROR_KINDS:
                    kind = "other problems"
                by_problem[kind] = by_problem.get(kind, 0) + 1
                p = p if len(p) <= MAX_LISTED_PATH else p[:MAX_LISTED_PATH - 3] + "..."
                e = e if len(e) <= MAX_LISTED_PATH else e[:MAX_LISTED_PATH - 3] + "..."
                if len(errors) < MAX_ERRORS_LISTED and chars + len(p) + len(e) <= MAX_ERRORS_CHARS:
                    errors.append({"path": p, "error": e})
                    chars += len(p) + len(e)
    s = np.concatenate(scores) if scores else np.zeros(0)
    lo, hi = job.extra.get("score_range", [0.0, 1.0])
    counts, edges = np.histogram(s, bins=HISTOGRAM_BINS, range=(float(lo), float(hi)))
    score_stats = None
    if s.size:
        score_stats = {"min": float(s.min()), "max": float(s.max()), "mean": float(s.mean()), "std": float(s.std()),
                       "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(s, QUANTILES))}}
    versions = {"icrt": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "pyarrow": pa.__version__}
    for mod in ("onnxruntime", "ray"):
        m = sys.modules.get(mod)
        if m is not None and getattr(m, "__version__", None):
            versions[mod] = m.__version__
    seconds = stats["seconds"]
    summary = {
        "format": "icrt-batch-summary/1",
        "complete": True,
        "counts": {"rows": rows, "scored": int(s.size), "errors": n_err, "parts": len(parts),
                   "inputs": stats["inputs"], "skipped_resume": stats["skipped_resume"],
                   "scored_this_run": stats["scored_this_run"]},
        "errors": errors,
        "errors_listed": len(errors),
        "errors_by_problem": dict(sorted(by_problem.items(), key=lambda kv: -kv[1])),
        "scores": score_stats,
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        "speed": {"images": stats["scored_this_run"], "seconds": round(seconds, 3),
                  "images_per_s": round(stats["scored_this_run"] / seconds, 2) if seconds > 0 else None},
        "engine": job.engine,
        "workers": job.workers,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "bundle": {"name": job.bundle_name, "kind": job.bundle_kind, "path": job.bundle, "precision": job.precision,
                   "backend": job.backend, "versions": job.versions},
        "versions": versions,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if "ray" in job.extra:
        summary["ray"] = job.extra["ray"]
    write_owned_file(os.path.join(job.out, SUMMARY_FILE), json.dumps(_clean(summary), indent=2) + "\n")
    write_owned_file(os.path.join(job.out, SUCCESS_FILE),
                     json.dumps({"rows": rows, "parts": [os.path.basename(p) for p in parts]}) + "\n")
    return summary
