"""Per-op timers for the engine, off by default: where does a training step spend its time?

    from autograd import profiler
    with profiler.profile() as prof:
        loss = model(x, y)[1]; loss.backward()
    print(prof.table())          # op, calls, forward ms, backward ms, share of the total

When on, Function.apply times each forward and Tensor.backward times each Function's
backward (with a GPU synchronisation first on CuPy, so the times are real). When off, the
cost is one attribute check per op.

Left out: memory accounting (use tracemalloc), nested attribution (a fused Function's time
is its own, not split by the primitives it would replace).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

from . import backend


@dataclass
class OpStats:
    calls: int = 0
    forward_s: float = 0.0
    backward_s: float = 0.0


@dataclass
class Profile:
    ops: dict = field(default_factory=lambda: defaultdict(OpStats))  # op name -> OpStats

    def table(self, top: int = 30) -> str:
        total = sum(s.forward_s + s.backward_s for s in self.ops.values()) or 1.0
        rows = sorted(self.ops.items(), key=lambda kv: -(kv[1].forward_s + kv[1].backward_s))[:top]
        width = max([28] + [len(name) + 2 for name, _ in rows])
        lines = [f"{'op':<{width}}{'calls':>7}{'forward ms':>12}{'backward ms':>13}{'share':>8}"]
        for name, s in rows:
            share = (s.forward_s + s.backward_s) / total
            lines.append(f"{name:<{width}}{s.calls:>7}{s.forward_s * 1e3:>12.2f}{s.backward_s * 1e3:>13.2f}{share:>8.1%}")
        lines.append(f"{'total':<{width}}{'':>7}{sum(s.forward_s for s in self.ops.values()) * 1e3:>12.2f}"
                     f"{sum(s.backward_s for s in self.ops.values()) * 1e3:>13.2f}")
        return "\n".join(lines)


class _State:
    current: Profile | None = None


def active() -> Profile | None:
    return _State.current


@contextlib.contextmanager
def profile():
    """Record per-op forward/backward times inside the block; yields the Profile."""
    previous = _State.current
    _State.current = Profile()
    try:
        yield _State.current
    finally:
        _State.current = previous


def timed(phase: str, name: str, call, *args, **kwargs):
    """Run call(*args, **kwargs), adding its wall time to the active profile."""
    prof = _State.current
    backend.synchronize()
    start = time.perf_counter()
    result = call(*args, **kwargs)
    backend.synchronize()
    elapsed = time.perf_counter() - start
    stats = prof.ops[name]
    if phase == "forward":
        stats.calls += 1
        stats.forward_s += elapsed
    else:
        stats.backward_s += elapsed
    return result
