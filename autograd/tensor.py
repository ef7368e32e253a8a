"""Tensor: an xp array that can record the ops applied to it, and its operators.

A Tensor wraps `data` (a NumPy or CuPy array). When it `requires_grad`, ops record the
Function that produced each result (`grad_fn`), and `backward()` walks that graph from the
output to the leaves (autograd/backward.py: the order, the contract checks, split_backward).

Every operator and method that computes is one primitive op of autograd/ops/ (forward and
backward side by side there), listed in the class below: `a + b` is `ops.add(a, b)`, which is
`Add.apply(a, b)`; `x.sum(axis=-1)` is `ops.sum`, `x[i]` is `ops.getitem`. Comparisons give
boolean tensors outside the graph (masks), never gradients.

Function.apply (autograd/function.py) returns Tensors, but cannot import this module (these
operators call the ops, which are Functions): `use_tensor_class(Tensor)` at the end of this
file hands the class over.

`no_grad()` switches recording off (evaluation, sampling, optimizer steps); the switch is per
thread, so threads can record their own graphs at the same time (autograd/mode.py). `grad(output,
inputs)` returns the gradients instead of accumulating them into `.grad`: threads that
backpropagate through graphs sharing leaves (tinyllm/threads.py) use it, so no two of them ever
write the same `.grad`.

Left out: gradients of non-leaf tensors (`retain_grad`), hooks, double backward, in-place ops on
tensors that require grad (changing a tensor's data in place between forward and backward is
caught: autograd/saved.py), sparse and complex tensors.
"""
from __future__ import annotations

import operator

import numpy as np

from . import backend, ops
from .backward import WeightGradients, accumulate, backpropagate, grad, seed_gradient, split_backward  # noqa: F401
from .errors import BackwardError  # noqa: F401 - autograd.tensor.BackwardError, as before
from .function import as_tensor, use_tensor_class  # noqa: F401
from .mode import debug_backward, enable_grad, grad_enabled, no_grad, saved_array_checks  # noqa: F401


def _is_float(dtype) -> bool:
    return np.issubdtype(np.dtype(dtype), np.floating)


def _compare(op):
    """A comparison operator: a boolean tensor outside the graph (a mask), never a gradient."""
    def compare(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor.constant(op(self.data, other))   # the arrays' own operator: NumPy's or CuPy's
    compare.__name__ = f"__{op.__name__}__"
    return compare


class Tensor:
    """An n-dimensional array that can record the ops applied to it, for backpropagation.

    `name=` is a label for drawings of the graph (autograd.to_dot) and for error messages, nothing else.
    """

    __slots__ = ("data", "grad", "requires_grad", "grad_fn", "graph_freed", "name", "__weakref__")
    __array_priority__ = 1000  # make `ndarray * Tensor` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if device is not None:
            data = backend.to_device(data, device) if hasattr(data, "shape") else backend.module_for(device).asarray(data)
        xp = backend.get_array_module(data)
        if isinstance(data, xp.ndarray):
            if dtype is not None and data.dtype != np.dtype(dtype):
                data = data.astype(dtype)
        else:  # Python scalars and lists, or NumPy scalars
            was_array_scalar = isinstance(data, np.generic)
            data = xp.asarray(data, dtype=dtype)
            if dtype is None and not was_array_scalar and data.dtype == np.float64:
                data = data.astype(backend.DEFAULT_DTYPE)
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {data.dtype}; "
                "convert first, e.g. Tensor(x.astype('float32'), requires_grad=True)")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.grad_fn = None
        self.graph_freed = False   # True once a backward() without retain_graph=True freed the graph behind it
        self.name = name

    @classmethod
    def constant(cls, data) -> "Tensor":
        """A Tensor that needs no gradient around `data`, an xp array used as it is (no copy,
        no dtype or device change, no checks): the fast way to hand an array to an op."""
        t = object.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = False
        t.grad_fn = None
        t.graph_freed = False
        t.name = None
        return t

    # ---- array facts ---------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def xp(self):
        return backend.get_array_module(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        fn = f", grad_fn={self.grad_fn.name}" if self.grad_fn is not None else ""
        return f"Tensor({backend.to_numpy(self.data)!r}{grad}{fn})"

    # ---- conversions ---------------------------------------------------------------
    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares memory)."""
        return Tensor.constant(self.data)

    def to(self, device: str) -> "Tensor":
        """A copy on `device` ('cpu' or 'cuda'), cut from the graph; self if already there."""
        if device == self.device:
            return self
        moved = Tensor.constant(backend.to_device(self.data, device))
        moved.requires_grad = self.requires_grad and self.is_leaf
        return moved

    def zero_grad(self) -> None:
        self.grad = None

    # ---- backpropagation (autograd/backward.py) -------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's `.grad`.

        `grad` defaults to 1 for a one-element tensor; any other tensor needs it given.
        """
        __tracebackhide__ = True  # pytest shows the caller's line and the failing backward, not the engine
        backpropagate(self, seed_gradient(self, grad, "backward()"), retain_graph, accumulate)

    def to_dot(self, names=None) -> str:
        """The graph that produced this tensor, as Graphviz DOT text: autograd.to_dot(self, names)."""
        from .graph import to_dot
        return to_dot(self, names=names)

    def __hash__(self):
        return id(self)

    # ---- operators and methods: the primitive ops of autograd/ops/ ------------------------------
    __add__ = ops.add
    __sub__ = ops.sub
    __mul__ = ops.mul
    __truediv__ = ops.div
    __matmul__ = ops.matmul
    __pow__ = pow = ops.pow
    __neg__ = ops.neg
    __abs__ = abs = ops.abs
    __getitem__ = ops.getitem

    def __radd__(self, other):
        return ops.add(other, self)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    __lt__ = _compare(operator.lt)
    __le__ = _compare(operator.le)
    __gt__ = _compare(operator.gt)
    __ge__ = _compare(operator.ge)

    exp = ops.exp
    log = ops.log
    sqrt = ops.sqrt
    tanh = ops.tanh
    sigmoid = ops.sigmoid
    relu = ops.relu
    sum = ops.sum
    mean = ops.mean
    max = ops.max
    var = ops.var
    reshape = view = ops.reshape
    permute = ops.permute
    transpose = ops.transpose
    expand = ops.expand
    astype = ops.astype
    masked_fill = ops.masked_fill
    split = ops.split
    clone = ops.clone

    @property
    def T(self) -> "Tensor":
        """All axes reversed (a matrix transposed)."""
        return ops.permute(self, tuple(reversed(range(self.ndim))))

    def float(self) -> "Tensor":
        return ops.astype(self, np.float32)

    def double(self) -> "Tensor":
        return ops.astype(self, np.float64)


use_tensor_class(Tensor)
