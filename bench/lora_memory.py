"""LoRA vs full finetuning on the GPT-2 (124M) shape: optimizer state, peak memory, step time.

Each mode runs in its own process (so peak RSS is its own), on a GPT with random weights
(float32), batch `--batch` x `--seq` tokens, AdamW:

    full   every parameter trains: AdamW keeps m, v (and a scratch buffer) per parameter
    lora   the base is frozen, rank-r adapters on attn (c_attn, c_proj) and mlp (c_fc, c_proj) train

Reported per mode: trainable parameters, optimizer state bytes (AdamW's buffers, counted
exactly), gradient bytes after backward, the peak of memory traced by tracemalloc over one
whole step (forward, backward, optimizer update; NumPy reports its buffers to tracemalloc)
above what was allocated before the step, the process's peak RSS, and the median step
time over `--steps` timed steps (after one warm-up step, without tracemalloc).

    python bench/lora_memory.py [--batch 1 --seq 64 --steps 3 --rank 8 --threads 2]

Left out: mixed precision, activation checkpointing, GPU memory (CuPy pools are not traced).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)


def measure(mode: str, batch: int, seq: int, steps: int, rank: int) -> dict:
    import resource  # noqa: PLC0415
    import statistics  # noqa: PLC0415
    import time  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from tinyllm import GPT, GPTConfig  # noqa: PLC0415
    from tinyllm.lora import LoRAConfig, apply_lora, trainable_parameters  # noqa: PLC0415
    from tinyllm.optim import AdamW  # noqa: PLC0415

    config = GPTConfig.preset("gpt2")
    model = GPT(config, seed=0, dtype="float32")
    if mode == "lora":
        apply_lora(model, LoRAConfig(rank=rank, alpha=2 * rank, targets=("attn", "mlp")))
    trainable = trainable_parameters(model)
    optimizer = AdamW(trainable, lr=1e-4, weight_decay=0.0)
    state_bytes = sum(a.nbytes for a in optimizer.state_arrays().values())
    scratch_bytes = sum(a.nbytes for a in optimizer._scratch.values())
    rng = np.random.default_rng(0)
    x = rng.integers(0, config.vocab_size, (batch, seq))
    y = rng.integers(0, config.vocab_size, (batch, seq))

    def step():
        _, loss = model(x, y)
        loss.backward()
        grads = sum(p.grad.nbytes for _, p in trainable if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.item()), grads

    step()  # warm-up: first-touch of every buffer
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    _, grad_bytes = step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "mode": mode,
        "params_total": model.num_parameters(),
        "params_trainable": sum(int(p.size) for _, p in trainable),
        "optimizer_state_mb": state_bytes / 2**20,
        "optimizer_scratch_mb": scratch_bytes / 2**20,
        "grad_mb": grad_bytes / 2**20,
        "step_peak_traced_mb": (peak - before) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_s": statistics.median(times),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", choices=("full", "lora"), default=None, help=argparse.SUPPRESS)  # child process
    args = p.parse_args()
    if args.mode is not None:
        print(json.dumps(measure(args.mode, args.batch, args.seq, args.steps, args.rank)))
        return
    env = {**os.environ}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, str(args.threads))
    results = {}
    for mode in ("full", "lora"):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--mode", mode, "--batch", str(args.batch),
                              "--seq", str(args.seq), "--steps", str(args.steps), "--rank", str(args.rank)],
                             env=env, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    full, lora = results["full"], results["lora"]
    print(f"GPT-2 (124M shape, random weights, float32), batch {args.batch} x {args.seq} tokens, AdamW, "
          f"LoRA rank {args.rank} on attn+mlp, {env['OPENBLAS_NUM_THREADS']} BLAS threads")
    rows = [("trainable parameters", "params_trainable", "{:,.0f}"),
            ("optimizer state (m, v) MB", "optimizer_state_mb", "{:.1f}"),
            ("optimizer scratch MB", "optimizer_scratch_mb", "{:.1f}"),
            ("gradients MB", "grad_mb", "{:.1f}"),
            ("step peak traced MB (above before-step)", "step_peak_traced_mb", "{:.1f}"),
            ("process peak RSS MB", "peak_rss_mb", "{:.0f}"),
            ("step time s (median)", "step_s", "{:.3f}")]
    print(f"{'':42s}{'full':>14s}{'lora':>14s}{'lora/full':>11s}")
    for label, key, fmt in rows:
        ratio = lora[key] / full[key] if full[key] else float("nan")
        print(f"{label:42s}{fmt.format(full[key]):>14s}{fmt.format(lora[key]):>14s}{ratio:>11.4f}")
    if not lora["optimizer_state_mb"] < 0.1 * full["optimizer_state_mb"]:
        sys.exit("LoRA did not cut optimizer state below 10% of full finetuning")


if __name__ == "__main__":
    main()
