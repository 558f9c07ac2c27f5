"""Installed-but-broken inference libraries, as files for ``PYTHONPATH`` (a child process imports them as the real
package): a ``tensorrt`` whose import raises RuntimeError (a CUDA or ABI mismatch), one whose import never returns,
an ``openvino`` or ``onnxruntime`` that raises, a ``pynvml`` that raises or hangs in ``nvmlInit``."""
from __future__ import annotations

import os

RAISES = 'raise RuntimeError("CUDA initialization failure with error 35")\n'
HANGS = "import time\nwhile True:\n    time.sleep(60)\n"
NVML_RAISES = ("def nvmlInit():\n    raise RuntimeError('NVML driver/library version mismatch')\n")
NVML_HANGS = "import time\n\ndef nvmlInit():\n    while True:\n        time.sleep(60)\n"
KINDS = {"raises": RAISES, "hangs": HANGS, "nvml-raises": NVML_RAISES, "nvml-hangs": NVML_HANGS}


def broken_packages(folder, **modules) -> str:
    """Write ``module=kind`` (a key of :data:`KINDS`) as ``folder/module.py``; the folder, for ``PYTHONPATH``."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    for module, kind in modules.items():
        with open(os.path.join(folder, f"{module}.py"), "w") as f:
            f.write(KINDS[kind])
    return folder


def env_with(folder, root: str, **extra) -> dict:
    """This process's environment with ``folder`` first on ``PYTHONPATH`` (then the repository ``root``)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), root]), **extra}
