"""The Parquet parts of an ``icrt batch`` folder: their rows (``runtime.bundle.records.PARQUET_COLUMNS``), reading them
back checked, and
:class:`PartWriter`, which writes them. A part exists only complete (``runtime.base.files.write_owned``: a temporary
file, then a rename): the parts *are* the record of finished work.
"""
from __future__ import annotations

import contextlib
import os
import time

from icrt.runtime.base.errors import UnavailableError, UserInputError
from icrt.runtime.batch.layout import PART_FORMAT, part_files, write_owned_file
from icrt.runtime.bundle.records import ERROR, IMAGE, OLD_FILE_COLUMN, SCORE, parquet_schema

DEFAULT_PART_ROWS = 5000
MAX_PART_ROWS = 1_000_000  # --part-rows at most: a part with more rows is no icrt part (a crafted one is refused)
READ_BATCH_ROWS = 8192  # rows of a part read back at a time
DEFAULT_PART_SECONDS = 300.0  # a part is written at least this often while rows come (a kill loses less)
MAX_ERROR_LINES = 200  # error lines printed on stderr


def require_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        from icrt.runtime.base.install import extra_hint

        raise UnavailableError(f"icrt batch writes Parquet and needs pyarrow; {extra_hint('scale')}") from None
    return pa


def part_number(path: str) -> int:
    stem = os.path.basename(path)[len("part-"):-len(".parquet")]
    return int(stem) if stem.isdigit() else -1


def _schema_problem(schema) -> str | None:
    """What makes a part's schema something other than icrt's: a column of the records' Parquet schema with
    another type."""
    want = parquet_schema()
    for name in schema.names:
        if name in want.names and schema.field(name).type != want.field(name).type:
            return f"column {name} has type {schema.field(name).type}, not {want.field(name).type}"
    return None


def _rows_problem(batch) -> str | None:
    """What makes rows of a part something other than icrt's, or None: an image in every row, and in each row
    either a finite score or an error."""
    pa = require_pyarrow()
    if IMAGE in batch.schema.names and batch.column(IMAGE).null_count:
        return "a row without an image"
    if SCORE in batch.schema.names:
        import numpy as np
        score = batch.column(SCORE)
        values = score.drop_null().to_numpy(zero_copy_only=False)
        if values.size and not np.all(np.isfinite(values)):
            return "a score that is not a finite number (NaN or infinity)"
        if ERROR in batch.schema.names:
            error = batch.column(ERROR)
            both = pa.compute.and_(pa.compute.is_valid(score), pa.compute.is_valid(error))
            neither = pa.compute.and_(pa.compute.is_null(score), pa.compute.is_null(error))
            if pa.compute.any(both).as_py() or pa.compute.any(neither).as_py():
                return "a row with both a score and an error, or neither"
    return None


def _bad_part(path: str, problem: str) -> UserInputError:
    from icrt.runtime.base.text import printable
    return UserInputError(f"{printable(path)}: not an icrt batch part ({problem}); move it away and rerun with --resume "
                          "(its rows will be scored again)")


@contextlib.contextmanager
def open_part(path: str):
    """A ``pyarrow.parquet.ParquetFile`` on the part ``path`` (OSError when it cannot be opened as one): opened
    without following a link and never blocking (``runtime.base.files.open_owned``), then read by arrow itself from
    that descriptor (:func:`_arrow_file`), synchronously (no pre-buffer), and closed on leaving: no arrow reader or
    buffer outlives the block or holds Python memory, so nothing is left for a finalizing interpreter to release from
    another thread (the SIGABRT at the end of Ray runs: a parquet reader over Python bytes freed on an arrow pool
    thread during exit). Read it with ``iter_batches(..., use_threads=False)``."""
    pa = require_pyarrow()
    from icrt.runtime.base.files import open_owned

    with os.fdopen(open_owned(path), "rb") as held, _arrow_file(held.fileno()) as source, \
            pa.parquet.ParquetFile(source, pre_buffer=False) as pf:
        yield pf


def _arrow_file(fd: int):
    """An arrow file (``pyarrow.OSFile``: arrow's own reads and memory, no Python object behind it) on the file
    already open as ``fd``. pyarrow opens files by name only, so it opens this descriptor's name in /proc/self/fd
    (or /dev/fd): the same file, whatever has since been put at its path."""
    pa = require_pyarrow()
    name = f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else f"/dev/fd/{fd}"
    return pa.OSFile(name, "r")


def part_batches(path: str, columns, batch_rows: int = READ_BATCH_ROWS):
    """Yield the rows of ``columns`` of one part as checked pyarrow RecordBatches of at most ``batch_rows`` rows
    (memory stays bounded, whatever the part holds; :func:`open_part`); UserInputError naming the part when it is not
    one icrt wrote: more than :data:`MAX_PART_ROWS` rows (checked from its footer, before any row is read), a column
    of another type, a row without an image, a score that is not finite, both or neither of score and error. The
    file column of older parts (``path``) is read as ``image``."""
    pa = require_pyarrow()
    rows = 0
    try:
        with open_part(path) as pf:
            schema, declared = pf.schema_arrow, pf.metadata.num_rows
            if declared > MAX_PART_ROWS:  # (a footer that lies is caught by the count below, batch by batch)
                raise _bad_part(path, f"{declared:,} rows; icrt batch writes at most {MAX_PART_ROWS:,} a part")
            names = list(columns)
            if IMAGE in names and IMAGE not in schema.names and OLD_FILE_COLUMN in schema.names:
                names = [OLD_FILE_COLUMN if c == IMAGE else c for c in names]
            missing = [c for c in names if c not in schema.names]
            if missing:
                raise _bad_part(path, f"no column {', '.join(missing)}")
            problem = _schema_problem(pa.schema([schema.field(n).with_name(c) for n, c in zip(names, columns)]))
            if problem:
                raise _bad_part(path, problem)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=names, use_threads=False):
                if names != list(columns):
                    batch = batch.rename_columns(list(columns))
                rows += batch.num_rows
                if rows > MAX_PART_ROWS:
                    raise _bad_part(path, f"more than {MAX_PART_ROWS:,} rows")
                problem = _rows_problem(batch)
                if problem:
                    raise _bad_part(path, problem)
                yield batch
    except UserInputError:
        raise
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as e:
        text = getattr(e, "strerror", None) if isinstance(e, OSError) else None
        raise _bad_part(path, text or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def read_parts(out: str, columns):
    """Yield (part file, checked RecordBatch of ``columns``) for the rows of each finished part, in bounded memory
    (:func:`part_batches`)."""
    for p in part_files(out):
        for batch in part_batches(p, columns):
            yield p, batch


def done_images(out: str) -> set[str]:
    """The distinct ``image`` cells of every finished part, each part checked first (a tampered part is refused
    before anything is scored, not when the summary is written). Read batch by batch, each batch's distinct
    paths only turned into Python strings: memory grows with the distinct paths, not with the rows."""
    pa = require_pyarrow()
    done = set()
    for _, batch in read_parts(out, [IMAGE, SCORE, ERROR]):
        done.update(pa.compute.unique(batch.column(IMAGE)).to_pylist())
    return done


class PartWriter:
    """Buffers rows and writes ``part-NNNNNN.parquet`` files of ``part_rows`` rows, each atomically."""

    def __init__(self, out: str, part_rows: int = DEFAULT_PART_ROWS, progress=None,
                 part_seconds: float = DEFAULT_PART_SECONDS):
        """``progress``: a ``runtime.tools.progress.Progress`` told of every row and the error lines (None: lines on
        stderr)."""
        self.out, self.part_rows, self.progress = out, max(1, int(part_rows)), progress
        self.part_seconds = part_seconds
        self.buffer, self.buffered = [], 0
        self.oldest = None  # when the oldest buffered row came
        self.next_part = max([part_number(p) for p in part_files(out)] + [-1]) + 1
        self.rows = self.errors = 0
        self.parts = []
        self.error_lines = 0

    def add(self, table) -> None:
        """Add a Table of rows (``runtime.bundle.records.records_table``)."""
        if table.num_rows == 0:
            return
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.oldest is None:
            self.oldest = time.monotonic()
        self.rows += table.num_rows
        errors = table.column(ERROR)
        n_err = table.num_rows - errors.null_count
        self.errors += n_err
        if n_err:
            self._tell_errors(table)
        if self.progress is not None:
            self.progress.update(table.num_rows)
        while self.buffered >= self.part_rows:
            self._flush(self.part_rows)
        if self.buffered and time.monotonic() - self.oldest >= self.part_seconds:  # a slow run still checkpoints
            self._flush(self.buffered)

    def _tell_errors(self, table) -> None:
        from icrt.runtime.base.text import printable
        for p, e in zip(table.column(IMAGE).to_pylist(), table.column(ERROR).to_pylist()):
            if e is None:
                continue
            self.error_lines += 1
            if self.error_lines <= MAX_ERROR_LINES:
                self._line(f"icrt: {printable(p)}: {printable(e)}")
            elif self.error_lines == MAX_ERROR_LINES + 1:
                self._line("icrt: more files could not be scored; their errors are in the parts' error column")

    def _flush(self, n: int) -> None:
        pa = require_pyarrow()
        table = pa.concat_tables(self.buffer)
        head, rest = table.slice(0, n), table.slice(n)
        self.buffer = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows
        self.oldest = time.monotonic() if rest.num_rows else None
        self._write(head)

    def _write(self, table) -> None:
        pa = require_pyarrow()
        sink = pa.BufferOutputStream()
        pa.parquet.write_table(table.combine_chunks(), sink, compression="zstd")
        path = os.path.join(self.out, PART_FORMAT.format(self.next_part))
        write_owned_file(path, sink.getvalue().to_pybytes())
        self.next_part += 1
        self.parts.append(path)

    def _line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.line(text)
        else:
            import sys
            print(text, file=sys.stderr)

    def close(self) -> None:
        while self.buffered:
            self._flush(min(self.buffered, self.part_rows))
