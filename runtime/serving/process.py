"""``icrt serve`` started as a child process on free loopback ports (tests, ``benchmarks/serve_load.py``), and the
processes it starts (tritonserver, the Python-backend stubs), tracked so that a caller can check none outlives it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import tempfile
import time


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


# The process tree comes from psutil (a runtime dependency): the same on Linux and macOS, and a process is told
# from a later one that reuses its id by its start time.


def descendants(pid: int) -> dict[int, float]:
    """Every running descendant of ``pid``: process id -> its start time (so that a reused id is not taken for
    it)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    out = {}
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out[child.pid] = child.create_time()
        except psutil.Error:  # gone meanwhile
            pass
    return out


def alive(pid: int, started: float | None = None) -> bool:
    """``pid`` runs (a zombie does not count) and, when ``started`` is given, is the process that started then."""
    import psutil

    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and (started is None or p.create_time() == started)
    except psutil.Error:
        return False


def process_name(pid: int) -> str:
    import psutil

    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


class ServerProcess:
    """``icrt serve`` started as a child process on free loopback ports; its output goes to ``log_path``.

    ``wait_ready`` polls Triton's health and model-ready endpoints (plain HTTP, no client library); ``stop`` sends
    SIGINT (or ``sig``), waits, kills what is left after ``timeout`` and returns the exit code. ``tree`` is every
    process it started (tritonserver, the Python-backend stubs), recorded while it runs, so that a caller can check
    that none outlives it.

    A port that was free when chosen may be taken before the server binds it (on a busy machine, by another test's
    server or by any outgoing connection, which gets its local port from the same range): ``wait_ready`` then starts
    the server again on other free ports (``START_ATTEMPTS`` in all); read the URLs after it returns."""

    START_ATTEMPTS = 3
    PORT_TAKEN = "already in use"  # icrt serve's 'cannot listen on HOST:PORT: Address already in use', Triton's log

    def __init__(self, serve_args=(), host: str = "127.0.0.1", log_path: str | None = None, name: str = "icrt",
                 env=None, cwd=None):
        self.host, self.name, self.serve_args = host, name, [str(a) for a in serve_args]
        self.log_path = log_path or os.path.join(tempfile.mkdtemp(prefix="icrt-serve-"), "serve.log")
        self.env, self.cwd = env, cwd
        self._new_ports()
        self.proc = None
        self.tree: dict[int, float] = {}  # pid -> start time

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def _new_ports(self) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3, self.host)
        self.cmd = [sys.executable, "-m", "icrt", "serve", "--host", self.host, "--http-port", str(self.http_port),
                    "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), "--name", self.name,
                    *self.serve_args]

    def _spawn(self) -> None:
        import subprocess

        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, cwd=self.cwd)

    def start(self) -> "ServerProcess":
        self._log = open(self.log_path, "wb")
        self.attempts, self._log_from = 1, 0
        self._spawn()
        return self

    def _restart_on_new_ports(self) -> None:
        self._log.write(f"\n[ServerProcess: a port was taken; starting again on other ports ({self.attempts + 1} of "
                        f"{self.START_ATTEMPTS})]\n".encode())
        self._log.flush()
        self._log_from = self._log.tell()
        self._new_ports()
        self.attempts += 1
        self._spawn()

    def log(self, since: int = 0) -> str:
        """The server's output (from byte ``since`` on)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the log for a message, each line made printable (Triton's log quotes the model's errors)."""
        from icrt.runtime.base.text import printable

        return "\n".join(printable(line) for line in self.log()[-chars:].split("\n"))

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
                if self.attempts < self.START_ATTEMPTS and self.PORT_TAKEN in self.log(self._log_from):
                    self._restart_on_new_ports()
                    continue
                raise RuntimeError(f"icrt serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._get("/v2/health/ready") == 200 and self._get(f"/v2/models/{self.name}/ready") == 200:
                self.tree.update(descendants(self.proc.pid))
                return
            time.sleep(0.3)
        raise RuntimeError(f"icrt serve was not ready after {timeout:.0f} s:\n{self.log_tail()}")

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
