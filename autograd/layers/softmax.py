"""Softmax and log-softmax over one axis, numerically stable, with hand-derived backward.

    y = softmax(x):      y_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j
    dx = y * (g - sum(g * y))                      (docs/derivations/softmax.md)
    z = log_softmax(x):  z_i = x_i - m - log sum_j exp(x_j - m)
    dx = g - softmax(x) * sum(g)

Subtracting the max changes nothing mathematically (softmax(x + c) = softmax(x)) but keeps
exp from overflowing, so logits of +-1e4 give finite values and gradients.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..function import Function


def stable_softmax(x, axis: int = -1):
    """softmax on a raw xp array (no graph)."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def stable_log_softmax(x, axis: int = -1):
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


class SoftmaxFunction(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        self.y = stable_softmax(x, axis)
        return self.y

    def backward(self, grad):
        y = self.y
        # dx_i = y_i (g_i - sum_j g_j y_j): term 1 the direct path, term 2 through the normaliser
        return y * (grad - (grad * y).sum(axis=self.axis, keepdims=True))


class LogSoftmaxFunction(Function):
    def forward(self, x, axis=-1):
        self.axis = axis
        self.z = stable_log_softmax(x, axis)
        return self.z

    def backward(self, grad):
        xp = get_array_module(grad)
        # dx_i = g_i (term 1) - softmax_i * sum_j g_j (term 2),  softmax = exp(z)
        return grad - xp.exp(self.z) * grad.sum(axis=self.axis, keepdims=True)
