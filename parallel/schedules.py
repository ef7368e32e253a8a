"""Pipeline schedules as pure functions: `(n_stages, n_microbatches, stage) -> list[Action]`.

A schedule says, for one stage, the order in which it runs forward and backward passes of
microbatches and moves activations and gradients to its neighbours. It knows nothing about
MPI or arrays: `parallel.simulate` runs all stages' lists together (to find deadlocks, count
in-flight activations and draw unit-cost timelines) and `parallel.engine` executes the same
lists on real ranks, so every schedule is checked without MPI before it ever runs.

Conventions shared by every schedule (the engine and the simulator rely on them):
- sends are non-blocking (they never wait for the receiver), receives block until the
  matching message (same kind, microbatch, chunk and peer) has arrived;
- stage 0 reads its microbatch from the data, the last stage computes the loss;
- each list ends with one `allreduce` (data-parallel and tied-embedding gradient sums)
  and one `step` (the optimizer update).

Schedules here:
- `gpipe`:   fill-drain. All m forwards, then all m backwards. Holds m activations.
- `one_f_one_b`: PipeDream-flush. p - s - 1 warm-up forwards, then alternate one forward
  and one backward, then drain. Same bubble as GPipe, holds only min(m, p - s) activations.
- `zero_bubble_h1`: 1F1B with the backward split into B (input gradient, on the critical
  path) and W (weight gradient, deferred to fill the bubble), after Qi et al. 2023 ("ZB-H1"):
  same activation memory as 1F1B, smaller bubble when B and W cost about the same.

- `interleaved_1f1b`: 1F1B over v model chunks per rank (virtual stages, Megatron-LM):
  bubble (p - 1) / (v m + p - 1), v times more messages; m a multiple of p.

The registry (`register_schedule(ScheduleSpec(...))`, `SCHEDULES`) is the one place a
schedule is known: its action function, whether each rank holds several model chunks (and
how many by default), its bubble at unit costs (a closed form, or the unit-cost simulation
when it gives none), and its own checks of a layout. The engine, the simulator, the
runner's checks, `tinyllm train --help` and `--schedule` all ask it; a new schedule is one
function and one `register_schedule` call, in any module imported before the run starts.
`schedule_for(name, n_chunks)` is the (p, m, s) function of a `--schedule` name.

Left out: schedules with more than one in-flight send per pair of neighbours being
reordered (MPI matches by tag, so any order is fine), looping or bidirectional pipelines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tinyllm.fields import ConfigError

FORWARD = "forward"
BACKWARD = "backward"                # input and weight gradients together
BACKWARD_INPUT = "backward_input"    # zero-bubble "B": gradient w.r.t. the stage input only
BACKWARD_WEIGHT = "backward_weight"  # zero-bubble "W": gradient w.r.t. the stage's weights
SEND_ACT = "send_act"
RECV_ACT = "recv_act"
SEND_GRAD = "send_grad"
RECV_GRAD = "recv_grad"
ALLREDUCE = "allreduce"
STEP = "step"

COMPUTE_KINDS = (FORWARD, BACKWARD, BACKWARD_INPUT, BACKWARD_WEIGHT)
SEND_KINDS = (SEND_ACT, SEND_GRAD)
RECV_KINDS = (RECV_ACT, RECV_GRAD)
ACTION_KINDS = COMPUTE_KINDS + SEND_KINDS + RECV_KINDS + (ALLREDUCE, STEP)
MICROBATCH_KINDS = COMPUTE_KINDS + SEND_KINDS + RECV_KINDS
# What a receive of each kind is waiting for.
MATCHING_SEND = {RECV_ACT: SEND_ACT, RECV_GRAD: SEND_GRAD}


@dataclass(frozen=True)
class Action:
    """One step of one stage's schedule.

    kind:       one of ACTION_KINDS
    microbatch: the microbatch it concerns (None for allreduce and step)
    peer:       the other stage of a send or receive (None otherwise)
    chunk:      the model chunk (virtual stage) on this rank; always 0 without interleaving
    """

    kind: str
    microbatch: int | None = None
    peer: int | None = None
    chunk: int = 0

    def __post_init__(self):
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"unknown action kind {self.kind!r}: use one of {', '.join(ACTION_KINDS)}")
        if (self.kind in MICROBATCH_KINDS) != (self.microbatch is not None):
            raise ValueError(f"action {self.kind!r} {'needs' if self.kind in MICROBATCH_KINDS else 'takes no'} microbatch")
        if (self.kind in SEND_KINDS + RECV_KINDS) != (self.peer is not None):
            raise ValueError(f"action {self.kind!r} {'needs' if self.peer is None else 'takes no'} peer")

    def __str__(self) -> str:
        short = {FORWARD: "F", BACKWARD: "B", BACKWARD_INPUT: "Bi", BACKWARD_WEIGHT: "W", SEND_ACT: "sa",
                 RECV_ACT: "ra", SEND_GRAD: "sg", RECV_GRAD: "rg", ALLREDUCE: "AR", STEP: "S"}[self.kind]
        if self.microbatch is None:
            return short
        return f"{short}{self.microbatch}" + (f">{self.peer}" if self.kind in SEND_KINDS else
                                              f"<{self.peer}" if self.kind in RECV_KINDS else "")


Schedule = Callable[[int, int, int], "list[Action]"]


def check_arguments(n_stages: int, n_microbatches: int, stage: int) -> None:
    """Raise ValueError naming the bad value; shared by every schedule."""
    if not isinstance(n_stages, int) or n_stages < 1:
        raise ValueError(f"n_stages must be a positive integer, got {n_stages!r}")
    if not isinstance(n_microbatches, int) or n_microbatches < 1:
        raise ValueError(f"n_microbatches must be a positive integer, got {n_microbatches!r}")
    if not isinstance(stage, int) or not 0 <= stage < n_stages:
        raise ValueError(f"stage must be in 0..{n_stages - 1}, got {stage!r}")


# ---- building blocks: one microbatch's forward or backward with its communication --------
def forward_actions(n_stages: int, stage: int, mb: int, chunk: int = 0, n_chunks: int = 1) -> list[Action]:
    """Receive the input activation (not on the first virtual stage), forward, send the output (not on the last).

    Chunk c of rank r is virtual stage c * p + r; without interleaving that is just the stage.
    """
    virtual, n_virtual = chunk * n_stages + stage, n_chunks * n_stages
    actions = []
    if virtual > 0:
        actions.append(Action(RECV_ACT, mb, peer=(virtual - 1) % n_stages, chunk=chunk))
    actions.append(Action(FORWARD, mb, chunk=chunk))
    if virtual < n_virtual - 1:
        actions.append(Action(SEND_ACT, mb, peer=(virtual + 1) % n_stages, chunk=chunk))
    return actions


def backward_actions(n_stages: int, stage: int, mb: int, kind: str = BACKWARD, chunk: int = 0,
                     n_chunks: int = 1) -> list[Action]:
    """Receive the output gradient (not on the last virtual stage), backward, send the input gradient (not on the first)."""
    virtual, n_virtual = chunk * n_stages + stage, n_chunks * n_stages
    actions = []
    if virtual < n_virtual - 1:
        actions.append(Action(RECV_GRAD, mb, peer=(virtual + 1) % n_stages, chunk=chunk))
    actions.append(Action(kind, mb, chunk=chunk))
    if virtual > 0:
        actions.append(Action(SEND_GRAD, mb, peer=(virtual - 1) % n_stages, chunk=chunk))
    return actions


def _finish() -> list[Action]:
    return [Action(ALLREDUCE), Action(STEP)]


# ---- the schedules ---------------------------------------------------------------------
def gpipe(n_stages: int, n_microbatches: int, stage: int) -> list[Action]:
    """Fill-drain: every forward, then every backward (in the same microbatch order)."""
    check_arguments(n_stages, n_microbatches, stage)
    actions = []
    for mb in range(n_microbatches):
        actions += forward_actions(n_stages, stage, mb)
    for mb in range(n_microbatches):
        actions += backward_actions(n_stages, stage, mb)
    return actions + _finish()


def one_f_one_b(n_stages: int, n_microbatches: int, stage: int) -> list[Action]:
    """PipeDream-flush: warm up with p - s - 1 forwards, alternate 1F1B, drain the backwards.

    Stage s starts its first backward as soon as microbatch 0's gradient can come back, so
    at most min(m, p - s) microbatches' activations are alive on it at once.
    """
    check_arguments(n_stages, n_microbatches, stage)
    warmup = min(n_stages - stage - 1, n_microbatches)
    actions = []
    for mb in range(warmup):
        actions += forward_actions(n_stages, stage, mb)
    for i in range(n_microbatches - warmup):
        actions += forward_actions(n_stages, stage, warmup + i)
        actions += backward_actions(n_stages, stage, i)
    for mb in range(n_microbatches - warmup, n_microbatches):
        actions += backward_actions(n_stages, stage, mb)
    return actions + _finish()


def zero_bubble_h1(n_stages: int, n_microbatches: int, stage: int) -> list[Action]:
    """1F1B with split backward: B (input gradient) on time, W (weight gradient) deferred.

    Stage s follows 1F1B with B in place of the full backward, but holds back s weight-gradient
    passes (the bubble it would otherwise sit in at the end) and runs W for microbatch i right
    after B of microbatch i + s in the steady state; the held-back W passes fill the drain.
    Activation memory is that of 1F1B: an activation is alive from F until its B.
    """
    check_arguments(n_stages, n_microbatches, stage)
    warmup = min(n_stages - stage - 1, n_microbatches)
    deferred = min(stage, n_microbatches)  # W passes kept back to fill stage s's drain bubble
    actions = []
    next_w = 0

    def backward_and_maybe_w(mb: int) -> None:
        nonlocal next_w
        actions.extend(backward_actions(n_stages, stage, mb, kind=BACKWARD_INPUT))
        if mb - next_w >= deferred:
            actions.append(Action(BACKWARD_WEIGHT, next_w))
            next_w += 1

    for mb in range(warmup):
        actions += forward_actions(n_stages, stage, mb)
    for i in range(n_microbatches - warmup):
        actions += forward_actions(n_stages, stage, warmup + i)
        backward_and_maybe_w(i)
    for mb in range(n_microbatches - warmup, n_microbatches):
        backward_and_maybe_w(mb)
    while next_w < n_microbatches:
        actions.append(Action(BACKWARD_WEIGHT, next_w))
        next_w += 1
    return actions + _finish()


def interleaved_1f1b(n_stages: int, n_microbatches: int, stage: int, n_chunks: int = 2) -> list[Action]:
    """1F1B over virtual stages: each rank runs `n_chunks` model chunks (rank r: chunks r, r + p, ...).

    After Narayanan et al. 2021 (Megatron-LM). Work units are (microbatch, chunk) pairs, taken
    in groups of p microbatches per chunk: forward unit k runs chunk (k // p) % v of microbatch
    (k // (p v)) p + k % p; backward units take the chunks in reverse. Rank r warms up with
    (p - r - 1) * 2 + (v - 1) * p forward units, then alternates, then drains. The bubble
    shrinks to (p - 1) / (v m + p - 1) at the price of v times more messages. Needs m to be
    a multiple of p.
    """
    check_arguments(n_stages, n_microbatches, stage)
    if not isinstance(n_chunks, int) or n_chunks < 1:
        raise ValueError(f"n_chunks must be a positive integer, got {n_chunks!r}")
    if n_microbatches % n_stages:
        raise ValueError(f"interleaved 1F1B needs the microbatch count ({n_microbatches}) to be a multiple of the "
                         f"stage count ({n_stages})")
    p, v = n_stages, n_chunks
    units = n_microbatches * v

    def unit(k: int, backward: bool) -> tuple[int, int]:
        chunk = (k // p) % v
        return (k // (p * v)) * p + k % p, (v - 1 - chunk) if backward else chunk

    def forward(k: int) -> list[Action]:
        mb, chunk = unit(k, backward=False)
        return forward_actions(p, stage, mb, chunk, v)

    def backward(k: int) -> list[Action]:
        mb, chunk = unit(k, backward=True)
        return backward_actions(p, stage, mb, BACKWARD, chunk, v)

    warmup = units if n_microbatches == p else min(units, (p - stage - 1) * 2 + (v - 1) * p)
    actions = []
    for k in range(warmup):
        actions += forward(k)
    for k in range(units - warmup):
        actions += forward(warmup + k)
        actions += backward(k)
    for k in range(units - warmup, units):
        actions += backward(k)
    return actions + _finish()


# ---- the registry: everything the rest of parallel/ and the command line know about a schedule --

@dataclass(frozen=True)
class ScheduleSpec:
    """A registered schedule. Call it like a schedule: spec(p, m, s) -> list[Action] (chunked ones with
    their default chunk count; `for_chunks(v)` for another)."""

    name: str                                    # the --schedule name
    actions: Callable                            # (p, m, s) -> actions; (p, m, s, n_chunks) when chunked
    title: str                                   # what it is, for --help
    chunked: bool = False                        # each rank holds several model chunks (--virtual-stages)
    default_chunks: int = 1                      # chunks per rank when --virtual-stages is not given
    bubble: Callable | None = None               # (p, m, v) -> idle fraction at unit costs, a closed form
    formula: str | None = None                   # that closed form as printed; None: the unit-cost simulation
    check: Callable | None = None                # (p, m, v) -> None, or a ValueError naming the flags

    def __call__(self, n_stages: int, n_microbatches: int, stage: int) -> list[Action]:
        return self.for_chunks(self.default_chunks)(n_stages, n_microbatches, stage)

    def for_chunks(self, n_chunks: int) -> Schedule:
        """The (n_stages, n_microbatches, stage) function with `n_chunks` chunks per rank."""
        if not self.chunked:
            if n_chunks != 1:
                chunked = ", ".join(name for name, spec in SCHEDULES.items() if spec.chunked) or "none registered"
                raise ValueError(f"schedule {self.name!r} runs one model chunk per rank, not {n_chunks}: use a "
                                 f"schedule with chunks ({chunked})")
            return self.actions
        return lambda n_stages, n_microbatches, stage: self.actions(n_stages, n_microbatches, stage, n_chunks)

    def check_layout(self, n_stages: int, n_microbatches: int, n_chunks: int) -> None:
        """This schedule's own conditions on the layout (ValueError naming the flags)."""
        if self.check is not None:
            self.check(n_stages, n_microbatches, n_chunks)


SCHEDULES: dict[str, ScheduleSpec] = {}   # --schedule name -> spec, in registration order


def register_schedule(spec: ScheduleSpec) -> ScheduleSpec:
    """Add a schedule: from then on the simulator, the engine, the runner's checks, the bubble and
    `tinyllm train --schedule` know it (docs/pipeline.md, "A new schedule")."""
    if spec.name in SCHEDULES and SCHEDULES[spec.name] != spec:
        raise ValueError(f"a schedule named {spec.name!r} is registered already")
    SCHEDULES[spec.name] = spec
    return spec


def get_schedule(name: str) -> ScheduleSpec:
    """The registered schedule of a `--schedule` name."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}: use one of {', '.join(SCHEDULES)}") from None


def schedule_for(name: str, n_chunks: int = 1) -> Schedule:
    """The (n_stages, n_microbatches, stage) function of `--schedule name` with `n_chunks` chunks per rank."""
    return get_schedule(name).for_chunks(n_chunks)


def chunks_per_stage(pipeline) -> int:
    """Model chunks per rank for a run's pipeline settings: --virtual-stages, else the schedule's default."""
    return pipeline.virtual_stages or get_schedule(pipeline.schedule).default_chunks


def check_pipeline_settings(pipeline) -> None:
    """A run's pipeline settings (tinyllm.settings.PipelineSettings) against the registry: a known
    schedule, chunks only for a schedule with chunks (a ConfigError naming the flag)."""
    try:
        spec = get_schedule(pipeline.schedule)
    except ValueError as error:
        raise ConfigError(f"--schedule {pipeline.schedule!r}: {error}") from None
    if pipeline.virtual_stages not in (None, 1) and not spec.chunked:
        chunked = ", ".join(name for name, s in SCHEDULES.items() if s.chunked)
        raise ConfigError(f"--virtual-stages {pipeline.virtual_stages!r}: needs a schedule with chunks ({chunked}); "
                          f"the schedule is {spec.name}")


def fill_drain_bubble(p: int, m: int, v: int) -> float:
    """GPipe's and 1F1B's idle fraction at unit costs: (p - 1) / (m + p - 1)."""
    return (p - 1) / (m + p - 1)


def _check_interleaved(p: int, m: int, v: int) -> None:
    if p < 2:
        raise ValueError(f"--schedule interleaved needs --pipeline-stages 2 or more, got {p}")
    if m % p:
        raise ValueError(f"--schedule interleaved needs --microbatches ({m}) to be a multiple of "
                         f"--pipeline-stages ({p})")


register_schedule(ScheduleSpec("gpipe", gpipe, "fill-drain", bubble=fill_drain_bubble, formula="(p-1)/(m+p-1)"))
register_schedule(ScheduleSpec("1f1b", one_f_one_b, "PipeDream-flush, the default", bubble=fill_drain_bubble,
                               formula="(p-1)/(m+p-1)"))
register_schedule(ScheduleSpec("interleaved", interleaved_1f1b, "1F1B over --virtual-stages chunks per rank",
                               chunked=True, default_chunks=2, bubble=lambda p, m, v: (p - 1) / (v * m + p - 1),
                               formula="(p-1)/(vm+p-1)", check=_check_interleaved))
# zb-h1's closed form holds for m >= p; below that the unit-cost simulation gives the bubble
register_schedule(ScheduleSpec("zb-h1", zero_bubble_h1, "zero-bubble H1: the backward split into B and W",
                               bubble=lambda p, m, v: (p - 1) / (3 * m + p - 1) if m >= p else None,
                               formula="(p-1)/(3m+p-1)"))
