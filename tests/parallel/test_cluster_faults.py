"""No hang, no orphan, no half-written checkpoint across nodes: faults on a cluster in a box, both MPIs.

- A cable pulled mid-run (node1's port on the switch goes down; packets just stop): every rank on
  every node is gone within --comm-timeout + 30 s, the launcher exits non-zero, a rank says in one
  line which operation it waited in, for which peer on which host, at which step; nothing is left
  on any node, and the last checkpoint resumes (in one process) to the uninterrupted run's numbers.
- The launcher killed with SIGKILL mid-run: no rank (nor anything else) is left on any node 30 s
  later. (Open MPI leaves the ranks on the launcher's node running without the parent watch.)
- A run directory that is not shared (node1 has its own empty directory mounted at --out) is
  refused in one line naming the rank and host, status 2, before the first step.
"""
import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from .cluster_runs import box, finish, launch, rank_processes, wait_until
from .mpi_runs import BASE, needs_mpi, single_process

from tinyllm import checkpoint as ckpt
from tinyllm.settings import RunSettings
from tinyllm.train import train

pytestmark = [*needs_mpi, pytest.mark.slow]
MPIS = ["mpich", "openmpi"]
COMM_TIMEOUT_S = 6
IDLE_JOB = Path(__file__).with_name("idle_job.py")
LONG = dict(max_iters=400, lr_schedule="constant", eval_interval=2, eval_iters=1, log_interval=1)


def runner_argv(config: dict, workdir: Path) -> list:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return ["PYTHON", "-m", "parallel.runner", str(path)]


def checkpoint_step(out: Path) -> int:
    try:
        return int(ckpt.read_state(out)["step"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("mpi_name", MPIS)
def test_a_pulled_cable_ends_every_rank_with_one_line_and_the_checkpoint_resumes(mpi_name, corpus, tmp_path):
    out = tmp_path / "run"
    config = {**BASE, **LONG, "data": corpus, "out": str(out), "pipeline_stages": 2, "microbatches": 2,
              "comm_timeout": COMM_TIMEOUT_S}
    with box(nodes=2, mpi_name=mpi_name) as cluster:
        proc = launch(cluster, 2, runner_argv(config, tmp_path))
        assert wait_until(lambda: checkpoint_step(out) >= 2 or proc.poll() is not None, 120) is not None
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        cluster.link("node1", up=False)
        pulled = time.monotonic()
        code, _, stderr = finish(proc, timeout=COMM_TIMEOUT_S + 60)
        ended = time.monotonic() - pulled
        gone = wait_until(lambda: not rank_processes(cluster), COMM_TIMEOUT_S + 30 - ended)
        left = rank_processes(cluster)
    assert code != 0 and ended < COMM_TIMEOUT_S + 30, (code, ended, stderr[-3000:])
    assert gone is not None, f"left on the nodes: {left}"
    lines = re.findall(r"tinyllm: rank \d on node\d gave up at step \d+ after waiting \d+ s "
                       rf"\(--comm-timeout {COMM_TIMEOUT_S}\) in \w+ .*(?:from|to|over) .*rank \d on node\d.*", stderr)
    assert lines, stderr[-3000:]
    assert "done:" not in stderr

    # the last checkpoint is whole: one process resumes it to the uninterrupted run's numbers
    step = checkpoint_step(out)
    assert step >= 2
    resumed = train(RunSettings.from_dict({**config, "max_iters": step + 2, "pipeline_stages": 1,
                                           "microbatches": None, "resume": True}))
    reference, reference_ckpt = single_process(corpus, tmp_path / "straight", **{**LONG, "max_iters": step + 2})
    np.testing.assert_allclose(resumed.train_losses, reference.train_losses[step:], rtol=1e-12)
    merged = ckpt.load_checkpoint(out)
    for name, expected in reference_ckpt.model_state.items():
        np.testing.assert_allclose(merged.model_state[name], expected, rtol=0, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("job", ["training", "idle"])
@pytest.mark.parametrize("mpi_name", MPIS)
def test_a_killed_launcher_leaves_no_rank_behind(mpi_name, job, corpus, tmp_path):
    """3 ranks, 2 on the launcher's node and 1 on node1: a pipeline in training (its next message fails
    when a peer goes), and ranks waiting outside MPI (idle_job.py), which only the parent watch ends."""
    out = tmp_path / "run"
    config = {**BASE, **LONG, "data": corpus, "out": str(out), "pipeline_stages": 3, "microbatches": 3}
    argv = runner_argv(config, tmp_path) if job == "training" else ["PYTHON", str(IDLE_JOB), "600"]
    with box(nodes=2, slots=(2, 1), mpi_name=mpi_name) as cluster:
        proc = launch(cluster, 3, argv)
        metrics = out / "metrics.jsonl"
        started = (lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2) if job == "training" else \
            (lambda: sum(len(cmds) for cmds in rank_processes(cluster).values()) >= 6)
        assert wait_until(lambda: started() or proc.poll() is not None, 120) is not None
        time.sleep(0.5 if job == "training" else 3.0)       # idle: past MPI's start-up, into the sleep
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        running = rank_processes(cluster)
        placed = {host: sum(bool(re.match(r"\S*python\S* (-m parallel.runner|\S*idle_job.py)", cmd)) for cmd in cmds)
                  for host, cmds in running.items()}
        assert placed == {"node0": 2, "node1": 1}, running
        assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].endswith((b"mpiexec", b"mpirun",
                                                                                        b"prterun"))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        gone = wait_until(lambda: not rank_processes(cluster), 30)
        left = rank_processes(cluster)
    assert gone is not None, f"left on the nodes 30 s after the launcher was killed: {left}"


@pytest.mark.parametrize("mpi_name", MPIS)
def test_a_run_directory_that_is_not_shared_is_refused_before_the_first_step(mpi_name, corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = {**BASE, "data": corpus, "out": str(out), "pipeline_stages": 2, "microbatches": 2}
    with box(nodes=2, mpi_name=mpi_name, private_dirs={"node1": [out]}) as cluster:
        code, _, stderr = finish(launch(cluster, 2, runner_argv(config, tmp_path)), timeout=120)
    assert code == 2, stderr[-3000:]
    assert (f"--out {out} is not one directory for every rank: rank 1 on node1 cannot see the file rank 0 on "
            "node0 wrote there") in stderr
    assert stderr.count("is not one directory for every rank") == 1 and "Traceback" not in stderr
    assert not (out / "metrics.jsonl").exists() and not (out / "last").exists()
    assert not list(out.glob(".tinyllm-shared-*"))           # the probe is removed again
