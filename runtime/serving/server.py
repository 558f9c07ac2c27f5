"""A bundle served over HTTP and gRPC (KServe v2) by a real NVIDIA Triton Inference Server, through NVIDIA PyTriton
(the ``[serve]`` extra; docs/serving.md): :func:`serve`, behind ``icrt serve``.

PyTriton starts the ``tritonserver`` binary its wheel ships and binds a Python function as model ``icrt``: Triton
takes the requests, batches them dynamically (``--max-batch``, ``--max-queue-delay-us``) and hands each batch to
:func:`infer_function`, which scores the encoded image files with the runtime's :class:`~runtime.scoring.scorer.Scorer`
(the same decoding, preprocessing and model as ``icrt score``). Input ``image`` (BYTES, one encoded file per row);
outputs ``score`` (FP32), ``error`` (BYTES), ``patches``, ``width``, ``height`` (INT32) — runtime/bundle/records.py.
Health (``/v2/health/ready``), model readiness and Prometheus metrics (``:METRICS_PORT/metrics``) are Triton's.

Triton's Python-backend stub (which relays requests to this process) links ``libpython3.X.so.1.0`` and would load
the system's copy; when this interpreter is another build of the same version (pyenv, conda, a venv over them), the
stub then runs this interpreter's standard library on the wrong libpython and fails. :func:`libpython_env` puts
this interpreter's own libpython first on the server's ``LD_LIBRARY_PATH`` (through a folder holding only that
library, so nothing else of the interpreter's library folder can shadow the server's own libraries).

Nothing heavy is imported at module level: pytriton, tritonclient, numpy and onnxruntime load when the command runs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import sysconfig
import tempfile
import time

from icrt.runtime.base.errors import EXIT_FAILURES, EXIT_OK, UnavailableError, UserInputError
from icrt.runtime.serving.limits import DEFAULT_MODEL_NAME, RequestLimits, check, score_range_parameter, score_requests

log = logging.getLogger("icrt")

EXIT_TIMEOUT_S = 5  # how long Triton waits for requests in flight when it is stopped
READY_TIMEOUT_S = 60  # after the server is up, how long the model may take to load


# --- the interpreter's libpython for Triton's Python-backend stub -------------------------------------------------


def libpython_path() -> str | None:
    """This interpreter's shared libpython (``libpython3.X.so.1.0``), or None when it has none (a static build)."""
    names = [sysconfig.get_config_var(k) for k in ("INSTSONAME", "LDLIBRARY")]
    names = [n for n in names if n and ".so" in n]
    folders = [sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LIBPL")]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if folders[0] and multiarch:
        folders.append(os.path.join(folders[0], multiarch))
    for folder in filter(None, folders):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


@contextlib.contextmanager
def libpython_env(environ=None):
    """While in the block, ``environ`` (default ``os.environ``, which child processes inherit) has a folder holding
    only this interpreter's libpython first on ``LD_LIBRARY_PATH``; yields that library's path (None when this
    Python has no shared libpython: then the stub uses whatever libpython the system has, and a warning says so)."""
    environ = os.environ if environ is None else environ
    lib = libpython_path()
    if lib is None:
        log.warning("icrt: %s has no shared libpython; Triton's Python-backend stub will load the system's "
                    "libpython%s, which works only if it is the same Python build", sys.executable,
                    sysconfig.get_config_var("VERSION"))
        yield None
        return
    before = environ.get("LD_LIBRARY_PATH")
    with tempfile.TemporaryDirectory(prefix="icrt-libpython-") as folder:
        soname = sysconfig.get_config_var("INSTSONAME") or os.path.basename(lib)
        os.symlink(os.path.realpath(lib), os.path.join(folder, soname))
        environ["LD_LIBRARY_PATH"] = folder + (os.pathsep + before if before else "")
        try:
            yield lib
        finally:
            if before is None:
                environ.pop("LD_LIBRARY_PATH", None)
            else:
                environ["LD_LIBRARY_PATH"] = before


# --- the model -------------------------------------------------------------------------------------------------


def infer_function(scorer, limits: RequestLimits | None = None):
    """PyTriton's inference callable for one model instance: a batch of requests (each ``image``: [n, 1] BYTES)
    -> one dict of output arrays per request. Each request is held to ``limits`` (default: ``RequestLimits()``) by
    ``runtime.serving.limits.score_requests``: rows over its byte or pixel caps get an error row without being
    decoded, and rows not started within its time budget get one too."""
    from icrt.runtime.bundle.records import IMAGE_INPUT, outputs_for

    limits = limits or RequestLimits()

    def infer(requests):
        rows = [[r if isinstance(r, bytes) else bytes(r) for r in request[IMAGE_INPUT].reshape(-1)]
                for request in requests]
        return [outputs_for(records) for records in score_requests(scorer, rows, limits)]

    return infer


def _import_pytriton():
    import importlib

    from icrt.runtime.base.install import extra_hint

    try:
        for name in ("pytriton.triton", "pytriton.model_config"):
            importlib.import_module(name)
    except ImportError as e:
        raise UnavailableError(f"icrt serve needs NVIDIA PyTriton, which is not installed here ({e}); "
                               f"{extra_hint('serve')}") from None


def _port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None: it is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def check_ports(host: str, http_port: int, grpc_port: int, metrics_port: int) -> None:
    """UserInputError unless the three ports are distinct, valid port numbers."""
    ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise UserInputError(f"{flag} must be in [1, 65535], got {port}")
    if len(set(ports.values())) < 3:
        raise UserInputError(f"--http-port, --grpc-port and --metrics-port must differ, got {sorted(ports.values())}")


def _model_state(url: str, name: str, token: str | None) -> tuple[bool, str]:
    """(ready, reason) of model ``name`` on the HTTP endpoint ``url`` (host:port)."""
    import tritonclient.http as http

    with contextlib.closing(http.InferenceServerClient(url, connection_timeout=5, network_timeout=10)) as client:
        try:
            if client.is_model_ready(name):
                return True, ""
        except Exception as e:  # connection errors: not ready yet
            return False, str(e)
        reason = ""
        with contextlib.suppress(Exception):
            from pytriton.triton import TRITON_ACCESS_HEADER
            headers = {TRITON_ACCESS_HEADER: token} if token else None
            for entry in client.get_model_repository_index(headers=headers):
                if entry.get("name") == name:
                    reason = f"{entry.get('state', '')}: {entry.get('reason', '')}".strip(": ")
        return False, reason


def serve(options, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
          metrics_port: int = 8002, name: str = DEFAULT_MODEL_NAME, max_batch: int = 32,
          max_queue_delay_us: int = 2000, instances: int = 1, log_file: str | None = None,
          limits: RequestLimits | None = None) -> int:
    """Serve the model ``options`` describe (a ScorerOptions: bundle, backend, precision, threads per instance, ...)
    as the Triton model ``name`` until Ctrl+C or SIGTERM (exit code 0), or until the server stops by itself (1).
    Each request is held to ``limits`` (default ``RequestLimits()``: bytes, pixels, seconds). UserInputError /
    UnavailableError (one line) when it cannot start."""
    check_ports(host, http_port, grpc_port, metrics_port)
    check(name, max_batch, instances, max_queue_delay_us)
    limits = (limits or RequestLimits()).check()
    _import_pytriton()
    from icrt.runtime.base.packages import serve_problem

    problem = serve_problem()
    if problem:  # the server would start and report ready, then fail every request
        raise UnavailableError(f"icrt serve cannot work in this environment: {problem}")
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from icrt.runtime.base.hardware import physical_cores
    from icrt.runtime.bundle.records import IMAGE_INPUT, OUTPUT_TENSORS
    from icrt.runtime.scoring.scorer import Scorer

    for port in (http_port, grpc_port, metrics_port):
        problem = _port_problem(host, port)
        if problem:
            raise UserInputError(f"cannot listen on {host}:{port}: {problem}")
    options = options.replace(threads=options.threads or max(1, physical_cores() // instances))
    # Triton hands up to --max-batch images at a time; each Scorer runs them in model batches bounded by bytes
    # (runtime.scoring.scorer.batch_limits: one input at a time for the default model's 384 px inputs on a CPU)
    scorers = [Scorer.open(options) for _ in range(instances)]
    info = scorers[0].info()
    config = TritonConfig(http_address=host, http_port=http_port, grpc_address=host,
                          grpc_port=grpc_port, metrics_address=host, metrics_port=metrics_port,
                          exit_timeout_secs=EXIT_TIMEOUT_S, log_verbose=0,
                          log_file=os.path.abspath(log_file) if log_file else None)
    outputs = [Tensor(name=name, dtype=bytes if dtype == "object" else np.dtype(dtype), shape=(1,))
               for name, (_, dtype) in OUTPUT_TENSORS.items()]
    model_config = ModelConfig(max_batch_size=max_batch,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us))
    stop = {"signal": None}

    def on_sigterm(signum, frame):
        stop["signal"] = signum
        raise KeyboardInterrupt

    old_handler = None
    if threading_main():
        old_handler = signal.signal(signal.SIGTERM, on_sigterm)
    http = f"{_client_host(host)}:{http_port}"
    where_log = f"Triton's log in {log_file}" if log_file else "Triton's log above"
    triton = None
    try:
        with libpython_env():
            try:
                for attempt in range(1, START_ATTEMPTS + 1):
                    triton = Triton(config=config)
                    triton.bind(model_name=name, infer_func=[infer_function(s, limits) for s in scorers],
                                inputs=[Tensor(name=IMAGE_INPUT, dtype=bytes, shape=(1,))], outputs=outputs,
                                config=model_config, strict=True)
                    if not _state_in_config(triton, name, {**score_range_parameter(scorers[0].score_range),
                                                           **limits.parameters()}):
                        log.warning("icrt serve: this PyTriton cannot state the model's score range and limits in "
                                    "its config; icrt score --url then assumes the range [0, 1] and icrt's default "
                                    "limits")
                    try:
                        triton.run()
                        break
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # Triton refused to load the model, or did not start
                        triton.stop()
                        if attempt < START_ATTEMPTS and _handshake_race(e):
                            log.warning("icrt serve: PyTriton's instances missed each other at start-up (%s); "
                                        "starting Triton again (%d of %d)", _first_line(e)[-120:], attempt + 1,
                                        START_ATTEMPTS)
                            continue
                        raise UnavailableError(f"Triton could not serve the model {name!r}: {_first_line(e)}; "
                                               f"see {where_log}") from None
                ready, reason = _wait_ready(triton, http, name)
                if not ready:
                    raise UnavailableError(f"Triton started, but the model {name!r} did not load "
                                           f"({reason or 'no reason given'}); see {where_log}")
                problem = self_test(http, name)
                if problem:  # e.g. the Python-backend stub died: Triton says ready, every request fails
                    raise UnavailableError(f"Triton loaded the model {name!r}, but a test request failed ({problem}); "
                                           f"see {where_log}")
                host = _client_host(host)
                from icrt.runtime.base.text import printable
                print(printable(f"icrt serve: model {name!r} ready ({info['name']}, {info['backend']} "
                                f"{info['precision']}, {instances} instance(s), {options.threads} thread(s) each; at "
                                f"most {limits.image_pixels / 1e6:g} Mpx an image, {limits.request_pixels / 1e6:g} "
                                f"Mpx and {limits.request_seconds:g} s a request): HTTP http://{http}, gRPC "
                                f"grpc://{host}:{grpc_port}, metrics http://{host}:{metrics_port}/metrics; "
                                "Ctrl+C or SIGTERM stops it"), file=sys.stderr, flush=True)
                while triton.is_alive():
                    time.sleep(0.5)
                log.error("icrt serve: the Triton server stopped by itself (see %s)", where_log)
                return EXIT_FAILURES
            except KeyboardInterrupt:
                print(f"icrt serve: stopping ({'SIGTERM' if stop['signal'] else 'interrupted'})", file=sys.stderr,
                      flush=True)
                return EXIT_OK
            finally:
                if triton is not None:
                    triton.stop()
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


START_ATTEMPTS = 3


def _state_in_config(triton, name: str, parameters: dict) -> bool:
    """Add ``parameters`` to the config.pbtxt that PyTriton writes for model ``name`` (where clients read a model's
    score range and limits, as in an ``icrt triton`` repository); whether it could. PyTriton 0.7 has no public way to
    (its ``Model`` builds that config once, before Triton starts, and keeps it), so the kept config is extended; a
    test checks that the served config says them."""
    try:
        for model in triton._model_manager.models:
            if model.model_name == name:
                model._get_triton_model_config().backend_parameters.update(parameters)
                return True
    except (AttributeError, TypeError):  # another PyTriton
        pass
    return False


def _handshake_race(e: Exception) -> bool:
    """PyTriton's model instances after the first fetch their settings from the first one's handshake socket with a
    1 s deadline, and may find the socket file before it listens; on a loaded machine a second instance then fails
    to load with "Connection refused" (or a timeout) although nothing is wrong. Starting Triton again is the cure."""
    text = str(e)
    return "handshake" in text and ("Connection refused" in text or "Timeout" in text)


def self_test(http: str, name: str) -> str | None:
    """Send one small image to the model ``name`` at ``http`` (host:port) as a client would; why it failed (one line),
    or None when a score came back. Triton reports a model ready before its Python-backend stub has run a request."""
    import io

    import numpy as np
    import tritonclient.http as client
    from PIL import Image

    from icrt.runtime.bundle.records import IMAGE_INPUT, SCORE

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 140, 160)).save(buf, "PNG")
    rows = np.empty((1, 1), dtype=object)
    rows[0, 0] = buf.getvalue()
    try:
        with contextlib.closing(client.InferenceServerClient(http, connection_timeout=10, network_timeout=120)) as c:
            image = client.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
            image.set_data_from_numpy(rows, binary_data=True)
            result = c.infer(name, [image], outputs=[client.InferRequestedOutput(SCORE, binary_data=True)])
            score = result.as_numpy(SCORE)
    except Exception as e:  # tritonclient's errors (InferenceServerException: HTTP 500 from a dead stub, ...)
        return _first_line(e)
    if score is None or score.size != 1 or not np.isfinite(score).all():
        return "the response has no score"
    return None


def _first_line(e: Exception) -> str:
    """An exception's message up to its first blank line (Triton appends Python tracebacks), on one line."""
    text = str(e).split("\n\n")[0]
    return " ".join(text.split()) or type(e).__name__


def _client_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host`` (a wildcard: the loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _wait_ready(triton, http: str, name: str) -> tuple[bool, str]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    token = getattr(triton, "get_access_token", lambda: None)()
    reason = ""
    while time.monotonic() < deadline and triton.is_alive():
        ready, reason = _model_state(http, name, token)
        if ready:
            return True, ""
        if "UNAVAILABLE" in reason.upper():  # loading failed: it will not become ready
            return False, reason
        time.sleep(0.5)
    if not reason:
        reason = "timed out" if triton.is_alive() else "the server stopped"
    return False, reason
