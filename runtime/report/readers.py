"""What ``icrt report`` reads (untrusted, streamed): an ``icrt batch`` folder (its Parquet parts, read with pyarrow
from the ``[scale]`` extra, and ``summary.json`` when present), a single ``.parquet`` part, or a scores file of
``icrt score -o`` (JSON list, JSONL, or CSV; the format is sniffed from the content, not the file name). Every
record is checked: a malformed one stops the report with one line naming the file and the record.
"""
from __future__ import annotations

import glob
import json
import math
import os
import stat
from typing import NamedTuple

from icrt.runtime.base.errors import UnavailableError, UserInputError, one_line
from icrt.runtime.base.text import printable
from icrt.runtime.batch.layout import PART_GLOB, RUN_FILE, SUCCESS_FILE, SUMMARY_FILE
from icrt.runtime.bundle.records import ERROR, HEIGHT, IMAGE, OLD_FILE_COLUMN, PATCHES, SCORE, WIDTH
from icrt.runtime.tools.formats import FORMULA_START

MAX_PATH_CHARS = 4096  # a longer path cannot be opened anyway (PATH_MAX); kept cut in memory
MAX_LINE = 1 << 20  # one JSON record / JSONL line / CSV field
MAX_SUMMARY_BYTES = 16 << 20  # a larger summary.json is not shown (icrt batch keeps its own well under 1 MB)
CHUNK = 1 << 16
PARQUET_BATCH = 8192
COMPLETION_MARKERS = (SUCCESS_FILE,)  # any of these in the folder (or "complete": true in summary.json): finished
REQUIRED_COLUMNS = (IMAGE, SCORE, ERROR)
INT_COLUMNS = (WIDTH, HEIGHT, PATCHES)


class Row(NamedTuple):
    image: str
    score: float | None  # None: an error row
    error: str | None
    width: int | None
    height: int | None
    patches: int | None


def bad_input(name: str, where: str, problem: str) -> UserInputError:
    where = f"{where}: " if where else ""
    return UserInputError(f"{printable(name)}: {where}{problem}")


def _row(name: str, where: str, path, score, error, width=None, height=None, patches=None) -> Row:
    """A checked row; anything out of shape is one error naming the file and the record."""
    if not isinstance(path, str) or not path:
        raise bad_input(name, where, "the image path is missing or not a string")
    if error is not None and not isinstance(error, str):
        raise bad_input(name, where, "error is not a string")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise bad_input(name, where, "score is not a number")
        score = float(score)
        if not math.isfinite(score):
            raise bad_input(name, where, "score is not a finite number")
    ints = []
    for key, v in (("width", width), ("height", height), ("patches", patches)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise bad_input(name, where, f"{key} is not a non-negative integer")
        ints.append(v)
    if error:
        score = None
    elif score is None:
        raise bad_input(name, where, "neither a score nor an error")
    else:
        error = None
    return Row(path[:MAX_PATH_CHARS], score, error, *ints)


def _dict_row(name: str, where: str, rec) -> Row:
    if not isinstance(rec, dict):
        raise bad_input(name, where, "not a JSON object")
    return _row(name, where, rec.get("image"), rec.get("score"), rec.get("error"),
                rec.get("width"), rec.get("height"), rec.get("patches"))


def _open_text(path: str):
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


class _Chunks:
    """A text file read in chunks, for a streaming parse of one JSON list."""

    def __init__(self, f):
        self.f, self.buf, self.pos, self.eof = f, "", 0, False

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.f.read(CHUNK)
        if not data:
            self.eof = True
            return False
        if self.pos > CHUNK:
            self.buf, self.pos = self.buf[self.pos:], 0
        self.buf += data
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos:self.pos + 1]


def _json_list(path: str, name: str):
    dec = json.JSONDecoder()
    with _open_text(path) as f:
        r = _Chunks(f)
        r.peek()
        if r.buf[r.pos:r.pos + 1] == "\ufeff":
            r.pos += 1
        if r.peek() != "[":
            raise bad_input(name, "", "not a JSON list")
        r.pos += 1
        n = 0
        while True:
            c = r.peek()
            if c == "]" and n == 0:
                r.pos += 1
                break
            if n:
                if c == "]":
                    r.pos += 1
                    break
                if c != ",":
                    raise bad_input(name, f"after record {n}", "expected ',' or ']'" if c else "the JSON list is cut short")
                r.pos += 1
                r.peek()
            n += 1
            while True:
                try:
                    rec, end = dec.raw_decode(r.buf, r.pos)
                    break
                except RecursionError:
                    raise bad_input(name, f"record {n}", "JSON nested too deeply") from None
                except json.JSONDecodeError as e:
                    if len(r.buf) - r.pos > MAX_LINE or not r.more():
                        raise bad_input(name, f"record {n}", f"invalid JSON ({e.msg})" if len(r.buf) - r.pos <= MAX_LINE
                                   else f"longer than {MAX_LINE} characters") from None
            r.pos = end
            yield _dict_row(name, f"record {n}", rec)
        if r.peek():
            raise bad_input(name, "", "text after the end of the JSON list")


def _jsonl(path: str, name: str):
    with _open_text(path) as f:
        number = 0
        while True:
            line = f.readline(MAX_LINE + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE:
                raise bad_input(name, f"line {number}", f"longer than {MAX_LINE} characters")
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except RecursionError:
                raise bad_input(name, f"line {number}", "JSON nested too deeply") from None
            except json.JSONDecodeError as e:
                raise bad_input(name, f"line {number}", f"invalid JSON ({e.msg})") from None
            yield _dict_row(name, f"line {number}", rec)


def _csv_text(cell: str) -> str:
    """Undo ``runtime.tools.formats.csv_safe``: one leading ' before a formula-like start."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell


def _csv(path: str, name: str):
    import csv

    def number(where, key, text, kind):
        if text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise bad_input(name, where, f"{key} {printable(text[:40])!r} is not a number") from None

    with _open_text(path) as f:
        old = csv.field_size_limit()
        csv.field_size_limit(MAX_LINE)
        try:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if header and header[0].startswith("\ufeff"):
                    header[0] = header[0][1:]
                if not header or "image" not in header or "score" not in header:
                    raise bad_input(name, "", "not a scores file of icrt score (JSON, JSONL, or CSV with image and score "
                                         "columns)")
                col = {k: header.index(k) for k in ("image", "score", "error", *INT_COLUMNS) if k in header}
                for cells in reader:
                    if not cells:
                        continue
                    where = f"line {reader.line_num}"
                    if len(cells) != len(header):
                        raise bad_input(name, where, f"{len(cells)} fields, the header has {len(header)}")
                    get = {k: cells[i] for k, i in col.items()}
                    yield _row(name, where, _csv_text(get["image"]), number(where, "score", get["score"], float),
                               _csv_text(get.get("error", "")) or None,
                               *(number(where, k, get.get(k, ""), int) for k in INT_COLUMNS))
            except csv.Error as e:
                raise bad_input(name, f"line {reader.line_num}", f"invalid CSV ({e})") from None
        finally:
            csv.field_size_limit(old)


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        from icrt.runtime.base.install import extra_hint

        raise UnavailableError(f"reading Parquet (icrt batch output) needs pyarrow; {extra_hint('scale')}") from None
    return pyarrow


def _parquet(path: str, owned: bool = False):
    """The rows of one Parquet file, read batch by batch on this thread; ``owned``: a part of a batch folder, opened
    as icrt's own file (never through a link, never blocking: ``runtime.batch.parts.open_part``)."""
    import contextlib

    from icrt.runtime.batch.parts import open_part

    pa = _pyarrow()
    try:
        with open_part(path) if owned else contextlib.closing(pa.parquet.ParquetFile(path, pre_buffer=False)) as pf:
            yield from _parquet_rows(pa, path, pf)
    except UserInputError:
        raise
    except (OSError, ValueError, pa.ArrowException) as e:
        raise bad_input(path, "", f"not a readable Parquet file ({getattr(e, 'strerror', None) or e})") from None


def _parquet_rows(pa, path: str, pf):
    name = path
    try:
        schema = pf.schema_arrow
    except (OSError, ValueError, pa.ArrowException) as e:
        raise bad_input(name, "", f"not a readable Parquet file ({e})") from None
    file_column = OLD_FILE_COLUMN if IMAGE not in schema.names and OLD_FILE_COLUMN in schema.names else IMAGE
    missing = [c for c in REQUIRED_COLUMNS if (file_column if c == IMAGE else c) not in schema.names]
    if missing:
        raise bad_input(name, "", f"no column {', '.join(missing)} (an icrt batch part has "
                                  f"{', '.join(REQUIRED_COLUMNS)})")
    t = pa.types
    kinds = {IMAGE: (t.is_string, t.is_large_string, t.is_binary, t.is_large_binary),
             SCORE: (t.is_floating, t.is_integer, t.is_null), ERROR: (t.is_string, t.is_large_string, t.is_null)}
    kinds.update({c: (t.is_integer, t.is_null) for c in INT_COLUMNS})
    cols = [c for c in (*REQUIRED_COLUMNS, *INT_COLUMNS) if (file_column if c == IMAGE else c) in schema.names]
    stored = [file_column if c == IMAGE else c for c in cols]  # the names in the file
    for c, s in zip(cols, stored):
        if not any(ok(schema.field(s).type) for ok in kinds[c]):
            raise bad_input(name, "", f"column {s} has type {schema.field(s).type}")
    file_type = schema.field(file_column).type
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=stored, use_threads=False):
            data = {c: batch.column(i).to_pylist() for i, c in enumerate(cols)}
            if pa.types.is_binary(file_type) or pa.types.is_large_binary(file_type):
                data[IMAGE] = [p if p is None else os.fsdecode(p) for p in data[IMAGE]]  # os.fsdecode's str form
            for j in range(batch.num_rows):
                row += 1
                yield _row(name, f"row {row}", *(data[c][j] if c in data else None
                                                 for c in (*REQUIRED_COLUMNS, *INT_COLUMNS)))
    except UserInputError:  # a bad row, named as it is (not as unreadable data)
        raise
    except (OSError, ValueError, pa.ArrowException) as e:
        raise bad_input(name, f"after row {row}", f"cannot read the Parquet data ({e})") from None


class Source:
    """What a report is made from: ``rows()`` streams the checked rows (callable more than once)."""

    def __init__(self, path: str):
        self.path = path
        self.summary: dict | None = None
        self.summary_note: str | None = None  # why summary.json is not shown
        self.complete: bool | None = None  # batch folders only
        self.origin = None  # batch folders: the ``images`` record of run.json (untrusted; runtime.batch.origin)
        self.parts: list[str] = []
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise bad_input(path, "", "no such file or directory") from None
        except (OSError, ValueError) as e:
            raise bad_input(path, "", getattr(e, "strerror", None) or str(e)) from None
        if stat.S_ISDIR(st.st_mode):
            self.kind = "batch"
            self.base = None  # where the folder sits says nothing about where its images are (run.json does)
            self._batch_folder()
            return
        if not stat.S_ISREG(st.st_mode):
            raise bad_input(path, "", "not a regular file or a folder")
        self.base = os.path.dirname(os.path.abspath(path))
        if path.endswith(".parquet"):
            self.kind = "parquet"
            self.parts = [path]
            _pyarrow()
            return
        self.kind = self._sniff()

    def _batch_folder(self):
        from icrt.runtime.base.files import owned_problem, read_owned

        self.parts = sorted(glob.glob(os.path.join(glob.escape(self.path), PART_GLOB)))
        if not self.parts:
            raise bad_input(self.path, "", f"no {PART_GLOB} files: not an `icrt batch --out` folder (or give a scores "
                                      "file written by `icrt score -o`)")
        for p in self.parts:  # a link or a FIFO among the parts is no part (a FIFO would block the read forever)
            problem = owned_problem(p)
            if problem:
                raise bad_input(p, "", f"not an icrt batch part: it {problem}")
        _pyarrow()
        spath = os.path.join(self.path, SUMMARY_FILE)
        if os.path.lexists(spath):  # shown when readable; the parts are the data, so a bad summary is only noted
            try:
                summary = json.loads(read_owned(spath, MAX_SUMMARY_BYTES).decode("utf-8"))
                if not isinstance(summary, dict):
                    raise ValueError("not a JSON object")
                self.summary = summary
            except OSError as e:
                self.summary_note = f"{SUMMARY_FILE} not shown: it {e.strerror}" if (e.strerror or "").startswith(
                    ("is ", "has ")) else f"{SUMMARY_FILE} not shown: {e.strerror or e}"
            except RecursionError:
                self.summary_note = f"{SUMMARY_FILE} not shown: JSON nested too deeply"
            except ValueError as e:  # not UTF-8, not JSON, not an object
                self.summary_note = f"{SUMMARY_FILE} not shown: {one_line(e)[:200]}"
        self.origin = self._run_images(read_owned)
        self.complete = (any(os.path.exists(os.path.join(self.path, m)) for m in COMPLETION_MARKERS)
                         or (self.summary or {}).get("complete") is True)

    def _run_images(self, read_owned):
        """The ``images`` record of the folder's run.json (where its images were), or None when there is none or
        run.json cannot be read (then no image is shown without --images-root)."""
        from icrt.runtime.batch.folder import MAX_RUN_BYTES
        from icrt.runtime.batch.origin import IMAGES
        try:
            run = json.loads(read_owned(os.path.join(self.path, RUN_FILE), MAX_RUN_BYTES).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return run.get(IMAGES) if isinstance(run, dict) else None

    def _sniff(self) -> str:
        try:
            with _open_text(self.path) as f:
                head = f.read(4096)
        except OSError as e:
            raise bad_input(self.path, "", e.strerror or str(e)) from None
        head = head.lstrip("\ufeff \t\r\n")
        if not head:
            raise bad_input(self.path, "", "empty file")
        if "\x00" in head:
            raise bad_input(self.path, "", "a binary file, not a scores file of icrt score (JSON, JSONL or CSV)")
        return {"[": "json", "{": "jsonl"}.get(head[0], "csv")

    def rows(self):
        try:
            if self.parts:
                for p in self.parts:
                    yield from _parquet(p, owned=self.kind == "batch")
            else:
                yield from {"json": _json_list, "jsonl": _jsonl, "csv": _csv}[self.kind](self.path, self.path)
        except OSError as e:  # the file went away or became unreadable between passes
            raise bad_input(getattr(e, "filename", None) or self.path, "", e.strerror or str(e)) from None

    def describe(self) -> str:
        if self.kind == "batch":
            return f"icrt batch folder, {len(self.parts)} Parquet part(s)"
        return {"parquet": "Parquet file", "json": "JSON scores", "jsonl": "JSONL scores", "csv": "CSV scores"}[self.kind]
