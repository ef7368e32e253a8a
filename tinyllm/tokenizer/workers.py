"""Worker processes for corpus work: a map over every core, results in order, memory bounded.

    with WorkerPool(workers=4, state=job) as pool:
        for ids in pool.map(encode_segment, segments):      # encode_segment(job, segment)
            write(ids)                                      # in the order of `segments`

`state` (what every call needs: a tokenizer, the corpus's file names) is handed to each
worker when it starts, inherited through fork (Linux; elsewhere pickled). Each worker has
a pipe of its own; an item goes to the worker with the fewest items in hand, and results
are read as soon as any worker has one (so a finished worker never waits on a slow
one) and handed out in item order, so what several workers make is what one process
makes. At most `ahead` items (three per worker, by default) are out at a time, so a
corpus of any size streams through in bounded memory: send small items (where a segment
lies, not its bytes). With one worker nothing is started: `map` runs in this process.

Workers ignore Ctrl-C; the pool stops them when its `with` block ends (killed at once
when it ends with an exception: their results are not wanted) and they die with this
process (Linux: prctl PDEATHSIG), so an interrupted run leaves none behind. A worker that
dies (killed, out of memory) is a WorkerError naming the way on (fewer --workers); so is
a call that gives no answer within CALL_DEADLINE_S. An exception raised by the function
(a file that is not UTF-8, say) is raised here as it is, with the worker's traceback
chained.

Leaves out: threads (the work is Python code, which holds the GIL), and sharing results
between workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import traceback
from typing import Callable, Iterable, Iterator

from tinyllm.errors import UserError, portable

CALL_DEADLINE_S = 900.0  # one item (a segment of about 1 MiB) takes well under a second
STOP_WAIT_S = 5.0  # a worker asked to stop that has not within this is killed
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


class WorkerError(UserError):
    """A worker process died or stopped answering; the message says what to do."""


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker, chained under the exception raised here."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """A worker count from a `--workers` value: 0 or None is one per core.

        >>> resolve_workers(3), resolve_workers(0) == available_cores()
        (3, True)
    """
    if workers is None or workers <= 0:
        return available_cores()
    return int(workers)


class WorkerPool:
    """`map(function, items)` over `workers` processes that each hold `state`."""

    def __init__(self, workers: int | None, state=None):
        self.workers = resolve_workers(workers)
        self.state = state
        self.processes: list = []  # (process, connection, items in hand)

    def __enter__(self) -> "WorkerPool":
        if self.workers > 1:
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
            try:
                for _ in range(self.workers):
                    ours, theirs = context.Pipe()
                    process = context.Process(target=_worker_main, args=(theirs, self.state, os.getpid()),
                                              daemon=True)
                    process.start()
                    theirs.close()
                    self.processes.append([process, ours, 0])
            except BaseException:
                self._stop(kill=True)
                raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop(kill=exc_type is not None)

    def map(self, function: Callable, items: Iterable, ahead: int | None = None) -> Iterator:
        """function(state, item) for each item, in item order (a module-level function, so that
        a worker can find it)."""
        if not self.processes:
            for item in items:
                yield function(self.state, item)
            return
        ahead = ahead or 3 * self.workers
        done: dict = {}  # item index -> result, for results that came back early
        sent = handed_out = 0
        for item in items:
            worker = min(self.processes, key=lambda w: w[2])
            try:
                worker[1].send((sent, function, item))
            except OSError:   # a broken pipe: the worker is gone
                raise died() from None
            worker[2] += 1
            sent += 1
            while sent - handed_out >= ahead:
                yield self._next(done, handed_out)
                handed_out += 1
        while handed_out < sent:
            yield self._next(done, handed_out)
            handed_out += 1

    def _next(self, done: dict, index: int):
        """The result of item `index`, reading whatever the workers send until it is there."""
        while index not in done:
            busy = [w[1] for w in self.processes if w[2]]
            ready = multiprocessing.connection.wait(busy, timeout=CALL_DEADLINE_S)
            if not ready:
                raise WorkerError(f"a worker process gave no answer in {CALL_DEADLINE_S:.0f} s; run again with "
                                  "--workers 1 to see where it stops")
            for connection in ready:
                worker = next(w for w in self.processes if w[1] is connection)
                try:
                    status, item_index, payload, *trace = connection.recv()
                except (EOFError, OSError):
                    raise died() from None
                worker[2] -= 1
                if status == "error":
                    raise payload from WorkerTraceback(trace[0])
                done[item_index] = payload
        return done.pop(index)

    def _stop(self, kill: bool) -> None:
        for process, connection, _ in self.processes:
            if kill:
                process.kill()
            else:
                with contextlib.suppress(OSError):
                    connection.send(None)
        for process, connection, _ in self.processes:
            process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()
            connection.close()
        self.processes = []


def died() -> WorkerError:
    """The error of a worker that is gone, whether the pool found out reading or sending."""
    return WorkerError("a worker process died (killed, or out of memory?); run again with fewer --workers "
                       "(e.g. --workers 1): finished work is kept")


def die_with_parent(parent: int) -> None:
    """In a forked worker: ask Linux to kill this process when its parent dies (a pipe's EOF would
    end it too, but only once it is back waiting for a message); exit now if the parent is gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(connection, state, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    die_with_parent(parent)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, function, item = message
        try:
            reply = ("ok", index, function(state, item))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent
            reply = ("error", index, portable(error), traceback.format_exc())
        connection.send(reply)
