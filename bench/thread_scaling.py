"""How well the batch split uses the cores: one slice alone, the slices in sequence, and whole training
steps on one process, on threads and on worker processes, alternated step by step.

For the baby shape (or --shape shakespeare), one batch split by rows into --workers slices
(tinyllm/threads.py, tinyllm/processes.py). Times per step:

    alone       one slice's forward + backward on this thread (BLAS on one thread)
    sequence    every slice, one after the other, on this thread (BLAS on one thread)
    one         a whole training step (gradients, norm, clipping, AdamW) in this process, BLAS on its threads
    threads     the same step with the slices on threads (DataThreads)
    processes   the same step with the slices on worker processes (DataProcesses)

The last three run on three copies of the model, one step of each in turn (the order rotating),
so a machine whose speed drifts (a shared one) slows them alike: compare them by their ratio.
`threads / alone` is the cost of running slices together (1.0 would be perfect scaling). With
--profile, the per-op table of the slices in sequence and on threads. Also printed: page faults
and system time per threaded step (resource.getrusage).

    python bench/thread_scaling.py [--workers 2] [--shape baby] [--steps 20] [--profile]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from autograd import backend, profiler  # noqa: E402
from tinyllm import GPT, GPTConfig  # noqa: E402
from tinyllm import threads as T  # noqa: E402
from tinyllm.optim import AdamW, clip_grad_norm  # noqa: E402
from tinyllm.processes import DataProcesses  # noqa: E402
from tinyllm.strategy import NextTokenLoss, SingleProcess  # noqa: E402

SHAPES = {"baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12),
          "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=16)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shape", choices=sorted(SHAPES), default="baby")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    shape = dict(SHAPES[args.shape])
    batch = shape.pop("batch")
    backend.keep_freed_memory()                      # as the Trainer does
    config = GPTConfig(vocab_size=65, **shape)
    tokens = np.random.default_rng(0).integers(0, 65, size=(batch, shape["block_size"] + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    task = NextTokenLoss()
    model = GPT(config, seed=0)
    params = model.parameters()
    ranges = T.split_rows(batch, args.workers)
    threads = T.DataThreads(args.workers)

    def one(i):
        a, b = ranges[i]
        return T._slice_gradients(model, task, params, (x[a:b], y[a:b]), (b - a) / batch, T.MaskSource(None, 1, a))

    def timed(fn):
        for _ in range(2):
            fn()
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return (time.perf_counter() - start) / args.steps * 1e3

    with threads._blas.one():
        alone = timed(lambda: one(0))
        sequential = timed(lambda: [one(i) for i in range(len(ranges))])
    print(f"{args.shape}, batch {batch} in {len(ranges)} slices of {ranges[0][1] - ranges[0][0]} rows; ms per step:")
    print(f"  one slice alone       {alone:8.1f}   (forward + backward, BLAS on one thread)")
    print(f"  slices in sequence    {sequential:8.1f}")

    runs = {}
    for name, make in (("one", lambda opt: SingleProcess()), ("threads", lambda opt: T.DataThreads(args.workers)),
                       ("processes", lambda opt: DataProcesses(args.workers, opt))):
        m = GPT(config, seed=0)
        opt = AdamW(list(m.named_parameters()), lr=1e-3, weight_decay=0.1)
        strategy = make(opt)
        runs[name] = (m, opt, strategy, [])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    names = list(runs)
    for step in range(args.steps + 2):
        for name in names[step % 3:] + names[:step % 3]:      # rotate who goes first
            m, opt, strategy, times = runs[name]
            start = time.perf_counter()
            opt.zero_grad()
            strategy.gradients(m, task, [(x, y)], step + 1)
            trained = [q for _, q in opt.params]
            clip_grad_norm(trained, 1.0, strategy.grad_norm(trained))
            strategy.step(opt, 1e-3)
            if step >= 2:                                      # the first steps warm up (and fork)
                times.append((time.perf_counter() - start) * 1e3)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    tokens_per_step = batch * shape["block_size"]
    for name, (_, _, strategy, times) in runs.items():
        median = statistics.median(times)
        print(f"  step on {name:<10}    {median:8.1f}   (min {min(times):.1f}, max {max(times):.1f}; "
              f"{tokens_per_step / median * 1e3:,.0f} tok/s)")
        getattr(strategy, "close", lambda: None)()
    print(f"  page faults per step {(r1.ru_minflt - r0.ru_minflt) / (3 * (args.steps + 2)):.0f}, "
          f"system time {(r1.ru_stime - r0.ru_stime) / (3 * (args.steps + 2)) * 1e3:.1f} ms (this process)")
    if args.profile:
        with threads._blas.one(), profiler.profile() as seq:
            for _ in range(args.steps):
                [one(i) for i in range(len(ranges))]
        with profiler.profile() as par:
            for _ in range(args.steps):
                threads._run(one, [(i,) for i in range(len(ranges))])
        print(f"\nsequential (ms over {args.steps} steps, all slices):\n" + seq.table())
        print(f"\non threads (ms over {args.steps} steps, all slices, each op's wall time):\n" + par.table())
    threads.close()


if __name__ == "__main__":
    main()
