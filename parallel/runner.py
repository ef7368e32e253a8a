"""Pipeline- and data-parallel pretraining: tinyllm's training loop with a schedule inside.

    mpiexec -n 4 tinyllm train --pipeline-stages 2 --data-parallel 2 --microbatches 8 --schedule 1f1b
    mpiexec -n 4 python -m parallel.runner CONFIG.json [--trace trace.json]   # CONFIG: TrainConfig fields

`run_pipeline(config)` (what `tinyllm train` calls) runs on every rank. Each rank builds the whole GPT from the seed
(the weights of a single-process run), prunes it to its stage (`parallel.stage`), and
hands `tinyllm.train.Trainer` two replacements for one step's pieces:

    compute_gradients  the schedule (`parallel.engine`): the global batch -> this replica's
                       shard -> m microbatches through the stages; gradients summed over
                       replicas and over the tied embedding pair; the loss broadcast
    grad_norm_fn       the global norm: squared norms summed over the stages

so clipping, AdamW, the learning-rate schedule, logging and metrics are the single
process's code. Evaluation runs the stages forward only. Checkpoints are sharded per stage
(`parallel.checkpoint`) and resume into any stage count. Only rank 0 prints and writes
metrics.

Failure: `run_rank` wraps the body of every rank. A bad combination of flags, found from the
config before any message is sent, makes rank 0 print one line and every rank exit with
status 2. A setup error found later (missing file, mismatched checkpoint) prints one line
and aborts with status 2; any other exception prints the rank and the traceback to stderr,
then `MPI.COMM_WORLD.Abort(1)` ends every rank, so a failing stage never leaves its
neighbours blocked in a receive.

Left out: dropout-exact pipelining (each stage draws its own masks), evaluation split
across replicas (each replica evaluates the same batches), elastic restarts.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from autograd import backend, no_grad
from autograd.tensor import Tensor

from . import checkpoint as pipeline_ckpt
from .engine import PipelineEngine, check_batch_split
from .grid import Grid, GridShape
from .partition import make_partition, stage_costs
from .schedules import theoretical_bubble
from .stage import StageModel, block_parameter_counts, measure_block_times
from .trace import Tracer, measured_bubble, write_trace

FAIL_ENV = "TINYLLM_PIPELINE_FAIL"  # "STAGE:STEP[:SIGNAL]": on that stage at that step, raise (or send
                                    # this rank SIGNAL, e.g. SIGTERM) -- for the failure tests


def require_mpi():
    """mpi4py's MPI module, or an error saying how to install it."""
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError:
        raise SystemExit("pipeline and data parallelism need mpi4py and an MPI (mpiexec): "
                         "pip install 'tinyllm[mpi]', then run e.g. "
                         "mpiexec -n 2 tinyllm train --pipeline-stages 2") from None
    return MPI


def run_rank(body, *args, **kwargs):
    """Run `body` on this rank; on any exception print it with the rank and abort every rank."""
    MPI = require_mpi()
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    try:
        return body(*args, **kwargs)
    except FlagError as error:  # every rank raised it before any message: all exit, no abort
        if rank == 0:
            print(f"tinyllm train: error (rank 0): {error}", file=sys.stderr, flush=True)
        return 2
    except SetupError as error:  # a bad file or checkpoint: one line, not one traceback per rank
        if rank != 0:
            time.sleep(2.0)  # rank 0 usually has the same error: let its line be the only one
        _abort(world, 2, f"tinyllm train: error (rank {rank}): {error}")
    except SystemExit as exit_:
        if exit_.code in (None, 0):
            raise
        _abort(world, 2 if isinstance(exit_.code, str) else int(exit_.code), f"[rank {rank}] {exit_.code}")
    except BaseException as error:  # noqa: BLE001 - every failure must end every rank
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        _abort(world, 1, f"[rank {rank} of {world.Get_size()}] failed: {error}\n{text}")


ABORT_GRACE_S = 1.0  # time for mpiexec to forward the last line before Abort tears down the pipes


def _abort(world, status: int, message: str) -> None:
    """Print `message` to stderr, give mpiexec a moment to forward it, then end every rank."""
    print(message, file=sys.stderr, flush=True)
    time.sleep(ABORT_GRACE_S)  # Abort may kill the forwarding before it reads a line written just now
    world.Abort(status)


class SetupError(ValueError):
    """A problem with the flags, the data or the checkpoint, found before training starts."""


class FlagError(SetupError):
    """A bad combination of flags, found from the config alone before any rank sends a message.

    Every rank raises the same one at the same point, so every rank can simply exit with
    status 2 (no `Abort`, whose teardown can drop the error line before mpiexec prints it).
    """


class PipelineTrainer:
    """Builds a Trainer whose step is this rank's part of the pipeline (see module docstring)."""

    def __init__(self, config, progress_stream=None, trace_path: str | None = None):
        try:  # the config alone decides these, so every rank fails here together
            GridShape(config.pipeline_stages, config.data_parallel).check_world(require_mpi().COMM_WORLD.Get_size())
            check_batch_split(config.batch_size * config.grad_accum, config.data_parallel,
                              config.microbatches or config.grad_accum)
        except ValueError as error:
            raise FlagError(str(error)) from error
        try:
            self._build(config, progress_stream, trace_path)
        except (ValueError, OSError) as error:
            raise SetupError(str(error)) from error

    def _build(self, config, progress_stream, trace_path) -> None:
        from tinyllm import checkpoint as ckpt  # noqa: PLC0415
        from tinyllm import io  # noqa: PLC0415
        from tinyllm.data import check_split_fits, prepare_dataset, resolve_corpus  # noqa: PLC0415
        from tinyllm.model import GPT, GPTConfig  # noqa: PLC0415
        from tinyllm.train import ConfigError, Trainer, make_optimizer  # noqa: PLC0415
        MPI = require_mpi()
        self.config = config
        self.grid = Grid(GridShape(config.pipeline_stages, config.data_parallel), MPI.COMM_WORLD)
        grid = self.grid
        self.is_root = grid.rank == 0
        stream = progress_stream or sys.stderr
        log = (lambda message: print(message, file=stream, flush=True)) if self.is_root else (lambda message: None)
        self.log = log
        microbatches = config.microbatches or config.grad_accum
        global_batch = config.batch_size * config.grad_accum

        run_dir = Path(config.out)
        if not config.resume and (run_dir / "last").exists():
            raise ConfigError(f"--out {config.out}: already holds a run (checkpoint {run_dir / 'last'}); "
                              "pass --resume to continue it, or choose a new --out directory")
        # rank 0 tokenizes (or finds the cache) first; the others then read the same cache
        corpus = resolve_corpus(config.data, config.data_ext)
        dataset = None
        if self.is_root:
            run_dir.mkdir(parents=True, exist_ok=True)
            dataset = prepare_dataset(corpus, config.tokenizer, run_dir, vocab_size=config.vocab_size,
                                      val_fraction=config.val_fraction, log=log)
        grid.world.Barrier()
        if dataset is None:
            dataset = prepare_dataset(corpus, config.tokenizer, run_dir, vocab_size=config.vocab_size,
                                      val_fraction=config.val_fraction)
        model_config = config.model_config(dataset.vocab_size)
        check_split_fits(dataset, model_config.block_size)
        model = GPT(model_config, seed=config.seed, dtype=config.dtype, device=config.device)
        self.total_parameters = model.num_parameters()

        partition, costs, unit = self._partition(model, global_batch // (config.data_parallel * microbatches))
        log(f"pipeline: {grid.n_stages} stages x {grid.shape.data_parallel} data-parallel replicas "
            f"({grid.world.Get_size()} ranks), {microbatches} microbatches of "
            f"{global_batch // (config.data_parallel * microbatches)} sequences, schedule {config.schedule}, "
            f"partition {config.partition}; theoretical bubble "
            f"{theoretical_bubble(grid.n_stages, microbatches):.3f}\n{partition.describe(costs, unit)}")
        self.stage_model = StageModel(model, partition, grid.stage)
        self.tracer = Tracer(grid.rank, time.perf_counter()) if trace_path else None
        self.trace_path = trace_path
        self.engine = PipelineEngine(self.stage_model, grid, config.schedule, microbatches, global_batch,
                                     tracer=self.tracer)
        optimizer = make_optimizer(config, self.stage_model.named_parameters())
        self.trainer = Trainer(config, model, optimizer, dataset.train, dataset.val,
                               tokenizer=dataset.tokenizer, run_dir=run_dir,
                               compute_gradients=self.compute_gradients, grad_norm_fn=self.grad_norm,
                               progress_stream=progress_stream, is_writer=self.is_root)
        self._bind_trainer_hooks()
        if config.resume:
            checkpoint = ckpt.load_checkpoint(run_dir)
            saved = GPTConfig.from_dict(checkpoint.state["model_config"])
            if saved != model_config:
                raise ckpt.CheckpointError(f"{checkpoint.path}: saved with model {saved}, this run has {model_config}; "
                                           "resume with the same model settings")
            self.trainer.restore(ckpt.restrict(checkpoint, [n for n, _ in self.stage_model.named_parameters()]))
            log(f"resuming {run_dir} from {checkpoint.path} at step {self.trainer.step}")
        if self.is_root:
            io.write_json(run_dir / "config.json", {"train": config.to_dict(), "model": model_config.to_dict()})
            log(f"model: {self.total_parameters:,} parameters; {config.tokens_per_step:,} tokens per step; "
                f"run directory {run_dir}")
        self.fail_at = _parse_fail(os.environ.get(FAIL_ENV))

    def _partition(self, model, micro_batch: int):
        config = self.config
        n_layer, stages = model.config.n_layer, config.pipeline_stages
        costs, first, last, unit = None, 0.0, 0.0, ""
        if config.partition == "params":
            costs, first, last = block_parameter_counts(model)
            unit = " parameters"
        elif config.partition == "time":
            times = measure_block_times(model, micro_batch) if self.is_root else None
            costs, first, last = self.grid.world.bcast(times, root=0)  # every rank must agree on one layout
            unit = " s"
        partition = make_partition(config.partition, n_layer, stages, costs, first, last)
        shown = None
        if costs is not None:
            shown = stage_costs(partition, costs, first, last)
        return partition, shown, unit

    # ---- the Trainer's seams ---------------------------------------------------------------
    def compute_gradients(self, model, batches) -> float:
        step = self.trainer.step + 1
        if self.fail_at is not None and self.fail_at[:2] == (self.grid.stage, step):
            if self.fail_at[2] is not None:
                os.kill(os.getpid(), self.fail_at[2])       # as a scheduler stopping this rank alone would
            else:
                raise RuntimeError(f"injected failure on stage {self.grid.stage} at step {step} ({FAIL_ENV})")
        idx = np.concatenate([x for x, _ in batches], axis=0)       # (B, T): the global batch
        targets = np.concatenate([y for _, y in batches], axis=0)   # (B, T)
        if self.tracer is not None:
            self.tracer.step = step
        loss = self.engine.compute_gradients(idx, targets)
        self._gradients_done = time.perf_counter()
        return loss

    def grad_norm(self, params) -> float:
        return self.engine.global_grad_norm()

    def _bind_trainer_hooks(self) -> None:
        """Replace the Trainer's whole-model pieces (evaluation, saving, state) with pipelined ones."""
        trainer = self.trainer
        trainer.evaluate = self.evaluate
        trainer.save = self.save
        plain_state = trainer.checkpoint_state
        total = self.total_parameters

        def checkpoint_state(train_loss=None, val_loss=None):
            return {**plain_state(train_loss, val_loss), "num_parameters": total}
        trainer.checkpoint_state = checkpoint_state
        plain_step = trainer.train_step

        def train_step():
            result = plain_step()
            if self.tracer is not None:  # the global norm, clipping and the optimizer step
                self.tracer.record("optimizer", self._gradients_done, time.perf_counter())
            self._agree_on_stop()
            return result
        trainer.train_step = train_step

    def _agree_on_stop(self) -> None:
        """A signal seen by any rank stops every rank after the same step, as that signal."""
        MPI = require_mpi()
        seen = self.trainer._stop_signal
        number = np.array([0 if seen is None else int(seen)], dtype=np.int64)
        self.grid.world.Allreduce(MPI.IN_PLACE, number, op=MPI.MAX)
        if number[0] and seen is None:
            self.trainer._stop_signal = signal.Signals(int(number[0]))

    def save(self, best: bool = False, train_loss=None, val_loss=None):
        trainer = self.trainer
        if trainer.run_dir is None:
            return None
        path = pipeline_ckpt.save_pipeline_checkpoint(self.grid, self.stage_model, trainer.optimizer,
                                                      trainer.run_dir, trainer.checkpoint_state(train_loss, val_loss),
                                                      tokenizer=trainer.tokenizer, best=best)
        path = self.grid.world.bcast(str(path) if path else None, root=0)
        trainer.last_checkpoint = path
        return path

    @no_grad()
    def evaluate(self) -> dict:
        """Mean train and val loss over eval_iters fixed batches, run forward through the stages."""
        from tinyllm.data import BatchSampler  # noqa: PLC0415
        cfg, trainer = self.config, self.trainer
        self.stage_model.model.eval()
        out = {}
        for split, tokens, offset in (("train", trainer.train_tokens, 1), ("val", trainer.val_tokens, 2)):
            sampler = BatchSampler(tokens, trainer.block_size, cfg.batch_size, cfg.seed + offset)
            total = 0.0
            for _ in range(cfg.eval_iters):
                x, y = sampler.next_batch()
                total += self._forward_only(x, y)
            out[split] = total / cfg.eval_iters
        self.stage_model.model.train()
        return out

    def _forward_only(self, idx, targets) -> float:
        sm, grid = self.stage_model, self.grid
        xp = backend.module_for(sm.model.device)
        p2p = self.engine.p2p
        if sm.is_first:
            x = xp.asarray(idx)
        else:
            x = xp.empty((idx.shape[0], idx.shape[1], sm.config.n_embd), dtype=sm.model.dtype)
            p2p.recv_into(x, grid.stage - 1, tag=0)
            x = Tensor.constant(x)
        out = sm.forward(x, targets if sm.is_last else None)
        value = np.array([float(out.item()) if sm.is_last else 0.0])
        if not sm.is_last:
            p2p.isend(out.data, grid.stage + 1, tag=0)
            p2p.wait_sends()
        grid.pipe.Bcast(value, root=grid.n_stages - 1)
        return float(value[0])

    # ---- the run ---------------------------------------------------------------------------
    def run(self, stop_at: int | None = None):
        result = self.trainer.run(stop_at=stop_at)
        self.engine.p2p.wait_sends()
        if self.tracer is not None:
            self._write_trace()
        return result

    def _write_trace(self) -> None:
        gathered = self.grid.world.gather(self.tracer.events, root=0)
        if not self.is_root:
            return
        steps = sorted({e[4] for rank in gathered for e in rank})
        steady = steps[1:] or steps  # the first step pays for warm-up (allocations, caches)
        measured = measured_bubble(gathered, steady)
        theory = theoretical_bubble(self.grid.n_stages, self.engine.n_microbatches)
        shape = self.grid.shape
        write_trace(self.trace_path, gathered, stage_of_rank=lambda r: shape.position(r)[1],
                    metadata={"schedule": self.config.schedule, "stages": shape.pipeline_stages,
                              "data_parallel": shape.data_parallel, "microbatches": self.engine.n_microbatches,
                              "measured_bubble": measured, "theoretical_bubble": theory})
        self.log(f"trace written to {self.trace_path}: measured bubble {measured:.3f} (steps {steady[0]}-"
                 f"{steady[-1]}), theoretical (p-1)/(m+p-1) = {theory:.3f}")


def _parse_fail(spec: str | None):
    """FAIL_ENV's "STAGE:STEP[:SIGNAL]" -> (stage, step, signal or None)."""
    if not spec:
        return None
    stage, step, *sig = spec.split(":")
    return int(stage), int(step), (signal.Signals[sig[0]] if sig else None)


def train_pipelined(config, progress_stream=None, stop_at: int | None = None, trace: str | None = None):
    """Train `config` (a tinyllm.train.TrainConfig) on this rank of a pipeline x data-parallel grid.

    Every rank of `mpiexec -n (pipeline_stages * data_parallel)` calls it; returns the
    Trainer's RunResult (the same losses on every rank). Call it inside `run_rank` so a
    failure ends every rank (`run_pipeline` does).
    """
    return PipelineTrainer(config, progress_stream=progress_stream, trace_path=trace).run(stop_at=stop_at)


def run_pipeline(config, trace: str | None = None, stop_at: int | None = None, result_path: str | None = None) -> int:
    """`tinyllm train`'s hand-off under mpiexec: train on every rank, abort all on any failure.

    Returns the exit status (0 finished; 128 + the signal when interrupted, as a single process
    does: 130 for SIGINT, 143 for SIGTERM). Rank 0 prints the summary line
    and, with `result_path`, writes the run's losses there as JSON.
    """
    def body() -> int:
        result = train_pipelined(config, trace=trace, stop_at=stop_at)
        if require_mpi().COMM_WORLD.Get_rank() == 0:
            if result_path:
                from tinyllm.io import write_json  # noqa: PLC0415
                write_json(result_path, {"status": result.status, "step": result.step,
                                         "train_losses": result.train_losses, "last_eval": result.last_eval})
            last = result.last_eval or {}
            if result.status == "interrupted":
                print(f"interrupted by {signal.Signals(result.stop_signal).name} at step {result.step}: "
                      f"checkpoint {config.out}/last; continue with the same command and --resume",
                      file=sys.stderr, flush=True)
            else:
                print(f"done: step {result.step}, train loss {last.get('train', float('nan')):.4f}, "
                      f"val loss {last.get('val', float('nan')):.4f}; checkpoint {config.out}/last (sharded by "
                      f"stage; loads into any stage count or one process)", file=sys.stderr, flush=True)
        return 128 + result.stop_signal if result.status == "interrupted" else 0
    return run_rank(body)


def main(argv=None) -> int:
    import argparse  # noqa: PLC0415
    parser = argparse.ArgumentParser(
        prog="python -m parallel.runner",
        description="Pipeline/data-parallel training from a JSON file of TrainConfig fields "
                    "(run under mpiexec -n pipeline_stages*data_parallel).")
    parser.add_argument("config", help="JSON file: {\"out\": \"runs/x\", \"pipeline_stages\": 2, ...}")
    parser.add_argument("--trace", help="write a Chrome/Perfetto trace of every rank to this JSON file")
    parser.add_argument("--result", help="rank 0 writes the run's losses here (JSON)")
    parser.add_argument("--stop-at", type=int, help="stop (and checkpoint) after this step, as an interruption would")
    args = parser.parse_args(argv)
    from tinyllm.train import TrainConfig  # noqa: PLC0415
    with open(args.config) as f:
        config = TrainConfig.from_dict(json.load(f))
    return run_pipeline(config, trace=args.trace, stop_at=args.stop_at, result_path=args.result)


if __name__ == "__main__":
    sys.exit(main())
