"""The pipeline across two nodes over a slow link, and what the communication deadline costs.

    sudo python bench/cluster_link.py                   # unshaped, 1 Gbit/s, 100 Mbit/s, 10 Mbit/s
    sudo python bench/cluster_link.py --rounds 3 --write # and put the tables in docs/pipeline.md

Two nodes of a cluster in a box (parallel/cluster.py: network namespaces on a bridge, MPICH's
Hydra through the box's agent), one rank each, so every activation and gradient crosses the
link over TCP. The link is limited with a token bucket (`tc qdisc add dev eth0 root tbf rate
R`, on both nodes: both directions). Each contender is one `python -m parallel.runner` job
(float32, one thread per rank, 4 layers x 256 wide, 4 heads, block 64, global batch 32, the
built-in corpus's first 100 kB, char tokens) of `--steps` steps; every (rate, contender) pair
runs once per round, the order rotating, so a change in the shared machine's load falls on all. Reported per (rate, contender): tokens/s (the median over the
steps after the first, from metrics.jsonl), and from the run's own trace the share of each
rank's time spent waiting in a receive or the all-reduce (the mean over the two ranks,
steps after the first), beside the measured bubble (all time not computing).

Then the deadline's cost on a healthy (unshaped) run: 1F1B, m = 8, with --comm-timeout 300 and
with 0 (no deadline), alternating, 4 x `--rounds` jobs each of 2 x `--steps` steps: the median and
the best ms/step of each; and the cost of one blocking call through parallel.deadline.WatchedComm
against the bare communicator (a 1-element Allreduce on MPI_COMM_SELF, best of 5 x 20000 calls),
times the blocking calls one step makes. `--only link|deadline` runs one part.

`--write` replaces the parts of docs/pipeline.md between `<!-- bench:cluster_link -->` and
`<!-- /bench:cluster_link -->`, and between `<!-- bench:comm_deadline -->` and its end marker.
Needs root (network namespaces) and MPICH (the mpi extra).

Left out: latency shaping (netem is not available on these kernels), more than two nodes,
data-parallel all-reduce over the slow link (see the table's note), Open MPI timings.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline_speed import cpu_model, write_docs  # noqa: E402

from autograd.backend import gemm_gflops  # noqa: E402
from parallel.cluster import Cluster, unavailable_reason  # noqa: E402

MARKERS = ("<!-- bench:cluster_link -->", "<!-- /bench:cluster_link -->")
DEADLINE_MARKERS = ("<!-- bench:comm_deadline -->", "<!-- /bench:comm_deadline -->")
RATES = (None, "1gbit", "100mbit", "10mbit")
CONTENDERS = {  # name -> config overrides
    "1F1B, m = 8": dict(schedule="1f1b", microbatches=8),
    "1F1B, m = 4": dict(schedule="1f1b", microbatches=4),
    "GPipe, m = 8": dict(schedule="gpipe", microbatches=8),
    "ZB-H1, m = 8": dict(schedule="zb-h1", microbatches=8),
    "interleaved (v = 2), m = 8": dict(schedule="interleaved", microbatches=8),
}
MODEL = dict(n_layer=4, n_head=4, n_embd=256, block_size=64, batch_size=32, dropout=0.0, dtype="float32",
             lr=1e-3, warmup_iters=1, eval_interval=10_000, eval_iters=1, log_interval=1, progress="log",
             pipeline_stages=2, seed=0)
WAITS = ("recv_act", "recv_grad", "allreduce")


def run_job(cluster, config: dict, work: Path, trace: bool = True) -> dict:
    """One runner job on the 2 nodes: {"tokens_per_s", "ms_per_step", "waiting", "bubble"} (steps after the first)."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(config["out"], ignore_errors=True)
    (work / "config.json").write_text(json.dumps(config))
    argv = [sys.executable, "-m", "parallel.runner", str(work / "config.json")]
    if trace:
        argv += ["--trace", str(work / "trace.json")]
    env = {**os.environ, **cluster.environment(), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cluster.mpiexec_command(["-n", "2", *argv]), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"the job failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    steps = [json.loads(line) for line in (Path(config["out"]) / "metrics.jsonl").read_text().splitlines()]
    timed = [s for s in steps if s.get("step", 0) >= 2 and "tokens_per_s" in s]
    tokens = statistics.median(s["tokens_per_s"] for s in timed)
    per_step = 1000 * config["batch_size"] * config["block_size"]   # ms per step = this / tokens per second
    result = {"tokens_per_s": tokens, "ms_per_step": per_step / tokens,
              "best_ms_per_step": per_step / max(s["tokens_per_s"] for s in timed)}
    if trace:
        result.update(trace_shares(json.loads((work / "trace.json").read_text())))
    return result


def trace_shares(trace: dict) -> dict:
    """Mean over ranks of (time in receives and all-reduces) / span, and the measured bubble, steps >= 2."""
    events = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["args"].get("step", 0) >= 2]
    shares = []
    for rank in sorted({e["pid"] for e in events}):
        mine = [e for e in events if e["pid"] == rank]
        span = max(e["ts"] + e["dur"] for e in mine) - min(e["ts"] for e in mine)
        shares.append(sum(e["dur"] for e in mine if e["name"].split()[0] in WAITS) / span)
    return {"waiting": statistics.mean(shares), "bubble": trace["metadata"]["measured_bubble"]}


def call_overhead(calls: int = 20000, repeats: int = 5) -> tuple:
    """(bare, watched) microseconds per 1-element Allreduce on MPI_COMM_SELF, best of `repeats`."""
    code = f"""
import time, numpy as np
from mpi4py import MPI
from parallel import deadline
deadline.start(300)
bare, watched = MPI.COMM_SELF, deadline.WatchedComm(MPI.COMM_SELF, "self", world_ranks=[0])
x = np.zeros(1)
best = {{}}
for name, comm in [("bare", bare), ("watched", watched)] * {repeats}:
    start = time.perf_counter()
    for _ in range({calls}):
        comm.Allreduce(MPI.IN_PLACE, x, op=MPI.SUM)
    best[name] = min(best.get(name, 1e9), (time.perf_counter() - start) / {calls} * 1e6)
print(best["bare"], best["watched"])
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    bare, watched = map(float, out.stdout.split())
    return bare, watched


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds (every rate and contender in each, order rotating)")
    parser.add_argument("--steps", type=int, default=4, help="steps per job (the first is not timed)")
    parser.add_argument("--only", choices=("link", "deadline"), help="run one of the two parts")
    parser.add_argument("--write", action="store_true", help="put the tables in docs/pipeline.md")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"bench/cluster_link.py needs a cluster in a box: {reason}")
    gemm = gemm_gflops("float32")
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="tinyllm-cluster-link-"))
    corpus = work / "corpus.txt"
    from pydoc_data.topics import topics   # the built-in corpus's text
    corpus.write_text("".join(topics.values())[:100_000])
    base = {**MODEL, "data": str(corpus), "max_iters": args.steps, "out": str(work / "run")}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # leave through `with`: the namespaces go
    texts = []
    try:
        with Cluster(2) as cluster:
            if args.only in (None, "link"):
                results = link_rounds(cluster, base, args.rounds, work)
                texts.append((MARKERS, link_table(args, results, gemm, (load_before, os.getloadavg()[0]))))
            if args.only in (None, "deadline"):
                costs = deadline_rounds(cluster, {**base, "max_iters": 2 * args.steps}, 4 * args.rounds, work)
                texts.append((DEADLINE_MARKERS, deadline_text(costs, call_overhead(), gemm,
                                                              (load_before, os.getloadavg()[0]))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for markers, text in texts:
        print(text)
        if args.write:
            write_docs(text, markers)


def link_rounds(cluster, base: dict, rounds: int, work: Path) -> dict:
    """(rate, contender) -> [result per round]; every pair once per round, the order rotating."""
    results = {}
    jobs = [(rate, name) for rate in RATES for name in CONTENDERS]
    for round_ in range(rounds):
        for rate, name in jobs[round_ % len(jobs):] + jobs[:round_ % len(jobs)]:
            cluster.shape(rate)
            results.setdefault((rate, name), []).append(run_job(cluster, {**base, **CONTENDERS[name]}, work / "job"))
            print(rate or "unshaped", name, results[(rate, name)][-1], file=sys.stderr, flush=True)
    cluster.shape(None)
    return results


def deadline_rounds(cluster, base: dict, jobs: int, work: Path) -> dict:
    """--comm-timeout -> [(median, best) ms per step of each job]; unshaped, 1F1B, m = 8, alternating."""
    costs = {300: [], 0: []}
    for round_ in range(jobs):
        for timeout in ((300, 0) if round_ % 2 == 0 else (0, 300)):
            config = {**base, **CONTENDERS["1F1B, m = 8"], "comm_timeout": timeout}
            result = run_job(cluster, config, work / "job", trace=False)
            costs[timeout].append((result["ms_per_step"], result["best_ms_per_step"]))
            print("comm_timeout", timeout, costs[timeout][-1], file=sys.stderr, flush=True)
    return costs


def rate_name(rate) -> str:
    return {None: "unshaped", "1gbit": "1 Gbit/s", "100mbit": "100 Mbit/s", "10mbit": "10 Mbit/s"}[rate]


def machine_line(gemm: float, load: tuple) -> str:
    return (f"Machine: {cpu_model()}, {os.cpu_count()} cores; float32 GEMM {gemm:.1f} GFLOP/s on one thread; "
            f"load average {load[0]:.1f} before, {load[1]:.1f} after.")


def link_table(args, results: dict, gemm: float, load: tuple) -> str:
    lines = [f"{machine_line(gemm, load)} Two nodes (network namespaces, MPICH over TCP), one rank each; 4 layers x "
             f"256 wide, 4 heads, block 64, global batch 32 (2048 tokens a step), float32, one thread per rank; "
             f"{args.steps} steps per job, {args.rounds} round(s); medians over rounds.", "",
             "| contender | " + " | ".join(f"{rate_name(r)}: tokens/s, waiting" for r in RATES) +
             " | tokens/s vs unshaped: 100, 10 Mbit/s |", "|---|" + "---|" * (len(RATES) + 1)]
    for name in CONTENDERS:
        tokens = {rate: statistics.median(r["tokens_per_s"] for r in results[(rate, name)]) for rate in RATES}
        waiting = {rate: statistics.median(r["waiting"] for r in results[(rate, name)]) for rate in RATES}
        lines.append(f"| {name} | " + " | ".join(f"{tokens[r]:.0f}, {waiting[r]:.2f}" for r in RATES) +
                     f" | {tokens['100mbit'] / tokens[None]:.2f}x, {tokens['10mbit'] / tokens[None]:.2f}x |")
    lines += ["", "Waiting: the share of each rank's time spent in a receive or the all-reduce (mean of the two "
              "ranks, steps after the first; the pipeline's own bubble is part of it). Activations and gradients "
              "cross the link once per microbatch each way: 2 x 32 x 64 x 256 x 4 bytes = 4 MiB a step whatever m "
              "(interleaved: 3 crossings each way, 12 MiB).", ""]
    return "\n".join(lines)


def deadline_text(costs: dict, call: tuple, gemm: float, load: tuple) -> str:
    median = {t: statistics.median(m for m, _ in costs[t]) for t in costs}
    best = {t: min(b for _, b in costs[t]) for t in costs}
    added = 20 * (call[1] - call[0])   # microseconds a step
    return (f"{machine_line(gemm, load)} Unshaped link, 1F1B, m = 8, {len(costs[300])} jobs each of --comm-timeout "
            f"300 and 0, alternating: median {median[300]:.0f} vs {median[0]:.0f} ms/step (ratio "
            f"{median[300] / median[0]:.3f}), best step {best[300]:.0f} vs {best[0]:.0f} ms (ratio "
            f"{best[300] / best[0]:.3f}). One blocking call (a 1-element Allreduce on MPI_COMM_SELF, best of 5 x "
            f"20000): {call[0]:.2f} us bare, {call[1]:.2f} us through WatchedComm, +{call[1] - call[0]:.2f} us; a "
            f"rank of a 2-stage 1F1B step with m = 8 makes about 20 blocking calls: {added:.0f} us, "
            f"{added / 10 / best[0]:.4f}% of its best step.\n")


if __name__ == "__main__":
    main()
