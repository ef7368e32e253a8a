"""The collective save of a pipelined run, with ranks as threads of this process (no MPI).

The saved directory must load, through tinyllm.checkpoint alone, as exactly the one-process
checkpoint of the same model and optimizer; `restrict` must hand each stage its share.
"""
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from parallel.checkpoint import save_pipeline_checkpoint
from parallel.grid import GridShape
from parallel.partition import uniform_partition
from parallel.stage import StageModel
from tinyllm import checkpoint as ckpt
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW
from tinyllm.tokenizer import CharTokenizer

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=4, n_head=2, n_embd=16)
TOKENIZER = CharTokenizer.train("abcdefghijk")


class ThreadComm:
    """The collectives save_pipeline_checkpoint uses (bcast, gather, Barrier), for threads."""

    def __init__(self, shared, rank):
        self.shared, self.rank = shared, rank

    def _exchange(self, value, root):
        self.shared.slots[self.rank] = value
        self.shared.barrier.wait()
        result = list(self.shared.slots) if root is None or self.rank == root else None
        self.shared.barrier.wait()
        return result

    def bcast(self, value, root=0):
        return self._exchange(value, None)[root]

    def gather(self, value, root=0):
        return self._exchange(value, root)

    def Barrier(self):
        self.shared.barrier.wait()


def trained(model_params):
    """An AdamW over `model_params` after one step with a fixed gradient."""
    model_params = list(model_params)
    for _, p in model_params:
        p.grad = np.full(p.shape, 0.1)
    optimizer = AdamW(model_params, lr=1e-2, weight_decay=0.1)
    optimizer.step()
    return optimizer


def save_with_threads(run_dir, stages: int, replicas: int = 1, fail_on_rank=None, nan_on_rank=None):
    """Every rank of a stages x replicas grid saves; returns (rank 0's result or error, stage models).
    On success only rank 0 returns the path; on a failure every rank raises the same error."""
    shape = GridShape(pipeline_stages=stages, data_parallel=replicas)
    partition = uniform_partition(CONFIG.n_layer, stages)
    shared = SimpleNamespace(barrier=threading.Barrier(shape.world_size), slots=[None] * shape.world_size)
    outcomes, stage_models = [None] * shape.world_size, {}

    def rank_main(rank):
        replica, stage = shape.position(rank)
        stage_model = StageModel(GPT(CONFIG, seed=0, dtype="float64"), partition, stage)
        stage_models[stage] = stage_model
        optimizer = trained(stage_model.named_parameters())
        if rank == fail_on_rank:
            optimizer.state_arrays = lambda: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        if rank == nan_on_rank:   # a diverged update on this stage only
            next(p for n, p in stage_model.named_parameters() if n.startswith("blocks.")).data[0] = np.nan
        grid = SimpleNamespace(world=ThreadComm(shared, rank), rank=rank, replica=replica, stage=stage,
                               n_stages=stages, shape=shape)
        try:
            outcomes[rank] = save_pipeline_checkpoint(grid, stage_model, optimizer, run_dir,
                                                      {"step": 7, "model_config": CONFIG.to_dict()},
                                                      tokenizer=TOKENIZER)
        except Exception as error:  # noqa: BLE001 - handed to the test
            outcomes[rank] = error

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(shape.world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a rank is still waiting"
    if isinstance(outcomes[0], Exception):              # every rank stops alike
        assert all(type(o) is type(outcomes[0]) and str(o) == str(outcomes[0]) for o in outcomes[1:]), outcomes
    else:
        assert all(o is None for o in outcomes[1:])     # only rank 0 returns the path
    return outcomes[0], stage_models


@pytest.mark.parametrize("stages,replicas", [(2, 1), (3, 2)])
def test_a_sharded_checkpoint_loads_as_the_one_process_checkpoint(tmp_path, stages, replicas):
    path, stage_models = save_with_threads(tmp_path / "pipe", stages, replicas)
    whole = GPT(CONFIG, seed=0, dtype="float64")
    optimizer = trained(whole.named_parameters())
    ckpt.save_checkpoint(tmp_path / "one", model=whole, optimizer=optimizer, tokenizer=TOKENIZER,
                         state={"step": 7, "model_config": CONFIG.to_dict()})

    merged, reference = ckpt.load_checkpoint(tmp_path / "pipe"), ckpt.load_checkpoint(tmp_path / "one")
    assert merged.path.resolve() == Path(path) and merged.step == 7
    for mine, theirs in ((merged.model_state, reference.model_state),
                         (merged.optimizer_state, reference.optimizer_state)):
        assert sorted(mine) == sorted(theirs)
        assert all(np.array_equal(mine[k], theirs[k]) for k in theirs)
    assert merged.tokenizer().hash() == TOKENIZER.hash()

    names = sorted(p.name for p in Path(path).iterdir())
    shard_names = sorted(f for s in range(stages) for f in ckpt.shard_files(s, stages))
    assert names == sorted([*shard_names, ckpt.STATE_FILE, ckpt.TOKENIZER_FILE])   # tokenizer once, no temporaries
    manifest = merged.state["pipeline"]
    assert manifest["format"] == ckpt.PIPELINE_FORMAT and manifest["n_stages"] == stages
    assert manifest["data_parallel"] == replicas

    for stage, stage_model in stage_models.items():  # each stage gets back exactly its share
        own = [n for n, _ in stage_model.named_parameters()]
        share = ckpt.restrict(merged, own)
        assert sorted(share.model_state) == sorted(own)
        assert {k.rsplit(".", 1)[0] for k in share.optimizer_state} == set(own)
        ckpt.load_model_state(stage_model.model, share)


def test_a_rank_that_fails_to_write_fails_the_save_and_publishes_nothing(tmp_path):
    error, _ = save_with_threads(tmp_path, stages=2, fail_on_rank=1)
    assert isinstance(error, OSError) and "rank 1" in str(error) and "No space left" in str(error)
    assert not (tmp_path / "last").exists()
    assert list((tmp_path / "checkpoints").iterdir()) == []   # the staging directory is gone


def test_a_stage_holding_nan_fails_the_save_on_every_rank_and_publishes_nothing(tmp_path):
    """The one check before publishing (tinyllm.checkpoint.write_tensor_file) runs on each stage's shard."""
    save_with_threads(tmp_path, stages=2)
    error, _ = save_with_threads(tmp_path, stages=2, replicas=2, nan_on_rank=1)   # rank 1: stage 1 of replica 0
    assert isinstance(error, ckpt.NonFiniteWeightsError) and error.tensor.startswith("blocks.")
    assert ckpt.load_checkpoint(tmp_path).step == 7 and len(list((tmp_path / "checkpoints").iterdir())) == 1


def test_a_damaged_shard_and_a_foreign_parameter_are_named(tmp_path):
    path, _ = save_with_threads(tmp_path, stages=2)
    with pytest.raises(ckpt.CheckpointError, match=r"has no blocks\.9\.norm1\.weight; it was saved from a different"):
        ckpt.restrict(ckpt.load_checkpoint(tmp_path), ["blocks.9.norm1.weight"])
    shard = Path(path) / ckpt.shard_files(1, 2)[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match=r"model-stage1-of-2\.safetensors: truncated"):
        ckpt.load_checkpoint(tmp_path)
