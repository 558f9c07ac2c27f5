"""``icrt score --url``: score image files through a server — ``icrt serve``, or Triton running a repository from
``icrt triton`` — with the same records as local scoring (docs/serving.md).

:class:`RemoteScorer` has the part of :class:`~runtime.scoring.scorer.Scorer`'s interface the CLI uses (``iter_score``,
``score_many``, ``info``): files are read here (a file that cannot be read gets the same error record as locally),
sent as encoded bytes in requests of up to the server's ``max_batch_size`` images and its pixel budget per request
(several requests in flight, Triton batches them further), and the outputs (runtime.bundle.records) become records
named after the local files, in input order. A request the server fails gives each of its images an error record; the
rest go on. The server is not trusted: its records are checked as local scoring checks a model's (a finite score in the
model's range, sizes of at least 1; otherwise an error record naming the server), and its error texts are made
printable.

Needs ``tritonclient[http,grpc]`` (the ``[serve]`` extra), imported only when a URL is used.
"""
from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from icrt.runtime.base.errors import IcrtError, UnavailableError, UserInputError, one_line
from icrt.runtime.base.text import printable
from icrt.runtime.bundle.manifest import DEFAULT_SCORE
from icrt.runtime.bundle.records import (
    ERROR,
    IMAGE,
    IMAGE_INPUT,
    INT_FIELDS,
    OUTPUTS,
    SCORE,
    error_record,
    records_from_outputs,
)
from icrt.runtime.scoring.preprocess import ImageError
from icrt.runtime.scoring.scorer import SCORE_TOLERANCE
from icrt.runtime.serving.limits import (
    DEFAULT_MODEL_NAME,
    MAX_IMAGE_BYTES,
    MAX_PIXELS_PARAMETER,
    MAX_REQUEST_PIXELS,
    MAX_REQUEST_PIXELS_PARAMETER,
    SCORE_RANGE_PARAMETER,
    header_size,
)

DEFAULT_BATCH = 8  # images per request (the server's max_batch_size caps it)
INFLIGHT = 4  # requests in flight at once
MAX_FILE_BYTES = MAX_IMAGE_BYTES  # what icrt serve takes (and Triton's limit on one HTTP request's input)
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # files per request are packed up to this size
TIMEOUT_S = 120.0  # one request, sent to answered
MAX_ERROR_CHARS = 1000  # of an error text a server sends (one line of a record)
SCHEMES = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "grpcs": ("grpc", True)}


def read_image_file(path: str) -> bytes:
    """The bytes of an image file to send; ImageError with the problem ``icrt score`` reports locally."""
    from icrt.runtime.scoring.preprocess import open_image_file

    try:
        with open_image_file(path) as f:  # opened once and checked through the descriptor: never a FIFO
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise ImageError(path, f"file too large to send ({size / 2**20:.0f} MB; a request takes at most "
                                       f"{MAX_FILE_BYTES // 2**20} MB)")
            return f.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as e:
        raise ImageError(path, e.strerror or str(e)) from None


def parse_url(url: str) -> tuple[str, str, bool]:
    """``http://HOST:PORT`` (also https, grpc, grpcs; no scheme: http) -> (protocol, "host:port", ssl)."""
    text = url if "://" in url else "http://" + url
    try:
        parts = urlsplit(text)
    except ValueError as e:  # e.g. "Invalid IPv6 URL" for http://[::1
        raise UserInputError(f"--url {printable(url)}: not a URL ({e}); expected SCHEME://HOST:PORT") from None
    if parts.scheme not in SCHEMES:
        raise UserInputError(f"--url {printable(url)}: unknown scheme {printable(repr(parts.scheme))} (http, https, "
                             "grpc, grpcs)")
    try:
        hostname = parts.hostname
        port = parts.port
    except ValueError:
        raise UserInputError(f"--url {printable(url)}: bad host or port") from None
    if not hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserInputError(f"--url {printable(url)}: expected SCHEME://HOST:PORT (e.g. http://127.0.0.1:8000)")
    protocol, ssl = SCHEMES[parts.scheme]
    host = f"[{hostname}]" if ":" in hostname else hostname
    return protocol, f"{host}:{port or (8001 if protocol == 'grpc' else 8000)}", ssl


def _tritonclient(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as e:
        from icrt.runtime.base.install import extra_hint

        raise UnavailableError(f"icrt score --url needs tritonclient, which is not installed here ({e}); "
                               f"{extra_hint('serve')}") from None
    return module


class RemoteScorer:
    """Scores through the Triton model ``model`` at ``url``; see the module notes."""

    def __init__(self, url: str, model: str = DEFAULT_MODEL_NAME, batch_size: int | None = None,
                 inflight: int = INFLIGHT, timeout: float = TIMEOUT_S):
        self.url, self.model, self.timeout = url, model, float(timeout)
        self.protocol, self.address, self.ssl = parse_url(url)
        self.module = _tritonclient(self.protocol)
        self.inflight = max(1, int(inflight))
        self.score_range = tuple(DEFAULT_SCORE["range"])  # until the server states its model's (_check)
        self.request_pixels = MAX_REQUEST_PIXELS
        self._local = threading.local()
        self._clients, self._lock = [], threading.Lock()
        try:
            self.max_batch = self._check()
        finally:
            self.close()
        self.batch_size = max(1, min(int(batch_size or DEFAULT_BATCH), self.max_batch or DEFAULT_BATCH))

    def what_ran(self) -> str:
        """What scores: the server (its model and precision are its own)."""
        return f"the server at {printable(self.url)} (model {printable(self.model)!r})"

    @classmethod
    def connect(cls, url: str, **kwargs) -> "RemoteScorer":
        return cls(url, **kwargs)

    # --- the connection ----------------------------------------------------------------------------------
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self.module.InferenceServerClient(self.address, ssl=self.ssl)
            else:
                client = self.module.InferenceServerClient(self.address, ssl=self.ssl, connection_timeout=min(self.timeout, 30.0),
                                                           network_timeout=self.timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            with contextlib.suppress(Exception):
                c.close()
        self._local = threading.local()

    def _check(self) -> int:
        """The model is ready and speaks icrt's tensors; its max_batch_size (0: no batching). Whatever the server
        answers (a truncated or malformed reply included) is one UnavailableError line, never a traceback."""
        try:
            return self._check_server()
        except IcrtError:
            raise
        except Exception as e:  # tritonclient / geventhttpclient / grpc raise their own types for bad replies
            text = one_line(e)[:300]
            raise UnavailableError(f"{printable(self.url)}: cannot read the server's reply ({type(e).__name__}: "
                                   f"{printable(text)}); is this an icrt serve or Triton server?") from None

    def _check_server(self) -> int:
        client = self._client()
        try:
            client.is_server_live()
        except Exception as e:
            raise UnavailableError(f"cannot reach a server at {self.url} ({type(e).__name__}: {e})") from None
        try:
            ready = client.is_model_ready(self.model)
        except Exception as e:
            raise UnavailableError(f"{self.url}: cannot ask for the model {self.model!r} ({e})") from None
        if not ready:
            raise UnavailableError(f"{self.url}: the model {self.model!r} is not ready on this server (icrt serve and "
                                   "a repository written by icrt triton serve 'icrt')")
        if self.protocol == "grpc":
            config = client.get_model_config(self.model, as_json=True)
            config = config.get("config", {}) if isinstance(config, dict) else None
        else:
            config = client.get_model_config(self.model)

        def tensors(key):
            value = config.get(key) if isinstance(config, dict) else None
            return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []
        inputs = {t.get("name"): t for t in tensors("input")}
        outputs = {t.get("name") for t in tensors("output")}
        missing = [n for n in OUTPUTS if n not in outputs]
        if IMAGE_INPUT not in inputs or inputs[IMAGE_INPUT].get("data_type") != "TYPE_STRING" or missing:
            raise UnavailableError(f"{self.url}: the model {self.model!r} does not take encoded images as icrt's "
                                   f"servers do (input {IMAGE_INPUT!r} BYTES; outputs {', '.join(OUTPUTS)})")
        try:
            max_batch = int(config.get("max_batch_size") or 0)
        except (TypeError, ValueError):
            max_batch = -1
        if not 0 <= max_batch <= 1 << 20:
            raise UnavailableError(f"{self.url}: the model's max_batch_size is not a batch size "
                                   f"({printable(repr(config.get('max_batch_size'))[:80])})")
        self._read_parameters(config.get("parameters"))
        return max_batch

    def _read_parameters(self, parameters) -> None:
        """The model's score range and pixel budget per request, from its config's ``parameters`` (``icrt serve`` and
        ``icrt triton`` repositories state them; a server that does not gets icrt's defaults: the range [0, 1])."""
        def text(key):
            entry = parameters.get(key) if isinstance(parameters, dict) else None
            value = entry.get("string_value") if isinstance(entry, dict) else None
            return value if isinstance(value, str) and value else None

        def bad(key, value):
            return UnavailableError(f"{self.url}: the model's parameter {key} is not what icrt's servers state "
                                    f"({printable(repr(value)[:80])})")
        value = text(SCORE_RANGE_PARAMETER)
        if value is not None:
            try:
                lo, hi = (float(v) for v in json.loads(value))
            except (ValueError, TypeError):
                raise bad(SCORE_RANGE_PARAMETER, value) from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise bad(SCORE_RANGE_PARAMETER, value)
            self.score_range = (lo, hi)
        request_pixels = None
        for key in (MAX_REQUEST_PIXELS_PARAMETER, MAX_PIXELS_PARAMETER):
            value = text(key)
            if value is not None and not (value.isascii() and value.isdigit() and int(value) >= 1):
                raise bad(key, value)
            if value is not None and key == MAX_REQUEST_PIXELS_PARAMETER:
                request_pixels = int(value)
        if request_pixels is not None:  # set once both are checked, as before
            self.request_pixels = request_pixels

    def info(self) -> dict:
        return {"bundle": None, "url": self.url, "model": self.model, "protocol": self.protocol,
                "batch_size": self.batch_size, "backend": "remote", "precision": None, "device": self.url}

    # --- scoring -----------------------------------------------------------------------------------------
    def _send(self, data: list[bytes]) -> dict:
        import numpy as np

        m = self.module
        rows = np.empty((len(data), 1), dtype=object)
        rows[:, 0] = data
        image = m.InferInput(IMAGE_INPUT, list(rows.shape), "BYTES")
        if self.protocol == "grpc":
            image.set_data_from_numpy(rows)
            outputs = [m.InferRequestedOutput(k) for k in OUTPUTS]
            result = self._client().infer(self.model, [image], outputs=outputs, client_timeout=self.timeout)
        else:
            image.set_data_from_numpy(rows, binary_data=True)
            outputs = [m.InferRequestedOutput(k, binary_data=True) for k in OUTPUTS]
            result = self._client().infer(self.model, [image], outputs=outputs)
        got = {k: result.as_numpy(k) for k in OUTPUTS}
        missing = [k for k, v in got.items() if v is None]
        if missing:
            raise RuntimeError(f"the server's response has no {', '.join(missing)}")
        wrong = [f"{v.size} {k}" for k, v in got.items() if v.size != len(data)]
        if wrong:
            raise RuntimeError(f"the server answered {', '.join(wrong)} for {len(data)} image(s)")
        return got

    def _requests(self, images):
        """Lists of (name, bytes or None, problem or None), each list one request's worth: at most ``batch_size``
        images, MAX_REQUEST_BYTES and the server's pixel budget per request (read from the headers; an image over it
        goes alone, and the server says why it is not scored)."""
        chunk, size, pixels = [], 0, 0
        for i, image in enumerate(images):
            if isinstance(image, (bytes, bytearray)):
                name, data, problem = f"<image {i}>", bytes(image), None
                if not data:
                    data, problem = None, "empty file (0 bytes)"
            else:
                name = os.fspath(image)
                try:
                    data, problem = read_image_file(name), None
                except ImageError as e:
                    data, problem = None, e.problem
            n = _pixels(data) if data is not None else 0
            if data is not None and chunk and (sum(d is not None for _, d, _ in chunk) >= self.batch_size
                                               or size + len(data) > MAX_REQUEST_BYTES
                                               or pixels + n > self.request_pixels):
                yield chunk
                chunk, size, pixels = [], 0, 0
            chunk.append((name, data, problem))
            size += len(data) if data is not None else 0
            pixels += n
        if chunk:
            yield chunk

    def _records(self, chunk, future) -> list[dict]:
        sent = [(name, data) for name, data, _ in chunk if data is not None]
        by_name = {}
        if sent:
            try:
                outputs = future.result()
                recs = [self._checked(r) for r in records_from_outputs([n for n, _ in sent], outputs)]
            except Exception as e:  # the server failed this request: each of its images gets the error
                problem = _server_text(f"server error ({type(e).__name__}: {one_line(e)})")
                recs = [error_record(n, problem) for n, _ in sent]
            by_name = iter(recs)
        out = []
        for name, data, problem in chunk:
            out.append(next(by_name) if data is not None else error_record(name, problem))
        return out

    def _checked(self, record: dict) -> dict:
        """A server's record checked as local scoring checks a model's scores (``Scorer.check_scores``): a finite
        score in the model's range (one within the tolerance is clipped into it), sizes of at least 1; otherwise an
        error record naming the server. Its error text is made printable and cut to MAX_ERROR_CHARS."""
        if ERROR in record:
            return error_record(record[IMAGE], _server_text(record[ERROR]))
        score, (lo, hi) = record[SCORE], self.score_range
        problem = None
        if not math.isfinite(score):
            problem = f"a score that is not a finite number ({score})"
        elif not lo - SCORE_TOLERANCE <= score <= hi + SCORE_TOLERANCE:
            problem = f"the score {score:.4g}, outside the model's range [{lo:g}, {hi:g}]"
        else:
            small = [f"{k} {record[k]}" for k in INT_FIELDS if record[k] < 1]
            if small:
                problem = f"{', '.join(small)} (at least 1 expected)"
        if problem:
            return error_record(record[IMAGE], f"the server at {printable(self.url)} answered {problem}")
        record[SCORE] = min(max(score, lo), hi)
        return record

    def iter_score(self, images, details: bool = False, maps=False):
        """One record per image (paths or encoded bytes), in input order, as :meth:`Scorer.iter_score`."""
        if details or maps:
            raise UserInputError("heatmaps and patch details need the model here: not with --url")
        pending = collections.deque()
        try:
            with ThreadPoolExecutor(self.inflight, thread_name_prefix="icrt-client") as pool:
                for chunk in self._requests(images):
                    data = [d for _, d, _ in chunk if d is not None]
                    pending.append((chunk, pool.submit(self._send, data) if data else None))
                    while len(pending) > self.inflight:
                        yield from self._records(*pending.popleft())
                while pending:
                    yield from self._records(*pending.popleft())
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()
            self.close()

    def score_many(self, images) -> list[dict]:
        return list(self.iter_score(images))


def _pixels(data: bytes) -> int:
    """Decoded pixels of an encoded image from its header (0 when Pillow cannot read one: the server says why)."""
    size = header_size(data)
    return size[0] * size[1] if size else 0


def _server_text(text: str) -> str:
    """An error text from the server for a record: printable, on one line, at most MAX_ERROR_CHARS."""
    text = printable(one_line(text))
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def open_remote(url: str, options) -> RemoteScorer:
    """The RemoteScorer ``icrt score --url`` uses: ``options`` (a ScorerOptions) may set ``batch_size`` (images per
    request) and nothing else: the server has the model and chooses how it runs, so any other option given is
    refused, naming its flag."""
    import dataclasses

    flags = {f.name: f.metadata["flags"][0] for f in dataclasses.fields(options) if f.metadata.get("flags")}
    clash = [flags.get(name, name) for name in options.changed() if name not in ("batch_size", "workers")]
    if clash:
        raise UserInputError(f"{', '.join(clash)} with --url: the server has the model and chooses how it runs")
    return RemoteScorer.connect(url, batch_size=options.batch_size)

