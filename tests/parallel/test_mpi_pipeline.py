"""The pipelined run reproduces the single-process run (float64, ~1e-12), under real mpiexec.

Every case launches `mpiexec -n N python -m parallel.runner CONFIG.json` as a subprocess
with a timeout, then compares its per-step losses, evaluation losses and final weights
(merged from the stage shards) with `tinyllm.train.train` run in this process on the same
config. One run checks several things at once to keep the whole file near half a minute.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from .mpi_runs import BASE, REPO, assert_same_run, finished_after, mpirun, needs_mpi, single_process

from tinyllm import checkpoint as ckpt
from tinyllm.settings import RunSettings
from tinyllm.train import train

pytestmark = needs_mpi
OLD = REPO / "tests" / "old_checkpoints"   # made by the code before the Trainer restructuring


CASES = [  # (ranks, overrides): stage counts 1..n_layer, both schedules, data parallel 2, partitions
    (2, dict(pipeline_stages=2, microbatches=4, schedule="1f1b")),
    (2, dict(pipeline_stages=2, microbatches=3, schedule="gpipe", partition="params")),
    (3, dict(pipeline_stages=3, microbatches=6, schedule="1f1b", partition="time", tie_embeddings=False)),
    (4, dict(pipeline_stages=4, microbatches=2, schedule="gpipe")),
    (4, dict(pipeline_stages=2, data_parallel=2, microbatches=3, schedule="1f1b")),
    (2, dict(pipeline_stages=1, data_parallel=2, microbatches=2, schedule="gpipe")),
]


@pytest.mark.parametrize("ranks,overrides", CASES, ids=lambda v: v if isinstance(v, int) else
                         f"p{v['pipeline_stages']}d{v.get('data_parallel', 1)}m{v['microbatches']}-{v['schedule']}")
def test_pipelined_run_equals_single_process(ranks, overrides, corpus, references, tmp_path):
    out = tmp_path / "run"
    config = {**BASE, "data": corpus, "out": str(out), **overrides}
    proc = mpirun(ranks, config, tmp_path)
    reference_result, reference_ckpt = references[overrides.get("tie_embeddings", True)]
    assert_same_run(proc, reference_result, reference_ckpt, out)
    manifest = ckpt.read_state(out)["pipeline"]
    assert manifest["n_stages"] == overrides["pipeline_stages"]
    stored = [name for shard in manifest["shards"] for name in shard["parameters"]]
    assert len(stored) == len(set(stored))  # a tied embedding is stored once


def test_trace_and_measured_bubble(corpus, tmp_path):
    config = {**BASE, "data": corpus, "out": str(tmp_path / "run"), "pipeline_stages": 2, "microbatches": 4,
              "schedule": "gpipe", "max_iters": 3}
    proc = mpirun(2, config, tmp_path, "--trace", str(tmp_path / "trace.json"))
    assert proc.returncode == 0, proc.stderr
    assert "theoretical (p-1)/(m+p-1) = 0.200" in proc.stderr
    trace = json.loads((tmp_path / "trace.json").read_text())
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    for rank in (0, 1):
        names = {e["name"].split()[0] for e in complete if e["pid"] == rank}
        assert {"forward", "backward", "allreduce"} <= names
        assert ("send_act" if rank == 0 else "recv_act") in names
        assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in complete if e["pid"] == rank)
    assert 0.0 <= trace["metadata"]["measured_bubble"] < 1.0


def test_failure_on_one_stage_ends_every_rank(corpus, tmp_path):
    config = {**BASE, "data": corpus, "out": str(tmp_path / "run"), "pipeline_stages": 3, "microbatches": 3}
    proc = mpirun(3, config, tmp_path, fail="1:2")
    assert proc.returncode != 0
    assert "[rank 1 of 3] failed: injected failure on stage 1 at step 2" in proc.stderr
    assert proc.elapsed < 60


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(corpus, references, tmp_path):
    """SIGTERM to stage 1 alone during step 2: every rank stops after step 2 as SIGTERM, saves,
    exits 143 (as one process would); resuming finishes with the uninterrupted run's numbers."""
    reference, reference_ckpt = references[True]
    out = tmp_path / "run"
    config = {**BASE, "data": corpus, "out": str(out), "pipeline_stages": 2, "microbatches": 3}
    proc = mpirun(2, config, tmp_path / "w1", fail="1:2:SIGTERM")
    assert proc.returncode == 143, proc.stderr
    assert "interrupted by SIGTERM at step 2: checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    stopped = json.loads((tmp_path / "w1" / "result.json").read_text())
    assert (stopped["status"], stopped["step"]) == ("interrupted", 2)
    np.testing.assert_allclose(stopped["train_losses"], reference.train_losses[:2], rtol=1e-12)
    resumed = mpirun(2, {**config, "resume": True}, tmp_path / "w2")
    assert_same_run(resumed, finished_after(reference, 2), reference_ckpt, out)


def test_checkpoints_move_between_layouts_and_a_single_process(corpus, tmp_path):
    """Single 4 steps == pipeline 2 steps -> {same layout, single process, other layout} 2 more steps."""
    reference, reference_ckpt = single_process(corpus, tmp_path / "straight")
    first = tmp_path / "p2"
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(first), "pipeline_stages": 2, "microbatches": 2},
                  tmp_path / "w1", "--stop-at", "2")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(proc.result["train_losses"], reference.train_losses[:2], rtol=1e-12)

    # pipelined -> same layout
    same = tmp_path / "same"
    shutil.copytree(first, same, symlinks=True)
    proc = mpirun(2, {**BASE, "data": corpus, "out": str(same), "pipeline_stages": 2, "microbatches": 4,
                      "resume": True}, tmp_path / "w2")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(proc.result["train_losses"], reference.train_losses[2:], rtol=1e-12)

    # pipelined -> one process
    single = tmp_path / "single"
    shutil.copytree(first, single, symlinks=True)
    resumed = train(RunSettings.from_dict({**BASE, "data": corpus, "out": str(single), "resume": True}))
    np.testing.assert_allclose(resumed.train_losses, reference.train_losses[2:], rtol=1e-12)

    # one process -> 4 stages (from the single-process checkpoint written at step 2 by --stop-at)
    source = tmp_path / "single-first"
    train(RunSettings.from_dict({**BASE, "data": corpus, "out": str(source)}), stop_at=2)
    proc = mpirun(4, {**BASE, "data": corpus, "out": str(source), "pipeline_stages": 4, "microbatches": 3,
                      "resume": True}, tmp_path / "w3")
    assert_same_run(proc, finished_after(reference, 2), reference_ckpt, source)


def test_pipelined_dropout_draws_one_process_masks_and_resumes_exactly(corpus, tmp_path):
    """Dropout 0.1: masks keyed by the step and each row's place in the global batch (tinyllm/nn.py,
    DropoutMasks), so 2 stages and 2 stages x 2 replicas reproduce one process to 1e-12, and a
    pipelined run stopped at step 2 and resumed finishes as the uninterrupted one."""
    reference, reference_ckpt = single_process(corpus, tmp_path / "single", dropout=0.1)
    without, _ = single_process(corpus, tmp_path / "no-dropout")
    assert abs(reference.train_losses[-1] - without.train_losses[-1]) > 1e-6   # the masks do something
    config = {**BASE, "dropout": 0.1, "data": corpus}
    grid = tmp_path / "p2d2"
    proc = mpirun(4, {**config, "out": str(grid), "pipeline_stages": 2, "data_parallel": 2, "microbatches": 3},
                  tmp_path / "w0")
    assert_same_run(proc, reference, reference_ckpt, grid)
    out = tmp_path / "p2"
    proc = mpirun(2, {**config, "out": str(out), "pipeline_stages": 2, "microbatches": 4}, tmp_path / "w1",
                  "--stop-at", "2")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(proc.result["train_losses"], reference.train_losses[:2], rtol=1e-12)
    assert ckpt.read_state(out)["rng"]["dropout"] == "keyed"
    resumed = mpirun(2, {**config, "out": str(out), "pipeline_stages": 2, "microbatches": 4, "resume": True},
                     tmp_path / "w2")
    assert_same_run(resumed, type(reference)(status="finished", step=4, train_losses=reference.train_losses[2:],
                                             last_eval=reference.last_eval), reference_ckpt, out)


def test_bad_flags_give_one_line_and_status_2(corpus, tmp_path):
    # found from the config before any message: every rank exits 2, no Abort (which could drop the line)
    config = {**BASE, "data": corpus, "out": str(tmp_path / "run"), "pipeline_stages": 2, "microbatches": 5}
    proc = mpirun(2, config, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("tinyllm train: error: ") == 1, proc.stderr   # rank 0's line, once
    assert "error: --batch-size 12 does not split into --data-parallel 1 x --microbatches 5" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = mpirun(3, {**config, "microbatches": 4}, tmp_path / "wrong-n")  # 2 stages x 1 replica on 3 ranks
    assert proc.returncode == 2
    assert proc.stderr.count("error: ") == 1, proc.stderr
    assert "needs 2 MPI ranks, but mpiexec started 3: run `mpiexec -n 2 ...`" in proc.stderr


def test_an_old_pipeline_checkpoint_resumes_pipelined_to_the_old_codes_numbers(tmp_path):
    """A checkpoint sharded by the code before the Trainer(model, task, strategy) restructuring
    continues on 2 stages to exactly the losses that old code got (expected.json, written by it;
    tests/old_checkpoints/make_old_checkpoints.py)."""
    expected = json.loads((OLD / "expected.json").read_text())["pipeline"]["pipelined"]
    out = tmp_path / "run"
    shutil.copytree(OLD / "pipeline", out / "checkpoints" / "step-old")
    os.symlink(Path("checkpoints") / "step-old", out / "last")
    config = {**ckpt.read_state(out)["train_config"], "data": str(OLD / "corpus.txt"), "out": str(out), "resume": True}
    proc = mpirun(2, config, tmp_path / "w")
    assert proc.returncode == 0, proc.stderr
    from ..old_checkpoints.platform_id import platform_fingerprint
    if platform_fingerprint() == json.loads((OLD / "expected.json").read_text())["platform"]:
        assert proc.result["train_losses"] == expected["train_losses"]     # bit for bit
        assert proc.result["last_eval"] == expected["last_eval"]
    else:  # another BLAS kernel sums in another order
        np.testing.assert_allclose(proc.result["train_losses"], expected["train_losses"], rtol=1e-12)
        for split in ("train", "val"):
            assert proc.result["last_eval"][split] == pytest.approx(expected["last_eval"][split], rel=1e-12)
