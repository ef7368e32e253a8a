"""Movement primitives: reshape, permute, expand, indexing, concatenate, stack, clone.

None of these change values, only where they sit, so each backward moves the gradient
back: reshape reshapes it, permute applies the inverse permutation, expand sums over
the broadcast axes, getitem scatters it into zeros (adding where an advanced index
repeats), concatenate and stack slice it apart, clone passes it through.

Left out: views that alias and write back (every op here returns a new tensor in
the graph), `gather`/`scatter` with an axis argument (use advanced indexing).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, scatter_add
from ..function import Function, unbroadcast


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) into {tuple(shape)}") from None

    def backward(self, grad):
        return grad.reshape(self.in_shape)


class Clone(Function):
    """A copy with memory of its own, in the graph: change the copy's data without touching what an op saved."""

    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        return grad


class Permute(Function):
    def forward(self, a, axes):
        if sorted(int(x) % max(a.ndim, 1) for x in axes) != list(range(a.ndim)):
            raise ValueError(f"permute: {tuple(axes)} is not a permutation of the {a.ndim} axes of a tensor of shape {a.shape}")
        self.axes = tuple(axes)
        return a.transpose(self.axes)

    def backward(self, grad):
        return grad.transpose(tuple(np.argsort(self.axes)))


class Expand(Function):
    """Broadcast to a larger shape (a view); backward sums over the broadcast axes."""

    def forward(self, a, shape):
        self.in_shape = a.shape
        xp = get_array_module(a)
        try:
            return xp.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast shape {a.shape} to {tuple(shape)}") from None

    def backward(self, grad):
        return unbroadcast(grad, self.in_shape)


def _is_basic_index(index) -> bool:
    """True for ints, slices, None and Ellipsis only: such an index never repeats an element."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


class GetItem(Function):
    def forward(self, a, index):
        self.in_shape, self.dtype, self.index = a.shape, a.dtype, index
        self.basic = _is_basic_index(index)
        return a[index]

    def backward(self, grad):
        xp = get_array_module(grad)
        out = xp.zeros(self.in_shape, dtype=grad.dtype)
        if self.basic:
            out[self.index] = grad
        else:
            scatter_add(out, self.index, grad)  # repeated indices accumulate
        return out


class Concatenate(Function):
    def forward(self, *arrays, axis=0):
        xp = get_array_module(arrays[0])
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        try:
            return xp.concatenate(arrays, axis=axis)
        except ValueError:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise ValueError(f"concatenate along axis {axis}: shapes {shapes} differ off that axis") from None

    def backward(self, grad):
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        parts = get_array_module(grad).split(grad, bounds, axis=self.axis)
        return tuple(p if need else None for p, need in zip(parts, self.needs_input_grad))


class Stack(Function):
    def forward(self, *arrays, axis=0):
        xp = get_array_module(arrays[0])
        self.axis = axis
        try:
            return xp.stack(arrays, axis=axis)
        except ValueError:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise ValueError(f"stack: all shapes must be equal, got {shapes}") from None

    def backward(self, grad):
        xp = get_array_module(grad)
        n = grad.shape[self.axis]
        return tuple(xp.take(grad, i, axis=self.axis) if need else None
                     for i, need in zip(range(n), self.needs_input_grad))
