"""Training speed and memory: our trainer beside the PyTorch reference, same data, shape and cores.

Runs `tinyllm train` with its default settings (each batch split across worker processes,
`--workers N`) and ../shared/bench/ref_torch_gpt.py (in the pinned reference environment that
../shared/bench/make_ref_venv.sh builds: torch 2.13.0, CPU; torch is never a dependency of
tinyllm) as subprocesses, alternating, on char-level text, with the same model shape, batch,
core count (OMP/OpenBLAS/MKL variables for both, --threads for the reference) and number of
steps. Warm-up is excluded on both sides (the reference skips 3 warm-up steps; we drop the
first logging interval). Prints tokens/s and peak memory for each, and the ratios; with
--write, puts the table into docs/performance.md between its markers.

    python bench/train_speed.py --threads 2 --iters 40 --repeats 3 [--ref-python PY] [--shape baby]

Interference: each run also records how many cores the machine's other processes kept busy
meanwhile (/proc/stat's busy time less the run's own CPU time); on a shared machine, trust
the runs where that is near 0 (PyTorch's OpenMP threads spin-wait, so contention slows it far
more than us, which makes a loaded machine flatter our ratio).

Peak memory: the largest sum, over the run's processes (ours: the main process and its
workers; torch: one), of their proportional set sizes (PSS, /proc/PID/smaps_rollup: a page
shared by k processes counts 1/k to each, so the shared weights count once), sampled every
100 ms (reading smaps_rollup walks a process's page tables: sampling faster took a tenth of a
core from the runs it measured). Also recorded: the largest single process's peak RSS
(ru_maxrss, what `time -v` shows).

What it measured on, printed and written with the table: the CPU model, its cores, the
NumPy and BLAS build, the float32 GEMM rate of NumPy and of torch on the cores given (1024^3
products), and the torch version. Achieved FLOP/s (6 N + 12 L T C FLOPs per token) is shown
beside them.

Shapes: baby (nanoGPT's CPU config: 4 layers, 4 heads, 128 wide, block 64, batch 12) and
shakespeare (nanoGPT's shakespeare-char GPU shape: 6/6/384, block 256, batch 16, 10.8M params).
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_BENCH = ROOT.parent / "shared" / "bench"
SHAPES = {  # name -> (layers, heads, width, block, batch)
    "baby": (4, 4, 128, 64, 12),
    "shakespeare": (6, 6, 384, 256, 16),
}
PINNED_TORCH = "2.13.0"
MARK_BEGIN, MARK_END = "<!-- train_speed:begin -->", "<!-- train_speed:end -->"
GEMM_CODE = {  # float32 (1024 x 1024) @ (1024 x 1024), after a warm-up product; prints GFLOP/s
    "numpy": "import numpy as np; a = np.random.rand(1024, 1024).astype(np.float32); mm = lambda: a @ a",
    "torch": "import torch; torch.set_num_threads({threads}); a = torch.rand(1024, 1024); mm = lambda: a @ a",
}
GEMM_TIMING = ("\nimport time\nmm(); mm()\nbest = 0.0\nfor _ in range(3):\n    t = time.perf_counter()\n"
               "    for _ in range(5): mm()\n    best = max(best, 2 * 1024**3 * 5 / (time.perf_counter() - t) / 1e9)\n"
               "print(best)")


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
               "--eval-iters", "1", "--log-interval", str(log_every), "--seed", "1337", "--sample-tokens", "0",
               "--workers", str(args.threads), *args.ours_flags]
        _, memory = run_measured(cmd, env)
        records = [json.loads(line) for line in open(Path(out_dir) / "metrics.jsonl") if line.strip()]
    steps = [r for r in records if "elapsed_s" in r and "tokens_seen" in r]
    first, last = steps[0], steps[-1]  # the first logging interval (warm-up) is left out
    tok_s = (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])
    return {"tokens_per_s": tok_s, **memory}


def run_ref(args, shape, env) -> dict:
    L, H, C, T, B = SHAPES[shape]
    cmd = [args.ref_python, str(args.ref_script), "--data", args.data, "--layers", str(L), "--heads", str(H),
           "--dim", str(C), "--ctx", str(T), "--batch", str(B), "--iters", str(args.iters),
           "--threads", str(args.threads), "--eval-iters", "1"]
    out, memory = run_measured(cmd, env)
    result = json.loads(out.strip().splitlines()[-1])
    return {"tokens_per_s": result["tokens_per_s"], **memory}


def run_measured(cmd: list, env: dict) -> tuple[str, dict]:
    """Run cmd; (its stdout, {"pss_mib": peak summed PSS of its process tree, "rss_mib": its ru_maxrss,
    "others_cores": the cores other processes of the machine kept busy meanwhile, on average})."""
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        busy_before, started = busy_cpu_seconds(), time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, text=True)
        sampler = PssSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)   # usage includes the descendants it reaped (workers)
        sampler.stop()
        wall = time.perf_counter() - started
        others = (busy_cpu_seconds() - busy_before - usage.ru_utime - usage.ru_stime) / wall
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd[:5]))} ... failed ({proc.returncode}):\n{err_f.read()[-3000:]}")
        return out_f.read(), {"pss_mib": sampler.peak / 1024, "rss_mib": usage.ru_maxrss / 1024,
                              "others_cores": max(0.0, others)}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle or waiting for I/O) since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class PssSampler(threading.Thread):
    """Samples the summed PSS (KiB) of a process and its descendants every `interval` s; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, sum(pss_kib(pid) for pid in [self.pid, *descendants(self.pid)]))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def descendants(pid: int) -> list:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
                found += children
                todo += children
        except OSError:  # gone meanwhile
            continue
    return found


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def gemm_gflops(python: str, which: str, threads: int) -> float:
    code = GEMM_CODE[which].format(threads=threads) + GEMM_TIMING
    return float(subprocess.check_output([python, "-c", code], env=thread_env(threads), text=True))


def machine(args) -> dict:
    """What the table was measured on: CPU, cores, NumPy/BLAS build and GEMM rates, torch version."""
    import numpy  # noqa: PLC0415
    from threadpoolctl import threadpool_info  # noqa: PLC0415
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = next((i for i in threadpool_info() if i.get("user_api") == "blas"), {})
    torch_version = subprocess.check_output([args.ref_python, "-c", "import torch; print(torch.__version__)"],
                                            text=True).strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
            "blas": f"{blas.get('internal_api', '?')} {blas.get('version', '?')} ({blas.get('architecture', '?')})",
            "numpy_gemm": gemm_gflops(sys.executable, "numpy", args.threads),
            "torch_gemm": gemm_gflops(args.ref_python, "torch", args.threads), "torch": torch_version,
            "load": os.getloadavg()}


def flops_per_token(shape: str, vocab: int) -> float:
    L, H, C, T, B = SHAPES[shape]
    n_params = L * 12 * C * C + vocab * C + T * C   # blocks (weights) + tied embedding + positions
    return 6 * n_params + 12 * L * T * C


def pinned_ref_python() -> str:
    """The reference environment of ../shared/bench/make_ref_venv.sh (built there on first use)."""
    out = subprocess.check_output(["bash", str(SHARED_BENCH / "make_ref_venv.sh")], text=True)
    return out.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-python", help="the reference Python (default: ../shared/bench/make_ref_venv.sh's)")
    p.add_argument("--ref-script", default=str(SHARED_BENCH / "ref_torch_gpt.py"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"))
    p.add_argument("--shape", choices=sorted(SHAPES), action="append", help="repeatable; default: both")
    p.add_argument("--threads", type=int, default=2, help="cores for each side: our --workers, torch's threads")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ours-flags", default="", help="more `tinyllm train` flags for our side (default: none)")
    p.add_argument("--write", action="store_true", help="write the table into docs/performance.md")
    args = p.parse_args()
    args.ours_flags = args.ours_flags.split()
    args.ref_python = args.ref_python or pinned_ref_python()
    shapes = args.shape or ["baby", "shakespeare"]
    env = thread_env(args.threads)
    vocab = len(set(open(args.data, encoding="utf-8").read()))
    info = machine(args)
    print(describe(info, args), flush=True)
    if info["torch"].split("+")[0] != PINNED_TORCH:
        print(f"note: the reference runs torch {info['torch']}, not the pinned {PINNED_TORCH}: "
              "tables from other machines do not compare", flush=True)
    rows = []
    for shape in shapes:
        ours, ref = [], []
        for r in range(args.repeats):  # alternate, and swap who goes first, so drift cancels
            pair = [("ours", run_ours), ("ref", run_ref)]
            for who, fn in (pair if r % 2 == 0 else pair[::-1]):
                (ours if who == "ours" else ref).append(fn(args, shape, env))
                last = (ours if who == "ours" else ref)[-1]
                print(f"  {shape} {who}: {last['tokens_per_s']:.0f} tok/s (other processes kept "
                      f"{last['others_cores']:.2f} cores busy meanwhile)", flush=True)
        row = summarise(shape, ours, ref, flops_per_token(shape, vocab))
        rows.append(row)
        print(f"{shape}: ours {row['ours']:.0f} tok/s vs torch {row['ref']:.0f} tok/s = {row['ratio']:.2f}x "
              f"(ours {row['ours_spread']}, torch {row['ref_spread']}); peak memory ours {row['ours_pss']:.0f} MiB "
              f"vs torch {row['ref_pss']:.0f} MiB = {row['ours_pss'] / row['ref_pss']:.2f}x; "
              f"ours {row['gflops']:.1f} GFLOP/s", flush=True)
    table = render(rows, args, info)
    print(table)
    if args.write:
        write_table(table)


def summarise(shape: str, ours: list, ref: list, flops: float) -> dict:
    o = [x["tokens_per_s"] for x in ours]
    r = [x["tokens_per_s"] for x in ref]
    o_tok, r_tok = statistics.median(o), statistics.median(r)
    return {"shape": shape, "ours": o_tok, "ref": r_tok, "ratio": o_tok / r_tok,
            "ours_spread": f"{min(o):.0f}-{max(o):.0f}", "ref_spread": f"{min(r):.0f}-{max(r):.0f}",
            "ours_pss": max(x["pss_mib"] for x in ours), "ref_pss": max(x["pss_mib"] for x in ref),
            "ours_rss": max(x["rss_mib"] for x in ours), "ref_rss": max(x["rss_mib"] for x in ref),
            "gflops": o_tok * flops / 1e9, "others": max(x["others_cores"] for x in ours + ref)}


def describe(info: dict, args) -> str:
    return (f"{info['cpu']}, {info['cores']} cores; Python {info['python']}, NumPy {info['numpy']} with "
            f"{info['blas']}; float32 GEMM on {args.threads} threads: NumPy {info['numpy_gemm']:.0f} GFLOP/s, "
            f"torch {info['torch_gemm']:.0f} GFLOP/s; torch {info['torch']}; load average "
            f"{info['load'][0]:.2f} when it started")


def render(rows, args, info) -> str:
    lines = [f"Measured {datetime.date.today()} on {describe(info, args)}. {args.threads} cores each "
             f"(ours: {args.threads} worker processes, the default; torch: {args.threads} threads), "
             f"{args.iters} steps, median of {args.repeats} alternating runs (spread in brackets).",
             "", f"Command: `python bench/train_speed.py --threads {args.threads} --iters {args.iters} "
             f"--repeats {args.repeats} --write`", "",
             "| shape | tinyllm tok/s | torch tok/s | ratio | tinyllm peak MiB | torch peak MiB | memory ratio "
             "| tinyllm GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['shape']} | {row['ours']:.0f} ({row['ours_spread']}) | {row['ref']:.0f} "
                     f"({row['ref_spread']}) | {row['ratio']:.2f}x | {row['ours_pss']:.0f} | {row['ref_pss']:.0f} | "
                     f"{row['ours_pss'] / row['ref_pss']:.2f}x | {row['gflops']:.1f} |")
    lines += ["", "Peak memory: the summed PSS of each side's processes, sampled every 100 ms (largest single "
              "process's ru_maxrss: ours " + ", ".join(f"{r['shape']} {r['ours_rss']:.0f}" for r in rows)
              + " MiB; torch " + ", ".join(f"{r['shape']} {r['ref_rss']:.0f}" for r in rows) + " MiB). "
              "Other processes on the machine kept at most " + ", ".join(f"{r['others']:.2f} ({r['shape']})"
                                                                           for r in rows)
              + " cores busy during a run (/proc/stat less the runs' own CPU time)."]
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
