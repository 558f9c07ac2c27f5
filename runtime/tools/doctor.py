"""``icrt doctor``: what this machine can do with icrt, as facts (:func:`facts`) and as text (:func:`render`).

Package versions come from their metadata; the CPU's int8 and bf16 features, the GPU (NVML, on a time-boxed thread)
and a Jetson's power mode from ``icrt.runtime.base.hardware``. The inference libraries (onnxruntime, OpenVINO,
TensorRT) are imported in child processes with a time limit (:func:`probe`), because an import that fails in any way
or never returns (a CUDA / ABI mismatch) must be a problem line here, not a traceback or a hang of doctor itself; one
more child opens the default model with ``auto`` and says which backend and precision it picks and why (the notes
``auto`` keeps). The private model cache's place and size are shown (``runtime.backends.cache``). Each fact that
limits what icrt can do comes with a ``problem`` line.

The checks of installed packages that other commands make too are ``runtime.base.packages``'.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

from icrt.runtime.base.packages import onnxruntime_shadowed, serve_problem, version

# (distribution, what icrt uses it for), in the order shown
PACKAGES = (
    ("numpy", "arrays (runtime)"), ("pillow", "decoding, heatmaps (runtime)"),
    ("onnxruntime", "CPU inference (runtime)"), ("onnxruntime-gpu", "CUDA / TensorRT providers ([gpu])"),
    ("openvino", "CPU inference, auto's pick on AVX-512 / AMX CPUs ([openvino])"),
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
LIBRARIES = {"onnxruntime": "onnxruntime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}  # module -> name shown
DEFAULT_TIMEOUT = 60.0  # seconds an import or auto's pick may take in its child process

# --- the child processes ---------------------------------------------------------------------------------------

_CHILD = ("import json, sys\n"
          "sys.path[:] = json.loads(sys.argv[1])\n"  # the parent's: the same icrt and packages
          "from icrt.runtime.tools.doctor import child_main\n"
          "child_main(sys.argv[2])\n")


def child_main(task: str) -> None:
    """In a child process: import one inference library (``task`` = its module) or open the default model with
    ``auto`` (``task`` = ``auto``); one JSON line on stdout."""
    try:
        out = _auto() if task == "auto" else _import(task)
    except Exception as e:  # told to the parent as a problem, never a traceback
        out = {"problem": f"{type(e).__name__}: {' '.join(str(e).split())}"[:400]}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def _import(module: str) -> dict:
    from icrt.runtime.backends.base import BackendError

    try:
        if module == "onnxruntime":
            from icrt.runtime.backends.onnxruntime import import_onnxruntime

            ort = import_onnxruntime()
            return {"version": ort.__version__, "providers": list(ort.get_available_providers())}
        if module == "openvino":
            from icrt.runtime.backends.openvino import import_openvino

            return {"version": import_openvino().get_version()}
        from icrt.runtime.backends.tensorrt import _import_tensorrt

        return {"version": str(getattr(_import_tensorrt(), "__version__", "?"))}
    except BackendError as e:
        return {"problem": str(e)}


def _auto() -> dict:
    from icrt.runtime.backends import open_backend
    from icrt.runtime.bundle.defaults import default_bundle
    from icrt.runtime.bundle.manifest import load_manifest
    from icrt.runtime.scoring.options import ScorerOptions

    options = ScorerOptions()
    backend = open_backend(load_manifest(default_bundle()), options)
    d = backend.describe()
    return {"backend": d["backend"], "precision": d["precision"], "device": d["device"], "notes": d["notes"],
            "model_cache": d.get("model_cache")}


def probe(tasks, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """task -> what its child process said (a dict; ``problem`` when it failed, crashed or ran past ``timeout``
    seconds), the children run side by side."""
    children = {}
    for task in tasks:
        children[task] = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(sys.path), task],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, errors="replace")
    deadline = time.monotonic() + timeout
    out = {}
    for task, child in children.items():
        try:
            stdout, stderr = child.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            out[task] = {"problem": f"did not finish in {timeout:g} s (it hangs)", "hung": True}
            continue
        lines = stdout.strip().splitlines()
        try:
            out[task] = json.loads(lines[-1]) if lines else None
        except ValueError:
            out[task] = None
        if not isinstance(out[task], dict):
            last = stderr.strip().splitlines()[-1:] or [f"exit code {child.returncode}"]
            out[task] = {"problem": f"the process ended without an answer ({last[0][:300]})"}
    return out


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


def _libraries(timeout: float, problems: list) -> tuple[dict, dict | None]:
    """({module: {"installed", "version", "problem", ...}}, what auto picks for the default model), each library
    imported and auto run in a child process."""
    from icrt.runtime.backends.base import installed

    present = [m for m in LIBRARIES if installed(m)]
    said = probe([*present, "auto"], timeout)
    libraries = {}
    for module, name in LIBRARIES.items():
        lib = {"installed": module in present, **said.get(module, {})}
        if lib.get("problem"):
            hint = (f"; every icrt command that imports {name} (auto included, where it would) hangs too: fix or "
                    "uninstall it" if lib.get("hung") else "")
            problems.append(f"{name} is installed but importing it fails: {lib['problem']}{hint}"
                            if not lib.get("hung") else f"importing {name} {lib['problem']}{hint}")
        libraries[module] = lib
    auto = said["auto"]
    if auto.get("problem"):
        problems.append(f"auto cannot open the default model: {auto['problem']}")
    return libraries, auto


def bf16_facts(simd: list[str], openvino: bool) -> tuple[dict, str]:
    """({"int8": units, "bf16": units}, what bf16 means here) for a CPU with the features ``simd``."""
    from icrt.runtime.base.hardware import bf16_units, int8_units

    units = {"int8": int8_units(simd), "bf16": bf16_units(simd)}
    if not units["bf16"]:
        return units, "no bf16 units: --precision bf16 is refused on this CPU (fp32 gives the same scores)"
    return units, (f"bf16 units ({', '.join(units['bf16'])}): --precision bf16 runs at speed through OpenVINO"
                   + ("" if openvino else " (install the [openvino] extra)"))


def facts(timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Everything ``icrt doctor`` reports, as plain data (``icrt doctor --json``); ``timeout``: seconds each child
    process (an import, auto's pick) and NVML may take."""
    from icrt.runtime.backends.cache import usage
    from icrt.runtime.base.hardware import cpu_facts, gpu_names, jetson_info
    from icrt.runtime.base.install import source
    from icrt.runtime.base.version import __version__

    problems = []
    packages = {dist: version(dist) for dist, _ in PACKAGES}
    libraries, auto = _libraries(timeout, problems)
    providers = libraries["onnxruntime"].get("providers", [])
    if not (packages["onnxruntime"] or packages["onnxruntime-gpu"]):
        problems.append("onnxruntime is not installed: nothing can score here (pip install onnxruntime)")
    shadow = onnxruntime_shadowed()
    if shadow:
        problems.append(shadow)
    gpus = gpu_names(timeout=min(10.0, timeout))
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
    units, bf16 = bf16_facts(simd, bool(packages.get("openvino")))
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
    cache = usage()
    if cache["problem"]:
        problems.append(cache["problem"])
    return {
        "icrt": {"version": __version__, "runtime": os.path.dirname(os.path.abspath(__file__)), "source": source()},
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "packages": packages,
        "libraries": libraries,
        "onnxruntime": {"providers": providers, "gpu_providers": gpu_providers, "both_builds_installed": bool(shadow)},
        "cpu": {"model": cpu["model"], "cores": cpu["cores"], "cpus": cpu["cpus"], "usable_cpus": cpu["usable_cpus"],
                "features": simd, "int8": int8, "units": units, "bf16": bf16},
        "gpus": gpus,
        "jetson": jetson,
        "serve": serve,
        "default_model": bundle,
        "auto": auto,
        "cache": cache,
        "problems": problems,
    }


def _library(f: dict, module: str) -> str:
    lib = f["libraries"][module]
    if not lib["installed"]:
        return "not installed"
    if lib.get("problem"):
        return "installed, does not load (see the problems)"
    return f"{str(lib.get('version') or '?').split('-')[0]} (loads)"


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


def render(f: dict) -> str:
    """The facts as lines a person reads, problems last."""
    from icrt.runtime.base.text import printable

    p = f["packages"]
    lines = [f"icrt {f['icrt']['version']}  ({f['icrt']['runtime']}"
             + (f"; pip source {f['icrt']['source']}" if f["icrt"]["source"] else "") + ")",
             f"python       {f['python']['version']}  {f['python']['executable']}  ({f['python']['platform']})"]
    ort = f["onnxruntime"]
    builds = " + ".join(d for d in ("onnxruntime", "onnxruntime-gpu") if p[d]) or "not installed"
    loads = "loads" if not f["libraries"]["onnxruntime"].get("problem") else "does not load (see the problems)"
    lines.append(f"onnxruntime  {p['onnxruntime-gpu'] or p['onnxruntime'] or '-'} ({builds}; {loads}); providers: "
                 f"{', '.join(ort['providers']) or 'none'}")
    lines.append(f"OpenVINO     {_library(f, 'openvino')}")
    cpu = f["cpu"]
    lines.append(f"CPU          {cpu['model']}: {cpu['cores']} cores, {cpu['cpus']} CPUs ({cpu['usable_cpus']} usable); "
                 f"{' '.join(cpu['features']) or 'no int8 features'}")
    lines.append(f"int8 / bf16  {cpu['int8']}; {cpu['bf16']}")
    lines.append(f"GPU          {', '.join(f['gpus']) if f['gpus'] else 'none seen (NVML)'}")
    cuda = ", ".join(f"{d} {p[d]}" for d in ("cuda-python", "pycuda") if p[d]) or "no CUDA bindings"
    lines.append(f"TensorRT     {_library(f, 'tensorrt')}; {cuda}")
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
    a = f["auto"]
    if a and not a.get("problem"):
        why = f"passed over: {'; '.join(a['notes'])}" if a["notes"] else "the first backend in auto's order"
        lines.append(f"auto         {a['backend']} {a['precision']} on {a['device']} for the default model "
                     f"(--precision fp32 unless asked; {why})")
    c = f["cache"]
    if c["path"]:
        lines.append(f"cache        {c['path']}: {_mb(c['bytes'])} in {c['entries']} compiled model(s) / engine(s), "
                     f"at most {_mb(c['max_bytes'])} (ICRT_CACHE_MAX_MB; ICRT_CACHE_DIR=off: none)")
    else:
        lines.append(f"cache        none ({'; '.join(c['notes']) or 'off'})")
    lines += [f"problem      {text}" for text in f["problems"]] or ["problems     none found"]
    return "\n".join(printable(line) for line in lines) + "\n"
