"""A run directory is owned by one run at a time (tinyllm/runlock.py).

Two runs on one --out used to corrupt each other (interleaved metrics.jsonl, one run's
config.json beside the other's checkpoint, a staging file deleted under a writer). Now the
second run is refused in one line naming the holder's pid and host; a lock left by a dead
run is taken over; `mpiexec -n 2 tinyllm train` without pipeline flags is refused on every
rank; a pipeline's rank 0 holds the lock for all its ranks.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from .bounded import REPO, TINY
from tinyllm import runlock

MPIEXEC = shutil.which("mpiexec")


def start_train(corpus, out, *extra):
    """A `tinyllm train` subprocess (its own session, so the test can end it)."""
    command = [sys.executable, "-m", "tinyllm.cli", "train", "--data", str(corpus), "--out", str(out), *TINY, *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_for(condition, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def holder(out):
    path = out / runlock.LOCK_FILE
    text = path.read_text() if path.is_file() else ""
    return json.loads(text) if text.strip() else None


def finish(proc, timeout=120):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("a training subprocess did not end")


def test_a_second_run_on_a_busy_directory_is_refused_naming_the_holder(corpus, tmp_path, tinyllm, one_line_error):
    out = tmp_path / "run"
    first = start_train(corpus, out, "--max-iters", "100000", "--eval-interval", "100000")
    try:
        wait_for(lambda: (holder(out) or {}).get("pid") == first.pid, what="the first run to hold the lock")
        code, _, err = tinyllm("train", "--data", corpus, "--out", out, *TINY, "--max-iters", "5")
        one_line_error(code, err, "train", f"--out {out}: in use by another run (pid {first.pid} on host "
                       f"{socket.gethostname()}", "choose another --out")
        os.kill(first.pid, signal.SIGTERM)   # the holder stops, saves and releases the lock
        finish(first)
        assert first.returncode == 143
        assert holder(out) is None            # released: the file is emptied, no stale line
        step = json.loads((out / "last" / "state.json").read_text())["step"]
        code, _, err = tinyllm("train", "--out", out, "--resume", "--max-iters", step + 2, "--progress", "none",
                               "--sample-tokens", "0")
        assert code == 0, err
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)


def test_two_runs_started_together_one_runs_and_the_other_is_refused(corpus, tmp_path):
    out = tmp_path / "run"
    runs = [start_train(corpus, out, "--max-iters", "12", "--eval-interval", "4", "--log-interval", "1")
            for _ in range(2)]
    results = [(proc.returncode, err) for proc in runs for _, err in [finish(proc)]]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    # Usually the second run finds the lock held; when it starts so late that the first has finished,
    # it finds that run's checkpoint instead. Either way it is refused in one line, and nothing mixes.
    assert ("in use by another run (pid" in refused or "already holds a run" in refused) and \
        "Traceback" not in refused, refused
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len([s for s in steps if s]) == len({s for s in steps if s})   # not interleaved
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["max_iters"] == 12 and (out / "last").is_symlink()


def test_a_lock_left_by_a_killed_run_is_taken_over(corpus, tmp_path, tinyllm):
    out = tmp_path / "run"
    first = start_train(corpus, out, "--max-iters", "100000", "--eval-interval", "100000")
    wait_for(lambda: (holder(out) or {}).get("pid") == first.pid, what="the first run to hold the lock")
    os.killpg(first.pid, signal.SIGKILL)      # no cleanup: its line stays in the file, the kernel drops the flock
    finish(first)
    assert holder(out)["pid"] == first.pid
    code, _, err = tinyllm("train", "--data", corpus, "--out", out, *TINY, "--max-iters", "3")
    assert code == 0, err
    assert f"taking over the lock left by pid {first.pid}" in err


def test_the_lock_is_reentrant_in_one_process_and_released_with_its_last_hold(tmp_path, tinyllm, one_line_error):
    out = tmp_path / "run"
    first = runlock.acquire(out)
    second = runlock.acquire(out)      # the same process: another hold of the same lock
    probe = ["-c", "import sys; from tinyllm import runlock; runlock.acquire(sys.argv[1])", str(out)]
    busy = subprocess.run([sys.executable, *probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert busy.returncode != 0 and f"in use by another run (pid {os.getpid()}" in busy.stderr
    first.release()
    assert subprocess.run([sys.executable, *probe], cwd=REPO, capture_output=True, timeout=60).returncode != 0
    second.release()
    assert holder(out) is None
    assert subprocess.run([sys.executable, *probe], cwd=REPO, capture_output=True, timeout=60).returncode == 0


def test_a_forked_worker_neither_keeps_nor_drops_the_lock(tmp_path):
    """Worker processes (tinyllm/processes.py) are forked while the run holds its lock: the
    lock must go when the run releases it, though a worker still lives, and a worker must
    not release or empty it while the run holds it."""
    out = tmp_path / "run"
    lock = runlock.acquire(out)
    probe = ["-c", "import sys; from tinyllm import runlock; runlock.acquire(sys.argv[1])", str(out)]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:                              # a worker: lives until the test closes the pipe
        os.close(write_end)
        try:
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        busy = subprocess.run([sys.executable, *probe], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert busy.returncode != 0 and f"(pid {os.getpid()}" in busy.stderr     # still ours, line intact
        lock.release()
        free = subprocess.run([sys.executable, *probe], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert free.returncode == 0, free.stderr                                   # the worker holds nothing
    finally:
        os.close(write_end)
        os.waitpid(child, 0)


@pytest.mark.parametrize("kind", ["file", "under a file"])
def test_an_out_that_cannot_be_a_directory_is_one_line(kind, tmp_path, corpus, tinyllm, one_line_error):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    out = blocker if kind == "file" else blocker / "run"
    code, _, err = tinyllm("train", "--data", corpus, "--out", out, *TINY, "--max-iters", "2")
    one_line_error(code, err, "train", f"--out {out}:", "not a directory", "choose another --out")


# root writes into read-only directories (CAP_DAC_OVERRIDE): as root, run without that capability
WITHOUT_OVERRIDE = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps", "-all"]
                    if os.geteuid() == 0 else [])


@pytest.mark.skipif(WITHOUT_OVERRIDE and shutil.which("setpriv") is None,
                    reason="running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
def test_a_read_only_out_is_one_line(tmp_path, corpus, tinyllm, one_line_error):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = tinyllm("train", "--data", corpus, "--out", out, *TINY, "--max-iters", "2",
                               wrapper=WITHOUT_OVERRIDE)
        one_line_error(code, err, "train", f"--out {out}: is not writable")
    finally:
        out.chmod(0o755)


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install 'tinyllm[mpi]')")
def test_mpiexec_of_a_one_process_run_is_refused_on_every_rank(corpus, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "tinyllm.cli", "train", "--data", str(corpus),
                           "--out", str(out), *TINY, "--max-iters", "2"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "mpiexec started 2 copies of `tinyllm train`" in errors[0] and "--pipeline-stages" in errors[0]
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.mpi
@pytest.mark.skipif(MPIEXEC is None, reason="needs mpiexec (pip install 'tinyllm[mpi]')")
def test_a_pipeline_on_a_busy_directory_is_refused_on_every_rank(corpus, tmp_path):
    out = tmp_path / "run"
    hold = runlock.acquire(out)
    try:
        proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "tinyllm.cli", "train", "--data", str(corpus),
                               "--out", str(out), *TINY, "--n-layer", "2", "--max-iters", "2", "--pipeline-stages", "2"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        hold.release()
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"in use by another run (pid {os.getpid()}" in errors[0]
