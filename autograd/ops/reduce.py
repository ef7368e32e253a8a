"""Reductions over an axis tuple (or all axes), with keepdims: sum, mean, max, var.

Backward broadcasts the output gradient back over the reduced axes: sum copies it,
mean divides by the count, max sends it to the maxima (split evenly between ties),
var multiplies by 2 (x - mean) / (n - ddof).

Left out: cumulative reductions, argmax (not differentiable; use the array), median.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..function import Function


def normalize_axis(axis, ndim: int) -> tuple:
    """None | int | tuple of ints -> a sorted tuple of non-negative axes, checked."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis}")
    return tuple(sorted(out))


def expand_reduced(grad, axes: tuple, keepdims: bool, shape: tuple):
    """Broadcast a reduced gradient back to the input's `shape` (a read-only view)."""
    xp = get_array_module(grad)
    if not keepdims and axes:
        grad = xp.expand_dims(grad, axes)
    return xp.broadcast_to(grad, shape)


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.axes = normalize_axis(axis, a.ndim)
        self.keepdims, self.shape = keepdims, a.shape
        return a.sum(axis=self.axes, keepdims=keepdims)

    def backward(self, grad):
        return expand_reduced(grad, self.axes, self.keepdims, self.shape)


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.axes = normalize_axis(axis, a.ndim)
        self.keepdims, self.shape = keepdims, a.shape
        self.count = int(np.prod([a.shape[i] for i in self.axes])) if self.axes else 1
        return a.mean(axis=self.axes, keepdims=keepdims)

    def backward(self, grad):
        return expand_reduced(grad / self.count, self.axes, self.keepdims, self.shape)


class Max(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.axes = normalize_axis(axis, a.ndim)
        self.keepdims = keepdims
        out = a.max(axis=self.axes, keepdims=True)
        is_max = a == out
        # Ties share the gradient evenly, so it still sums to the output gradient.
        self.share = is_max / is_max.sum(axis=self.axes, keepdims=True)
        return out if keepdims else out.squeeze(axis=self.axes)

    def backward(self, grad):
        xp = get_array_module(grad)
        if not self.keepdims and self.axes:
            grad = xp.expand_dims(grad, self.axes)
        return grad * self.share.astype(grad.dtype, copy=False)


class Var(Function):
    """Variance with `ddof` (0: population, as NumPy's default; 1: unbiased)."""

    def forward(self, a, axis=None, keepdims=False, ddof=0):
        self.axes = normalize_axis(axis, a.ndim)
        self.keepdims = keepdims
        n = int(np.prod([a.shape[i] for i in self.axes])) if self.axes else 1
        if n - ddof <= 0:
            raise ValueError(f"var over {n} elements with ddof={ddof} is undefined")
        self.centered = a - a.mean(axis=self.axes, keepdims=True)
        self.scale = 2.0 / (n - ddof)
        return (self.centered * self.centered).sum(axis=self.axes, keepdims=keepdims) / (n - ddof)

    def backward(self, grad):
        xp = get_array_module(grad)
        if not self.keepdims and self.axes:
            grad = xp.expand_dims(grad, self.axes)
        # d var / d a_i = 2 (a_i - mean) / (n - ddof); the mean's own term sums to zero.
        return grad * (self.scale * self.centered)
