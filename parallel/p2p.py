"""Point-to-point moves of activations and gradients between neighbouring pipeline stages.

mpi4py's uppercase buffer methods only (`Isend`, `Recv`): no pickling, no copies beyond
the one the transport needs. Receives land in buffers allocated once per training run
(`BufferPool`: their shape (micro_B, T, C) and dtype are known up front). Sends are
non-blocking: a stage hands its output to MPI and goes on computing; the request and the
array it reads are kept until `wait_sends()` (at the end of each step) so the array cannot
be freed or reused under MPI.

CuPy arrays go to MPI directly or through a host copy, as the process's
`parallel.transport.Transport` decides (CUDA-aware MPI detected, or TINYLLM_CUDA_AWARE_MPI).

Deadlines: on a `parallel.deadline.WatchedComm` (the grid's communicators are) a receive and
the wait for the step's sends run under the watchdog's deadline, named in its message
("Recv of the activation of microbatch 2 from rank 0 on node0").

Tags: a message is named by its kind, its microbatch and the boundary it crosses (boundary
b lies between virtual stages b and b + 1; without interleaving, between stages b and
b + 1), so two messages never share a tag, even between the same two ranks of an
interleaved pipeline, where activations and gradients of several chunks flow both ways.
MPI's (source, tag) matching then pairs each receive with exactly the send the schedule
means, whatever order messages arrive in.

Left out: collective-based or one-sided transfers, compression, cross-step overlap.
"""
from __future__ import annotations

import numpy as np

from autograd import backend

from .deadline import watch
from .transport import Transport

ACTIVATION, GRADIENT = 0, 1
KIND_NAMES = {ACTIVATION: "activation", GRADIENT: "gradient"}


def message_tag(kind: int, microbatch: int, boundary: int = 0, n_boundaries: int = 1) -> int:
    """Distinct tag per (kind, microbatch, boundary): ((microbatch * n_boundaries + boundary) * 2 + kind)."""
    return (microbatch * n_boundaries + boundary) * 2 + kind


def describe_tag(tag: int, n_boundaries: int = 1) -> str:
    """What a message_tag names, for a timeout's message: "the activation of microbatch 2"."""
    unit, kind = divmod(tag, 2)
    microbatch, boundary = divmod(unit, n_boundaries)
    where = f" across boundary {boundary}" if n_boundaries > 1 else ""
    return f"the {KIND_NAMES[kind]} of microbatch {microbatch}{where}"


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
    """Sends and receives on one communicator (the pipeline's); arrays handed over by `transport`."""

    def __init__(self, comm, transport: Transport | None = None, n_boundaries: int = 1):
        self.comm = watch(comm, "pipeline")
        self.transport = transport or Transport.for_this_process()
        self.n_boundaries = n_boundaries
        self._pending = []  # (request, array kept alive until the send completes, destination)

    def isend(self, array, dest: int, tag: int) -> None:
        array = self.transport.staged(array)
        array = array if array.flags.c_contiguous else array.copy()
        self._pending.append((self.comm.Isend(array, dest=dest, tag=tag), array, dest))

    def recv_into(self, buffer, source: int, tag: int, what: str | None = None) -> None:
        """Blocking receive into `buffer`, under the deadline; `what` names the message in a timeout's line."""
        landing = self.transport.receiving(buffer)
        self.comm.call("Recv", landing, source=source, tag=tag, what=what or f"the message with tag {tag}")
        self.transport.unstage(landing, buffer)

    def wait_sends(self) -> None:
        self.comm.waitall([req for req, _, _ in self._pending], peers=[dest for _, _, dest in self._pending],
                          what="this step's sends")
        self._pending.clear()
