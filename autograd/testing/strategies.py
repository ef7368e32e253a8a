"""Hypothesis strategies and profiles for testing ops (public as `autograd.testing`).

Shapes, broadcastable shape pairs, matmul shapes, float arrays (ordinary, extreme, tie-free)
in any memory layout, and the test profiles tinyllm's own suite runs with. Imports NumPy and
hypothesis only (the `test` extra), nothing of the engine. The example test file is in the
package docstring (autograd/testing/__init__.py); docs/writing-ops.md explains each step.
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


LAYOUTS = ("contiguous", "transposed", "strided", "broadcast")   # what the array strategies draw from


def with_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """`a`'s values in a memory layout (a NumPy array of a's shape and dtype, of its own memory):

        contiguous   C order, as NumPy makes arrays
        transposed   the axes' strides reversed (Fortran order), as `x.T` of a C array is
        strided      every other element of a buffer twice as long in the last axis, as `x[..., ::2]` is
        broadcast    the first axis longer than 1 repeats its first entry (a read-only view with a 0
                     stride, as np.broadcast_to makes): the values along that axis become equal

    A layout an array cannot have (transposed with fewer than two axes longer than 1, any layout
    of a 0-d or one-element array) falls back to the next one that it can: strided, then contiguous.
    """
    a = np.array(a, copy=True, order="C")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if layout == "contiguous" or a.size < 2:
        return a
    if layout == "broadcast":
        axis = next(i for i, n in enumerate(a.shape) if n > 1)
        return np.broadcast_to(a[(slice(None),) * axis + (slice(0, 1),)], a.shape)
    if layout == "transposed" and sum(n > 1 for n in a.shape) >= 2:
        return np.asfortranarray(a)
    buffer = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    buffer[..., ::2] = a
    return buffer[..., ::2]


def in_layouts(arrays, layouts=LAYOUTS):
    """The arrays `arrays` draws, each in a layout drawn from `layouts` (shrinking towards the first)."""
    layouts = tuple(layouts)
    if layouts == ("contiguous",):
        return arrays
    return st.tuples(arrays, st.sampled_from(layouts)).map(lambda pair: with_layout(*pair))


def float_arrays(shape, dtype=np.float64, min_value: float = -3.0, max_value: float = 3.0,
                 exclude_near_zero: float = 0.0, layouts=LAYOUTS):
    """Finite float arrays in [min_value, max_value]; optionally keep |x| >= exclude_near_zero
    (for ops such as log, sqrt or division, and for kinks like relu and abs).

    Drawn in every layout of LAYOUTS (with_layout): C-contiguous, transposed, strided and
    broadcast (read-only, with equal values along an axis), so a forward or backward that is
    right only for contiguous arrays fails; `layouts=("contiguous",)` draws plain arrays only.
    """
    elements = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, width=64)
    if exclude_near_zero > 0:
        elements = elements.filter(lambda v: abs(v) >= exclude_near_zero)
    return in_layouts(hnp.arrays(np.dtype(dtype), shape, elements=elements), layouts)


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


def extreme_arrays(shape, dtype=np.float64, max_abs: float = 1e4, layouts=LAYOUTS):
    """Arrays of `shape` whose elements come from extreme_values(dtype, max_abs), in every layout
    of LAYOUTS (as float_arrays)."""
    return in_layouts(hnp.arrays(np.dtype(dtype), shape, elements=extreme_values(dtype, max_abs)), layouts)


def separated_arrays(shape, dtype=np.float64, min_value: float = -3.0, max_value: float = 3.0, gap: float = 1e-3,
                     layouts=("contiguous", "transposed", "strided")):
    """Float arrays whose elements differ pairwise by at least `gap`: max/min have a unique
    winner, so finite differences do not straddle a tie. Contiguous, transposed or strided
    (a broadcast array repeats values, so it is not among the default layouts)."""
    count = int(np.prod(shape)) if len(shape) else 1
    span = max_value - min_value
    if count * gap > span:
        raise ValueError(f"cannot fit {count} values {gap} apart in [{min_value}, {max_value}]")
    return in_layouts(st.permutations(range(count)).map(
        lambda perm: (min_value + (np.asarray(perm, dtype=np.float64) + 0.5) * (span / count)).reshape(shape).astype(dtype)),
        layouts)
