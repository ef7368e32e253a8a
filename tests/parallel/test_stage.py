"""Stage pruning without MPI: stages chained in one process compute the whole model's loss and gradients."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd.tensor import Tensor
from parallel.engine import check_batch_split
from parallel.grid import GridShape
from parallel.partition import balanced_partition, uniform_partition
from parallel.stage import TIED_WEIGHT, StageModel, block_parameter_counts
from tinyllm.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=11, block_size=6, n_layer=4, n_head=2, n_embd=8)


def chained_loss_and_grads(config, partition, idx, targets):
    """Run the stages one after another in this process, passing activations and gradients by hand."""
    stages = [StageModel(GPT(config, seed=1, dtype="float64"), partition, s) for s in range(partition.n_stages)]
    inputs, outputs, x = [], [], idx
    for sm in stages:
        if not sm.is_first:
            x = Tensor(x.data.copy(), requires_grad=True)
        inputs.append(x)
        x = sm.forward(x, targets if sm.is_last else None)
        outputs.append(x)
    loss = float(outputs[-1].item())
    grad = None
    for sm, inp, out in zip(reversed(stages), reversed(inputs), reversed(outputs)):
        out.backward(grad)
        grad = None if sm.is_first else inp.grad
    grads = {}
    for sm in stages:
        for name, p in sm.named_parameters():
            grads[name] = grads.get(name, 0) + p.grad  # the tied weight: both stages' parts summed
    return loss, grads, stages


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=4, max_size=4), st.integers(1, 4), st.booleans())
def test_chained_stages_equal_the_whole_model(block_costs, n_stages, tied):
    config = GPTConfig(**{**CONFIG.to_dict(), "tie_embeddings": tied})
    partition = balanced_partition(block_costs, n_stages)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, size=(3, 6)), rng.integers(0, 11, size=(3, 6))
    whole = GPT(config, seed=1, dtype="float64")
    _, loss = whole(idx, targets)
    loss.backward()
    chained, grads, stages = chained_loss_and_grads(config, partition, idx, targets)
    assert chained == pytest.approx(loss.item(), rel=1e-13)
    expected = dict(whole.named_parameters())
    assert sorted(grads) == sorted(expected)
    for name, p in expected.items():
        np.testing.assert_allclose(grads[name], p.grad, rtol=1e-10, atol=1e-13, err_msg=name)
    if tied and n_stages > 1:
        assert stages[0].tied_name() == stages[-1].tied_name() == TIED_WEIGHT
        assert not stages[-1].counted_in_norm(TIED_WEIGHT) and stages[0].counted_in_norm(TIED_WEIGHT)


@pytest.mark.parametrize("n_stages,n_chunks,recompute", [(2, 2, False), (2, 2, True), (1, 4, False), (4, 1, True)])
def test_chunks_run_in_model_order_equal_the_whole_model(n_stages, n_chunks, recompute):
    """Virtual stage v is chunk v // p of stage v % p: running them in order, passing activations and
    gradients by hand, gives the whole model's loss and gradients (recomputed blocks too)."""
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, size=(3, 6)), rng.integers(0, 11, size=(3, 6))
    whole = GPT(CONFIG, seed=1, dtype="float64")
    _, loss = whole(idx, targets)
    loss.backward()
    partition = uniform_partition(CONFIG.n_layer, n_stages * n_chunks)
    stages = [StageModel(GPT(CONFIG, seed=1, dtype="float64"), partition, s, n_chunks=n_chunks, recompute=recompute)
              for s in range(n_stages)]
    assert stages[0].chunk_ranges[0] == range(0, 4 // (n_stages * n_chunks))
    units = [(stages[v % n_stages], v // n_stages) for v in range(n_stages * n_chunks)]
    inputs, outputs, x = [], [], idx
    for sm, chunk in units:
        if not sm.starts_model(chunk):
            x = Tensor(x.data.copy(), requires_grad=True)
        inputs.append(x)
        x = sm.forward(x, targets if sm.ends_model(chunk) else None, chunk=chunk)
        outputs.append(x)
    assert x.item() == loss.item()
    grad = None
    for inp, out in zip(reversed(inputs), reversed(outputs)):
        out.backward(grad)
        grad = inp.grad if isinstance(inp, Tensor) else None
    expected = dict(whole.named_parameters())
    for sm in stages:
        for name, p in sm.named_parameters():
            if name != TIED_WEIGHT or n_stages == 1:
                np.testing.assert_array_equal(p.grad, expected[name].grad, err_msg=name)


def test_pruned_stage_keeps_global_names():
    stage = StageModel(GPT(CONFIG, seed=0), uniform_partition(4, 2), 1)
    names = [n for n, _ in stage.named_parameters()]
    assert "blocks.2.norm1.weight" in names and "norm_f.weight" in names and TIED_WEIGHT in names
    assert not any(n.startswith(("blocks.0.", "blocks.1.", "wpe")) for n in names)


def test_parameter_counts_cover_the_model():
    model = GPT(CONFIG, seed=0)
    blocks, first, head = block_parameter_counts(model)
    tied_once = model.wte.weight.size  # counted in both the embeddings and the head
    assert sum(blocks) + first + head - tied_once == model.num_parameters()


def test_errors_name_the_values():
    with pytest.raises(ValueError, match="--batch-size 12 does not split into --data-parallel 2 x --microbatches 4"):
        check_batch_split(12, 2, 4)
    with pytest.raises(ValueError, match="needs 4 MPI ranks, but mpiexec started 3"):
        GridShape(2, 2).check_world(3)
    with pytest.raises(ValueError, match="pipeline-stages must be a positive integer"):
        GridShape(0, 1)
    assert [GridShape(2, 2).position(r) for r in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
