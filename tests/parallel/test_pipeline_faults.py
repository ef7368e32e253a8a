"""A signal that reaches one pipeline rank, at any point of a step, stops every rank after one agreed step.

SIGTERM sent to a single rank used to deadlock the run when it landed after
the step's stop agreement (one rank went into the collective save alone). The stop is now
agreed once per step by an all-reduce that every rank reaches, after the step's collectives and
before its evaluation and save, so a signal that lands later is agreed at the next step.

Each case runs `mpiexec -n 2` (or 4: 2 stages x 2 replicas) of the runner with one failure
injected (tests/parallel/failing_runner.py `--fail WHO:STEP:SIGTERM:POINT`, a wrapper around
the production strategy), which makes one rank send itself SIGTERM at a chosen point: during the step's schedule ("gradients"), before the norm's all-reduce ("norm"),
just after the agreement ("agreed"), during the evaluation ("eval"), before and after the
collective save ("save", "saved"), and in the evaluation before the first step (step 0).
Every rank must exit 143 within 30 s of the signal, the checkpoint must hold the step the
ranks agreed on, and `--resume` must finish with the uninterrupted run's losses and weights,
bit for bit (float64, dropout 0). A hang fails the case (the process group is killed on the
timeout) instead of hanging the test run.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinyllm import checkpoint as ckpt

MPIEXEC = shutil.which("mpiexec")
pytestmark = [pytest.mark.mpi, pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs mpiexec and mpi4py (pip install 'tinyllm[mpi]')")]

REPO = Path(__file__).resolve().parents[2]
HANG_TIMEOUT_S = 150      # a run that has not ended by then is hung: its process group is killed
STOP_WITHIN_S = 30        # every rank must be gone this long after the signal
CONFIG = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.0, batch_size=4, max_iters=6,
              eval_interval=2, eval_iters=1, lr=1e-2, warmup_iters=1, dtype="float64", progress="none", seed=5,
              pipeline_stages=2, microbatches=2, schedule="1f1b")
FAILING_RUNNER = Path(__file__).with_name("failing_runner.py")
# rank exits and their times, printed by the wrapper every rank runs in
WRAPPER = 'python "$@"; s=$?; echo "rank ${PMI_RANK} exit $s at $(date +%s.%N)" >&2; exit $s'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "corpus.txt"
    rng = np.random.default_rng(1)
    path.write_text("".join(rng.choice(np.array(list("abcdefghij \n")), size=2000)))
    return str(path)


def launch(ranks: int, config: dict, workdir: Path, fail: str | None = None):
    """mpiexec -n ranks the runner on `config` (with `fail`: failing_runner.py --fail FAIL); (returncode,
    stderr, result or None, {rank: (exit, time)})."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, result_path = workdir / "config.json", workdir / "result.json"
    config_path.write_text(json.dumps(config))
    runner = [str(FAILING_RUNNER), "--fail", fail] if fail else ["-m", "parallel.runner"]
    command = [MPIEXEC, "-n", str(ranks), "sh", "-c", WRAPPER.replace("python", sys.executable), "runner",
               *runner, str(config_path), "--result", str(result_path)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    try:
        _, stderr = proc.communicate(timeout=HANG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # mpiexec and every rank: a hang must not outlive the test
        _, stderr = proc.communicate()
        pytest.fail(f"the run hung (killed after {HANG_TIMEOUT_S} s):\n{stderr[-3000:]}")
    exits = {int(r): (int(s), float(t)) for r, s, t in re.findall(r"rank (\d+) exit (\d+) at ([\d.]+)", stderr)}
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    return proc.returncode, stderr, result, exits


def layout(ranks: int) -> dict:
    return {} if ranks == 2 else {"data_parallel": 2}   # 4 ranks: 2 stages x 2 replicas


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """reference(ranks): the uninterrupted pipelined run of that layout, its losses and final checkpoint."""
    runs = {}

    def run(ranks: int):
        if ranks not in runs:
            root = tmp_path_factory.mktemp(f"reference{ranks}")
            code, stderr, result, _ = launch(ranks, {**CONFIG, **layout(ranks), "data": corpus,
                                                     "out": str(root / "run")}, root)
            assert code == 0, stderr
            runs[ranks] = result, ckpt.load_checkpoint(root / "run")
        return runs[ranks]
    return run


# (ranks, who, step, point, the step every rank stops after)
CASES = [
    (2, "r1", 3, "gradients", 3),   # during the schedule: agreed at the end of this step
    (2, "r0", 3, "norm", 3),
    (2, "r1", 2, "agreed", 3),      # just after the agreement: the next step's agreement
    (2, "r1", 3, "agreed", 4),      # the same on a step without evaluation
    (2, "r1", 2, "eval", 3),        # during the evaluation
    (2, "r0", 2, "save", 3),        # rank 0 publishes the checkpoint: before its collective save
    (2, "r1", 2, "save", 3),
    (2, "r1", 2, "saved", 3),       # between the save and the next step
    (2, "r1", 0, "eval", 1),        # the evaluation before the first step
    (4, "r3", 2, "save", 3),        # 2 stages x 2 replicas: the second replica's last stage alone
]


@pytest.mark.slow
@pytest.mark.parametrize("ranks,who,step,point,stop", CASES, ids=lambda v: str(v))
def test_sigterm_to_one_rank_at_any_point_stops_every_rank_and_resumes_exactly(
        ranks, who, step, point, stop, corpus, reference, tmp_path):
    reference_result, reference_ckpt = reference(ranks)
    out = tmp_path / "run"
    config = {**CONFIG, **layout(ranks), "data": corpus, "out": str(out)}
    code, stderr, stopped, exits = launch(ranks, config, tmp_path / "stop", fail=f"{who}:{step}:SIGTERM:{point}")
    sent = re.search(r"sends itself SIGTERM at step \d+ \(\w+\) at ([\d.]+)", stderr)
    assert sent, stderr
    assert sorted(exits) == list(range(ranks)), stderr
    for rank, (status, ended) in exits.items():
        assert status == 143, f"rank {rank} exited {status}:\n{stderr}"
        assert ended - float(sent.group(1)) < STOP_WITHIN_S, f"rank {rank} took {ended - float(sent.group(1)):.1f} s"
    assert code == 143 and "Traceback" not in stderr, stderr
    assert f"interrupted by SIGTERM at step {stop}" in stderr, stderr
    assert (stopped["status"], stopped["step"]) == ("interrupted", stop)
    assert stopped["train_losses"] == reference_result["train_losses"][:stop]
    assert ckpt.read_state(out)["step"] == stop

    code, stderr, resumed, _ = launch(ranks, {**config, "resume": True}, tmp_path / "resume")
    assert code == 0, stderr
    assert resumed["train_losses"] == reference_result["train_losses"][stop:]     # bit for bit
    assert resumed["last_eval"] == reference_result["last_eval"]
    final = ckpt.load_checkpoint(out)
    assert final.step == CONFIG["max_iters"]
    for name, expected in reference_ckpt.model_state.items():
        assert np.array_equal(final.model_state[name], expected), name
    for name, expected in reference_ckpt.optimizer_state.items():
        assert np.array_equal(final.optimizer_state[name], expected), name


@pytest.mark.slow
def test_sigterm_to_mpiexec_stops_every_rank_with_a_checkpoint(corpus, tmp_path):
    """The issue's report: SIGTERM to mpiexec did not end the ranks (only SIGKILL did). mpiexec
    forwards it to every rank; they agree on the stop, save, exit 143 (mpiexec too) and resume."""
    out = tmp_path / "run"
    config = {**CONFIG, "data": corpus, "out": str(out), "max_iters": 100000, "eval_interval": 100000}
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "parallel.runner", str(config_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + HANG_TIMEOUT_S
        while not (out / "metrics.jsonl").is_file() or len((out / "metrics.jsonl").read_text().splitlines()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)      # to mpiexec alone
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=HANG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("mpiexec and its ranks did not end after SIGTERM")
    assert time.monotonic() - sent < STOP_WITHIN_S
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    stop = int(re.search(r"interrupted by SIGTERM at step (\d+)", stderr).group(1))
    assert ckpt.read_state(out)["step"] == stop
    code, stderr, resumed, _ = launch(2, {**config, "max_iters": stop + 2, "resume": True}, tmp_path / "resume")
    assert code == 0 and resumed["step"] == stop + 2, stderr
