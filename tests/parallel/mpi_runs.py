"""What the mpiexec tests share: the tiny float64 run, launching `python -m parallel.runner`, comparing runs.

    proc = mpirun(2, {**BASE, "data": corpus, "out": str(out), "pipeline_stages": 2}, workdir)
    assert_same_run(proc, reference_result, reference_checkpoint, out)

`corpus` and `references` (the single-process runs, tied and untied head) are fixtures in
conftest.py, shared by every test file here.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinyllm import checkpoint as ckpt
from tinyllm.settings import RunSettings
from tinyllm.train import train

MPIEXEC = shutil.which("mpiexec")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi = [pytest.mark.mpi, pytest.mark.skipif(
    MPIEXEC is None or not HAVE_MPI4PY,
    reason="needs mpiexec and mpi4py (pip install 'tinyllm[mpi]')")]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
BASE = dict(n_layer=4, n_head=2, n_embd=16, block_size=8, dropout=0.0, batch_size=12, max_iters=4,
            eval_interval=4, eval_iters=2, lr=1e-2, warmup_iters=1, dtype="float64", progress="none", seed=3)


def single_process(corpus, out, stop_at=None, **overrides):
    """(RunResult, its checkpoint) of `tinyllm.train.train` in this process."""
    config = RunSettings.from_dict({**BASE, "data": corpus, "out": str(out), **overrides})
    result = train(config, stop_at=stop_at)
    return result, ckpt.load_checkpoint(out)


FAILING_RUNNER = Path(__file__).with_name("failing_runner.py")


def mpirun(n, config: dict, workdir: Path, *args, env=None, fail: str | None = None, script: Path | None = None):
    """`mpiexec -n n python -m parallel.runner CONFIG.json --result ...`; .result holds rank 0's losses.
    fail: the runner with that failure injected (failing_runner.py --fail FAIL); script: a test's own
    launcher that takes the runner's arguments (e.g. one that registers a schedule first)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"config-{len(list(workdir.glob('config-*')))}.json"
    config_path.write_text(json.dumps(config))
    result_path = workdir / "result.json"
    runner = ([str(FAILING_RUNNER), "--fail", fail] if fail else [str(script)] if script else ["-m", "parallel.runner"])
    command = [MPIEXEC, "-n", str(n), sys.executable, *runner, str(config_path), "--result", str(result_path), *args]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})})
    proc.elapsed = time.monotonic() - started
    proc.result = json.loads(result_path.read_text()) if proc.returncode == 0 else None
    return proc


def assert_same_run(pipelined, reference_result, reference_ckpt, out):
    """Equal per-step and evaluation losses (rtol 1e-12), weights (atol 1e-11) and optimizer state."""
    assert pipelined.returncode == 0, pipelined.stderr
    np.testing.assert_allclose(pipelined.result["train_losses"], reference_result.train_losses, rtol=1e-12, atol=0)
    for split in ("train", "val"):
        assert pipelined.result["last_eval"][split] == pytest.approx(reference_result.last_eval[split], rel=1e-12)
    merged = ckpt.load_checkpoint(out)  # shards merged into one name -> array dict
    assert sorted(merged.model_state) == sorted(reference_ckpt.model_state)
    for name, expected in reference_ckpt.model_state.items():
        np.testing.assert_allclose(merged.model_state[name], expected, rtol=0, atol=1e-11, err_msg=name)
    assert sorted(merged.optimizer_state) == sorted(reference_ckpt.optimizer_state)
    for name, expected in reference_ckpt.optimizer_state.items():
        np.testing.assert_allclose(merged.optimizer_state[name], expected, rtol=1e-9, atol=1e-15, err_msg=name)


def finished_after(reference, steps_before: int):
    """The reference RunResult as a run resumed after `steps_before` steps reports it."""
    return type(reference)(status="finished", step=len(reference.train_losses),
                           train_losses=reference.train_losses[steps_before:], last_eval=reference.last_eval)
