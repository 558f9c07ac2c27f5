"""``icrt serve`` on a real Triton server (the PyTriton wheel's tritonserver) and ``icrt score --url``.

The server tests start ``icrt serve`` as a child process on free loopback ports, score images through HTTP and gRPC
and compare with local scores (<= 1e-5, the same error records), send garbage, and stop it (SIGINT, SIGTERM) checking
that no process it started is left. Everything is bounded in time. They are skipped only where nvidia-pytriton /
tritonclient are not installed (the ``[serve]`` extra); the missing-package messages are tested everywhere.
Torch-free."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest

from icrt.runtime.base.install import extra_hint
from icrt.runtime.scoring.scorer import Scorer
from tests.images import textured
from tests.runtime.fixtures import ROOT, broken_inputs, run_cli

SERVE_EXTRA = "the [serve] extra"
READY_TIMEOUT = 120


def need_serve():
    pytest.importorskip("pytriton", reason=f"nvidia-pytriton is not installed ({SERVE_EXTRA})")
    pytest.importorskip("tritonclient.http", reason=f"tritonclient[http] is not installed ({SERVE_EXTRA})")
    pytest.importorskip("tritonclient.grpc", reason=f"tritonclient[grpc] is not installed ({SERVE_EXTRA})")


def images(folder, n=6):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = [(64, 64), (120, 80), (33, 200), (300, 300), (97, 61), (64, 65)][i % 6]
        path = os.path.join(folder, f"img{i}.png" if i % 2 else f"img{i}.jpg")
        textured(w, h, seed=i, level=(i + 1) / (n + 1)).save(path)
        paths.append(path)
    return paths


def same_records(local, remote, tol=1e-5):
    assert [r["image"] for r in remote] == [r["image"] for r in local]
    for lo, re_ in zip(local, remote):
        assert set(lo) == set(re_), (lo, re_)
        if "error" in lo:
            assert re_["error"] == lo["error"]
        else:
            assert abs(lo["score"] - re_["score"]) <= tol, (lo, re_)
            assert [lo[k] for k in ("patches", "width", "height")] == [re_[k] for k in ("patches", "width", "height")]


@pytest.fixture(scope="module")
def server(square_bundle, tmp_path_factory):
    """``icrt serve`` of the tiny square bundle: up for the module, stopped with SIGINT at its end."""
    need_serve()
    from icrt.runtime.serving.process import ServerProcess

    log = str(tmp_path_factory.mktemp("serve") / "serve.log")
    sp = ServerProcess(["-m", square_bundle, "--max-batch", "8", "--max-queue-delay-us", "100000",
                        "--max-request-pixels", "100_000_000"], log_path=log, cwd=ROOT)
    sp.start()
    try:
        sp.wait_ready(READY_TIMEOUT)
        yield sp
    finally:
        code = sp.stop(signal.SIGINT, timeout=60)
        left = sp.leftovers()
        sp.kill_leftovers()
    assert code == 0, sp.log()[-3000:]
    assert not left, f"processes left after icrt serve stopped: {left}"
    assert "icrt serve: stopping (interrupted)" in sp.log()


@pytest.mark.server
def test_scores_through_http_and_grpc_equal_local_scores(server, square_bundle, tmp_path, capsys):
    import json

    paths = images(str(tmp_path / "imgs"))
    local = Scorer.load(square_bundle).score_many(paths)
    for url in (server.http_url, server.grpc_url):
        code, out, err = run_cli(capsys, "score", *paths, "--url", url, "--format", "json", "--batch-size", "4")
        assert code == 0, err
        same_records(local, json.loads(out))
    # the table, as local
    code, out_local, _ = run_cli(capsys, "score", *paths, "-m", square_bundle)
    code2, out_remote, _ = run_cli(capsys, "score", *paths, "--url", server.http_url)
    assert code == code2 == 0 and out_remote == out_local


@pytest.mark.server
def test_files_that_cannot_be_scored_get_the_local_error_records(server, square_bundle, tmp_path, capsys):
    import json

    bad = broken_inputs(str(tmp_path / "bad"))
    paths = images(str(tmp_path / "imgs"), 2) + [p for p, _ in bad.values()]
    local = Scorer.load(square_bundle).score_many(paths)
    code, out, err = run_cli(capsys, "score", *paths, "--url", server.http_url, "--format", "jsonl")
    assert code == 1
    remote = [json.loads(line) for line in out.splitlines()]
    same_records(local, remote)
    assert sum("error" in r for r in remote) == len(bad)
    for name in ("text.jpg", "empty.jpg", "bomb.png", "missing.png"):  # one line each, as locally
        assert f"icrt: {bad[name][0]}: " in err


@pytest.mark.server
def test_garbage_gets_an_error_and_the_server_stays_up(server, tmp_path):
    import tritonclient.http as http

    good = images(str(tmp_path / "imgs"), 1)[0]
    rows = np.empty((3, 1), dtype=object)
    rows[:, 0] = [b"\x00\xffgarbage", open(good, "rb").read(), b""]
    inp = http.InferInput("image", [3, 1], "BYTES")
    inp.set_data_from_numpy(rows, binary_data=True)
    client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=60)
    try:
        res = client.infer("icrt", [inp])
        score, error = res.as_numpy("score").reshape(-1), res.as_numpy("error").reshape(-1)
        assert error[0] == b"not a recognised image format" and np.isnan(score[0])
        assert error[1] == b"" and 0 <= score[1] <= 1 and res.as_numpy("patches")[1, 0] == 1
        assert error[2] == b"empty file (0 bytes)" and np.isnan(score[2])
        # a request the model cannot take (a wrong type) is refused by Triton; the server stays up and scores
        wrong = http.InferInput("image", [1, 1], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 1), np.float32))
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException):
            client.infer("icrt", [wrong])
        assert client.is_server_ready() and client.is_model_ready("icrt")
        assert client.infer("icrt", [inp]).as_numpy("error")[1, 0] == b""
    finally:
        client.close()


@pytest.mark.server
def test_concurrent_requests_are_batched_by_triton(server, square_bundle, tmp_path):
    import tritonclient.grpc as grpc

    paths = images(str(tmp_path / "imgs"), 6)
    local = {r["image"]: r["score"] for r in Scorer.load(square_bundle).score_many(paths)}
    before = metrics(server)
    n = 24
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def send(i):
        client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            rows = np.empty((1, 1), dtype=object)
            rows[0, 0] = open(paths[i % len(paths)], "rb").read()
            inp = grpc.InferInput("image", [1, 1], "BYTES")
            inp.set_data_from_numpy(rows)
            barrier.wait(30)
            results[i] = float(client.infer("icrt", [inp], client_timeout=60).as_numpy("score")[0, 0])
        except Exception as e:
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and all(abs(results[i] - local[paths[i % len(paths)]]) <= 1e-5 for i in range(n))
    after = metrics(server)
    requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert requests == n and executions < n  # Triton's dynamic batching put requests together


def metrics(server) -> dict:
    """Triton's Prometheus counters for model icrt."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for name in ("nv_inference_request_success", "nv_inference_exec_count"):
        m = re.search(rf'^{name}{{[^}}]*model="icrt"[^}}]*}} (\S+)$', text, re.M)
        assert m, f"{name} for icrt not in the metrics"
        out[name] = float(m.group(1))
    return out


@pytest.mark.server
def test_patch_model_scores_and_sigterm_stops_everything(patches_bundle, tmp_path, capsys):
    need_serve()
    import json

    from icrt.runtime.serving.process import ServerProcess

    paths = images(str(tmp_path / "imgs"))
    local = Scorer.load(patches_bundle).score_many(paths)
    assert max(r["patches"] for r in local) > 4
    sp = ServerProcess(["-m", patches_bundle, "--max-batch", "4", "--instances", "2"], log_path=str(tmp_path / "log"),
                       cwd=ROOT)
    sp.start()
    try:
        sp.wait_ready(READY_TIMEOUT)
        code, out, err = run_cli(capsys, "score", *paths, "--url", sp.grpc_url, "--format", "json")
        assert code == 0, err
        same_records(local, json.loads(out))
        assert len(sp.tree) >= 2 and any("tritonserver" in n for n in map(process_name, sp.tree))
    finally:
        code = sp.stop(signal.SIGTERM, timeout=60)
        left = sp.leftovers()
        sp.kill_leftovers()
    assert code == 0 and not left, (code, left, sp.log()[-3000:])
    assert "icrt serve: stopping (SIGTERM)" in sp.log()


def process_name(pid):
    from icrt.runtime.serving.process import process_name as name
    return name(pid)


# --- errors before any server ----------------------------------------------------------------------------------


def _without(module: str, *argv) -> subprocess.CompletedProcess:
    """``icrt ARGV`` in a fresh Python where ``module`` cannot be imported."""
    code = (f"import sys; sys.modules[{module!r}] = None; from icrt.runtime.cli import main; "
            f"sys.exit(main({list(argv)!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_serve_without_pytriton_says_what_to_install(square_bundle):
    r = _without("pytriton", "serve", "-m", square_bundle)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("icrt: error: icrt serve needs NVIDIA PyTriton")
    assert extra_hint("serve") in r.stderr and f"pip install '{ROOT}[serve]'" in r.stderr  # this clone, not a name


def test_score_url_without_tritonclient_says_what_to_install(tmp_path):
    img = images(str(tmp_path), 1)[0]
    r = _without("tritonclient", "score", img, "--url", "http://127.0.0.1:9")
    assert r.returncode == 2 and extra_hint("serve") in r.stderr and r.stderr.count("\n") == 1


def test_serve_refuses_numpy_2_beside_pytriton_before_0_8_in_one_line(square_bundle, capsys, monkeypatch):
    need_serve()
    import icrt.runtime.base.packages as packages

    real = packages.version
    monkeypatch.setattr(packages, "version", lambda d: {"numpy": "2.1.3", "nvidia-pytriton": "0.7.0"}.get(d, real(d)))
    code, out, err = run_cli(capsys, "serve", "-m", square_bundle)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "icrt serve cannot work in this environment: numpy 2.1.3 is installed beside PyTriton 0.7.0" in err
    assert "HTTP 500" in err and "pip install 'numpy<2'" in err


def test_serve_problem_is_numpy_2_with_pytriton_before_0_8_only():
    from icrt.runtime.base.packages import serve_problem

    assert serve_problem("2.0.0", "0.7.0") and serve_problem("2.4.6", "0.5.14")
    assert serve_problem("1.26.4", "0.7.0") is None and serve_problem("2.1.0", "0.8.0") is None


@pytest.mark.parametrize("argv, words", [
    (["-m", "x"], "-m with --url"),
    (["--heatmap", "maps"], "--heatmap with --url"),
    (["--backend", "onnxruntime"], "--backend with --url"),
    (["--url", "ftp://h:1"], "unknown scheme"),
    (["--url", "http://h:1/v2/models"], "expected SCHEME://HOST:PORT"),
])
def test_score_url_usage_errors(tmp_path, capsys, argv, words):
    img = images(str(tmp_path), 1)[0]
    if "--url" not in argv:
        argv = [*argv, "--url", "http://127.0.0.1:9"]
    code, out, err = run_cli(capsys, "score", img, *argv)
    assert code == 2 and words in err and out == ""


def test_score_url_with_no_server_there(tmp_path, capsys):
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    from icrt.runtime.serving.process import free_ports

    img = images(str(tmp_path), 1)[0]
    code, out, err = run_cli(capsys, "score", img, "--url", f"http://127.0.0.1:{free_ports(1)[0]}")
    assert code == 2 and "cannot reach a server" in err and out == ""


@pytest.mark.parametrize("argv, words", [
    (["--http-port", "0"], "--http-port must be in"),
    (["--grpc-port", "8000"], "must differ"),
    (["--instances", "0"], "--instances"),
    (["--max-batch", "5000"], "--max-batch"),
    (["--name", "a b"], "--name"),
])
def test_serve_usage_errors(square_bundle, capsys, argv, words):
    code, _, err = run_cli(capsys, "serve", "-m", square_bundle, *argv)
    assert code == 2 and words in err


@pytest.mark.server
def test_serve_on_a_port_in_use_is_one_line(square_bundle, capsys):
    need_serve()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", "-m", square_bundle, "--http-port", port, "--grpc-port", port + 1,
                               "--metrics-port", port + 2)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err


# --- N12, N21: hostile URLs and servers, request caps ----------------------------------------------------------


class FakeServer:
    """A loopback HTTP server answering like Triton until ``bad`` (``"config"`` or ``"infer"``), where it sends a
    truncated reply (a Content-Length it never fills) and closes. Threads only; stopped by ``close``."""

    CONFIG = {"name": "icrt", "max_batch_size": 8, "input": [{"name": "image", "data_type": "TYPE_STRING"}],
              "output": [{"name": n} for n in ("score", "error", "patches", "width", "height")]}

    def __init__(self, bad: str, config=None):
        import json
        import socket

        self.bad, self.config = bad, json.dumps(config if config is not None else self.CONFIG).encode()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        import socket

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        head += chunk
                    line = head.split(b"\r\n", 1)[0]
                    if b"/infer" in line and self.bad == "infer" or b"/config" in line and self.bad == "config":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"a\"")
                        continue
                    body = self.config if b"/config" in line else b""
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                                 % len(body) + body)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.sock.close()


@pytest.mark.parametrize("url, words", [("http://[::1", "not a URL"), ("http://h:99999", "bad host or port"),
                                        ("http://\x1b[2J:80", "")])
def test_score_url_hostile_urls_are_one_line(tmp_path, capsys, url, words):
    img = images(str(tmp_path), 1)[0]
    code, out, err = run_cli(capsys, "score", img, "--url", url)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("icrt: error: --url ") and words in err
    assert "\x1b" not in err


@pytest.mark.parametrize("config", [None, {"input": 5, "output": None}, {**FakeServer.CONFIG, "max_batch_size": "x"},
                                    [1, 2]])
def test_score_url_truncated_or_malformed_replies(tmp_path, capsys, config):
    """A truncated reply while checking the model, or a config of the wrong shape: one line, exit 2."""
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    img = images(str(tmp_path), 1)[0]
    server = FakeServer("config" if config is None else "none", config)
    try:
        code, out, err = run_cli(capsys, "score", img, "--url", f"http://127.0.0.1:{server.port}")
    finally:
        server.close()
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("icrt: error: http://127.0.0.1:")
    assert "Traceback" not in err


def test_score_url_truncated_inference_replies_are_error_records(tmp_path, capsys):
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    paths = images(str(tmp_path), 3)
    server = FakeServer("infer")
    try:
        code, out, err = run_cli(capsys, "score", *paths, "--url", f"http://127.0.0.1:{server.port}", "--format", "jsonl")
    finally:
        server.close()
    import json

    recs = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["image"] for r in recs] == paths and "Traceback" not in err
    assert all(r["error"].startswith("server error (") for r in recs)


def test_serve_refuses_oversized_images_and_requests_before_decoding(monkeypatch):
    """N21: icrt serve's own caps (Triton's HTTP limit is fixed at 64 MB, its gRPC one is 2 GB): rows over
    MAX_IMAGE_BYTES, and every row of a request over MAX_REQUEST_BYTES, get error rows and are never decoded."""
    import icrt.runtime.serving.limits as limits
    from icrt.runtime.serving.server import infer_function

    monkeypatch.setattr(limits, "MAX_IMAGE_BYTES", 10)
    monkeypatch.setattr(limits, "MAX_REQUEST_BYTES", 25)
    decoded = []
    infer = infer_function(FakeScorer(decoded))
    small = {"image": np.array([[b"a" * 5], [b"b" * 11]], dtype=object)}
    big = {"image": np.array([[b"c" * 20], [b"d" * 6]], dtype=object)}
    one, two = infer([small, big])
    assert decoded == [b"a" * 5]
    assert list(one["error"].reshape(-1)) == [b"", b"file too large (0 MB; this server takes at most 0 MB an image)"]
    assert one["score"][0, 0] == 0.5 and np.isnan(one["score"][1, 0])
    assert all(e.startswith(b"request too large") for e in two["error"].reshape(-1))
    assert np.isnan(two["score"]).all()


@pytest.mark.server
def test_malformed_json_gets_an_error_and_the_server_stays_up(server):
    """Triton's own HTTP front end answers a malformed JSON body (status 500 in the tritonserver PyTriton ships: icrt
    cannot change it; docs/security.md); the message is one line and the server keeps serving."""
    import urllib.error

    for body in (b"{not json", b'{"inputs": 5}', b"[" * 10_000 + b"]" * 10_000,
                 b'{"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES", "data": [5]}]}'):
        req = urllib.request.Request(f"{server.http_url}/v2/models/icrt/infer", data=body,
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=60)
        assert 400 <= e.value.code < 600 and b"error" in e.value.read()
    with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=30) as r:
        assert r.status == 200


# --- R5: pixels and time per request, checked before decoding --------------------------------------------------


class FakeScorer:
    """Scores every image it is handed 0.5 and keeps them in ``fed`` (what would have been decoded), in order."""

    def __init__(self, fed=None):
        self.fed = [] if fed is None else fed

    def iter_score(self, images):
        for im in images:
            self.fed.append(im)
            yield {"image": "", "score": 0.5, "patches": 1, "width": 2, "height": 3}


def png(width, height, mode="RGB") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_the_red_team_request_is_refused_per_row_from_the_headers_without_decoding():
    """R5: 1-bit 9400 x 9400 PNGs (10.8 kB, 88 Mpx each) are refused by the default pixel cap from their header; the
    request's other rows are scored; a PNG claiming 10^10 pixels gets the error record icrt score gives."""
    import tempfile

    from icrt.runtime.serving.limits import MAX_IMAGE_PIXELS, RequestLimits, score_requests
    from tests.runtime.fixtures import bomb_png

    assert MAX_IMAGE_PIXELS <= 50_000_000
    huge = png(9400, 9400, "1")
    assert len(huge) < 12_000
    with tempfile.TemporaryDirectory() as d:
        bomb_png(os.path.join(d, "bomb.png"))
        bomb = open(os.path.join(d, "bomb.png"), "rb").read()
    small = png(64, 48)
    scorer = FakeScorer()
    [records] = score_requests(scorer, [[huge] * 3 + [small, b"junk", bomb]], RequestLimits())
    assert scorer.fed == [small, b"junk", bomb]  # the Scorer refuses junk and the bomb itself, without decoding
    for r in records[:3]:
        assert r["error"] == "too many pixels (9400 x 9400 = 88.4 Mpx; this server decodes at most 50 Mpx an image)"
    assert [r.get("score") for r in records[3:]] == [0.5] * 3


def test_a_request_is_scored_within_its_pixel_budget_and_the_rest_get_error_rows():
    from icrt.runtime.serving.limits import RequestLimits, score_requests

    limits = RequestLimits(image_pixels=1000, request_pixels=2500)
    a, b, c = png(30, 30), png(10, 10), png(40, 30)
    scorer = FakeScorer()
    [records] = score_requests(scorer, [[a, a, a, b, c]], limits)
    assert scorer.fed == [a, a, b]
    assert records[2]["error"] == ("request has too many pixels (0 Mpx with this image; this server decodes at most "
                                   "0.0025 Mpx a request)")
    assert records[4]["error"] == "too many pixels (40 x 30 = 0.0 Mpx; this server decodes at most 0.001 Mpx an image)"
    assert [r.get("score") for r in records] == [0.5, 0.5, None, 0.5, None]


def test_rows_not_started_within_the_time_budget_get_an_error_and_each_request_has_its_own():
    """A request's rows after its time budget are not scored (one line each); the next request of the batch gets
    its own budget. The clock is a counter (10 s a row), so the test does not depend on the machine's speed."""
    from icrt.runtime.serving.limits import RequestLimits, score_requests

    ticks = iter(range(0, 10_000, 10))
    rows = [png(8 + i, 8) for i in range(5)]
    scorer = FakeScorer()
    slow, other = score_requests(scorer, [rows, rows[:2]], RequestLimits(request_seconds=25), clock=lambda: next(ticks))
    assert [r.get("score") for r in other] == [0.5, 0.5]  # the cheaper request went first
    assert [r.get("score") for r in slow[:3]] == [0.5] * 3
    for r in slow[3:]:
        assert r["error"] == "request took longer than 25 s (this server works at most 25 s on a request); not scored"
    assert scorer.fed == rows[:2] + rows[:3]


def test_requests_are_scored_cheapest_first_and_answered_in_order(square_bundle):
    from icrt.runtime.serving.limits import RequestLimits, score_requests

    big, small = [png(300, 300), png(200, 200)], [png(20, 20)]
    scorer = FakeScorer()
    records = score_requests(scorer, [big, small], RequestLimits())
    assert scorer.fed == small + big and [len(r) for r in records] == [2, 1]
    # the real Scorer, batched this way, gives icrt score's records
    local = Scorer.load(square_bundle)
    got = score_requests(local, [big, small], RequestLimits())
    want = [local.score_many(big), local.score_many(small)]
    for g, w in zip(got, want):
        assert [(r["width"], round(r["score"], 5)) for r in g] == [(r["width"], round(r["score"], 5)) for r in w]


@pytest.mark.parametrize("argv, words", [
    (["--max-pixels", "0"], "--max-pixels must be in [1, "),
    (["--max-pixels", "100_000_000"], "Pillow's limit"),
    (["--max-pixels", "1000", "--max-request-pixels", "999"], "--max-request-pixels must be at least --max-pixels"),
    (["--max-request-seconds", "0"], "--max-request-seconds"),
    (["--max-request-seconds", "nan"], "--max-request-seconds"),
])
def test_serve_limit_flags_are_checked_in_one_line(square_bundle, capsys, argv, words):
    code, out, err = run_cli(capsys, "serve", "-m", square_bundle, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and words in err


@pytest.mark.server
def test_the_served_config_states_the_score_range_and_the_limits(server):
    """icrt score --url reads them (and a repository from icrt triton states the range the same way)."""
    import json

    with urllib.request.urlopen(f"{server.http_url}/v2/models/icrt/config", timeout=30) as r:
        params = {k: v["string_value"] for k, v in json.load(r)["parameters"].items()}
    assert json.loads(params["icrt_score_range"]) == [0.0, 1.0]
    assert params["icrt_max_pixels"] == "50000000" and params["icrt_max_request_pixels"] == "100000000"
    assert params["icrt_max_request_seconds"] == "30"
    assert "at most 50 Mpx an image, 100 Mpx and 30 s a request)" in server.log()  # the ready line says them
    from icrt.runtime.serving.client import RemoteScorer

    for url in (server.http_url, server.grpc_url):  # the client reads them over both protocols
        remote = RemoteScorer(url)
        assert remote.score_range == (0.0, 1.0) and remote.request_pixels == 100_000_000, url


@pytest.mark.server
def test_huge_pixel_requests_are_refused_per_row_and_a_normal_request_is_served_meanwhile(server, tmp_path):
    """R5 on the real server: requests of tiny-header huge-pixel PNGs (before: 2-3 s of decoding a row, so these
    would hold the one instance for a minute) get an error row per image from the headers; a request over the pixel
    budget has the rows that fit scored; a normal request sent meanwhile is answered. Timeouts are generous bounds,
    not measurements."""
    import tritonclient.http as http

    huge, big, good = png(9400, 9400, "1"), png(6000, 6000, "1"), open(images(str(tmp_path), 1)[0], "rb").read()

    def infer(rows, timeout):
        data = np.empty((len(rows), 1), dtype=object)
        data[:, 0] = rows
        inp = http.InferInput("image", [len(rows), 1], "BYTES")
        inp.set_data_from_numpy(data, binary_data=True)
        client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=timeout)
        try:
            res = client.infer("icrt", [inp])
            return [e.decode() for e in res.as_numpy("error").reshape(-1)], res.as_numpy("score").reshape(-1)
        finally:
            client.close()

    results, failures = {}, []
    heavy = {**{i: [huge] * 8 for i in range(4)}, "budget": [big, big, big, good]}
    start = threading.Barrier(len(heavy) + 1)

    def send(key, rows):
        try:
            start.wait(60)
            results[key] = infer(rows, 120)
        except Exception as e:
            failures.append((key, e))

    threads = [threading.Thread(target=send, args=item) for item in heavy.items()]
    for t in threads:
        t.start()
    start.wait(60)  # the heavy requests are being sent
    errors, scores = infer([good], 30)  # a normal request: answered within a generous bound
    assert errors == [""] and 0 <= scores[0] <= 1
    for t in threads:
        t.join(180)
    assert not failures and not any(t.is_alive() for t in threads)
    for i in range(4):
        errors, scores = results[i]
        assert all(e.startswith("too many pixels (9400 x 9400 = 88.4 Mpx;") for e in errors) and np.isnan(scores).all()
    errors, scores = results["budget"]
    assert errors[:2] == ["", ""] and errors[3] == "" and errors[2].startswith("request has too many pixels (108 Mpx")
    assert np.isfinite(scores[[0, 1, 3]]).all()


# --- R10: a server's records are checked as local scores are ----------------------------------------------------


class KServeFake:
    """A loopback KServe v2 HTTP server (``http.server``) that answers every infer request with the same record for
    each image: ``score``, ``error`` (text), ``patches``, ``width``, ``height`` as given, in the binary tensor
    extension tritonclient asks for; its model config states ``parameters`` when given. Stopped by ``close``."""

    def __init__(self, score=0.5, error="", patches=1, width=40, height=30, parameters=None):
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        config = {**FakeServer.CONFIG, **({"parameters": {k: {"string_value": v} for k, v in parameters.items()}}
                                          if parameters else {})}
        row = {"score": np.float32(score), "error": error.encode(), "patches": patches, "width": width,
               "height": height}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, body: bytes, headers=()):
                self.send_response(200)
                for k, v in (("Content-Type", "application/json"), *headers):
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.reply(json.dumps(config).encode() if self.path.endswith("/config") else b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                head = json.loads(body[:int(self.headers.get("Inference-Header-Content-Length", len(body)))])
                n = head["inputs"][0]["shape"][0]
                outputs, blobs = [], []
                for name, kind in (("score", "FP32"), ("error", "BYTES"), ("patches", "INT32"), ("width", "INT32"),
                                   ("height", "INT32")):
                    if kind == "BYTES":
                        blob = b"".join(len(row[name]).to_bytes(4, "little") + row[name] for _ in range(n))
                    else:
                        blob = np.full(n, row[name], np.float32 if kind == "FP32" else np.int32).tobytes()
                    outputs.append({"name": name, "datatype": kind, "shape": [n, 1],
                                    "parameters": {"binary_data_size": len(blob)}})
                    blobs.append(blob)
                header = json.dumps({"model_name": "icrt", "outputs": outputs}).encode()
                self.reply(header + b"".join(blobs), [("Inference-Header-Content-Length", str(len(header)))])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def score_through(fake, capsys, paths, fmt="json"):
    try:
        return run_cli(capsys, "score", *paths, "--url", fake.url, "--format", fmt)
    finally:
        fake.close()


def strict_json(text):
    """JSON that has no bare NaN or Infinity (json.loads takes them unless told)."""
    import json

    def refuse(name):
        raise ValueError(f"bare {name} in the JSON output")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("answer, words", [
    ({"score": float("nan")}, "answered a score that is not a finite number (nan)"),
    ({"score": float("inf")}, "answered a score that is not a finite number (inf)"),
    ({"score": 7.5}, "answered the score 7.5, outside the model's range [0, 1]"),
    ({"score": -3.0}, "answered the score -3, outside the model's range [0, 1]"),
    ({"patches": -5}, "answered patches -5 (at least 1 expected)"),
    ({"width": -1, "height": 0}, "answered width -1, height 0 (at least 1 expected)"),
    ({"score": 7.5, "parameters": {"icrt_score_range": "[0, 5]"}}, "outside the model's range [0, 5]"),
])
def test_score_url_refuses_what_local_scoring_would_refuse_naming_the_server(tmp_path, capsys, answer, words):
    """R10: a fake or broken KServe server's NaN, infinite, out-of-range scores and sizes below 1 are error records
    naming the server (exit 1), and the JSON output stays strict."""
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    paths = images(str(tmp_path), 2)
    fake = KServeFake(**answer)
    code, out, err = score_through(fake, capsys, paths)
    records = strict_json(out)
    assert code == 1 and [r["image"] for r in records] == paths
    for r in records:
        assert set(r) == {"image", "error"} and r["error"].startswith(f"the server at {fake.url} answered ")
        assert words in r["error"]
    assert err.count("\n") == 3 and "Traceback" not in err  # one line per file, then the count


@pytest.mark.parametrize("answer, score", [
    ({"score": 1.0005}, 1.0),  # within the tolerance: clipped into the range, as locally
    ({"score": 0.25}, 0.25),
    ({"score": 7.5, "parameters": {"icrt_score_range": "[0.0, 10.0]"}}, 7.5),  # the range the server states
])
def test_score_url_takes_scores_in_the_model_range(tmp_path, capsys, answer, score):
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    paths = images(str(tmp_path), 1)
    code, out, err = score_through(KServeFake(**answer), capsys, paths)
    [record] = strict_json(out)
    assert code == 0 and err == "" and record["score"] == pytest.approx(score, abs=1e-6)


def test_score_url_writes_a_server_error_text_escaped(tmp_path, capsys):
    """R10: an error text with ESC from the server is written printable into CSV (before: raw on stdout)."""
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    paths = images(str(tmp_path), 1)
    code, out, err = score_through(KServeFake(error="bad\x1b]0;PWNED\x07\x1b[2J" + "x" * 5000), capsys, paths, "csv")
    assert code == 1 and not any(c in out + err for c in "\x1b\x07")
    line = out.splitlines()[1]
    assert "bad\\x1b]0;PWNED\\x07\\x1b[2Jxxx" in line and len(line) < 1200 and line.endswith("...")


@pytest.mark.parametrize("parameters", [{"icrt_score_range": "[1, 0]"}, {"icrt_score_range": "nope"},
                                        {"icrt_score_range": "[0, NaN]"}, {"icrt_max_request_pixels": "-1"}])
def test_score_url_refuses_a_server_stating_a_broken_range_or_budget_in_one_line(tmp_path, capsys, parameters):
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    paths = images(str(tmp_path), 1)
    code, out, err = score_through(KServeFake(parameters=parameters), capsys, paths)
    assert code == 2 and out == "" and err.count("\n") == 1 and "is not what icrt's servers state" in err


def test_score_url_packs_requests_within_the_server_pixel_budget(tmp_path, capsys, monkeypatch):
    """A server stating a pixel budget per request gets requests within it (an image over it goes alone)."""
    pytest.importorskip("tritonclient.http", reason=f"tritonclient is not installed ({SERVE_EXTRA})")
    from icrt.runtime.serving.client import RemoteScorer

    paths = images(str(tmp_path), 6)  # 64x64, 120x80, 33x200, 300x300, 97x61, 64x65
    fake = KServeFake(parameters={"icrt_max_request_pixels": "20000"})
    sizes = []
    real = RemoteScorer._send
    monkeypatch.setattr(RemoteScorer, "_send", lambda self, data: sizes.append(len(data)) or real(self, data))
    try:
        records = RemoteScorer(fake.url).score_many(paths)
    finally:
        fake.close()
    assert [r["score"] for r in records] == [0.5] * 6
    assert sizes == [2, 1, 1, 2]  # 4096 + 9600; 6600; 90000 alone; 5917 + 4160


# --- start-up under load ----------------------------------------------------------------------------------------


@pytest.mark.server
def test_a_port_taken_before_the_server_binds_it_starts_the_server_on_other_ports(square_bundle, tmp_path):
    """On a busy machine a port chosen free can be taken before icrt serve binds it (another test's server, any
    outgoing connection); ServerProcess then starts the server again on other free ports."""
    need_serve()
    import socket

    from icrt.runtime.serving.process import ServerProcess

    sp = ServerProcess(["-m", square_bundle], log_path=str(tmp_path / "log"), cwd=ROOT)
    taken = sp.http_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        sp.start()
        try:
            sp.wait_ready(READY_TIMEOUT)
            assert sp.attempts == 2 and sp.http_port != taken
            assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in sp.log()
            with urllib.request.urlopen(f"{sp.http_url}/v2/health/ready", timeout=30) as r:
                assert r.status == 200
        finally:
            code = sp.stop(signal.SIGINT, timeout=60)
            left = sp.leftovers()
            sp.kill_leftovers()
    assert code == 0 and not left, (code, left, sp.log_tail())
