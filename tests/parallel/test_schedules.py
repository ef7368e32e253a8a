"""Schedules simulated together without MPI: matching, no deadlock, memory, bubble."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallel.schedules import (BACKWARD, FORWARD, SCHEDULES, STEP, Action, get_schedule, gpipe, interleaved_1f1b,
                                one_f_one_b, schedule_for, zero_bubble_h1)
from parallel.simulate import Costs, DeadlockError, ScheduleError, render_ascii, simulate, theoretical_bubble

stages_and_microbatches = st.tuples(st.integers(1, 8), st.integers(1, 16))


CONTIGUOUS = sorted(set(SCHEDULES) - {"interleaved"})  # interleaved needs m a multiple of p: tested below


@given(stages_and_microbatches, st.sampled_from(CONTIGUOUS))
def test_every_schedule_completes_and_matches_messages(pm, name):
    p, m = pm
    result = simulate(get_schedule(name), p, m)  # raises on deadlock or unmatched message
    assert len(result.timelines) == p


@given(stages_and_microbatches, st.sampled_from(CONTIGUOUS))
def test_forward_before_backward_and_once_each(pm, name):
    p, m = pm
    for s in range(p):
        actions = get_schedule(name)(p, m, s)
        computes = [(a.kind, a.microbatch) for a in actions if a.kind in (FORWARD, BACKWARD, "backward_input")]
        forwards = [mb for k, mb in computes if k == FORWARD]
        backwards = [mb for k, mb in computes if k != FORWARD]
        assert sorted(forwards) == list(range(m)) and sorted(backwards) == list(range(m))
        for mb in range(m):
            first_backward = next(i for i, (k, b) in enumerate(computes) if k != FORWARD and b == mb)
            assert computes.index((FORWARD, mb)) < first_backward
        assert actions[-1] == Action(STEP)


@given(stages_and_microbatches)
def test_peak_activations_gpipe_m_and_1f1b_p_minus_s(pm):
    p, m = pm
    assert simulate(gpipe, p, m).peak_in_flight == [m] * p
    assert simulate(one_f_one_b, p, m).peak_in_flight == [min(m, p - s) for s in range(p)]
    zb = simulate(zero_bubble_h1, p, m)
    assert zb.peak_in_flight == [min(m, p - s) for s in range(p)]
    assert max(zb.peak_until_weight) <= min(m, p)  # deferred W keeps at most p microbatches' weights inputs


@given(stages_and_microbatches, st.floats(0.5, 3.0))
def test_bubble_equals_theory_for_gpipe_and_1f1b(pm, backward_cost):
    p, m = pm
    costs = Costs(forward=1.0, backward=backward_cost)
    for schedule in (gpipe, one_f_one_b):
        result = simulate(schedule, p, m, costs)
        assert result.makespan == pytest.approx((m + p - 1) * (1.0 + backward_cost))
        assert result.bubble_fraction == pytest.approx(theoretical_bubble(p, m))


@given(stages_and_microbatches)
def test_zero_bubble_h1_beats_1f1b_when_split_backward(pm):
    p, m = pm
    costs = Costs(forward=1.0, backward=2.0, backward_input=1.0, backward_weight=1.0)
    zb, ofob = simulate(zero_bubble_h1, p, m, costs), simulate(one_f_one_b, p, m, costs)
    assert zb.makespan <= ofob.makespan
    if m >= p:  # ZB-H1's bubble is (p - 1)(F + B - W) per stage
        assert zb.makespan == pytest.approx(m * 3.0 + (p - 1) * 1.0)


interleaved_shapes = st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 3))  # (p, m / p, chunks)


@given(interleaved_shapes)
def test_interleaved_1f1b_bubble_and_memory(shape):
    p, groups, v = shape
    m = p * groups

    def schedule(n_stages, n_microbatches, stage):
        return interleaved_1f1b(n_stages, n_microbatches, stage, n_chunks=v)
    equal = simulate(schedule, p, m, Costs(forward=1.0, backward=1.0))  # deadlock-free, messages matched
    assert equal.bubble_fraction == pytest.approx((p - 1) / (v * m + p - 1))
    units = m * v  # (microbatch, chunk) pairs per rank, each 1/v of a stage's activations
    assert equal.peak_in_flight == [units if m == p else min(units, 2 * (p - s - 1) + (v - 1) * p + 1)
                                    for s in range(p)]
    skewed = simulate(schedule, p, m, Costs(forward=1.0, backward=2.0))
    assert skewed.bubble_fraction <= simulate(one_f_one_b, p, m, Costs(forward=1.0, backward=2.0)).bubble_fraction + 1e-12


@given(interleaved_shapes)
def test_theoretical_bubble_is_the_unit_cost_simulation(shape):
    p, groups, v = shape
    m = p * groups
    assert theoretical_bubble(p, m, "interleaved", v) == pytest.approx(
        simulate(schedule_for("interleaved", v), p, m, Costs(forward=1.0, backward=1.0)).bubble_fraction)
    unit = Costs(forward=1.0, backward=2.0, backward_input=1.0, backward_weight=1.0)
    for name in CONTIGUOUS:
        assert theoretical_bubble(p, m, name) == pytest.approx(simulate(schedule_for(name), p, m, unit).bubble_fraction)
    assert theoretical_bubble(p, 1, "zb-h1") == pytest.approx(simulate(zero_bubble_h1, p, 1, unit).bubble_fraction)


def test_only_interleaved_takes_chunks():
    with pytest.raises(ValueError, match=r"one model chunk per rank, not 2: use a schedule with chunks \(interleaved\)"):
        schedule_for("1f1b", 2)
    assert schedule_for("interleaved", 3)(2, 4, 1) == interleaved_1f1b(2, 4, 1, n_chunks=3)


def test_interleaved_needs_whole_groups_of_microbatches():
    with pytest.raises(ValueError, match="multiple of the stage count"):
        interleaved_1f1b(4, 6, 0)


def test_detects_deadlock():
    def both_receive_first(p, m, s):  # stage 1 waits for a gradient before sending its activation
        acts = gpipe(p, m, s)
        if s == 1:
            acts = [Action("recv_grad", 0, peer=0)] + acts
        return acts
    with pytest.raises(ScheduleError):
        simulate(both_receive_first, 2, 2)

    def starve(p, m, s):  # stage 0 never sends microbatch 1
        acts = gpipe(p, m, s)
        return [a for a in acts if not (s == 0 and a.kind == "send_act" and a.microbatch == 1)]
    with pytest.raises(DeadlockError, match="stage 1 waits"):
        simulate(starve, 2, 2)


def test_detects_unreceived_send_and_backward_before_forward():
    def extra_send(p, m, s):
        acts = gpipe(p, m, s)
        return acts[:-2] + ([Action("send_act", 0, peer=1)] if s == 0 else []) + acts[-2:]
    with pytest.raises(ScheduleError, match="sent twice"):
        simulate(extra_send, 2, 1)

    def backward_first(p, m, s):
        acts = gpipe(p, m, s)
        return [Action(BACKWARD, 0)] + [a for a in acts if a != Action(BACKWARD, 0)]
    with pytest.raises(ScheduleError, match="before its forward"):
        simulate(backward_first, 1, 1)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="n_stages"):
        gpipe(0, 2, 0)
    with pytest.raises(ValueError, match="stage must be in 0..1"):
        one_f_one_b(2, 2, 2)
    with pytest.raises(ValueError, match="unknown schedule 'pipedream'"):
        get_schedule("pipedream")


def test_ascii_timeline_shows_fill_and_drain():
    text = render_ascii(simulate(gpipe, 2, 2, Costs(1, 1)))
    assert text.splitlines() == ["stage 0: FF..BB", "stage 1: .FFBB."]
