"""Data parallelism across the cores of one machine by worker processes that share the weights.

Each batch is cut by rows into `n` contiguous slices, as tinyllm/threads.py cuts it, and
process i (this one for slice 0, forked workers for the others) runs the forward and
backward of slice i with BLAS on one thread. Processes share no interpreter, so none waits
for another's GIL between NumPy calls (the cost that makes threads slower than one slice
alone per core: docs/performance.md).

`DataProcesses` is a Trainer strategy (tinyllm/trainer.py), the one-process strategy with
the work of a step split across processes:

    workers = DataProcesses(2, optimizer)      # tinyllm.workers.one_machine_strategy does this
    loss = workers.gradients(model, task, batches, step)   # mean loss; summed gradients in .grad
    norm = workers.grad_norm(params)
    optimizer.step(lr)                         # each process updates its share of the parameters

Memory: on the first step the parameters the optimizer trains and the optimizer's state
move into one anonymous shared mapping (mmap, made before the workers fork, so it vanishes
with the last process and can never be left behind), with one gradient slot per process:

    [ parameters | slot 0 | slot 1 | ... | optimizer state | norms, flags ]
      each of the first runs a flat copy of every trained parameter, 64-byte aligned

A step, with the messages (pipes) that order it:

    grad    each process runs its slices of every micro-batch and adds the gradients,
            weighted as the threads weight them (task.weight), into its own slot
    sum     each process adds the slots, in slot order, for its share of the parameters
            (contiguous groups of about equal size) into slot 0, and each parameter's squared
            norm into a shared table; .grad of every trained parameter is then a view of slot 0
    step    after the Trainer's clipping, each process runs the same optimizer.step(lr) on
            its share; the parameters change in place in the shared mapping, which every
            process reads at the next step

The global norm is the table's entries added in parameter order: optim.global_grad_norm's
numbers. The same process count gives the same bits on every run; float64 results equal one
process's to ~1e-15 relative (another count adds in another order). Since the weights and
the optimizer state are shared, this process always holds the current ones: checkpoints,
evaluation and sampling read them as in one process.

Workers ignore SIGINT and SIGTERM (this process decides when to stop, saves, and tells them
to exit), die with this process (a pipe EOF, or the kernel's parent-death signal on Linux),
and are joined when the strategy is closed or collected. An exception in a worker ends the
step here as the same exception, its traceback chained (`WorkerTraceback`); a worker that
dies outright (killed: by the out-of-memory killer, typically) raises WorkerError, a condition
of the machine: one line naming the signal, exit status 2 (tinyllm.errors).

Forking: the workers are forked from this process while it runs no other thread (a fork of a
multi-threaded process can deadlock the child, and Python 3.12+ warns of it). OpenBLAS stops
its own threads around a fork; the one other thread a run starts is tqdm's monitor, which no
bar of the Trainer starts and which is stopped here before forking if another bar started it.

Dropout: keyed masks (tinyllm/dropout.py, DropoutMasks) need nothing shared, each slice opens
its step and first row; runs in the older "generator" scheme send each slice a generator
spawned here, as the threads do.

Left out: CuPy arrays (one device per process: use parallel/ and MPI), platforms without
fork (tinyllm/workers.py falls back to threads there), workers on other machines (parallel/).
"""
from __future__ import annotations

import atexit
import contextlib
import math
import mmap
import multiprocessing
import os
import signal
import sys
import threading
import traceback
import weakref

import numpy as np

from autograd import enable_grad, grad, no_grad
from tinyllm.dropout import slice_sources
from tinyllm.errors import UserError, portable
from tinyllm.strategy import SingleProcess, first_rows
from tinyllm.threads import BlasThreads, batch_slices, split_by_size
from tinyllm.tokenizer.workers import die_with_parent

ALIGN = 64              # bytes: every array in the shared mapping starts on a cache line
RELEASE_MIN_BYTES = 32 << 20   # slots this large are given back between steps (as glibc returns arrays
                               # this large when freed: backend.keep_freed_memory's threshold)


def fork_available() -> bool:
    """Worker processes need fork (Linux: the parent's model, task and optimizer, copied as they are)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class WorkerError(UserError):
    """A worker process died (killed: out of memory, typically); a condition of the machine, one line."""


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker, chained under the exception re-raised here."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


class SharedArrays:
    """The shared mapping: the trained parameters, a gradient slot per process, the optimizer's
    state, per-parameter tables (squared norms, which slots hold a gradient)."""

    def __init__(self, params: list, processes: int, state: list):
        dtype = params[0].data.dtype
        self.sizes = [int(p.data.size) for p in params]
        self.shapes = [tuple(p.data.shape) for p in params]
        self.offsets = np.cumsum([0] + [_aligned(n * dtype.itemsize) for n in self.sizes])
        run = _aligned(int(self.offsets[-1]), mmap.PAGESIZE)         # bytes of one flat run of parameters
        self.slot_bytes = run
        n = len(params)
        self.state_start = self.state_next = run * (1 + processes)
        base = self.state_start + sum(_aligned(a.nbytes) for a in state)
        tables = _aligned(8 * n) + _aligned(processes * n)
        self.buffer = mmap.mmap(-1, base + tables)                   # anonymous, MAP_SHARED
        self.params = self._views(0, dtype)
        self.slots = [self._views(run * (1 + k), dtype) for k in range(processes)]
        self.square_norms = np.frombuffer(self.buffer, np.float64, n, base)                 # (n,)
        self.has_grad = np.frombuffer(self.buffer, np.uint8, processes * n,
                                      base + _aligned(8 * n)).reshape(processes, n)     # (processes, n)

    def _views(self, start: int, dtype) -> list:
        return [np.frombuffer(self.buffer, dtype, n, start + int(offset)).reshape(shape)
                for n, offset, shape in zip(self.sizes, self.offsets, self.shapes)]

    def release_slots(self) -> bool:
        """Give the gradient slots' pages back to the system (they fault in again, zeroed, at the next
        write): between steps, slots at least as large as RELEASE_MIN_BYTES then cost no memory while
        the next forward holds its activations, as a one-process run's gradients cost none. Smaller
        slots are kept: their page faults would cost more time than their memory is worth."""
        length = self.slot_bytes * len(self.slots)
        if length < RELEASE_MIN_BYTES:
            return False
        self.buffer.madvise(mmap.MADV_REMOVE, self.slot_bytes, length)
        return True

    def share(self, array):
        """A copy of `array` in the mapping's state region (the optimizer's relocate_state calls it)."""
        view = np.frombuffer(self.buffer, array.dtype, array.size, self.state_next).reshape(array.shape)
        view[...] = array
        self.state_next += _aligned(array.nbytes)
        return view


def _aligned(nbytes: int, align: int = ALIGN) -> int:
    return -(-nbytes // align) * align


class DataProcesses(SingleProcess):
    """`processes` processes (this one and processes - 1 forked workers) that split every batch by rows.

    A strategy: the one-process strategy's saving and stop, with `gradients`, `grad_norm`,
    `batch_loss` and the optimizer's `step` run on the processes.
    The workers start at the first step or evaluation (after a resume has restored the state
    they copy) and stop with `close()`. Process k updates a fixed group of the parameters
    (contiguous, of about equal size), so each parameter's optimizer state lives in one place.
    """

    def __init__(self, processes: int, optimizer):
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a positive integer, got {processes!r}")
        self.processes = processes
        self.optimizer = optimizer
        self.params = [p for _, p in optimizer.params]
        self.index = {id(p): i for i, p in enumerate(self.params)}
        ranges = split_by_size([int(p.size) for p in self.params], processes)
        self.groups = [list(range(a, b)) for a, b in ranges] + [[] for _ in range(processes - len(ranges))]
        self.shared = None
        self.workers = []              # [(Process, Connection)] for processes 1, 2, ...
        self._blas = BlasThreads()
        self._finalizer = None

    # ---- the workers' lifetime -----------------------------------------------------------------
    def start(self, model, task) -> None:
        """Share the parameters and fork the workers (once; later calls only re-share a replaced array)."""
        if self.shared is not None:
            self._reshare()
            return
        dtype = self.params[0].data.dtype
        if any(type(p.data) is not np.ndarray or p.data.dtype != dtype for p in self.params):
            raise ValueError("DataProcesses needs NumPy parameters of one dtype (use threads or one process)")
        state = list(self.optimizer.state_arrays().values())
        if any(type(a) is not np.ndarray for a in state):
            raise ValueError("DataProcesses needs an optimizer whose state is NumPy arrays")
        self.shared = SharedArrays(self.params, self.processes, state)
        for p, view in zip(self.params, self.shared.params):
            view[...] = p.data
            p.data = view
        self.optimizer.relocate_state(self.shared.share)
        stop_other_threads()
        context = multiprocessing.get_context("fork")
        parent = os.getpid()
        for k in range(1, self.processes):
            mine, theirs = context.Pipe()
            process = context.Process(target=_worker_main, args=(self, k, theirs, mine, model, task, parent),
                                      name=f"tinyllm-worker-{k}", daemon=True)
            process.start()
            theirs.close()
            self.workers.append((process, mine))
        self._finalizer = weakref.finalize(self, _stop_workers, list(self.workers))
        _stop_before_multiprocessing_exits(self)

    def close(self) -> None:
        """Tell the workers to exit and wait for them (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()

    def _reshare(self) -> None:
        """A parameter whose array was replaced (load_state_dict) goes back into the shared mapping."""
        for p, view in zip(self.params, self.shared.params):
            if p.data is not view:
                view[...] = p.data
                p.data = view

    def _all(self, mine, messages: list) -> tuple:
        """mine() here, with BLAS on one thread, while worker k handles messages[k - 1] (None: nothing).

        Returns (mine's result, [each worker's reply]). Every reply is collected before an error
        (this process's, or the first worker's) is raised, so the pipes stay in step.
        """
        messages, lost = list(messages), None
        for k, ((process, conn), message) in enumerate(zip(self.workers, messages), start=1):
            if message is not None:
                try:
                    conn.send(message)
                except OSError:                       # a broken pipe: the worker is gone
                    messages[k - 1] = None
                    lost = lost or _died(k, process)
        try:
            with self._blas.one():
                result = mine()
        except BaseException:
            self._replies(messages, raise_first=False)
            raise
        replies = self._replies(messages, raise_first=True)
        if lost is not None:
            raise lost
        return result, replies

    def _replies(self, messages: list, raise_first: bool) -> list:
        replies, error = [], None
        for k, ((process, conn), message) in enumerate(zip(self.workers, messages), start=1):
            reply = None
            if message is not None:
                try:
                    reply = _receive(k, process, conn)
                except BaseException as failure:  # noqa: BLE001 - the first one is raised below
                    error = error or failure
            replies.append(reply)
        if error is not None and raise_first:
            raise error
        return replies

    # ---- a step --------------------------------------------------------------------------------
    def gradients(self, model, task, batches, step: int | None = None) -> float:
        """Forward and backward every micro-batch, split across the processes; summed gradients in .grad.

        Returns the mean loss (tinyllm.strategy.compute_gradients's numbers, up to the order of
        additions); with .grad already set, the step's gradients are added to it.
        """
        self.start(model, task)
        earlier = [None if p.grad is None else p.grad.copy() for p in self.params]
        scale = 1.0 / len(batches)
        jobs = [[] for _ in range(self.processes)]        # process -> [(slice, weight, mask source)]
        weights = []                                      # micro-batch -> [each slice's weight]
        for batch, first in zip(batches, first_rows(batches)):
            slices = batch_slices(task, batch, self.processes)
            whole = sum(w for _, w, _ in slices)
            sources = slice_sources(model, step, [first + row for _, _, row in slices])
            for k, ((piece, w, _), source) in enumerate(zip(slices, sources)):
                jobs[k].append((piece, scale * w / whole, source))
            weights.append([scale * w / whole for _, w, _ in slices])
        training = model.training
        own, others = self._all(lambda: _run_jobs(self, 0, model, task, jobs[0], training),
                                [("grad", jobs[k], training) for k in range(1, self.processes)])
        losses = [own] + others
        total = sum(sum(losses[k][b] * w for k, w in enumerate(slice_weights))
                    for b, slice_weights in enumerate(weights))
        self._all(lambda: _sum_slots(self.shared, self.groups[0]), [("sum", g) for g in self.groups[1:]])
        has_grad = self.shared.has_grad.any(axis=0)
        for i, p in enumerate(self.params):
            summed = self.shared.slots[0][i] if has_grad[i] else None
            if earlier[i] is None:
                p.grad = summed
            else:
                p.grad = earlier[i] if summed is None else earlier[i] + summed
        return total

    def grad_norm(self, params) -> float:
        """The global L2 norm: the squared norms the processes wrote at the sum, added in parameter order
        (of the gradients as gradients() left them; any others are computed here)."""
        params = list(params)
        if self.shared is None or [self.index.get(id(p)) for p in params] != list(range(len(self.params))) \
                or any(p.grad is not None and p.grad is not self.shared.slots[0][i] for i, p in enumerate(params)):
            return super().grad_norm(params)
        norms = self.shared.square_norms
        return math.sqrt(sum(float(norms[i]) for i, p in enumerate(params) if p.grad is not None))

    def step(self, optimizer, lr: float) -> None:
        """The optimizer's update, each process updating its group of the parameters (parallel_step)."""
        optimizer.step(lr, spread=self.parallel_step)

    def parallel_step(self, update, named: list) -> None:
        """The optimizer's `spread`: update(the part of `named` in group 0) here, while each worker runs
        its copy of the optimizer's step (the same lr and step count) on its group, in the shared parameters."""
        if self.shared is None:
            update(named)
            return
        todo = {self.index[id(p)] for _, p in named}
        mine = [pair for pair in named if self.index[id(pair[1])] in self.groups[0]]
        opt = self.optimizer
        messages = []
        for group in self.groups[1:]:
            chosen = [i for i in group if i in todo]
            messages.append(("step", opt.lr, opt.step_count, chosen, [self._grad_of(i) for i in chosen])
                            if chosen else None)
        self._all(lambda: update(mine), messages)
        if self.shared.release_slots():              # the step has read them: .grad no longer holds them
            for i, p in enumerate(self.params):
                if p.grad is self.shared.slots[0][i]:
                    p.grad = None

    def _grad_of(self, i: int) -> str:
        """How a worker finds parameter i's gradient: "slot", the summed view all processes share."""
        if self.params[i].grad is self.shared.slots[0][i]:
            return "slot"
        raise ValueError("DataProcesses: a gradient outside the shared slots cannot reach the workers "
                         f"(parameter {self.optimizer.params[i][0]}); compute gradients with this strategy")

    def batch_loss(self, model, task, batch) -> float:
        """The batch's mean loss, without a graph, the rows split across the processes."""
        self.start(model, task)
        slices = batch_slices(task, batch, self.processes)
        whole = sum(w for _, w, _ in slices)
        pieces = [piece for piece, _, _ in slices] + [None] * (self.processes - len(slices))
        training = model.training
        own, others = self._all(lambda: _slice_loss(model, task, pieces[0], training),
                                [None if piece is None else ("loss", piece, training) for piece in pieces[1:]])
        losses = [own] + others
        return sum(loss * w / whole for loss, (_, w, _) in zip(losses, slices))


# ---- the worker side (and the work this process does alike) ------------------------------------

def _worker_main(strategy: DataProcesses, k: int, conn, parents_end, model, task, parent: int) -> None:
    """A worker's life: wait for a message, do it, reply; exit at "stop" or when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides when to stop, saves, tells us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(parent)
    parents_end.close()                               # copies of the parent's pipe ends, made by fork:
    for _, other in strategy.workers:                 # with them closed, the parent's exit is an EOF here
        other.close()
    blas = strategy._blas.one()
    blas.__enter__()                                  # BLAS on one thread for the worker's whole life
    np.seterr(over="ignore", invalid="ignore")        # as the parent's step and evaluation (trainer.DIVERGING)
    optimizer = strategy.optimizer
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):                   # the parent is gone
            break
        kind = message[0]
        if kind == "stop":
            break
        try:
            if kind == "grad":
                reply = _run_jobs(strategy, k, model, task, message[1], message[2])
            elif kind == "sum":
                reply = _sum_slots(strategy.shared, message[1])
            elif kind == "step":
                reply = _optimizer_step(strategy, optimizer, *message[1:])
            elif kind == "loss":
                reply = _slice_loss(model, task, message[1], message[2])
            else:
                raise ValueError(f"unknown message {kind!r}")
            conn.send(("ok", reply))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
            conn.send(("error", portable(error), traceback.format_exc()))
    conn.close()


def _receive(k: int, process, conn):
    """Worker k's reply; its exception raised here (its traceback chained), or WorkerError if it died."""
    try:
        status, *payload = conn.recv()
    except (EOFError, OSError):
        raise _died(k, process) from None
    if status == "ok":
        return payload[0]
    error, text = payload
    if hasattr(error, "add_note"):
        error.add_note(f"(raised in worker process {k})")
    raise error from WorkerTraceback(text)


def _died(k: int, process) -> WorkerError:
    process.join(timeout=1.0)
    code = process.exitcode
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
        if -code == signal.SIGKILL:
            how += " (on Linux usually the out-of-memory killer: see `dmesg`)"
    else:
        how = f"died (exit code {code}; see its output above)"
    return WorkerError(f"worker process {k} {how} during a training step; nothing was saved from that step: "
                       "continue from the last checkpoint with --resume, with fewer --workers or a smaller "
                       "--batch-size if memory ran out")


def _run_jobs(strategy: DataProcesses, k: int, model, task, jobs: list, training: bool) -> list:
    """Forward and backward of process k's slices; their gradients added into slot k. Returns the losses."""
    shared = strategy.shared
    slot, has_grad = shared.slots[k], shared.has_grad[k]
    has_grad[:] = 0
    model.train(training)
    losses = []
    for piece, weight, masks in jobs:
        with enable_grad(), masks.using(model):      # a worker forked during an evaluation starts in no_grad
            loss = task.loss(model, piece)
            grads = grad(loss, strategy.params, grad_output=weight)
        losses.append(float(loss.item()))
        for i, g in enumerate(grads):
            if g is None:
                continue
            if has_grad[i]:
                slot[i] += g
            else:
                slot[i][...] = g
                has_grad[i] = 1
    return losses


def _sum_slots(shared: SharedArrays, group: list) -> None:
    """For each parameter i of group: slot 0 <- the slots that hold a gradient, added in slot order;
    and its squared norm into the table."""
    for i in group:
        holders = [k for k in range(shared.has_grad.shape[0]) if shared.has_grad[k, i]]
        target = shared.slots[0][i]
        if not holders:
            shared.square_norms[i] = 0.0
            continue
        if holders[0] != 0:
            target[...] = shared.slots[holders[0]][i]
        for k in holders[1:]:
            target += shared.slots[k][i]
        flat = target.reshape(-1)
        shared.square_norms[i] = float(np.dot(flat, flat))


def _optimizer_step(strategy: DataProcesses, optimizer, lr: float, step_count: int, group: list,
                    grads: list) -> None:
    """This worker's share of the parent's optimizer.step(lr): the same lr and step count, on `group`."""
    shared = strategy.shared
    for i, how in zip(group, grads):
        strategy.params[i].grad = shared.slots[0][i]                  # how == "slot": the summed gradient
    chosen = [optimizer.params[i] for i in group]
    optimizer.step_count = step_count - 1             # step() counts this step
    optimizer.step(lr, spread=lambda update, named: update(chosen))


def _slice_loss(model, task, piece, training: bool) -> float:
    model.train(training)
    with no_grad():
        return float(task.loss(model, piece).item())


def stop_other_threads() -> None:
    """Before forking: stop tqdm's monitor thread if a progress bar started one (the Trainer's bar
    starts none; tqdm starts a new one for a later bar that wants it). Other threads are the caller's."""
    monitor_class = getattr(sys.modules.get("tqdm._monitor"), "TMonitor", None)
    for thread in threading.enumerate() if monitor_class is not None else ():
        if isinstance(thread, monitor_class):
            with contextlib.suppress(Exception):
                thread.exit()


_running: "weakref.WeakSet[DataProcesses]" = weakref.WeakSet()   # strategies whose workers may still run
_exit_hook_registered = False


def _stop_before_multiprocessing_exits(strategy: DataProcesses) -> None:
    """Close `strategy` at interpreter exit before multiprocessing's own exit hook runs.

    That hook terminates daemonic children with SIGTERM, which workers ignore, and then joins
    them: a run that ends without closing its strategy would wait forever. atexit runs hooks
    last-registered first, and multiprocessing registers its hook when it is first imported
    (before any worker starts), so a hook registered here, after a start, always runs first,
    whatever other atexit users (weakref.finalize) registered before.
    """
    global _exit_hook_registered
    _running.add(strategy)
    if not _exit_hook_registered:
        atexit.register(_close_running)
        _exit_hook_registered = True


def _close_running() -> None:
    for strategy in list(_running):
        strategy.close()


def _stop_workers(workers: list) -> None:
    """Tell every worker to stop, and reap it (no zombies); a worker that does not stop is killed."""
    for _, conn in workers:
        with contextlib.suppress(OSError, BrokenPipeError):
            conn.send(("stop",))
    for process, conn in workers:
        process.join(timeout=5.0)
        if process.is_alive():
            process.kill()
            process.join()
        conn.close()
