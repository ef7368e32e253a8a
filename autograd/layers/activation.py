"""GELU (tanh approximation and exact erf form) and SiLU, with hand-derived backward.

    gelu_tanh(x) = x/2 (1 + tanh(u)),  u = k (x + a x^3),  k = sqrt(2/pi), a = 0.044715
      d/dx = 1/2 (1 + tanh u)  +  x/2 (1 - tanh^2 u) k (1 + 3 a x^2)
    gelu_erf(x)  = x Phi(x),  Phi(x) = 1/2 (1 + erf(x / sqrt 2))
      d/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
    silu(x) = x sigmoid(x)
      d/dx = s (1 + x (1 - s)),  s = sigmoid(x)
(docs/derivations/gelu.md)
"""
from __future__ import annotations

import math

from ..backend import erf, get_array_module
from ..function import Function

GELU_K = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715
INV_SQRT2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def stable_sigmoid(x):
    """sigmoid on a raw array; exp only sees non-positive arguments, so no overflow."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class GeluTanh(Function):
    def forward(self, x):
        xp = get_array_module(x)
        t = xp.tanh(GELU_K * (x + GELU_A * x * x * x))
        self.x, self.t = x, t
        return 0.5 * x * (1 + t)

    def backward(self, grad):
        x, t = self.x, self.t
        term1 = 0.5 * (1 + t)                                          # term 1: d(x)/dx * (1 + tanh u) / 2
        term2 = 0.5 * x * (1 - t * t) * GELU_K * (1 + 3 * GELU_A * x * x)  # term 2: x/2 * dtanh(u)/dx
        return grad * (term1 + term2)


class GeluErf(Function):
    def forward(self, x):
        self.x = x
        self.cdf = 0.5 * (1 + erf(x * INV_SQRT2))
        return x * self.cdf

    def backward(self, grad):
        xp = get_array_module(grad)
        x = self.x
        pdf = INV_SQRT_2PI * xp.exp(-0.5 * x * x)
        return grad * (self.cdf + x * pdf)                             # term 1: Phi(x), term 2: x phi(x)


class Silu(Function):
    def forward(self, x):
        self.x = x
        self.s = stable_sigmoid(x)
        return x * self.s

    def backward(self, grad):
        s = self.s
        return grad * (s * (1 + self.x * (1 - s)))                     # term 1: s, term 2: x s (1 - s)
