"""``icrt bench``: latency of a bundle per backend, precision and batch size, written as report.md,
report.json and latency.png.

Two timings per setting: inference only (a ready batch of model inputs through the backend), and end to
end (decode + preprocess + inference of image files, through the same Scorer the CLI uses). Figures from
the papers are listed next to ours, each with the hardware it was measured on; they are context, not a
like-for-like comparison unless the hardware matches.
"""
from __future__ import annotations

import logging
import os
import platform
import tempfile
import time

import numpy as np

from .errors import UserInputError
from .files import atomic_path, write_json, write_text

logger = logging.getLogger("runtime.bench")

REPORTED = [
    {"model": "CM-SSA", "ms": 35.43, "hardware": "NVIDIA V100", "input": "512x512", "source": "CM-SSA paper"},
    {"model": "D2S-R18", "ms": 4.573, "hardware": "NVIDIA RTX 3090", "input": "512x512", "source": "D2S paper"},
    {"model": "D2S-R50", "ms": 10.738, "hardware": "NVIDIA RTX 3090", "input": "512x512", "source": "D2S paper"},
    {"model": "ICNet", "ms": 9.369, "hardware": "NVIDIA RTX 3090", "input": "512x512", "source": "D2S paper"},
    {"model": "ICNet", "ms": 4.56, "hardware": "NVIDIA V100 (CM-SSA paper's comparison table)", "input": "512x512",
     "source": "CM-SSA paper"},
    {"model": "TOPIQ", "ms": 14.43, "hardware": "NVIDIA V100 (CM-SSA paper's comparison table)", "input": "512x512",
     "source": "CM-SSA paper"},
]


def stats_ms(seconds) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "min_ms": float(ms.min()), "n": int(len(ms))}


def gpu_names() -> list[str]:
    """The NVIDIA GPUs NVML sees (nvidia-ml-py, in the ``[gpu]`` / ``[trt]`` extras; none without it, or on a
    Jetson, which has no NVML)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        return [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:
        return []
    finally:
        pynvml.nvmlShutdown()


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip().strip("\0").strip()
    except OSError:
        return None


def jetson_info() -> dict | None:
    """On a Jetson (None elsewhere): board, L4T release, power mode (``nvpmodel -q``) and whether the clocks are
    pinned, as ``sudo jetson_clocks`` pins them (each clock's minimum raised to its maximum; read from sysfs,
    no sudo needed). Benchmark figures on a Jetson mean little without these. Hand-written: no library reads
    L4T's power mode or devfreq clocks (jtop needs its own root service)."""
    import glob
    import shutil
    import subprocess

    release = _read("/etc/nv_tegra_release")
    if release is None:
        return None
    info = {"board": _read("/proc/device-tree/model"), "l4t": release.splitlines()[0] if release else release}
    if shutil.which("nvpmodel"):
        try:
            out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout
            lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
            mode = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("NV Power Mode")), None)
            info["power_mode"] = mode + (f" (mode {lines[-1]})" if mode and lines[-1].isdigit() else "") if mode else None
        except (OSError, subprocess.SubprocessError):
            info["power_mode"] = None
    pinned = []
    for d in sorted(glob.glob("/sys/class/devfreq/*")):
        if any(k in os.path.basename(d) for k in ("gpu", "ga10b", "gv11b", "gp10b")):
            cur, lo, hi = (_read(os.path.join(d, n)) for n in ("cur_freq", "min_freq", "max_freq"))
            if cur and hi and cur.isdigit() and hi.isdigit():
                info["gpu_clock_mhz"], info["gpu_clock_max_mhz"] = int(cur) // 10**6, int(hi) // 10**6
                pinned.append(lo == hi)
            break
    lo, hi = (_read(f"/sys/devices/system/cpu/cpu0/cpufreq/scaling_{n}_freq") for n in ("min", "max"))
    if lo and hi:
        pinned.append(lo == hi)
    info["clocks_pinned"] = all(pinned) if pinned else None  # True: as after sudo jetson_clocks
    return info


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("icrt", "numpy", "pillow", "onnxruntime", "onnxruntime-gpu", "tensorrt", "cuda-python", "pycuda"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    from .cpu import cpu_facts

    cpu = cpu_facts()
    out = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu["model"],
           "cpu_count": cpu["cpus"], "cpu_cores": cpu["cores"], "usable_cpus": cpu["usable_cpus"],
           "cpu_simd": cpu["simd"], "gpus": gpu_names(), "versions": versions,
           "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    jetson = jetson_info()
    if jetson is not None:
        out["jetson"] = jetson
    return out


def synthetic_images(folder: str, prep, n: int = 4) -> list[str]:
    """JPEG files of textured noise sized like typical inputs, so that decoding is part of end to end."""
    from PIL import Image

    rng = np.random.default_rng(0)
    side = (prep.size, prep.size) if prep.resize == "square" else (640, 480)
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, (side[1] // 8, side[0] // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(side, Image.Resampling.BICUBIC)
        p = os.path.join(folder, f"synthetic-{i}.jpg")
        img.save(p, quality=90)
        paths.append(p)
    return paths


def time_calls(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_backend(manifest, backend, image_paths, batch_sizes, warmup, iters) -> list[dict]:
    """Inference-only and end-to-end timings of one opened backend."""
    from .preprocess import load_for_model, to_model_input
    from .scorer import Scorer

    prep = manifest.preprocessing
    inputs = [to_model_input(load_for_model(p, prep)[0], prep)[0] for p in image_paths]
    per_image = float(np.mean([len(x) for x in inputs]))
    pool = np.concatenate(inputs)
    rows = []
    for b in batch_sizes:
        reps = -(-b // len(pool))
        batch = np.ascontiguousarray(np.concatenate([pool] * reps)[:b])
        st = stats_ms(time_calls(lambda batch=batch: backend.run(batch), warmup, iters))
        images_per_batch = b / per_image
        row = {"backend": backend.name, "precision": backend.precision, "batch_size": b, "device": backend.device,
               "file": os.path.basename(backend.file), **st,
               "per_image_ms": st["mean_ms"] / images_per_batch, "images_per_s": 1000.0 * images_per_batch / st["mean_ms"],
               "patches_per_s": 1000.0 * b / st["mean_ms"], "inputs_per_image": per_image}
        # end to end: the CLI's path (decode + preprocess + batched inference) over b images
        scorer = Scorer(manifest, backend, batch_size=b)
        # a stream of images (at least 4 batches), so that decoding overlaps inference as in a long run
        files = [image_paths[i % len(image_paths)] for i in range(max(1, 4 * round(images_per_batch), 16))]
        e2e = stats_ms(time_calls(lambda s=scorer, f=files: s.score_many(f), 1, max(3, iters // 4)))
        row.update(e2e_ms_per_image=e2e["mean_ms"] / len(files), e2e_images_per_s=1000.0 * len(files) / e2e["mean_ms"],
                   e2e_images=len(files))
        rows.append(row)
    return rows


def run_bench(bundle: str, backends=("auto",), precisions=None, batch_sizes=(1, 8), warmup: int = 3, iters: int = 20,
              images=None, report_dir: str = "bench-report", threads: int | None = None) -> dict:
    """Time every backend x precision x batch size and write the report into ``report_dir``; the report.

    ``backends``: registered names or ``auto``; ``precisions``: default every precision in the bundle. A setting
    that cannot run here (BackendError, or a precision the bundle lacks) is skipped with its reason. Progress
    goes to the ``runtime.bench`` logger."""
    from .backends import BackendError, open_backend
    from .inputs import collect
    from .manifest import load_manifest

    manifest = load_manifest(bundle)
    precisions = list(precisions or manifest.precisions())
    results, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="icrt-bench-") as tmp:
        if images:
            paths = collect([images] if isinstance(images, str) else images, recursive=True)[:16]
        else:
            paths = synthetic_images(tmp, manifest.preprocessing)
        if not paths:
            raise UserInputError(f"no images found in {images}")
        for be in backends:
            for prec in precisions:
                try:
                    backend = open_backend(manifest, be, prec, threads=threads)
                except BackendError as e:  # cannot run here, or the bundle lacks it (a broken bundle is raised)
                    skipped.append({"backend": be, "precision": prec, "reason": str(e)})
                    logger.warning(f"skipped {be}/{prec}: {e}")
                    continue
                logger.info(f"timing {backend.name}/{prec} ({backend.device}) ...")
                for row in bench_backend(manifest, backend, paths, list(batch_sizes), warmup, iters):
                    results.append(row)
                    logger.info(f"  batch {row['batch_size']:>3}: {row['mean_ms']:.2f} ms/batch, "
                                f"{row['per_image_ms']:.2f} ms/image, "
                         f"{row['images_per_s']:.1f} images/s; end to end {row['e2e_ms_per_image']:.2f} ms/image")
        report = {"bundle": os.path.abspath(bundle), "model": manifest.name, "kind": manifest.kind,
                  "input_size": manifest.input_size, "preprocessing": manifest.preprocessing.to_dict(),
                  "images": [os.path.basename(p) for p in paths] if images else f"{len(paths)} synthetic JPEGs",
                  "warmup": warmup, "iters": iters, "machine": machine(), "results": results, "skipped": skipped,
                  "reported": REPORTED, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_report(report, report_dir)
    return report


def write_report(report: dict, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "report.json"), report)
    write_text(os.path.join(folder, "report.md"), markdown(report))
    if has_matplotlib():
        plot(report, os.path.join(folder, "latency.png"))
    else:
        logging.getLogger("runtime.bench").warning("latency.png not drawn: it needs matplotlib "
                                                   "(the [plots] extra); report.md and report.json are written")


def _jetson_line(j: dict) -> str:
    pinned = {True: "pinned (sudo jetson_clocks)", False: "not pinned (run sudo jetson_clocks first)"}.get(
        j.get("clocks_pinned"), "unknown")
    gpu = f", GPU clock {j['gpu_clock_mhz']} of {j['gpu_clock_max_mhz']} MHz" if "gpu_clock_mhz" in j else ""
    return (f"- Jetson: {j.get('board') or 'unknown board'}, {j.get('l4t')}; power mode {j.get('power_mode') or 'unknown'}"
            f" (nvpmodel -q); clocks {pinned}{gpu}")


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# icrt bench: {r['model']} ({r['kind']}, input {r['input_size']})", "",
             f"- machine: {m['cpu']}, {m['usable_cpus']} usable CPUs; GPU: {', '.join(m['gpus']) or 'none'}",
             f"- {m['platform']}, Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             *([_jetson_line(m["jetson"])] if m.get("jetson") else []),
             f"- load average at start: {m['load_average']}", f"- images: {r['images']}; warmup {r['warmup']}, "
             f"iterations {r['iters']}", f"- {r['time']}", "",
             "Inference only: one batch of model inputs through the backend. End to end: decode + preprocess + "
             "inference of image files.", "",
             "| backend | precision | device | batch | mean ms | p50 ms | p90 ms | p99 ms | ms/image | images/s | "
             "patches/s | e2e ms/image | e2e images/s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["results"]:
        lines.append(f"| {x['backend']} | {x['precision']} | {x['device']} | {x['batch_size']} | {x['mean_ms']:.2f} | "
                     f"{x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | {x['per_image_ms']:.2f} | "
                     f"{x['images_per_s']:.1f} | {x['patches_per_s']:.1f} | {x['e2e_ms_per_image']:.2f} | "
                     f"{x['e2e_images_per_s']:.1f} |")
    for s in r["skipped"]:
        lines.append(f"\nSkipped {s['backend']}/{s['precision']}: {s['reason']}")
    here = f"{m['cpu']}" + (f" / {m['gpus'][0]}" if m["gpus"] else "")
    lines += ["", "## Compared with reported figures", "",
              "Reported latencies are per image at batch 1 on the hardware named; ours are on this machine. "
              "Different hardware: read the ratios as context, not as a like-for-like comparison.", "",
              "| model | ms/image | hardware | source |", "|---|---:|---|---|"]
    for x in r["results"]:
        if x["batch_size"] == 1:
            lines.append(f"| {r['model']} ({x['backend']} {x['precision']}) | {x['per_image_ms']:.2f} | {here} | this run |")
    for ref in r["reported"]:
        lines.append(f"| {ref['model']} | {ref['ms']} | {ref['hardware']}, {ref['input']} | {ref['source']} |")
    return "\n".join(lines) + "\n"


def has_matplotlib() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ImportError:
        return False


def plot(r: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    series = {}
    for x in r["results"]:
        series.setdefault(f"{x['backend']} {x['precision']}", []).append(x)
    for name, rows in series.items():
        rows = sorted(rows, key=lambda x: x["batch_size"])
        bs = [x["batch_size"] for x in rows]
        ax1.plot(bs, [x["per_image_ms"] for x in rows], marker="o", label=f"{name} (inference)")
        ax1.plot(bs, [x["e2e_ms_per_image"] for x in rows], marker="x", linestyle="--", label=f"{name} (end to end)")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("batch size (model inputs)")
    ax1.set_ylabel("ms per image")
    ax1.set_title(f"{r['model']} on {r['machine']['cpu'][:40]}", fontsize=9)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    labels = [f"{r['model']} {x['backend']} {x['precision']} (this machine)" for x in r["results"] if x["batch_size"] == 1]
    values = [x["per_image_ms"] for x in r["results"] if x["batch_size"] == 1]
    labels += [f"{ref['model']} ({ref['hardware'].split(' (')[0]}, reported)" for ref in r["reported"]]
    values += [ref["ms"] for ref in r["reported"]]
    ax2.barh(range(len(values)), values, color=["tab:blue"] * (len(labels) - len(r["reported"])) +
             ["tab:gray"] * len(r["reported"]))
    ax2.set_yticks(range(len(values)), labels, fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("ms per image, batch 1")
    ax2.set_title("this run vs reported (hardware differs)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
