"""``icrt doctor``: what this machine can do with icrt, as facts (:func:`facts`) and as text (:func:`render`).

Everything is read without loading a model: package versions from their metadata, onnxruntime's execution
providers, and from ``icrt.runtime.base.hardware`` the CPU's int8 and bf16 features, the GPU (NVML) and a Jetson's
power mode. Each fact that limits what icrt can do comes with a ``problem`` line.

The checks of installed packages that other commands make too are ``runtime.base.packages``'.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import sys

from icrt.runtime.base.packages import onnxruntime_shadowed, serve_problem, version

# (distribution, what icrt uses it for), in the order shown
PACKAGES = (
    ("numpy", "arrays (runtime)"), ("pillow", "decoding, heatmaps (runtime)"),
    ("onnxruntime", "CPU inference (runtime)"), ("onnxruntime-gpu", "CUDA / TensorRT providers ([gpu])"),
    ("psutil", "cores, process trees (runtime)"), ("tqdm", "progress bars (runtime)"),
    ("shtab", "icrt completion (runtime)"), ("tensorrt", "TensorRT backend, icrt build ([trt]; JetPack)"),
    ("cuda-python", "CUDA bindings for TensorRT ([trt])"), ("pycuda", "CUDA bindings for TensorRT (alternative)"),
    ("nvidia-ml-py", "GPU names (NVML; [gpu], [trt])"), ("nvidia-pytriton", "icrt serve ([serve])"),
    ("tritonclient", "icrt score --url ([serve])"), ("ray", "icrt batch --runner ray ([scale])"),
    ("pyarrow", "icrt batch, icrt report on Parquet ([scale])"), ("matplotlib", "icrt bench's plot ([plots])"),
    ("py-cpuinfo", "the CPU's model name ([bench])"), ("torch", "icrt train, icrt export ([train])"),
)
INT8_SPEED = {  # the CPU feature that decides onnxruntime's int8 speed, best first
    "amx_int8": "AMX: int8 fastest", "avx512_vnni": "AVX-512 VNNI: int8 fast", "avx_vnni": "AVX-VNNI: int8 fast",
    "arm_i8mm": "Arm i8mm: int8 fast", "arm_dotprod": "Arm dot product: int8 fast",
}
def _providers() -> tuple[list[str], str | None]:
    try:
        from icrt.runtime.backends.onnxruntime import import_onnxruntime

        return list(import_onnxruntime().get_available_providers()), None
    except Exception as e:  # a broken install: said, not raised
        return [], f"onnxruntime does not load: {' '.join(str(e).split())[:200]}"


def _tritonserver() -> str | None:
    """PyTriton's tritonserver binary, when its wheel has one."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "tritonserver", "bin", "tritonserver")
        if os.path.isfile(path):
            return path
    return None


def _default_bundle() -> dict:
    from icrt.runtime.base.errors import IcrtError

    try:
        from icrt.runtime.bundle.defaults import default_bundle
        from icrt.runtime.bundle.manifest import load_manifest

        m = load_manifest(default_bundle())
        problem = m.verify_files()
    except IcrtError as e:
        return {"bundle": None, "problem": str(e)}
    return {"bundle": m.root, "name": m.name, "precisions": m.precisions(), "files_checked": len(m.sha256),
            "problem": problem}


def facts() -> dict:
    """Everything ``icrt doctor`` reports, as plain data (``icrt doctor --json``)."""
    from icrt.runtime.base.hardware import cpu_facts, gpu_names, jetson_info
    from icrt.runtime.base.install import source
    from icrt.runtime.base.version import __version__

    problems = []
    packages = {dist: version(dist) for dist, _ in PACKAGES}
    providers, ort_problem = _providers() if packages["onnxruntime"] or packages["onnxruntime-gpu"] else ([], None)
    if ort_problem:
        problems.append(ort_problem)
    if not (packages["onnxruntime"] or packages["onnxruntime-gpu"]):
        problems.append("onnxruntime is not installed: nothing can score here (pip install onnxruntime)")
    shadow = onnxruntime_shadowed()
    if shadow:
        problems.append(shadow)
    gpus = gpu_names()
    gpu_providers = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    if gpus and not gpu_providers and not packages["tensorrt"]:
        problems.append(f"a GPU is here ({gpus[0]}) but neither onnxruntime's GPU providers nor TensorRT: scoring runs "
                        "on the CPU (the [gpu] or [trt] extra)")
    if packages["tensorrt"] and not (packages["cuda-python"] or packages["pycuda"]):
        problems.append("TensorRT is installed without CUDA bindings: the TensorRT backend needs cuda-python or pycuda "
                        "(the [trt] extra)")
    cpu = cpu_facts()
    simd = cpu["simd"]
    int8 = next((text for flag, text in INT8_SPEED.items() if flag in simd), None)
    if int8 is None:
        int8 = ("AVX2 without VNNI: int8 runs on 16-bit pair sums, about as fast as fp32 or a little faster"
                if "avx2" in simd else "no int8 dot-product instructions: int8 brings little speed here")
    serve = None
    if packages["nvidia-pytriton"]:
        serve = {"tritonserver": _tritonserver(), "problem": serve_problem()}
        if serve["problem"]:
            problems.append(serve["problem"])
        elif serve["tritonserver"] is None:
            problems.append("PyTriton is installed without its tritonserver binary: icrt serve cannot start")
    jetson = jetson_info()
    bundle = _default_bundle()
    if bundle.get("problem"):
        problems.append(f"default model: {bundle['problem']}")
    return {
        "icrt": {"version": __version__, "runtime": os.path.dirname(os.path.abspath(__file__)), "source": source()},
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "packages": packages,
        "onnxruntime": {"providers": providers, "gpu_providers": gpu_providers, "both_builds_installed": bool(shadow)},
        "cpu": {"model": cpu["model"], "cores": cpu["cores"], "cpus": cpu["cpus"], "usable_cpus": cpu["usable_cpus"],
                "features": simd, "int8": int8},
        "gpus": gpus,
        "jetson": jetson,
        "serve": serve,
        "default_model": bundle,
        "problems": problems,
    }


def render(f: dict) -> str:
    """The facts as lines a person reads, problems last."""
    from icrt.runtime.base.text import printable

    p = f["packages"]
    lines = [f"icrt {f['icrt']['version']}  ({f['icrt']['runtime']}"
             + (f"; pip source {f['icrt']['source']}" if f["icrt"]["source"] else "") + ")",
             f"python       {f['python']['version']}  {f['python']['executable']}  ({f['python']['platform']})"]
    ort = f["onnxruntime"]
    builds = " + ".join(d for d in ("onnxruntime", "onnxruntime-gpu") if p[d]) or "not installed"
    lines.append(f"onnxruntime  {p['onnxruntime-gpu'] or p['onnxruntime'] or '-'} ({builds}); providers: "
                 f"{', '.join(ort['providers']) or 'none'}")
    cpu = f["cpu"]
    lines.append(f"CPU          {cpu['model']}: {cpu['cores']} cores, {cpu['cpus']} CPUs ({cpu['usable_cpus']} usable); "
                 f"{' '.join(cpu['features']) or 'no int8 features'}; {cpu['int8']}")
    lines.append(f"GPU          {', '.join(f['gpus']) if f['gpus'] else 'none seen (NVML)'}")
    trt = p["tensorrt"]
    cuda = ", ".join(f"{d} {p[d]}" for d in ("cuda-python", "pycuda") if p[d]) or "no CUDA bindings"
    lines.append(f"TensorRT     {trt or 'not installed'}; {cuda}")
    j = f["jetson"]
    if j:
        lines.append(f"Jetson       {j.get('board') or 'unknown board'}, {j.get('l4t')}; power mode "
                     f"{j.get('power_mode') or 'unknown'}; clocks pinned: {j.get('clocks_pinned')}")
    s = f["serve"]
    serve = (f"PyTriton {p['nvidia-pytriton']}, tritonserver {'found' if s['tritonserver'] else 'missing'}" if s
             else "PyTriton not installed")
    lines.append(f"serving      {serve}; tritonclient {p['tritonclient'] or 'not installed'}")
    lines.append(f"scale        ray {p['ray'] or 'not installed'}; pyarrow {p['pyarrow'] or 'not installed'}")
    lines.append("other        " + "; ".join(f"{d} {p[d] or 'not installed'}"
                                             for d in ("pillow", "numpy", "tqdm", "shtab", "matplotlib", "torch")))
    b = f["default_model"]
    if b.get("bundle"):
        lines.append(f"default      {b['name']} ({', '.join(b['precisions'])}); "
                     + (f"{b['files_checked']} file(s) match their SHA-256" if b["files_checked"]
                        else "no checksums recorded"))
    lines += [f"problem      {text}" for text in f["problems"]] or ["problems     none found"]
    return "\n".join(printable(line) for line in lines) + "\n"
