"""Under mpiexec, a user's or the machine's error is one line and exit status 2, as in one process.

`tinyllm train` under `mpiexec -n N` resolves its flags on every rank; the ranks agree on the
first error (parallel.runner.agreed_settings), so a bad flag is printed once, not once per
rank, and it is found before any data is tokenized. A path that would only fail at the end of
the run (--trace naming a directory) is refused before the first step. A run that diverges,
and a disk that fills during the collective save, end every rank with one line naming the
cause, status 2, and leave the last published checkpoint whole (tinyllm.errors.describe is the
runner's rule too).
"""
import os
import subprocess
import sys

import pytest

from .mpi_runs import BASE, MPIEXEC, REPO, TIMEOUT_S, mpirun, needs_mpi
from tinyllm import checkpoint as ckpt

pytestmark = needs_mpi


def tinyllm_under_mpiexec(n: int, *argv: str, cwd=REPO):
    """`mpiexec -n n python -m tinyllm.cli ARGV`: (exit status, stderr)."""
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "tinyllm.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    return proc.returncode, proc.stderr


def flags(**settings) -> list:
    return [part for name, value in settings.items() for part in (f"--{name.replace('_', '-')}", str(value))]


@pytest.mark.parametrize("bad, message", [
    (dict(n_kv_head=3), "--n-kv-head 3 --n-embd 16 --block-size 8 --dropout 0.0: --n-head 2 is not divisible by --n-kv-head 3"),
    (dict(lr=-1), "--lr -1.0: must be positive"),
    (dict(schedule="pipedream"), "--schedule 'pipedream': unknown schedule 'pipedream'"),
])
def test_a_bad_flag_is_one_line_from_all_ranks_before_any_data_is_read(bad, message, corpus, tmp_path):
    out = tmp_path / "run"
    settings = {**BASE, "n_head": 2, "data": corpus, "out": out, "pipeline_stages": 2, "microbatches": 2, **bad}
    code, err = tinyllm_under_mpiexec(2, "train", *flags(**settings))
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinyllm train: error: ") and message in lines[0], err
    assert not (out / "data").exists()   # refused before tokenizing


def test_a_trace_path_that_cannot_be_written_is_refused_before_the_first_step(corpus, tmp_path):
    out = tmp_path / "run"
    settings = {**BASE, "data": corpus, "out": out, "pipeline_stages": 2, "microbatches": 2}
    for trace, message in ((tmp_path, "is a directory; name a file"),
                           (tmp_path / "missing" / "trace.json", f"the directory {tmp_path / 'missing'} does not exist")):
        code, err = tinyllm_under_mpiexec(2, "train", *flags(**settings), "--trace", str(trace))
        assert code == 2, err
        assert err.count("tinyllm train: error: ") == 1 and f"--trace {trace}: {message}" in err, err
        assert not (out / "last").exists() and not (tmp_path / "missing").exists()


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "error" in line and "tinyllm" in line]


def test_a_diverging_pipeline_is_one_line_and_publishes_nothing_non_finite(corpus, tmp_path):
    out = tmp_path / "run"
    config = {**BASE, "data": corpus, "out": str(out), "pipeline_stages": 2, "microbatches": 2, "lr": 1e38,
              "warmup_iters": 0, "eval_interval": 1, "max_iters": 4}
    proc = mpirun(2, config, tmp_path / "w")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(error_lines(proc.stderr)) == 1, proc.stderr
    line = error_lines(proc.stderr)[0]
    assert "NaN or infinite" in line or "is nan" in line or "is inf" in line, line
    assert "Last good checkpoint:" in line and "--lr" in line, line
    if (out / "last").exists():                 # whatever was published is finite and loads
        assert ckpt.load_checkpoint(out).step >= 1


def test_a_disk_that_fills_during_the_collective_save_is_one_line_and_the_last_checkpoint_survives(
        corpus, tmp_path):
    out = tmp_path / "run"
    config = {**BASE, "data": corpus, "out": str(out), "pipeline_stages": 2, "microbatches": 2, "eval_interval": 2}
    proc = mpirun(2, config, tmp_path / "w", fail="1:4:ENOSPC:save")   # stage 1 finds the disk full at step 4
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(error_lines(proc.stderr)) == 1, proc.stderr
    line = error_lines(proc.stderr)[0]
    assert "No space left on device" in line and "the disk is full" in line and "--resume" in line, line
    assert ckpt.load_checkpoint(out).step == 2                       # the step-2 checkpoint is whole
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".staging")]
    resumed = mpirun(2, {**config, "resume": True}, tmp_path / "w2")   # and resumable
    assert resumed.returncode == 0, resumed.stderr
