"""How arrays cross MPI: straight from device memory (CUDA-aware MPI) or staged through the host.

    transport = Transport.for_this_process()      # decided once per process
    staged = transport.staged(flat)               # what MPI reads and writes: `flat`, or a host copy of it
    comm.Allreduce(MPI.IN_PLACE, staged, op=MPI.SUM)
    transport.unstage(staged, flat)               # a host copy's result back on the device (else nothing)

The one place that knows whether MPI may touch a CuPy array: the point-to-point moves
(parallel/p2p.py), the gradient all-reduces (parallel/engine.py) and the ZeRO-1 reduce-scatter,
all-gather and gather (parallel/zero.py) all go through it. NumPy arrays pass as they are.
With a CUDA-aware MPI a CuPy array goes to MPI directly once its stream is synchronised (MPI
reads device memory behind the stream's back); otherwise it is copied to the host, and a
receiving buffer is copied back after MPI has filled it.

Whether the MPI is CUDA-aware is asked of the MPI itself where it can say so:
`MPIX_Query_cuda_support()`, which Open MPI (a CUDA build) and MPICH (4.1 and later; true only
for a GPU build run with MPIR_CVAR_ENABLE_GPU=1) both export, looked up in the libmpi this
process loaded. TINYLLM_CUDA_AWARE_MPI=1 or 0 overrides the answer (an MPI that cannot tell, or
a wrong answer); `describe()` is the line the run's header prints.

Left out: ROCm and Level Zero (MPIX_Query_hip_support / ze_support), GPUDirect RDMA tuning,
asynchronous staging on a separate stream.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

from autograd import backend

OVERRIDE_ENV = "TINYLLM_CUDA_AWARE_MPI"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def query_cuda_support() -> bool | None:
    """MPIX_Query_cuda_support() of the MPI library loaded in this process; None where it has none."""
    for path in loaded_mpi_libraries():
        try:
            function = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support")
        except (OSError, AttributeError):
            continue
        function.restype, function.argtypes = ctypes.c_int, []
        return bool(function())
    return None


def loaded_mpi_libraries() -> list:
    """Paths of the libmpi shared objects mapped into this process (Linux: /proc/self/maps)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
        if Path(path).name.startswith("libmpi.so") and path not in paths:
            paths.append(path)
    return paths


def decide_cuda_aware(environ=None, query=query_cuda_support) -> tuple:
    """(cuda_aware, why): the override TINYLLM_CUDA_AWARE_MPI if set, else the MPI's own answer."""
    environ = os.environ if environ is None else environ
    value = environ.get(OVERRIDE_ENV, "").strip().lower()
    if value in TRUE_WORDS:
        return True, f"{OVERRIDE_ENV}={environ[OVERRIDE_ENV]}"
    if value in FALSE_WORDS:
        return False, f"{OVERRIDE_ENV}={environ[OVERRIDE_ENV]}"
    if value:
        raise ValueError(f"{OVERRIDE_ENV}={environ[OVERRIDE_ENV]!r}: use 1 (MPI reads device memory) or 0 (stage "
                         "through the host), or leave it unset to ask the MPI")
    answer = query()
    if answer is None:
        return False, f"this MPI cannot say (no MPIX_Query_cuda_support); set {OVERRIDE_ENV}=1 if it is CUDA-aware"
    return answer, f"MPIX_Query_cuda_support() = {int(answer)}"


class Transport:
    """Direct (CUDA-aware) or host-staged hand-over of arrays to MPI; see the module docstring."""

    _this_process: "Transport | None" = None

    def __init__(self, cuda_aware: bool, why: str = "given"):
        self.cuda_aware, self.why = bool(cuda_aware), why

    @classmethod
    def for_this_process(cls) -> "Transport":
        """The process's transport, decided once (after MPI is initialised)."""
        if cls._this_process is None:
            cls._this_process = cls(*decide_cuda_aware())
        return cls._this_process

    def describe(self) -> str:
        how = "directly from device memory" if self.cuda_aware else "through host memory"
        return f"CUDA-aware MPI: {'yes' if self.cuda_aware else 'no'} ({self.why}); GPU arrays go {how}"

    # ---- the hand-over -----------------------------------------------------------------------
    def staged(self, array):
        """What MPI reads and writes for `array`: itself (NumPy, or CuPy with a CUDA-aware MPI, its stream
        synchronised first) or a host copy of it."""
        if not backend.is_cupy_array(array):
            return array
        if self.cuda_aware:
            backend.synchronize(array)
            return array
        return backend.to_numpy(array)   # waits for the GPU

    def receiving(self, array):
        """Where MPI writes what is meant for `array` (a receive: nothing to copy out first)."""
        if backend.is_cupy_array(array) and not self.cuda_aware:
            import numpy as np  # noqa: PLC0415
            return np.empty(array.shape, dtype=array.dtype)
        if backend.is_cupy_array(array):
            backend.synchronize(array)
        return array

    @staticmethod
    def unstage(staged, array) -> None:
        """After MPI wrote into `staged`: copy it to `array` if it was a host copy."""
        if staged is not array:
            array.set(staged)

    def allreduce(self, comm, array, op=None, what: str = "") -> None:
        """Sum (or `op`) `array` over `comm` (a parallel.deadline.WatchedComm), in place."""
        from mpi4py import MPI  # noqa: PLC0415 - optional extra
        staged = self.staged(array)
        comm.call("Allreduce", MPI.IN_PLACE, staged, op=MPI.SUM if op is None else op, what=what)
        self.unstage(staged, array)
