"""``summary.json`` of an ``icrt batch`` folder, from every part in it (not only this run's), then the ``_SUCCESS``
marker: counts, errors (listed and counted by kind, bounded), score quantiles and histogram, speed, the bundle."""
from __future__ import annotations

import json
import os
import sys

from icrt.runtime.batch.layout import SUCCESS_FILE, SUMMARY_FILE, part_files, write_owned_file
from icrt.runtime.batch.parts import read_parts, require_pyarrow
from icrt.runtime.bundle.records import ERROR, IMAGE, SCORE

MAX_ERRORS_LISTED = 1000  # errors named in summary.json (all of them are in the parts)
MAX_ERRORS_CHARS = 256 * 1024  # ... and at most this many characters of paths and texts (summary.json stays small)
MAX_ERROR_KINDS = 100  # kinds of problem counted one by one in summary.json (then "other problems")
MAX_LISTED_PATH = 1024  # characters of a path listed there (longer ones are cut, marked with "...")
HISTOGRAM_BINS = 20
QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)



def write_summary(job, stats: dict, shard=None) -> dict:
    """summary.json from every part in DIR (not only this run's), then the _SUCCESS marker."""
    import datetime
    import platform

    import numpy as np

    from icrt.runtime.base.files import json_ready
    from icrt.runtime.base.version import __version__

    pa = require_pyarrow()
    scores, errors, by_problem = [], [], {}
    rows = n_err = chars = 0
    parts = part_files(job.out)
    for _, t in read_parts(job.out, [IMAGE, SCORE, ERROR]):  # batch by batch: memory bounded by the scores
        rows += t.num_rows
        scores.append(np.array(t.column(SCORE).drop_null().to_numpy(zero_copy_only=False), dtype=np.float64))
        err = t.column(ERROR)
        if err.null_count < t.num_rows:
            mask = pa.compute.is_valid(err)
            bad = t.filter(mask)
            n_err += bad.num_rows
            for p, e in zip(bad.column(IMAGE).to_pylist(), bad.column(ERROR).to_pylist()):
                kind = e.split(" (", 1)[0][:200]
                if kind not in by_problem and len(by_problem) >= MAX_ERROR_KINDS:
                    kind = "other problems"
                by_problem[kind] = by_problem.get(kind, 0) + 1
                p = p if len(p) <= MAX_LISTED_PATH else p[:MAX_LISTED_PATH - 3] + "..."
                e = e if len(e) <= MAX_LISTED_PATH else e[:MAX_LISTED_PATH - 3] + "..."
                if len(errors) < MAX_ERRORS_LISTED and chars + len(p) + len(e) <= MAX_ERRORS_CHARS:
                    errors.append({IMAGE: p, ERROR: e})
                    chars += len(p) + len(e)
    s = np.concatenate(scores) if scores else np.zeros(0)
    lo, hi = job.extra.get("score_range", [0.0, 1.0])
    counts, edges = np.histogram(s, bins=HISTOGRAM_BINS, range=(float(lo), float(hi)))
    score_stats = None
    if s.size:
        score_stats = {"min": float(s.min()), "max": float(s.max()), "mean": float(s.mean()), "std": float(s.std()),
                       "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(s, QUANTILES))}}
    ran = job.extra.get("ran") or {}
    versions = {"icrt": __version__, "python": platform.python_version(), "numpy": np.__version__,
                "pyarrow": pa.__version__}
    if ran.get("backend") and ran.get("version"):  # the engine that scored (OpenVINO, TensorRT, onnxruntime)
        versions[str(ran["backend"])] = ran["version"]
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
        "runner": job.runner,
        "workers": job.workers,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "bundle": {"name": job.bundle_name, "kind": job.bundle_kind, "path": job.bundle, "precision": job.precision,
                   "backend": ran.get("backend", job.backend), "backend_asked": job.backend,
                   "device": ran.get("device"), "versions": job.versions},
        "versions": versions,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if "ray" in job.extra:
        summary["ray"] = job.extra["ray"]
        if ran.get("resolved"):
            summary["ray"]["backend_resolved"] = ran["resolved"]
    write_owned_file(os.path.join(job.out, SUMMARY_FILE), json.dumps(json_ready(summary), indent=2) + "\n")
    write_owned_file(os.path.join(job.out, SUCCESS_FILE),
                     json.dumps({"rows": rows, "parts": [os.path.basename(p) for p in parts]}) + "\n")
    return summary
