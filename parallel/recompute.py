"""Activation recomputation: a block keeps only its input, and runs its forward again in backward.

    y = recomputed(block, x, masks)          # in a stage's forward, instead of y = block(x)

Forward runs the block without recording a graph, so none of its intermediates (the
attention probabilities (B, nh, T, T), the MLP's (B, T, 4C) hidden layer, the norms'
outputs, ...) stay alive; the one node in the graph, `BlockRecomputeFunction`, holds the
block's input x (B, T, C). Its backward runs the block's forward again with the graph on,
from the same x and the same weights, then backpropagates the incoming gradient through
it: the block's weights get their `.grad` there, and the gradient of x goes on. The cost
is one more forward per block (about a third more compute); the saving is every
activation inside the block for every microbatch in flight.

Exact: the second forward computes the same numbers as the first (same input, weights and
order of operations), so the gradients are those of the plain backward. Dropout must draw
the same masks twice: `masks` (the model's DropoutMasks, None without dropout) gives the
second forward the first one's (step, row) key of the keyed scheme, which the engine's
`with dropout_rows(...)` has left by then, or its generator's state before the first
forward (DropoutMasks.replay_point / replay).

Left out: checkpointing finer than a block, keeping the dropout masks instead of
redrawing them, splitting the block's weight gradients out for zero-bubble schedules
(`autograd.tensor.split_backward` sees one node without weights, so a recomputed block's
weight gradients are computed in B).
"""
from __future__ import annotations

import contextlib

from autograd.function import Function
from autograd.tensor import Tensor, enable_grad, no_grad


class BlockRecomputeFunction(Function):
    """y = block(x), recorded as one node that saves only x; backward reruns the block (module docstring)."""

    def forward(self, x, block=None, masks=None):
        self.x, self.block, self.masks = x, block, masks
        self.point = masks.replay_point() if masks is not None else None
        with no_grad():
            return block(Tensor.constant(x)).data                  # (B, T, C)

    def backward(self, grad):
        same_masks = self.masks.replay(self.point) if self.masks is not None else contextlib.nullcontext()
        with enable_grad(), same_masks:
            x = Tensor(self.x, requires_grad=True)
            self.block(x).backward(grad)
        return x.grad if self.needs_input_grad[0] else None


def recomputed(block, x: Tensor, masks=None) -> Tensor:
    """block(x) with recomputation (module docstring); `masks`: the model's DropoutMasks, or None without dropout."""
    return BlockRecomputeFunction.apply(x, block=block, masks=masks)
