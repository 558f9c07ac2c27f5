"""``icrt serve``: a bundle served over HTTP and gRPC (KServe v2) by a real NVIDIA Triton Inference Server, through
NVIDIA PyTriton (``pip install 'icrt[serve]'``; docs/serving.md).

PyTriton starts the ``tritonserver`` binary its wheel ships and binds a Python function as model ``icrt``: Triton
takes the requests, batches them dynamically (``--max-batch``, ``--max-queue-delay-us``) and hands each batch to
:func:`infer_function`, which scores the encoded image files with the runtime's :class:`~runtime.scorer.Scorer`
(the same decoding, preprocessing and model as ``icrt score``). Input ``image`` (BYTES, one encoded file per row);
outputs ``score`` (FP32), ``error`` (BYTES), ``patches``, ``width``, ``height`` (INT32) — runtime/triton.py.
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

from .errors import EXIT_FAILURES, EXIT_OK, UnavailableError, UserInputError

log = logging.getLogger("icrt")

INSTALL_HINT = "pip install 'icrt[serve]'"
MAX_INSTANCES = 16
EXIT_TIMEOUT_S = 5  # how long Triton waits for requests in flight when it is stopped
READY_TIMEOUT_S = 60  # after the server is up, how long the model may take to load


def add_command(sub):
    from .backends import backend_choices
    from .manifest import PRECISIONS

    p = sub.add_parser("serve", help="serve a bundle over HTTP/gRPC with NVIDIA Triton (PyTriton; icrt[serve])",
                       description="Serve a bundle as the Triton model 'icrt' (input image: encoded image files, BYTES; "
                                   "outputs score, error, patches, width, height), with Triton's dynamic batching, "
                                   "health endpoints and Prometheus metrics. Stops on Ctrl+C or SIGTERM.")
    p.add_argument("-m", "--model", metavar="BUNDLE", help="model bundle folder (default: the bundled default model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--http-port", type=int, default=8000, metavar="PORT")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="PORT")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="PORT")
    p.add_argument("--max-batch", type=int, default=32, metavar="N",
                   help="images per batch Triton hands to the model (default 32)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="US",
                   help="how long Triton holds a request to batch it with others (default 2000)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="model instances scoring batches in parallel (default 1), each with its own session")
    p.add_argument("--backend", choices=backend_choices(), default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="onnxruntime CPU threads per instance (default: the physical cores / --instances)")
    p.add_argument("--name", default="icrt", help="model name (default icrt)")
    p.add_argument("--log-file", default=None, metavar="FILE", help="write Triton's log here instead of stdout")
    return "serve", run


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


def infer_function(scorer):
    """PyTriton's inference callable for one model instance: a batch of requests (each ``image``: [n, 1] BYTES)
    -> one dict of output arrays per request. Rows too large to be an image icrt takes (``MAX_IMAGE_BYTES``), and
    every row of a request larger than ``MAX_REQUEST_BYTES``, get an error row without being decoded."""
    from .triton import IMAGE_INPUT, MAX_IMAGE_BYTES, MAX_REQUEST_BYTES, outputs_for

    mb = 2 ** 20

    def infer(requests):
        images, counts, refused = [], [], {}
        for request in requests:
            rows = [r if isinstance(r, bytes) else bytes(r) for r in request[IMAGE_INPUT].reshape(-1)]
            total = sum(len(r) for r in rows)
            for r in rows:
                if total > MAX_REQUEST_BYTES:
                    refused[len(images)] = (f"request too large ({total / mb:.0f} MB; this server takes at most "
                                            f"{MAX_REQUEST_BYTES // mb} MB a request)")
                elif len(r) > MAX_IMAGE_BYTES:
                    refused[len(images)] = (f"file too large ({len(r) / mb:.0f} MB; this server takes at most "
                                            f"{MAX_IMAGE_BYTES // mb} MB an image)")
                images.append(b"" if len(images) in refused else r)
            counts.append(len(rows))
        scored = iter(scorer.score_many([im for i, im in enumerate(images) if i not in refused]))
        records = [{"image": "", "error": refused[i]} if i in refused else next(scored) for i in range(len(images))]
        responses, start = [], 0
        for n in counts:
            responses.append(outputs_for(records[start:start + n]))
            start += n
        return responses

    return infer


def _import_pytriton():
    import importlib

    try:
        for name in ("pytriton.triton", "pytriton.model_config"):
            importlib.import_module(name)
    except ImportError as e:
        raise UnavailableError(f"icrt serve needs NVIDIA PyTriton, which is not installed here ({e}); "
                               f"{INSTALL_HINT}") from None


def _port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None: it is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def check_args(args) -> None:
    ports = {"--http-port": args.http_port, "--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port}
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise UserInputError(f"{flag} must be in [1, 65535], got {port}")
    if len(set(ports.values())) < 3:
        raise UserInputError(f"--http-port, --grpc-port and --metrics-port must differ, got {sorted(ports.values())}")
    from .triton import MAX_MAX_BATCH, _MODEL_NAME
    if not 1 <= args.max_batch <= MAX_MAX_BATCH:
        raise UserInputError(f"--max-batch must be in [1, {MAX_MAX_BATCH}], got {args.max_batch}")
    if not 1 <= args.instances <= MAX_INSTANCES:
        raise UserInputError(f"--instances must be in [1, {MAX_INSTANCES}], got {args.instances}")
    if args.max_queue_delay_us < 0:
        raise UserInputError(f"--max-queue-delay-us must be >= 0, got {args.max_queue_delay_us}")
    if args.threads is not None and not 1 <= args.threads <= 4 * (os.cpu_count() or 1):
        raise UserInputError(f"--threads must be in [1, {4 * (os.cpu_count() or 1)}], got {args.threads}")
    if not _MODEL_NAME.match(args.name or ""):
        raise UserInputError(f"--name {args.name!r}: letters, digits, '_', '-' and '.' only")


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


def run(args) -> int:
    check_args(args)
    _import_pytriton()
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from .backends.onnxruntime import default_threads
    from .defaults import default_bundle
    from .scorer import Scorer
    from .triton import ERROR, IMAGE_INPUT, INT_OUTPUTS, SCORE

    for port in (args.http_port, args.grpc_port, args.metrics_port):
        problem = _port_problem(args.host, port)
        if problem:
            raise UserInputError(f"cannot listen on {args.host}:{port}: {problem}")
    bundle = args.model or default_bundle()
    threads = args.threads or max(1, default_threads() // args.instances)
    # Triton hands up to --max-batch images at a time; each Scorer runs them in model batches bounded by bytes
    # (runtime.scorer.batch_limits: one input at a time for the default model's 384 px inputs on a CPU)
    scorers = [Scorer.load(bundle, backend=args.backend, precision=args.precision, threads=threads)
               for _ in range(args.instances)]
    info = scorers[0].info()
    config = TritonConfig(http_address=args.host, http_port=args.http_port, grpc_address=args.host,
                          grpc_port=args.grpc_port, metrics_address=args.host, metrics_port=args.metrics_port,
                          exit_timeout_secs=EXIT_TIMEOUT_S, log_verbose=0,
                          log_file=os.path.abspath(args.log_file) if args.log_file else None)
    outputs = [Tensor(name=SCORE, dtype=np.float32, shape=(1,)), Tensor(name=ERROR, dtype=bytes, shape=(1,)),
               *(Tensor(name=k, dtype=np.int32, shape=(1,)) for k in INT_OUTPUTS)]
    model_config = ModelConfig(max_batch_size=args.max_batch,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us))
    stop = {"signal": None}

    def on_sigterm(signum, frame):
        stop["signal"] = signum
        raise KeyboardInterrupt

    old_handler = None
    if threading_main():
        old_handler = signal.signal(signal.SIGTERM, on_sigterm)
    http = f"{_client_host(args.host)}:{args.http_port}"
    where_log = f"Triton's log in {args.log_file}" if args.log_file else "Triton's log above"
    try:
        with libpython_env():
            triton = Triton(config=config)
            try:
                triton.bind(model_name=args.name, infer_func=[infer_function(s) for s in scorers],
                            inputs=[Tensor(name=IMAGE_INPUT, dtype=bytes, shape=(1,))], outputs=outputs,
                            config=model_config, strict=True)
                try:
                    triton.run()
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # Triton refused to load the model, or did not start
                    raise UnavailableError(f"Triton could not serve the model {args.name!r}: {_first_line(e)}; "
                                           f"see {where_log}") from None
                ready, reason = _wait_ready(triton, http, args.name)
                if not ready:
                    raise UnavailableError(f"Triton started, but the model {args.name!r} did not load "
                                           f"({reason or 'no reason given'}); see {where_log}")
                host = _client_host(args.host)
                from .formats import printable
                print(f"icrt serve: model {args.name!r} ready ({printable(str(info['name']))}, {info['backend']} "
                      f"{info['precision']}, "
                      f"{args.instances} instance(s), {threads} thread(s) each): HTTP http://{http}, gRPC "
                      f"grpc://{host}:{args.grpc_port}, metrics http://{host}:{args.metrics_port}/metrics; "
                      "Ctrl+C or SIGTERM stops it", file=sys.stderr, flush=True)
                while triton.is_alive():
                    time.sleep(0.5)
                log.error("icrt serve: the Triton server stopped by itself (see %s)", where_log)
                return EXIT_FAILURES
            except KeyboardInterrupt:
                print(f"icrt serve: stopping ({'SIGTERM' if stop['signal'] else 'interrupted'})", file=sys.stderr,
                      flush=True)
                return EXIT_OK
            finally:
                triton.stop()
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


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


# --- `icrt serve` in a child process (tests, benchmarks/serve_load.py) ---------------------------------------------


def free_ports(n: int = 3, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago (the OS picks them)."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after ``pid (comm)``: state, ppid, ..., start time (index 19); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def descendants(pid: int) -> dict[int, str]:
    """Every running descendant of ``pid``: process id -> its start time (so that a reused id is not taken for it;
    read from /proc, Linux)."""
    import collections

    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields and len(fields) > 19 and fields[0] != "Z":
            children[int(fields[1])].append((int(entry), fields[19]))
    out, todo = {}, [pid]
    while todo:
        for child, started in children.get(todo.pop(), []):
            out[child] = started
            todo.append(child)
    return out


def alive(pid: int, started: str | None = None) -> bool:
    """``pid`` runs (a zombie does not count) and, when ``started`` is given, is the process that started then."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z" and (started is None or (len(fields) > 19 and fields[19] == started))


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


class ServerProcess:
    """``icrt serve`` started as a child process on free loopback ports; its output goes to ``log_path``.

    ``wait_ready`` polls Triton's health and model-ready endpoints (plain HTTP, no client library); ``stop`` sends
    SIGINT (or ``sig``), waits, kills what is left after ``timeout`` and returns the exit code. ``tree`` is every
    process it started (tritonserver, the Python-backend stubs), recorded while it runs, so that a caller can check
    that none outlives it."""

    def __init__(self, serve_args=(), host: str = "127.0.0.1", log_path: str | None = None, name: str = "icrt",
                 env=None, cwd=None):
        self.host, self.name = host, name
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3, host)
        self.log_path = log_path or os.path.join(tempfile.mkdtemp(prefix="icrt-serve-"), "serve.log")
        self.cmd = [sys.executable, "-m", "runtime.cli", "serve", "--host", host, "--http-port", str(self.http_port),
                    "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), "--name", name,
                    *map(str, serve_args)]
        self.env, self.cwd = env, cwd
        self.proc = None
        self.tree: dict[int, str] = {}  # pid -> start time

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def start(self) -> "ServerProcess":
        import subprocess

        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, cwd=self.cwd)
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _get(self, path: str) -> int:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.http_url + path, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Return when the model answers ready; RuntimeError (with the log's tail) if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.tree.update(descendants(self.proc.pid))
            if self.proc.poll() is not None:
                raise RuntimeError(f"icrt serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self._get("/v2/health/ready") == 200 and self._get(f"/v2/models/{self.name}/ready") == 200:
                self.tree.update(descendants(self.proc.pid))
                return
            time.sleep(0.3)
        raise RuntimeError(f"icrt serve was not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def stop(self, sig=signal.SIGINT, timeout: float = 60.0) -> int:
        import subprocess

        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.tree.update(descendants(self.proc.pid))
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        deadline = time.monotonic() + 15  # the stubs notice their server is gone within a few seconds
        while time.monotonic() < deadline and self.leftovers():
            time.sleep(0.2)
        self._log.close()
        return self.proc.returncode

    def leftovers(self) -> list[tuple[int, str]]:
        """(pid, name) of the processes it started that still run."""
        return [(p, process_name(p)) for p, started in sorted(self.tree.items()) if alive(p, started)]

    def kill_leftovers(self) -> None:
        for pid, _ in self.leftovers():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.kill_leftovers()
