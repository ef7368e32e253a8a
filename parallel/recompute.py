"""Activation recomputation: a block keeps only its input, and runs its forward again in backward.

    y = recomputed(block, x, generator)      # in a stage's forward, instead of y = block(x)

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
the same masks twice: `generator` (the model's SharedGenerator, None without dropout) is
set back to its state before the first forward for the second one, then restored, through
its public state()/set_state().

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

    def forward(self, x, block=None, generator=None):
        self.x, self.block, self.generator = x, block, generator
        self.generator_state = generator.state() if generator is not None else None
        with no_grad():
            return block(Tensor.constant(x)).data                  # (B, T, C)

    def backward(self, grad):
        with enable_grad(), self._same_masks():
            x = Tensor(self.x, requires_grad=True)
            self.block(x).backward(grad)
        return x.grad if self.needs_input_grad[0] else None

    @contextlib.contextmanager
    def _same_masks(self):
        """The generator as it was before the first forward, for the second one; then as it is now."""
        if self.generator is None:
            yield
            return
        now = self.generator.state()
        self.generator.set_state(self.generator_state)
        try:
            yield
        finally:
            self.generator.set_state(now)


def recomputed(block, x: Tensor, generator=None) -> Tensor:
    """block(x) with recomputation (module docstring); `generator`: the dropout masks' SharedGenerator or None."""
    return BlockRecomputeFunction.apply(x, block=block, generator=generator)
