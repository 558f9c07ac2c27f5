"""Facts about this machine's hardware, in one place: the CPU's instruction-set features that decide int8 and bf16
speed (and, for int8, onnxruntime's results), its model, its cores and the CPUs this process may use, the NVIDIA
GPUs, a Jetson's power mode. ``icrt doctor``, ``icrt bench``, the backends' defaults and ``auto`` read them here.

CPU flags: on Linux from ``/proc/cpuinfo`` (what py-cpuinfo reads there as well), elsewhere from py-cpuinfo; the
model name from py-cpuinfo where it is installed. Reason for reading the file here rather than calling
``cpuinfo.get_cpu_info()`` for the flags: that call also probes CPUID in a child process, ~1 s, and ``auto`` needs the
flags at every ``icrt score`` start (7 ms here).

onnxruntime's U8S8 kernels on x86 use VNNI (AVX512-VNNI / AVX-VNNI) or AMX where present and VPMADDUBSW (AVX2)
otherwise; the latter adds pairs of products in 16 bits (export/int8.py says why that matters). bf16 runs at speed on
CPUs with AMX-BF16 or AVX512-BF16.
"""
from __future__ import annotations

import functools
import os
import platform

# CPU flag (/proc/cpuinfo name: x86 flags, Arm Features) -> the name icrt reports
FEATURES = {"avx2": "avx2", "avx512f": "avx512", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
            "avx512_bf16": "avx512_bf16", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
            "asimddp": "arm_dotprod", "i8mm": "arm_i8mm", "bf16": "arm_bf16", "sve": "arm_sve"}
INT8_UNITS = ("amx_int8", "avx512_vnni", "avx_vnni", "arm_i8mm", "arm_dotprod")  # int8 dot products, best first
BF16_UNITS = ("amx_bf16", "avx512_bf16")  # bf16 arithmetic at speed (OpenVINO's bf16 on x86), best first


def _linux_flags(cpuinfo: str) -> set:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())  # every core lists the same
    return set()


@functools.lru_cache(maxsize=1)
def _flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(_linux_flags(f.read()))
    except OSError:
        pass
    return frozenset(_cpuinfo().get("flags", ()))


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict:
    """py-cpuinfo's facts (the ``[bench]`` extra; about a second where it probes with CPUID), once a process; {} when it
    is missing or fails on this platform (never an error)."""
    try:
        import cpuinfo

        return cpuinfo.get_cpu_info()
    except Exception:
        return {}


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The features of :data:`FEATURES` this CPU has, in that order (``cpuinfo``: the text of a /proc/cpuinfo to
    read instead of this machine's)."""
    flags = _linux_flags(cpuinfo) if cpuinfo is not None else _flags()
    return [name for flag, name in FEATURES.items() if flag in flags]


def int8_units(features: list[str] | None = None) -> list[str]:
    """The int8 dot-product units of this CPU (:data:`INT8_UNITS`), best first."""
    f = cpu_features() if features is None else features
    return [u for u in INT8_UNITS if u in f]


def bf16_units(features: list[str] | None = None) -> list[str]:
    """The bf16 units of this CPU (:data:`BF16_UNITS`), best first: [] where bf16 would be emulated (slow)."""
    f = cpu_features() if features is None else features
    return [u for u in BF16_UNITS if u in f]


def has_vnni(features: list[str] | None = None) -> bool:
    return any(u in int8_units(features) for u in ("avx512_vnni", "avx_vnni", "amx_int8"))


def describe() -> str:
    """``x86_64: avx2`` or ``x86_64: avx2 avx512 avx512_vnni amx_int8``: what a recorded figure ran on."""
    feats = cpu_features()
    return f"{platform.machine()}: {' '.join(feats) if feats else 'no int8 dot-product features'}"


def usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity; all of them where there is none, as on macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads do not help convolutions): the CPUs it may use, times cores
    per logical CPU (psutil). The default thread count of the CPU inference engines."""
    import psutil

    logical = psutil.cpu_count() or 1
    return max(1, usable_cpus() * (psutil.cpu_count(logical=False) or logical) // logical)


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name: py-cpuinfo's (the ``[bench]`` extra), else ``platform``'s."""
    return _cpuinfo().get("brand_raw") or platform.processor() or platform.machine()


def cpu_facts() -> dict:
    """The CPU for a report: its model, logical CPUs, physical cores, the CPUs this process may use and its
    features (:func:`cpu_features`)."""
    import psutil

    logical = psutil.cpu_count() or 1
    return {"model": cpu_model(), "cpus": logical, "cores": psutil.cpu_count(logical=False) or logical,
            "usable_cpus": usable_cpus(), "simd": cpu_features()}


def gpu_names(timeout: float = 10.0) -> list[str]:
    """The NVIDIA GPUs NVML sees (nvidia-ml-py, in the ``[gpu]`` / ``[trt]`` extras; none without it, or on a
    Jetson, which has no NVML). NVML runs on a helper thread: a driver that hangs in ``nvmlInit`` or fails in any way
    gives no GPUs after ``timeout`` seconds, never a hang or a traceback."""
    import threading

    found: list = []

    def probe():
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                found.extend(str(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
                             for i in range(pynvml.nvmlDeviceGetCount()))
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # not installed, no driver, a broken driver: no GPUs known
            found.clear()

    t = threading.Thread(target=probe, name="icrt-nvml", daemon=True)
    t.start()
    t.join(timeout)
    return list(found) if not t.is_alive() else []


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
