"""A new schedule is one function and one register_schedule call, in a file of its own: this one.

`last_in_first_out` below is GPipe with the backwards in reverse microbatch order (the last
forward's activations are freed first). Registered here and nowhere else, it is checked by the
simulator (no deadlock, every message matched), gets its bubble from the unit-cost simulation
(it has no closed form), and runs over mpiexec: run as a script, this file registers it and
hands its arguments to the pipeline runner (`mpiexec -n 2 python tests/parallel/test_schedule_registry.py
SETTINGS.json`), and the run equals one process.
"""
import sys

import pytest

from parallel.schedules import (ALLREDUCE, SCHEDULES, STEP, Action, ScheduleSpec, backward_actions, check_arguments,
                                forward_actions, register_schedule)
from parallel.simulate import Costs, simulate, theoretical_bubble


def last_in_first_out(n_stages: int, n_microbatches: int, stage: int) -> list:
    """Every forward, then every backward from the last microbatch to the first."""
    check_arguments(n_stages, n_microbatches, stage)
    actions = []
    for mb in range(n_microbatches):
        actions += forward_actions(n_stages, stage, mb)
    for mb in reversed(range(n_microbatches)):
        actions += backward_actions(n_stages, stage, mb)
    return actions + [Action(ALLREDUCE), Action(STEP)]


LIFO = ScheduleSpec("lifo", last_in_first_out, "GPipe with last-in-first-out backwards (a test's)")


def test_a_registered_schedule_is_simulated_and_has_a_bubble():
    register_schedule(LIFO)
    try:
        for p, m in ((1, 1), (2, 3), (4, 8), (3, 2)):
            result = simulate(SCHEDULES["lifo"], p, m)           # raises on a deadlock or an unmatched message
            assert result.peak_in_flight == [m] * p
            assert theoretical_bubble(p, m, "lifo") == result.bubble_fraction == \
                simulate(last_in_first_out, p, m, Costs()).bubble_fraction
    finally:
        del SCHEDULES["lifo"]


@pytest.mark.mpi
def test_a_schedule_registered_in_a_test_file_runs_over_mpiexec(corpus, references, tmp_path):
    from .mpi_runs import BASE, MPIEXEC, assert_same_run, mpirun
    if MPIEXEC is None:
        pytest.skip("needs mpiexec (pip install 'tinyllm[mpi]')")
    reference, reference_ckpt = references[True]
    out = tmp_path / "run"
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(out), "pipeline_stages": 2, "microbatches": 3,
                      "schedule": "lifo"}, tmp_path / "w", script=__file__)
    assert_same_run(proc, reference, reference_ckpt, out)
    assert "schedule lifo" in proc.stderr


if __name__ == "__main__":   # a launcher: register the schedule, then the runner as `python -m parallel.runner`
    from parallel.runner import main
    register_schedule(LIFO)
    sys.exit(main(sys.argv[1:]))
