"""Worker processes are forked from a process running no other thread.

A fork of a multi-threaded process can deadlock the child, and Python 3.12+ warns of it
(`DeprecationWarning: This process ... is multi-threaded, use of fork() may lead to deadlocks`;
the suite printed it 65 times on 3.13). The thread was tqdm's monitor, started by a progress
bar before the workers were forked: the Trainer's bar starts none, and DataProcesses stops one
that another bar started before it forks.
"""
import io
import os
import threading

import numpy as np
import pytest
from tqdm import tqdm

from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW
from tinyllm.processes import DataProcesses, fork_available
from tinyllm.strategy import NextTokenLoss
from tinyllm.trainer import Progress

pytestmark = pytest.mark.skipif(not fork_available(), reason="worker processes need fork (Linux)")


def monitors() -> list:
    return [t for t in threading.enumerate() if type(t).__name__ == "TMonitor" and t.is_alive()]


def test_the_trainers_progress_bar_starts_no_thread():
    for thread in monitors():
        thread.exit()
    progress = Progress("bar", total=10, initial=0, stream=io.StringIO())
    progress.step(1, 10, 2.0, 1e-3, 100.0, 1.0, log_now=True)
    try:
        assert monitors() == []
    finally:
        progress.close()


def test_workers_are_forked_while_no_other_thread_runs(monkeypatch):
    bar = tqdm(total=3, file=io.StringIO())      # any other bar: tqdm starts its monitor thread
    bar.update(1)
    assert monitors(), "tqdm started no monitor thread (tqdm.monitor_interval is 0 somewhere?)"
    threads_at_fork, real_fork = [], os.fork

    def fork():
        threads_at_fork.append(sorted(t.name for t in threading.enumerate()))
        return real_fork()
    monkeypatch.setattr(os, "fork", fork)
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4), seed=0)
    optimizer = AdamW(list(model.named_parameters()), lr=1e-3)
    workers = DataProcesses(2, optimizer)
    try:
        x = np.random.default_rng(0).integers(0, 5, (2, 4))
        workers.gradients(model, NextTokenLoss(), [(x, x)], step=1)
    finally:
        workers.close()
        bar.close()
    assert threads_at_fork == [["MainThread"]]
