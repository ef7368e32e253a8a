"""Execute a pipeline schedule on real ranks: one training step's gradients, exactly.

`PipelineEngine.compute_gradients(idx, targets)` takes the GLOBAL batch (every rank gets
the same one from the same seeded sampler), keeps this replica's shard, cuts it into m
microbatches and runs the stage's action list from `parallel.schedules`, one (microbatch,
chunk) unit at a time (a rank holds one chunk, or v of them under interleaving):

    forward          the model's first chunk embeds its ids; others take the received
                     activation as a leaf tensor; the model's last ends with the mean loss
    backward         the last chunk backpropagates loss * 1/(m * D); others the received gradient
    backward_input   zero-bubble's B: the same, by autograd.tensor.split_backward, which leaves
                     the weights' gradients for later
    backward_weight  zero-bubble's W: that microbatch's deferred weight gradients, now
    send/recv        activations downstream, gradients upstream (parallel.p2p); the tag names
                     the (virtual) stage boundary, so chunks' messages never mix
    allreduce        gradients summed over the D replicas of the stage (one flat buffer, in place;
                     with ZeRO-1 a reduce-scatter instead, parallel.zero), and the tied
                     embedding's two gradients summed between stage 0 and the last

Why this equals the single process: the single-process loss is the mean over all B*T
positions of the global batch. With B = D * m * b, that is the mean over D * m microbatches
of each microbatch's mean (equal sizes), so each microbatch's loss gradient is scaled by
1/(m * D) and every other factor is the chain rule through the same weights; sums over
microbatches (autograd's `+=` into .grad) and over replicas (Allreduce) give the
single-process gradient up to the order of floating-point additions (~1e-16 relative).
A split backward adds up to the whole one bit for bit, and recomputation repeats the same
forward, so neither changes a number.

`forward_only(idx, targets)` is evaluation: a batch forward through the stages, no graph.
`global_grad_norm()` adds every stage's squared gradient norm over the pipeline (the tied
weight counted once); all replicas hold the same gradients after the all-reduce (with
ZeRO-1 each holds its part, so the squares are summed over every rank).

Left out: overlapping the gradient all-reduce with the drain, more than one schedule per
step, tensor parallelism.
"""
from __future__ import annotations

import math
import time

import numpy as np

from autograd import backend
from autograd.tensor import Tensor, split_backward
from tinyllm.dropout import dropout_rows
from tinyllm.optim import grad_square_sum

from . import deadline
from . import schedules as S
from .p2p import ACTIVATION, GRADIENT, BufferPool, PointToPoint, describe_tag, message_tag
from .simulate import simulate
from .transport import Transport


class PipelineEngine:
    """Runs one stage of one replica; see the module docstring. `zero`: a parallel.zero.ZeroOptimizer or None."""

    def __init__(self, stage_model, grid, schedule: str, n_microbatches: int, global_batch: int, tracer=None,
                 zero=None):
        self.stage_model = stage_model
        self.grid = grid
        self.n_stages = grid.n_stages
        self.stage = grid.stage
        self.n_replicas = grid.shape.data_parallel
        self.n_microbatches = n_microbatches
        self.n_chunks = stage_model.n_chunks
        self.n_boundaries = max(1, self.n_stages * self.n_chunks - 1)     # between consecutive virtual stages
        check_batch_split(global_batch, self.n_replicas, n_microbatches)
        self.micro_batch = global_batch // (self.n_replicas * n_microbatches)
        self.schedule_name = schedule
        schedule_fn = S.get_schedule(schedule).for_chunks(self.n_chunks)
        self.actions = schedule_fn(self.n_stages, n_microbatches, self.stage)
        self.params = [(n, p) for n, p in stage_model.named_parameters()]
        self.weights = [p for _, p in self.params]
        self.transport = Transport.for_this_process()   # device arrays: direct or through the host
        self.p2p = PointToPoint(grid.pipe, self.transport, self.n_boundaries)
        self.tracer = tracer
        self.zero = zero
        model = stage_model.model
        shape = stage_model.activation_shape(self.micro_batch)
        simulated = simulate(schedule_fn, self.n_stages, n_microbatches)
        # receive buffers live until their last use: an activation until its backward, a gradient
        # for the backward only; with a split backward both until W, which may read them
        split = any(a.kind == S.BACKWARD_WEIGHT for a in self.actions)
        peak = simulated.peak_until_weight[self.stage] if split else simulated.peak_in_flight[self.stage]
        receives_act = any(a.kind == S.RECV_ACT for a in self.actions)
        receives_grad = any(a.kind == S.RECV_GRAD for a in self.actions)
        self.act_pool = BufferPool(peak if receives_act else 0, shape, model.dtype, model.device)
        self.grad_pool = BufferPool((self.stage + 1 if split else 1) if receives_grad else 0, shape, model.dtype,
                                    model.device)
        self.peak_alive_activations = 0
        self._flat = None  # one buffer holding every gradient, for the data-parallel Allreduce

    # ---- one step ------------------------------------------------------------------------
    def compute_gradients(self, idx, targets, step: int | None = None) -> float:
        """Run the schedule on the global batch (B, T); gradients land in .grad. Returns the step's mean loss.

        `step` keys the dropout masks, with each microbatch's rows at their place in the global
        batch, so any layout draws one process's masks (tinyllm/dropout.py, DropoutMasks).
        """
        sm = self.stage_model
        xp = backend.module_for(sm.model.device)
        b, m = self.micro_batch, self.n_microbatches
        shard = slice(self.grid.replica * m * b, (self.grid.replica + 1) * m * b)
        idx, targets = idx[shard], targets[shard]   # host ids: the model checks them there, then moves them
        loss_scale = 1.0 / (m * self.n_replicas)
        # all keyed by (microbatch, chunk)
        inputs, outputs, received, grads, deferred = {}, {}, {}, {}, {}
        loss_sum = 0.0
        alive = 0
        for p in sm.model.parameters():
            p.grad = None
        watchdog = deadline.current()
        if watchdog is not None:
            watchdog.step = step           # named if a wait of this step passes its deadline
        for action in self.actions:
            mb, kind, chunk = action.microbatch, action.kind, action.chunk
            key = (mb, chunk)
            virtual = chunk * self.n_stages + self.stage
            start = time.perf_counter()
            if kind == S.RECV_ACT:
                received[key] = self.act_pool.take()
                tag = self._tag(ACTIVATION, mb, virtual - 1)
                self.p2p.recv_into(received[key], action.peer, tag, describe_tag(tag, self.n_boundaries))
            elif kind == S.FORWARD:
                if sm.starts_model(chunk):
                    stage_input = idx[mb * b:(mb + 1) * b]
                else:
                    stage_input = inputs[key] = Tensor(received[key], requires_grad=True)
                with dropout_rows(sm.model, step, shard.start + mb * b):
                    outputs[key] = sm.forward(stage_input, targets[mb * b:(mb + 1) * b] if sm.ends_model(chunk)
                                              else None, chunk=chunk)
                if sm.ends_model(chunk):   # summed where it is: on a GPU, read once in mean_loss
                    loss_sum = loss_sum + outputs[key].data.astype(np.float64)
                alive += 1
                self.peak_alive_activations = max(self.peak_alive_activations, alive)
            elif kind == S.SEND_ACT:
                self.p2p.isend(outputs[key].data, action.peer, self._tag(ACTIVATION, mb, virtual))
            elif kind == S.RECV_GRAD:
                grads[key] = self.grad_pool.take()
                tag = self._tag(GRADIENT, mb, virtual)
                self.p2p.recv_into(grads[key], action.peer, tag, describe_tag(tag, self.n_boundaries))
            elif kind in (S.BACKWARD, S.BACKWARD_INPUT):
                out = outputs.pop(key)
                seed = (xp.full((), loss_scale, dtype=out.dtype) if sm.ends_model(chunk)   # made on the device
                        else grads[key])
                if kind == S.BACKWARD:
                    out.backward(seed)
                    if key in grads:
                        self.grad_pool.give_back(grads.pop(key))
                else:                                      # W may read the received gradient (passed on by Add)
                    deferred[key] = split_backward(out, self.weights, seed)
                alive -= 1
            elif kind == S.SEND_GRAD:
                self.p2p.isend(inputs.pop(key).grad, action.peer, self._tag(GRADIENT, mb, virtual - 1))
                if key not in deferred:                    # W may still read the stage input
                    self.act_pool.give_back(received.pop(key))
            elif kind == S.BACKWARD_WEIGHT:
                deferred.pop(key).run()
                if key in grads:
                    self.grad_pool.give_back(grads.pop(key))
                if key in received and key not in inputs:  # its input gradient is sent: the buffer is free
                    self.act_pool.give_back(received.pop(key))
            elif kind == S.ALLREDUCE:
                self.p2p.wait_sends()
                self.allreduce_gradients()
            elif kind == S.STEP:
                pass  # the training loop steps the optimizer after clipping with the global norm
            if self.tracer is not None and kind != S.STEP:
                self.tracer.record(kind, start, time.perf_counter(), mb, chunk if self.n_chunks > 1 else None)
        return self.mean_loss(loss_sum * loss_scale)

    def forward_only(self, idx, targets) -> float:
        """A batch's mean loss without a graph (evaluation): the whole batch (B, T) runs forward chunk
        to chunk in model order on every replica, and the last stage broadcasts the loss over the pipeline."""
        sm, grid, p = self.stage_model, self.grid, self.n_stages
        xp = backend.module_for(sm.model.device)
        value = np.array([0.0])
        for chunk in range(sm.n_chunks):
            virtual = chunk * p + grid.stage            # the tag: the boundary a message crosses
            if sm.starts_model(chunk):
                x = idx                                 # host ids: the model checks them there, then moves them
            else:
                x = xp.empty((idx.shape[0], idx.shape[1], sm.config.n_embd), dtype=sm.model.dtype)   # (B, T, C)
                self.p2p.recv_into(x, (grid.stage - 1) % p, tag=virtual - 1)
                x = Tensor.constant(x)
            out = sm.forward(x, targets if sm.ends_model(chunk) else None, chunk=chunk)
            if sm.ends_model(chunk):
                value[0] = float(out.item())
            else:
                self.p2p.isend(out.data, (grid.stage + 1) % p, tag=virtual)
        self.p2p.wait_sends()
        grid.pipe.Bcast(value, root=p - 1)
        return float(value[0])

    def _tag(self, kind: int, microbatch: int, boundary: int) -> int:
        """The MPI tag of a message crossing `boundary` (between virtual stages boundary and boundary + 1)."""
        return message_tag(kind, microbatch, boundary, self.n_boundaries)

    # ---- reductions ----------------------------------------------------------------------
    def allreduce_gradients(self) -> None:
        """Sum gradients over the data-parallel replicas (one flat buffer), then over the tied pair.

        With ZeRO-1 the tied pair first (within the replica), then a reduce-scatter over the replicas.
        """
        params = [p for _, p in self.params]
        for p in params:
            if p.grad is None:  # a parameter this step did not reach still takes part in the sums
                p.grad = backend.get_array_module(p.data).zeros_like(p.data)
        if self.zero is not None:
            self._sum_tied()
            self.zero.reduce_scatter_gradients()
            return
        if self.n_replicas > 1:
            xp = backend.get_array_module(params[0].data)
            total = sum(int(p.size) for p in params)
            if self._flat is None:
                self._flat = xp.empty(total, dtype=params[0].dtype)
            offset = 0
            for p in params:
                self._flat[offset:offset + p.size] = p.grad.reshape(-1)
                offset += p.size
            self.transport.allreduce(self.grid.data, self._flat, what="the gradients")
            offset = 0
            for p in params:
                p.grad = self._flat[offset:offset + p.size].reshape(p.shape).copy()
                offset += p.size
        self._sum_tied()

    def _sum_tied(self) -> None:
        tied = self.stage_model.tied_name()
        if tied is not None:
            self.transport.allreduce(self.grid.tied, dict(self.params)[tied].grad,
                                     what="the tied embedding's gradient")

    def global_grad_norm(self) -> float:
        """L2 norm of the whole model's gradient: squared norms summed over the pipeline stages
        (and over the replicas with ZeRO-1, where each holds the gradients of its own parameters)."""
        from mpi4py import MPI  # noqa: PLC0415
        counted = [p for name, p in self.params if self.stage_model.counted_in_norm(name)]
        total = np.array(backend.read_scalars(grad_square_sum(counted)), dtype=np.float64)   # one copy on a GPU
        (self.grid.pipe if self.zero is None else self.grid.world).call("Allreduce", MPI.IN_PLACE, total, op=MPI.SUM,
                                                                      what="the squared gradient norms")
        return math.sqrt(float(total[0]))

    def mean_loss(self, local_scaled_loss: float) -> float:
        """The step's loss on every rank: summed over replicas on the last stage, then broadcast."""
        from mpi4py import MPI  # noqa: PLC0415
        value = np.array(backend.read_scalars(local_scaled_loss if self.stage_model.is_last else 0.0),
                         dtype=np.float64)   # one copy on a GPU
        if self.stage_model.is_last and self.n_replicas > 1:
            self.grid.data.call("Allreduce", MPI.IN_PLACE, value, op=MPI.SUM, what="the step's loss")
        self.grid.pipe.call("Bcast", value, root=self.n_stages - 1, what="the step's loss")
        return float(value[0])


def check_batch_split(global_batch: int, data_parallel: int, n_microbatches: int) -> None:
    """The global batch must split into D replicas x m microbatches of equal size."""
    if global_batch % (data_parallel * n_microbatches):
        raise ValueError(
            f"--batch-size {global_batch} does not split into --data-parallel {data_parallel} x "
            f"--microbatches {n_microbatches} equal microbatches: use a batch size that is a multiple of "
            f"{data_parallel * n_microbatches}")
