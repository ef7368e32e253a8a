"""Pipeline- and data-parallel pretraining: the one assembly line with a pipeline layout.

    mpiexec -n 4 tinyllm train --pipeline-stages 2 --data-parallel 2 --microbatches 8 --schedule 1f1b
    mpiexec -n 4 python -m parallel.runner SETTINGS.json [--trace trace.json]   # SETTINGS: flat settings

`run_pipeline(settings)` (what `tinyllm train` calls) runs on every rank. The run is built
by tinyllm.build.build_run, like every run, from the Pretraining recipe and the
`PipelineLayout` below, which supplies what a pipeline does differently:

    open       the flags checked from the settings alone (every rank fails together, before
               any message), the grid, this rank's GPU, and the run directory's lock taken
               by rank 0 for every rank
    first      the data prepared on rank 0 first; the others then read its cache
    place      the GPT (built whole from the seed, the weights of a single-process run)
               pruned to this rank's stage (parallel.stage), by --partition
    optimizer  AdamW or SGD over the stage's parameters, or with --zero 1 its state sharded
               across the replicas (parallel.zero)
    strategy   PipelineStrategy over the engine that runs --schedule (parallel.engine)
    restrict   the stage's share of a checkpoint (shards of any layout merge into one)

So clipping, the optimizer, the learning-rate schedule, logging, metrics and checkpoints are
the single process's code. Only rank 0 prints and writes metrics.

Devices: with --device cuda each rank takes the GPU of its rank within its node (modulo the
GPUs it sees; parallel/grid.py) before it makes any array, and rank 0's first line lists every
rank's device.

Failure: `run_rank` wraps the body of every rank and applies tinyllm's one error rule
(tinyllm.errors.describe): a user or machine error is one line and exit status 2, anything
else a bug, its traceback and status 1. A bad combination of flags (FlagError), which every
rank finds from the settings before any message is sent, makes rank 0 print the line and
every rank exit; an error found by some ranks only (a missing file, a full disk, a diverging
run) prints its line once and `MPI.COMM_WORLD.Abort` ends every rank, so a failing stage
never leaves its neighbours blocked in a receive.

Left out: evaluation split across replicas (each replica evaluates the same batches),
elastic restarts.
"""
from __future__ import annotations

import json
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from autograd import backend
from tinyllm import runlock
from tinyllm.build import run
from tinyllm.errors import describe
from tinyllm.fields import ConfigError
from tinyllm.io import write_json
from tinyllm.optim import make_optimizer
from tinyllm.settings import RunSettings
from tinyllm.train import Pretraining

from . import deadline
from .engine import PipelineEngine, check_batch_split
from .grid import Grid, GridShape, device_for
from .partition import make_partition, stage_costs
from .schedules import check_pipeline_settings, chunks_per_stage, get_schedule
from .shared_dir import unshared_refusal
from .simulate import bubble_formula, theoretical_bubble
from .stage import StageModel, block_parameter_counts, measure_block_times
from .strategy import PipelineStrategy
from .trace import Tracer, measured_bubble, write_trace
from .transport import Transport
from .zero import ZeroOptimizer


def require_mpi():
    """mpi4py's MPI module, or an error saying how to install it."""
    try:
        from mpi4py import MPI  # noqa: PLC0415
    except ImportError:
        raise SystemExit("pipeline and data parallelism need mpi4py and an MPI (mpiexec): "
                         "pip install 'tinyllm[mpi]', then run e.g. "
                         "mpiexec -n 2 tinyllm train --pipeline-stages 2") from None
    return MPI


class FlagError(ConfigError):
    """A bad combination of flags, found from the settings alone before any rank sends a message.

    Every rank raises the same one at the same point, so every rank can simply exit with
    status 2 (no `Abort`, whose teardown can drop the error line before mpiexec prints it).
    """


def run_rank(body, *args, **kwargs):
    """Run `body` on this rank under the one error rule (module docstring); its status, or Abort for all."""
    MPI = require_mpi()
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    try:
        return body(*args, **kwargs)
    except FlagError as error:  # every rank raised it before any message: all exit, no abort
        if rank == 0:
            print(f"tinyllm train: error: {describe(error)[1]}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exit_:
        if exit_.code in (None, 0):
            raise
        _abort(2 if isinstance(exit_.code, str) else int(exit_.code), f"[rank {rank}] {exit_.code}")
    except BaseException as error:  # noqa: BLE001 - every failure must end every rank
        known = describe(error) if isinstance(error, Exception) else None
        if known is not None:
            if rank != 0:
                time.sleep(2.0)  # rank 0 usually has the same error: let its line be the only one
            _abort(known[0], f"tinyllm train: error (rank {rank}): {known[1]}")
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        _abort(1, f"[rank {rank} of {world.Get_size()}] failed: {error}\n{text}")


ABORT_GRACE_S = 0.5  # time for mpiexec to forward the last line before the job ends (abort_job waits as long again)


def _abort(status: int, message: str) -> None:
    """Print `message` to stderr, give mpiexec a moment to forward it, then end every rank
    (parallel.deadline.abort_job: the way this MPI's launcher ends a job soonest; this process
    ends whatever MPI_Abort does)."""
    print(message, file=sys.stderr, flush=True)
    time.sleep(ABORT_GRACE_S)  # the abort may kill the forwarding before it reads a line written just now
    deadline.abort_job(status)


def check_layout(settings: RunSettings, n_layer: int, world_size: int | None = None) -> None:
    """The pipeline settings fit the world, the batch, the schedule and the model (ConfigError naming the flags)."""
    pipeline, loop = settings.pipeline, settings.loop
    check_pipeline_settings(pipeline)
    p, v, m = pipeline.pipeline_stages, chunks_per_stage(pipeline), pipeline.microbatches or loop.grad_accum
    try:
        if world_size is not None:
            GridShape(p, pipeline.data_parallel).check_world(world_size)
        check_batch_split(loop.batch_size * loop.grad_accum, pipeline.data_parallel, m)
        get_schedule(pipeline.schedule).check_layout(p, m, v)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if p * v > n_layer:
        chunks = f" x --virtual-stages {v}" if v > 1 else ""
        raise ConfigError(f"--pipeline-stages {p}{chunks} needs {p * v} groups of blocks, but the model has "
                          f"{n_layer} (--n-layer): use fewer stages{' or chunks' if v > 1 else ''}")
    if pipeline.recompute and settings.model.config(1).dropout > 0 and settings.device != "cpu":
        raise ConfigError("--recompute with --dropout above 0 needs the dropout generator's state, kept on the CPU "
                          "only: use --device cpu or --dropout 0")


def check_trace_path(path: str) -> None:
    """--trace names a file that can be written at the end of the run: found now, not after training."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--trace {path}: is a directory; name a file, e.g. --trace {target / 'trace.json'}")
    if not target.parent.is_dir():
        raise ConfigError(f"--trace {path}: the directory {target.parent} does not exist; create it first, "
                          "or name a file in an existing directory")


class PipelineLayout:
    """Stages x replicas over MPI (a tinyllm.build.Layout); see the module docstring.

    trace_path: write a Chrome/Perfetto trace of every rank there at the end (rank 0).
    """

    def __init__(self, trace_path: str | None = None):
        self.trace_path = trace_path
        self.is_writer = False   # until open() knows this rank

    # ---- the steps of tinyllm.build.build_run -------------------------------------------------
    def open(self, settings, run_dir: Path, log):
        world = require_mpi().COMM_WORLD
        try:   # the settings alone decide these, so every rank fails here together
            check_layout(settings, settings.model.config(1).n_layer, world.Get_size())
            if self.trace_path:
                check_trace_path(self.trace_path)
        except ConfigError as error:
            raise FlagError(str(error)) from None
        deadline.start(settings.pipeline.comm_timeout)   # every wait on another rank from here on has the deadline
        pipeline = settings.pipeline
        self.grid = Grid(GridShape(pipeline.pipeline_stages, pipeline.data_parallel), world)
        self.is_writer = self.grid.rank == 0
        self.log = log if self.is_writer else (lambda message: None)
        if settings.device == "cuda":
            self.use_node_device()   # before any array is made
        self.tracer = Tracer(self.grid.rank, time.perf_counter()) if self.trace_path else None
        return self.hold_run_directory(run_dir)

    def first(self, prepare) -> None:
        if self.is_writer:
            prepare()
        self.grid.world.Barrier()
        if not self.is_writer:
            prepare()

    def data_workers(self, settings) -> int:
        """One: the ranks are the run's parallelism (and an MPI process should not fork); a corpus
        too big to tokenize in one process is prepared once with `tinyllm tokenizer encode --workers N`."""
        return 1

    def place(self, model, settings, log):
        pipeline, loop = settings.pipeline, settings.loop
        self.chunks = chunks_per_stage(pipeline)
        self.microbatches = pipeline.microbatches or loop.grad_accum
        self.global_batch = loop.batch_size * loop.grad_accum
        self.total_parameters = model.num_parameters()
        micro_batch = self.global_batch // (pipeline.data_parallel * self.microbatches)
        partition, costs, unit = self.choose_partition(settings, model, micro_batch)
        grid, chunks = self.grid, self.chunks
        schedule = pipeline.schedule + (f" with {chunks} chunks per stage" if chunks > 1 else "")
        extras = "".join(f", {what}" for what, on in (("ZeRO-1 optimizer shards", pipeline.zero),
                                                       ("recomputed blocks", pipeline.recompute)) if on)
        log(f"pipeline: {grid.n_stages} stages x {grid.shape.data_parallel} data-parallel replicas "
            f"({grid.world.Get_size()} ranks), {self.microbatches} microbatches of {micro_batch} sequences, "
            f"schedule {schedule}, partition {pipeline.partition}{extras}; theoretical bubble "
            f"{theoretical_bubble(grid.n_stages, self.microbatches, pipeline.schedule, chunks):.3f}\n"
            f"{partition.describe(costs, unit, chunks)}\n"
            f"hosts: {grid.describe_hosts()}; {Transport.for_this_process().describe()}; "
            f"--comm-timeout {deadline.describe_timeout(pipeline.comm_timeout)}")
        self.stage_model = StageModel(model, partition, grid.stage, n_chunks=chunks, recompute=pipeline.recompute)
        return self.stage_model.model   # the GPT, pruned to this stage

    def optimizer(self, settings, named):
        if settings.pipeline.zero:
            return ZeroOptimizer(named, lambda own: make_optimizer(settings.optim, own), self.grid.data)
        return make_optimizer(settings.optim, named)

    def strategy(self, settings, model, optimizer):
        zero = optimizer if settings.pipeline.zero else None
        engine = PipelineEngine(self.stage_model, self.grid, settings.pipeline.schedule, self.microbatches,
                                self.global_batch, tracer=self.tracer, zero=zero)
        return PipelineStrategy(self.grid, self.stage_model, engine, self.total_parameters, tracer=self.tracer)

    def restrict(self, checkpoint, names):
        from tinyllm import checkpoint as ckpt  # noqa: PLC0415
        return ckpt.restrict(checkpoint, names)

    def describe(self, settings) -> list:
        return [f"{self.grid.world.Get_size()} ranks"]

    def finish(self, trainer, result) -> None:
        trainer.strategy.engine.p2p.wait_sends()
        if self.trace_path:
            self.write_trace(trainer.strategy, trainer.settings)

    # ---- helpers ----------------------------------------------------------------------------
    def hold_run_directory(self, run_dir: Path):
        """Rank 0 locks the run directory for every rank (tinyllm.runlock) and bcasts its verdict,
        so a directory in use is every rank's FlagError: one line, status 2 everywhere; so is an
        --out that some rank cannot see (not one shared directory: parallel.shared_dir)."""
        world = self.grid.world
        lock, refusal = None, None
        if world.Get_rank() == 0:
            try:
                lock = runlock.acquire(run_dir)
            except runlock.RunDirectoryError as error:
                refusal = str(error)
        refusal = world.bcast(refusal, root=0) or unshared_refusal(world, str(run_dir))
        if refusal is not None:
            raise FlagError(refusal)
        return lock

    def use_node_device(self) -> int:
        """Put this rank on the GPU of its rank within its node (parallel.grid.device_for); rank 0 prints
        every rank's choice, the run's first line. Returns the device index."""
        grid = self.grid
        index = device_for(grid.local_rank, backend.device_count())
        backend.use_device(index)
        placed = grid.world.gather((grid.rank, socket.gethostname(), grid.local_rank, backend.current_device(),
                                    backend.device_name()), root=0)
        if placed is not None:
            self.log("devices: " + "; ".join(f"rank {rank} -> cuda:{device} ({name}; local rank {local} on {host})"
                                             for rank, host, local, device, name in placed))
        return index

    def choose_partition(self, settings, model, micro_batch: int) -> tuple:
        """(Partition, costs per stage to show or None, their unit) for --partition, the same on every rank."""
        pipeline, grid = settings.pipeline, self.grid
        costs, first, last, unit = None, 0.0, 0.0, ""
        if pipeline.partition == "params":
            costs, first, last = block_parameter_counts(model)
            unit = " parameters"
        elif pipeline.partition == "time":
            times = measure_block_times(model, micro_batch) if grid.rank == 0 else None
            costs, first, last = grid.world.bcast(times, root=0)  # every rank must agree on one layout
            unit = " s"
        partition = make_partition(pipeline.partition, model.config.n_layer, pipeline.pipeline_stages * self.chunks,
                                   costs, first, last)
        shown = stage_costs(partition, costs, first, last) if costs is not None else None
        return partition, shown, unit

    def write_trace(self, strategy, settings) -> None:
        """Gather every rank's trace events on rank 0 and write them, with the measured and theoretical bubble."""
        grid, engine, schedule = strategy.grid, strategy.engine, settings.pipeline.schedule
        gathered = grid.world.gather(strategy.tracer.events, root=0)
        if grid.rank != 0:
            return
        steps = sorted({e[4] for rank in gathered for e in rank})
        steady = steps[1:] or steps  # the first step pays for warm-up (allocations, caches)
        measured = measured_bubble(gathered, steady)
        theory = theoretical_bubble(grid.n_stages, engine.n_microbatches, schedule, engine.n_chunks)
        shape = grid.shape
        write_trace(self.trace_path, gathered, stage_of_rank=lambda r: shape.position(r)[1],
                    metadata={"schedule": schedule, "stages": shape.pipeline_stages,
                              "data_parallel": shape.data_parallel, "microbatches": engine.n_microbatches,
                              "virtual_stages": engine.n_chunks,
                              "measured_bubble": measured, "theoretical_bubble": theory})
        self.log(f"trace written to {self.trace_path}: measured bubble {measured:.3f} (steps {steady[0]}-"
                 f"{steady[-1]}), theoretical {bubble_formula(schedule)} = {theory:.3f}")


def agreed_settings(make) -> RunSettings:
    """make() on every rank (the flags and files resolved into settings); if any rank's raised a user
    error, every rank raises the lowest rank's as a FlagError (rank 0 prints it once, all exit 2):
    ranks never part ways over their settings, and a bad flag is one line, not one per rank."""
    try:
        settings, error = make(), None
    except Exception as failure:  # noqa: BLE001 - a user's error is agreed on; a bug goes on to run_rank
        known = describe(failure)
        if known is None:
            raise
        settings, error = None, known[1]
    deadline.start()   # the default deadline until the settings (and their --comm-timeout) are agreed
    world = deadline.watch(require_mpi().COMM_WORLD, "world")
    first = next((e for e in world.allgather(error) if e is not None), None)
    if first is not None:
        raise FlagError(first)
    return settings


def run_pipeline(settings, trace: str | None = None, stop_at: int | None = None,
                 result_path: str | None = None, layout: PipelineLayout | None = None) -> int:
    """`tinyllm train`'s hand-off under mpiexec: train on every rank, abort all on any failure.

    settings: the RunSettings, or a function making them on each rank (agreed_settings). Returns
    the exit status (0 finished; 128 + the signal when interrupted, as a single process does:
    130 for SIGINT, 143 for SIGTERM). Rank 0 prints the summary line and, with `result_path`,
    writes the run's losses there as JSON. `layout`: a PipelineLayout (a test's subclass may wrap
    the strategy); by default one that writes `trace`.
    """
    def body() -> int:
        nonlocal settings
        settings = agreed_settings(settings if callable(settings) else lambda: settings)
        result = run(settings, Pretraining(), layout or PipelineLayout(trace), stop_at=stop_at)
        if require_mpi().COMM_WORLD.Get_rank() == 0:
            if result_path:
                write_json(result_path, {"status": result.status, "step": result.step,
                                         "train_losses": result.train_losses, "last_eval": result.last_eval})
            last = result.last_eval or {}
            if result.status == "interrupted":
                print(f"interrupted by {signal.Signals(result.stop_signal).name} at step {result.step}: "
                      f"checkpoint {settings.out}/last; continue with the same command and --resume",
                      file=sys.stderr, flush=True)
            else:
                print(f"done: step {result.step}, train loss {last.get('train', float('nan')):.4f}, "
                      f"val loss {last.get('val', float('nan')):.4f}; checkpoint {settings.out}/last (sharded by "
                      f"stage; loads into any stage count or one process)", file=sys.stderr, flush=True)
        return result.exit_status
    return run_rank(body)


def main(argv=None, layout: PipelineLayout | None = None) -> int:
    import argparse  # noqa: PLC0415
    parser = argparse.ArgumentParser(
        prog="python -m parallel.runner",
        description="Pipeline/data-parallel training from a JSON file of settings by their flat names "
                    "(run under mpiexec -n pipeline_stages*data_parallel).")
    parser.add_argument("settings", help="JSON file: {\"out\": \"runs/x\", \"pipeline_stages\": 2, ...}")
    parser.add_argument("--trace", help="write a Chrome/Perfetto trace of every rank to this JSON file")
    parser.add_argument("--result", help="rank 0 writes the run's losses here (JSON)")
    parser.add_argument("--stop-at", type=int, help="stop (and checkpoint) after this step, as an interruption would")
    args = parser.parse_args(argv)
    if layout is not None:
        layout.trace_path = args.trace

    def settings():
        with open(args.settings) as f:
            return RunSettings.from_dict(json.load(f))
    return run_pipeline(settings, trace=args.trace, stop_at=args.stop_at, result_path=args.result, layout=layout)


if __name__ == "__main__":
    sys.exit(main())
