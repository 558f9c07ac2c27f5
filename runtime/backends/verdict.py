"""OpenVINO's verdict on a model file, held to onnxruntime's before OpenVINO scores with it.

Why: OpenVINO runs graphs that onnxruntime refuses. A Gather that reads out of bounds (index 5 of a dimension of 1) is
a run-time error in onnxruntime; in OpenVINO it is a number (whatever the memory held), and the run exits 0. A bundle
is untrusted input and ``auto`` picks OpenVINO on AVX-512 and AMX CPUs, so both engines must reach the same verdict on
a model file: the first time a file is opened with OpenVINO, a probe batch (two synthetic images, :func:`probe_pixels`)
runs through onnxruntime too. An error in either while running it, a non-finite score from one engine where the
other gives a number, or scores further apart than the precision's tolerance (:data:`TOLERANCE`) refuse the model
with one line (the same non-finite scores from both are the model's own: the Scorer gives such images error records,
whichever engine runs it). onnxruntime goes first, on the same bytes, with external data refused
(``runtime.backends.onnxruntime.open_session``): a file onnxruntime cannot load is that error, and never reaches
OpenVINO, which would read a model's external data files from the current folder.

The verdict is kept by the SHA-256 of the exact bytes loaded (with the precision, both engines' versions and the
probe's version): in the process, and in the private per-user cache (``runtime.backends.cache``), so the probe runs
once per model file. A verdict that could not be reached (onnxruntime missing) is not kept.
"""
from __future__ import annotations

import hashlib
import threading

from icrt.runtime.base.errors import BundleError, one_line
from icrt.runtime.base.text import printable

# Largest |OpenVINO score - onnxruntime score| on the probe batch, as a fraction of the model's score range, per
# precision. Both engines run the same file, so they differ by arithmetic only. Measured on the default model
# (100 Savoias photos, AMX CPU): fp32 5e-6, fp16 5e-6 (OpenVINO computes it in f32, as the backend sets; onnxruntime's
# CPU kernels cast most of it to f32 too), int8 7.3e-3 (each engine's own integer kernels: onnxruntime's uint8 / int8
# with 16-bit pair sums on AVX2, OpenVINO's low-precision transformations); on the probe batch 8e-7, 3e-7 and 1.3e-3.
# fp32: 1e-3, ten times the export contract's fp32 tolerance against PyTorch per input (1e-4) and 200 times what was
# measured. fp16 and int8 are allowed what their parity targets (SRCC 0.999 and 0.99 against fp32, the precision
# table) let a single score move: a few hundredths for fp16 (another CPU may really compute in f16), up to ~0.07 for
# int8 on Savoias photos (docs/runtime.md), so 0.03 and 0.1. A broken graph (an out-of-bounds read, undefined
# behaviour) gives scores anywhere in the range, or an error.
# what the probe forgives: each precision's own arithmetic error on synthetic images, not its accuracy target (export's
# parity measures that on real images). bf16 keeps 8 bits of mantissa against fp16's 11: the default model's scores
# moved by up to 0.04 on Savoias photos, by 0.02 on the probe batch
TOLERANCE = {"fp32": 1e-3, "fp16": 0.03, "int8": 0.1, "bf16": 0.1}
DEFAULT_TOLERANCE = 0.1  # a precision registered later: the loosest
PROBE_VERSION = 1  # part of the verdict's key: a new probe makes new verdicts
KIND = "verdicts"

_KNOWN: dict[str, dict] = {}  # verdict key -> verdict, this process
_LOCK = threading.Lock()


def tolerance(precision: str) -> float:
    return TOLERANCE.get(precision, DEFAULT_TOLERANCE)


def probe_pixels(size: int):
    """Two size x size x 3 uint8 images: mid grey, and smooth seeded noise (natural-image statistics roughly: a
    coarse random grid enlarged, plus fine grain), the same every time."""
    import numpy as np

    rng = np.random.default_rng(20261207)
    grey = np.full((size, size, 3), 128, np.uint8)
    coarse = rng.uniform(30, 225, (8, 8, 3))
    idx = np.arange(size) * 8 // size
    smooth = coarse[idx][:, idx] + rng.normal(0, 12, (size, size, 3))
    return np.stack([grey, np.clip(smooth, 0, 255).astype(np.uint8)])


def as_floats(pixels, norm):
    """uint8 N x S x S x 3 -> float32 N x 3 x S x S as the Scorer makes them (mean / std of ``norm``; None: /255)."""
    import numpy as np

    x = pixels.astype(np.float32) / np.float32(255.0)
    if norm is not None:
        x = (x - np.asarray(norm[0], np.float32)) / np.asarray(norm[1], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def key(digest: str, precision: str, openvino_version: str, probe: tuple = ()) -> str:
    """The verdict's key: the file's SHA-256 first, then what else decides the verdict (``probe``: the input side,
    normalisation and score range the probe runs with)."""
    from icrt.runtime.base.packages import version

    ort = version("onnxruntime") or version("onnxruntime-gpu")
    text = f"{digest}|{precision}|openvino {openvino_version}|onnxruntime {ort}|{probe!r}"
    return hashlib.sha256(f"{text}|probe {PROBE_VERSION}|tolerance {tolerance(precision)}".encode()).hexdigest()


def known(verdict_key: str) -> dict | None:
    """The verdict already reached for this key (in this process, or kept in the private cache), else None."""
    from icrt.runtime.backends.cache import read_record

    with _LOCK:
        v = _KNOWN.get(verdict_key)
    if v is None:
        v = read_record(KIND, verdict_key)
        if not (isinstance(v, dict) and v.get("verdict") in ("good", "refused") and isinstance(v.get("reason", ""), str)):
            return None
        with _LOCK:
            _KNOWN[verdict_key] = v
    return v


def keep(verdict_key: str, verdict: dict) -> None:
    from icrt.runtime.backends.cache import write_record

    with _LOCK:
        _KNOWN[verdict_key] = verdict
    write_record(KIND, verdict_key, verdict)


def refuse(path: str, verdict: dict) -> None:
    """BundleError (one line) for a refused verdict; nothing for a good one."""
    if verdict["verdict"] != "good":
        raise BundleError(f"{path}: refused: {printable(one_line(verdict['reason']))}")


def onnxruntime_side(path: str, data: bytes, precision: str, input_name: str, score_output: str, size: int | None,
                     norm, threads: int | None):
    """(the probe's pixels, onnxruntime's scores of them), or a refused verdict (dict) when onnxruntime fails to run
    the model; onnxruntime's own error when it cannot load the file or is missing (no verdict is kept)."""
    import numpy as np

    from icrt.runtime.backends.base import BackendError, ModelRunError
    from icrt.runtime.backends.onnxruntime import OrtBackend, import_onnxruntime

    import_onnxruntime()  # BackendError: no verdict can be reached
    try:
        ort = OrtBackend(path, input_name, score_output, precision, ["CPUExecutionProvider"], threads, size=size,
                         data=data)
    except (BackendError, BundleError) as e:  # no verdict on a file that is no model: the error as it is
        raise type(e)(f"{e}; OpenVINO runs only what onnxruntime runs too") from None
    side = size or ort.input_side() or 64
    pixels = probe_pixels(side)
    x = as_floats(pixels, norm)
    try:
        scores = np.concatenate([ort.run(x[i:i + 1]) for i in range(len(x))])
    except (ModelRunError, BundleError) as e:
        return {"verdict": "refused", "reason": f"onnxruntime fails to run it on a probe batch, so OpenVINO may not "
                                                f"run it ({_without(path, e)})"}
    return pixels, scores


def compare(precision: str, ov_scores, ort_scores, scale: float) -> dict:
    """The verdict of two engines' scores of the probe batch. A non-finite score from one engine where the other gives
    a number refuses the model; the same non-finite scores from both are the model's own (the Scorer gives such images
    error records, whichever engine runs it)."""
    import numpy as np

    ov_scores, ort_scores = ov_scores.astype(np.float64), ort_scores.astype(np.float64)
    ov_bad, ort_bad = ~np.isfinite(ov_scores), ~np.isfinite(ort_scores)
    if np.any(ov_bad != ort_bad) or not np.array_equal(ov_scores[ov_bad], ort_scores[ort_bad], equal_nan=True):
        return {"verdict": "refused", "reason": f"a non-finite score on a probe batch where the other engine gives "
                                                f"another (OpenVINO {ov_scores.tolist()}, onnxruntime "
                                                f"{ort_scores.tolist()})"}
    finite = ~ov_bad
    diff = float(np.max(np.abs(ov_scores[finite] - ort_scores[finite]), initial=0.0))
    limit = tolerance(precision) * scale
    if diff > limit:
        return {"verdict": "refused", "reason": f"OpenVINO and onnxruntime disagree on a probe batch by {diff:.3g} (at "
                                                f"most {limit:.3g} for {precision}): one of them does not run this "
                                                "graph as written", "max_abs_diff": diff}
    return {"verdict": "good", "reason": "", "max_abs_diff": diff}


def _without(path: str, e: Exception) -> str:
    """An error's message without the leading ``PATH: `` (the refusal names the file once)."""
    text = str(e)
    return text[len(path) + 2:] if text.startswith(path + ": ") else text
