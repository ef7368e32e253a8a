"""The pipeline as a Trainer strategy: this rank's stage of a pipeline x data-parallel grid.

    strategy = PipelineStrategy(grid, stage_model, engine, total_parameters)
    Trainer(stage_model.model, PretrainingTask(...), strategy, config=..., optimizer=...).run()

Every rank runs the same tinyllm.trainer.Trainer loop with the same task (the same seeded
batches); the strategy is where the ranks meet:

    gradients    the schedule (parallel.engine): the global batch -> this replica's shard ->
                 m microbatches through the stages; gradients summed over replicas and over
                 the tied embedding pair; the loss broadcast to every rank
    grad_norm    the global norm: squared norms summed over the stages
    batch_loss   evaluation: the batch forward only, chunk to chunk in model order, the loss
                 broadcast from the last stage
    save         one shard per stage plus a manifest (parallel.checkpoint); every rank takes part
    agree_stop   the largest signal number any rank saw (all-reduce MAX), so a SIGTERM that
                 reached one rank stops every rank after the same step, as that signal

Only rank 0 prints and writes metrics (`is_writer`). `fail_at` = (who, step, signal or None,
point) makes `who` (a stage number, or "rR" for world rank R alone) raise (or send itself
the signal) once, at `point` of that step: "gradients" (before the schedule), "norm" (before
the norm's all-reduce), "agreed" (just after the stop was agreed: between the step and its
evaluation), "eval" (the first evaluation batch), "save" (before the collective save),
"saved" (after it). A test hook, set by the failure tests' TINYLLM_PIPELINE_FAIL
(parallel/runner.py); step 0's points are the evaluation before the first step.

Left out: tasks other than pretraining (a stage's forward is the GPT's own next-token
loss; task.loss is not used), evaluation split across replicas (each replica evaluates the
same batches).
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from autograd import backend
from autograd.tensor import Tensor

from . import checkpoint as pipeline_ckpt


class PipelineStrategy:
    """One rank's part of every step, evaluation and checkpoint; see the module docstring."""

    def __init__(self, grid, stage_model, engine, total_parameters: int, tracer=None, fail_at=None):
        self.grid, self.stage_model, self.engine = grid, stage_model, engine
        self.total_parameters = total_parameters
        self.tracer = tracer
        self.fail_at = fail_at
        self.is_writer = grid.rank == 0
        self.ranks = grid.world.Get_size()
        self.gradients_done = None   # when the last step's gradients were ready (for the trace)
        self.step = 0                # the step whose work, evaluation and save are under way (fail_at)

    def inject_failure(self, point: str) -> None:
        """fail_at's failure, if this rank, this step and `point` are the chosen ones (once)."""
        if self.fail_at is None:
            return
        who, step, sig, at = self.fail_at
        me = f"r{self.grid.rank}" if isinstance(who, str) else self.grid.stage
        if (who, step, at) != (me, self.step, point):
            return
        self.fail_at = None
        if sig is not None:   # as a scheduler stopping this rank alone would; the line times it for the tests
            print(f"TINYLLM_PIPELINE_FAIL: rank {self.grid.rank} sends itself {sig.name} at step {step} ({point}) "
                  f"at {time.time():.3f}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), sig)
        else:
            raise RuntimeError(f"injected failure on stage {self.grid.stage} at step {step} "
                               "(TINYLLM_PIPELINE_FAIL)")

    def gradients(self, model, task, batches, step: int) -> float:
        self.step = step
        self.inject_failure("gradients")
        idx = np.concatenate([x for x, _ in batches], axis=0)       # (B, T): the global batch
        targets = np.concatenate([y for _, y in batches], axis=0)   # (B, T)
        if self.tracer is not None:
            self.tracer.step = step
        loss = self.engine.compute_gradients(idx, targets, step)
        self.gradients_done = time.perf_counter()
        return loss

    def grad_norm(self, params) -> float:
        self.inject_failure("norm")
        return self.engine.global_grad_norm()

    def batch_loss(self, model, task, batch) -> float:
        """The batch's mean loss: run forward chunk to chunk in model order, broadcast from the last stage."""
        self.inject_failure("eval")
        idx, targets = batch
        sm, grid, p2p = self.stage_model, self.grid, self.engine.p2p
        xp = backend.module_for(sm.model.device)
        p = grid.n_stages
        value = np.array([0.0])
        for chunk in range(sm.n_chunks):
            virtual = chunk * p + grid.stage            # the tag: the boundary a message crosses
            if sm.starts_model(chunk):
                x = idx                                 # host ids: the model checks them there, then moves them
            else:
                x = xp.empty((idx.shape[0], idx.shape[1], sm.config.n_embd), dtype=sm.model.dtype)   # (B, T, C)
                p2p.recv_into(x, (grid.stage - 1) % p, tag=virtual - 1)
                x = Tensor.constant(x)
            out = sm.forward(x, targets if sm.ends_model(chunk) else None, chunk=chunk)
            if sm.ends_model(chunk):
                value[0] = float(out.item())
            else:
                p2p.isend(out.data, (grid.stage + 1) % p, tag=virtual)
        p2p.wait_sends()
        grid.pipe.Bcast(value, root=grid.n_stages - 1)
        return float(value[0])

    def save(self, run_dir, *, weights, optimizer, tokenizer, state: dict, best: bool) -> str | None:
        """Every rank writes its stage's shard (the stage's parameters are all it trains); the path on every rank."""
        self.inject_failure("save")
        path = pipeline_ckpt.save_pipeline_checkpoint(self.grid, self.stage_model, optimizer, run_dir, state,
                                                      tokenizer=tokenizer, best=best)
        path = self.grid.world.bcast(str(path) if path else None, root=0)
        self.inject_failure("saved")
        return path

    def agree_stop(self, seen):
        """After the step's optimizer update (traced as such): the signal any rank saw, on every rank."""
        from mpi4py import MPI  # noqa: PLC0415
        if self.tracer is not None and self.gradients_done is not None:  # the global norm, clipping, the update
            self.tracer.record("optimizer", self.gradients_done, time.perf_counter())
        number = np.array([0 if seen is None else int(seen)], dtype=np.int64)
        self.grid.world.Allreduce(MPI.IN_PLACE, number, op=MPI.MAX)
        self.inject_failure("agreed")
        return signal.Signals(int(number[0])) if number[0] else None

    def num_parameters(self, model) -> int:
        """The whole model's (this rank holds only its stage)."""
        return self.total_parameters
