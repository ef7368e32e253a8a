"""ZeRO stage 1: the optimizer state sharded across the data-parallel replicas of a stage.

    optimizer = ZeroOptimizer(stage_model.named_parameters(), make_optimizer, grid.data)

Without it every replica of a stage holds the whole AdamW state (m and v: twice the
stage's parameters) and makes the same update. With it (after DeepSpeed's ZeRO-1,
Rajbhandari et al. 2020) the stage's parameters are dealt out to the D replicas and
each keeps the state of, and updates, only its own:

    gradients    packed into one flat buffer in parameter order, then `Reduce_scatter` in
                 place: replica d receives, at the buffer's start, the sum over replicas of its
                 own parameters' part only (the other parameters' .grad are dropped, so
                 clipping touches only its part)
    norm         the engine sums squares over this replica's part, then over every rank
    update       the inner optimizer (AdamW or SGD from tinyllm.optim, unchanged) steps
                 the replica's own parameters
    parameters   `Allgatherv` (in place on the flat buffer): every replica gets every updated
                 parameter, so all replicas hold the whole, identical stage again

The replicas' parts are whole parameters, contiguous in parameter order, balanced by size
(parallel.partition.balanced_partition, the exact min-max split): a parameter is never
cut, so the optimizer's per-parameter rules (weight decay on matrices only) and its update
are exactly the unsharded ones, parameter for parameter, and per-rank optimizer memory is
about 1/D of it (the largest parameter bounds the balance).

Checkpoints keep the unsharded layout: `state_arrays()` is collective over the replicas
(each calls it; parallel/checkpoint.py does) and gathers every buffer (`Gatherv`) to
replica 0, which writes the same name-keyed arrays an unsharded run writes; `load_state`
takes such a dict and keeps its own part. So a ZeRO run resumes unsharded, under another
replica count, or in one process, and the other way round.

Left out: sharding gradients (ZeRO-2) and parameters (ZeRO-3), overlapping the
reduce-scatter with the backward, cutting parameters for a finer balance.
"""
from __future__ import annotations

from autograd import backend
from tinyllm.checkpoint import optimizer_arrays_for

from .partition import balanced_partition
from .transport import Transport


class ZeroOptimizer:
    """An optimizer over this replica's share of a stage's parameters, sharing updates with the others.

    Quacks like tinyllm.optim.Optimizer for tinyllm.trainer.Trainer (params, zero_grad, step,
    state_arrays, state_meta, load_state); see the module docstring.
    """

    def __init__(self, named_parameters, make_optimizer, comm, transport: Transport | None = None):
        self.params = list(named_parameters)       # [(name, Parameter)]: the whole stage, in order
        self.comm = comm                           # the stage's data-parallel group (a deadline.WatchedComm)
        self._transport = transport
        replicas, self.replica = comm.Get_size(), comm.Get_rank()
        sizes = [int(p.size) for _, p in self.params]
        if len(sizes) < replicas:
            raise ValueError(f"--zero 1: a stage with {len(sizes)} parameters cannot be shared by {replicas} "
                             "--data-parallel replicas (each needs one); use fewer replicas or --zero 0")
        shares = balanced_partition(sizes, replicas).ranges
        self.counts = [sum(sizes[i] for i in share) for share in shares]
        self.displacements = [sum(self.counts[:d]) for d in range(replicas)]
        self.own = self.params[shares[self.replica].start:shares[self.replica].stop]
        self.inner = make_optimizer(self.own)
        first = self.params[0][1].data
        self.xp = backend.get_array_module(first)
        # every gradient in (this replica's sums land at its start), every parameter out
        self.flat = self.xp.empty(sum(sizes), dtype=first.dtype)

    # ---- the step ----------------------------------------------------------------------------
    def reduce_scatter_gradients(self) -> None:
        """Sum gradients over the replicas, keeping only this replica's part (the others' .grad become None)."""
        from mpi4py import MPI  # noqa: PLC0415
        self._pack(self.params, (p.grad for _, p in self.params), 0)
        flat = self.transport.staged(self.flat)
        self.comm.call("Reduce_scatter", MPI.IN_PLACE, flat, recvcounts=self.counts, op=MPI.SUM,
                       what="the gradients (ZeRO-1)")   # sums at flat's start
        self.transport.unstage(flat, self.flat)
        for _, p in self.params:
            p.grad = None
        offset = 0
        for _, p in self.own:                           # views of the sums: clipping scales them in place
            p.grad = self.flat[offset:offset + p.size].reshape(p.shape)
            offset += p.size

    def step(self, lr: float | None = None) -> None:
        """Update this replica's parameters, then every replica gets everyone's (Allgatherv; the gradients
        at flat's start are used up by then)."""
        from mpi4py import MPI  # noqa: PLC0415
        self.inner.step(lr)
        start = self.displacements[self.replica]
        self._pack(self.own, (p.data for _, p in self.own), start)
        flat = self.transport.staged(self.flat)
        self.comm.call("Allgatherv", MPI.IN_PLACE, [flat, (self.counts, self.displacements)],
                       what="the updated parameters (ZeRO-1)")
        self.transport.unstage(flat, self.flat)
        offset = 0
        for _, p in self.params:
            p.data[...] = self.flat[offset:offset + p.size].reshape(p.shape)
            offset += p.size

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    @property
    def step_count(self) -> int:
        return self.inner.step_count

    @property
    def lr(self) -> float:
        return self.inner.lr

    # ---- state, in the unsharded layout ------------------------------------------------------
    def state_arrays(self) -> dict:
        """Collective over the replicas: the whole stage's buffers by name on replica 0, {} on the others."""
        own = self.inner.state_arrays()                   # "<param>.<buffer>" for this replica's parameters
        first = self.own[0][0]
        buffers = [key.rsplit(".", 1)[1] for key in own if key.rsplit(".", 1)[0] == first]
        gathered = {}
        for buffer in buffers:
            send = self.xp.empty(self.counts[self.replica], dtype=self.flat.dtype)
            self._pack(self.own, (own[f"{name}.{buffer}"] for name, _ in self.own), 0, out=send)
            whole = self.xp.empty(self.flat.shape, dtype=self.flat.dtype) if self.replica == 0 else None
            recv = [self.transport.receiving(whole), (self.counts, self.displacements)] if whole is not None else None
            self.comm.call("Gatherv", self.transport.staged(send), recv, root=0, what="the optimizer state (ZeRO-1)")
            if whole is not None:
                self.transport.unstage(recv[0], whole)
                offset = 0
                for name, p in self.params:
                    gathered[f"{name}.{buffer}"] = whole[offset:offset + p.size].reshape(p.shape)
                    offset += p.size
        return gathered

    def state_meta(self) -> dict:
        return self.inner.state_meta()

    def load_state(self, arrays: dict, meta: dict) -> None:
        """From an unsharded state (any run's, restricted to this stage): keep this replica's part."""
        self.inner.load_state(optimizer_arrays_for(arrays, [name for name, _ in self.own]), meta)

    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (its own parameters' buffers)."""
        return sum(int(a.nbytes) for a in self.inner.state_arrays().values())

    # ---- flat buffers ------------------------------------------------------------------------
    def _pack(self, named, arrays, start: int, out=None) -> None:
        """Copy `arrays` (one per parameter of `named`) one after the other into `out` (self.flat) from `start`."""
        out = self.flat if out is None else out
        offset = start
        for (_, p), array in zip(named, arrays):
            out[offset:offset + p.size] = array.reshape(-1)
            offset += p.size

    @property
    def transport(self) -> Transport:
        """How the flat buffers reach MPI (parallel.transport: direct or through the host)."""
        if self._transport is None:
            self._transport = Transport.for_this_process()
        return self._transport
