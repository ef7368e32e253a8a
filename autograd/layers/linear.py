"""Linear layer: y = x W^T + b, with W stored (out, in) as in PyTorch and Hugging Face files.

    x: (..., in), W: (out, in), b: (out,)  ->  y: (..., out)
    dx = g W            dW = g^T x            db = sum over rows of g
(docs/derivations/matmul.md: the same rule as C = A B with B = W^T.)
The batch dimensions are flattened to rows so each gradient is one BLAS call. One vector
x (in,) is a matrix-vector product W x (one-row decoding, tinyllm/decode.py: about 30%
faster than the same row as a (1, in) matrix times W^T); backward treats it as one row.
"""
from __future__ import annotations

from ..function import Function


class LinearFunction(Function):
    def forward(self, x, weight, bias=None):
        self.x_shape = x.shape
        self.weight = weight if self.needs_input_grad[0] else None
        if x.ndim == 1:                                             # one vector: backward sees one row
            self.x2 = x[None] if self.needs_input_grad[1] else None  # (1, in)
            y = weight @ x                                          # (out, in) @ (in,)
        else:
            x2 = x.reshape(-1, x.shape[-1])                         # (N, in)
            self.x2 = x2 if self.needs_input_grad[1] else None
            y = (x2 @ weight.T).reshape(*x.shape[:-1], weight.shape[0])   # (N, in) @ (in, out)
        if bias is not None:
            y += bias
        return y

    def backward(self, grad):
        g2 = grad.reshape(-1, grad.shape[-1])                       # (N, out)
        dx = (g2 @ self.weight).reshape(self.x_shape) if self.needs_input_grad[0] else None
        dW = g2.T @ self.x2 if self.needs_input_grad[1] else None   # (out, N) @ (N, in)
        if len(self.needs_input_grad) == 3:
            db = g2.sum(axis=0) if self.needs_input_grad[2] else None
            return dx, dW, db
        return dx, dW
