"""Test configuration: the devices every device test runs on, and hypothesis profiles.

Devices. A test that takes the `device` fixture runs once per device, its id naming it:
`[cpu]`, and `[cuda]` on real CuPy when CuPy sees a GPU, else on the strict CPU stand-in
for CuPy (autograd/testing/fakecupy.py). TINYLLM_FAKE_CUDA=auto is set here, before the engine is
imported, so the choice is made once for this process and its subprocesses (CLI runs,
mpiexec ranks) alike; set TINYLLM_FAKE_CUDA=1 to force the stand-in on a GPU machine, or 0
to leave device "cuda" to real CuPy alone. The `stand_in` fixture is for tests that read
the stand-in's copy counters (the host-copy budgets): on real CuPy they are skipped,
saying so.

Profiles come from autograd.testing.load_profile, the function users call in their own
test files: "ci" (bounded examples and deadline; chosen when the CI environment variable
is set) and "dev" (more examples, for local runs). Override with HYPOTHESIS_PROFILE.
"""
import os

os.environ.setdefault("TINYLLM_FAKE_CUDA", "auto")   # before autograd/backend.py is imported

import pytest  # noqa: E402

from autograd import backend  # noqa: E402
from autograd.testing import load_profile  # noqa: E402

load_profile()
pytest_plugins = ["pytester"]   # tests that run pytest on a small file (what a user's failure looks like)

DEVICES = ("cpu", "cuda")


def pytest_report_header(config):
    kind = {"cupy": "real CuPy on a GPU", "stand-in": "the CPU stand-in for CuPy (autograd/testing/fakecupy.py)",
            None: "not available (no CuPy; TINYLLM_FAKE_CUDA=0)"}[backend.cuda_backend()]
    return f"device 'cuda': {kind}"


@pytest.fixture(params=DEVICES)
def device(request):
    """'cpu', then 'cuda' (real CuPy with a GPU, else the stand-in); skipped only when neither exists."""
    if request.param == "cuda" and not backend.cupy_available():
        pytest.skip("device 'cuda' is not available: TINYLLM_FAKE_CUDA=0 and no CuPy with a GPU")
    return request.param


@pytest.fixture
def stand_in():
    """The stand-in's copy counters, reset (autograd.testing.fakecupy.copies); skips on real CuPy."""
    if backend.cuda_backend() != "stand-in":
        pytest.skip("host-copy budgets are counted by the CPU stand-in for CuPy; device 'cuda' is real CuPy "
                    "here (TINYLLM_FAKE_CUDA=1 counts them)")
    from autograd.testing import fakecupy
    fakecupy.copies.reset()
    return fakecupy.copies
