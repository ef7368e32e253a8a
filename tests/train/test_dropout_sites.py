"""Every dropout layer of a model draws its own mask (issue 23: a planted bug the suite let through).

A mask is keyed by the seed, the step, the layer's site and the row (tinyllm/nn.py DropoutMasks,
autograd/layers/dropout.py DropoutKey). Built without its site, every layer draws the same mask
for a row; every layout comparison still agrees (all layouts share the fault), and the loss only
moves in its fourth decimal. Here the layers' masks themselves are compared.
"""
import itertools

import numpy as np

from autograd import Tensor, no_grad
from tinyllm import GPT, GPTConfig
from tinyllm.nn import Dropout

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.5)


def masks_of_every_layer(model, step=3, row=0) -> list:
    """[(site, the mask (kept elements) it draws at (step, row))] for each Dropout layer of `model`."""
    layers = [m for _, m in model.named_modules() if isinstance(m, Dropout)]
    ones = Tensor(np.ones((2, CONFIG.block_size, CONFIG.n_embd)))
    model.train()
    with no_grad(), model.dropout_masks.at(step, row):
        return [(layer.site, layer(ones).data != 0) for layer in layers]


def test_each_dropout_layer_has_its_own_site_and_mask():
    model = GPT(CONFIG, seed=0)
    masks = masks_of_every_layer(model)
    assert len(masks) == 1 + 2 * CONFIG.n_layer                      # the embedding's, then two per block
    assert len({site for site, _ in masks}) == len(masks)
    for (a, mask_a), (b, mask_b) in itertools.combinations(masks, 2):
        assert not np.array_equal(mask_a, mask_b), f"dropout sites {a} and {b} draw the same mask"
    again = masks_of_every_layer(GPT(CONFIG, seed=0))                # a pure function of the key
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(masks, again))


def test_a_mask_changes_with_the_step_and_the_row():
    model = GPT(CONFIG, seed=0)
    here = masks_of_every_layer(model, step=3, row=0)
    for elsewhere in (masks_of_every_layer(model, step=4, row=0), masks_of_every_layer(model, step=3, row=2)):
        assert all(not np.array_equal(a, b) for (_, a), (_, b) in zip(here, elsewhere))
