"""How well the data-parallel threads use the cores: one slice alone, the slices one after the other, all at once.

For the baby shape (or --shape shakespeare), one batch split by rows into --threads slices
(tinyllm/threads.py). Times, with BLAS on one thread throughout:

    alone       one slice's forward + backward on this thread
    sequential  every slice, one after the other, on this thread
    threads     every slice at once, one per thread (what training does)

threads / alone is the cost of running them together (1.0 would be perfect scaling), and
sequential / threads the speed-up over one core. With --profile, the per-op table of the
sequential and the threaded run side by side shows where running together costs time.
Also prints the page faults and system time per threaded step (resource.getrusage).

    python bench/thread_scaling.py [--threads 2] [--shape baby] [--steps 20] [--profile]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from autograd import backend, profiler  # noqa: E402
from tinyllm import GPT, GPTConfig  # noqa: E402
from tinyllm import threads as T  # noqa: E402
from tinyllm.strategy import NextTokenLoss  # noqa: E402

SHAPES = {"baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12),
          "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=16)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", choices=sorted(SHAPES), default="baby")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    shape = dict(SHAPES[args.shape])
    batch = shape.pop("batch")
    backend.keep_freed_memory()                      # as the Trainer does
    model = GPT(GPTConfig(vocab_size=65, **shape), seed=0)
    tokens = np.random.default_rng(0).integers(0, 65, size=(batch, shape["block_size"] + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    params = model.parameters()
    ranges = T.split_rows(batch, args.threads)
    workers = T.DataThreads(args.threads)

    def one(i):
        a, b = ranges[i]
        return T._slice_gradients(model, NextTokenLoss(), params, (x[a:b], y[a:b]), (b - a) / batch,
                                  T.MaskSource(None, 1, a))

    def timed(fn):
        for _ in range(2):
            fn()
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return (time.perf_counter() - start) / args.steps * 1e3

    with workers._blas.one():
        alone = timed(lambda: one(0))
        sequential = timed(lambda: [one(i) for i in range(len(ranges))])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    together = timed(lambda: workers._run(one, [(i,) for i in range(len(ranges))]))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    steps = args.steps + 2
    print(f"{args.shape}, batch {batch} in {len(ranges)} slices of {ranges[0][1] - ranges[0][0]} rows, "
          f"{args.threads} threads, BLAS on one thread each; ms per step:")
    print(f"  one slice alone       {alone:8.1f}")
    print(f"  slices in sequence    {sequential:8.1f}")
    print(f"  slices on threads     {together:8.1f}   ({together / alone:.2f}x one slice alone, "
          f"{sequential / together:.2f}x faster than in sequence)")
    print(f"  page faults per threaded step {(r1.ru_minflt - r0.ru_minflt) / steps:.0f}, "
          f"system time {(r1.ru_stime - r0.ru_stime) / steps * 1e3:.1f} ms")
    if args.profile:
        with workers._blas.one(), profiler.profile() as seq:
            for _ in range(args.steps):
                [one(i) for i in range(len(ranges))]
        with profiler.profile() as par:
            for _ in range(args.steps):
                workers._run(one, [(i,) for i in range(len(ranges))])
        print(f"\nsequential (ms over {args.steps} steps, all slices):\n" + seq.table())
        print(f"\non threads (ms over {args.steps} steps, all slices, each op's wall time):\n" + par.table())
    workers.close()


if __name__ == "__main__":
    main()
