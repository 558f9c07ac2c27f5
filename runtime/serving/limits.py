"""What icrt's servers take, for ``icrt serve`` and ``icrt triton``'s front model alike: model names, batch sizes,
instances (:func:`check`, one ``UserInputError`` line each), and what one request may cost (:class:`RequestLimits`:
bytes, decoded pixels, seconds), applied by :func:`score_requests` before anything is decoded.

Bytes alone do not bound the work: a 1-bit PNG of 9400 x 9400 is 10.8 kB and decodes to 88 Mpx (2-3 s of CPU), so
32 of them in one 346 kB request kept a server busy for 31 s and every other client waiting. A row's pixels are read
from its header (Pillow's ``Image.open`` reads only the header), and a request's rows are scored only within a pixel
budget per image and per request and a time budget per request.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time

from icrt.runtime.base.errors import UserInputError

# Triton's onnxruntime backend: the TensorRT accelerator's precision_mode values, and the precisions that are only an
# arithmetic over another precision's file (bf16: model.onnx), which that backend would run as the file's own
ACCELERATOR_MODES = ("fp32", "fp16", "int8")
ARITHMETIC_ONLY = ("bf16",)
DEFAULT_MODEL_NAME = "icrt"
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # a Triton model name (a folder of the repository)
MAX_MAX_BATCH = 1024  # images per batch Triton hands to a model
MAX_INSTANCES = 64  # instances of a model (each its own session and memory)
# Sizes icrt's servers take (``icrt serve``) and its client sends (``icrt score --url``). Triton's HTTP endpoint has
# its own 64 MB limit on a request, fixed in the tritonserver that PyTriton ships (no option lowers it); its gRPC
# endpoint takes up to 2 GB. ``icrt serve`` refuses, before any decoding, an image larger than MAX_IMAGE_BYTES and
# every image of a request larger than MAX_REQUEST_BYTES, with an error row each.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Decoded pixels. The model sees 384 x 384 (0.15 Mpx), so pixels beyond a photo's are only work: 50 Mpx takes the
# photos of common cameras and phones (45.7 Mpx full frame, 8160 x 6120 in a phone's 50 MP mode) and decodes in
# about 1.2 s on this project's 2 shared cores (a 1-bit PNG, the cheapest to send; Pillow itself stops at 89 Mpx).
# A request decodes at most four such images: about 5 s of one instance's time, whatever its size in bytes.
MAX_IMAGE_PIXELS = 50_000_000
MAX_REQUEST_PIXELS = 200_000_000
# A request's rows not started within this many seconds of its first are not scored (an error row each): a backstop
# for work the pixels do not foresee (a slow format, a patch model's many inputs), far above a normal request's time.
MAX_REQUEST_SECONDS = 30.0
# The config.pbtxt parameters in which a served model states its score range and pixel limits (``icrt serve`` and
# repositories written by ``icrt triton``); ``icrt score --url`` checks scores and packs requests by them.
SCORE_RANGE_PARAMETER = "icrt_score_range"
MAX_PIXELS_PARAMETER = "icrt_max_pixels"
MAX_REQUEST_PIXELS_PARAMETER = "icrt_max_request_pixels"
MAX_REQUEST_SECONDS_PARAMETER = "icrt_max_request_seconds"


def check(name: str, max_batch: int, instances: int, max_queue_delay_us: int) -> None:
    """UserInputError naming the option for a model name, batch size, instance count or queue delay icrt's
    servers do not take."""
    if not isinstance(name, str) or not MODEL_NAME.match(name) or name in (".", ".."):
        from icrt.runtime.base.text import printable
        raise UserInputError(f"--name {printable(repr(name))}: a Triton model name is letters, digits, '_', '-' "
                             "and '.'")
    if not 1 <= int(max_batch) <= MAX_MAX_BATCH:
        raise UserInputError(f"--max-batch must be in [1, {MAX_MAX_BATCH}], got {max_batch}")
    if not 1 <= int(instances) <= MAX_INSTANCES:
        raise UserInputError(f"--instances must be in [1, {MAX_INSTANCES}], got {instances}")
    if int(max_queue_delay_us) < 0:
        raise UserInputError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")


def _default(name: str):
    return dataclasses.field(default_factory=lambda: globals()[name])  # read when made (tests lower the caps)


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may cost a server: bytes (per image, per request), decoded pixels (per image, per request;
    read from each image's header) and seconds. ``icrt serve --max-pixels / --max-request-pixels /
    --max-request-seconds`` set the last three."""

    image_bytes: int = _default("MAX_IMAGE_BYTES")
    request_bytes: int = _default("MAX_REQUEST_BYTES")
    image_pixels: int = _default("MAX_IMAGE_PIXELS")
    request_pixels: int = _default("MAX_REQUEST_PIXELS")
    request_seconds: float = _default("MAX_REQUEST_SECONDS")

    def check(self) -> "RequestLimits":
        """Self, or UserInputError naming the flag of a value a server cannot use."""
        from PIL import Image

        pillow = Image.MAX_IMAGE_PIXELS or math.inf  # what the decoder refuses anyway (None: no limit)
        if not 1 <= self.image_pixels <= pillow:
            raise UserInputError(f"--max-pixels must be in [1, {pillow:,}] (Pillow's limit), got {self.image_pixels}")
        if self.request_pixels < self.image_pixels:
            raise UserInputError(f"--max-request-pixels must be at least --max-pixels ({self.image_pixels}), got "
                                 f"{self.request_pixels}")
        if not 0 < self.request_seconds < math.inf:
            raise UserInputError(f"--max-request-seconds must be a number of seconds above 0, got "
                                 f"{self.request_seconds}")
        return self

    def parameters(self) -> dict[str, str]:
        """The model config parameters that state these limits to clients."""
        return {MAX_PIXELS_PARAMETER: str(self.image_pixels), MAX_REQUEST_PIXELS_PARAMETER: str(self.request_pixels),
                MAX_REQUEST_SECONDS_PARAMETER: f"{self.request_seconds:g}"}

    @classmethod
    def from_parameters(cls, parameters: dict) -> "RequestLimits":
        """The limits a model config's ``parameters`` (name -> text) state; the defaults for those it does not."""
        values = {}
        for field, key, kind in (("image_pixels", MAX_PIXELS_PARAMETER, int),
                                 ("request_pixels", MAX_REQUEST_PIXELS_PARAMETER, int),
                                 ("request_seconds", MAX_REQUEST_SECONDS_PARAMETER, float)):
            if parameters.get(key):
                values[field] = kind(parameters[key])
        return cls(**values)


# --- a request's rows, checked before decoding ------------------------------------------------------------------

MB, MPX = 2 ** 20, 1e6


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header without decoding its pixels (Pillow's ``open`` reads the
    header only); None when Pillow does not open it: not an image it knows, a broken header, or more than twice
    Pillow's pixel limit (the Scorer then refuses it with the error record ``icrt score`` gives, still without
    decoding). Pillow's warning for up to twice its limit is silenced here: the caps below refuse those."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Exception:  # Pillow's errors for what it cannot open are of many types; the Scorer names the problem
        return None


def screen(rows: list[bytes], limits: RequestLimits) -> list[tuple[str | None, int]]:
    """(problem or None, decoded pixels) per row of one request, from sizes and headers only: rows over the byte
    caps (every row of a request over its byte cap), rows over the pixel cap, and rows that would take the
    request's pixels over its budget (counted in row order; the rows that fit are scored) get a problem."""
    total = sum(len(r) for r in rows)
    if total > limits.request_bytes:
        problem = (f"request too large ({total / MB:.0f} MB; this server takes at most {limits.request_bytes // MB} "
                   "MB a request)")
        return [(problem, 0)] * len(rows)
    out, pixels = [], 0
    for r in rows:
        if len(r) > limits.image_bytes:
            out.append((f"file too large ({len(r) / MB:.0f} MB; this server takes at most "
                        f"{limits.image_bytes // MB} MB an image)", 0))
            continue
        size = header_size(r)
        n = size[0] * size[1] if size else 0
        if n > limits.image_pixels:
            out.append((f"too many pixels ({size[0]} x {size[1]} = {n / MPX:.1f} Mpx; this server decodes at most "
                        f"{limits.image_pixels / MPX:g} Mpx an image)", 0))
        elif pixels + n > limits.request_pixels:
            out.append((f"request has too many pixels ({(pixels + n) / MPX:.0f} Mpx with this image; this server "
                        f"decodes at most {limits.request_pixels / MPX:g} Mpx a request)", 0))
        else:
            pixels += n
            out.append((None, n))
    return out


def score_requests(scorer, requests: list[list[bytes]], limits: RequestLimits, clock=time.monotonic) -> list[list[dict]]:
    """One record per row of each request (lists of encoded images), in order. Rows :func:`screen` refuses get an
    error record without being decoded; the others go through ``scorer.iter_score`` together (one batch for the
    model), the requests cheapest first (their pixels), so that a small request batched with a heavy one is not
    behind it. A request's rows not yet started ``limits.request_seconds`` after its first get an error record
    (``request took longer than N s``) instead of holding everyone else."""
    from icrt.runtime.bundle.records import error_record

    screened = [screen(rows, limits) for rows in requests]
    records = [[None] * len(rows) for rows in requests]
    late = (f"request took longer than {limits.request_seconds:g} s (this server works at most "
            f"{limits.request_seconds:g} s on a request); not scored")
    order = sorted(range(len(requests)), key=lambda i: sum(n for _, n in screened[i]))
    fed = []  # (request, row) of each image handed to the scorer, in order

    def images():
        for i in order:
            start = None
            for j, (problem, _) in enumerate(screened[i]):
                if problem:
                    records[i][j] = error_record("", problem)
                    continue
                now = clock()
                start = now if start is None else start
                if now - start > limits.request_seconds:
                    records[i][j] = error_record("", late)
                    continue
                fed.append((i, j))
                yield requests[i][j]

    for k, record in enumerate(scorer.iter_score(images())):
        i, j = fed[k]
        records[i][j] = record
    return records


def score_range_parameter(score_range) -> dict[str, str]:
    """The model config parameter stating a model's score range (``[lo, hi]``, JSON)."""
    return {SCORE_RANGE_PARAMETER: json.dumps([float(v) for v in score_range])}
