"""The CPU's instruction-set features that decide int8 and bf16 speed (and, for int8, onnxruntime's results).

onnxruntime's U8S8 kernels on x86 use VNNI (AVX512-VNNI / AVX-VNNI) or AMX where present and VPMADDUBSW
(AVX2) otherwise; the latter adds pairs of products in 16 bits (export/int8.py says why that matters). Read
from /proc/cpuinfo (Linux) without extra packages: a figure of speed or int8 agreement is recorded with these.
"""
from __future__ import annotations

import platform

# /proc/cpuinfo flag -> the name icrt reports (x86: flags; Arm: Features)
INT8_FEATURES = {"avx2": "avx2", "avx512f": "avx512", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
                 "avx512_bf16": "avx512_bf16", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
                 "asimddp": "arm_dotprod", "i8mm": "arm_i8mm", "bf16": "arm_bf16", "sve": "arm_sve"}


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The features of :data:`INT8_FEATURES` this CPU has, in that order ([] where /proc/cpuinfo is absent)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return []
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break  # every core lists the same
    return [name for flag, name in INT8_FEATURES.items() if flag in flags]


def has_vnni(features: list[str] | None = None) -> bool:
    f = cpu_features() if features is None else features
    return any(x in f for x in ("avx512_vnni", "avx_vnni", "amx_int8"))


def describe() -> str:
    """``x86_64: avx2`` or ``x86_64: avx2 avx512 avx512_vnni amx_int8``: what a recorded figure ran on."""
    feats = cpu_features()
    return f"{platform.machine()}: {' '.join(feats) if feats else 'no int8 dot-product features'}"


def cpu_facts() -> dict:
    """The CPU for a report: its model, logical CPUs, physical cores, the CPUs this process may use (psutil) and
    its int8 features (:func:`cpu_features`); the model from py-cpuinfo (the ``[bench]`` extra), else from
    ``platform``."""
    import psutil

    logical = psutil.cpu_count() or 1
    try:
        usable = len(psutil.Process().cpu_affinity())
    except AttributeError:  # no CPU affinity on macOS
        usable = logical
    model = platform.processor() or platform.machine()
    try:
        import cpuinfo
    except ImportError:
        pass
    else:
        model = cpuinfo.get_cpu_info().get("brand_raw") or model
    return {"model": model, "cpus": logical, "cores": psutil.cpu_count(logical=False) or logical,
            "usable_cpus": usable, "simd": cpu_features()}
