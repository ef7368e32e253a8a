"""No hang, no orphan: a deadline on every wait for another rank, and a rank that outlives its launcher exits.

    watchdog = deadline.start(timeout=300.0)     # once per rank, before the first collective
    world = WatchedComm(MPI.COMM_WORLD, "world") # every blocking call on it now has the deadline
    watchdog.step = 3                            # named in the message (the engine sets it)

MPI's blocking calls (Recv, Allreduce, Bcast, Barrier, ...) have no timeout, and a rank whose peer
is gone (a node down, a cable pulled) waits in one for ever. Rather than turning every call into
a non-blocking one completed by a polling loop (which costs time on every message), each rank
runs one watchdog thread, and the main thread, just before it blocks, notes what it is waiting
for and since when (`WatchedComm`: one tuple, a fraction of a microsecond); mpi4py releases the
GIL inside MPI, so the thread runs while the main thread waits. Twice a second the thread looks:

- a wait older than `timeout` seconds: it prints ONE line naming the rank and its host, the
  operation, the peer rank(s) and their hosts, and the step, e.g.

      tinyllm: rank 1 on node1 gave up at step 3 after waiting 60 s (--comm-timeout 60) in Recv
      of the activation of microbatch 2 from rank 0 on node0; ending the job (exit status 2): ...

  then ends the job (`abort_job`): `MPI_Abort` under MPICH, a non-zero exit under Open MPI,
  whose launchers then kill every rank they can still reach; if this process is still alive
  `ABORT_GRACE_S` later (a launcher across a dead link may never answer), `os._exit`. Ranks on
  the far side of a dead link reach their own deadline and do the same, so every rank of every node exits with a non-zero status; the last checkpoint was
  published atomically (tinyllm.checkpoint), so it is whole and `--resume` continues from it.
- its parent is gone (the launcher's daemon on this node, hydra_pmi_proxy or prted, or the
  launcher itself on its own node; the process was re-parented): it prints one line and exits
  at once. Open MPI leaves a rank running when mpirun is killed with SIGKILL; no more.

What it costs: the tuple per blocking call and a thread that wakes twice a second
(bench/cluster_link.py measures a healthy run with the deadline on and off, side by side).
Timeout 0 turns the deadline off (the parent watch stays). The parent watch is on only in a
process an MPI launcher started (it set PMI_RANK, PMIX_RANK or OMPI_COMM_WORLD_RANK).

Left out: naming WHICH member of a collective is missing (MPI cannot tell; the line names the
group), retrying or shrinking the job after a failure (it is restarted from the checkpoint).
"""
from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import time

TIMEOUT_STATUS = 2          # a machine problem the user fixes (a node or link), as tinyllm.errors says
ORPHAN_STATUS = 2
ABORT_GRACE_S = 5.0         # after MPI_Abort, how long before the process ends itself
POLL_S = 0.5                # how often the watchdog looks
DEFAULT_TIMEOUT_S = 300.0   # --comm-timeout's default (tinyllm.settings.PipelineSettings.comm_timeout)


class Watchdog:
    """One per process: the current wait and its deadline, the parent watch (see the module docstring)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S, poll: float = POLL_S, end_job=None):
        self.timeout = float(timeout)
        self.poll = poll
        self.step = None               # the training step under way (None: setting up)
        self.rank, self.host = None, socket.gethostname()
        self.hosts = None              # world rank -> host name, once the grid has gathered them
        self.current = None            # the wait under way: (since, WatchedComm, operation, args, kwargs, what)
        self.parent = os.getppid() if launched_by_mpi() else None   # a process run by hand has no launcher to lose
        self.end_job = end_job or abort_job
        self._thread = threading.Thread(target=self._watch, name="tinyllm-watchdog", daemon=True)
        self._thread.start()

    # ---- what the main thread does -----------------------------------------------------------
    def call(self, function, description, *args, **kwargs):
        """`function(*args, **kwargs)`, a blocking wait on other ranks, under the deadline.
        `description`: (WatchedComm or None, operation, args, kwargs, what), formatted only if it expires."""
        previous = self.current
        self.current = (time.monotonic(), *description)
        try:
            return function(*args, **kwargs)
        finally:
            self.current = previous

    # ---- the thread --------------------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            time.sleep(self.poll)
            if self.parent is not None and os.getppid() != self.parent:
                self._say(f"tinyllm: rank {self._who()}: the process that launched it (pid {self.parent}: the "
                          "MPI launcher or its daemon on this node) is gone; exiting")
                os._exit(ORPHAN_STATUS)
            current = self.current
            if current is not None and self.timeout > 0 and time.monotonic() - current[0] > self.timeout:
                self._say(self.timeout_message(current))
                self.end_job(TIMEOUT_STATUS)
                return

    def timeout_message(self, current) -> str:
        since, comm, operation, args, kwargs, what = current
        waited = time.monotonic() - since
        step = "during set-up" if self.step is None else f"at step {self.step}"
        on = f" of {what}" if what else ""
        peers = comm.describe_peers(operation, args, kwargs) if comm is not None else ""
        return (f"tinyllm: rank {self._who()} gave up {step} after waiting {waited:.0f} s (--comm-timeout "
                f"{self.timeout:g}) in {operation}{on} {peers}; ending the job (exit status {TIMEOUT_STATUS}): "
                "a node, the network between them or a rank failed; resume from the last "
                "checkpoint with --resume once the nodes are healthy")

    def ranks_and_hosts(self, ranks) -> str:
        hosts = self.hosts
        return ", ".join(f"rank {r}" + (f" on {hosts[r]}" if hosts is not None and r is not None else "")
                         for r in ranks)

    def _who(self) -> str:
        return f"{'?' if self.rank is None else self.rank} on {self.host}"

    @staticmethod
    def _say(line: str) -> None:
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):   # stderr gone with the launcher: still end
            pass


LAUNCHER_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")   # Hydra, PMIx (Open MPI), Open MPI


def launched_by_mpi(environ=None) -> bool:
    """Whether an MPI launcher (mpiexec, mpirun, its daemon) started this process (it set its variables)."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_VARIABLES)


def abort_job(status: int) -> None:
    """End every rank, the way this MPI's launcher ends a job soonest when a node may be unreachable;
    if this process is still alive ABORT_GRACE_S later, end it here.

    MPICH's Hydra ends the job at once on MPI_Abort (a plain non-zero exit makes it wait for the
    lost node's proxy); Open MPI's mpirun reports exit status 0 when, after an MPI_Abort, it also
    loses a node's daemon, but keeps a rank's non-zero exit status: so there the rank just exits.
    """
    timer = threading.Timer(ABORT_GRACE_S, os._exit, args=(status,))
    timer.daemon = True
    timer.start()
    time.sleep(0.5)   # let the launcher forward the line before the pipes go
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional extra
        if MPI.get_vendor()[0] != "Open MPI":
            MPI.COMM_WORLD.Abort(status)
    finally:
        os._exit(status)


def describe_timeout(timeout: float) -> str:
    """"300 s", or "0 (no limit)": the deadline as the run's header shows it."""
    return f"{timeout:g} s" if timeout > 0 else "0 (no limit)"


_WATCHDOG: Watchdog | None = None


def start(timeout: float = DEFAULT_TIMEOUT_S) -> Watchdog:
    """This process's watchdog, started once; a later call sets the timeout."""
    global _WATCHDOG
    if _WATCHDOG is None:
        _WATCHDOG = Watchdog(timeout)
    _WATCHDOG.timeout = float(timeout)
    return _WATCHDOG


def current() -> Watchdog | None:
    """The watchdog started by `start`, or None."""
    return _WATCHDOG


# mpi4py methods that wait for other ranks: the point-to-point ones with (keyword, position) of the peer
POINT_TO_POINT = {"Recv": ("source", 1), "recv": ("source", 1), "Send": ("dest", 1), "send": ("dest", 1),
                  "Ssend": ("dest", 1), "Sendrecv": ("dest", 1), "Probe": ("source", 0)}
ROOTED = ("Bcast", "bcast", "Gather", "Gatherv", "gather", "Scatter", "Scatterv", "scatter", "Reduce", "reduce")
COLLECTIVE = ("Barrier", "barrier", "Allreduce", "allreduce", "Allgather", "Allgatherv", "allgather",
              "Reduce_scatter", "Reduce_scatter_block", "Alltoall", "Alltoallv", "alltoall", "Split",
              "Split_type", "Dup", "Create")
BLOCKING = frozenset(POINT_TO_POINT) | frozenset(ROOTED) | frozenset(COLLECTIVE)


class WatchedComm:
    """An mpi4py communicator whose blocking calls run under the watchdog's deadline.

    Every name in BLOCKING goes through `Watchdog.call` (the message then names the peer rank, or
    the root and the group, in world ranks and hosts); anything else (Get_rank, Isend, Irecv,
    Abort, Free, ...) is the communicator's own. `name` names the group in the message ("world",
    "pipeline", "data-parallel", ...).
    """

    def __init__(self, comm, name: str, watchdog: Watchdog | None = None, world_ranks=None):
        self.comm = comm.comm if isinstance(comm, WatchedComm) else comm
        self.name = name
        self.watchdog = watchdog if watchdog is not None else current()
        self.world_ranks = list(world_ranks) if world_ranks is not None else self._world_ranks(self.comm)

    @staticmethod
    def _world_ranks(comm) -> list:
        """The world rank of each member of `comm`, in its own rank order."""
        from mpi4py import MPI  # noqa: PLC0415
        world, group = MPI.COMM_WORLD.Get_group(), comm.Get_group()
        ranks = list(MPI.Group.Translate_ranks(group, list(range(group.Get_size())), world))
        group.Free()
        world.Free()
        return ranks

    def call(self, method: str, *args, what: str = "", **kwargs):
        """self.comm.<method>(*args, **kwargs) under the deadline; `what` names the data in the message.
        (Watchdog.call's work, inlined: this runs for every message.)"""
        function, dog = getattr(self.comm, method), self.watchdog
        if dog is None or dog.timeout <= 0:
            return function(*args, **kwargs)
        previous = dog.current
        dog.current = (time.monotonic(), self, method, args, kwargs, what)
        try:
            return function(*args, **kwargs)
        finally:
            dog.current = previous

    def waitall(self, requests, peers=(), what: str = "") -> None:
        """MPI.Request.Waitall(requests) under the deadline; `peers`: the ranks (in this group) they go to."""
        from mpi4py import MPI  # noqa: PLC0415
        if requests:
            self._wait(MPI.Request.Waitall, ("Waitall", (), {"peers": sorted(set(peers))}, what), requests)

    def _wait(self, function, description, *args, **kwargs):
        dog = self.watchdog
        if dog is None or dog.timeout <= 0:
            return function(*args, **kwargs)
        return dog.call(function, (self, *description), *args, **kwargs)

    def describe_peers(self, method: str, args, kwargs) -> str:
        """Whom a wait waited for, in world ranks and hosts (for the timeout's message)."""
        name = self.watchdog.ranks_and_hosts if self.watchdog is not None else str
        group = f"the {self.name} group ({name(self.world_ranks)})"
        if method == "Waitall":
            return f"(sends to {name([self.world_ranks[p] for p in kwargs['peers']])})"
        if method in POINT_TO_POINT:
            keyword, position = POINT_TO_POINT[method]
            peer = kwargs.get(keyword, args[position] if len(args) > position else None)
            if isinstance(peer, int) and 0 <= peer < len(self.world_ranks):
                return f"{'from' if keyword == 'source' else 'to'} {name([self.world_ranks[peer]])}"
            return f"within {group}"
        if method in ROOTED:
            root = kwargs.get("root", 0)
            return f"from {name([self.world_ranks[root]])} (root) over {group}"
        return f"over {group}"

    def __getattr__(self, name):
        if name in BLOCKING:   # kept on the instance: the next lookup does not come here
            watched = self.__dict__[name] = functools.partial(self.call, name)
            return watched
        return getattr(self.comm, name)


def watch(comm, name: str) -> WatchedComm:
    """`comm` as a WatchedComm named `name` (itself if it is one already)."""
    return comm if isinstance(comm, WatchedComm) else WatchedComm(comm, name)
