"""Test configuration: hypothesis profiles and the gpu marker's skip.

Profiles come from autograd.testing.load_profile, the function users call in their own
test files: "ci" (bounded examples and deadline; chosen when the CI environment variable
is set) and "dev" (more examples, for local runs). Override with HYPOTHESIS_PROFILE.
"""
import pytest

from autograd.testing import load_profile

load_profile()
pytest_plugins = ["pytester"]   # tests that run pytest on a small file (what a user's failure looks like)


def pytest_collection_modifyitems(config, items):
    from autograd.backend import cupy_available
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device (pip install 'tinyllm[gpu]' on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
