"""A 2-stage pipeline over mpiexec with device arrays: host-staged messages, and direct ones
(CUDA-aware MPI); every rank takes the GPU of its rank within its node.

[cuda] is real CuPy when the ranks see a GPU, else the CPU stand-in for CuPy, whose direct path
hands MPI host memory through __cuda_array_interface__ (as a CUDA-aware MPI takes device memory).
Per-rank devices are checked on the stand-in pretending to have 2 GPUs (TINYLLM_FAKE_CUDA_DEVICES).
"""
import os
import re

import numpy as np
import pytest

from autograd import backend
from parallel.grid import device_for
from .mpi_runs import BASE, mpirun, single_process

PIPELINE = dict(pipeline_stages=2, microbatches=3, schedule="1f1b", device="cuda", max_iters=3, eval_interval=3)


def placements(stderr: str) -> dict:
    """rank -> cuda device index, from rank 0's first line."""
    line = next(line for line in stderr.splitlines() if line.startswith("devices: "))
    return {int(rank): int(device) for rank, device in re.findall(r"rank (\d+) -> cuda:(\d+)", line)}


def test_a_rank_takes_its_local_rank_modulo_the_gpus_it_sees():
    assert [device_for(r, 8) for r in range(8)] == list(range(8))
    assert [device_for(r, 2) for r in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="sees no CUDA device"):
        device_for(0, 0)


@pytest.mark.parametrize("messages", ["host-staged", "direct"])
def test_the_pipeline_on_the_device_gives_the_cpu_numbers(corpus, tmp_path, messages):
    direct = messages == "direct"
    if direct and backend.cuda_backend() == "cupy" and os.environ.get("TINYLLM_CUDA_AWARE_MPI") != "1":
        pytest.skip("direct messages need a CUDA-aware MPI: set TINYLLM_CUDA_AWARE_MPI=1 where MPI is one")
    reference, _ = single_process(corpus, tmp_path / "cpu", max_iters=3, eval_interval=3)
    proc = mpirun(2, {**BASE, **PIPELINE, "data": corpus, "out": str(tmp_path / "run")}, tmp_path / "w",
                  env={"TINYLLM_CUDA_AWARE_MPI": "1" if direct else "0"})
    assert proc.returncode == 0, proc.stderr
    assert set(placements(proc.stderr)) == {0, 1}
    np.testing.assert_allclose(proc.result["train_losses"], reference.train_losses, rtol=1e-10)
    for split in ("train", "val"):
        assert proc.result["last_eval"][split] == pytest.approx(reference.last_eval[split], rel=1e-10)


def test_each_rank_takes_the_gpu_of_its_local_rank(corpus, tmp_path):
    env = {"TINYLLM_FAKE_CUDA": "1", "TINYLLM_FAKE_CUDA_DEVICES": "2", "TINYLLM_CUDA_AWARE_MPI": "1"}
    config = {**BASE, **PIPELINE, "data": corpus, "out": str(tmp_path / "run"), "max_iters": 1, "eval_interval": 1}
    proc = mpirun(2, config, tmp_path / "two", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.lstrip().startswith("devices: ")                     # the run's first line
    assert placements(proc.stderr) == {0: 0, 1: 1}
    proc = mpirun(2, {**config, "out": str(tmp_path / "run2")}, tmp_path / "one",
                  env={**env, "CUDA_VISIBLE_DEVICES": "1"})                 # one visible: both ranks share it
    assert proc.returncode == 0, proc.stderr
    assert placements(proc.stderr) == {0: 0, 1: 0}
