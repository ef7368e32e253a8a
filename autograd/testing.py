"""Hypothesis strategies for testing ops: shapes, broadcastable shape pairs, float arrays.

    from hypothesis import given
    from autograd.testing import shapes, broadcastable_pairs, float_arrays
    @given(broadcastable_pairs(), st.data())
    def test_my_op(pair, data):
        a = data.draw(float_arrays(pair[0])); b = data.draw(float_arrays(pair[1])); ...

These are what tinyllm's own tests use; they are public so you can test your own
Functions the same way, together with `autograd.gradcheck.check_backward`.
Needs hypothesis (the `test` extra).
"""
from __future__ import annotations

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("autograd.testing needs hypothesis: pip install 'tinyllm[test]'") from exc


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


def separated_arrays(shape, dtype=np.float64, min_value: float = -3.0, max_value: float = 3.0, gap: float = 1e-3):
    """Float arrays whose elements differ pairwise by at least `gap`: max/min have a unique
    winner, so finite differences do not straddle a tie."""
    count = int(np.prod(shape)) if len(shape) else 1
    span = max_value - min_value
    if count * gap > span:
        raise ValueError(f"cannot fit {count} values {gap} apart in [{min_value}, {max_value}]")
    return st.permutations(range(count)).map(
        lambda perm: (min_value + (np.asarray(perm, dtype=np.float64) + 0.5) * (span / count)).reshape(shape).astype(dtype))
