"""Trace events, measured bubble and the SVG timeline, on hand-made events (no MPI)."""
import pytest

from parallel.p2p import ACTIVATION, GRADIENT, message_tag
from parallel.trace import chrome_events, measured_bubble, render_svg

# two ranks, one step: rank 1 waits 1 s for the activation, rank 0 waits 1 s for the gradient
EVENTS = [
    [("forward", 0.0, 1.0, 0, 1), ("send_act", 1.0, 1.0, 0, 1), ("recv_grad", 1.0, 3.0, 0, 1),
     ("backward", 3.0, 4.0, 0, 1), ("allreduce", 4.0, 4.0, None, 1), ("optimizer", 4.0, 9.0, None, 1)],
    [("recv_act", 0.0, 1.0, 0, 1), ("forward", 1.0, 2.0, 0, 1), ("backward", 2.0, 3.0, 0, 1),
     ("send_grad", 3.0, 3.0, 0, 1), ("allreduce", 3.5, 4.0, None, 1)],
]


def test_measured_bubble_counts_waits_not_the_optimizer():
    # span 0..4 on 2 ranks = 8 s, compute 4 s -> half idle; the 5 s optimizer step is outside
    assert measured_bubble(EVENTS) == pytest.approx(0.5)


def test_chrome_events_are_complete_events_with_idle_gaps():
    events = chrome_events(EVENTS)
    complete = [e for e in events if e["ph"] == "X"]
    assert {e["pid"] for e in complete} == {0, 1}
    idle = [e for e in complete if e["name"] == "idle"]
    assert [(e["pid"], e["ts"], e["dur"]) for e in idle] == [(1, 3e6, 0.5e6)]
    waits = [e["name"] for e in complete if e["cat"] == "wait"]
    assert waits == ["recv_grad 0", "recv_act 0"]
    assert all(set(e) >= {"name", "ph", "pid", "tid", "ts", "dur"} for e in complete)


def test_svg_has_a_row_per_rank_and_a_box_per_event():
    trace = {"traceEvents": chrome_events(EVENTS)}
    svg = render_svg(trace)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "rank 0 (stage 0)" in svg and "rank 1 (stage 1)" in svg
    assert svg.count("<title>forward 0</title>") == 2
    with pytest.raises(ValueError, match="no events for step 7"):
        render_svg(trace, step=7)


def test_message_tags_are_distinct():
    tags = {message_tag(kind, mb, boundary, 3) for kind in (ACTIVATION, GRADIENT) for mb in range(50)
            for boundary in range(3)}
    assert len(tags) == 2 * 50 * 3
