"""SwiGLU's gating product silu(gate) * up, with hand-derived backward.

    y = silu(a) * u = a s u,   s = sigmoid(a)
    du = g * a s                                   term 1: silu(a)
    da = g * u * s (1 + a (1 - s))                 term 2: u * silu'(a)
(docs/derivations/swiglu.md). The three projections of a SwiGLU MLP are ordinary linear
layers around this; fusing just the product saves the intermediate silu(a) tensor and one
pass over memory. Saved: the inputs (references) and s.

Left out: the projections themselves, other GLU variants (GEGLU, ReGLU).
"""
from __future__ import annotations

from ..backend import get_array_module
from ..function import Function


class SwiGLUFunction(Function):
    def forward(self, gate, up):
        xp = get_array_module(gate)
        half = gate.dtype.type(0.5)
        # sigmoid(a) = (1 + tanh(a/2)) / 2: one transcendental, in place, no overflow at either tail.
        s = xp.empty_like(gate)                                    # owned buffers (out= keeps 0-d arrays arrays)
        xp.multiply(gate, half, out=s)
        xp.tanh(s, out=s)
        s += 1
        s *= half
        y = xp.empty_like(gate)
        xp.multiply(gate, s, out=y)                                # silu(gate)
        y *= up
        self.gate, self.up, self.s = gate, up, s
        return y

    def backward(self, grad):
        xp = get_array_module(grad)
        gate, up, s = self.gate, self.up, self.s
        d_up = d_gate = None
        if self.needs_input_grad[1]:
            d_up = xp.empty_like(grad)
            xp.multiply(grad, gate, out=d_up)                      # term 1: g * silu(a)
            d_up *= s
        if self.needs_input_grad[0]:
            d_gate = xp.empty_like(grad)
            xp.subtract(1, s, out=d_gate)                          # term 2: g * u * s (1 + a (1 - s))
            d_gate *= gate
            d_gate += 1
            d_gate *= s
            d_gate *= up
            d_gate *= grad
        return d_gate, d_up
