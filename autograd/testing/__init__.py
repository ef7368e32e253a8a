"""Test support: hypothesis strategies and profiles for your own ops, and a strict CPU stand-in for CuPy.

    autograd.testing              the strategies (shapes, broadcastable pairs, matmul shapes, float
                                  arrays ordinary, extreme and tie-free, in every memory layout) and
                                  the hypothesis profiles tinyllm's suite runs under: a public
                                  library (autograd/testing/strategies.py; needs hypothesis, the
                                  `test` extra)
    autograd.testing.fakecupy     the CPU stand-in for CuPy that device "cuda" is with
                                  TINYLLM_FAKE_CUDA=1 (autograd/backend.py loads it; NumPy only)

These are what tinyllm's tests use; they are public so you can test your own Functions the
same way, together with `autograd.gradcheck.check_backward`. The strategies are imported on
first use (`from autograd.testing import float_arrays`), so the stand-in loads without
hypothesis. A complete test file for a new op (docs/writing-ops.md explains each step):

```python
import numpy as np
from hypothesis import given, strategies as st

from autograd import Function, Tensor, unbroadcast
from autograd.backend import get_array_module
from autograd.gradcheck import check_backward
from autograd.testing import broadcastable_pairs, extreme_arrays, float_arrays, load_profile

load_profile()   # "ci" under CI=1, "dev" otherwise, or $HYPOTHESIS_PROFILE; or put this in conftest.py


class LogAddExp(Function):
    # log(exp(a) + exp(b)), broadcasting;  d/da = exp(a - out) = sigmoid(a - b),  d/db = sigmoid(b - a)

    def forward(self, a, b):
        xp = get_array_module(a)              # numpy or cupy: the same code on both
        m = xp.maximum(a, b)                  # shift by the larger: exp never overflows
        out = m + xp.log(xp.exp(a - m) + xp.exp(b - m))
        self.a, self.b, self.out = a, b, out
        return out

    def backward(self, grad):
        xp = get_array_module(grad)
        da = grad * xp.exp(self.a - self.out)      # = sigmoid(a - b), in [0, 1]
        db = grad * xp.exp(self.b - self.out)
        return unbroadcast(da, self.a.shape), unbroadcast(db, self.b.shape)


@given(broadcastable_pairs(), st.data())
def test_logaddexp_backward(pair, data):
    a = data.draw(float_arrays(pair[0]))      # any layout: contiguous, transposed, strided, broadcast
    b = data.draw(float_arrays(pair[1]))
    check_backward(LogAddExp.apply, [a, b], dtype=(np.float64, np.float32))   # float32 beside float64


@given(extreme_arrays((3, 4)), extreme_arrays((3, 4)))
def test_logaddexp_is_finite_and_bounded_at_extremes(a, b):
    x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    out = LogAddExp.apply(x, y)
    out.sum().backward()
    assert np.all(out.data >= np.maximum(a, b))       # log(e^a + e^b) >= max(a, b) ...
    assert np.all(out.data <= np.maximum(a, b) + np.log(2) + 1e-12)   # ... and at most log 2 above it
    assert np.all((x.grad >= 0) & (x.grad <= 1) & (y.grad >= 0) & (y.grad <= 1))
```

Run it with pytest; `HYPOTHESIS_PROFILE=ci` (or CI=1) bounds the examples to 25 per test.
"""
from __future__ import annotations

_STRATEGIES = ("LAYOUTS", "PROFILES", "broadcastable_pairs", "extreme_arrays", "extreme_values", "float_arrays",
               "in_layouts", "load_profile", "matmul_shapes", "separated_arrays", "shapes", "with_layout")
__all__ = list(_STRATEGIES)


def __getattr__(name: str):
    """The strategies, from autograd/testing/strategies.py, imported when first asked for."""
    if name in _STRATEGIES:
        from . import strategies
        return getattr(strategies, name)
    raise AttributeError(f"module 'autograd.testing' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_STRATEGIES))
