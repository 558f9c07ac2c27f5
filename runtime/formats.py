"""Score records -> table, json, jsonl or csv text (what ``icrt score --format`` writes)."""
from __future__ import annotations

import csv
import io
import json

FORMATS = ("table", "json", "jsonl", "csv")
COLUMNS = ("image", "score", "patches", "width", "height")


def _clean(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if v is not None or k == "score"}


def render(records: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([_clean(r) for r in records], indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(_clean(r)) + "\n" for r in records)
    if fmt == "csv":
        extra = ["heatmap"] if any("heatmap" in r for r in records) else []
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*COLUMNS, *extra, "error"], extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in records:
            row = dict(r)
            if row.get("score") is not None:
                row["score"] = f"{row['score']:.6f}"
            w.writerow(row)
        return buf.getvalue()
    if fmt == "table":
        return table(records)
    raise ValueError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


def table(records: list[dict]) -> str:
    rows = [("image", "score", "patches", "size")]
    for r in records:
        if "error" in r:
            rows.append((r["image"], "error", "-", r["error"]))
        else:
            rows.append((r["image"], f"{r['score']:.4f}", str(r["patches"]), f"{r['width']}x{r['height']}"))
    w0 = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{w0}}  {r[1]:>6}  {r[2]:>7}  {r[3]}" for r in rows]
    return "\n".join(lines) + "\n"
