"""Split a model's blocks into contiguous groups, one per pipeline stage.

Stage s gets `range(start, stop)` of the blocks; stage 0 also runs the embeddings and the
last stage the final norm, the head and the loss, so those costs are added to the first
and last groups when balancing. Methods (`--partition`):

- `uniform`: as equal block counts as possible (the first n_layer % p stages get one more);
- `params`:  minimise the largest stage's parameter count (embeddings and head included);
- `time`:    minimise the largest stage's measured forward + backward time.

`balanced_partition` is exact: a dynamic program over split points minimising the largest
stage cost (ties broken towards the earliest split, so the result is deterministic).

Interleaved schedules cut the blocks into p * v groups (virtual stages) the same way; rank r
runs groups r, r + p, ..., r + (v - 1) p (`virtual_stages_of`), so the first group (with
the embeddings) stays on the first rank and the last (with the head) on the last.

Left out: balancing a rank's v groups together (each group is balanced on its own) and
memory-aware balancing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

PARTITION_METHODS = ("uniform", "params", "time")


@dataclass(frozen=True)
class Partition:
    """Which blocks each stage owns: `ranges[s]` is stage s's contiguous range of block indices."""

    ranges: tuple

    @property
    def n_stages(self) -> int:
        return len(self.ranges)

    @property
    def n_layer(self) -> int:
        return self.ranges[-1].stop

    def describe(self, costs: Sequence[float] | None = None, unit: str = "", n_chunks: int = 1) -> str:
        """One line per stage, e.g. 'stage 0: blocks 0-1 (+ embeddings)'; with chunks, per virtual stage:
        'stage 1 chunk 0: block 1' (virtual stage v is chunk v // p of stage v % p)."""
        lines = []
        ranks = self.n_stages // n_chunks
        for s, r in enumerate(self.ranges):
            extras = []
            if s == 0:
                extras.append("embeddings")
            if s == self.n_stages - 1:
                extras.append("final norm, head, loss")
            blocks = f"block {r.start}" if len(r) == 1 else f"blocks {r.start}-{r.stop - 1}"
            where = f"stage {s}" if n_chunks == 1 else f"stage {s % ranks} chunk {s // ranks}"
            line = f"{where}: {blocks} (+ {', '.join(extras)})" if extras else f"{where}: {blocks}"
            if costs is not None:
                line += f", cost {costs[s]:.4g}{unit}"
            lines.append(line)
        return "\n".join(lines)

    def to_json(self) -> list:
        return [[r.start, r.stop] for r in self.ranges]

    @classmethod
    def from_json(cls, spans: list) -> "Partition":
        return cls(tuple(range(int(a), int(b)) for a, b in spans))


def virtual_stages_of(stage: int, n_stages: int, n_chunks: int) -> list[int]:
    """The virtual stages (groups of blocks, in model order) rank `stage` of `n_stages` runs: c * p + stage."""
    return [chunk * n_stages + stage for chunk in range(n_chunks)]


def check_stage_count(n_layer: int, n_stages: int) -> None:
    if not isinstance(n_stages, int) or not 1 <= n_stages <= n_layer:
        raise ValueError(f"--pipeline-stages must be between 1 and n_layer={n_layer} (each stage needs at least "
                         f"one block), got {n_stages!r}")


def uniform_partition(n_layer: int, n_stages: int) -> Partition:
    """Equal block counts; the first n_layer % n_stages stages take one extra block."""
    check_stage_count(n_layer, n_stages)
    base, extra = divmod(n_layer, n_stages)
    ranges, start = [], 0
    for s in range(n_stages):
        stop = start + base + (1 if s < extra else 0)
        ranges.append(range(start, stop))
        start = stop
    return Partition(tuple(ranges))


def stage_costs(partition: Partition, block_costs: Sequence[float], first_extra: float = 0.0,
                last_extra: float = 0.0) -> list[float]:
    """Each stage's total cost: its blocks, plus the embeddings (stage 0) and head (last stage)."""
    costs = [float(sum(block_costs[i] for i in r)) for r in partition.ranges]
    costs[0] += first_extra
    costs[-1] += last_extra
    return costs


def balanced_partition(block_costs: Sequence[float], n_stages: int, first_extra: float = 0.0,
                       last_extra: float = 0.0) -> Partition:
    """The contiguous partition minimising the largest stage cost (exact dynamic program)."""
    n_layer = len(block_costs)
    check_stage_count(n_layer, n_stages)
    if any(c < 0 for c in block_costs) or first_extra < 0 or last_extra < 0:
        raise ValueError(f"costs must be non-negative, got blocks {list(block_costs)}, "
                         f"first {first_extra}, last {last_extra}")
    prefix = [0.0]
    for c in block_costs:
        prefix.append(prefix[-1] + float(c))

    def group_cost(start: int, stop: int, stage: int) -> float:
        cost = prefix[stop] - prefix[start]
        if stage == 0:
            cost += first_extra
        if stage == n_stages - 1:
            cost += last_extra
        return cost

    inf = float("inf")
    # best[s][i]: smallest possible max-cost when stages 0..s-1 cover blocks 0..i-1
    best = [[inf] * (n_layer + 1) for _ in range(n_stages + 1)]
    split = [[0] * (n_layer + 1) for _ in range(n_stages + 1)]
    best[0][0] = 0.0
    for s in range(1, n_stages + 1):
        for i in range(s, n_layer - (n_stages - s) + 1):
            for j in range(s - 1, i):  # stage s-1 covers blocks j..i-1
                value = max(best[s - 1][j], group_cost(j, i, s - 1))
                if value < best[s][i]:
                    best[s][i], split[s][i] = value, j
    ranges, stop = [], n_layer
    for s in range(n_stages, 0, -1):
        start = split[s][stop]
        ranges.append(range(start, stop))
        stop = start
    return Partition(tuple(reversed(ranges)))


def make_partition(method: str, n_layer: int, n_stages: int, block_costs: Sequence[float] | None = None,
                   first_extra: float = 0.0, last_extra: float = 0.0) -> Partition:
    """Dispatch on `--partition`; `params` and `time` need the per-block costs."""
    if method not in PARTITION_METHODS:
        raise ValueError(f"unknown partition method {method!r}: use one of {', '.join(PARTITION_METHODS)}")
    if method == "uniform":
        return uniform_partition(n_layer, n_stages)
    if block_costs is None or len(block_costs) != n_layer:
        raise ValueError(f"partition {method!r} needs one cost per block ({n_layer}), got {block_costs!r}")
    return balanced_partition(block_costs, n_stages, first_extra, last_extra)
