"""Across nodes for real: pipelined and data-parallel runs on a cluster in a box equal one process.

The nodes are network namespaces on a bridge (parallel/cluster.py), each with its own hostname and
address; ranks on one node talk through shared memory, ranks on two nodes through TCP. Every case
runs with MPICH (Hydra, `-launcher ssh -launcher-exec AGENT`) and Open MPI 5 (`plm_ssh_agent`).
One mpiexec job runs several layouts one after the other (cluster_job.py), float64, and each must
equal the single-process run: every loss to 1e-12, every weight to 1e-11 (mpi_runs.assert_same_run).

- 3 nodes, 4 ranks (2 on node0, so shared memory and TCP mix): 4 stages with GPipe and with
  zero-bubble H1 and recomputed blocks; 2 stages x 2 replicas interleaved with ZeRO-1 and
  recomputation; 2 stages x 2 replicas 1F1B with ZeRO-1, stopped after step 2 and resumed in ONE
  process to the uninterrupted run's end.
- 2 nodes, 1 rank each (all TCP): 2 stages 1F1B (untied head) and interleaved; 2 replicas with
  ZeRO-1; a one-process checkpoint resumed across the nodes as 2 zero-bubble stages.

Without root or `ip` these skip with that reason (a failure under TINYLLM_CLUSTER_TESTS=required).
"""
import pytest
from .cluster_runs import box, run_job
from .mpi_runs import BASE, assert_same_run, finished_after, needs_mpi, single_process

from tinyllm import checkpoint as ckpt
from tinyllm.settings import RunSettings
from tinyllm.train import train

pytestmark = [*needs_mpi, pytest.mark.slow]
MPIS = ["mpich", "openmpi"]


@pytest.mark.parametrize("mpi_name", MPIS)
def test_three_nodes_four_ranks_every_schedule_zero_and_recompute(mpi_name, corpus, references, tmp_path):
    base = {**BASE, "data": corpus}
    layouts = [  # (name, overrides, tied)
        ("p4-gpipe", dict(pipeline_stages=4, microbatches=4, schedule="gpipe"), True),
        ("p4-zb-recompute", dict(pipeline_stages=4, microbatches=4, schedule="zb-h1", recompute=True,
                                 tie_embeddings=False), False),
        ("p2d2-interleaved-zero-recompute", dict(pipeline_stages=2, data_parallel=2, microbatches=2,
                                                 schedule="interleaved", zero=1, recompute=True), True),
        ("p2d2-1f1b-zero-stopped", dict(pipeline_stages=2, data_parallel=2, microbatches=3, schedule="1f1b",
                                        zero=1), True),
    ]
    runs = [({**base, "out": str(tmp_path / name), **overrides}, 2 if name.endswith("stopped") else None)
            for name, overrides, _ in layouts]
    with box(nodes=3, slots=(2, 1, 1), mpi_name=mpi_name) as cluster:
        results = run_job(cluster, 4, runs, tmp_path / "job")
    assert ("hosts: node0: ranks 0-1; node1: rank 2; node2: rank 3; CUDA-aware MPI: no (MPIX_Query_cuda_support() = 0)"
            in results[0].stderr)   # these CPU builds of both MPIs answer the query: no
    for (name, overrides, tied), run in zip(layouts[:3], results):
        assert_same_run(run, *references[tied], tmp_path / name)

    # a checkpoint written across three nodes (ZeRO-1, 2 x 2) resumes in one process
    reference, reference_ckpt = references[True]
    assert results[3].result["train_losses"] == pytest.approx(reference.train_losses[:2], rel=1e-12)
    stopped = tmp_path / "p2d2-1f1b-zero-stopped"
    assert ckpt.read_state(stopped)["pipeline"]["data_parallel"] == 2
    resumed = train(RunSettings.from_dict({**base, "out": str(stopped), "resume": True}))
    assert resumed.train_losses == pytest.approx(reference.train_losses[2:], rel=1e-12)
    merged = ckpt.load_checkpoint(stopped)
    for name, expected in reference_ckpt.model_state.items():
        assert abs(merged.model_state[name] - expected).max() < 1e-11, name


@pytest.mark.parametrize("mpi_name", MPIS)
def test_two_nodes_over_tcp_and_a_one_process_checkpoint_resumed_across_them(mpi_name, corpus, references,
                                                                              tmp_path):
    base = {**BASE, "data": corpus}
    source = tmp_path / "from-single"
    single_process(corpus, source, stop_at=2)       # written by one process, resumed across two nodes
    layouts = [
        ("p2-1f1b-untied", dict(pipeline_stages=2, microbatches=4, schedule="1f1b", tie_embeddings=False), False),
        ("p2-interleaved", dict(pipeline_stages=2, microbatches=4, schedule="interleaved"), True),
        ("d2-gpipe-zero", dict(pipeline_stages=1, data_parallel=2, microbatches=2, schedule="gpipe", zero=1), True),
    ]
    runs = [({**base, "out": str(tmp_path / name), **overrides}, None) for name, overrides, _ in layouts]
    runs.append(({**base, "out": str(source), "pipeline_stages": 2, "microbatches": 2, "schedule": "zb-h1",
                  "resume": True}, None))
    with box(nodes=2, mpi_name=mpi_name) as cluster:
        results = run_job(cluster, 2, runs, tmp_path / "job")
    assert "hosts: node0: rank 0; node1: rank 1" in results[0].stderr
    for (name, overrides, tied), run in zip(layouts, results):
        assert_same_run(run, *references[tied], tmp_path / name)
    reference, reference_ckpt = references[True]
    assert_same_run(results[3], finished_after(reference, 2), reference_ckpt, source)
