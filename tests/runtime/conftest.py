"""Fixtures of the runtime's tests: the tiny conv net's bundles, built once per session (tests/runtime/fixtures.py).

Nothing here or in tests/conftest.py needs torch: ``python -m pytest -q tests/runtime`` runs with the runtime's
dependencies and pytest only."""
import pytest

from tests.runtime.fixtures import build_bundle


@pytest.fixture(scope="session")
def square_bundle(tmp_path_factory):
    """64 x 64 square policy; fp32 and int8."""
    return build_bundle(str(tmp_path_factory.mktemp("bundle-square")), "square", int8=True)


@pytest.fixture(scope="session")
def patches_bundle(tmp_path_factory):
    """64 px patches at stride 32, long side capped at 256; fp32 only."""
    return build_bundle(str(tmp_path_factory.mktemp("bundle-patches")), "patches")
