"""ZeRO-1's layout without MPI: whole parameters dealt out to the replicas, contiguous and balanced;
each replica's optimizer holds only its share; an unsharded state loads into any share."""
import numpy as np
import pytest

from parallel.partition import uniform_partition
from parallel.stage import StageModel
from parallel.zero import ZeroOptimizer
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW

CONFIG = GPTConfig(vocab_size=11, block_size=6, n_layer=4, n_head=2, n_embd=8)


class Position:
    """The two questions ZeroOptimizer asks its communicator before any message."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


def shares(replicas, stage=0):
    named = StageModel(GPT(CONFIG, seed=0, dtype="float64"), uniform_partition(4, 2), stage).named_parameters()
    return named, [ZeroOptimizer(named, lambda own: AdamW(own, lr=1e-2, weight_decay=0.1), Position(r, replicas))
                   for r in range(replicas)]


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_each_parameter_has_one_owner_and_the_shares_are_balanced(replicas):
    named, optimizers = shares(replicas)
    owned = [name for opt in optimizers for name, _ in opt.own]
    assert owned == [name for name, _ in named]                    # contiguous, in order, each once
    sizes = [sum(int(p.size) for _, p in opt.own) for opt in optimizers]
    assert sizes == optimizers[0].counts and sum(sizes) == sum(int(p.size) for _, p in named)
    largest = max(int(p.size) for _, p in named)
    assert max(sizes) <= sum(sizes) / replicas + largest            # balanced up to one parameter
    state = [opt.state_bytes() for opt in optimizers]
    whole = sum(int(a.nbytes) for a in AdamW(named, lr=1e-2).state_arrays().values())
    assert sum(state) == whole and max(state) <= whole / replicas + 2 * largest * 8


def test_a_replica_loads_its_part_of_an_unsharded_state():
    named, (first, second) = shares(2)
    source = AdamW(named, lr=1e-2)
    for i, (name, _) in enumerate(named):
        source.exp_avg[name][...] = i
    second.load_state(source.state_arrays(), {**source.state_meta(), "step": 5})
    assert second.step_count == 5
    for name, _ in second.own:
        assert np.all(second.inner.exp_avg[name] == [n for n, _ in named].index(name))
    with pytest.raises(ValueError, match="cannot be shared by 30 --data-parallel replicas"):
        ZeroOptimizer(named, AdamW, Position(0, 30))
