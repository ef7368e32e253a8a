"""Shared by the tests in tests/layers/: the three-way check of a hand-derived layer.

    hand-derived backward == composed backward (float64, to ~1e-12 of the gradients' scale)
    hand-derived backward == float64 central differences (check_backward)

Not a test module itself (no test_ prefix); the test files import it by name.
"""
import numpy as np

from autograd import Tensor
from autograd.gradcheck import check_backward


def forward_backward(fn, arrays, grad_output):
    """fn(*tensors) and the gradient of <fn(*tensors), grad_output> for every floating array."""
    tensors = [Tensor(np.array(a, copy=True), requires_grad=np.issubdtype(np.asarray(a).dtype, np.floating))
               for a in arrays]
    y = fn(*tensors)
    y.backward(grad_output)
    return y.data, [t.grad for t in tensors if t.requires_grad]


def assert_close_scaled(actual, expected, tol, what):
    """|actual - expected| <= tol * max(1, max |expected|): a relative-to-scale comparison."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual}"
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    err = float(np.abs(actual - expected).max()) if expected.size else 0.0
    assert err <= tol * scale, f"{what}: max |diff| {err:.3g} > {tol:g} * {scale:.3g}"


def assert_three_way(derived_fn, composed_fn, arrays, tol=1e-12, gradcheck=True, seed=0, **check_kwargs):
    """The hand-derived output and gradients equal the composed ones to `tol`; the hand-derived
    path passes check_backward."""
    arrays = [np.asarray(a, dtype=np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a)
              for a in arrays]
    y = derived_fn(*[Tensor(a) for a in arrays])
    rng = np.random.default_rng(seed)
    grad_output = rng.standard_normal(y.shape)
    y_derived, g_derived = forward_backward(derived_fn, arrays, grad_output)
    y_composed, g_composed = forward_backward(composed_fn, arrays, grad_output)
    assert_close_scaled(y_derived, y_composed, tol, "output")
    for i, (a, b) in enumerate(zip(g_derived, g_composed)):
        assert_close_scaled(a, b, tol, f"gradient of input {i}")
    if gradcheck:
        result = check_backward(derived_fn, arrays, seed=seed, **check_kwargs)
        assert result.passed
    return y_derived, g_derived
