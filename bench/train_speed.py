"""Training speed and memory: our trainer beside the PyTorch reference, same data, shape and threads.

Runs `tinyllm train` and ../shared/bench/ref_torch_gpt.py (in an environment you point at
with --ref-python: torch is never a dependency of tinyllm) as subprocesses, alternating,
on char-level text, with the same model shape, batch, thread count (OMP/OpenBLAS/MKL
variables for both, --threads for the reference) and number of steps. Warm-up is
excluded on both sides (the reference skips 3 warm-up steps; we drop the first logging
interval). Prints tokens/s and peak RSS for each, and the ratios; with --write, puts the
table into docs/performance.md between its markers.

    python bench/train_speed.py --ref-python /tmp/refvenv/bin/python \\
        --data ../shared/data/tinyshakespeare.txt --shape baby --threads 2 --iters 60 --repeats 2

Shapes: baby (nanoGPT's CPU config: 4 layers, 4 heads, 128 wide, block 64, batch 12) and
shakespeare (nanoGPT's shakespeare-char GPU shape: 6/6/384, block 256, batch 16, 10.8M params).
Also printed: achieved FLOP/s (6 N + 12 L T C FLOPs per token) beside the machine's measured
float32 GEMM rate with the same thread count.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {  # name -> (layers, heads, width, block, batch)
    "baby": (4, 4, 128, 64, 12),
    "shakespeare": (6, 6, 384, 256, 16),
}
MARK_BEGIN, MARK_END = "<!-- train_speed:begin -->", "<!-- train_speed:end -->"


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_ours(args, shape, env) -> dict:
    L, H, C, T, B = SHAPES[shape]
    with tempfile.TemporaryDirectory() as out_dir:
        log_every = max(1, args.iters // 6)
        cmd = [sys.executable, "-m", "tinyllm.cli", "train", "--data", args.data, "--out", out_dir,
               "--tokenizer", "char", "--n-layer", str(L), "--n-head", str(H), "--n-embd", str(C),
               "--block-size", str(T), "--batch-size", str(B), "--max-iters", str(args.iters),
               "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-iters", "100", "--weight-decay", "0.1",
               "--beta2", "0.99", "--grad-clip", "1.0", "--dropout", "0", "--eval-interval", str(args.iters),
               "--eval-iters", "1", "--log-interval", str(log_every), "--seed", "1337",
               "--threads", str(args.threads)]
        _, rss = run_measured_with_rusage(cmd, env)
        records = [json.loads(line) for line in open(Path(out_dir) / "metrics.jsonl") if line.strip()]
    steps = [r for r in records if "elapsed_s" in r and "tokens_seen" in r]
    first, last = steps[0], steps[-1]  # the first logging interval (warm-up) is left out
    tok_s = (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])
    return {"tokens_per_s": tok_s, "rss_mib": rss}


def run_ref(args, shape, env) -> dict:
    L, H, C, T, B = SHAPES[shape]
    cmd = [args.ref_python, str(args.ref_script), "--data", args.data, "--layers", str(L), "--heads", str(H),
           "--dim", str(C), "--ctx", str(T), "--batch", str(B), "--iters", str(args.iters),
           "--threads", str(args.threads), "--eval-iters", "1"]
    out, rss = run_measured_with_rusage(cmd, env)
    result = json.loads(out.strip().splitlines()[-1])
    return {"tokens_per_s": result["tokens_per_s"], "rss_mib": rss}


def run_measured_with_rusage(cmd: list, env: dict) -> tuple[str, float]:
    """Like run_measured, but reaps the child with wait4 so its own ru_maxrss is read."""
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd[:5]))} ... failed ({proc.returncode}):\n{err_f.read()[-3000:]}")
        return out_f.read(), usage.ru_maxrss / 1024


def gemm_gflops(threads: int) -> float:
    code = ("import time, numpy as np\n"
            "a = np.random.rand(1024, 1024).astype(np.float32); b = a.copy(); a @ b\n"
            "t = time.perf_counter(); n = 10\n"
            "for _ in range(n): a @ b\n"
            "print(2 * 1024**3 * n / (time.perf_counter() - t) / 1e9)")
    return float(subprocess.check_output([sys.executable, "-c", code], env=thread_env(threads), text=True))


def flops_per_token(shape: str, vocab: int) -> float:
    L, H, C, T, B = SHAPES[shape]
    n_params = L * 12 * C * C + vocab * C + T * C   # blocks (weights) + tied embedding + positions
    return 6 * n_params + 12 * L * T * C


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-python", required=True, help="a Python with torch installed (a throwaway venv)")
    p.add_argument("--ref-script", default=str(ROOT.parent / "shared" / "bench" / "ref_torch_gpt.py"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    p.add_argument("--shape", choices=sorted(SHAPES), action="append", help="repeatable; default: both")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    args = p.parse_args()
    shapes = args.shape or ["baby", "shakespeare"]
    env = thread_env(args.threads)
    vocab = len(set(open(args.data, encoding="utf-8").read()))
    gemm = gemm_gflops(args.threads)
    rows = []
    for shape in shapes:
        ours, ref = [], []
        for r in range(args.repeats):  # alternate, and swap who goes first, so drift cancels
            pair = [("ours", run_ours), ("ref", run_ref)]
            for who, fn in (pair if r % 2 == 0 else pair[::-1]):
                (ours if who == "ours" else ref).append(fn(args, shape, env))
        o_tok = statistics.median(x["tokens_per_s"] for x in ours)
        r_tok = statistics.median(x["tokens_per_s"] for x in ref)
        o_rss = max(x["rss_mib"] for x in ours)
        r_rss = max(x["rss_mib"] for x in ref)
        achieved = o_tok * flops_per_token(shape, vocab) / 1e9
        rows.append((shape, o_tok, r_tok, o_tok / r_tok, o_rss, r_rss, o_rss / r_rss, achieved))
        print(f"{shape}: ours {o_tok:.0f} tok/s vs torch {r_tok:.0f} tok/s = {o_tok / r_tok:.2f}x; "
              f"peak RSS ours {o_rss:.0f} MiB vs torch {r_rss:.0f} MiB = {o_rss / r_rss:.2f}x; "
              f"ours {achieved:.1f} GFLOP/s of a measured {gemm:.1f} GFLOP/s float32 GEMM", flush=True)
    table = render(rows, args, gemm)
    print(table)
    if args.write:
        write_table(table)


def render(rows, args, gemm) -> str:
    import numpy
    lines = [f"Measured {datetime.date.today()} on {platform.machine()} ({os.cpu_count()} cores), Python "
             f"{platform.python_version()}, NumPy {numpy.__version__}; {args.threads} threads each, "
             f"{args.iters} steps, median of {args.repeats} alternating runs; float32 GEMM rate {gemm:.1f} GFLOP/s.",
             "", f"Command: `python bench/train_speed.py --ref-python PY --threads {args.threads} "
             f"--iters {args.iters} --repeats {args.repeats} --write`", "",
             "| shape | tinyllm tok/s | torch tok/s | ratio | tinyllm RSS MiB | torch RSS MiB | RSS ratio | tinyllm GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for shape, o, r, ratio, orss, rrss, rss_ratio, achieved in rows:
        lines.append(f"| {shape} | {o:.0f} | {r:.0f} | {ratio:.2f}x | {orss:.0f} | {rrss:.0f} | {rss_ratio:.2f}x | {achieved:.1f} |")
    return "\n".join(lines)


def write_table(table: str) -> None:
    path = ROOT / "docs" / "performance.md"
    text = path.read_text() if path.exists() else f"# Performance\n\n{MARK_BEGIN}\n{MARK_END}\n"
    if MARK_BEGIN not in text:
        text += f"\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{MARK_BEGIN}\n{table}\n{MARK_END}{tail}")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
