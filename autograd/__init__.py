"""autograd: a small reverse-mode automatic differentiation engine on NumPy (and CuPy) arrays.

    from autograd import Tensor, no_grad
    from autograd import functional as F
    x = Tensor(np.random.randn(3, 4), requires_grad=True)
    F.softmax(x, axis=-1).sum().backward(); x.grad

Not to be confused with the unrelated PyPI package named `autograd` (HIPS): this
package shadows it when tinyllm is installed.
"""
from .tensor import Tensor, as_tensor, enable_grad, grad, grad_enabled, no_grad  # noqa: I001
from .function import Function, unbroadcast
from . import ops
from .ops import (abs, add, astype, concatenate, div, exp, expand, getitem, log, masked_fill, matmul, max,  # noqa: A004
                  maximum, mean, minimum, mul, neg, permute, pow, relu, reshape, sigmoid, split, sqrt, stack,
                  sub, sum, tanh, transpose, var, where)
from . import functional
from .backend import DEFAULT_DTYPE

cat = concatenate

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "grad", "grad_enabled", "as_tensor", "unbroadcast", "functional",
    "abs", "add", "astype", "cat", "concatenate", "div", "exp", "expand", "getitem", "log", "masked_fill",
    "matmul", "max", "maximum", "mean", "minimum", "mul", "neg", "permute", "pow", "relu", "reshape",
    "sigmoid", "split", "sqrt", "stack", "sub", "sum", "tanh", "transpose", "var", "where", "DEFAULT_DTYPE",
]
