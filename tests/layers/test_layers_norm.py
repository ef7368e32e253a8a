"""LayerNorm and RMSNorm: hand-derived = composed = finite differences, invariances, extreme inputs, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from autograd import Tensor
from autograd import functional as F
from autograd.testing import float_arrays, shapes
from .layers_threeway import assert_close_scaled, assert_three_way, forward_backward

AFFINE = [(True, True), (True, False), (False, True), (False, False)]


def _layer_norm(composed, eps, has_weight, has_bias):
    def fn(x, *params):
        params = list(params)
        w = params.pop(0) if has_weight else None
        b = params.pop(0) if has_bias else None
        return F.layer_norm(x, w, b, eps=eps, composed=composed)
    return fn


def _rms_norm(composed, eps, has_weight):
    def fn(x, *params):
        return F.rms_norm(x, params[0] if has_weight else None, eps=eps, composed=composed)
    return fn


def _params(data, C, count):
    return [data.draw(float_arrays((C,))) for _ in range(count)]


@pytest.mark.parametrize("has_weight,has_bias", AFFINE)
@given(shape=shapes(min_dims=1, max_dims=3, min_side=1, max_side=6), data=st.data())
def test_layer_norm_three_way(has_weight, has_bias, shape, data):
    x = data.draw(float_arrays(shape))
    # A near-constant row makes the norm's derivative huge (1/sqrt(eps)); spread rows out.
    x = x + np.linspace(-1, 1, shape[-1])
    arrays = [x] + _params(data, shape[-1], has_weight + has_bias)
    assert_three_way(_layer_norm(False, 1e-5, has_weight, has_bias), _layer_norm(True, 1e-5, has_weight, has_bias),
                     arrays)


@pytest.mark.parametrize("has_weight", [True, False])
@given(shape=shapes(min_dims=1, max_dims=3, min_side=1, max_side=6), data=st.data())
def test_rms_norm_three_way(has_weight, shape, data):
    x = data.draw(float_arrays(shape)) + np.linspace(0.5, 1.5, shape[-1])
    arrays = [x] + _params(data, shape[-1], int(has_weight))
    assert_three_way(_rms_norm(False, 1e-6, has_weight), _rms_norm(True, 1e-6, has_weight), arrays)


@pytest.mark.parametrize("has_weight,has_bias", AFFINE)
@given(C=st.integers(1, 9), data=st.data())
def test_one_vector_is_one_row(has_weight, has_bias, C, data):
    """A vector x (C,) (scalar statistics inside the Functions, for one-row decoding) gives the output
    and gradients of the one-row matrix x[None] (column statistics), and passes the three-way check."""
    x = data.draw(float_arrays((C,))) + np.linspace(-1, 1, C)
    gy = np.linspace(-1, 2, C)
    cases = [(_layer_norm(False, 1e-5, has_weight, has_bias), _layer_norm(True, 1e-5, has_weight, has_bias),
              _params(data, C, has_weight + has_bias)),
             (_rms_norm(False, 1e-6, has_weight), _rms_norm(True, 1e-6, has_weight), _params(data, C, int(has_weight)))]
    for derived, composed, params in cases:
        y_vec, g_vec = forward_backward(derived, [x] + params, gy)
        y_row, g_row = forward_backward(derived, [x[None]] + params, gy[None])
        assert_close_scaled(y_vec, y_row[0], 1e-12, "output")
        assert_close_scaled(g_vec[0], g_row[0][0], 1e-12, "dx")
        for i, (a, b) in enumerate(zip(g_vec[1:], g_row[1:])):
            assert_close_scaled(a, b, 1e-12, f"gradient of parameter {i}")
        assert_three_way(derived, composed, [x] + params)


@given(x=float_arrays((2, 3, 5)), c=st.floats(0.01, 100.0))
def test_rms_norm_is_scale_invariant(x, c):
    x = x + np.linspace(0.5, 1.5, 5)
    y = F.rms_norm(Tensor(x), eps=0.0).data
    yc = F.rms_norm(Tensor(c * x), eps=0.0).data
    np.testing.assert_allclose(yc, y, rtol=1e-10, atol=1e-12)


@given(x=float_arrays((2, 3, 5)), c=st.floats(-100.0, 100.0))
def test_layer_norm_is_shift_invariant(x, c):
    x = x + np.linspace(-1, 1, 5)
    y = F.layer_norm(Tensor(x)).data
    yc = F.layer_norm(Tensor(x + c)).data
    np.testing.assert_allclose(yc, y, rtol=1e-8, atol=1e-8)


def test_layer_norm_output_has_zero_mean_unit_variance():
    x = np.random.default_rng(0).standard_normal((4, 16)) * 3 + 7
    y = F.layer_norm(Tensor(x), eps=0.0).data
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-12)


@pytest.mark.parametrize("magnitude", [1e-3, 1e4, 1e8])
def test_norms_at_extreme_magnitudes(magnitude):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 8)) * magnitude
    w = rng.standard_normal(8)
    for derived_fn, composed_fn in [(lambda x, w: F.layer_norm(x, w, eps=0.0), lambda x, w: F.layer_norm(x, w, eps=0.0, composed=True)),
                                  (lambda x, w: F.rms_norm(x, w, eps=0.0), lambda x, w: F.rms_norm(x, w, eps=0.0, composed=True))]:
        gy = rng.standard_normal((3, 8))
        y1, g1 = forward_backward(derived_fn, [x, w], gy)
        y2, g2 = forward_backward(composed_fn, [x, w], gy)
        assert_close_scaled(y1, y2, 1e-10, "output")
        for a, b in zip(g1, g2):
            assert_close_scaled(a, b, 1e-10, "gradient")
        # scale invariance: the normalised output does not depend on the magnitude
        y_unit, _ = forward_backward(derived_fn, [x / magnitude, w], gy)
        assert_close_scaled(y1, y_unit, 1e-10, "output at unit scale")


def test_eps_keeps_a_constant_row_finite():
    """A constant row has variance 0: eps > 0 gives output = bias and a finite gradient."""
    x = np.full((2, 4), 3.0)
    b = np.arange(4.0)
    y, grads = forward_backward(lambda x, b: F.layer_norm(x, None, b, eps=1e-5), [x, b], np.ones((2, 4)))
    np.testing.assert_allclose(y, np.broadcast_to(b, (2, 4)), atol=1e-12)
    assert all(np.all(np.isfinite(g)) for g in grads)
    y, (gx,) = forward_backward(lambda x: F.rms_norm(x, eps=1e-6), [np.zeros((2, 4))], np.ones((2, 4)))
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_allclose(gx, 1 / np.sqrt(1e-6))   # d/dx of x / sqrt(eps) at x = 0
    assert_three_way(lambda x: F.rms_norm(x, eps=1e-2), lambda x: F.rms_norm(x, eps=1e-2, composed=True),
                     [np.zeros((2, 3))])


def test_eps_matters_only_near_zero_variance():
    x = np.random.default_rng(2).standard_normal((2, 6)) * 10
    a = F.layer_norm(Tensor(x), eps=1e-5).data
    b = F.layer_norm(Tensor(x), eps=0.0).data
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.array_equal(a, b)


def test_float32_in_float32_out():
    x = Tensor(np.ones((2, 3), np.float32) * np.arange(3, dtype=np.float32), requires_grad=True)
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    for y in (F.layer_norm(x, w), F.rms_norm(x, w)):
        assert y.dtype == np.float32
        y.sum().backward()
        assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_only_the_weight_needs_a_gradient():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((3, 4)))
    w = Tensor(rng.standard_normal(4), requires_grad=True)
    b = Tensor(rng.standard_normal(4), requires_grad=True)
    F.layer_norm(x, w, b).sum().backward()
    xhat = F.layer_norm(x).data
    np.testing.assert_allclose(w.grad, xhat.sum(0), atol=1e-6)
    np.testing.assert_allclose(b.grad, 3.0)


def test_bad_parameters_are_named():
    x = Tensor(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"weight has shape \(3,\).*last axis is 4"):
        F.layer_norm(x, Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"bias has shape"):
        F.layer_norm(x, None, Tensor(np.ones((1, 4))))
    with pytest.raises(ValueError, match=r"rms_norm: weight has shape \(5,\)"):
        F.rms_norm(x, Tensor(np.ones(5)))
    with pytest.raises(ValueError, match=r"eps=-1"):
        F.rms_norm(x, eps=-1)
