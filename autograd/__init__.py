"""autograd: a small reverse-mode automatic differentiation engine on NumPy (and CuPy) arrays.

    import autograd
    from autograd import Tensor, no_grad
    from autograd import functional as F
    x = Tensor(np.random.randn(3, 4), requires_grad=True)
    y = F.softmax(x, axis=-1).sum()
    autograd.to_dot(y)               # the graph as Graphviz text; autograd.draw_graph(y, "graph.svg") draws it
    y.backward(); x.grad

Writing and testing your own op: docs/writing-ops.md (autograd.Function,
autograd.gradcheck.check_backward, the hypothesis strategies in autograd.testing).

Not to be confused with the unrelated PyPI package named `autograd` (HIPS): this
package shadows it when tinyllm is installed.
"""
from .tensor import Tensor, as_tensor
from .errors import BackwardError
from .mode import debug_backward, enable_grad, grad_enabled, no_grad, saved_array_checks
from .backward import grad
from .function import Function, unbroadcast
from .graph import draw_graph, to_dot
from . import ops
from .ops import (abs, add, astype, clone, concatenate, div, exp, expand, getitem, log, masked_fill, matmul,  # noqa: A004
                  max, maximum, mean, minimum, mul, neg, permute, pow, relu, reshape, sigmoid, split, sqrt, stack,
                  sub, sum, tanh, transpose, var, where)
from . import functional
from .backend import DEFAULT_DTYPE

cat = concatenate

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "grad", "grad_enabled", "as_tensor", "unbroadcast", "functional",
    "BackwardError", "debug_backward", "saved_array_checks", "to_dot", "draw_graph",
    "abs", "add", "astype", "cat", "clone", "concatenate", "div", "exp", "expand", "getitem", "log", "masked_fill",
    "matmul", "max", "maximum", "mean", "minimum", "mul", "neg", "permute", "pow", "relu", "reshape",
    "sigmoid", "split", "sqrt", "stack", "sub", "sum", "tanh", "transpose", "var", "where", "DEFAULT_DTYPE",
]
