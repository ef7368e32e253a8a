"""Interleaved 1F1B, zero-bubble H1 with a split backward, ZeRO-1 and recomputation reproduce the
single-process run (float64: every loss to 1e-12, every weight to 1e-11), under real mpiexec,
and their checkpoints resume across layouts: ZeRO -> unsharded and one process, unsharded ->
ZeRO, interleaved -> contiguous stages, one process -> interleaved.
"""
import json
import shutil

import pytest
from .mpi_runs import BASE, assert_same_run, finished_after, mpirun, needs_mpi, single_process

from parallel.schedules import schedule_for
from tinyllm import checkpoint as ckpt
from tinyllm.settings import RunSettings
from tinyllm.train import train

pytestmark = needs_mpi

CASES = [  # (ranks, overrides)
    (2, dict(pipeline_stages=2, microbatches=4, schedule="zb-h1")),
    (4, dict(pipeline_stages=4, microbatches=4, schedule="zb-h1", tie_embeddings=False)),
    (3, dict(pipeline_stages=3, microbatches=3, schedule="zb-h1", recompute=True)),
    (2, dict(pipeline_stages=2, microbatches=4, schedule="interleaved", virtual_stages=2)),
    (2, dict(pipeline_stages=2, microbatches=2, schedule="interleaved", tie_embeddings=False, partition="params")),
    (4, dict(pipeline_stages=2, data_parallel=2, microbatches=3, schedule="1f1b", zero=1)),
    (2, dict(pipeline_stages=1, data_parallel=2, microbatches=2, schedule="gpipe", zero=1)),
    (4, dict(pipeline_stages=2, data_parallel=2, microbatches=2, schedule="interleaved", zero=1, recompute=True)),
    (2, dict(pipeline_stages=2, microbatches=4, schedule="gpipe", recompute=True)),
]


def case_id(value):
    if isinstance(value, int):
        return f"n{value}"
    flags = "".join(f"-{k}" for k in ("zero", "recompute") if value.get(k))
    return f"p{value['pipeline_stages']}d{value.get('data_parallel', 1)}m{value['microbatches']}-{value['schedule']}{flags}"


@pytest.mark.slow
@pytest.mark.parametrize("ranks,overrides", CASES, ids=case_id)
def test_the_run_equals_the_single_process(ranks, overrides, corpus, references, tmp_path):
    out = tmp_path / "run"
    proc = mpirun(ranks, {**BASE, "data": corpus, "out": str(out), **overrides}, tmp_path,
                  "--trace", str(tmp_path / "trace.json"))
    assert_same_run(proc, *references[overrides.get("tie_embeddings", True)], out)
    manifest = ckpt.read_state(out)["pipeline"]
    chunks = 2 if overrides["schedule"] == "interleaved" else 1
    assert manifest["virtual_stages"] == chunks
    assert len(manifest["partition"]) == overrides["pipeline_stages"] * chunks
    trace = json.loads((tmp_path / "trace.json").read_text())
    names = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
    if overrides["schedule"] == "zb-h1":   # the split backward really runs as two actions
        assert {"backward_input 0", "backward_weight 0"} <= names and "backward 0" not in names
    if chunks == 2:                       # units are (microbatch, chunk)
        assert {"forward 0.0", "forward 0.1", "backward 1.1"} <= names
    schedule = schedule_for(overrides["schedule"], chunks)
    for rank in range(ranks):             # each rank ran its schedule's actions in the schedule's order
        stage = rank % overrides["pipeline_stages"]
        expected = [f"{a.kind} {a.microbatch}" + (f".{a.chunk}" if chunks > 1 else "")
                    for a in schedule(overrides["pipeline_stages"], overrides["microbatches"], stage)
                    if a.microbatch is not None]
        ran = [e["name"] for e in sorted(trace["traceEvents"], key=lambda e: e.get("ts", 0))
               if e["ph"] == "X" and e["pid"] == rank and e["args"]["step"] == BASE["max_iters"]
               and e["name"].split()[0] not in ("idle", "allreduce", "optimizer")]
        assert ran == expected, rank


@pytest.mark.slow
def test_zero_checkpoints_resume_unsharded_and_the_other_way_round(corpus, references, tmp_path):
    reference, reference_ckpt = references[True]
    zero_run = tmp_path / "zero"
    proc = mpirun(4, {**BASE, "data": corpus, "out": str(zero_run), "pipeline_stages": 2, "data_parallel": 2,
                      "microbatches": 3, "zero": 1}, tmp_path / "w1", "--stop-at", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.result["train_losses"] == pytest.approx(reference.train_losses[:2], rel=1e-12)

    # ZeRO (2 stages x 2 replicas) -> one process
    single = tmp_path / "single"
    shutil.copytree(zero_run, single, symlinks=True)
    resumed = train(RunSettings.from_dict({**BASE, "data": corpus, "out": str(single), "resume": True}))
    assert resumed.train_losses == pytest.approx(reference.train_losses[2:], rel=1e-12)

    # ZeRO -> 2 stages unsharded, zero-bubble with recomputed blocks
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(zero_run), "pipeline_stages": 2, "microbatches": 4,
                      "schedule": "zb-h1", "recompute": True, "resume": True}, tmp_path / "w2")
    assert_same_run(proc, finished_after(reference, 2), reference_ckpt, zero_run)

    # one process -> ZeRO (2 replicas)
    source = tmp_path / "from-single"
    single_process(corpus, source, stop_at=2)
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(source), "pipeline_stages": 1, "data_parallel": 2,
                      "microbatches": 2, "zero": 1, "resume": True}, tmp_path / "w3")
    assert_same_run(proc, finished_after(reference, 2), reference_ckpt, source)


@pytest.mark.slow
def test_interleaved_checkpoints_resume_in_contiguous_stages_and_the_other_way_round(corpus, references, tmp_path):
    reference, reference_ckpt = references[True]
    run = tmp_path / "interleaved"
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(run), "pipeline_stages": 2, "microbatches": 4,
                      "schedule": "interleaved"}, tmp_path / "w1", "--stop-at", "2")
    assert proc.returncode == 0, proc.stderr
    assert ckpt.read_state(run)["pipeline"]["partition"] == [[0, 1], [1, 2], [2, 3], [3, 4]]
    proc = mpirun(4, {**BASE, "data": corpus, "out": str(run), "pipeline_stages": 4, "microbatches": 4,
                      "resume": True}, tmp_path / "w2")
    assert_same_run(proc, finished_after(reference, 2), reference_ckpt, run)

    source = tmp_path / "from-single"
    single_process(corpus, source, stop_at=2)
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(source), "pipeline_stages": 2, "microbatches": 2,
                      "schedule": "interleaved", "resume": True}, tmp_path / "w3")
    assert_same_run(proc, finished_after(reference, 2), reference_ckpt, source)


@pytest.mark.parametrize("overrides,message", [
    (dict(pipeline_stages=2, microbatches=3, schedule="interleaved"),
     "--schedule interleaved needs --microbatches (3) to be a multiple of --pipeline-stages (2)"),
    (dict(pipeline_stages=2, microbatches=4, schedule="interleaved", virtual_stages=3),
     "--pipeline-stages 2 x --virtual-stages 3 needs 6 groups of blocks, but the model has 4 (--n-layer)"),
])
def test_bad_layouts_give_one_line_and_status_2(overrides, message, corpus, tmp_path):
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(tmp_path / "run"), **overrides}, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("tinyllm train: error: ") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
