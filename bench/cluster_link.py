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
with 0 (no watchdog deadline), alternating, `--rounds` x 2 jobs, median ms/step each; and
the cost of one blocking call through parallel.deadline.WatchedComm against the bare
communicator (a 1-element Allreduce on MPI_COMM_SELF, best of 5 x 20000 calls), times the
blocking calls one step makes.

`--write` replaces the part of docs/pipeline.md between `<!-- bench:cluster_link -->` and
`<!-- /bench:cluster_link -->`. Needs root (network namespaces) and MPICH (the mpi extra).

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
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline_speed import cpu_model, write_docs  # noqa: E402

from autograd.backend import gemm_gflops  # noqa: E402
from parallel.cluster import Cluster, unavailable_reason  # noqa: E402

MARKERS = ("<!-- bench:cluster_link -->", "<!-- /bench:cluster_link -->")
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
    result = {"tokens_per_s": tokens, "ms_per_step": 1000 * config["batch_size"] * config["block_size"] / tokens}
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
    parser.add_argument("--rounds", type=int, default=1, help="rounds per rate (order rotating)")
    parser.add_argument("--steps", type=int, default=4, help="steps per job (the first is not timed)")
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
    base = {**MODEL, "data": str(corpus), "max_iters": args.steps}
    results = {}   # (rate, contender) -> [result per round]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # leave through `with`: the namespaces go
    try:
        with Cluster(2) as cluster:
            jobs = [(rate, name) for rate in RATES for name in CONTENDERS]
            for round_ in range(args.rounds):   # every (rate, contender) in every round: a load change hits all
                for rate, name in jobs[round_ % len(jobs):] + jobs[:round_ % len(jobs)]:
                    cluster.shape(rate)
                    config = {**base, **CONTENDERS[name], "out": str(work / "run")}
                    results.setdefault((rate, name), []).append(run_job(cluster, config, work / "job"))
                    print(rate or "unshaped", name, results[(rate, name)][-1], file=sys.stderr, flush=True)
            cluster.shape(None)
            costs = {300: [], 0: []}
            for round_ in range(args.rounds * 3):
                for timeout in ((300, 0) if round_ % 2 == 0 else (0, 300)):
                    config = {**base, "max_iters": 2 * args.steps, **CONTENDERS["1F1B, m = 8"],
                              "comm_timeout": timeout, "out": str(work / "run")}
                    costs[timeout].append(run_job(cluster, config, work / "job", trace=False)["ms_per_step"])
                    print("comm_timeout", timeout, costs[timeout][-1], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bare, watched = call_overhead()
    text = tables(args, results, costs, (bare, watched), gemm, (load_before, os.getloadavg()[0]))
    print(text)
    if args.write:
        write_docs(text, MARKERS)


def tables(args, results: dict, costs: dict, call: tuple, gemm: float, load: tuple) -> str:
    def rate_name(rate):
        return {None: "unshaped", "1gbit": "1 Gbit/s", "100mbit": "100 Mbit/s", "10mbit": "10 Mbit/s"}[rate]

    lines = [f"Machine: {cpu_model()}, {os.cpu_count()} cores; float32 GEMM {gemm:.1f} GFLOP/s on one thread. "
             f"Two nodes (network namespaces, MPICH over TCP), one rank each; 4 layers x 256 wide, 4 heads, block 64, "
             f"global batch 32, float32, one thread per rank; {args.steps} steps per job, {args.rounds} round(s); load "
             f"average {load[0]:.1f} before, {load[1]:.1f} after.", "",
             "| contender | " + " | ".join(f"{rate_name(r)}: tokens/s, waiting" for r in RATES) + " | tokens/s vs "
             "unshaped: 100, 10 Mbit/s |", "|---|" + "---|" * (len(RATES) + 1)]
    for name in CONTENDERS:
        cells = []
        for rate in RATES:
            runs = results[(rate, name)]
            cells.append(f"{statistics.median(r['tokens_per_s'] for r in runs):.0f}, "
                         f"{statistics.median(r['waiting'] for r in runs):.2f}")
        rate_of = {rate: statistics.median(r["tokens_per_s"] for r in results[(rate, name)]) for rate in RATES}
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {rate_of['100mbit'] / rate_of[None]:.2f}x, "
                     f"{rate_of['10mbit'] / rate_of[None]:.2f}x |")
    on, off = statistics.median(costs[300]), statistics.median(costs[0])
    lines += ["", "Waiting: the share of each rank's time spent in a receive or the all-reduce (mean of the two "
              "ranks; the pipeline's own bubble is part of it). Activations and gradients per step: 2 x 32 x 64 x "
              "256 x 4 bytes = 4 MiB, whatever m.", "",
              f"The deadline on a healthy run (unshaped, 1F1B, m = 8, {len(costs[300])} jobs each, alternating): "
              f"--comm-timeout 300: {on:.0f} ms/step, --comm-timeout 0: {off:.0f} ms/step (ratio {on / off:.3f}). "
              f"One blocking call: {call[0]:.2f} us bare, {call[1]:.2f} us through WatchedComm "
              f"(+{call[1] - call[0]:.2f} us; a 1F1B step with m = 8 on 2 stages makes about 20 such waits per rank: "
              f"{20 * (call[1] - call[0]):.0f} us a step).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
