"""Execute a pipeline schedule on real ranks: one training step's gradients, exactly.

`PipelineEngine.compute_gradients(idx, targets)` takes the GLOBAL batch (every rank gets
the same one from the same seeded sampler), keeps this replica's shard, cuts it into m
microbatches and runs the stage's action list from `parallel.schedules`:

    forward      stage 0 embeds its ids; others take the received activation as a leaf
                 tensor; the last stage ends with the microbatch's mean loss
    backward     the last stage backpropagates loss * 1/(m * D); others the received gradient
    send/recv    activations downstream, gradients upstream (parallel.p2p)
    allreduce    gradients summed over the D replicas of the stage (one flat buffer, in place),
                 then the tied embedding's two gradients summed between stage 0 and the last

Why this equals the single process: the single-process loss is the mean over all B*T
positions of the global batch. With B = D * m * b, that is the mean over D * m microbatches
of each microbatch's mean (equal sizes), so each microbatch's loss gradient is scaled by
1/(m * D) and every other factor is the chain rule through the same weights; sums over
microbatches (autograd's `+=` into .grad) and over replicas (Allreduce) give the
single-process gradient up to the order of floating-point additions (~1e-16 relative).

`global_grad_norm()` adds every stage's squared gradient norm over the pipeline (the tied
weight counted once); all replicas hold the same gradients after the all-reduce.

Left out: interleaved 1F1B (simulated only: it needs each rank to hold several
non-contiguous chunks), a real split backward (zero-bubble's B runs the whole backward and W is a no-op,
so ZB-H1 is exact but no faster on real ranks yet), interleaved chunks, activation
recomputation.
"""
from __future__ import annotations

import math
import time

import numpy as np

from autograd import backend
from autograd.tensor import Tensor
from tinyllm.nn import dropout_rows
from tinyllm.optim import grad_square_sum

from . import schedules as S
from .p2p import ACTIVATION, GRADIENT, BufferPool, PointToPoint, message_tag
from .simulate import simulate


class PipelineEngine:
    """Runs one stage of one replica; see the module docstring."""

    def __init__(self, stage_model, grid, schedule: str, n_microbatches: int, global_batch: int, tracer=None):
        self.stage_model = stage_model
        self.grid = grid
        self.n_stages = grid.n_stages
        self.stage = grid.stage
        self.n_replicas = grid.shape.data_parallel
        self.n_microbatches = n_microbatches
        check_batch_split(global_batch, self.n_replicas, n_microbatches)
        self.micro_batch = global_batch // (self.n_replicas * n_microbatches)
        if schedule not in S.RUNNER_SCHEDULES:
            raise ValueError(f"schedule {schedule!r} cannot run on real ranks yet (it needs non-contiguous stages): "
                             f"use one of {', '.join(S.RUNNER_SCHEDULES)}")
        self.schedule_name = schedule
        self.actions = S.get_schedule(schedule)(self.n_stages, n_microbatches, self.stage)
        self.params = [(n, p) for n, p in stage_model.named_parameters()]
        self.p2p = PointToPoint(grid.pipe)
        self.tracer = tracer
        model = stage_model.model
        shape = stage_model.activation_shape(self.micro_batch)
        peak = simulate(S.get_schedule(schedule), self.n_stages, n_microbatches).peak_in_flight[self.stage]
        # receive buffers: activations alive until their backward, one gradient at a time
        self.act_pool = BufferPool(0 if stage_model.is_first else peak, shape, model.dtype, model.device)
        self.grad_pool = BufferPool(0 if stage_model.is_last else 1, shape, model.dtype, model.device)
        self.peak_alive_activations = 0
        self._flat = None  # one buffer holding every gradient, for the data-parallel Allreduce

    # ---- one step ------------------------------------------------------------------------
    def compute_gradients(self, idx, targets, step: int | None = None) -> float:
        """Run the schedule on the global batch (B, T); gradients land in .grad. Returns the step's mean loss.

        `step` keys the dropout masks, with each microbatch's rows at their place in the global
        batch, so any layout draws one process's masks (tinyllm/nn.py, DropoutMasks).
        """
        xp = backend.module_for(self.stage_model.model.device)
        b, m = self.micro_batch, self.n_microbatches
        shard = slice(self.grid.replica * m * b, (self.grid.replica + 1) * m * b)
        idx, targets = idx[shard], targets[shard]   # host ids: the model checks them there, then moves them
        loss_scale = 1.0 / (m * self.n_replicas)
        inputs, outputs, received = {}, {}, {}
        loss_sum = 0.0
        alive = 0
        for p in self.stage_model.model.parameters():
            p.grad = None
        for action in self.actions:
            mb, kind = action.microbatch, action.kind
            start = time.perf_counter()
            if kind == S.RECV_ACT:
                buffer = self.act_pool.take()
                self.p2p.recv_into(buffer, action.peer, message_tag(ACTIVATION, mb))
                received[mb] = buffer
            elif kind == S.FORWARD:
                if self.stage_model.is_first:
                    stage_input = idx[mb * b:(mb + 1) * b]
                else:
                    stage_input = inputs[mb] = Tensor(received[mb], requires_grad=True)
                with dropout_rows(self.stage_model.model, step, shard.start + mb * b):
                    outputs[mb] = self.stage_model.forward(
                        stage_input, targets[mb * b:(mb + 1) * b] if self.stage_model.is_last else None)
                if self.stage_model.is_last:   # summed where it is: on a GPU, read once in mean_loss
                    loss_sum = loss_sum + outputs[mb].data.astype(np.float64)
                alive += 1
                self.peak_alive_activations = max(self.peak_alive_activations, alive)
            elif kind == S.SEND_ACT:
                self.p2p.isend(outputs[mb].data, action.peer, message_tag(ACTIVATION, mb))
            elif kind == S.RECV_GRAD:
                received[("grad", mb)] = self.grad_pool.take()
                self.p2p.recv_into(received[("grad", mb)], action.peer, message_tag(GRADIENT, mb))
            elif kind in (S.BACKWARD, S.BACKWARD_INPUT):
                out = outputs.pop(mb)
                if self.stage_model.is_last:
                    out.backward(xp.full((), loss_scale, dtype=out.dtype))   # made on the device, no copy
                else:
                    grad = received.pop(("grad", mb))
                    out.backward(grad)
                    self.grad_pool.give_back(grad)
                alive -= 1
            elif kind == S.SEND_GRAD:
                x_in = inputs.pop(mb)
                self.p2p.isend(x_in.grad, action.peer, message_tag(GRADIENT, mb))
                self.act_pool.give_back(received.pop(mb))
            elif kind == S.BACKWARD_WEIGHT:
                pass  # folded into BACKWARD_INPUT: the engine has no split backward yet
            elif kind == S.ALLREDUCE:
                self.p2p.wait_sends()
                self.allreduce_gradients()
            elif kind == S.STEP:
                pass  # the training loop steps the optimizer after clipping with the global norm
            if self.tracer is not None and kind != S.STEP:
                self.tracer.record(kind, start, time.perf_counter(), mb)
        return self.mean_loss(loss_sum * loss_scale)

    # ---- reductions ----------------------------------------------------------------------
    def allreduce_gradients(self) -> None:
        """Sum gradients over the data-parallel replicas (one flat buffer), then over the tied pair."""
        from mpi4py import MPI  # noqa: PLC0415
        params = [p for _, p in self.params]
        for p in params:
            if p.grad is None:  # a parameter this step did not reach still takes part in the sums
                p.grad = backend.get_array_module(p.data).zeros_like(p.data)
        if self.n_replicas > 1:
            xp = backend.get_array_module(params[0].data)
            total = sum(int(p.size) for p in params)
            if self._flat is None:
                self._flat = xp.empty(total, dtype=params[0].dtype)
            offset = 0
            for p in params:
                self._flat[offset:offset + p.size] = p.grad.reshape(-1)
                offset += p.size
            self._allreduce_inplace(self.grid.data, self._flat, MPI)
            offset = 0
            for p in params:
                p.grad = self._flat[offset:offset + p.size].reshape(p.shape).copy()
                offset += p.size
        tied = self.stage_model.tied_name()
        if tied is not None:
            grad = dict(self.params)[tied].grad
            self._allreduce_inplace(self.grid.tied, grad, MPI)

    def _allreduce_inplace(self, comm, array, MPI) -> None:
        if backend.is_cupy_array(array) and not self.p2p.cuda_aware:
            host = backend.to_numpy(array)
            comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
            array.set(host)
            return
        backend.synchronize(array)
        comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)

    def global_grad_norm(self) -> float:
        """L2 norm of the whole model's gradient: squared norms summed over the pipeline stages."""
        from mpi4py import MPI  # noqa: PLC0415
        counted = [p for name, p in self.params if self.stage_model.counted_in_norm(name)]
        total = np.array(backend.read_scalars(grad_square_sum(counted)), dtype=np.float64)   # one copy on a GPU
        self.grid.pipe.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
        return math.sqrt(float(total[0]))

    def mean_loss(self, local_scaled_loss: float) -> float:
        """The step's loss on every rank: summed over replicas on the last stage, then broadcast."""
        from mpi4py import MPI  # noqa: PLC0415
        value = np.array(backend.read_scalars(local_scaled_loss if self.stage_model.is_last else 0.0),
                         dtype=np.float64)   # one copy on a GPU
        if self.stage_model.is_last and self.n_replicas > 1:
            self.grid.data.Allreduce(MPI.IN_PLACE, value, op=MPI.SUM)
        self.grid.pipe.Bcast(value, root=self.n_stages - 1)
        return float(value[0])


def check_batch_split(global_batch: int, data_parallel: int, n_microbatches: int) -> None:
    """The global batch must split into D replicas x m microbatches of equal size."""
    if global_batch % (data_parallel * n_microbatches):
        raise ValueError(
            f"--batch-size {global_batch} does not split into --data-parallel {data_parallel} x "
            f"--microbatches {n_microbatches} equal microbatches: use a batch size that is a multiple of "
            f"{data_parallel * n_microbatches}")
