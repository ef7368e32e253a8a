"""The primitive ops as functions on Tensors: `autograd.add(a, b)`, `autograd.sum(x, axis=-1)`, ...

The primitive Functions live in this package by family (elementwise, reduce, movement,
matmul); these functions are their public face, and Tensor's operators and methods
(autograd/tensor.py) are these same functions: `a + b` is `add(a, b)`, `x.sum()` is
`sum(x)`. Derived ops are sugar over primitives, as in micrograd: `a - b` has its own
Function for speed, but `x.mean()` over axes, `softmax` and friends in `functional`
compose these. Every wrapper turns Python scalars into tensors of the other operand's dtype.
"""
from __future__ import annotations

import builtins

import numpy as np

from ..function import as_tensor, is_tensor
from .elementwise import (Abs, Add, AsType, Div, Exp, Log, MaskedFill, Maximum, Minimum, Mul, Neg, Pow,
                          Relu, Sigmoid, Sqrt, Sub, Tanh, Where)
from .matmul import MatMul
from .movement import Clone, Concatenate, Expand, GetItem, Permute, Reshape, Stack
from .reduce import Max, Mean, Sum, Var


def _pair(a, b):
    if is_tensor(a):
        return a, as_tensor(b, like=a)
    b = as_tensor(b)
    return as_tensor(a, like=b), b


def add(a, b): return Add.apply(*_pair(a, b))
def sub(a, b): return Sub.apply(*_pair(a, b))
def mul(a, b): return Mul.apply(*_pair(a, b))
def div(a, b): return Div.apply(*_pair(a, b))
def neg(a): return Neg.apply(a)
def exp(a): return Exp.apply(a)
def log(a): return Log.apply(a)
def sqrt(a): return Sqrt.apply(a)
def tanh(a): return Tanh.apply(a)
def sigmoid(a): return Sigmoid.apply(a)
def relu(a): return Relu.apply(a)
def abs(a): return Abs.apply(a)  # noqa: A001 - mirrors numpy's name
def maximum(a, b): return Maximum.apply(*_pair(a, b))
def minimum(a, b): return Minimum.apply(*_pair(a, b))
def matmul(a, b): return MatMul.apply(*_pair(a, b))


def pow(a, exponent):  # noqa: A001 - mirrors numpy's name
    """a ** exponent for a constant exponent (a Python number)."""
    if is_tensor(exponent):
        raise TypeError("pow: the exponent must be a Python number; for a tensor exponent use exp(b * log(a))")
    return Pow.apply(a, exponent=exponent)


def where(cond, a, b):
    """Elementwise `a if cond else b`; cond is a boolean array or tensor (not differentiated)."""
    if is_tensor(cond):
        cond = cond.data
    a, b = _pair(a, b)
    return Where.apply(a, b, cond=cond)


def masked_fill(a, mask, value):
    if is_tensor(mask):
        mask = mask.data
    return MaskedFill.apply(a, mask=mask, value=value)


def sum(a, axis=None, keepdims=False): return Sum.apply(a, axis=axis, keepdims=keepdims)  # noqa: A001
def mean(a, axis=None, keepdims=False): return Mean.apply(a, axis=axis, keepdims=keepdims)
def max(a, axis=None, keepdims=False): return Max.apply(a, axis=axis, keepdims=keepdims)  # noqa: A001
def var(a, axis=None, keepdims=False, ddof=0): return Var.apply(a, axis=axis, keepdims=keepdims, ddof=ddof)


def reshape(a, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape.apply(a, shape=tuple(shape))


def permute(a, *axes):
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    return Permute.apply(a, axes=tuple(axes))


def transpose(a, axis0=-2, axis1=-1):
    """Swap two axes (the last two by default)."""
    axes = list(range(a.ndim))
    axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
    return Permute.apply(a, axes=tuple(axes))


def expand(a, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Expand.apply(a, shape=tuple(shape))


def clone(a):
    """A copy of `a` with memory of its own, in the graph (the gradient passes through unchanged)."""
    return Clone.apply(a)


def astype(a, dtype):
    if np.dtype(dtype) == a.dtype:
        return a
    return AsType.apply(a, dtype=np.dtype(dtype))


def _raw_index(index, xp):
    """The index with tensors replaced by their arrays, and lists and NumPy arrays made xp arrays
    (on a GPU one explicit copy here, instead of CuPy's implicit one in forward and again in backward)."""
    if is_tensor(index):
        return index.data
    if isinstance(index, tuple):
        return tuple(_raw_index(i, xp) if is_tensor(i) or isinstance(i, (list, np.ndarray)) else i for i in index)
    if isinstance(index, (list, np.ndarray)):
        return xp.asarray(index)
    return index


def getitem(a, index):
    return GetItem.apply(a, index=_raw_index(index, a.xp))


def concatenate(tensors, axis=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    return Concatenate.apply(*[as_tensor(t, like=tensors[0]) for t in tensors], axis=axis)


def stack(tensors, axis=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    return Stack.apply(*[as_tensor(t, like=tensors[0]) for t in tensors], axis=axis)


def split(a, sections, axis=-1):
    """Split into `sections` equal parts (an int) or parts of the given sizes (a list)."""
    n = a.shape[axis]
    if isinstance(sections, int):
        if sections <= 0 or n % sections:
            raise ValueError(f"split: axis {axis} of size {n} does not divide into {sections} equal parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} add up to {builtins.sum(sizes)}, not the axis size {n}")
    axis = axis % a.ndim
    parts, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        parts.append(getitem(a, index))
        start += size
    return parts
