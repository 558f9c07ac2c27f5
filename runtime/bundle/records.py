"""The score record: what scoring one image gives, and every form icrt writes it in, defined once.

A record is a plain dict, the same in the Python API (``Scorer.iter_score``), ``icrt score``'s table / JSON /
JSONL / CSV, ``icrt batch``'s Parquet parts and the tensors of icrt's servers:

==========  ==============  ================================================================================
field       type            meaning
==========  ==============  ================================================================================
image       str             the file (its path as given, or a URI; ``<image N>`` for an in-memory image)
score       float           the image's complexity score, in the model's range (scored records only)
patches     int             model inputs the image gave (1 for square models)
width       int             the image's width in pixels, as decoded
height      int             the image's height in pixels
error       str             why the file could not be scored (error records only; one line)
heatmap     str             the heatmap PNG drawn for it (``icrt score --heatmap`` only)
==========  ==============  ================================================================================

A record has ``error`` or ``score``, never both. ``Scorer.iter_score(..., details=True)`` adds the per-input
scores and their positions (``patch_scores``, ``patch_positions``, ``geometry``), and ``maps=True`` a
:class:`runtime.scoring.heatmap.ScoreMap` under ``map`` for a heatmap consumer; neither is written out.

Light: the standard library; pyarrow and numpy are imported by the functions that need them.
"""
from __future__ import annotations

import os

IMAGE, SCORE, ERROR = "image", "score", "error"
PATCHES, WIDTH, HEIGHT = "patches", "width", "height"
HEATMAP = "heatmap"
INT_FIELDS = (PATCHES, WIDTH, HEIGHT)
TEXT_FIELDS = (IMAGE, HEATMAP, ERROR)  # free text (a spreadsheet could read a formula in them)


def error_record(image: str, problem: str) -> dict:
    return {IMAGE: image, ERROR: problem}


def is_error(record: dict) -> bool:
    return ERROR in record


# --- icrt score's text outputs (runtime.tools.formats) ----------------------------------------------------------------

COLUMNS = (IMAGE, SCORE, PATCHES, WIDTH, HEIGHT)  # then heatmap (when drawn) and error: the CSV header
TABLE_HEADER = (IMAGE, SCORE, PATCHES, "size")  # the table shows width x height as one column


def text_columns(records) -> list[str]:
    """The CSV columns of ``records``: :data:`COLUMNS`, ``heatmap`` when any was drawn, ``error``."""
    return [*COLUMNS, *([HEATMAP] if any(HEATMAP in r for r in records) else []), ERROR]


# --- icrt batch's Parquet parts (runtime.batch) -----------------------------------------------------------------

PARQUET_COLUMNS = (IMAGE, SCORE, ERROR, WIDTH, HEIGHT, PATCHES)
OLD_FILE_COLUMN = "path"  # the file column's name in parts written before icrt 0.2 (read as ``image``)


def parquet_schema():
    import pyarrow as pa

    return pa.schema([(IMAGE, pa.string()), (SCORE, pa.float64()), (ERROR, pa.string()),
                      (WIDTH, pa.int32()), (HEIGHT, pa.int32()), (PATCHES, pa.int32())])


def parquet_name(name: str) -> str:
    """The ``image`` cell for an input: the name itself; bytes that are not UTF-8 (lone surrogates of
    ``os.fsdecode``) as ``\\xNN`` escapes, since Parquet strings are UTF-8."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def records_table(records, names=None):
    """Records -> a pyarrow Table of :data:`PARQUET_COLUMNS`; ``names`` replaces the records' ``image`` (the
    inputs, in the same order)."""
    import pyarrow as pa

    cols = {c: [] for c in PARQUET_COLUMNS}
    for i, r in enumerate(records):
        cols[IMAGE].append(parquet_name(names[i] if names is not None else r[IMAGE]))
        err = r.get(ERROR)
        cols[ERROR].append(err)
        cols[SCORE].append(None if err is not None else float(r[SCORE]))
        for c in INT_FIELDS:
            cols[c].append(None if err is not None else int(r[c]))
    return pa.Table.from_pydict(cols, schema=parquet_schema())


# --- the tensors of icrt's servers (runtime.serving) ------------------------------------------------------------

IMAGE_INPUT = "image"  # BYTES [batch, 1]: one encoded image file (JPEG, PNG, ...) per row
# name -> (Triton data type, NumPy dtype name) of the output tensors, each [batch, 1]: ``score`` is NaN and
# ``error`` holds the UTF-8 problem for a file that could not be scored (empty when scored)
OUTPUT_TENSORS = {SCORE: ("TYPE_FP32", "float32"), ERROR: ("TYPE_STRING", "object"),
                  **{k: ("TYPE_INT32", "int32") for k in INT_FIELDS}}
OUTPUTS = tuple(OUTPUT_TENSORS)


def outputs_for(records: list[dict]) -> dict:
    """Records -> the output tensors, ``name -> [n, 1] array``."""
    import numpy as np

    n = len(records)
    out = {SCORE: np.full((n, 1), np.nan, np.float32), ERROR: np.empty((n, 1), dtype=object)}
    for k in INT_FIELDS:
        out[k] = np.zeros((n, 1), np.int32)
    for i, rec in enumerate(records):
        if ERROR in rec:
            out[ERROR][i, 0] = str(rec[ERROR]).encode("utf-8", "backslashreplace")
            continue
        out[ERROR][i, 0] = b""
        out[SCORE][i, 0] = rec[SCORE]
        for k in INT_FIELDS:
            out[k][i, 0] = rec[k]
    return out


def records_from_outputs(names: list[str], outputs: dict) -> list[dict]:
    """The output tensors of one response -> one record per row, named ``names`` (the client's file names)."""
    import numpy as np

    recs = []
    score = np.asarray(outputs[SCORE], np.float32).reshape(-1)
    error = np.asarray(outputs[ERROR]).reshape(-1)
    ints = {k: np.asarray(outputs[k]).reshape(-1) for k in INT_FIELDS}
    for i, name in enumerate(names):
        problem = error[i]
        problem = problem.decode("utf-8", "replace") if isinstance(problem, bytes) else str(problem or "")
        if problem:
            recs.append(error_record(name, problem))
        else:
            recs.append({IMAGE: name, SCORE: float(score[i]), **{k: int(ints[k][i]) for k in INT_FIELDS}})
    return recs
