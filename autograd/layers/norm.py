"""LayerNorm and RMSNorm over the last axis, with hand-derived backward.

LayerNorm, per row x of C features (docs/derivations/layer_norm.md):

    mu = mean(x),  rstd = 1 / sqrt(mean((x - mu)^2) + eps),  xhat = (x - mu) rstd
    y  = xhat * w + b
    dxhat = g * w
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))      terms 1, 2, 3
    dw = sum over rows of g * xhat,   db = sum over rows of g

RMSNorm (docs/derivations/rms_norm.md):

    rstd = 1 / sqrt(mean(x^2) + eps),  xhat = x rstd,  y = xhat * w
    dx = rstd * (dxhat - xhat * mean(dxhat * xhat))                    terms 1, 2
    dw = sum over rows of g * xhat

Only the input (a reference, no copy) and the per-row statistics (mu, rstd: one number a
row) are saved; xhat is recomputed in backward, which then works in two row-sized buffers
it owns, in place. Weight and bias are optional (elementwise_affine=False style).

One vector x of shape (C,) is one row whose statistics are scalars, not (..., 1) columns:
the same formula, forward and backward. One-row decoding (tinyllm/decode.py) runs the
norms on a vector once per layer per token, where NumPy's per-call cost, not arithmetic,
is the time, and a vector op with a scalar costs about half a broadcast (1, C) op.

Left out: normalising over more than the last axis, running statistics (that is batch norm).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..function import Function


def _sum_over_rows(a):
    """Sum over every axis but the last: (..., C) -> (C,)."""
    return a.sum(axis=tuple(range(a.ndim - 1)))


def _row_mean(a):
    """mean over the last axis, keepdims: (..., C) -> (..., 1), a scalar for one vector (C,). The sum
    and division ndarray.mean does (the same numbers), without its Python-level bookkeeping (which
    dominates on one row)."""
    if type(a) is not np.ndarray:                                    # CuPy
        return a.mean(axis=-1, keepdims=a.ndim > 1)
    if a.ndim == 1:
        return np.add.reduce(a) / a.shape[0]
    return np.add.reduce(a, axis=-1, keepdims=True) / a.dtype.type(a.shape[-1])


def _row_dot_mean(a, b):
    """mean over the last axis of a * b, keepdims, without an (..., C) temporary:
    (..., C), (..., C) -> (..., 1), a scalar for one vector (C,)."""
    C = a.shape[-1]
    if a.ndim == 1:
        return a.dot(b) / C
    dots = get_array_module(a).einsum("...c,...c->...", a, b)
    return (dots / C)[..., None]


def _weight_grad_and_dxhat(grad, xhat, weight, need_w: bool, need_x: bool):
    """(dw, dxhat): dw = sum_rows g * xhat and dxhat = g * w, in one row-sized buffer backward owns.

    Either is None when not needed; dxhat is a fresh buffer that the caller finishes in place.
    """
    xp = get_array_module(grad)
    work = xp.empty_like(xhat)                                       # (..., C)
    dw = None
    if need_w:
        xp.multiply(grad, xhat, out=work)
        dw = _sum_over_rows(work)                                    # dw = sum_rows g * xhat
    if not need_x:
        return dw, None
    if weight is not None:
        xp.multiply(grad, weight, out=work)                          # dxhat = g * w
    else:
        work[...] = grad
    return dw, work


class LayerNormFunction(Function):
    def forward(self, x, *params, eps=1e-5, has_weight=False, has_bias=False):
        xp = get_array_module(x)
        weight = params[0] if has_weight else None
        bias = params[-1] if has_bias else None
        mu = _row_mean(x)                                            # (..., 1), a scalar for x (C,)
        y = x - mu                                                   # (..., C), the output buffer
        variance = _row_dot_mean(y, y)
        rstd = 1.0 / xp.sqrt(variance + eps)                         # (..., 1), a scalar for x (C,)
        y *= rstd                                                    # xhat
        self.x, self.mu, self.rstd, self.weight = x, mu, rstd, weight
        self.has_weight, self.has_bias = has_weight, has_bias
        if weight is not None:
            y *= weight
        if bias is not None:
            y += bias
        return y

    def backward(self, grad):
        need_x = self.needs_input_grad[0]
        need_w = self.has_weight and self.needs_input_grad[1]
        need_b = self.has_bias and self.needs_input_grad[-1]
        xhat = self.x - self.mu                                      # (..., C), owned
        xhat *= self.rstd
        db = _sum_over_rows(grad) if need_b else None                # db = sum_rows g
        dw, dxhat = _weight_grad_and_dxhat(grad, xhat, self.weight, need_w, need_x)
        dx = None
        if need_x:
            term2 = _row_mean(dxhat)                                 # term 2: mean(dxhat)
            term3 = _row_dot_mean(dxhat, xhat)                       # term 3: mean(dxhat * xhat), times xhat
            dxhat -= term2
            xhat *= term3
            dxhat -= xhat                                            # term 1 - term 2 - term 3
            dxhat *= self.rstd
            dx = dxhat
        grads = (dx,)
        if self.has_weight:
            grads += (dw,)
        if self.has_bias:
            grads += (db,)
        return grads


class RMSNormFunction(Function):
    def forward(self, x, *params, eps=1e-6, has_weight=False):
        xp = get_array_module(x)
        weight = params[0] if has_weight else None
        rstd = 1.0 / xp.sqrt(_row_dot_mean(x, x) + eps)              # (..., 1), a scalar for x (C,)
        y = x * rstd                                                 # (..., C): xhat, the output buffer
        self.x, self.rstd, self.weight, self.has_weight = x, rstd, weight, has_weight
        if weight is not None:
            y *= weight
        return y

    def backward(self, grad):
        need_x = self.needs_input_grad[0]
        need_w = self.has_weight and self.needs_input_grad[1]
        xhat = self.x * self.rstd                                    # (..., C), owned
        dw, dxhat = _weight_grad_and_dxhat(grad, xhat, self.weight, need_w, need_x)
        dx = None
        if need_x:
            term2 = _row_dot_mean(dxhat, xhat)                       # term 2: mean(dxhat * xhat), times xhat
            xhat *= term2
            dxhat -= xhat                                            # term 1 - term 2
            dxhat *= self.rstd
            dx = dxhat
        return (dx, dw) if self.has_weight else dx
