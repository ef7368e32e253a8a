"""Hypothesis strategies and settings for testing ops: shapes, broadcastable shape pairs, float
arrays (ordinary and extreme), and the test profiles tinyllm's own suite runs with.

These are what tinyllm's tests use; they are public so you can test your own Functions the
same way, together with `autograd.gradcheck.check_backward`. Needs hypothesis (the `test`
extra). A complete test file for a new op (docs/writing-ops.md explains each step):

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
    a = data.draw(float_arrays(pair[0]))
    b = data.draw(float_arrays(pair[1]))
    check_backward(LogAddExp.apply, [a, b])


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

import os

import numpy as np

try:
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.errors import InvalidArgument
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("autograd.testing needs hypothesis: pip install 'tinyllm[test]'") from exc

# name -> settings: "ci" is bounded and repeatable (derandomized), "dev" explores more.
PROFILES = {
    "ci": dict(max_examples=25, deadline=None, derandomize=True, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]),
    "dev": dict(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
}


def load_profile(name: str | None = None) -> str:
    """Register the "ci" and "dev" hypothesis profiles and load one; returns its name.

    The profile is `name` if given, else $HYPOTHESIS_PROFILE, else "ci" when $CI is set,
    else "dev". Call it once, at the top of a conftest.py or a test file (tinyllm's
    tests/conftest.py does). A profile you registered yourself can be named too.
    """
    for profile, options in PROFILES.items():
        settings.register_profile(profile, **options)
    chosen = name or os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    try:
        settings.get_profile(chosen)     # first: load_profile would record an unknown name before failing
    except InvalidArgument:
        raise ValueError(f"unknown hypothesis profile {chosen!r}: use one of {', '.join(PROFILES)}, "
                         "or register it first with hypothesis.settings.register_profile") from None
    settings.load_profile(chosen)
    return chosen


def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 5):
    """Array shapes, 0-d and size-1 axes included by default."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


@st.composite
def broadcastable_pairs(draw, min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 4):
    """(shape_a, shape_b) that broadcast together, in either order, often with size-1 axes."""
    base = draw(shapes(min_dims, max_dims, min_side, max_side))
    other = draw(hnp.broadcastable_shapes(base, min_dims=0, max_dims=max_dims, min_side=min_side, max_side=max_side))
    return (base, other) if draw(st.booleans()) else (other, base)


@st.composite
def matmul_shapes(draw, max_batch_dims: int = 2, max_side: int = 5):
    """(shape_a, shape_b) valid for matmul: 1-D vectors, matrices and broadcast batches."""
    n, k, m = (draw(st.integers(1, max_side)) for _ in range(3))
    batch = draw(shapes(0, max_batch_dims, 1, 3))
    other_batch = draw(hnp.broadcastable_shapes(batch, min_dims=0, max_dims=max_batch_dims, max_side=3))
    a = (k,) if draw(st.integers(0, 4)) == 0 else tuple(batch) + (n, k)
    b = (k,) if draw(st.integers(0, 4)) == 0 else tuple(other_batch) + (k, m)
    return a, b


def float_arrays(shape, dtype=np.float64, min_value: float = -3.0, max_value: float = 3.0,
                 exclude_near_zero: float = 0.0):
    """Finite float arrays in [min_value, max_value]; optionally keep |x| >= exclude_near_zero
    (for ops such as log, sqrt or division, and for kinks like relu and abs)."""
    elements = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, width=64)
    if exclude_near_zero > 0:
        elements = elements.filter(lambda v: abs(v) >= exclude_near_zero)
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


def extreme_values(dtype=np.float64, max_abs: float = 1e4):
    """Finite floats of `dtype` where careless numerics break, with ordinary ones mixed in.

    The special values: 0 and -0, the smallest subnormal and normal numbers, 1 - eps and
    1 + eps, exp's overflow point (about 88.72 in float32, 709.78 in float64) and just past
    it, and +-max_abs (the default 1e4 overflows exp in both dtypes, while x * x stays
    finite); every value is in [-max_abs, max_abs]. A stable op gives finite outputs and
    gradients for all of them; a gradient check there is not meaningful (finite differences
    at 1e4 or at 1e-308 measure rounding), so test properties: finiteness, bounds, limits.
    """
    dtype = np.dtype(dtype)
    info = np.finfo(dtype)
    max_abs = float(dtype.type(max_abs))  # representable, as st.floats(width=...) requires
    overflow = float(np.log(info.max))
    magnitudes = [0.0, float(info.smallest_subnormal), float(info.tiny), 1.0 - float(info.epsneg),
                  1.0 + float(info.eps), 1.0, overflow * 0.999, overflow * 1.001, 30.0, max_abs]
    special = sorted({float(dtype.type(sign * m)) for m in magnitudes if m <= max_abs for sign in (1.0, -1.0)})
    ordinary = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)
    return st.one_of(st.sampled_from(special), ordinary)


def extreme_arrays(shape, dtype=np.float64, max_abs: float = 1e4):
    """Arrays of `shape` whose elements come from extreme_values(dtype, max_abs)."""
    return hnp.arrays(np.dtype(dtype), shape, elements=extreme_values(dtype, max_abs))


def separated_arrays(shape, dtype=np.float64, min_value: float = -3.0, max_value: float = 3.0, gap: float = 1e-3):
    """Float arrays whose elements differ pairwise by at least `gap`: max/min have a unique
    winner, so finite differences do not straddle a tie."""
    count = int(np.prod(shape)) if len(shape) else 1
    span = max_value - min_value
    if count * gap > span:
        raise ValueError(f"cannot fit {count} values {gap} apart in [{min_value}, {max_value}]")
    return st.permutations(range(count)).map(
        lambda perm: (min_value + (np.asarray(perm, dtype=np.float64) + 0.5) * (span / count)).reshape(shape).astype(dtype))
