"""Pipeline speed and memory: 2 stages (mpiexec -n 2) against 1 process, same model and global batch.

    python bench/pipeline_speed.py                     # defaults: 4 layers, 256 wide, block 64, batch 32, m = 8
    python bench/pipeline_speed.py --n-embd 128 --steps 5

Every process runs on one thread (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1, set before
NumPy loads), so two ranks use two cores and one process one core. Reported:

- step time (forward + backward + AdamW) of one process on the whole batch, of one
  process accumulating the same m microbatches, and of the 2-stage pipeline with GPipe
  and 1F1B; the speedup of the pipeline over each, beside the most the bubble allows,
  p m / (m + p - 1), i.e. 2m / (m + 1) = 16/9 = 1.78x for p = 2, m = 8;
- per stage: the peak number of microbatch activations alive and the peak bytes NumPy
  allocated during one step (tracemalloc), for GPipe (m alive) and 1F1B (p - s alive).

Left out: more than two stages (the reference machine has two cores), GPU timing.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tinyllm.model import GPT, GPTConfig  # noqa: E402
from tinyllm.optim import AdamW, clip_grad_norm, global_grad_norm  # noqa: E402
from tinyllm.strategy import compute_gradients  # noqa: E402


def model_config(args) -> GPTConfig:
    return GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                     n_head=args.n_head, n_embd=args.n_embd, dropout=0.0)


def batches(args, count: int):
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.block_size)
    return [(rng.integers(0, args.vocab_size, size=shape), rng.integers(0, args.vocab_size, size=shape))
            for _ in range(count)]


def time_steps(step, data, warmup: int) -> float:
    """Median seconds per step after `warmup` untimed steps."""
    times = []
    for i, (x, y) in enumerate(data):
        start = time.perf_counter()
        step(x, y)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def single_process(args, accumulate: bool) -> float:
    model = GPT(model_config(args), seed=0)
    opt = AdamW(model.named_parameters(), lr=1e-4)
    params = model.parameters()
    m = args.microbatches

    def step(x, y):
        pieces = [(x[i::m], y[i::m]) for i in range(m)] if accumulate else [(x, y)]
        compute_gradients(model, pieces)
        clip_grad_norm(params, 1.0, global_grad_norm(params))
        opt.step()
        opt.zero_grad()
    return time_steps(step, batches(args, args.steps + args.warmup), args.warmup)


def worker(args) -> None:
    """One rank of the 2-stage pipeline: time steps, then measure one step's memory."""
    from mpi4py import MPI

    from parallel.engine import PipelineEngine
    from parallel.grid import Grid, GridShape
    from parallel.partition import uniform_partition
    from parallel.stage import StageModel
    grid = Grid(GridShape(2, 1), MPI.COMM_WORLD)
    stage = StageModel(GPT(model_config(args), seed=0), uniform_partition(args.n_layer, 2), grid.stage)
    engine = PipelineEngine(stage, grid, args.schedule, args.microbatches, args.batch_size)
    opt = AdamW(stage.named_parameters(), lr=1e-4)
    params = [p for _, p in stage.named_parameters()]

    def step(x, y):
        engine.compute_gradients(x, y)
        clip_grad_norm(params, 1.0, engine.global_grad_norm())
        opt.step()
        opt.zero_grad()
    data = batches(args, args.steps + args.warmup + 1)
    grid.world.Barrier()
    seconds = time_steps(step, data[:-1], args.warmup)
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    step(*data[-1])
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    report = grid.world.gather({"stage": grid.stage, "seconds": seconds, "peak_bytes": peak,
                                "peak_alive": engine.peak_alive_activations,
                                "recv_buffers": engine.act_pool.allocated}, root=0)
    if grid.rank == 0:
        Path(args.worker_out).write_text(json.dumps(report))


def pipelined(args, schedule: str) -> list:
    out = Path(args.tmp) / f"{schedule}.json"
    command = [shutil.which("mpiexec"), "-n", "2", sys.executable, __file__, "--worker", "--schedule", schedule,
               "--worker-out", str(out)] + [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                                            ("n_layer", "n_head", "n_embd", "block_size", "vocab_size",
                                             "batch_size", "microbatches", "steps", "warmup")]
    subprocess.run(command, check=True, cwd=REPO, timeout=600)
    return json.loads(out.read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--schedule", default="1f1b", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default="/tmp", help="where workers leave their reports")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    m = args.microbatches
    print(f"model: {args.n_layer} layers, {args.n_embd} wide, {args.n_head} heads, block {args.block_size}, "
          f"vocab {args.vocab_size}; global batch {args.batch_size}, m = {m}; float32, 1 thread per process")
    whole = single_process(args, accumulate=False)
    accumulated = single_process(args, accumulate=True)
    results = {s: pipelined(args, s) for s in ("gpipe", "1f1b")}
    bound = 2 * m / (m + 1)
    print(f"1 process, whole batch:        {whole * 1e3:8.1f} ms/step")
    print(f"1 process, {m} microbatches:    {accumulated * 1e3:8.1f} ms/step")
    for schedule, report in results.items():
        seconds = max(r["seconds"] for r in report)
        print(f"2 stages, {schedule:5s}:              {seconds * 1e3:8.1f} ms/step   speedup {whole / seconds:.2f}x "
              f"vs whole batch, {accumulated / seconds:.2f}x vs {m} microbatches (bubble bound {bound:.2f}x)")
    for schedule, report in results.items():
        for r in sorted(report, key=lambda r: r["stage"]):
            print(f"{schedule:5s} stage {r['stage']}: peak {r['peak_alive']} microbatches alive "
                  f"({r['recv_buffers']} receive buffers), peak allocated {r['peak_bytes'] / 2**20:7.1f} MiB in a step")


if __name__ == "__main__":
    main()
