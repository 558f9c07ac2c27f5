"""The trainers of the built-in model kinds, loaded on first use: each module attaches its trainer class to its kind
(``train.kinds.register_trainer``). ``python -m train`` and ``python -m train.protocol`` call :func:`load_trainers`
before they list what can be trained; the models and checkpoints never import a training loop.
"""
from __future__ import annotations

import importlib
import threading

BUILTIN_MODULES = ("icrt.train.d2s_trainer", "icrt.train.cmssa_trainer")
_loaded = False
_LOADING = threading.RLock()


def load_trainers() -> None:
    """Import the built-in trainer modules once (each registers itself)."""
    global _loaded
    if not _loaded:
        with _LOADING:
            if not _loaded:
                for module in BUILTIN_MODULES:
                    importlib.import_module(module)
                _loaded = True
