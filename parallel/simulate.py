"""Run every stage's schedule together, without MPI: deadlocks, message matching, memory, timeline.

`simulate(schedule, n_stages, n_microbatches, costs)` executes the stages' action lists as a
dataflow program with the engine's semantics (sends never block; a receive waits for the
matching send of the same kind, microbatch, chunk and peer) and unit costs per compute
action, then checks what a real run would need:

- no deadlock: some stage can always make progress until all are done (otherwise
  `DeadlockError` names what each stuck stage is waiting for);
- every send has exactly one receive and the other way round, between adjacent (virtual) stages
  in the right direction (activations downstream, gradients upstream);
- on every stage each microbatch runs forward exactly once, and its backward (or B and W)
  exactly once, after the forward; a stage does not send what it has not computed;
- the peak number of microbatches alive on each stage (forwarded, input-gradient not yet
  computed; for split backward also counted until W);
- the timeline (start, end, what) per stage, its makespan and the bubble (idle) fraction.

The clocks are logical: a compute action starts when the stage is free; a receive finishes
at the later of the stage's clock and the send's time plus `costs.comm`.

Left out: bandwidth or contention models, overlapping compute with communication on one
rank (a stage computes one thing at a time), all-reduce cost (the final allreduce is free).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .schedules import (ALLREDUCE, BACKWARD, BACKWARD_INPUT, BACKWARD_WEIGHT, FORWARD, MATCHING_SEND, RECV_ACT,
                        RECV_GRAD, RECV_KINDS, SEND_ACT, SEND_KINDS, STEP, Action, Schedule, get_schedule)


class ScheduleError(ValueError):
    """A schedule breaks a rule (unmatched message, backward before forward, ...)."""


class DeadlockError(ScheduleError):
    """No stage can progress but some are not done."""


@dataclass(frozen=True)
class Costs:
    """Time units per action: the defaults are the usual 'backward costs twice a forward'."""

    forward: float = 1.0
    backward: float = 2.0
    backward_input: float = 1.0
    backward_weight: float = 1.0
    comm: float = 0.0

    def of(self, kind: str) -> float:
        return {FORWARD: self.forward, BACKWARD: self.backward, BACKWARD_INPUT: self.backward_input,
                BACKWARD_WEIGHT: self.backward_weight}.get(kind, 0.0)


@dataclass(frozen=True)
class Span:
    """One compute action or one wait on one stage's timeline."""

    start: float
    end: float
    what: str            # an action kind, or "idle" for time spent blocked in a receive
    microbatch: int | None = None


@dataclass
class SimulationResult:
    n_stages: int
    n_microbatches: int
    timelines: list = field(default_factory=list)          # per stage: list[Span]
    peak_in_flight: list = field(default_factory=list)     # per stage: forward done, B not done
    peak_until_weight: list = field(default_factory=list)  # per stage: forward done, W not done
    makespan: float = 0.0

    def busy(self, stage: int) -> float:
        return sum(s.end - s.start for s in self.timelines[stage] if s.what != "idle")

    @property
    def bubble_fraction(self) -> float:
        """Idle share of all stages' time up to the makespan: 1 - busy / (p * makespan)."""
        if self.makespan == 0:
            return 0.0
        busy = sum(self.busy(s) for s in range(self.n_stages))
        return 1.0 - busy / (self.n_stages * self.makespan)


def _virtual(stage: int, chunk: int, n_stages: int) -> int:
    """The position of (rank, chunk) in the model: chunk c of rank r runs virtual stage c * p + r."""
    return chunk * n_stages + stage


def _message_key(action: Action, stage: int, n_stages: int) -> tuple:
    """(kind of send, from virtual stage, to virtual stage, microbatch): what a send produces or a receive awaits.

    Activations go to the next virtual stage, gradients to the previous one; without
    interleaving (chunk 0 everywhere) virtual stages are the ranks themselves.
    """
    here = _virtual(stage, action.chunk, n_stages)
    if action.kind in SEND_KINDS:
        there = here + 1 if action.kind == SEND_ACT else here - 1
        return (action.kind, here, there, action.microbatch)
    there = here - 1 if action.kind == RECV_ACT else here + 1
    return (MATCHING_SEND[action.kind], there, here, action.microbatch)


def _check_peer(action: Action, stage: int, n_stages: int, n_virtual: int) -> None:
    here = _virtual(stage, action.chunk, n_stages)
    downstream = action.kind in (SEND_ACT, RECV_GRAD)  # talks to the next virtual stage
    there = here + 1 if downstream else here - 1
    if not 0 <= there < n_virtual or action.peer != there % n_stages:
        expected = there % n_stages if 0 <= there < n_virtual else "none"
        raise ScheduleError(f"stage {stage}: {action} (chunk {action.chunk}) talks to stage {action.peer}, expected "
                            f"{expected} (activations go downstream, gradients upstream, among {n_stages} stages)")


class _StageState:
    def __init__(self, stage: int, actions: list[Action]):
        self.stage = stage
        self.actions = actions
        self.position = 0
        self.clock = 0.0
        self.timeline: list[Span] = []
        self.forwarded: Counter = Counter()     # (microbatch, chunk) -> count
        self.input_grad_done: Counter = Counter()
        self.weight_grad_done: Counter = Counter()
        self.received: set = set()              # (receive kind, microbatch, chunk) completed
        self.alive = 0           # forwarded, input gradient not done
        self.alive_weight = 0    # forwarded, weight gradient not done
        self.peak = 0
        self.peak_weight = 0

    @property
    def done(self) -> bool:
        return self.position == len(self.actions)


def simulate(schedule: Schedule, n_stages: int, n_microbatches: int, costs: Costs = Costs()) -> SimulationResult:
    """Run `schedule` for every stage together; raise ScheduleError/DeadlockError on a broken schedule."""
    stages = [_StageState(s, list(schedule(n_stages, n_microbatches, s))) for s in range(n_stages)]
    chunk_counts = {1 + max((a.chunk for a in st.actions), default=0) for st in stages}
    if len(chunk_counts) != 1:
        raise ScheduleError(f"stages hold different numbers of model chunks: {sorted(chunk_counts)}")
    n_virtual = n_stages * chunk_counts.pop()
    in_transit: dict[tuple, float] = {}  # message key -> time it is available to the receiver
    sent: set = set()
    received: set = set()

    progressed = True
    while progressed:
        progressed = False
        for st in stages:
            while not st.done:
                action = st.actions[st.position]
                if action.kind in RECV_KINDS:
                    key = _message_key(action, st.stage, n_stages)
                    if key not in in_transit:
                        break  # blocked: the matching send has not happened (yet)
                _execute(st, action, n_stages, n_virtual, costs, in_transit, sent, received)
                st.position += 1
                progressed = True

    stuck = [st for st in stages if not st.done]
    if stuck:
        waits = "; ".join(f"stage {st.stage} waits at action {st.position} ({st.actions[st.position]})" for st in stuck)
        raise DeadlockError(f"deadlock with {n_stages} stages, {n_microbatches} microbatches: {waits}")
    if in_transit:
        raise ScheduleError(f"sends never received: {sorted(in_transit)}")
    for st in stages:
        _check_complete(st, n_microbatches)
    result = SimulationResult(n_stages, n_microbatches)
    result.timelines = [st.timeline for st in stages]
    result.peak_in_flight = [st.peak for st in stages]
    result.peak_until_weight = [st.peak_weight for st in stages]
    result.makespan = max(st.clock for st in stages)
    return result


def _execute(st: _StageState, action: Action, n_stages: int, n_virtual: int, costs: Costs, in_transit: dict,
             sent: set, received: set) -> None:
    s = st.stage
    mb = (action.microbatch, action.chunk)
    if action.kind in SEND_KINDS + RECV_KINDS:
        _check_peer(action, s, n_stages, n_virtual)
        key = _message_key(action, s, n_stages)
        if action.kind in SEND_KINDS:
            needed = st.forwarded if action.kind == SEND_ACT else st.input_grad_done
            if not needed[mb]:
                raise ScheduleError(f"stage {s}: {action} sends a result it has not computed yet")
            if key in sent:
                raise ScheduleError(f"stage {s}: {action} sent twice")
            sent.add(key)
            in_transit[key] = st.clock + costs.comm
        else:
            if key in received:
                raise ScheduleError(f"stage {s}: {action} received twice")
            received.add(key)
            st.received.add((action.kind, action.microbatch, action.chunk))
            ready = in_transit.pop(key)
            if ready > st.clock:
                st.timeline.append(Span(st.clock, ready, "idle", action.microbatch))
                st.clock = ready
        return
    if action.kind in (ALLREDUCE, STEP):
        return
    if action.kind == FORWARD:
        if st.forwarded[mb]:
            raise ScheduleError(f"stage {s}: microbatch {action.microbatch} forwarded twice")
        virtual = _virtual(s, action.chunk, n_stages)
        if virtual > 0 and (RECV_ACT, action.microbatch, action.chunk) not in st.received:
            raise ScheduleError(f"stage {s}: forward of microbatch {action.microbatch} before its activation arrived")
        st.forwarded[mb] += 1
        st.alive += 1
        st.alive_weight += 1
    else:
        if not st.forwarded[mb]:
            raise ScheduleError(f"stage {s}: {action.kind} of microbatch {action.microbatch} before its forward")
        if action.kind in (BACKWARD, BACKWARD_INPUT):
            if st.input_grad_done[mb]:
                raise ScheduleError(f"stage {s}: input gradient of microbatch {action.microbatch} computed twice")
            last = _virtual(s, action.chunk, n_stages) == n_virtual - 1
            if not last and (RECV_GRAD, action.microbatch, action.chunk) not in st.received:
                raise ScheduleError(f"stage {s}: backward of microbatch {action.microbatch} before its gradient arrived")
            st.input_grad_done[mb] += 1
            st.alive -= 1
        if action.kind in (BACKWARD, BACKWARD_WEIGHT):
            if st.weight_grad_done[mb]:
                raise ScheduleError(f"stage {s}: weight gradient of microbatch {action.microbatch} computed twice")
            if not st.input_grad_done[mb]:
                raise ScheduleError(f"stage {s}: W of microbatch {action.microbatch} before its B")
            st.weight_grad_done[mb] += 1
            st.alive_weight -= 1
    st.peak = max(st.peak, st.alive)
    st.peak_weight = max(st.peak_weight, st.alive_weight)
    cost = costs.of(action.kind)
    st.timeline.append(Span(st.clock, st.clock + cost, action.kind, action.microbatch))
    st.clock += cost


def _check_complete(st: _StageState, n_microbatches: int) -> None:
    chunks = {a.chunk for a in st.actions if a.microbatch is not None}
    for chunk in chunks:
        for mb in range(n_microbatches):
            key = (mb, chunk)
            if st.forwarded[key] != 1 or st.input_grad_done[key] != 1 or st.weight_grad_done[key] != 1:
                raise ScheduleError(
                    f"stage {st.stage}: microbatch {mb} (chunk {chunk}) ran forward {st.forwarded[key]}x, "
                    f"input gradient {st.input_grad_done[key]}x, weight gradient {st.weight_grad_done[key]}x; "
                    "each must run exactly once")
    kinds = [a.kind for a in st.actions]
    if kinds.count(ALLREDUCE) != 1 or kinds.count(STEP) != 1 or kinds[-1] != STEP:
        raise ScheduleError(f"stage {st.stage}: a schedule must end with one allreduce and one step")


def render_ascii(result: SimulationResult, unit: float = 1.0) -> str:
    """A text timeline, one row per stage: F/B/b/W with the microbatch number's last digit, '.' idle."""
    letters = {FORWARD: "F", BACKWARD: "B", BACKWARD_INPUT: "b", BACKWARD_WEIGHT: "W"}
    width = int(round(result.makespan / unit))
    rows = []
    for s, timeline in enumerate(result.timelines):
        row = ["."] * width
        for span in timeline:
            if span.what == "idle":
                continue
            for t in range(int(round(span.start / unit)), int(round(span.end / unit))):
                row[t] = letters[span.what] if t == int(round(span.start / unit)) else str(span.microbatch % 10)
        rows.append(f"stage {s}: " + "".join(row))
    return "\n".join(rows)


def theoretical_bubble(n_stages: int, n_microbatches: int, schedule: str = "1f1b", n_chunks: int = 1) -> float:
    """Idle fraction of a registered schedule when every stage costs the same (p stages, m microbatches,
    v chunks; Costs' defaults: F = 1, B = 2, or B = W = 1 when split): the schedule's closed form
    (gpipe, 1f1b: (p - 1) / (m + p - 1); interleaved: (p - 1) / (v m + p - 1); zb-h1 with m >= p:
    (p - 1) / (3 m + p - 1)), or the unit-cost simulation of its actions where it has none."""
    spec = get_schedule(schedule)
    value = spec.bubble(n_stages, n_microbatches, n_chunks) if spec.bubble is not None else None
    if value is not None:
        return value
    return simulate(spec.for_chunks(n_chunks), n_stages, n_microbatches, Costs()).bubble_fraction


def bubble_formula(schedule: str) -> str:
    """How theoretical_bubble computes a schedule's bubble, as the runner prints it."""
    return get_schedule(schedule).formula or "unit-cost simulation"
