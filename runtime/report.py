"""``icrt report``: one self-contained HTML page from scores (an ``icrt batch`` folder, or ``icrt score -o``).

Input (untrusted, read twice, streamed both times):

- a folder written by ``icrt batch --out DIR``: its ``part-*.parquet`` files (columns path, score, error and
  optionally width, height, patches; read with pyarrow, imported only here, from the ``[scale]`` extra), plus
  ``summary.json`` when present (its plain fields are shown);
- a single ``.parquet`` part;
- a scores file of ``icrt score -o``: JSON (a list of objects), JSONL (one object a line) or CSV
  (``image,score,patches,width,height[,heatmap],error``; a leading ``'`` that ``icrt score`` puts before a
  formula-like cell is taken off). The format is sniffed from the content, not the file name.

Pass 1 checks every record (a malformed one stops the report with one line naming the file and the record)
and finds the score range; pass 2 fills what the page shows, in bounded memory whatever the number of rows:

- a histogram (:data:`HIST_BINS` bins) and global quantiles (exact up to :data:`EXACT_GLOBAL` scores, then
  from :data:`GLOBAL_BINS` fine bins, linear inside a bin);
- per folder (the parent directory of each path): counts, errors, mean, min, max and median (exact up to
  :data:`EXACT_FOLDER` scores in that folder, then from :data:`FOLDER_BINS` fine bins); the first
  :data:`MAX_FOLDERS` folders met are kept one by one, later ones are added up in one "other folders" row;
- thumbnails: the exact :data:`EXTREMES` simplest and most complex images (two heaps), and ``--thumbs N``
  images evenly spaced by rank, taken from a uniform random sample (reservoir, fixed seed) of
  :data:`SAMPLE_SIZE` scored rows: exact ranks when there are no more scored rows than that; the first and last
  are always the exact minimum and maximum;
- errors: the first :data:`MAX_ERRORS` (path + error) and a count of each error message (the
  :data:`MAX_ERROR_KINDS` first kinds; later ones are counted as "other").

Thumbnails are decoded by the runtime's own decoding (``runtime.preprocess.load_for_model``: its checks for
folders, FIFOs, empty files and decompression bombs, and JPEG draft decoding), shrunk to
:data:`THUMB_PX` px and embedded as base64 JPEG. A missing or unreadable image shows a placeholder with the
reason. Relative paths are looked up from the current folder, then from the folder that holds the input.

Every text taken from the input is made printable (``runtime.formats.printable``), cut to a length, and
HTML-escaped; the page has no script, no external resource, and a Content-Security-Policy that forbids both.
"""
from __future__ import annotations

import base64
import datetime
import glob
import heapq
import html
import io
import json
import math
import os
import random
import stat
from array import array
from typing import NamedTuple

from .errors import UnavailableError, UserInputError, one_line
from .formats import FORMULA_START, printable

DEFAULT_THUMBS = 48
MAX_THUMBS = 500
EXTREMES = 8  # exact simplest / most complex rows (at most --thumbs)
THUMB_PX = 160  # thumbnail bounding box
THUMB_QUALITY = 80
HIST_BINS = 40
EXACT_GLOBAL = 200_000
GLOBAL_BINS = 8192
EXACT_FOLDER = 2_000
FOLDER_BINS = 2048
MAX_FOLDERS = 500
SAMPLE_SIZE = 20_000
SAMPLE_SEED = 0
MAX_ERRORS = 1_000
MAX_ERROR_KINDS = 200
MAX_PATH_CHARS = 4096  # a longer path cannot be opened anyway (PATH_MAX); kept cut in memory
SHOW_PATH = 300  # characters of a path shown
SHOW_ERROR = 500
MAX_LINE = 1 << 20  # one JSON record / JSONL line / CSV field
MAX_SUMMARY_BYTES = 16 << 20  # a larger summary.json is not shown (icrt batch keeps its own well under 1 MB)
CHUNK = 1 << 16
PARQUET_BATCH = 8192
PART_GLOB = "part-*.parquet"
SUMMARY_FILE = "summary.json"
COMPLETION_MARKERS = ("_SUCCESS",)  # any of these in the folder (or "complete": true in summary.json): finished
REQUIRED_COLUMNS = ("path", "score", "error")
INT_COLUMNS = ("width", "height", "patches")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class Row(NamedTuple):
    path: str
    score: float | None  # None: an error row
    error: str | None
    width: int | None
    height: int | None
    patches: int | None


# --- reading -------------------------------------------------------------------------------------------


def _bad(name: str, where: str, problem: str) -> UserInputError:
    where = f"{where}: " if where else ""
    return UserInputError(f"{printable(name)}: {where}{problem}")


def _row(name: str, where: str, path, score, error, width=None, height=None, patches=None) -> Row:
    """A checked row; anything out of shape is one error naming the file and the record."""
    if not isinstance(path, str) or not path:
        raise _bad(name, where, "the image path is missing or not a string")
    if error is not None and not isinstance(error, str):
        raise _bad(name, where, "error is not a string")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise _bad(name, where, "score is not a number")
        score = float(score)
        if not math.isfinite(score):
            raise _bad(name, where, "score is not a finite number")
    ints = []
    for key, v in (("width", width), ("height", height), ("patches", patches)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise _bad(name, where, f"{key} is not a non-negative integer")
        ints.append(v)
    if error:
        score = None
    elif score is None:
        raise _bad(name, where, "neither a score nor an error")
    else:
        error = None
    return Row(path[:MAX_PATH_CHARS], score, error, *ints)


def _dict_row(name: str, where: str, rec) -> Row:
    if not isinstance(rec, dict):
        raise _bad(name, where, "not a JSON object")
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
            raise _bad(name, "", "not a JSON list")
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
                    raise _bad(name, f"after record {n}", "expected ',' or ']'" if c else "the JSON list is cut short")
                r.pos += 1
                r.peek()
            n += 1
            while True:
                try:
                    rec, end = dec.raw_decode(r.buf, r.pos)
                    break
                except RecursionError:
                    raise _bad(name, f"record {n}", "JSON nested too deeply") from None
                except json.JSONDecodeError as e:
                    if len(r.buf) - r.pos > MAX_LINE or not r.more():
                        raise _bad(name, f"record {n}", f"invalid JSON ({e.msg})" if len(r.buf) - r.pos <= MAX_LINE
                                   else f"longer than {MAX_LINE} characters") from None
            r.pos = end
            yield _dict_row(name, f"record {n}", rec)
        if r.peek():
            raise _bad(name, "", "text after the end of the JSON list")


def _jsonl(path: str, name: str):
    with _open_text(path) as f:
        number = 0
        while True:
            line = f.readline(MAX_LINE + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE:
                raise _bad(name, f"line {number}", f"longer than {MAX_LINE} characters")
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except RecursionError:
                raise _bad(name, f"line {number}", "JSON nested too deeply") from None
            except json.JSONDecodeError as e:
                raise _bad(name, f"line {number}", f"invalid JSON ({e.msg})") from None
            yield _dict_row(name, f"line {number}", rec)


def _csv_text(cell: str) -> str:
    """Undo ``runtime.formats.csv_safe``: one leading ' before a formula-like start."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell


def _csv(path: str, name: str):
    import csv

    def number(where, key, text, kind):
        if text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise _bad(name, where, f"{key} {printable(text[:40])!r} is not a number") from None

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
                    raise _bad(name, "", "not a scores file of icrt score (JSON, JSONL, or CSV with image and score "
                                         "columns)")
                col = {k: header.index(k) for k in ("image", "score", "error", *INT_COLUMNS) if k in header}
                for cells in reader:
                    if not cells:
                        continue
                    where = f"line {reader.line_num}"
                    if len(cells) != len(header):
                        raise _bad(name, where, f"{len(cells)} fields, the header has {len(header)}")
                    get = {k: cells[i] for k, i in col.items()}
                    yield _row(name, where, _csv_text(get["image"]), number(where, "score", get["score"], float),
                               _csv_text(get.get("error", "")) or None,
                               *(number(where, k, get.get(k, ""), int) for k in INT_COLUMNS))
            except csv.Error as e:
                raise _bad(name, f"line {reader.line_num}", f"invalid CSV ({e})") from None
        finally:
            csv.field_size_limit(old)


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UnavailableError("reading Parquet (icrt batch output) needs pyarrow: pip install 'icrt[scale]'") from None
    return pyarrow


def _parquet(path: str):
    pa = _pyarrow()
    name = path
    try:
        pf = pa.parquet.ParquetFile(path)
        schema = pf.schema_arrow
    except (OSError, ValueError, pa.ArrowException) as e:
        raise _bad(name, "", f"not a readable Parquet file ({e})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise _bad(name, "", f"no column {', '.join(missing)} (an icrt batch part has {', '.join(REQUIRED_COLUMNS)})")
    t = pa.types
    kinds = {"path": (t.is_string, t.is_large_string, t.is_binary, t.is_large_binary), "score": (t.is_floating, t.is_integer, t.is_null),
             "error": (t.is_string, t.is_large_string, t.is_null)}
    kinds.update({c: (t.is_integer, t.is_null) for c in INT_COLUMNS})
    cols = [c for c in (*REQUIRED_COLUMNS, *INT_COLUMNS) if c in schema.names]
    for c in cols:
        if not any(ok(schema.field(c).type) for ok in kinds[c]):
            raise _bad(name, "", f"column {c} has type {schema.field(c).type}")
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=cols):
            data = {c: batch.column(i).to_pylist() for i, c in enumerate(cols)}
            if pa.types.is_binary(schema.field("path").type) or pa.types.is_large_binary(schema.field("path").type):
                data["path"] = [p if p is None else os.fsdecode(p) for p in data["path"]]  # os.fsdecode's str form
            for j in range(batch.num_rows):
                row += 1
                yield _row(name, f"row {row}", *(data[c][j] if c in data else None
                                                 for c in (*REQUIRED_COLUMNS, *INT_COLUMNS)))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise _bad(name, f"after row {row}", f"cannot read the Parquet data ({e})") from None


class Source:
    """What a report is made from: ``rows()`` streams the checked rows (callable more than once)."""

    def __init__(self, path: str):
        self.path = path
        self.summary: dict | None = None
        self.summary_note: str | None = None  # why summary.json is not shown
        self.complete: bool | None = None  # batch folders only
        self.parts: list[str] = []
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise _bad(path, "", "no such file or directory") from None
        except (OSError, ValueError) as e:
            raise _bad(path, "", getattr(e, "strerror", None) or str(e)) from None
        if stat.S_ISDIR(st.st_mode):
            self.kind = "batch"
            self.base = os.path.dirname(os.path.abspath(path))
            self._batch_folder()
            return
        if not stat.S_ISREG(st.st_mode):
            raise _bad(path, "", "not a regular file or a folder")
        self.base = os.path.dirname(os.path.abspath(path))
        if path.endswith(".parquet"):
            self.kind = "parquet"
            self.parts = [path]
            _pyarrow()
            return
        self.kind = self._sniff()

    def _batch_folder(self):
        from .files import owned_problem, read_owned

        self.parts = sorted(glob.glob(os.path.join(glob.escape(self.path), PART_GLOB)))
        if not self.parts:
            raise _bad(self.path, "", f"no {PART_GLOB} files: not an `icrt batch --out` folder (or give a scores "
                                      "file written by `icrt score -o`)")
        for p in self.parts:  # a link or a FIFO among the parts is no part (a FIFO would block the read forever)
            problem = owned_problem(p)
            if problem:
                raise _bad(p, "", f"not an icrt batch part: it {problem}")
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
        self.complete = (any(os.path.exists(os.path.join(self.path, m)) for m in COMPLETION_MARKERS)
                         or (self.summary or {}).get("complete") is True)

    def _sniff(self) -> str:
        try:
            with _open_text(self.path) as f:
                head = f.read(4096)
        except OSError as e:
            raise _bad(self.path, "", e.strerror or str(e)) from None
        head = head.lstrip("\ufeff \t\r\n")
        if not head:
            raise _bad(self.path, "", "empty file")
        if "\x00" in head:
            raise _bad(self.path, "", "a binary file, not a scores file of icrt score (JSON, JSONL or CSV)")
        return {"[": "json", "{": "jsonl"}.get(head[0], "csv")

    def rows(self):
        try:
            if self.parts:
                for p in self.parts:
                    yield from _parquet(p)
            else:
                yield from {"json": _json_list, "jsonl": _jsonl, "csv": _csv}[self.kind](self.path, self.path)
        except OSError as e:  # the file went away or became unreadable between passes
            raise _bad(getattr(e, "filename", None) or self.path, "", e.strerror or str(e)) from None

    def describe(self) -> str:
        if self.kind == "batch":
            return f"icrt batch folder, {len(self.parts)} Parquet part(s)"
        return {"parquet": "Parquet file", "json": "JSON scores", "jsonl": "JSONL scores", "csv": "CSV scores"}[self.kind]


# --- statistics -----------------------------------------------------------------------------------------


def frac(x: float, lo: float, hi: float) -> float:
    """Where ``x`` lies in [lo, hi], as 0 .. 1; computed on halves, so that no difference overflows (scores of
    -1e308 and 1e308 are finite, their difference is not)."""
    if not hi > lo:
        return 0.0
    return (x / 2 - lo / 2) / (hi / 2 - lo / 2)


def lerp(lo: float, hi: float, f: float) -> float:
    """The value at ``f`` (0 .. 1) of the way from lo to hi, without overflow."""
    return lo * (1 - f) + hi * f


def width(lo: float, hi: float, n: int) -> float:
    """(hi - lo) / n without overflow (inf only when the result itself is beyond float)."""
    return hi / n - lo / n


class Dist:
    """Scores of one group: exact quantiles up to ``exact_limit`` scores, then from ``bins`` bins over [lo, hi]."""

    def __init__(self, lo: float, hi: float, exact_limit: int, bins: int):
        self.lo, self.hi, self.exact_limit, self.nbins = lo, hi, exact_limit, bins
        self.n, self.avg, self.min, self.max = 0, 0.0, math.inf, -math.inf
        self.values: array | None = array("d")
        self.bins: list[int] | None = None

    def _bin(self, x: float) -> int:
        return min(self.nbins - 1, max(0, int(frac(x, self.lo, self.hi) * self.nbins)))

    def add(self, x: float) -> None:
        self.n += 1
        self.avg += x / self.n - self.avg / self.n  # a running mean: a sum of huge scores would overflow
        self.min, self.max = min(self.min, x), max(self.max, x)
        if self.values is not None:
            self.values.append(x)
            if len(self.values) > self.exact_limit:
                self.bins = [0] * self.nbins
                for v in self.values:
                    self.bins[self._bin(v)] += 1
                self.values = None
        else:
            self.bins[self._bin(x)] += 1

    @property
    def exact(self) -> bool:
        return self.values is not None

    @property
    def mean(self) -> float | None:
        return self.avg if self.n else None

    def quantile(self, q: float) -> float | None:
        if not self.n:
            return None
        target = q * (self.n - 1)  # the position in the sorted scores (as numpy's default 'linear')
        if self.values is not None:
            s = sorted(self.values)
            i = int(math.floor(target))
            j = min(i + 1, self.n - 1)
            return lerp(s[i], s[j], target - i)
        seen = 0
        for i, c in enumerate(self.bins):
            if c and seen + c > target:
                v = lerp(self.lo, self.hi, (i + (target - seen + 0.5) / c) / self.nbins)
                return min(self.max, max(self.min, v))
            seen += c
        return self.max


class Folder:
    __slots__ = ("rows", "errors", "dist")

    def __init__(self, lo, hi):
        self.rows, self.errors = 0, 0
        self.dist = Dist(lo, hi, EXACT_FOLDER, FOLDER_BINS)


class Pick(NamedTuple):
    score: float
    path: str
    width: int | None
    height: int | None
    rank: float  # 0 .. 1 (share of scored images below), as far as known


class Report:
    """Everything the page shows, gathered in one pass over the rows (bounded memory)."""

    def __init__(self, lo: float, hi: float, thumbs: int):
        self.lo, self.hi, self.thumbs = lo, hi, thumbs
        self.extremes = min(EXTREMES, thumbs)
        self.rows = 0
        self.dist = Dist(lo, hi, EXACT_GLOBAL, GLOBAL_BINS)
        self.hist = [0] * HIST_BINS
        self.folders: dict[str, Folder] = {}
        self.other = Folder(lo, hi)  # rows of the folders met after the first MAX_FOLDERS
        self.errors: list[tuple[str, str]] = []
        self.error_count = 0
        self.error_kinds: dict[str, int] = {}
        self.low: list = []  # max-heap (negated) of the simplest
        self.high: list = []  # min-heap of the most complex
        self.sample: list = []
        self.scored = 0
        self._rng = random.Random(SAMPLE_SEED)

    def hist_bin(self, x: float) -> int:
        return min(HIST_BINS - 1, max(0, int(frac(x, self.lo, self.hi) * HIST_BINS)))

    def add(self, r: Row) -> None:
        self.rows += 1
        key = os.path.dirname(r.path) or "."
        folder = self.folders.get(key)
        if folder is None:
            if len(self.folders) < MAX_FOLDERS:
                folder = self.folders[key] = Folder(self.lo, self.hi)
            else:
                folder = self.other
        folder.rows += 1
        if r.score is None:
            folder.errors += 1
            self.error_count += 1
            msg = r.error[:SHOW_ERROR]
            if msg in self.error_kinds or len(self.error_kinds) < MAX_ERROR_KINDS:
                self.error_kinds[msg] = self.error_kinds.get(msg, 0) + 1
            else:
                self.error_kinds[""] = self.error_kinds.get("", 0) + 1  # "" = other messages
            if len(self.errors) < MAX_ERRORS:
                self.errors.append((r.path[:SHOW_PATH * 2], r.error[:SHOW_ERROR * 2]))
            return
        s = r.score
        folder.dist.add(s)
        self.dist.add(s)
        self.hist[self.hist_bin(s)] += 1
        item = (s, self.scored, r.path, r.width, r.height)  # ties: input order
        self.scored += 1
        if self.extremes:
            neg = (-s, -item[1], *item[2:])
            if len(self.low) < self.extremes:
                heapq.heappush(self.low, neg)
            elif neg > self.low[0]:
                heapq.heapreplace(self.low, neg)
            if len(self.high) < self.extremes:
                heapq.heappush(self.high, item)
            elif item > self.high[0]:
                heapq.heapreplace(self.high, item)
        if self.thumbs:
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append(item)
            else:
                j = self._rng.randrange(self.scored)
                if j < SAMPLE_SIZE:
                    self.sample[j] = item

    # what the page shows

    def simplest(self) -> list[Pick]:
        items = sorted((-s, -i, *rest) for s, i, *rest in self.low)
        return [self._pick(it) for it in items]

    def most_complex(self) -> list[Pick]:
        return [self._pick(it) for it in sorted(self.high)]

    def _pick(self, it, rank=None) -> Pick:
        s, _, path, w, h = it
        if rank is None:
            rank = self._rank(s)
        return Pick(s, path, w, h, rank)

    def _rank(self, s: float) -> float:
        """Share of the scored images below ``s`` (from the sample: exact when it holds them all)."""
        if not self.sample:
            return 0.0
        below = sum(1 for it in self.sample if it[0] < s)
        return below / max(1, len(self.sample) - 1)

    @property
    def sample_exact(self) -> bool:
        return self.scored <= SAMPLE_SIZE

    def spread(self) -> list[Pick]:
        """``thumbs`` images evenly spaced by rank, from the exact minimum to the exact maximum."""
        if not self.sample or not self.thumbs:
            return []
        s = sorted(self.sample)
        m = len(s)
        n = min(self.thumbs, m)
        if n == 1:
            idx = [0]
        else:
            idx = sorted({round(k * (m - 1) / (n - 1)) for k in range(n)})
        picks = [self._pick(s[i], i / (m - 1) if m > 1 else 0.0) for i in idx]
        if self.low:
            first = max(self.low)  # the simplest of all: the largest negated entry
            picks[0] = self._pick((-first[0], -first[1], *first[2:]), 0.0)
        if self.high:
            picks[-1] = self._pick(max(self.high), 1.0)
        return picks

    def folder_rows(self):
        items = sorted(self.folders.items())
        if self.other.rows:
            items.append((None, self.other))
        return items


# --- thumbnails ----------------------------------------------------------------------------------------


OUTSIDE_ROOT = "not shown: outside the images root (--images-root)"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class ImagesRoot:
    """Where thumbnails may come from: files below ``root`` only (the scores file's folder unless the user names
    another), symbolic links resolved, so that a scores file cannot make the page embed any image of this machine
    (``/home/you/id.jpg``, ``../../x.jpg``, a link out). Relative paths are looked up from the root, the folder
    that holds the scores, then the current folder. A path outside gets :data:`OUTSIDE_ROOT` whether or not it
    exists (the page does not tell what is on this machine)."""

    def __init__(self, base: str, root: str | None = None):
        self.base = os.path.abspath(base)
        self.root = os.path.abspath(root) if root else self.base
        self.real_root = os.path.realpath(self.root)

    def locate(self, path: str) -> tuple[str | None, str | None]:
        """(the file to decode, resolved; or None and why not)."""
        if not path or "\0" in path:
            return None, OUTSIDE_ROOT
        if os.path.isabs(path):
            candidates = [path]
        else:
            candidates = list(dict.fromkeys([os.path.join(self.root, path), os.path.join(self.base, path),
                                             os.path.abspath(path)]))
        inside = []
        for c in candidates:
            try:
                real = os.path.realpath(c)
            except (OSError, ValueError):
                continue
            if _inside(real, self.real_root):
                if os.path.lexists(real):
                    return real, None
                inside.append(real)
        if inside:  # below the root, but missing: the decoder says so
            return inside[0], None
        return None, OUTSIDE_ROOT


def thumbnail(path: str) -> tuple[str | None, str | None]:
    """(base64 JPEG, None) or (None, why not): decoded by the runtime's own checked decoding, never raising."""
    from PIL import Image

    from .preprocess import ImageError, Preprocessing, load_for_model

    try:
        rgb, _ = load_for_model(path, Preprocessing(resize="square", size=THUMB_PX))
        im = Image.fromarray(rgb)
        del rgb
        im.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
        return base64.b64encode(buf.getvalue()).decode("ascii"), None
    except ImageError as e:
        return None, e.problem
    except Exception as e:  # a placeholder, whatever an odd file does to the decoder
        return None, f"cannot read the image ({type(e).__name__})"


# --- HTML -----------------------------------------------------------------------------------------------


def esc(text, limit: int | None = None) -> str:
    """Untrusted text -> printable, cut to ``limit`` characters, HTML-escaped (quotes too)."""
    text = printable(str(text))
    if limit and len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    return html.escape(text, quote=True)


def fmt(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "&ndash;"
    return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.{digits}g}"  # 1e308 in fixed point is 309 digits


CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:1220px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px}
.sub{color:#5b6475;margin:0 0 18px;word-break:break-all}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px 18px;margin:0 0 18px}
.cards{display:flex;gap:12px;flex-wrap:wrap;background:none;border:0;padding:0}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:22px}.card span{color:#5b6475;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.bad b{color:#b3261e}
.note{color:#5b6475;font-size:12.5px;margin:6px 0 0}
.warn{color:#8a5300;background:#fff6e0;border:1px solid #f0d9a0;border-radius:6px;padding:6px 10px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{color:#5b6475;font-weight:600;background:#fafbfc}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.p{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.q{display:flex;gap:18px;flex-wrap:wrap;margin-top:8px;font-variant-numeric:tabular-nums}
.q span{color:#5b6475}
.sheet{display:grid;grid-template-columns:repeat(8,minmax(0,1fr));gap:10px}
@media (max-width:900px){.sheet{grid-template-columns:repeat(auto-fill,minmax(120px,1fr))}}
figure{margin:0;background:#fafbfc;border:1px solid #eceef2;border-radius:6px;padding:6px;text-align:center}
figure img,.ph{width:100%;height:124px;object-fit:contain;display:block;background:#e9ecf1;border-radius:4px}
.ph{display:flex;align-items:center;justify-content:center;color:#8a93a3;font-size:11.5px;padding:8px;word-break:break-word}
figcaption{font-size:12px;margin-top:4px;line-height:1.3}
figcaption b{font-size:14px;font-variant-numeric:tabular-nums}
figcaption .f{display:block;color:#3d4554;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figcaption .d{color:#8a93a3;font-size:11px}
.bar{height:8px;background:#e9ecf1;border-radius:4px;position:relative;min-width:120px}
.bar i{position:absolute;top:-2px;width:3px;height:12px;background:#2f6fdb;border-radius:1px}
.bar s{position:absolute;top:0;height:8px;background:#c9d8f5;border-radius:4px}
footer{color:#5b6475;font-size:12px}
"""


def count_ticks(peak: int) -> tuple[int, int]:
    """(step, number of steps) of the count axis: whole counts, every label different (1, 2, 3 ... for small
    peaks; 1, 2 or 5 times a power of ten otherwise), at most 5 steps, the last at or above ``peak``."""
    peak = max(1, int(peak))
    if peak <= 5:
        return 1, peak
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step * 5 >= peak:
                return m * step, -(-peak // (m * step))
        step *= 10


def _hist_svg(rep: Report, median: float | None) -> str:
    w, h, left, right, top, bottom = 1100, 250, 52, 12, 22, 34
    pw, ph = w - left - right, h - top - bottom
    step, ticks = count_ticks(max(rep.hist))
    peak = step * ticks  # the top of the count axis: a whole number of steps, each label a different count
    bw = pw / HIST_BINS
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" role="img" '
           f'aria-label="score histogram" style="max-width:{w}px;display:block">']
    for k in range(ticks + 1):  # horizontal grid lines and count labels
        y = top + ph - ph * k / ticks
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceef2"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#5b6475">'
                   f'{step * k:,}</text>')
    for i, c in enumerate(rep.hist):
        if c:
            bh = ph * c / peak
            lo, hi = lerp(rep.lo, rep.hi, i / HIST_BINS), lerp(rep.lo, rep.hi, (i + 1) / HIST_BINS)
            out.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{top + ph - bh:.1f}" width="{bw - 1:.1f}" '
                       f'height="{bh:.1f}" fill="#5b8def"><title>{lo:.4g} to {hi:.4g}: {c}'
                       f'</title></rect>')
    for k in range(11):  # score ticks
        x = left + pw * k / 10
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#8a93a3"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 17}" font-size="11" text-anchor="middle" fill="#5b6475">'
                   f'{lerp(rep.lo, rep.hi, k / 10):.3g}</text>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}" stroke="#8a93a3"/>')
    if median is not None:
        x = left + pw * frac(median, rep.lo, rep.hi)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#d9480f" '
                   f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{top - 8}" font-size="11" text-anchor="middle" '
                   f'fill="#d9480f">'
                   f'median {median:.4f}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{h - 2}" font-size="11" text-anchor="middle" fill="#5b6475">'
               f'score ({HIST_BINS} bins)</text></svg>')
    return "".join(out)


def _figure(p: Pick, thumbs: dict, images: ImagesRoot) -> str:
    if p.path not in thumbs:
        where, why = images.locate(p.path)
        thumbs[p.path] = thumbnail(where) if where else (None, why)
    data, why = thumbs[p.path]
    full = esc(p.path, SHOW_PATH)
    size = f" \u00b7 {p.width}\u00d7{p.height}" if p.width and p.height else ""
    title = f'{full} ({fmt(p.score)}{esc(size)})'
    if data:
        img = f'<img src="data:image/jpeg;base64,{data}" alt="{full}" title="{title}">'
    else:
        img = f'<div class="ph" title="{title}">{esc(why, 120)}</div>'
    parts = p.path.replace(os.sep, "/").rstrip("/").split("/")
    name = esc(parts[-1] or p.path, 80)
    parent = esc(parts[-2] + "/" if len(parts) > 1 else "\u00a0", 80)
    return (f'<figure>{img}<figcaption><b>{fmt(p.score)}</b> <span class="note">p{100 * p.rank:.0f}</span>'
            f'<span class="f" title="{full}">{name}</span><span class="f d">{parent}</span></figcaption></figure>')


def _sheet(picks: list[Pick], thumbs: dict, images: ImagesRoot) -> str:
    return '<div class="sheet">' + "".join(_figure(p, thumbs, images) for p in picks) + "</div>"


def _summary_items(summary: dict) -> list[tuple[str, str]]:
    """Plain fields of summary.json (one level of nesting), shown as text."""
    items = []

    def show(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        if isinstance(v, list) and len(v) <= 12 and all(isinstance(x, (int, float, str)) for x in v):
            return ", ".join(show(x) for x in v)
        if isinstance(v, (str, int, bool)) or v is None:
            return str(v)
        return None

    for k, v in summary.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if (t := show(v2)) is not None:
                    items.append((f"{k}.{k2}", t))
        elif (t := show(v)) is not None:
            items.append((str(k), t))
    return items[:60]


def render(rep: Report, source: Source, title: str, images_root: str | None = None) -> str:
    d = rep.dist
    median = d.quantile(0.5)
    approx = "" if d.exact else "\u2248"
    thumbs: dict = {}
    base = ImagesRoot(source.base, images_root)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    h = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
         f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
         f'<meta name="viewport" content="width=device-width,initial-scale=1">'
         f'<title>{esc(title, 200)}</title><style>{CSS}</style></head><body><main>',
         f'<h1>{esc(title, 200)}</h1><p class="sub">{esc(source.path, SHOW_PATH)} &middot; {esc(source.describe())}'
         f' &middot; made {now} by icrt report</p>']
    if source.kind == "batch" and not source.complete:
        h.append('<p class="warn">No completion marker in this folder: the batch may be unfinished or still '
                 'running; this page shows the rows written so far.</p>')
    cards = [("images", f"{rep.rows:,}", ""), ("scored", f"{rep.scored:,}", ""),
             ("errors", f"{rep.error_count:,}", " bad" if rep.error_count else ""),
             ("median", approx + fmt(median), ""), ("mean", fmt(d.mean), ""),
             ("min \u2013 max", f"{fmt(d.min if d.n else None, 3)} \u2013 {fmt(d.max if d.n else None, 3)}", "")]
    h.append('<section class="cards">' + "".join(f'<div class="card{c}"><span>{k}</span><b>{v}</b></div>'
                                                for k, v, c in cards) + "</section>")

    h.append("<section><h2>Score distribution</h2>")
    if d.n:
        h.append(_hist_svg(rep, median))
        qs = [("min", 0), ("p5", .05), ("p10", .1), ("p25", .25), ("median", .5), ("p75", .75), ("p90", .9),
              ("p95", .95), ("max", 1)]
        h.append('<div class="q">' + "".join(f"<div><span>{k}</span> {approx if 0 < q < 1 else ''}"
                                             f"{fmt(d.quantile(q))}</div>" for k, q in qs) + "</div>")
        if not d.exact:
            h.append(f'<p class="note">Quantiles over {d.n:,} scores from {GLOBAL_BINS} fine bins (to within '
                     f'{width(rep.lo, rep.hi, GLOBAL_BINS):.2g}).</p>')
    else:
        h.append('<p class="note">No image was scored.</p>')
    h.append("</section>")

    if rep.thumbs and d.n:
        h.append(f"<section><h2>Simplest</h2>{_sheet(rep.simplest(), thumbs, base)}</section>")
        spread = rep.spread()
        how = ("all scored images ranked" if rep.sample_exact
               else f"ranks from a uniform random sample of {SAMPLE_SIZE:,} of the {rep.scored:,} scored images")
        h.append(f'<section><h2>From simplest to most complex</h2><p class="note" style="margin:0 0 10px">'
                 f'{len(spread)} images evenly spaced by rank ({how}); pN under each: its rank percentile.</p>'
                 f'{_sheet(spread, thumbs, base)}</section>')
        h.append(f"<section><h2>Most complex</h2>{_sheet(rep.most_complex(), thumbs, base)}</section>")

    more = "+" if rep.other.rows else ""
    h.append(f"<section><h2>Folders ({len(rep.folders):,}{more})</h2><table><tr><th>folder</th>"
             '<th class="n">images</th><th class="n">errors</th><th class="n">median</th><th class="n">mean</th>'
             '<th class="n">min</th><th class="n">max</th><th>range (bar: min to max, mark: median)</th></tr>')
    for key, f in rep.folder_rows():
        fd = f.dist
        name = esc(key, SHOW_PATH) if key is not None else "<i>other folders</i>"
        bar = ""
        if fd.n:
            a, b, m = (frac(v, rep.lo, rep.hi) * 100 for v in (fd.min, fd.max, fd.quantile(0.5)))
            bar = (f'<div class="bar"><s style="left:{a:.1f}%;width:{max(b - a, 0.5):.1f}%"></s>'
                   f'<i style="left:calc({m:.1f}% - 1px)"></i></div>')
        fa = "" if fd.exact else "\u2248"
        h.append(f'<tr><td class="p">{name}</td><td class="n">{f.rows:,}</td><td class="n">{f.errors:,}</td>'
                 f'<td class="n">{fa if fd.n else ""}{fmt(fd.quantile(0.5))}</td><td class="n">{fmt(fd.mean)}</td>'
                 f'<td class="n">{fmt(fd.min if fd.n else None)}</td><td class="n">{fmt(fd.max if fd.n else None)}'
                 f'</td><td>{bar}</td></tr>')
    h.append("</table>")
    if rep.other.rows:
        h.append(f'<p class="note">Only the first {MAX_FOLDERS} folders met are listed one by one.</p>')
    h.append("</section>")

    h.append(f"<section><h2>Errors ({rep.error_count:,})</h2>")
    if rep.error_count:
        if len(rep.error_kinds) > 1:
            kinds = sorted(rep.error_kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:12]
            h.append('<table><tr><th>error message</th><th class="n">files</th></tr>' + "".join(
                f'<tr><td>{esc(k, SHOW_ERROR) if k else "<i>other messages</i>"}</td><td class="n">{n:,}</td></tr>'
                for k, n in kinds) + '</table><p class="note" style="margin-bottom:14px"></p>')
        h.append('<table><tr><th>path</th><th>error</th></tr>' + "".join(
            f'<tr><td class="p">{esc(p, SHOW_PATH)}</td><td>{esc(e, SHOW_ERROR)}</td></tr>' for p, e in rep.errors)
            + "</table>")
        if rep.error_count > len(rep.errors):
            h.append(f'<p class="note">The first {len(rep.errors):,} of {rep.error_count:,} errors.</p>')
    else:
        h.append('<p class="note">None: every image was scored.</p>')
    h.append("</section>")

    if source.summary_note:
        h.append(f'<section><h2>Run ({SUMMARY_FILE})</h2><p class="note">{esc(source.summary_note, 300)}</p></section>')
    if source.summary:
        items = _summary_items(source.summary)
        h.append(f"<section><h2>Run ({SUMMARY_FILE})</h2><table>" + "".join(
            f'<tr><th style="width:30%">{esc(k, 120)}</th><td>{esc(v, 300)}</td></tr>' for k, v in items)
            + "</table></section>")

    h.append(f'<footer>Thumbnails: the {rep.extremes} simplest and most complex images exactly; between them, images '
             f'evenly spaced by rank{" (exact)" if rep.sample_exact else f" in a random sample of {SAMPLE_SIZE:,}"}. '
             f'Folder = the parent directory of each path. Medians are exact up to {EXACT_FOLDER:,} scores per folder '
             f'({EXACT_GLOBAL:,} overall), then read from fine bins (marked \u2248).</footer></main></body></html>\n')
    return "".join(h)


# --- the command ----------------------------------------------------------------------------------------


def _check_output(output: str, source: Source) -> None:
    from .files import destination_problem, resolve

    try:
        target, st = resolve(output)
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot write -o {printable(output)}: {getattr(e, 'strerror', None) or e}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UserInputError(f"cannot write -o {printable(output)}: not a regular file (refusing to replace it)")
    problem = destination_problem(output)
    if problem:
        raise UserInputError(f"cannot write -o {printable(output)}: {problem}")
    inputs = [source.path, *source.parts, os.path.join(source.path, SUMMARY_FILE)]
    if st is not None:
        for p in inputs:
            try:
                if os.path.samefile(p, target):
                    raise UserInputError(f"cannot write -o {printable(output)}: it is the input {printable(p)}")
            except OSError:
                pass


def check_images_root(images_root: str | None) -> None:
    """UserInputError unless ``images_root`` (when given) is a folder."""
    if images_root is not None and not os.path.isdir(images_root):
        raise UserInputError(f"--images-root {printable(images_root)}: not a folder")


def make_report(source_path: str, thumbs: int = DEFAULT_THUMBS, title: str | None = None,
                images_root: str | None = None) -> str:
    """The HTML page for ``source_path`` (a batch folder, a Parquet part, or a scores file); thumbnails only of
    images below ``images_root`` (default: the folder that holds the scores, see :class:`ImagesRoot`)."""
    check_images_root(images_root)
    return _render_source(Source(source_path), thumbs, title, images_root)[0]


def _render_source(source: Source, thumbs: int, title: str | None, images_root: str | None = None
                   ) -> tuple[str, Report]:
    lo, hi, n = math.inf, -math.inf, 0
    for r in source.rows():  # pass 1: check everything, find the range
        n += 1
        if r.score is not None:
            lo, hi = min(lo, r.score), max(hi, r.score)
    if not n:
        raise _bad(source.path, "", "no records")
    if lo > hi:  # nothing scored
        lo, hi = 0.0, 1.0
    elif lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # the usual score range: show all of it
    elif lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    rep = Report(lo, hi, thumbs)
    for r in source.rows():  # pass 2
        rep.add(r)
    name = os.path.basename(os.path.normpath(source.path)) or source.path
    return render(rep, source, title or f"icrt report: {name}", images_root), rep


def write_report(source_path: str, output: str, thumbs: int = DEFAULT_THUMBS, title: str | None = None,
                 images_root: str | None = None) -> Report:
    from .files import write_text

    check_images_root(images_root)
    source = Source(source_path)
    _check_output(output, source)
    page, rep = _render_source(source, thumbs, title, images_root)
    try:
        write_text(output, page)
    except OSError as e:
        raise UserInputError(f"cannot write -o {printable(output)}: {e.strerror or e}") from None
    return rep
