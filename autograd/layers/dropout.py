"""Inverted dropout: zero each element with probability p, scale survivors by 1/(1-p).

    y = x * m / (1 - p),  m_i ~ Bernoulli(1 - p);    dx = g * m / (1 - p)

The mask comes from a seeded generator (`autograd.random`), so a run is repeatable.
In evaluation mode, or with p = 0, dropout is the identity and draws no numbers.
"""
from __future__ import annotations

from ..function import Function


class DropoutFunction(Function):
    def forward(self, x, scaled_mask):
        self.scaled_mask = scaled_mask
        return x * scaled_mask

    def backward(self, grad):
        return grad * self.scaled_mask
