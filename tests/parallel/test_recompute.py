"""Recomputed blocks: the same outputs and gradients as the plain block (float64, bit for bit), dropout
masks included, with only the block's input kept between forward and backward."""
import contextlib

import numpy as np
import pytest

from autograd.tensor import Tensor
from parallel.recompute import BlockRecomputeFunction, recomputed
from tinyllm.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)


def run(dropout: float, recompute: bool, keyed: bool, microbatches: int = 2):
    """Forward every microbatch through both blocks, then backward them in reverse (a pipeline's order).
    keyed: each forward inside `masks.at(step, row)`, as the engine runs it, the backward outside;
    else the masks come from the generator (a model run by hand, or an old run's scheme)."""
    model = GPT(GPTConfig(**{**CONFIG.to_dict(), "dropout": dropout}), seed=0, dtype="float64")
    masks = model.dropout_masks if dropout else None
    rng = np.random.default_rng(1)
    inputs, outputs = [], []
    for mb in range(microbatches):
        x = Tensor(rng.standard_normal((3, 6, 8)), requires_grad=True)
        y = x
        with model.dropout_masks.at(7, 3 * mb) if keyed else contextlib.nullcontext():
            for block in model.blocks:
                y = recomputed(block, y, masks) if recompute else block(y)
        inputs.append(x)
        outputs.append(y)
    for y in reversed(outputs):
        y.backward(np.ones(y.shape))
    after = model.dropout_masks.state()
    return ([y.data for y in outputs], [x.grad for x in inputs],
            {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, after)


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "generator"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_recomputed_blocks_equal_the_plain_blocks(dropout, keyed):
    plain, again = run(dropout, False, keyed), run(dropout, True, keyed)
    for a, b in zip(plain[0] + plain[1], again[0] + again[1]):
        np.testing.assert_array_equal(a, b)
    assert sorted(plain[2]) == sorted(again[2])
    for name in plain[2]:
        np.testing.assert_array_equal(plain[2][name], again[2][name], err_msg=name)
    assert plain[3] == again[3]   # the generator ends where it would have: recomputing draws nothing new
    if dropout:                   # the masks do something, and the keys are not the generator's
        assert not np.array_equal(plain[0][0], run(0.0, False, keyed)[0][0])
        assert not np.array_equal(plain[0][0], run(dropout, False, not keyed)[0][0])


def test_only_the_input_is_kept():
    model = GPT(CONFIG, seed=0, dtype="float64")
    x = Tensor(np.ones((2, 6, 8)), requires_grad=True)
    y = recomputed(model.blocks[0], x)
    fn = y.grad_fn
    assert isinstance(fn, BlockRecomputeFunction) and fn.inputs == (x,) and fn.x is x.data
    arrays = [v for v in vars(fn).values() if isinstance(v, np.ndarray)]
    assert len(arrays) == 1   # nothing from inside the block
