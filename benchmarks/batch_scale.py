"""Throughput and peak memory of ``icrt score`` vs ``icrt batch`` (local runner, Ray with 1 and 2 workers).

    python -m benchmarks.batch_scale [--sizes 1132,2264] [--images DIR] [--out runs/batch_scale]
        [--configs score,local,ray1,ray2] [-m BUNDLE]

The same images go through every configuration, each in a fresh process (``python -m runtime.cli ...``):

- ``score``: ``icrt score DIR --format jsonl -o FILE``;
- ``local``: ``icrt batch DIR --out OUT`` (the runtime's Scorer, parts written as they come);
- ``ray1`` / ``ray2``: ``icrt batch DIR --out OUT --runner ray --workers 1|2`` (a local Ray started and shut down
  by the command: its start is part of the time).

Images: ``../shared/data/savoias/images`` when present (1,132 Savoias JPEGs), else generated JPEGs of
Savoias-like sizes; a size larger than the set repeats it under new names (symbolic links in a temporary folder),
so that two sizes show whether memory grows with the number of images. Model: the default bundle (or ``-m``).

For each run: wall time, images/s (end to end: process start to exit, model and Ray start included), for Ray also
images/s after the first rows came back (Ray and actor start-up excluded), and the peak memory of the process tree
(the command and every process under it: Ray's GCS, raylet and workers), sampled every second (psutil; densely in
the first second), both as the sum of RSS (shared pages counted in each process) and of PSS (shared pages split
among their users). The kernel's own high-water mark of the command (``wait4``) is a floor for the RSS sum and is
recorded as ``max_process_rss_mb``; PSS is ``null`` when the run ended before a sample. Writes
``OUT/batch_scale.json`` and ``OUT/batch_scale.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

SAVOIAS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "savoias",
                       "images")
# Savoias-like sizes (width, height): its photos are mostly 500-1000 px on the long side
SIZES = [(768, 512), (512, 768), (640, 480), (1024, 683), (500, 419), (768, 483), (683, 1024), (800, 600)]
CONFIGS = {
    "score": ["score", "{images}", "--format", "jsonl", "-o", "{out}/scores.jsonl"],
    "local": ["batch", "{images}", "--out", "{out}/batch"],
    "ray1": ["batch", "{images}", "--out", "{out}/batch", "--runner", "ray", "--workers", "1"],
    "ray2": ["batch", "{images}", "--out", "{out}/batch", "--runner", "ray", "--workers", "2"],
}


def generated(folder: str, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        small = rng.integers(0, 256, (max(2, h // (4 + i % 24)), max(2, w // (4 + i % 24)), 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        path = os.path.join(folder, f"gen{i:05d}.jpg")
        img.save(path, quality=90)
        out.append(path)
    return out


def source_images(images: str | None, tmp: str, n: int) -> list[str]:
    folder = images or (SAVOIAS if os.path.isdir(SAVOIAS) else None)
    if folder:
        from icrt.runtime.scoring.inputs import list_folder
        found = list_folder(folder, recursive=True)
        if found:
            return found
    return generated(os.path.join(tmp, "generated"), n)


def image_set(files: list[str], folder: str, n: int) -> str:
    """``folder`` with n symbolic links to ``files`` (repeated under new names when n is larger)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        src = os.path.abspath(files[i % len(files)])
        os.symlink(src, os.path.join(folder, f"{i:06d}{os.path.splitext(src)[1].lower() or '.jpg'}"))
    return folder


# --- memory of a process tree (psutil) ------------------------------------------------------------------------


def _tree(root: int) -> list:
    """The process ``root`` and its descendants (psutil.Process objects; empty when it is gone)."""
    import psutil

    try:
        p = psutil.Process(root)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def _memory(p) -> tuple[int, int]:
    """(RSS, PSS) in bytes of one process (0, 0 when it is gone; PSS is Linux's, else RSS)."""
    import psutil

    try:
        m = p.memory_full_info()
    except psutil.Error:
        return 0, 0
    return m.rss, getattr(m, "pss", m.rss)


def _by_name(procs, mem) -> dict:
    """PSS in MB summed by process name (Ray's processes name themselves: ray::IDLE, ray::MapWorker(...), ...)."""
    import psutil

    out = {}
    for p, (_, pss) in zip(procs, mem):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        name = cmd[0] if cmd else p.name()
        name = os.path.basename(name) if not name.startswith("ray::") else name.split(".")[0]
        out[name] = out.get(name, 0) + round(pss / 2**20)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class TreePeak:
    """Samples the summed RSS and PSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, every: float = 1.0):
        self.pid, self.every = pid, every
        self.rss = self.pss = 0
        self.procs = 0
        self.breakdown = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        wait = 0.05  # sample densely at first, so that a short run is seen at all, then every ``every`` seconds
        while not self._stop.is_set():
            procs = _tree(self.pid)
            mem = [_memory(p) for p in procs]
            self.rss = max(self.rss, sum(m[0] for m in mem))
            pss = sum(m[1] for m in mem)
            if pss > self.pss:
                self.pss = pss
                self.breakdown = _by_name(procs, mem)
            self.procs = max(self.procs, len(procs))
            self._stop.wait(wait)
            wait = min(2 * wait, self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_one(spec: str, images: str, n: int, bundle: str | None, work: str) -> dict:
    """``spec``: a config name, optionally followed by more options (``"ray2 --images-per-task 16"``)."""
    name, *more = spec.split()
    out = os.path.join(work, f"{name}-{n}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cmd = [sys.executable, "-m", "icrt.runtime.cli"] + [a.format(images=images, out=out) for a in CONFIGS[name]] + more
    if bundle:
        cmd += ["-m", bundle]
    load0 = os.getloadavg()
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "ICRT_PROGRESS": "0"})
        with TreePeak(proc.pid) as peak:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: the sampler stops first
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    wall = time.monotonic() - t0
    # the kernel's high-water mark of the command and its reaped descendants (KiB on Linux): a floor for the
    # sampled sum, which a run shorter than the sampling steps can miss
    maxrss = usage.ru_maxrss * 1024
    rec = {"config": spec, "images": n, "command": " ".join(cmd[1:]), "exit_code": proc.returncode,
           "wall_s": round(wall, 2), "images_per_s": round(n / wall, 2),
           "peak_rss_mb": round(max(peak.rss, maxrss) / 2**20), "max_process_rss_mb": round(maxrss / 2**20),
           "peak_pss_mb": round(peak.pss / 2**20) if peak.pss else None, "processes": max(peak.procs, 1),
           "at_peak_pss_mb": peak.breakdown,
           "load_before": [round(x, 2) for x in load0],
           "load_after": [round(x, 2) for x in os.getloadavg()]}
    summary = os.path.join(out, "batch", "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            s = json.load(f)
        rec["rows"] = s["counts"]["rows"]
        rec["errors"] = s["counts"]["errors"]
        ray = s.get("ray")
        if ray:
            rec["ray"] = ray
            first = ray.get("first_rows_s")
            t_scoring = s["speed"]["seconds"]
            if first is not None and t_scoring > first:  # rows after the first batch, over the time after it
                rec["after_start_images_per_s"] = round((n - ray.get("first_rows", 0)) / (t_scoring - first), 2)
    elif name == "score":
        with open(os.path.join(out, "scores.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        rec["rows"] = len(rows)
        rec["errors"] = sum("error" in r for r in rows)
    if proc.returncode not in (0, 1):
        rec["stderr"] = stderr[-2000:]
    shutil.rmtree(out, ignore_errors=True)
    return rec


def machine() -> dict:
    from icrt.runtime.base.hardware import cpu_facts

    cpu = cpu_facts()
    info = {"python": platform.python_version(), "cpus": cpu["cpus"], "cpu": cpu["model"], "simd": cpu["simd"]}
    for mod in ("onnxruntime", "ray", "pyarrow", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def table(results: list[dict]) -> str:
    lines = ["| config | images | wall s | images/s | vs score | images/s after start | peak RSS (tree) MB | "
             "peak PSS (tree) MB | processes |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = {}
    for r in results:  # the score run before each, else the first one
        if r["config"] == "score" or r["images"] not in base:
            base[r["images"]] = r["images_per_s"] if r["config"] == "score" else base.get(r["images"])
    base = {k: v for k, v in base.items() if v}
    for r in results:
        ratio = f"{r['images_per_s'] / base[r['images']]:.2f}x" if r["images"] in base else ""
        pss = "" if r["peak_pss_mb"] is None else r["peak_pss_mb"]
        lines.append(f"| {r['config']} | {r['images']} | {r['wall_s']} | {r['images_per_s']} | {ratio} | "
                     f"{r.get('after_start_images_per_s', '')} | {r['peak_rss_mb']} | {pss} | {r['processes']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1132,2264", help="numbers of images, comma-separated")
    ap.add_argument("--images", help="folder of images (default: Savoias when present, else generated JPEGs)")
    ap.add_argument("--configs", default="score,local,ray1,ray2")
    ap.add_argument("-m", "--model", help="bundle (default: the default bundle)")
    ap.add_argument("--out", default="runs/batch_scale")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    configs = [c for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c.split()[0] not in CONFIGS:
            ap.error(f"unknown config {c!r} (known: {', '.join(CONFIGS)})")
    os.makedirs(args.out, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="icrt-batch-scale-") as tmp:
        files = source_images(args.images, tmp, max(sizes))
        for n in sizes:
            images = image_set(files, os.path.join(tmp, f"set-{n}"), n)
            for c in configs:
                rec = run_one(c, images, n, args.model, tmp)
                results.append(rec)
                print(json.dumps(rec), flush=True)
    report = {"machine": machine(), "source": args.images or (SAVOIAS if os.path.isdir(SAVOIAS) else "generated"),
              "results": results}
    from icrt.runtime.base.files import write_json, write_text
    write_json(os.path.join(args.out, "batch_scale.json"), report)
    write_text(os.path.join(args.out, "batch_scale.md"), table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
