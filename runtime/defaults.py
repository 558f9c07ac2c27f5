"""Where the model used without ``-m`` comes from.

The default bundle ships inside the package at ``runtime/default_bundle/`` (docs/default_model.md);
``ICRT_DEFAULT_BUNDLE`` overrides it. A copy without it makes asking for it a clear error.
"""
from __future__ import annotations

import os

from .manifest import BundleError

ENV_VAR = "ICRT_DEFAULT_BUNDLE"
PACKAGE_BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_bundle")


def default_bundle() -> str:
    """Path of the default bundle, or :class:`BundleError` saying how to choose a model."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not os.path.isfile(os.path.join(env, "manifest.json")) and not os.path.isfile(env):
            raise BundleError(f"{env}: {ENV_VAR} names no model bundle (no manifest.json)")
        return env
    if os.path.isfile(os.path.join(PACKAGE_BUNDLE, "manifest.json")):
        return PACKAGE_BUNDLE
    raise BundleError("no default model is installed with this copy of icrt; pass -m BUNDLE (a folder written by "
                      f"`python -m export`) or set {ENV_VAR}")
