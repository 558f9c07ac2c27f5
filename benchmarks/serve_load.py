"""Load test of ``icrt serve``: N concurrent clients x M requests on loopback, against local ``icrt score``.

    python -m benchmarks.serve_load [-m BUNDLE] [--images PATH] [--clients 16] [--requests 2000]
        [--protocol http|grpc] [--instances 1] [--max-batch 32] [--max-queue-delay-us 2000] [--threads N]
        [--time-limit 900] [--out runs/serve_load]

Starts ``icrt serve`` on free loopback ports (or uses ``--url`` of one already running), warms it up, then runs
``--clients`` threads, each with its own Triton client, sending one image file a request until ``--requests``
requests were sent or ``--time-limit`` seconds passed. Then it stops the server (and checks that no process it
started is left) and runs local ``icrt score`` (a fresh process, default settings) over the same image list.
Reports request latency (p50 / p90 / p99), server throughput (images/s), errors (a request that failed, or an
image the server could not score), lost requests (sent, never answered), local throughput, their ratio, and the
largest difference between a server score and the local score of the same image. Writes ``OUT/serve_load.json``
and prints a table; exit code 0 when the targets hold (no errors, none lost, server >= ``--target-ratio`` x
local), else 1. The load phase is bounded by ``--time-limit``, each request by ``--request-timeout``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from icrt.runtime.base.files import write_json
from icrt.runtime.base.hardware import cpu_facts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def image_list(spec: str, n: int) -> list[str]:
    from icrt.runtime.scoring.inputs import collect

    paths = [p for p in collect([spec], recursive=True) if os.path.isfile(p)]
    if not paths:
        raise SystemExit(f"serve_load: no images in {spec}")
    return [paths[i % len(paths)] for i in range(n)]


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def run_load(url: str, protocol: str, files: list[str], clients: int, time_limit: float, request_timeout: float) -> dict:
    """``clients`` threads send ``files`` (one a request) until all are sent or ``time_limit`` passes."""
    from icrt.runtime.bundle.records import ERROR, IMAGE_INPUT, OUTPUTS, SCORE

    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    address = url.split("://", 1)[-1]
    blobs = {p: open(p, "rb").read() for p in set(files)}
    lock = threading.Lock()
    state = {"next": 0}
    latencies, failures, scores = [], [], {}
    answered = [0]
    deadline = time.monotonic() + time_limit

    def take():
        with lock:
            if state["next"] >= len(files) or time.monotonic() > deadline:
                return None
            state["next"] += 1
            return state["next"] - 1

    def worker():
        if protocol == "grpc":
            client = tc.InferenceServerClient(address)
        else:
            client = tc.InferenceServerClient(address, connection_timeout=request_timeout, network_timeout=request_timeout)
        try:
            while (i := take()) is not None:
                rows = np.empty((1, 1), dtype=object)
                rows[0, 0] = blobs[files[i]]
                inp = tc.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
                t0 = time.perf_counter()
                try:
                    if protocol == "grpc":
                        inp.set_data_from_numpy(rows)
                        res = client.infer("icrt", [inp], outputs=[tc.InferRequestedOutput(k) for k in OUTPUTS],
                                           client_timeout=request_timeout)
                    else:
                        inp.set_data_from_numpy(rows, binary_data=True)
                        res = client.infer("icrt", [inp], outputs=[tc.InferRequestedOutput(k, binary_data=True)
                                                                   for k in OUTPUTS])
                    dt = time.perf_counter() - t0
                    err = res.as_numpy(ERROR).reshape(-1)[0]
                    with lock:
                        answered[0] += 1
                        latencies.append(dt)
                        if err:
                            failures.append(f"{files[i]}: {err.decode('utf-8', 'replace')}")
                        else:
                            scores.setdefault(files[i], float(res.as_numpy(SCORE).reshape(-1)[0]))
                except Exception as e:  # a failed request: counted, the run goes on
                    with lock:
                        answered[0] += 1
                        failures.append(f"{files[i]}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + request_timeout + 5))
    wall = time.perf_counter() - t0
    sent = state["next"]
    return {"requests": len(files), "sent": sent, "answered": answered[0], "lost": sent - answered[0],
            "not_sent": len(files) - sent, "errors": len(failures), "error_examples": failures[:5],
            "wall_s": wall, "images_per_s": (answered[0] - len(failures)) / wall if wall else 0.0,
            **percentiles(latencies), "scores": scores}


def run_local(bundle: str | None, files: list[str], timeout: float) -> dict:
    """Local ``icrt score`` (a fresh process, default settings) over the same list: the files are linked under
    distinct names, as icrt drops repeated paths."""
    with tempfile.TemporaryDirectory(prefix="serve-load-local-") as d:
        links = []
        for i, f in enumerate(files):
            link = os.path.join(d, f"{i:06d}{os.path.splitext(f)[1]}")
            os.symlink(os.path.abspath(f), link)
            links.append(link)
        out = os.path.join(d, "scores.jsonl")
        cmd = [sys.executable, "-m", "icrt.runtime.cli", "score", d, "--format", "jsonl", "-o", out]
        if bundle:
            cmd += ["-m", bundle]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        recs = [json.loads(line) for line in open(out)] if os.path.exists(out) else []
    by_link = {os.path.basename(r["image"]): r for r in recs}
    scores = {}
    for i, f in enumerate(files):
        r = by_link.get(os.path.basename(links[i]))
        if r and "score" in r:
            scores.setdefault(f, r["score"])
    ok = sum("score" in r for r in recs)
    return {"images": len(files), "scored": ok, "errors": len(recs) - ok, "returncode": proc.returncode,
            "wall_s": wall, "images_per_s": ok / wall if wall else 0.0, "scores": scores,
            "stderr_tail": proc.stderr[-500:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", metavar="BUNDLE", help="bundle (default: the bundled default model)")
    ap.add_argument("--images", default=os.path.join(ROOT, "examples"), help="image file, folder or glob (cycled)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http")
    ap.add_argument("--url", help="an icrt server already running (its own settings apply; no local server started)")
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-queue-delay-us", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads per server instance")
    ap.add_argument("--warmup", type=int, default=20, help="requests before timing")
    ap.add_argument("--time-limit", type=float, default=900.0, help="seconds for the load phase at most")
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--target-ratio", type=float, default=0.7)
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--out", default=os.path.join("runs", "serve_load"))
    args = ap.parse_args(argv)
    if not (1 <= args.clients <= 256 and 1 <= args.requests <= 1_000_000):
        ap.error("--clients in [1, 256], --requests in [1, 1000000]")

    files = image_list(args.images, args.requests)
    report = {"settings": {k: v for k, v in vars(args).items()}, "cpu": {**cpu_facts(), "machine": platform.machine()},
              "unique_images": len(set(files))}
    print(f"serve_load: {args.requests} requests from {args.clients} clients over {args.protocol}; "
          f"{len(set(files))} distinct images; CPU {report['cpu'].get('model')} x{report['cpu']['cpus']} "
          f"({', '.join(report['cpu'].get('simd', []))})", flush=True)

    from icrt.runtime.serving.process import ServerProcess

    server = None
    url = args.url
    if not url:
        serve_args = ["--instances", args.instances, "--max-batch", args.max_batch, "--max-queue-delay-us",
                      args.max_queue_delay_us]
        if args.threads:
            serve_args += ["--threads", args.threads]
        if args.model:
            serve_args += ["-m", args.model]
        server = ServerProcess(serve_args, cwd=ROOT).start()
    try:
        if server:
            t0 = time.perf_counter()
            server.wait_ready(180)
            report["server_start_s"] = time.perf_counter() - t0
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
        warm = run_load(url, args.protocol, files[:args.warmup], min(args.clients, 4), 120, args.request_timeout)
        report["load_average_before"] = load_average()
        print(f"serve_load: server at {url}; warm-up {warm['answered']} requests; timing...", flush=True)
        report["server"] = run_load(url, args.protocol, files, args.clients, args.time_limit, args.request_timeout)
        report["load_average_after"] = load_average()
    finally:
        if server:
            report["server_exit_code"] = server.stop()
            report["leftover_processes"] = server.leftovers()
            server.kill_leftovers()
    if not args.skip_local:
        print("serve_load: local icrt score over the same images...", flush=True)
        report["local"] = run_local(args.model, files, timeout=max(600.0, args.time_limit))
        report["load_average_local"] = load_average()

    s = report["server"]
    sscores, lscores = s.pop("scores"), report.get("local", {}).pop("scores", {})
    common = [f for f in sscores if f in lscores]
    report["max_abs_diff_vs_local"] = max((abs(sscores[f] - lscores[f]) for f in common), default=None)
    report["compared_images"] = len(common)
    local_rate = report.get("local", {}).get("images_per_s")
    report["ratio"] = s["images_per_s"] / local_rate if local_rate else None
    report["targets_met"] = bool(s["errors"] == 0 and s["lost"] == 0 and s["not_sent"] == 0
                                 and report["ratio"] is not None and report["ratio"] >= args.target_ratio)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "serve_load.json"), report)

    rows = [("server requests sent / answered / lost", f"{s['sent']} / {s['answered']} / {s['lost']}"
             + (f" ({s['not_sent']} not sent: time limit)" if s["not_sent"] else "")),
            ("server errors", str(s["errors"]) + (f"  e.g. {s['error_examples'][0]}" if s["error_examples"] else "")),
            ("latency p50 / p90 / p99", f"{s.get('p50_ms', 0):.0f} / {s.get('p90_ms', 0):.0f} / {s.get('p99_ms', 0):.0f} ms"),
            ("server throughput", f"{s['images_per_s']:.1f} images/s ({s['wall_s']:.1f} s)")]
    if "local" in report:
        loc = report["local"]
        rows.append(("local icrt score", f"{loc['images_per_s']:.1f} images/s ({loc['wall_s']:.1f} s, "
                                         f"{loc['errors']} errors)"))
        rows.append(("server / local", f"{report['ratio']:.2f} (target >= {args.target_ratio})"))
        if report["max_abs_diff_vs_local"] is not None:
            rows.append(("max |server - local| score", f"{report['max_abs_diff_vs_local']:.2e} over "
                                                       f"{len(common)} images"))
    if server:
        rows.append(("server exit / leftover processes", f"{report['server_exit_code']} / "
                                                         f"{len(report['leftover_processes'])}"))
    rows.append(("load average before / after / local", f"{report.get('load_average_before')} / "
                                                         f"{report.get('load_average_after')} / "
                                                         f"{report.get('load_average_local')}"))
    rows.append(("targets met", "yes" if report["targets_met"] else "no"))
    w = max(len(r[0]) for r in rows)
    print("\n".join(f"{k:<{w}}  {v}" for k, v in rows))
    print(os.path.join(args.out, "serve_load.json"))
    return 0 if report["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
