"""Worker processes for corpus work: a map over every core, results in order, memory bounded.

    with WorkerPool(workers=4, state=tokenizer) as pool:
        for ids in pool.map(encode_segment, segments):      # encode_segment(tokenizer, segment)
            write(ids)                                      # in the order of `segments`

`state` (a tokenizer, say) is handed to every worker once, when it starts (inherited
through fork on Linux); each call sends one item and gets one result back. At most
`ahead` items (twice the workers, by default) are out at a time, so a corpus of any
size streams through in bounded memory, and results come back in item order, so what
several workers make is what one process makes. With one worker, or where the item
function is cheap, nothing is started: `map` runs in this process.

Workers ignore Ctrl-C (this process stops them: the items not started are cancelled,
the ones running finish) and die with this process (Linux: prctl PDEATHSIG), so an
interrupted run leaves none behind. A worker that dies (killed, out of memory) is a
WorkerError naming the way on (--workers 1); so is a call that takes longer than
CALL_DEADLINE_S. An exception raised by the item function (a file that is not UTF-8,
say) is raised here, as it is.

Leaves out: threads (the work is Python code, which holds the GIL), and sharing results
between workers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from tinyllm.errors import UserError

CALL_DEADLINE_S = 900.0  # one item (a segment of about 1 MiB) takes well under a second
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
_state = None  # the state of this worker process (set by _start_worker)


class WorkerError(UserError):
    """A worker process died or stopped answering; the message says what to do."""


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """A worker count from a `--workers` value: 0 or None is one per core."""
    if workers is None or workers <= 0:
        return available_cores()
    return int(workers)


class WorkerPool:
    """`map(function, items)` over `workers` processes that each hold `state`."""

    def __init__(self, workers: int | None, state=None):
        self.workers = resolve_workers(workers)
        self.state = state
        self.executor: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> "WorkerPool":
        if self.workers > 1:
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
            self.executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_start_worker, initargs=(self.state, os.getpid()))
        return self

    def __exit__(self, *exc_info) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def map(self, function: Callable, items: Iterable, ahead: int | None = None) -> Iterator:
        """function(state, item) for each item, in order (a module-level function, so that a
        worker can find it)."""
        if self.executor is None:
            for item in items:
                yield function(self.state, item)
            return
        ahead = ahead or 2 * self.workers
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(self.executor.submit(_call, function, item))
            if len(pending) >= ahead:
                yield self._result(pending.popleft())
        while pending:
            yield self._result(pending.popleft())

    def _result(self, future: concurrent.futures.Future):
        try:
            return future.result(timeout=CALL_DEADLINE_S)
        except BrokenProcessPool:
            raise WorkerError("a worker process died (killed, or out of memory?); run again with fewer "
                              "--workers (e.g. --workers 1): finished work is kept") from None
        except concurrent.futures.TimeoutError:
            raise WorkerError(f"a worker process gave no answer in {CALL_DEADLINE_S:.0f} s; run again with "
                              "--workers 1 to see where it stops") from None


def _start_worker(state, parent: int) -> None:
    global _state
    _state = state
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _call(function: Callable, item):
    return function(_state, item)
