"""Score records -> table, json, jsonl or csv text (what ``icrt score --format`` writes).

File names are str as ``os.fsdecode`` gives them: bytes that are not UTF-8 are lone surrogates
(``\\udcff`` for the byte 0xff). JSON writes them as ``\\udcff`` escapes (ASCII output); csv and table text
keep them, and :func:`encode` turns them back into the original bytes.
"""
from __future__ import annotations

import csv
import io
import json
import re

from icrt.runtime.base.files import json_ready
from icrt.runtime.base.text import printable
from icrt.runtime.bundle.records import (
    ERROR,
    HEATMAP,
    IMAGE,
    PATCHES,
    SCORE,
    TABLE_HEADER,
    TEXT_FIELDS,
    text_columns,
)

FORMATS = ("table", "json", "jsonl", "csv")
STREAMED = ("jsonl", "csv")  # written a row at a time as records come (icrt score); table and json at the end
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula (OWASP CSV injection)


def encode(text: str) -> bytes:
    """Output text -> bytes: UTF-8, with the surrogates of undecodable file names back to their bytes."""
    return text.encode("utf-8", "surrogateescape")


def csv_safe(cell):
    """A text cell a spreadsheet would run as a formula gets a leading ``'`` (OWASP's advice)."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


def _clean(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if v is not None or k == SCORE}


def render(records: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([json_ready(_clean(r)) for r in records], indent=2, allow_nan=False) + "\n"
    if fmt in STREAMED:
        columns = text_columns(records)
        return header(fmt, columns) + "".join(row(r, fmt, columns) for r in records)
    if fmt == "table":
        return table(records)
    raise ValueError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


def stream_columns(heatmaps: bool) -> list[str]:
    """The CSV columns of a run written row by row, known before its first record: ``heatmap`` when heatmaps are
    asked for (empty where none was drawn)."""
    return text_columns([{HEATMAP: None}] if heatmaps else [])


def header(fmt: str, columns) -> str:
    """What a streamed format starts with: the CSV header line (nothing for jsonl)."""
    if fmt != "csv":
        return ""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue()


def row(rec: dict, fmt: str, columns) -> str:
    """One record as one jsonl line or one CSV row (``columns``), so that a run can write it as soon as it is scored."""
    if fmt == "jsonl":
        return json.dumps(json_ready(_clean(rec)), allow_nan=False) + "\n"
    cells = dict(rec)
    if cells.get(SCORE) is not None:
        cells[SCORE] = f"{cells[SCORE]:.6f}"
    for k in TEXT_FIELDS:
        if k in cells:
            cells[k] = csv_safe(cells[k])
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n").writerow(cells)
    return buf.getvalue()


def table(records: list[dict]) -> str:
    rows = [TABLE_HEADER]
    for r in records:
        name = _one_line(r[IMAGE])  # for people: one row per image, whatever the name holds
        if ERROR in r:
            rows.append((name, "error", "-", _one_line(r[ERROR])))
        else:
            rows.append((name, f"{r[SCORE]:.4f}", str(r[PATCHES]), f"{r['width']}x{r['height']}"))
    w0 = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{w0}}  {r[1]:>6}  {r[2]:>7}  {r[3]}" for r in rows]
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    """Control characters escaped (``\\n``, ...); undecodable bytes kept (they are written back as they were)."""
    return re.sub("[\x00-\x1f\x7f-\x9f]", lambda m: printable(m.group()), text)
