"""Data parallelism across the cores of one machine: each thread runs a slice of the batch.

NumPy runs every ufunc on one core, so the elementwise part of a training step (GELU,
softmax, norms, the optimizer) leaves the other cores idle however many threads BLAS
has. Here a batch of B rows is cut into `n` contiguous slices (sizes differ by at most
one) and thread i runs the forward and backward of slice i, with BLAS limited to one
thread, while the other threads run theirs: every op of the step uses all the cores, not
just the matrix products. NumPy releases the GIL inside array operations, so the threads
only queue for it in the Python glue between ops.

`DataThreads` is a Trainer strategy (tinyllm/trainer.py): the one-process strategy
(tinyllm/strategy.py) with the batches split across threads.

    workers = DataThreads(2)
    task = NextTokenLoss()                              # or any task: loss(model, batch), weight(batch)
    loss = workers.gradients(model, task, [(x, y)], step=1)   # mean loss; gradients summed into .grad
    loss = workers.batch_loss(model, task, (x, y))      # the same mean loss, no graph
    workers.step(optimizer, lr)                         # each thread updates its share of the parameters

A batch is a tuple of row-indexed parts ((x, y), (PaddedBatch, labels), ...); slice i
is every part's rows a:b.

Exactness: each thread gets its gradients from `autograd.grad` (returned, not accumulated,
so no two threads write one `.grad`), weighted by its share of the batch: the slice's
`task.weight` (its rows for a mean over equally many tokens per row; its counted target
tokens for the masked instruction loss) over the batch's, so the weighted slices give
exactly the batch mean. Then each thread adds the slices' gradients into `.grad` for its
share of the parameters, in slice order. The same thread count gives the same numbers on
every run; another thread count adds in another order (float32 results differ in the
last bits, float64 ones by ~1e-15 relative).

Dropout: masks are keyed by the step and each row's place in the step's batch (tinyllm/dropout.py,
DropoutMasks), so the threads draw one thread's masks, whatever their count. Runs begun
before keyed masks (the "generator" scheme) keep what they did: each slice draws from its
own generator, spawned from the model's at every step.

Left out: CuPy arrays (a GPU is one device; use one thread), and splitting single
sequences across threads.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from autograd import grad, no_grad
from tinyllm.dropout import slice_sources
from tinyllm.strategy import SingleProcess, batch_rows, first_rows
from tinyllm.tokenizer.workers import available_cores


def default_threads() -> int:
    """OMP_NUM_THREADS (or OPENBLAS_NUM_THREADS) when set, else the cores this process may use."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return available_cores()


def split_rows(n_rows: int, parts: int) -> list:
    """`parts` contiguous (start, stop) ranges covering n_rows, sizes differing by at most one."""
    parts = max(1, min(parts, n_rows))
    bounds = [n_rows * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def split_by_size(sizes: list, parts: int) -> list:
    """At most `parts` contiguous non-empty (start, stop) ranges of `sizes`, about equal in total size."""
    total = sum(sizes)
    ranges, start, seen = [], 0, 0
    for i, size in enumerate(sizes):
        seen += size
        if len(ranges) < parts - 1 and seen * parts >= total * (len(ranges) + 1):
            ranges.append((start, i + 1))
            start = i + 1
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


class BlasThreads:
    """Limits BLAS to one thread inside `with self.one():` (threadpoolctl; a no-op without it).

    `problem` says why it cannot (threadpoolctl missing, or no BLAS library it can control
    loaded in this process), None when it can: training warns with it (tinyllm/workers.py),
    since each of n workers' BLAS would then run as many threads as it likes.
    """

    def __init__(self):
        import numpy  # noqa: F401, PLC0415 - BLAS is loaded with NumPy: threadpoolctl finds loaded libraries only
        self.problem = None
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415
            self._controller = ThreadpoolController()
        except Exception as error:  # threadpoolctl missing or unable to inspect this process
            self._controller = None
            self.problem = f"threadpoolctl is not usable ({type(error).__name__}: {error})"
            return
        if not self._controller.select(user_api="blas").lib_controllers:
            self.problem = "threadpoolctl finds no BLAS library it can limit in this process"

    def one(self):
        if self._controller is None:
            return contextlib.nullcontext()
        return self._controller.limit(limits=1, user_api="blas")


class DataThreads(SingleProcess):
    """`threads` threads (this one and threads - 1 workers) that split every batch by rows.

    A strategy: the one-process strategy's norm, saving and stop, with `gradients` and
    `batch_loss` run on the threads.
    """

    def __init__(self, threads: int):
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="tinyllm") if threads > 1 else None
        self._blas = BlasThreads()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _run(self, fn, jobs: list) -> list:
        """fn(*job) for every job: the first on this thread, the rest on the workers; results in order."""
        if len(jobs) == 1 or self._pool is None:
            return [fn(*job) for job in jobs]
        with self._blas.one():
            settings = np.geterr()   # the caller's NumPy error settings (tinyllm.trainer.DIVERGING), per thread
            futures = [self._pool.submit(_with_errstate, settings, fn, *job) for job in jobs[1:]]
            try:
                first = fn(*jobs[0])
            finally:
                results = [f.result() for f in futures]  # wait for all, even when this thread failed
            return [first] + results

    def gradients(self, model, task, batches, step: int | None = None) -> float:
        """Forward and backward every micro-batch, each split across the threads.

        Returns the mean loss; adds d(mean loss)/d(param) into every trainable parameter's
        `.grad` (tinyllm.strategy.compute_gradients's numbers, up to the order of additions).
        `step` keys the dropout masks (None: each slice draws from a generator of its own).
        """
        params = [p for p in model.parameters() if p.requires_grad]
        scale = 1.0 / len(batches)
        total = 0.0
        for batch, first in zip(batches, first_rows(batches)):
            slices = batch_slices(task, batch, self.threads)
            whole = sum(w for _, w, _ in slices)
            sources = slice_sources(model, step, [first + row for _, _, row in slices])
            jobs = [(model, task, params, piece, scale * w / whole, source)
                    for (piece, w, _), source in zip(slices, sources)]
            results = self._run(_slice_gradients, jobs)
            slice_grads = [grads for _, grads in results]
            self.parameter_groups(lambda group: _add_slices(group, slice_grads), list(enumerate(params)))
            total += sum(loss * w / whole for (loss, _), (_, w, _) in zip(results, slices))
        return total * scale

    def step(self, optimizer, lr: float) -> None:
        """The optimizer's update, each thread updating its share of the parameters."""
        optimizer.step(lr, spread=self.parameter_groups)

    def parameter_groups(self, fn, named: list) -> None:
        """fn(group) for contiguous groups of `named` ([(key, param)]) of about equal sizes, one per thread.

        The optimizer's `spread`, and for adding the slices' gradients: each parameter's work
        reads and writes only that parameter's arrays, so the result is one thread's.
        """
        groups = [named[a:b] for a, b in split_by_size([int(p.size) for _, p in named], self.threads)]
        self._run(fn, [(g,) for g in groups])

    def batch_loss(self, model, task, batch) -> float:
        """The batch's mean loss, without a graph, the rows split across the threads."""
        slices = batch_slices(task, batch, self.threads)
        whole = sum(w for _, w, _ in slices)
        losses = self._run(_slice_loss, [(model, task, piece) for piece, _, _ in slices])
        return sum(loss * w / whole for loss, (_, w, _) in zip(losses, slices))


def _with_errstate(settings: dict, fn, *args):
    with np.errstate(**settings):
        return fn(*args)


def batch_slices(task, batch, parts: int) -> list:
    """[(slice of the batch, its weight, its first row)] for the non-empty slices of `parts` row ranges.

    A batch is a tuple of row-indexed parts; a slice is every part's rows a:b, weighted by
    task.weight (a slice with nothing to count is left out).
    """
    slices = []
    for a, b in split_rows(batch_rows(batch), parts):
        piece = tuple(part[a:b] for part in batch)
        weight = task.weight(piece)
        if weight > 0:
            slices.append((piece, weight, a))
    return slices


def _slice_gradients(model, task, params, batch, weight: float, masks) -> tuple:
    with masks.using(model):
        loss = task.loss(model, batch)
        grads = grad(loss, params, grad_output=weight)
    return float(loss.item()), grads


def _add_slices(group: list, slice_grads: list) -> None:
    """For each (i, param) of group: .grad += the slices' gradients of param i, in slice order."""
    for i, p in group:
        g = None
        for grads in slice_grads:
            if grads[i] is not None:
                g = grads[i] if g is None else g + grads[i]
        if g is None:
            continue
        if p.grad is None:
            p.grad = g          # a fresh array of p's dtype (autograd.grad never hands out one twice)
        else:
            p.grad += g


def _slice_loss(model, task, batch) -> float:
    with no_grad():
        return float(task.loss(model, batch).item())
