"""Fixtures of the public API's tests: a tiny square-policy bundle (tests/runtime/fixtures.py), built once per
session. Torch-free, as tests/runtime."""
import pytest

from tests.runtime.fixtures import build_bundle


@pytest.fixture(scope="session")
def square_bundle(tmp_path_factory):
    """64 x 64 square policy; fp32 and int8."""
    return build_bundle(str(tmp_path_factory.mktemp("bundle-square")), "square", int8=True)
