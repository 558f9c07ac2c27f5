"""``icrt eval`` and ``icrt.evaluate``: how good a bundle is on labelled images of one's own, with the runtime alone
(no torch, no scipy, no checkpoint: a Jetson, a server or a slim install can check its model).

The images are scored by the Scorer as ``icrt score`` scores them (the same batches, decode-ahead and error
records); the figures (``runtime.tools.metrics``) are computed over the images scored. An image that fails is
counted and left out of the figures, a row that cannot be read is counted and skipped (the labels' own problems,
``runtime.scoring.labels``), and a group with fewer than :data:`~icrt.runtime.tools.metrics.MIN_IMAGES` scored
images (a category, or the whole set) is reported as not computable: 2 images always rank "perfectly".
"""
from __future__ import annotations

import json

import numpy as np

import icrt.runtime.tools.metrics as metrics
from icrt.runtime.base.files import json_ready
from icrt.runtime.base.text import printable
from icrt.runtime.bundle.records import ERROR, SCORE
from icrt.runtime.scoring.labels import Label, Labels, read_labels
from icrt.runtime.scoring.options import ScorerOptions

FORMATS = ("table", "json")
NO_CATEGORY = "(none)"  # the group of rows without a category, in a file where others have one
SHOWN = ("srcc", "plcc", "krcc", "rmse")  # the table's columns (JSON has every figure)


def evaluate(options: ScorerOptions, data: str, split: str | None = None) -> dict:
    """Score the images ``data`` labels (a labels CSV, or an IC9600 folder: its ``split`` list, default test) with
    the Scorer ``options`` describe, and measure the scores against the labels: the dict :func:`measure` gives."""
    from icrt.runtime.scoring.scorer import Scorer

    labels = read_labels(data, split)
    return score_labels(Scorer.open(options), labels)


def score_labels(scorer, labels: Labels, progress=None) -> dict:
    """Score ``labels``' images with ``scorer`` (``iter_score``: batches shared across images, decoding ahead);
    ``progress(label, record)`` is told of each record as it comes."""
    records = []
    for label, rec in zip(labels.rows, scorer.iter_score([row.image for row in labels.rows])):
        records.append(rec)
        if progress is not None:
            progress(label, rec)
    return measure(labels, records, scorer)


def measure(labels: Labels, records: list[dict], scorer=None) -> dict:
    """The figures of ``records`` (one per row of ``labels``, in order) against the labels.

    ``n`` images scored, ``failed`` images not (``failures``: their rows and errors), ``unreadable_rows`` (``unreadable``:
    each row's problem); ``pooled``: n, srcc, plcc, krcc, rmse, mae, rmae (IC9600's sqrt(mean |e|)) and ``computable``;
    ``per_category`` (empty without categories): the same for each category, and ``category_means`` (SRCC and PLCC
    over the computable categories). A figure that is undefined (not computable, a constant side) is NaN (null in
    JSON). ``model_problem``: a model that failed to run or gave NaN for every image (a model error), else None."""
    scored = [(row, rec[SCORE]) for row, rec in zip(labels.rows, records) if ERROR not in rec]
    pred = np.array([s for _, s in scored], np.float64)
    target = np.array([row.score for row, _ in scored], np.float64)
    categories = None
    if any(row.category is not None for row in labels.rows):
        categories = [row.category if row.category is not None else NO_CATEGORY for row, _ in scored]
    rep = metrics.report(pred, target, categories, min_images=metrics.MIN_IMAGES)
    out = {
        "data": labels.source,
        "model": scorer.manifest.root if getattr(scorer, "manifest", None) is not None else None,
        "ran": scorer.what_ran() if scorer is not None else None,
        "n": len(scored),
        "failed": len(records) - len(scored),
        "unreadable_rows": len(labels.problems),
        "pooled": {k: rep[k] for k in ("n", *metrics.FIGURES, "computable")},
        "per_category": rep.get("per_category", {}),
    }
    if "per_category" in rep:
        out["category_means"] = {"srcc": rep["mean_category_srcc"], "plcc": rep["mean_category_plcc"]}
    out["notes"] = _notes(target, getattr(scorer, "score_range", None))
    out["failures"] = [{"row": row.where, "image": row.key, "error": rec[ERROR]}
                       for row, rec in zip(labels.rows, records) if ERROR in rec]
    out["unreadable"] = [{"row": p.where, "problem": p.problem} for p in labels.problems]
    out["model_problem"] = getattr(scorer, "model_problem", lambda: None)() if scorer is not None else None
    return out


def _notes(target: np.ndarray, score_range) -> list[str]:
    """What a reader must know to read the figures (labels on another scale than the scores)."""
    if not len(target) or score_range is None:
        return []
    lo, hi = float(target.min()), float(target.max())
    if lo >= score_range[0] and hi <= score_range[1]:
        return []
    return [f"the labels span [{lo:g}, {hi:g}], the model's scores [{score_range[0]:g}, {score_range[1]:g}]: RMSE, "
            "MAE and RMAE compare two scales (rescale the labels to compare values); the correlations do not depend "
            "on it"]


def failure_line(label: Label, error: str) -> str:
    """One image that could not be scored, on one line: its row, its path as written, the problem."""
    return f"icrt: {printable(label.where)}: {printable(label.key)}: {printable(error)}"


# --- output ---------------------------------------------------------------------------------------------------------


def render(result: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(json_ready(result), indent=2, allow_nan=False) + "\n"
    if fmt == "table":
        return table(result)
    raise ValueError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


def _figure(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4f}"


def _cells(values) -> str:
    return " ".join(f"{v:>7}" for v in values)


def _row(name: str, m: dict) -> tuple[str, str, str]:
    if m.get("computable") is False:
        return name, str(m["n"]), f"not computable (fewer than {metrics.MIN_IMAGES} scored images)"
    return name, str(m["n"]), _cells(_figure(m[k]) for k in SHOWN)


def table(result: dict) -> str:
    """For people: the pooled figures, each category's and their means, then the counts; names made printable."""
    rows = [("", "images", _cells(k.upper() for k in SHOWN)), _row("pooled", result["pooled"])]
    rows += [_row("  " + printable(" ".join(name.split()) or "''"), m) for name, m in result["per_category"].items()]
    if "category_means" in result:
        means = result["category_means"]
        rows.append(("  mean of categories", "", _cells((_figure(means["srcc"]), _figure(means["plcc"])))))
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    lines = [f"{name:<{w0}}  {n:>{w1}}  {cells}".rstrip() for name, n, cells in rows]
    counts = f"{result['n']} scored, {result['failed']} failed"
    if result["unreadable_rows"]:
        counts += f", {result['unreadable_rows']} unreadable row(s) skipped"
    lines.append(f"{counts} (labels: {printable(result['data'])})")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
