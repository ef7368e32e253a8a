"""Matrix product with NumPy's matmul semantics: batched, broadcasting, and 1-D cases.

For Y = X W with X (m, k), W (k, n) and the upstream gradient g = dY (m, n):

    dX = g W^T   (m, n) @ (n, k)        dW = X^T g   (k, m) @ (m, n)

(derivation and notation: docs/derivations/matmul.md; here `a` is X and `b` is W).
Batch dimensions broadcast, so each gradient is summed back to its input's shape;
a 1-D operand is treated as a row (left) or column (right) vector and squeezed back.
When W is a plain matrix shared across a batch of X (a linear layer), dW is computed
as one (k, B m) @ (B m, n) product over the flattened batch instead of a batch of
products summed afterwards: same numbers, far less memory.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..function import Function, unbroadcast


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must have at least one dimension, got shapes {a.shape} and {b.shape}")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if ka != kb:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape} ({ka} != {kb})")
        xp = get_array_module(a)
        self.a = a if self.needs_input_grad[1] else None
        self.b = b if self.needs_input_grad[0] else None
        self.a_shape, self.b_shape = a.shape, b.shape
        try:
            return xp.matmul(a, b)
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None

    def backward(self, grad):
        a_shape, b_shape = self.a_shape, self.b_shape
        # Promote 1-D operands to matrices so one formula covers every case.
        if len(a_shape) == 1:
            grad = grad[..., None, :] if len(b_shape) > 1 else grad[..., None]
        if len(b_shape) == 1:
            grad = grad[..., None]
        grad_a = grad_b = None
        if self.needs_input_grad[0]:
            b = self.b if len(b_shape) > 1 else self.b[:, None]
            grad_a = grad @ b.swapaxes(-1, -2)                             # (..., m, n) @ (..., n, k)
            grad_a = unbroadcast(grad_a, a_shape if len(a_shape) > 1 else (1,) + a_shape).reshape(a_shape)
        if self.needs_input_grad[1]:
            a = self.a if len(a_shape) > 1 else self.a[None, :]
            if len(b_shape) <= 2 and a.ndim > 2:
                # Shared weight: flatten the batch, one (k, B m) @ (B m, n) product.
                k = a.shape[-1]
                grad_b = a.reshape(-1, k).T @ grad.reshape(-1, grad.shape[-1])
            else:
                grad_b = a.swapaxes(-1, -2) @ grad                         # (..., k, m) @ (..., m, n)
                grad_b = unbroadcast(grad_b, b_shape if len(b_shape) > 1 else b_shape + (1,))
            grad_b = grad_b.reshape(b_shape)
        return grad_a, grad_b
