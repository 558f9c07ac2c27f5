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

from icrt.runtime.base.text import printable
from icrt.runtime.bundle.records import ERROR, IMAGE, PATCHES, SCORE, TABLE_HEADER, TEXT_FIELDS, text_columns

FORMATS = ("table", "json", "jsonl", "csv")
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
        return json.dumps([_clean(r) for r in records], indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(_clean(r)) + "\n" for r in records)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=text_columns(records), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in records:
            row = dict(r)
            if row.get(SCORE) is not None:
                row[SCORE] = f"{row[SCORE]:.6f}"
            for k in TEXT_FIELDS:
                if k in row:
                    row[k] = csv_safe(row[k])
            w.writerow(row)
        return buf.getvalue()
    if fmt == "table":
        return table(records)
    raise ValueError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


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
