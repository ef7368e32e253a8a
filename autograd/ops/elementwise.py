"""Elementwise primitives: arithmetic, exp/log/sqrt, activations, comparisons-as-masks, casts.

Each Function computes on raw xp arrays and saves only what its backward reads.
Binary ops broadcast like NumPy, and their backward sums each gradient back to the
input's shape (`unbroadcast`). Scalars are wrapped in the tensor's dtype by the
wrappers in `autograd.ops`, so `x * 2` never upcasts a float32 tensor.

Left out: in-place variants, integer gradients, complex numbers.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..function import Function, unbroadcast


class Add(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, grad):
        return unbroadcast(grad, self.a_shape), unbroadcast(grad, self.b_shape)


class Sub(Function):
    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, grad):
        grad_b = -unbroadcast(grad, self.b_shape) if self.needs_input_grad[1] else None
        return unbroadcast(grad, self.a_shape), grad_b


class Mul(Function):
    def forward(self, a, b):
        # d(ab)/da = b and d(ab)/db = a: each side saves the *other* operand, only if needed.
        self.a = a if self.needs_input_grad[1] else None
        self.b = b if self.needs_input_grad[0] else None
        self.a_shape, self.b_shape = a.shape, b.shape
        return a * b

    def backward(self, grad):
        grad_a = unbroadcast(grad * self.b, self.a_shape) if self.needs_input_grad[0] else None
        grad_b = unbroadcast(grad * self.a, self.b_shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    def forward(self, a, b):
        out = a / b
        self.b = b
        self.out = out if self.needs_input_grad[1] else None
        self.a_shape, self.b_shape = a.shape, b.shape
        return out

    def backward(self, grad):
        # d(a/b)/da = 1/b;  d(a/b)/db = -a/b^2 = -out/b
        grad_over_b = grad / self.b
        grad_a = unbroadcast(grad_over_b, self.a_shape) if self.needs_input_grad[0] else None
        grad_b = unbroadcast(-grad_over_b * self.out, self.b_shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


class Pow(Function):
    """a ** p for a constant (non-tensor) exponent p."""

    def forward(self, a, exponent):
        self.a, self.exponent = a, exponent
        return a ** exponent

    def backward(self, grad):
        p = self.exponent
        return grad * (p * self.a ** (p - 1))


class Exp(Function):
    def forward(self, a):
        self.out = get_array_module(a).exp(a)
        return self.out

    def backward(self, grad):
        return grad * self.out


class Log(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).log(a)

    def backward(self, grad):
        return grad / self.a


class Sqrt(Function):
    def forward(self, a):
        self.out = get_array_module(a).sqrt(a)
        return self.out

    def backward(self, grad):
        # d sqrt(a) = 1 / (2 sqrt(a))
        return grad / (2 * self.out)


class Tanh(Function):
    def forward(self, a):
        self.out = get_array_module(a).tanh(a)
        return self.out

    def backward(self, grad):
        return grad * (1 - self.out * self.out)


class Sigmoid(Function):
    def forward(self, a):
        xp = get_array_module(a)
        # Stable on both tails: exp only ever sees non-positive arguments.
        e = xp.exp(-xp.abs(a))
        self.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, grad):
        return grad * (self.out * (1 - self.out))


class Relu(Function):
    def forward(self, a):
        self.mask = a > 0
        return a * self.mask

    def backward(self, grad):
        return grad * self.mask


class Abs(Function):
    def forward(self, a):
        xp = get_array_module(a)
        self.sign = xp.sign(a)
        return xp.abs(a)

    def backward(self, grad):
        return grad * self.sign  # subgradient 0 at a == 0


class Maximum(Function):
    """Elementwise max; where a == b the gradient is split evenly between both."""

    def forward(self, a, b):
        xp = get_array_module(a)
        self.a_shape, self.b_shape = a.shape, b.shape
        self.share_a = (a > b) + 0.5 * (a == b)
        return xp.maximum(a, b)

    def backward(self, grad):
        share_a = self.share_a.astype(grad.dtype, copy=False)
        return unbroadcast(grad * share_a, self.a_shape), unbroadcast(grad * (1 - share_a), self.b_shape)


class Minimum(Maximum):
    def forward(self, a, b):
        xp = get_array_module(a)
        self.a_shape, self.b_shape = a.shape, b.shape
        self.share_a = (a < b) + 0.5 * (a == b)
        return xp.minimum(a, b)


class Where(Function):
    """where(cond, a, b): cond is a boolean array (not differentiated)."""

    def forward(self, a, b, cond):
        self.cond = cond
        self.a_shape, self.b_shape = a.shape, b.shape
        return get_array_module(a).where(cond, a, b)

    def backward(self, grad):
        xp = get_array_module(grad)
        zero = xp.zeros((), dtype=grad.dtype)
        grad_a = unbroadcast(xp.where(self.cond, grad, zero), self.a_shape) if self.needs_input_grad[0] else None
        grad_b = unbroadcast(xp.where(self.cond, zero, grad), self.b_shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class MaskedFill(Function):
    """x with `value` wherever mask is True; the filled places get no gradient."""

    def forward(self, a, mask, value):
        xp = get_array_module(a)
        self.keep = ~mask
        self.a_shape = a.shape
        return xp.where(mask, xp.asarray(value, dtype=a.dtype), a)

    def backward(self, grad):
        return unbroadcast(grad * self.keep, self.a_shape)


class AsType(Function):
    def forward(self, a, dtype):
        self.in_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, grad):
        return grad.astype(self.in_dtype)
