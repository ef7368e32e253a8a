"""Pipeline- and data-parallel pretraining: tinyllm's training loop with a schedule inside.

    mpiexec -n 4 tinyllm train --pipeline-stages 2 --data-parallel 2 --microbatches 8 --schedule 1f1b
    mpiexec -n 4 python -m parallel.runner CONFIG.json [--trace trace.json]   # CONFIG: TrainConfig fields

`run_pipeline(config)` (what `tinyllm train` calls) runs on every rank. Each rank builds the
whole GPT from the seed (the weights of a single-process run), prunes it to its stage
(`parallel.stage`), and runs tinyllm's one training loop, `Trainer(model, task, strategy)`,
with the pretraining task of a single process and `parallel.strategy.PipelineStrategy`: the
schedule computes the gradients, the norm is summed over the stages, evaluation runs the
stages forward only, checkpoints are sharded per stage (`parallel.checkpoint`) and resume
into any stage count, and a signal on any rank stops every rank after the same step. So
clipping, AdamW, the learning-rate schedule, logging and metrics are the single process's
code. The schedule (`--schedule`, `--virtual-stages` chunks per rank for interleaving), the
optimizer (`--zero 1`: parallel.zero.ZeroOptimizer, sharded across the replicas) and
`--recompute` (parallel.recompute, in the stage's forward) are chosen here. Only rank 0
prints and writes metrics.

Devices: with --device cuda each rank takes the GPU of its rank within its node (modulo the
GPUs it sees; parallel/grid.py) before it makes any array, and rank 0's first line lists every
rank's device.

Failure: `run_rank` wraps the body of every rank. A bad combination of flags, found from the
config before any message is sent, makes rank 0 print one line and every rank exit with
status 2. A setup error found later (missing file, mismatched checkpoint) prints one line
and aborts with status 2; any other exception prints the rank and the traceback to stderr,
then `MPI.COMM_WORLD.Abort(1)` ends every rank, so a failing stage never leaves its
neighbours blocked in a receive.

Left out: evaluation split across replicas (each replica evaluates the same batches),
elastic restarts.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from autograd import backend
from tinyllm import checkpoint as ckpt
from tinyllm import runlock
from tinyllm.io import write_json
from tinyllm.data import check_split_fits, prepare_dataset, resolve_corpus
from tinyllm.model import GPT
from tinyllm.train import (PretrainingTask, TrainConfig, check_resumable, make_optimizer, restore_run,
                           resume_checkpoint, write_run_config)
from tinyllm.trainer import Trainer

from . import deadline
from .engine import PipelineEngine, check_batch_split
from .grid import Grid, GridShape, device_for
from .partition import make_partition, stage_costs
from .simulate import BUBBLE_FORMULAS, theoretical_bubble
from .stage import StageModel, block_parameter_counts, measure_block_times
from .shared_dir import unshared_refusal
from .strategy import PipelineStrategy
from .trace import Tracer, measured_bubble, write_trace
from .transport import Transport
from .zero import ZeroOptimizer

FAIL_ENV = "TINYLLM_PIPELINE_FAIL"  # "WHO:STEP[:SIGNAL[:POINT]]", a test hook: on stage WHO (or world rank R
                                    # for "rR") at that step, raise (or send this rank SIGNAL, e.g. SIGTERM)
                                    # at POINT (default "gradients"; PipelineStrategy lists the points)


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


def build_pipeline_run(config, progress_stream=None, trace_path: str | None = None) -> tuple:
    """(Trainer, PipelineStrategy) for this rank (see the module docstring). A bad flag combination
    raises FlagError on every rank together; a bad file or checkpoint raises SetupError."""
    try:  # the config alone decides these, so every rank fails here together
        GridShape(config.pipeline_stages, config.data_parallel).check_world(require_mpi().COMM_WORLD.Get_size())
        check_batch_split(config.batch_size * config.grad_accum, config.data_parallel,
                          config.microbatches or config.grad_accum)
        check_layout(config)
    except ValueError as error:
        raise FlagError(str(error)) from error
    deadline.start(config.comm_timeout)   # every wait on another rank from here on has the deadline
    run_lock = hold_run_directory(config.out)
    try:
        return _build(config, progress_stream, trace_path, run_lock)
    except (ValueError, OSError) as error:
        raise SetupError(str(error)) from error


def hold_run_directory(out: str):
    """Rank 0 locks the run directory for every rank (tinyllm.runlock) and bcasts its verdict,
    so a directory in use is every rank's FlagError: one line, status 2 everywhere."""
    world = deadline.watch(require_mpi().COMM_WORLD, "world")
    lock, refusal = None, None
    if world.Get_rank() == 0:
        try:
            lock = runlock.acquire(out)
        except runlock.RunDirectoryError as error:
            refusal = str(error)
    refusal = world.bcast(refusal, root=0) or unshared_refusal(world, out)   # --out must be one shared directory
    if refusal is not None:
        raise FlagError(refusal)
    return lock


def check_layout(config) -> None:
    """The schedule, chunks and recomputation fit the stage count, microbatches and model (ValueError naming the flags)."""
    p, v, m = config.pipeline_stages, config.pipeline_chunks, config.microbatches or config.grad_accum
    model = config.model_config(vocab_size=1)
    if config.schedule == "interleaved":
        if p < 2:
            raise ValueError(f"--schedule interleaved needs --pipeline-stages 2 or more, got {p}")
        if m % p:
            raise ValueError(f"--schedule interleaved needs --microbatches ({m}) to be a multiple of "
                             f"--pipeline-stages ({p})")
    if p * v > model.n_layer:
        chunks = f" x --virtual-stages {v}" if v > 1 else ""
        raise ValueError(f"--pipeline-stages {p}{chunks} needs {p * v} groups of blocks, but the model has "
                         f"{model.n_layer} (--n-layer): use fewer stages{' or chunks' if v > 1 else ''}")
    if config.recompute and model.dropout > 0 and config.device != "cpu":
        raise ValueError("--recompute with --dropout above 0 needs the dropout generator's state, kept on the CPU "
                         "only: use --device cpu or --dropout 0")


def _build(config, progress_stream, trace_path, run_lock) -> tuple:
    grid = Grid(GridShape(config.pipeline_stages, config.data_parallel), require_mpi().COMM_WORLD)
    is_root = grid.rank == 0
    stream = progress_stream or sys.stderr
    log = (lambda message: print(message, file=stream, flush=True)) if is_root else (lambda message: None)
    if config.device == "cuda":
        use_node_device(grid, log)   # before any array is made
    microbatches = config.microbatches or config.grad_accum
    global_batch = config.batch_size * config.grad_accum
    micro_batch = global_batch // (config.data_parallel * microbatches)

    run_dir = Path(config.out)
    checkpoint = resume_checkpoint(config)  # shards merged into one name -> array dict
    # rank 0 tokenizes (or finds the cache) first; the others then read the same cache
    corpus = resolve_corpus(config.data, config.data_ext)
    dataset = None
    if is_root:
        run_dir.mkdir(parents=True, exist_ok=True)
        dataset = prepare_dataset(corpus, config.tokenizer, run_dir, vocab_size=config.vocab_size,
                                  val_fraction=config.val_fraction, log=log)
    grid.world.Barrier()
    if dataset is None:
        dataset = prepare_dataset(corpus, config.tokenizer, run_dir, vocab_size=config.vocab_size,
                                  val_fraction=config.val_fraction)
    model_config = config.model_config(dataset.vocab_size)
    check_split_fits(dataset, model_config.block_size)
    if checkpoint is not None:
        check_resumable(checkpoint, model_config, dataset.tokenizer)
    model = GPT(model_config, seed=config.seed, dtype=config.dtype, device=config.device)
    total_parameters = model.num_parameters()

    chunks = config.pipeline_chunks
    partition, costs, unit = choose_partition(config, model, grid, micro_batch)
    schedule = config.schedule + (f" with {chunks} chunks per stage" if chunks > 1 else "")
    extras = "".join(f", {what}" for what, on in (("ZeRO-1 optimizer shards", config.zero),
                                                   ("recomputed blocks", config.recompute)) if on)
    log(f"pipeline: {grid.n_stages} stages x {grid.shape.data_parallel} data-parallel replicas "
        f"({grid.world.Get_size()} ranks), {microbatches} microbatches of {micro_batch} sequences, "
        f"schedule {schedule}, partition {config.partition}{extras}; theoretical bubble "
        f"{theoretical_bubble(grid.n_stages, microbatches, config.schedule, chunks):.3f}\n"
        f"{partition.describe(costs, unit, chunks)}\n"
        f"hosts: {grid.describe_hosts()}; {Transport.for_this_process().describe()}; "
        f"--comm-timeout {deadline.describe_timeout(config.comm_timeout)}")
    stage_model = StageModel(model, partition, grid.stage, n_chunks=chunks, recompute=config.recompute)  # prunes
    tracer = Tracer(grid.rank, time.perf_counter()) if trace_path else None
    if config.zero:
        optimizer = ZeroOptimizer(stage_model.named_parameters(), lambda own: make_optimizer(config, own), grid.data)
    else:
        optimizer = make_optimizer(config, stage_model.named_parameters())
    engine = PipelineEngine(stage_model, grid, config.schedule, microbatches, global_batch, tracer=tracer,
                            zero=optimizer if config.zero else None)
    strategy = PipelineStrategy(grid, stage_model, engine, total_parameters, tracer=tracer,
                                fail_at=_parse_fail(os.environ.get(FAIL_ENV)))
    task = PretrainingTask.from_config(config, dataset, model_config.block_size)
    trainer = Trainer(model, task, strategy, config=config, optimizer=optimizer, tokenizer=dataset.tokenizer,
                      run_dir=run_dir, progress_stream=progress_stream, run_lock=run_lock)
    if checkpoint is not None:
        restore_run(trainer, ckpt.restrict(checkpoint, [n for n, _ in stage_model.named_parameters()]))
        log(f"resuming {run_dir} from {checkpoint.path} at step {trainer.step}")
    if is_root:
        write_run_config(run_dir, {"train": config, "model": model_config})
        log(f"model: {total_parameters:,} parameters; {config.tokens_per_step:,} tokens per step; "
            f"run directory {run_dir}")
    return trainer, strategy


def use_node_device(grid, log) -> int:
    """Put this rank on the GPU of its rank within its node (parallel.grid.device_for); rank 0 prints
    every rank's choice, the run's first line. Returns the device index."""
    index = device_for(grid.local_rank, backend.device_count())
    backend.use_device(index)
    placed = grid.world.gather((grid.rank, socket.gethostname(), grid.local_rank, backend.current_device(),
                                backend.device_name()), root=0)
    if placed is not None:
        log("devices: " + "; ".join(f"rank {rank} -> cuda:{device} ({name}; local rank {local} on {host})"
                                    for rank, host, local, device, name in placed))
    return index


def choose_partition(config, model, grid, micro_batch: int) -> tuple:
    """(Partition, costs per stage to show or None, their unit) for --partition, the same on every rank."""
    costs, first, last, unit = None, 0.0, 0.0, ""
    if config.partition == "params":
        costs, first, last = block_parameter_counts(model)
        unit = " parameters"
    elif config.partition == "time":
        times = measure_block_times(model, micro_batch) if grid.rank == 0 else None
        costs, first, last = grid.world.bcast(times, root=0)  # every rank must agree on one layout
        unit = " s"
    partition = make_partition(config.partition, model.config.n_layer, config.pipeline_stages * config.pipeline_chunks,
                               costs, first, last)
    shown = stage_costs(partition, costs, first, last) if costs is not None else None
    return partition, shown, unit


def write_pipeline_trace(strategy, config, trace_path: str, log) -> None:
    """Gather every rank's trace events on rank 0 and write them, with the measured and theoretical bubble."""
    grid, engine = strategy.grid, strategy.engine
    gathered = grid.world.gather(strategy.tracer.events, root=0)
    if grid.rank != 0:
        return
    steps = sorted({e[4] for rank in gathered for e in rank})
    steady = steps[1:] or steps  # the first step pays for warm-up (allocations, caches)
    measured = measured_bubble(gathered, steady)
    theory = theoretical_bubble(grid.n_stages, engine.n_microbatches, config.schedule, engine.n_chunks)
    shape = grid.shape
    write_trace(trace_path, gathered, stage_of_rank=lambda r: shape.position(r)[1],
                metadata={"schedule": config.schedule, "stages": shape.pipeline_stages,
                          "data_parallel": shape.data_parallel, "microbatches": engine.n_microbatches,
                          "virtual_stages": engine.n_chunks,
                          "measured_bubble": measured, "theoretical_bubble": theory})
    log(f"trace written to {trace_path}: measured bubble {measured:.3f} (steps {steady[0]}-"
        f"{steady[-1]}), theoretical {BUBBLE_FORMULAS[config.schedule]} = {theory:.3f}")


def _parse_fail(spec: str | None):
    """FAIL_ENV's "WHO:STEP[:SIGNAL[:POINT]]" -> (stage number or "rR", step, signal or None, point)."""
    if not spec:
        return None
    who, step, *rest = spec.split(":")
    sig = signal.Signals[rest[0]] if rest and rest[0] else None
    return (who if who.startswith("r") else int(who)), int(step), sig, (rest[1] if len(rest) > 1 else "gradients")


def train_pipelined(config, progress_stream=None, stop_at: int | None = None, trace: str | None = None):
    """Train `config` (a tinyllm.train.TrainConfig) on this rank of a pipeline x data-parallel grid.

    Every rank of `mpiexec -n (pipeline_stages * data_parallel)` calls it; returns the
    Trainer's RunResult (the same losses on every rank). Call it inside `run_rank` so a
    failure ends every rank (`run_pipeline` does).
    """
    trainer, strategy = build_pipeline_run(config, progress_stream=progress_stream, trace_path=trace)
    result = trainer.run(stop_at=stop_at)
    strategy.engine.p2p.wait_sends()
    if trace:
        stream = progress_stream or sys.stderr
        write_pipeline_trace(strategy, config, trace, lambda message: print(message, file=stream, flush=True))
    return result


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
        return result.exit_status
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
    with open(args.config) as f:
        config = TrainConfig.from_dict(json.load(f))
    return run_pipeline(config, trace=args.trace, stop_at=args.stop_at, result_path=args.result)


if __name__ == "__main__":
    sys.exit(main())
