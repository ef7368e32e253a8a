"""The process grid: world = data-parallel replicas x pipeline stages, built with Comm.Split.

World rank r sits at stage `r % P` of replica `r // P`, so the stages of one pipeline are
neighbouring ranks (on one node when ranks are packed by node, which keeps activation
traffic local) and the replicas of one stage are P ranks apart:

    P = 2, D = 2:   rank 0: (replica 0, stage 0)   rank 1: (replica 0, stage 1)
                    rank 2: (replica 1, stage 0)   rank 3: (replica 1, stage 1)

Communicators each rank holds:
- `pipe`: the P stages of its replica (rank in it = stage), for activations and gradients;
- `data`: the D replicas of its stage (rank in it = replica), for gradient all-reduce;
- `tied`: stage 0 and the last stage of its replica when P > 1 (None elsewhere), for the
  tied embedding's gradient sum.

Devices: each rank also knows its `local_rank`, its index among the ranks of its node
(`Split_type(COMM_TYPE_SHARED)`: the ranks that share memory), and takes GPU
`local_rank % (GPUs it sees)` (`device_for`); CUDA_VISIBLE_DEVICES limits what it sees. So
8 ranks on a node with 8 GPUs use one each, and 4 ranks on 2 GPUs share them two by two.

Deadlines: every communicator is a `parallel.deadline.WatchedComm` (named "world", "pipeline",
"data-parallel", "tied-embedding"), so every blocking call on it has the watchdog's deadline, and
the grid gathers every rank's host name once (`hosts`) for the watchdog's messages and the run's
header (`describe_hosts`).

Left out: tensor (intra-layer) parallelism, topology discovery beyond "same node".
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from . import deadline


@dataclass(frozen=True)
class GridShape:
    """Pipeline stages x data-parallel replicas; `position(rank)` -> (replica, stage)."""

    pipeline_stages: int
    data_parallel: int

    def __post_init__(self):
        for name in ("pipeline_stages", "data_parallel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")

    @property
    def world_size(self) -> int:
        return self.pipeline_stages * self.data_parallel

    def position(self, rank: int) -> tuple[int, int]:
        return divmod(rank, self.pipeline_stages)

    def check_world(self, world_size: int) -> None:
        if world_size != self.world_size:
            raise ValueError(
                f"--pipeline-stages {self.pipeline_stages} x --data-parallel {self.data_parallel} needs "
                f"{self.world_size} MPI ranks, but mpiexec started {world_size}: run "
                f"`mpiexec -n {self.world_size} ...` or change the flags")


def device_for(local_rank: int, visible: int) -> int:
    """The GPU a rank takes: its rank within its node modulo the GPUs it sees (module docstring)."""
    if visible < 1:
        raise ValueError("--device cuda: this rank sees no CUDA device (CuPy missing, no GPU, or "
                         "CUDA_VISIBLE_DEVICES empty); install the gpu extra on a GPU machine, or use --device cpu")
    return local_rank % visible


class Grid:
    """One rank's place in the grid and its communicators (see the module docstring)."""

    def __init__(self, shape: GridShape, world=None):
        from mpi4py import MPI  # noqa: PLC0415 - mpi4py is an optional extra
        self.world = deadline.watch(MPI.COMM_WORLD if world is None else world, "world")
        shape.check_world(self.world.Get_size())
        self.shape = shape
        self.rank = self.world.Get_rank()
        self.hosts = self.world.allgather(socket.gethostname())             # world rank -> host name
        watchdog = deadline.current()
        if watchdog is not None:
            watchdog.rank, watchdog.hosts = self.rank, self.hosts
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)   # the ranks of this node
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.replica, self.stage = shape.position(self.rank)
        self.pipe = deadline.watch(self.world.Split(color=self.replica, key=self.stage), "pipeline")
        self.data = deadline.watch(self.world.Split(color=self.stage, key=self.replica), "data-parallel")
        last = shape.pipeline_stages - 1
        holds_tie = last > 0 and self.stage in (0, last)
        tied = self.world.Split(color=self.replica if holds_tie else MPI.UNDEFINED, key=self.stage)
        self.tied = deadline.watch(tied, "tied-embedding") if holds_tie else None

    @property
    def n_stages(self) -> int:
        return self.shape.pipeline_stages

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.shape.pipeline_stages - 1

    def describe_hosts(self) -> str:
        """"node0: ranks 0-1; node1: rank 2": where the ranks run, for the run's header."""
        by_host = {}
        for rank, host in enumerate(self.hosts):
            by_host.setdefault(host, []).append(rank)
        return "; ".join(f"{host}: rank{'s' if len(ranks) > 1 else ''} {span(ranks)}"
                         for host, ranks in by_host.items())

    def free(self) -> None:
        for comm in (self.pipe, self.data, self.tied):
            if comm is not None:
                comm.Free()


def span(ranks) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    parts, start = [], None
    for i, rank in enumerate(ranks):
        if start is None:
            start = rank
        if i + 1 == len(ranks) or ranks[i + 1] != rank + 1:
            parts.append(str(start) if start == rank else f"{start}-{rank}")
            start = None
    return ", ".join(parts)
