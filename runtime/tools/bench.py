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
import re
import tempfile
import time

import numpy as np

from icrt.runtime.base.errors import UserInputError
from icrt.runtime.base.files import folder_problem, json_ready, owned_problem, write_owned
from icrt.runtime.base.text import printable

logger = logging.getLogger("icrt.runtime.tools.bench")

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


def machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("icrt", "numpy", "pillow", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "cuda-python",
                "pycuda"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    from icrt.runtime.base.hardware import cpu_facts, gpu_names, jetson_info

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


def rounds(calls: dict, n: int, warmup: int = 1) -> dict:
    """name -> seconds of each call per round: every round calls each callable once (in order), so that the load of
    a shared machine falls on all of them alike and their ratios hold (``warmup`` untimed rounds first)."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    out = {k: [] for k in calls}
    for _ in range(n):
        for k, fn in calls.items():
            t = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t)
    return out


def _inputs(manifest, backend, image_paths) -> tuple[np.ndarray, float]:
    """The model inputs of the images as this backend takes them (pixels or floats), and inputs per image."""
    from icrt.runtime.backends import takes_pixels
    from icrt.runtime.scoring.preprocess import load_resized, to_model_input

    prep = manifest.preprocessing
    pixels = takes_pixels(backend, prep)
    inputs = [to_model_input(load_resized(p, prep)[0], prep, pixels)[0] for p in image_paths]
    return np.concatenate(inputs), float(np.mean([len(x) for x in inputs]))


def bench_batch(manifest, backends, image_paths, b: int, warmup: int, iters: int) -> list[dict]:
    """Inference-only and end-to-end timings of every opened backend at batch size ``b``, interleaved: each round
    runs every backend once, so that a shared machine's load falls on all of them alike (their ratios hold)."""
    from icrt.runtime.scoring.scorer import Scorer

    calls, per_image = {}, []
    for i, backend in enumerate(backends):
        pool, n = _inputs(manifest, backend, image_paths)
        batch = np.ascontiguousarray(np.concatenate([pool] * -(-b // len(pool)))[:b])
        calls[i] = lambda backend=backend, batch=batch: backend.run(batch)
        per_image.append(n)
    times = list(rounds(calls, iters, warmup).values())
    # end to end: the CLI's path (decode + preprocess + batched inference) over a stream of image files, at least 4
    # batches, so that decoding overlaps inference as in a long run
    images_per_batch = b / max(per_image)
    files = [image_paths[i % len(image_paths)] for i in range(max(4 * round(images_per_batch), 16))]
    scorers = [Scorer(manifest, backend, batch_size=b) for backend in backends]
    for s in scorers:
        s.score_many(files[:b])
    e2e = list(rounds({i: (lambda s=s: s.score_many(files)) for i, s in enumerate(scorers)}, max(3, iters // 4),
                      warmup=0).values())
    rows = []
    for backend, t, e, n in zip(backends, times, e2e, per_image):
        st = stats_ms(t)
        per_batch = b / n
        rate = [len(files) / x for x in e]
        rows.append({"backend": backend.name, "engine_version": backend.engine_version()
                     if hasattr(backend, "engine_version") else None, "precision": backend.precision, "batch_size": b,
                     "device": backend.device, "file": os.path.basename(backend.file), **st,
                     "per_image_ms": st["mean_ms"] / per_batch, "images_per_s": 1000.0 * per_batch / st["mean_ms"],
                     "patches_per_s": 1000.0 * b / st["mean_ms"], "inputs_per_image": n,
                     "e2e_ms_per_image": 1000.0 * float(np.mean(e)) / len(files),
                     "e2e_images_per_s": len(files) / float(np.mean(e)), "e2e_images_per_s_min": min(rate),
                     "e2e_images_per_s_max": max(rate), "e2e_images": len(files)})
        rows[-1]["e2e_vs_inference"] = rows[-1]["e2e_images_per_s"] / rows[-1]["images_per_s"]
    return rows


def agreement(scores, reference) -> dict:
    """Spearman's rank correlation and the largest and mean absolute difference of ``scores`` against ``reference``
    (the runtime's metrics; images that either failed are left out); SRCC is None for fewer than 3 images or
    constant scores."""
    import icrt.runtime.tools.metrics as metrics

    pairs = [(a, b) for a, b in zip(scores, reference) if a is not None and b is not None]
    if not pairs:
        return {"n": 0, "srcc": None, "max_abs_diff": None, "mean_abs_diff": None}
    ref, got = zip(*pairs)
    out = metrics.agreement(ref, got)
    if len(pairs) < 3:
        out["srcc"] = None
    return out


def image_scores(manifest, backend, image_paths) -> list:
    """Each image's score through the Scorer (None for a failure)."""
    from icrt.runtime.scoring.scorer import Scorer

    return [r.get("score") for r in Scorer(manifest, backend).score_many(image_paths)]


def run_bench(options, backends=("auto",), precisions=None, batch_sizes=(1, 8), warmup: int = 3, iters: int = 20,
              images=None, report_dir: str = "bench-report") -> dict:
    """Time every backend x precision x batch size and write the report into ``report_dir``; the report.

    ``options``: a ScorerOptions (its bundle, threads, device, ...); each setting is it with one of ``backends``
    (registered names or ``auto``) and one of ``precisions`` (default every precision in the bundle). A setting
    that cannot run here (BackendError, or a precision the bundle lacks) is skipped with its reason. Every setting
    is opened first and timed interleaved with the others (per batch size), and each one's scores of the images are
    compared with onnxruntime fp32's (``agreement``). Progress goes to the ``runtime.tools.bench`` logger."""
    from icrt.runtime.backends import BackendError, open_backend
    from icrt.runtime.base.hardware import cpu_features, describe
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.scoring.inputs import collect

    problem = report_problem(report_dir)
    if problem:  # before anything is timed: a link or FIFO planted where the report goes is refused
        raise UserInputError(problem)
    bundle = options.bundle()
    manifest = load_manifest(bundle)
    precisions = list(precisions or manifest.precisions())
    results, skipped, opened = [], [], []
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
                    opened.append(open_backend(manifest, options.replace(backend=be, precision=prec)))
                except BackendError as e:  # cannot run here, or the bundle lacks it (a broken bundle is raised)
                    skipped.append({"backend": be, "precision": prec, "reason": str(e)})
                    logger.warning(f"skipped {be}/{prec}: {e}")
        reference, why = None, None
        try:
            fp32 = options.replace(backend="onnxruntime", precision="fp32")
            reference = image_scores(manifest, open_backend(manifest, fp32), paths)
        except BackendError as e:
            why = str(e)
        agree = {}
        for backend in opened:
            key = (backend.name, backend.precision)
            agree[key] = agreement(image_scores(manifest, backend, paths), reference) if reference else None
        flags, cpu = cpu_features(), describe()
        names = ", ".join(f"{b.name}/{b.precision} ({b.device})" for b in opened)
        for b in batch_sizes:
            logger.info(f"timing batch {b}, interleaved: {names} ...")
            for row in bench_batch(manifest, opened, paths, b, warmup, iters) if opened else []:
                row.update(cpu=cpu, cpu_flags=flags, agreement=agree[(row["backend"], row["precision"])])
                results.append(row)
                logger.info(f"  {row['backend']}/{row['precision']} batch {b:>3}: {row['mean_ms']:.2f} ms/batch, "
                            f"{row['per_image_ms']:.2f} ms/image, {row['images_per_s']:.1f} images/s; end to end "
                            f"{row['e2e_images_per_s']:.1f} images/s ({row['e2e_vs_inference']:.2f} x inference)")
        order = {(b.name, b.precision): i for i, b in enumerate(opened)}
        results.sort(key=lambda r: (order[(r["backend"], r["precision"])], batch_sizes.index(r["batch_size"])))
        report = {"bundle": os.path.abspath(bundle), "model": manifest.name, "kind": manifest.kind,
                  "input_size": manifest.input_size, "preprocessing": manifest.preprocessing.to_dict(),
                  "images": [os.path.basename(p) for p in paths] if images else f"{len(paths)} synthetic JPEGs",
                  "warmup": warmup, "iters": iters, "machine": machine(), "cpu": cpu, "cpu_flags": flags,
                  "agreement_reference": "onnxruntime fp32" if reference else f"none ({why})",
                  "results": results, "skipped": skipped, "reported": REPORTED, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_report(report, report_dir)
    return report


REPORT_FILES = ("report.json", "report.md", "latency.png")  # icrt's own names in --report DIR


def report_problem(folder: str) -> str | None:
    """Why the report could not be written into ``folder`` (checked before anything is timed): the folder cannot be
    made or written, or one of :data:`REPORT_FILES` there is a link, a FIFO, a folder or a device (someone else's, in
    a shared folder: icrt never writes through it). None when it can be."""
    problem = folder_problem(folder)
    if problem:
        return f"cannot write the report into --report {printable(folder)}: {problem}"
    for name in REPORT_FILES:
        path = os.path.join(folder, name)
        problem = owned_problem(path)
        if problem:
            return f"cannot write the report into --report {printable(folder)}: {printable(path)} {problem}"
    return None


def write_report(report: dict, folder: str) -> None:
    """report.json, report.md and latency.png in ``folder``, each written atomically and never through a link or
    into a FIFO (``runtime.base.files.write_owned``: the names are icrt's, the folder may be shared); UserInputError
    naming the file when one cannot be written."""
    import json

    os.makedirs(folder, exist_ok=True)
    _write_owned_file(os.path.join(folder, "report.json"), (json.dumps(json_ready(report), indent=2) + "\n").encode())
    _write_owned_file(os.path.join(folder, "report.md"), markdown(report).encode("utf-8", "surrogateescape"))
    if has_matplotlib():
        _write_owned_file(os.path.join(folder, "latency.png"), plot(report))
    else:
        logging.getLogger("icrt.runtime.tools.bench").warning("latency.png not drawn: it needs matplotlib "
                                                   "(the [plots] extra); report.md and report.json are written")


def _write_owned_file(path: str, data: bytes) -> None:
    try:
        write_owned(path, data)
    except OSError as e:
        raise UserInputError(f"cannot write {printable(path)}: {e.strerror or e}") from None


def _jetson_line(j: dict) -> str:
    pinned = {True: "pinned (sudo jetson_clocks)", False: "not pinned (run sudo jetson_clocks first)"}.get(
        j.get("clocks_pinned"), "unknown")
    gpu = f", GPU clock {j['gpu_clock_mhz']} of {j['gpu_clock_max_mhz']} MHz" if "gpu_clock_mhz" in j else ""
    return (f"- Jetson: {j.get('board') or 'unknown board'}, {j.get('l4t')}; power mode {j.get('power_mode') or 'unknown'}"
            f" (nvpmodel -q); clocks {pinned}{gpu}")


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def side_by_side(r: dict) -> list[str]:
    """Per precision and batch size, every backend's ms per image and end-to-end images/s, with the speed-ups of the
    others against the first backend timed (all from the same interleaved rounds)."""
    backends = list(dict.fromkeys(x["backend"] for x in r["results"]))
    if len(backends) < 2:
        return []
    first = backends[0]
    cells = {(x["backend"], x["precision"], x["batch_size"]): x for x in r["results"]}
    head = ["precision", "batch"] + [f"{b} ms/image" for b in backends] + [f"{b} vs {first}" for b in backends[1:]] + \
        [f"{b} e2e images/s" for b in backends] + [f"{b} e2e vs {first}" for b in backends[1:]]
    lines = ["", f"## Side by side (speed-up against {first}; CPU {r['cpu']})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for prec, bs in dict.fromkeys((x["precision"], x["batch_size"]) for x in r["results"]):
        row = [cells.get((b, prec, bs)) for b in backends]
        base = row[0]
        ms = [_fmt(x and x["per_image_ms"], ".2f") for x in row]
        up = [_fmt(base and x and base["per_image_ms"] / x["per_image_ms"], ".2f") for x in row[1:]]
        e2e = [_fmt(x and x["e2e_images_per_s"], ".1f") for x in row]
        e2e_up = [_fmt(base and x and x["e2e_images_per_s"] / base["e2e_images_per_s"], ".2f") for x in row[1:]]
        lines.append("| " + " | ".join([prec, str(bs), *ms, *up, *e2e, *e2e_up]) + " |")
    return lines


# Markdown's own characters, escaped in text from a bundle or the user (a name, a reason) so that it stays text: no
# link, image (a tracking ``![](http://...)``), HTML tag, heading or table cell of its own. No Markdown library is a
# dependency of the runtime, and CommonMark lets a backslash escape any of these.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|!#~&])")


def md(text) -> str:
    """Untrusted text as Markdown text on one line: control characters as ``\\xNN`` (``printable``), then Markdown's
    own characters escaped."""
    return _MARKDOWN.sub(r"\\\1", printable(str(text)))


def markdown(r: dict) -> str:
    m = r["machine"]
    images = ", ".join(r["images"]) if isinstance(r["images"], list) else r["images"]
    lines = [f"# icrt bench: {md(r['model'])} ({md(r['kind'])}, input {r['input_size']})", "",
             f"- machine: {m['cpu']}, {m['usable_cpus']} usable CPUs; GPU: {', '.join(m['gpus']) or 'none'}",
             f"- CPU flags (int8 / bf16 features): {r.get('cpu', '?')}",
             f"- {m['platform']}, Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             *([_jetson_line(m["jetson"])] if m.get("jetson") else []),
             f"- load average at start: {m['load_average']}", f"- images: {md(images)}; warmup {r['warmup']}, "
             f"iterations {r['iters']}, every setting timed in the same interleaved rounds", f"- {r['time']}", "",
             "Inference only: one batch of model inputs through the backend (uint8 pixels for a backend that "
             "normalises in its model, floats otherwise). End to end: decode + preprocess + inference of image "
             "files (min-max over the rounds). Agreement: SRCC and largest |difference| of the images' scores against "
             f"{r.get('agreement_reference', 'onnxruntime fp32')}.", "",
             "| backend | precision | device | batch | mean ms | p50 ms | p90 ms | p99 ms | ms/image | images/s | "
             "patches/s | e2e ms/image | e2e images/s | e2e / inference | SRCC vs ort fp32 | max abs diff | CPU |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for x in r["results"]:
        a = x.get("agreement") or {}
        spread = (f" ({x['e2e_images_per_s_min']:.1f}-{x['e2e_images_per_s_max']:.1f})"
                  if "e2e_images_per_s_min" in x else "")
        lines.append(f"| {x['backend']} {md(x.get('engine_version') or '')} | {x['precision']} | {md(x['device'])} | "
                     f"{x['batch_size']} | {x['mean_ms']:.2f} | "
                     f"{x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} | {x['per_image_ms']:.2f} | "
                     f"{x['images_per_s']:.1f} | {x['patches_per_s']:.1f} | {x['e2e_ms_per_image']:.2f} | "
                     f"{x['e2e_images_per_s']:.1f}{spread} | {_fmt(x.get('e2e_vs_inference'), '.2f')} | "
                     f"{_fmt(a.get('srcc'), '.4f')} | {_fmt(a.get('max_abs_diff'), '.2e')} | {x.get('cpu', '')} |")
    for s in r["skipped"]:
        lines.append(f"\nSkipped {md(s['backend'])}/{md(s['precision'])}: {md(s['reason'])}")
    lines += side_by_side(r)
    here = f"{m['cpu']}" + (f" / {m['gpus'][0]}" if m["gpus"] else "")
    lines += ["", "## Compared with reported figures", "",
              "Reported latencies are per image at batch 1 on the hardware named; ours are on this machine. "
              "Different hardware: read the ratios as context, not as a like-for-like comparison.", "",
              "| model | ms/image | hardware | source |", "|---|---:|---|---|"]
    for x in r["results"]:
        if x["batch_size"] == 1:
            lines.append(f"| {md(r['model'])} ({x['backend']} {x['precision']}) | {x['per_image_ms']:.2f} | {here} | "
                         "this run |")
    for ref in r["reported"]:
        lines.append(f"| {ref['model']} | {ref['ms']} | {ref['hardware']}, {ref['input']} | {ref['source']} |")
    return "\n".join(lines) + "\n"


def has_matplotlib() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ImportError:
        return False


def plot(r: dict) -> bytes:
    """latency.png's bytes. Text from the bundle (its name) and the machine is drawn as it is: mathtext (``$...$``)
    and LaTeX are off, and control characters are shown as ``\\xNN``."""
    import matplotlib
    matplotlib.use("Agg", force=False)

    with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
        return _plot(r)


def _plot(r: dict) -> bytes:
    import io

    from matplotlib.figure import Figure

    model = printable(str(r["model"]))
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
    ax1.set_title(f"{model} on {printable(str(r['machine']['cpu']))[:40]}", fontsize=9)
    ax1.grid(alpha=0.3)
    if series:
        ax1.legend(fontsize=7)
    labels = [f"{model} {x['backend']} {x['precision']} (this machine)" for x in r["results"] if x["batch_size"] == 1]
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
