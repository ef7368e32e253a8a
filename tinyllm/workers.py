"""How a run on one machine splits each batch: the workers section of its settings and the strategy.

    strategy = one_machine_strategy(settings.workers, batch_size=12, device="cpu", optimizer=optimizer)
    describe_workers(settings.workers, 12, "cpu")    # "2 worker processes", "3 threads" or "one process"

On a CPU each batch is split by rows across `--workers` forked processes sharing the weights
(tinyllm/processes.py, the default where fork exists) or threads (tinyllm/threads.py,
`--parallel threads`); with one worker, or on a GPU, the batch runs in this process
(tinyllm/strategy.py SingleProcess). The count defaults to OMP_NUM_THREADS, else one per
core, and is never more than the rows of a batch. `parallelism_warnings` says when the run
will be slower than it should (BLAS threads that cannot be limited, more workers than cores).

Left out: several GPUs in one process (parallel/ spreads a model across processes instead).
"""
from __future__ import annotations

from dataclasses import dataclass

from tinyllm.fields import check, is_int, one_of, setting
from tinyllm.processes import DataProcesses, fork_available
from tinyllm.strategy import SingleProcess
from tinyllm.threads import BlasThreads, DataThreads, default_threads
from tinyllm.tokenizer.workers import available_cores

PARALLEL = ("processes", "threads")


@dataclass(frozen=True)
class WorkerSettings:
    """How many processes (or threads) split each batch by rows, and which kind."""

    workers: int = setting(0, "processes (or threads) that split each batch by rows, one per core (0 = "
                              "OMP_NUM_THREADS if set, else one per core; 1 = this process alone)")
    parallel: str = setting("processes", "how --workers split each batch: processes (forked workers sharing the "
                                         "weights, Linux; elsewhere threads) or threads")
    threads: int = setting(0, "the flag before --workers: --threads N is --workers N --parallel threads")

    def __post_init__(self):
        for name in ("workers", "threads"):
            check(self, name, lambda v: is_int(v) and v >= 0, "must be 0 (one per core) or a positive integer")
        check(self, "parallel", *one_of(PARALLEL))
        check(self, "threads", lambda v: v == 0 or self.workers in (0, v),
              f"is --workers {self.threads} --parallel threads, but --workers {self.workers} is given too: give one")


def resolve_workers(settings: WorkerSettings, batch_size: int, device: str) -> tuple:
    """(how many, "processes" | "threads" | "one") split each batch: --workers (or --threads), else
    OMP_NUM_THREADS or the cores, at most one per row; one on a GPU; threads where fork is missing."""
    if device != "cpu":
        return 1, "one"
    count, kind = (settings.threads, "threads") if settings.threads else (settings.workers or default_threads(),
                                                                           settings.parallel)
    count = min(count, batch_size)
    if count == 1:
        return 1, "one"
    if kind == "processes" and not fork_available():
        kind = "threads"
    return count, kind


def describe_workers(settings: WorkerSettings, batch_size: int, device: str) -> str:
    """'2 worker processes', '3 threads' or 'one process', for a run's first lines."""
    count, kind = resolve_workers(settings, batch_size, device)
    return {"processes": f"{count} worker processes", "threads": f"{count} threads", "one": "one process"}[kind]


def parallelism_warnings(settings: WorkerSettings, batch_size: int, device: str) -> list:
    """Lines that say when the run will be slower than it should (a silent slow path otherwise):
    workers BLAS cannot be limited in, more workers than cores, processes unavailable."""
    count, kind = resolve_workers(settings, batch_size, device)
    lines = []
    if settings.parallel == "processes" and not settings.threads and kind == "threads":
        lines.append("note: worker processes need fork (Linux); splitting each batch across threads instead")
    if count > 1:
        problem = BlasThreads().problem
        if problem is not None:
            lines.append(f"warning: {problem}, so each of the {count} {kind}' BLAS may run as many threads as "
                         "there are cores and oversubscribe them (up to half speed): install threadpoolctl, "
                         "or use --workers 1")
    cores = available_cores()
    if count > cores:
        lines.append(f"warning: {count} {kind if count > 1 else 'process'} on {cores} core(s): oversubscribed, "
                     f"every step waits for the slowest; use --workers {cores} (or 0: one per core)")
    return lines


def one_machine_strategy(settings: WorkerSettings, batch_size: int, device: str, optimizer):
    """DataProcesses, DataThreads or SingleProcess, for resolve_workers (the strategy steps the optimizer)."""
    count, kind = resolve_workers(settings, batch_size, device)
    if kind == "processes":
        return DataProcesses(count, optimizer)
    if kind == "threads":
        return DataThreads(count)
    return SingleProcess()
