"""What the saved-array guard costs: a baby training step with the guard on, and off, side by side.

The guard (autograd/saved.py) stamps a checksum of every shared array a Function saves for
backward, and checks it before that Function's backward. This runs one process's training
step of the `baby` model (forward, backward, AdamW) over and over, alternating a step with the
default guard, one with `autograd.saved_array_checks(False)` and, with --debug, one under
`autograd.debug_backward()` (exact copies: the strict mode), in the same process on the same
data. Each round runs every mode once, in a rotating order; a mode's cost is the median, over
the rounds, of its step time divided by the guard-off step time of the same round, so the
machine's drift cancels. Times are the process's CPU time (one BLAS thread: the step's own
work, which other processes on a shared machine disturb far less than the wall clock) and
the wall clock beside it. A third view needs no comparison at all: the guard's own work in a
step (every fingerprint taken in forward and checked in backward, recorded in a real step and
replayed over the step's own arrays) as a share of the step. Prints the CPU, BLAS threads and
the measured float32 GEMM rate first.

    python bench/saved_guard.py [--rounds 60] [--batch 12] [--threads 1] [--debug]

Goal (issue 25): the default guard costs at most 2% of a step.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=60, help="rounds of one step per mode (after 3 warm-up rounds)")
    p.add_argument("--batch", type=int, default=12, help="rows per step (the baby shape's batch is 12)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (a worker process of a run uses 1)")
    p.add_argument("--debug", action="store_true", help="also time debug_backward(), the exact mode")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    import autograd
    from autograd import backend
    from tinyllm.model import GPT, GPTConfig
    from tinyllm.optim import AdamW

    config = GPTConfig.preset("baby", vocab_size=65)
    model = GPT(config, seed=0)
    optimizer = AdamW(model.named_parameters(), lr=1e-4)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (args.batch, config.block_size + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        _, loss = model(x, y)
        model.zero_grad()
        loss.backward()
        optimizer.step()

    modes = {"guard on (default)": autograd.saved_array_checks(True), "guard off": autograd.saved_array_checks(False)}
    if args.debug:
        modes["debug_backward()"] = autograd.debug_backward()
    names = list(modes)
    cpu = {name: [] for name in names}
    wall = {name: [] for name in names}
    for r in range(args.rounds + 3):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            with modes[name]:
                start_cpu, start = time.process_time(), time.perf_counter()
                step()
                elapsed_cpu, elapsed = time.process_time() - start_cpu, time.perf_counter() - start
            if r >= 3:
                cpu[name].append(elapsed_cpu)
                wall[name].append(elapsed)
    forward, backward = time_inside_the_guard(model, x, y)

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy {np.__version__}; "
          f"BLAS threads {args.threads}; float32 GEMM {backend.gemm_gflops('float32'):.0f} GFLOP/s (512^3)")
    print(f"baby model (4 layers, 128 wide, block 64), batch {args.batch}, float32: forward + backward + AdamW, "
          f"{args.rounds} rounds")
    print(f"{'mode':<20}{'CPU ms':>9}{'vs off':>9}{'(quartiles)':>16}{'wall ms':>10}{'vs off':>9}{'(quartiles)':>16}")
    for name in names:
        row = f"{name:<20}"
        for times in (cpu, wall):
            ratios = sorted(t / o for t, o in zip(times[name], times["guard off"]))
            q1, q3 = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
            row += (f"{statistics.median(times[name]) * 1e3:>9.1f}{statistics.median(ratios):>8.3f}x"
                    f"{f'({q1:.3f}-{q3:.3f})':>17}")
        print(row)
    step_ms = statistics.median(cpu["guard on (default)"]) * 1e3
    inside = (forward + backward) * 1e3
    print(f"the guard's own work, replayed: {forward * 1e3:.2f} ms of CPU in forward (fingerprints taken) + "
          f"{backward * 1e3:.2f} ms in backward (checked) = {inside / step_ms:.1%} of the default step")


def time_inside_the_guard(model, x, y, repeats: int = 20) -> tuple:
    """(forward, backward) CPU seconds of the guard's own work in one step: every fingerprint taken
    (saved.guard) and checked (saved.check), recorded in a real step and replayed `repeats` times
    over the step's own arrays, timed with the process's CPU clock around each whole replay."""
    from autograd import saved

    calls = []
    original = saved.guard

    def recording(fn, inputs, out, settings, exact):
        calls.append((fn, inputs, out, settings))
        return original(fn, inputs, out, settings, exact)

    saved.guard = recording
    try:
        _, loss = model(x, y)
    finally:
        saved.guard = original
    checks = [(fn, fn.saved_guard) for fn, *_ in calls if fn.saved_guard is not None]
    start = time.process_time()
    for _ in range(repeats):
        for fn, inputs, out, settings in calls:
            original(fn, inputs, out, settings, False)
    forward = (time.process_time() - start) / repeats
    start = time.process_time()
    for _ in range(repeats):
        for fn, guarded in checks:
            saved.check(fn, guarded)
    backward = (time.process_time() - start) / repeats
    loss.backward()
    return forward, backward


if __name__ == "__main__":
    main()
