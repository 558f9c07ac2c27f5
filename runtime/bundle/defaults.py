"""Where the model used without ``-m`` comes from.

A default bundle ships inside the package, at ``runtime/bundle/default/`` (``icrt/runtime/bundle/default/`` once
installed): EfficientNet-Lite0 (ImageNet weights, frozen) with a head trained on Savoias (docs/default_model.md).
``ICRT_DEFAULT_BUNDLE`` names another bundle folder (or manifest.json) instead. Only a copy of icrt installed without
the shipped bundle has no default; leaving out ``-m`` there is a clear error that says what to pass.
"""
from __future__ import annotations

import os

from icrt.runtime.bundle.manifest import MANIFEST_FILE, BundleError

ENV_VAR = "ICRT_DEFAULT_BUNDLE"
PACKAGE_BUNDLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default")


def default_bundle() -> str:
    """Path of the default bundle, or :class:`BundleError` saying how to choose a model."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not os.path.isfile(os.path.join(env, MANIFEST_FILE)) and not os.path.isfile(env):
            raise BundleError(f"{env}: {ENV_VAR} names no model bundle (no {MANIFEST_FILE})")
        return env
    if os.path.isfile(os.path.join(PACKAGE_BUNDLE, MANIFEST_FILE)):
        return PACKAGE_BUNDLE
    raise BundleError(f"no default model is installed with this copy of icrt ({PACKAGE_BUNDLE} is missing); pass "
                      f"-m BUNDLE (a folder written by `python -m export`) or set {ENV_VAR}")
