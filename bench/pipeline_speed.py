"""Pipeline speed and memory: every schedule on 2 ranks against 1 process, side by side in one run.

    python bench/pipeline_speed.py                     # 4 layers, 256 wide, block 64, batch 32, m = 8
    python bench/pipeline_speed.py --rounds 5 --write  # and put the tables in docs/pipeline.md

Every process runs on one thread (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1, set before
NumPy loads). One `mpiexec -n 2` job holds every contender, built from the same seed on the
same batches, warms each up once, then runs them in rounds of `--steps` steps each (one by
default), the order rotating every round, so a change in the machine's load (it is shared)
falls on all of them alike:

    1 process      the whole batch, and the same m microbatches accumulated, on rank 0
                   (rank 1 sleeps meanwhile, polling every 2 ms, so it takes no core)
    2 stages       GPipe, 1F1B, interleaved 1F1B (2 chunks per rank), ZB-H1 (split backward),
                   1F1B with --recompute

Reported per contender: the median step time (forward + backward + clip + AdamW) over all
timed steps with its spread, the speedup over one process, the ratio to 1F1B round by
round, the ratio of best steps (other work on a shared machine only ever adds time, so the
best step is the least disturbed), the bubble measured from the run's own trace
(parallel.trace.measured_bubble over the timed steps), the simulator's bubble for the same
schedule with the mean forward / backward / B / W times the trace measured,
and the formula (parallel.simulate.theoretical_bubble). Then per stage: microbatches alive
at the peak and the peak bytes NumPy allocated in one step (tracemalloc), with and without
recomputation; and a second job of 4 ranks (2 stages x 2 replicas, oversubscribed: memory
only) gives each rank's optimizer bytes with and without --zero 1.

`--write` replaces the part of docs/pipeline.md between `<!-- bench:pipeline_speed -->` and
`<!-- /bench:pipeline_speed -->` with the tables, the CPU, its core count and the float32
GEMM rate of one thread.

Left out: more than two stages for timing (the reference machine has two cores), GPU timing.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograd.backend import gemm_gflops, keep_freed_memory  # noqa: E402
from tinyllm.model import GPT, GPTConfig  # noqa: E402
from tinyllm.optim import AdamW, clip_grad_norm, global_grad_norm  # noqa: E402
from tinyllm.strategy import compute_gradients  # noqa: E402

ONE_PROCESS = ("1 process, whole batch", "1 process, m microbatches")
SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")
PIPELINED = SCHEDULES + ("1f1b --recompute",)
MEMORY_ONLY = ("gpipe --recompute",)
FOUR_RANKS = {"n_layer": 8, "n_embd": 128, "rounds": 2}   # the oversubscribed job: 4 stages, 2 chunks each fit
MARKERS = ("<!-- bench:pipeline_speed -->", "<!-- /bench:pipeline_speed -->")


def model_config(args) -> GPTConfig:
    return GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                     n_head=args.n_head, n_embd=args.n_embd, dropout=0.0)


def batches(args, count: int):
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.block_size)
    return [(rng.integers(0, args.vocab_size, size=shape), rng.integers(0, args.vocab_size, size=shape))
            for _ in range(count)]


def one_process_step(args, accumulate: bool):
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
    return step


class Contender:
    """One pipelined configuration on this rank: its stage, engine, optimizer and trace."""

    def __init__(self, args, grid, name: str, origin: float):
        from parallel.engine import PipelineEngine
        from parallel.partition import uniform_partition
        from parallel.stage import StageModel
        from parallel.trace import Tracer
        schedule, _, flag = name.partition(" ")
        self.schedule, self.chunks = schedule, 2 if schedule == "interleaved" else 1
        stage = StageModel(GPT(model_config(args), seed=0), uniform_partition(args.n_layer, args.stages * self.chunks),
                           grid.stage, n_chunks=self.chunks, recompute=flag == "--recompute")
        self.tracer = Tracer(grid.rank, origin)
        self.engine = PipelineEngine(stage, grid, schedule, args.microbatches, args.batch_size, tracer=self.tracer)
        self.opt = AdamW(stage.named_parameters(), lr=1e-4)
        self.params = [p for _, p in stage.named_parameters()]
        self.timed_steps = []

    def step(self, x, y, timed: bool) -> None:
        """One training step; a timed one is traced under its own step number (others under 0)."""
        if timed:
            self.timed_steps.append(len(self.timed_steps) + 1)
        self.tracer.step = self.timed_steps[-1] if timed else 0
        self.engine.compute_gradients(x, y)
        clip_grad_norm(self.params, 1.0, self.engine.global_grad_norm())
        self.opt.step()
        self.opt.zero_grad()


def wait_for_rank0(world) -> None:
    """Rank 1's side of a one-process measurement: sleep until rank 0 says it is done (no busy polling)."""
    flag = np.zeros(1, dtype=np.int64)
    request = world.Irecv(flag, source=0, tag=77)
    while not request.Test():
        time.sleep(0.002)


def peak_step_bytes(step) -> int:
    """Peak bytes NumPy allocates during step() beyond what was live before it (tracemalloc)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    step()
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return peak


def worker(args) -> None:
    """A pipeline job: every contender in rotating rounds, then traces and memory (module docstring).

    With --stages 2 the contenders are the one-process runs and every pipelined one; with more
    stages (oversubscribed: the order of actions and the exactness are what it shows) the four schedules.
    """
    from mpi4py import MPI

    from parallel.grid import Grid, GridShape
    grid = Grid(GridShape(args.stages, 1), MPI.COMM_WORLD)
    keep_freed_memory()   # as tinyllm.trainer.Trainer does: freed activations are reused, not page-faulted in again
    origin = time.perf_counter()
    two = args.stages == 2
    pipelined = {name: Contender(args, grid, name, origin)
                 for name in (PIPELINED + MEMORY_ONLY if two else SCHEDULES)}
    single = {name: one_process_step(args, accumulate=i == 1) for i, name in enumerate(ONE_PROCESS)} \
        if two and grid.rank == 0 else {}
    data = batches(args, args.steps + args.warmup)
    names = list(ONE_PROCESS + PIPELINED) if two else list(SCHEDULES)

    def run(name, steps, times=None):
        """`steps` steps of contender `name` (rank 0 alone for a one-process run); their seconds into `times`."""
        grid.world.Barrier()
        if name in ONE_PROCESS and grid.rank != 0:
            return wait_for_rank0(grid.world)
        for x, y in steps:
            start = time.perf_counter()
            if name in ONE_PROCESS:
                single[name](x, y)
            else:
                pipelined[name].step(x, y, times is not None)
            if times is not None:
                times.append(time.perf_counter() - start)
        if name in ONE_PROCESS:
            grid.world.Send(np.ones(1, dtype=np.int64), dest=1, tag=77)

    for name in names:                                      # warm-up: allocations, caches, BLAS buffers
        run(name, data[args.steps:])
    times = {name: [[] for _ in range(args.rounds)] for name in names}   # per round, the timed steps' seconds
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            run(name, data[:args.steps], times[name][rnd])
    report = {"times": times if grid.rank == 0 else None, "contenders": {}}
    for name, contender in pipelined.items():
        events = grid.world.gather(contender.tracer.events, root=0)
        x, y = data[0]
        peak = peak_step_bytes(lambda c=contender: c.step(x, y, False))
        memory = grid.world.gather({"stage": grid.stage, "peak_bytes": peak,
                                    "peak_alive": contender.engine.peak_alive_activations,
                                    "recv_buffers": contender.engine.act_pool.allocated}, root=0)
        if grid.rank == 0:
            report["contenders"][name] = {"schedule": contender.schedule, "chunks": contender.chunks,
                                          "memory": memory, **trace_summary(events, contender, grid.n_stages)}
    if grid.rank == 0:
        Path(args.worker_out).write_text(json.dumps(report))


def trace_summary(events, contender, n_stages: int) -> dict:
    """Measured bubble, mean compute times per kind (over ranks and timed steps) and the simulator's bubble."""
    from parallel.schedules import schedule_for
    from parallel.simulate import Costs, simulate
    from parallel.trace import measured_bubble
    steps = set(contender.timed_steps)
    if not steps:
        return {}
    kinds = {}
    for rank_events in events:
        for what, start, end, _, step in rank_events:
            if step in steps and what in ("forward", "backward", "backward_input", "backward_weight"):
                kinds.setdefault(what, []).append(end - start)
    mean = {kind: float(np.mean(spans)) for kind, spans in kinds.items()}
    costs = Costs(forward=mean["forward"], backward=mean.get("backward", 0.0),
                  backward_input=mean.get("backward_input", 0.0), backward_weight=mean.get("backward_weight", 0.0))
    sim = simulate(schedule_for(contender.schedule, contender.chunks), n_stages, contender.engine.n_microbatches, costs)
    return {"measured_bubble": measured_bubble(events, sorted(steps)), "mean_seconds": mean,
            "simulated_bubble": sim.bubble_fraction}


def split_costs(args, repeats: int = 20) -> dict:
    """Best-of-`repeats` milliseconds of one microbatch through the last stage (half the blocks and the head):
    forward, whole backward, and the split backward's B and W (autograd.tensor.split_backward), alternating."""
    from autograd.tensor import Tensor, split_backward
    from parallel.partition import uniform_partition
    from parallel.stage import StageModel
    stage = StageModel(GPT(model_config(args), seed=0), uniform_partition(args.n_layer, 2), 1)
    weights = [p for _, p in stage.named_parameters()]
    rng = np.random.default_rng(0)
    b = args.batch_size // args.microbatches
    x0 = rng.standard_normal((b, args.block_size, args.n_embd)).astype(np.float32)   # (B, T, C)
    targets = rng.integers(0, args.vocab_size, size=(b, args.block_size))
    best = {}

    def timed(what, fn):
        start = time.perf_counter()
        result = fn()
        best[what] = min(best.get(what, float("inf")), (time.perf_counter() - start) * 1e3)
        return result
    for _ in range(repeats):
        for split in (False, True):
            loss = timed("forward", lambda: stage.forward(Tensor(x0, requires_grad=True), targets))
            if split:
                deferred = timed("B", lambda: split_backward(loss, weights, np.float32(1.0)))
                timed("W", deferred.run)
            else:
                timed("backward", lambda: loss.backward(np.float32(1.0)))
            for p in weights:
                p.grad = None
    return best


def zero_worker(args) -> None:
    """The 4-rank job (2 stages x 2 replicas): each rank's optimizer bytes without and with ZeRO-1."""
    from mpi4py import MPI

    from parallel.grid import Grid, GridShape
    from parallel.partition import uniform_partition
    from parallel.stage import StageModel
    from parallel.zero import ZeroOptimizer
    grid = Grid(GridShape(2, 2), MPI.COMM_WORLD)
    stage = StageModel(GPT(model_config(args), seed=0), uniform_partition(args.n_layer, 2), grid.stage)
    named = stage.named_parameters()
    parameter_bytes = sum(int(p.data.nbytes) for _, p in named)
    row = {"rank": grid.rank, "stage": grid.stage, "replica": grid.replica, "parameter_bytes": parameter_bytes,
           "zero0_buffer": parameter_bytes}   # the engine's flat gradient buffer for the all-reduce

    def measured_adamw(own, zero):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        opt = AdamW(own, lr=1e-4)
        row[f"zero{zero}_allocated"] = tracemalloc.get_traced_memory()[0] - before   # m, v and AdamW's scratch
        tracemalloc.stop()
        row[f"zero{zero}_state"] = sum(int(a.nbytes) for a in opt.state_arrays().values())   # m and v
        return opt
    measured_adamw(named, 0)
    zero = ZeroOptimizer(named, lambda own: measured_adamw(own, 1), grid.data)
    row["zero1_buffer"] = int(zero.flat.nbytes)
    rows = grid.world.gather(row, root=0)
    if grid.rank == 0:
        Path(args.worker_out).write_text(json.dumps(rows))


def launch(args, ranks: int, mode: str, **changes) -> object:
    """Run `mpiexec -n ranks` of this script in `mode` (worker, zero-worker) with args changed by `changes`."""
    out = Path(args.tmp) / f"pipeline_speed_{mode}_{ranks}.json"
    settings = {**vars(args), **changes}
    command = [shutil.which("mpiexec"), "-n", str(ranks), sys.executable, __file__, f"--{mode}",
               "--worker-out", str(out)] + [f"--{k.replace('_', '-')}={settings[k]}" for k in
                                            ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "batch_size",
                                             "microbatches", "steps", "warmup", "rounds", "stages")]
    subprocess.run(command, check=True, cwd=REPO, timeout=3600)
    return json.loads(out.read_text())


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def tables(args, report: dict, zero_rows: list, load: tuple, gemm: float) -> str:
    """The markdown the run prints and `--write` puts in docs/pipeline.md."""
    from parallel.simulate import theoretical_bubble
    rounds = {name: [float(np.median(r)) for r in per_round] for name, per_round in report["times"].items()}
    times = {name: np.concatenate(per_round) * 1e3 for name, per_round in report["times"].items()}
    median = {name: float(np.median(t)) for name, t in times.items()}
    whole, accumulated = median[ONE_PROCESS[0]], median[ONE_PROCESS[1]]
    m = args.microbatches
    cpu = cpu_model()
    lines = [f"Machine: {cpu}, {os.cpu_count()} cores; float32 GEMM {gemm:.1f} GFLOP/s on one "
             f"thread. Model: {args.n_layer} layers x {args.n_embd} wide, {args.n_head} heads, block "
             f"{args.block_size}, vocab {args.vocab_size}; global batch {args.batch_size}, m = {m}; float32, one "
             f"thread per process; {args.rounds} rounds x {args.steps} timed step(s) per contender, order rotating; "
             f"load average {load[0]:.1f} before, {load[1]:.1f} after.",
             "",
             "| run | ms/step, median (min-max) | speedup vs 1 process: m microbatches / whole batch | "
             "vs 1F1B, same round: median (min-max) | best step vs 1F1B's best | bubble measured | "
             "simulated (measured costs) | formula |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ONE_PROCESS + PIPELINED:
        t = times[name]
        row = f"| {name.replace('m microbatches', f'{m} microbatches')} | {median[name]:.0f} ({t.min():.0f}-{t.max():.0f}) |"
        if name in ONE_PROCESS:
            lines.append(row + " 1 / - | | | | | |" if name == ONE_PROCESS[1] else row + " - / 1 | | | | | |")
            continue
        paired = np.array(rounds["1f1b"]) / np.array(rounds[name])   # > 1: faster than 1F1B in that round
        c = report["contenders"][name]
        label = {"gpipe": "2 stages, GPipe", "1f1b": "2 stages, 1F1B", "interleaved": "2 stages, interleaved (v = 2)",
                 "zb-h1": "2 stages, ZB-H1", "1f1b --recompute": "2 stages, 1F1B --recompute"}[name]
        row = row.replace(f"| {name} |", f"| {label} |", 1)
        formula = theoretical_bubble(2, m, c["schedule"], c["chunks"])
        lines.append(row + f" {accumulated / median[name]:.2f}x / {whole / median[name]:.2f}x | "
                     f"{np.median(paired):.3f}x ({paired.min():.3f}-{paired.max():.3f}) | "
                     f"{times['1f1b'].min() / times[name].min():.3f}x | {c['measured_bubble']:.3f} | {c['simulated_bubble']:.3f} | {formula:.3f} |")
    means = {name: report["contenders"][name]["mean_seconds"] for name in ("1f1b", "zb-h1", "interleaved")}
    lines += ["", f"Mean compute per microbatch and stage (ms): 1F1B forward {means['1f1b']['forward'] * 1e3:.1f}, "
                  f"backward {means['1f1b']['backward'] * 1e3:.1f}; ZB-H1 forward {means['zb-h1']['forward'] * 1e3:.1f}, "
                  f"B {means['zb-h1']['backward_input'] * 1e3:.1f}, W {means['zb-h1']['backward_weight'] * 1e3:.1f}; "
                  f"interleaved, per chunk: forward {means['interleaved']['forward'] * 1e3:.1f}, backward "
                  f"{means['interleaved']['backward'] * 1e3:.1f}.",
              "", "| schedule | stage 0: alive, peak MiB in a step | stage 1: alive, peak MiB in a step |", "|---|---|---|"]
    for name in PIPELINED + MEMORY_ONLY:
        memory = sorted(report["contenders"][name]["memory"], key=lambda r: r["stage"])
        lines.append(f"| {name} | " + " | ".join(f"{r['peak_alive']}, {mib(r['peak_bytes'])}" for r in memory) + " |")
    lines += ["", "| rank (stage, replica) | parameters | AdamW state (m, v, scratch): unsharded -> --zero 1 | "
                  "of which m, v | gradient buffer for the replicas' sum |", "|---|---|---|---|---|"]
    for r in sorted(zero_rows, key=lambda r: r["rank"]):
        lines.append(f"| {r['rank']} ({r['stage']}, {r['replica']}) | {mib(r['parameter_bytes'])} MiB | "
                     f"{mib(r['zero0_allocated'])} -> {mib(r['zero1_allocated'])} MiB | "
                     f"{mib(r['zero0_state'])} -> {mib(r['zero1_state'])} MiB | "
                     f"{mib(r['zero0_buffer'])} -> {mib(r['zero1_buffer'])} MiB |")
    return "\n".join(lines) + "\n"


def four_rank_table(args, report: dict) -> str:
    """The 4-stage job on 2 cores: measured bubble beside the simulator and the formula."""
    from parallel.simulate import theoretical_bubble
    lines = ["", f"4 stages on {os.cpu_count()} cores (oversubscribed, so the measured bubble includes waiting "
                 f"for a core): {FOUR_RANKS['n_layer']} layers x {FOUR_RANKS['n_embd']} wide, otherwise as above; "
                 f"{FOUR_RANKS['rounds']} rounds.", "",
             "| schedule | ms/step, median | bubble measured | simulated (measured costs) | formula |",
             "|---|---|---|---|---|"]
    for name in SCHEDULES:
        c = report["contenders"][name]
        median = float(np.median(np.concatenate(report["times"][name]))) * 1e3
        lines.append(f"| {name} | {median:.0f} | {c['measured_bubble']:.3f} | {c['simulated_bubble']:.3f} | "
                     f"{theoretical_bubble(4, args.microbatches, c['schedule'], c['chunks']):.3f} |")
    return "\n".join(lines) + "\n"


def split_line(args, best: dict) -> str:
    """The split backward's cost on one stage, and what the simulator makes of it for p = 2."""
    from parallel.schedules import schedule_for
    from parallel.simulate import Costs, simulate
    f, full, b, w = best["forward"], best["backward"], best["B"], best["W"]
    m = args.microbatches
    whole = Costs(forward=f, backward=full)
    spans = {name: simulate(schedule_for(name), 2, m, costs).makespan
             for name, costs in (("1f1b", whole), ("zb-h1", Costs(forward=f, backward_input=b, backward_weight=w)))}
    spans["interleaved"] = simulate(schedule_for("interleaved", 2), 2, m, Costs(forward=f / 2, backward=full / 2)).makespan
    return (f"\nThe last stage ({args.n_layer // 2} blocks and the head), one microbatch, best of 20 in one process: "
            f"forward {f:.1f} ms, whole backward {full:.1f} ms, split: B {b:.1f} ms + W {w:.1f} ms = {b + w:.1f} ms "
            f"({100 * (b + w - full) / full:+.1f}%). The simulator with these costs, p = 2, m = {m}: 1F1B "
            f"{spans['1f1b']:.0f} ms, ZB-H1 {spans['zb-h1']:.0f} ms ({100 * (spans['zb-h1'] / spans['1f1b'] - 1):+.1f}%), "
            f"interleaved {spans['interleaved']:.0f} ms ({100 * (spans['interleaved'] / spans['1f1b'] - 1):+.1f}%, "
            "chunks at half the stage's costs).\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_docs(text: str, markers: tuple = MARKERS) -> None:
    """Put `text` in docs/pipeline.md between the `markers` comments (bench/cluster_link.py has its own)."""
    path = REPO / "docs" / "pipeline.md"
    doc = path.read_text()
    begin, end = markers
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {begin} ... {end} markers to write between")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}{end}{tail}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8, help="rounds over all contenders")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per contender and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each contender before the rounds")
    parser.add_argument("--write", action="store_true", help="put the tables in docs/pipeline.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--zero-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default="/tmp", help="where workers leave their reports")
    parser.add_argument("--stages", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.zero_worker:
        return zero_worker(args)
    load_before = os.getloadavg()[0]      # the machine's other work, for reading the spread
    gemm = gemm_gflops("float32")         # before the jobs, as the split costs: one thread alone
    costs = split_costs(args)
    report = launch(args, 2, "worker")
    load_after = os.getloadavg()[0]
    zero_rows = launch(args, 4, "zero-worker")
    four = launch(args, 4, "worker", stages=4, n_layer=FOUR_RANKS["n_layer"], n_embd=FOUR_RANKS["n_embd"],
                  rounds=FOUR_RANKS["rounds"])
    text = (tables(args, report, zero_rows, (load_before, load_after), gemm) + four_rank_table(args, four)
            + split_line(args, costs))
    print(text)
    if args.write:
        write_docs(text)
        print("written to docs/pipeline.md")


if __name__ == "__main__":
    main()
