"""Timelines of pipeline steps: Chrome/Perfetto trace events, measured bubble, pictures.

Each rank records (what, start, end, microbatch, step) for every action it runs (the
microbatch as 'microbatch.chunk' when a rank holds several chunks); the gaps
between a rank's first and last event are its idle time. `write_trace` gathers every
rank's events to rank 0 and writes one Chrome trace file (open it in ui.perfetto.dev or
chrome://tracing): complete events (ph "X") with pid = rank, ts and dur in microseconds,
plus explicit "idle" events for the gaps, so the bubble is visible.

The measured bubble fraction counts receives as idle: time a stage spends blocked
waiting for a neighbour is exactly the pipeline bubble (plus transfer time).

    python -m parallel.trace trace.json --svg docs/pipeline_timeline.svg [--step 3]

renders a trace to an SVG (no plotting library needed).

Left out: flow arrows between matching send and receive events, GPU kernel timing.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

MIN_IDLE_S = 1e-5  # shorter gaps between events are bookkeeping, not waiting
COMPUTE = ("forward", "backward", "backward_input", "backward_weight")
COLOURS = {"forward": "#4e79a7", "backward": "#f28e2b", "backward_input": "#f28e2b", "backward_weight": "#59a14f",
           "send_act": "#bab0ac", "send_grad": "#bab0ac", "recv_act": "#e15759", "recv_grad": "#e15759",
           "allreduce": "#76b7b2", "optimizer": "#b07aa1", "idle": "#ffffff"}


@dataclass
class Tracer:
    """Collects one rank's events; times from time.perf_counter(), stored relative to `origin`."""

    rank: int
    origin: float
    step: int = 0

    def __post_init__(self):
        self.events: list = []

    def record(self, what: str, start: float, end: float, microbatch: int | None = None,
               chunk: int | None = None) -> None:
        """One event; under interleaving its unit is named 'microbatch.chunk' (e.g. 'forward 3.1')."""
        unit = microbatch if chunk is None or microbatch is None else f"{microbatch}.{chunk}"
        self.events.append((what, start - self.origin, end - self.origin, unit, self.step))


def chrome_events(per_rank: list, stage_of_rank=None) -> list:
    """Trace events for all ranks: the actions as recorded, and the gaps between them as 'idle'."""
    events = []
    for rank, recorded in enumerate(per_rank):
        stage = stage_of_rank(rank) if stage_of_rank else rank
        events.append({"ph": "M", "name": "process_name", "pid": rank, "args": {"name": f"rank {rank} (stage {stage})"}})
        previous_end = None
        for what, start, end, mb, step in sorted(recorded, key=lambda e: e[1]):
            if previous_end is not None and start - previous_end > MIN_IDLE_S:
                events.append(_event("idle", previous_end, start, rank, None, step))
            is_wait = what.startswith("recv")
            events.append(_event(what, start, end, rank, mb, step))
            if is_wait:  # a blocking receive is the bubble: show it as idle too
                events[-1]["cat"] = "wait"
            previous_end = max(end, previous_end or end)
    return events


def _event(what, start, end, rank, mb, step) -> dict:
    name = what if mb is None else f"{what} {mb}"
    return {"name": name, "cat": "idle" if what == "idle" else what, "ph": "X", "pid": rank, "tid": 0,
            "ts": round(start * 1e6, 3), "dur": round((end - start) * 1e6, 3), "args": {"step": step}}


def measured_bubble(per_rank: list, steps=None) -> float:
    """1 - compute time / (ranks x span), summed over the chosen steps (all if None).

    A step's span runs from its first action on any rank to the end of its gradient
    all-reduce on the last rank; the optimizer step is not part of it.
    """
    busy, total = 0.0, 0.0
    step_ids = sorted({e[4] for recorded in per_rank for e in recorded}) if steps is None else steps
    for step in step_ids:
        # the schedule's window: the optimizer step after it is outside the pipeline's bubble
        events = [[e for e in recorded if e[4] == step and e[0] != "optimizer"] for recorded in per_rank]
        starts = [e[1] for rec in events for e in rec]
        ends = [e[2] for rec in events for e in rec]
        if not starts:
            continue
        span = max(ends) - min(starts)
        total += span * len(per_rank)
        busy += sum(e[2] - e[1] for rec in events for e in rec if e[0] in COMPUTE)
    return 1.0 - busy / total if total else 0.0


def write_trace(path, per_rank: list, stage_of_rank=None, metadata: dict | None = None) -> None:
    """Write the Chrome trace JSON atomically (rank 0 calls this with everyone's events)."""
    from tinyllm.io import write_json  # noqa: PLC0415
    write_json(path, {"traceEvents": chrome_events(per_rank, stage_of_rank), "displayTimeUnit": "ms",
                      "metadata": metadata or {}})


def render_svg(trace: dict, width: int = 900, row: int = 28, step: int | None = None) -> str:
    """A timeline picture of a Chrome trace: one row per rank, one box per event (one step, or all)."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X" and (step is None or e["args"]["step"] == step)]
    if not events:
        raise ValueError(f"the trace has no events{'' if step is None else f' for step {step}'}")
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e.get("ph") == "M"}
    t0 = min(e["ts"] for e in events)
    t1 = max(e["ts"] + e["dur"] for e in events)
    label = 130
    scale = (width - label - 10) / (t1 - t0)
    ranks = sorted({e["pid"] for e in events})
    height = row * len(ranks) + 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
             f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>']
    for i, rank in enumerate(ranks):
        y = 10 + i * row
        parts.append(f'<text x="4" y="{y + row * 0.6:.1f}">{names.get(rank, f"rank {rank}")}</text>')
        for e in events:
            if e["pid"] != rank or e["cat"] in ("idle",):
                continue
            x = label + (e["ts"] - t0) * scale
            w = max(e["dur"] * scale, 0.5)
            kind = e["cat"] if e["cat"] != "wait" else e["name"].split()[0]
            colour = COLOURS.get(kind, "#cccccc")
            parts.append(f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row - 6}" fill="{colour}" '
                         f'stroke="black" stroke-width="0.3"><title>{e["name"]}</title></rect>')
            if kind in COMPUTE and w > 14:
                mb = e["name"].split()[-1]
                parts.append(f'<text x="{x + 2:.1f}" y="{y + row * 0.55:.1f}" fill="white">{mb}</text>')
    y = 10 + len(ranks) * row + 12
    legend = [("forward", "forward"), ("backward", "backward or B"), ("backward_weight", "W"),
              ("recv_act", "waiting (receive)"),
              ("send_act", "send"), ("allreduce", "all-reduce"), ("optimizer", "clip + AdamW")]
    x = label
    for kind, text in legend:
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{COLOURS[kind]}" stroke="black" '
                     f'stroke-width="0.3"/><text x="{x + 16}" y="{y + 10}">{text}</text>')
        x += 30 + 8 * len(text)
    parts.append(f'<text x="{label}" y="{y + 28}">{(t1 - t0) / 1000:.1f} ms; white = idle</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    import argparse  # noqa: PLC0415
    parser = argparse.ArgumentParser(prog="python -m parallel.trace", description="Render a pipeline trace to SVG.")
    parser.add_argument("trace", help="a trace JSON written by --trace")
    parser.add_argument("--svg", required=True, help="output SVG file")
    parser.add_argument("--step", type=int, help="draw only this training step (default: all)")
    args = parser.parse_args(argv)
    with open(args.trace) as f:
        trace = json.load(f)
    from tinyllm.io import write_bytes  # noqa: PLC0415
    write_bytes(args.svg, render_svg(trace, step=args.step).encode())
    print(f"wrote {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
