"""The pipeline as a Trainer strategy: this rank's stage of a pipeline x data-parallel grid.

    strategy = PipelineStrategy(grid, stage_model, engine, total_parameters)
    # parallel.runner.PipelineLayout makes it; tinyllm.build.build_run gives it to the Trainer

Every rank runs the same tinyllm.trainer.Trainer loop with the same task (the same seeded
batches); the strategy is where the ranks meet:

    gradients    the schedule (parallel.engine): the global batch -> this replica's shard ->
                 m microbatches through the stages; gradients summed over replicas and over
                 the tied embedding pair; the loss broadcast to every rank
    grad_norm    the global norm: squared norms summed over the stages
    step         the optimizer's update of this stage's parameters (with ZeRO-1, of this
                 replica's shard, then the parameters gathered: parallel.zero)
    batch_loss   evaluation: the engine's forward only, the loss broadcast from the last stage
    save         one shard per stage plus a manifest (parallel.checkpoint); every rank takes part
    agree_stop   the largest signal number any rank saw (all-reduce MAX), so a SIGTERM that
                 reached one rank stops every rank after the same step, as that signal

Only rank 0 prints and writes metrics (`is_writer`).

Left out: tasks other than pretraining (a stage's forward is the GPT's own next-token
loss; task.loss is not used), evaluation split across replicas (each replica evaluates the
same batches).
"""
from __future__ import annotations

import signal
import time

import numpy as np

from . import checkpoint as pipeline_ckpt


class PipelineStrategy:
    """One rank's part of every step, evaluation and checkpoint; see the module docstring."""

    def __init__(self, grid, stage_model, engine, total_parameters: int, tracer=None):
        self.grid, self.stage_model, self.engine = grid, stage_model, engine
        self.total_parameters = total_parameters
        self.tracer = tracer
        self.is_writer = grid.rank == 0
        self.ranks = grid.world.Get_size()
        self.gradients_done = None   # when the last step's gradients were ready (for the trace)

    def gradients(self, model, task, batches, step: int) -> float:
        idx = np.concatenate([x for x, _ in batches], axis=0)       # (B, T): the global batch
        targets = np.concatenate([y for _, y in batches], axis=0)   # (B, T)
        if self.tracer is not None:
            self.tracer.step = step
        loss = self.engine.compute_gradients(idx, targets, step)
        self.gradients_done = time.perf_counter()
        return loss

    def grad_norm(self, params) -> float:
        return self.engine.global_grad_norm()

    def step(self, optimizer, lr: float) -> None:
        optimizer.step(lr)

    def batch_loss(self, model, task, batch) -> float:
        """The batch's mean loss: the engine's forward through the stages, the same on every rank."""
        idx, targets = batch
        return self.engine.forward_only(idx, targets)

    def save(self, run_dir, *, weights, optimizer, tokenizer, state: dict, best: bool) -> str | None:
        """Every rank writes its stage's shard (the stage's parameters are all it trains); the path on every rank."""
        path = pipeline_ckpt.save_pipeline_checkpoint(self.grid, self.stage_model, optimizer, run_dir, state,
                                                      tokenizer=tokenizer, best=best)
        return self.grid.world.bcast(str(path) if path else None, root=0)

    def agree_stop(self, seen):
        """After the step's optimizer update (traced as such): the signal any rank saw, on every rank."""
        from mpi4py import MPI  # noqa: PLC0415
        if self.tracer is not None and self.gradients_done is not None:  # the global norm, clipping, the update
            self.tracer.record("optimizer", self.gradients_done, time.perf_counter())
        number = np.array([0 if seen is None else int(seen)], dtype=np.int64)
        self.grid.world.Allreduce(MPI.IN_PLACE, number, op=MPI.MAX)
        return signal.Signals(int(number[0])) if number[0] else None

    def num_parameters(self, model) -> int:
        """The whole model's (this rank holds only its stage)."""
        return self.total_parameters
