"""Point-to-point moves of activations and gradients between neighbouring pipeline stages.

mpi4py's uppercase buffer methods only (`Isend`, `Recv`): no pickling, no copies beyond
the one the transport needs. Receives land in buffers allocated once per training run
(`BufferPool`: their shape (micro_B, T, C) and dtype are known up front). Sends are
non-blocking: a stage hands its output to MPI and goes on computing; the request and the
array it reads are kept until `wait_sends()` (at the end of each step) so the array cannot
be freed or reused under MPI.

CuPy arrays: when MPI is CUDA-aware (set TINYLLM_CUDA_AWARE_MPI=1; MPICH needs
MPIR_CVAR_ENABLE_GPU=1 and a GPU build, Open MPI a CUDA build) device buffers go to MPI
directly after the stream is synchronised, otherwise every message is staged through a
host copy.

Tags: a message is named by its kind, its microbatch and the boundary it crosses (boundary
b lies between virtual stages b and b + 1; without interleaving, between stages b and
b + 1), so two messages never share a tag, even between the same two ranks of an
interleaved pipeline, where activations and gradients of several chunks flow both ways.
MPI's (source, tag) matching then pairs each receive with exactly the send the schedule
means, whatever order messages arrive in.

Left out: collective-based or one-sided transfers, compression, cross-step overlap.
"""
from __future__ import annotations

import os

import numpy as np

from autograd import backend

ACTIVATION, GRADIENT = 0, 1


def message_tag(kind: int, microbatch: int, boundary: int = 0, n_boundaries: int = 1) -> int:
    """Distinct tag per (kind, microbatch, boundary): ((microbatch * n_boundaries + boundary) * 2 + kind)."""
    return (microbatch * n_boundaries + boundary) * 2 + kind


def cuda_aware_mpi() -> bool:
    """Whether to hand CuPy buffers to MPI directly (TINYLLM_CUDA_AWARE_MPI=1)."""
    return os.environ.get("TINYLLM_CUDA_AWARE_MPI", "0").lower() in ("1", "true", "yes")


class BufferPool:
    """Preallocated arrays of one shape and dtype on one device, handed out and given back.

    Sized from the simulated peak of in-flight microbatches, so GPipe allocates m receive
    buffers per stage and 1F1B min(m, p - s); a schedule that needs more grows the pool.
    """

    def __init__(self, count: int, shape: tuple, dtype, device: str):
        self.xp = backend.module_for(device)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._free = [self.xp.empty(self.shape, dtype=self.dtype) for _ in range(count)]
        self.allocated = count

    def take(self):
        if self._free:
            return self._free.pop()
        self.allocated += 1
        return self.xp.empty(self.shape, dtype=self.dtype)

    def give_back(self, array) -> None:
        self._free.append(array)


class PointToPoint:
    """Sends and receives on one communicator (the pipeline's), host-staged unless CUDA-aware."""

    def __init__(self, comm, cuda_aware: bool | None = None):
        self.comm = comm
        self.cuda_aware = cuda_aware_mpi() if cuda_aware is None else cuda_aware
        self._pending = []  # (request, array kept alive until the send completes)

    def isend(self, array, dest: int, tag: int) -> None:
        if backend.is_cupy_array(array):
            if self.cuda_aware:
                backend.synchronize(array)
            else:
                array = backend.to_numpy(array)  # a host copy (waits for the GPU)
        array = array if array.flags.c_contiguous else array.copy()
        self._pending.append((self.comm.Isend(array, dest=dest, tag=tag), array))

    def recv_into(self, buffer, source: int, tag: int) -> None:
        """Blocking receive into `buffer` (NumPy, or CuPy via a host copy unless CUDA-aware)."""
        if backend.is_cupy_array(buffer) and not self.cuda_aware:
            host = np.empty(buffer.shape, dtype=buffer.dtype)
            self.comm.Recv(host, source=source, tag=tag)
            buffer.set(host)
            return
        if backend.is_cupy_array(buffer):
            backend.synchronize(buffer)
        self.comm.Recv(buffer, source=source, tag=tag)

    def wait_sends(self) -> None:
        from mpi4py import MPI  # noqa: PLC0415 - optional extra
        if self._pending:
            MPI.Request.Waitall([req for req, _ in self._pending])
            self._pending.clear()
