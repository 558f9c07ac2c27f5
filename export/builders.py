"""The builders of the precisions export writes beyond fp32, loaded on first use: each built-in module registers
itself with ``icrt.export.precisions.register_builder``. A new precision's builder is one more module named here (or
registered by any module imported before the export runs)."""
from __future__ import annotations

import importlib
import threading

from icrt.export.errors import ExportError
from icrt.export.precisions import _BUILDERS, Builder, BuildInput, Built

BUILTIN_MODULES = ("icrt.export.fp16", "icrt.export.int8", "icrt.export.bf16")
_loaded = False
_LOADING = threading.RLock()


def builder(precision: str) -> Builder:
    """The registered builder of ``precision``; ExportError when export has none."""
    global _loaded
    if not _loaded:
        with _LOADING:
            if not _loaded:
                for module in BUILTIN_MODULES:
                    importlib.import_module(module)
                _loaded = True
    try:
        return _BUILDERS[precision]
    except KeyError:
        raise ExportError(f"export has no builder for the precision {precision!r} "
                          f"(registered: {', '.join(_BUILDERS) or 'none'})") from None


def build(precision: str, inp: BuildInput) -> Built:
    """Run ``precision``'s builder."""
    return builder(precision).build(inp)
