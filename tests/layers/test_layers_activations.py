"""GELU (tanh and erf forms), SiLU and SwiGLU: hand-derived = composed = finite differences, extreme inputs."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from autograd import Tensor
from autograd import functional as F
from autograd.gradcheck import check_backward
from autograd.testing import float_arrays, shapes
from .layers_threeway import assert_three_way, forward_backward

EXTREMES = np.array([-1e4, -800.0, -40.0, -1e-8, 0.0, 1e-8, 40.0, 800.0, 1e4])


@given(x=shapes(0, 3, 1, 5).flatmap(lambda s: float_arrays(s, min_value=-6, max_value=6)))
def test_gelu_tanh_three_way(x):
    assert_three_way(lambda x: F.gelu(x), lambda x: F.gelu(x, composed=True), [x])


@given(x=shapes(0, 3, 1, 5).flatmap(lambda s: float_arrays(s, min_value=-6, max_value=6)))
def test_silu_three_way(x):
    assert_three_way(lambda x: F.silu(x), lambda x: F.silu(x, composed=True), [x])


@given(shape=shapes(0, 3, 1, 5), data=st.data())
def test_swiglu_three_way(shape, data):
    gate = data.draw(float_arrays(shape, min_value=-6, max_value=6))
    up = data.draw(float_arrays(shape))
    assert_three_way(lambda a, u: F.swiglu(a, u), lambda a, u: F.swiglu(a, u, composed=True), [gate, up])


@given(x=shapes(0, 3, 1, 5).flatmap(lambda s: float_arrays(s, min_value=-6, max_value=6)))
def test_gelu_erf_matches_its_formula_and_finite_differences(x):
    y = F.gelu(Tensor(x), approximate="none").data
    expected = np.vectorize(lambda v: v * 0.5 * (1 + math.erf(v / math.sqrt(2))))(x) if x.size else x
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)
    assert check_backward(lambda x: F.gelu(x, approximate="none"), [x]).passed


def test_gelu_forms_agree_closely():
    x = np.linspace(-5, 5, 101)
    a = F.gelu(Tensor(x)).data
    b = F.gelu(Tensor(x), approximate="none").data
    assert np.abs(a - b).max() < 1e-3


@pytest.mark.parametrize("name", ["gelu_tanh", "gelu_erf", "silu"])
def test_activations_at_extreme_inputs(name):
    fn = {"gelu_tanh": lambda x: F.gelu(x), "gelu_erf": lambda x: F.gelu(x, approximate="none"),
          "silu": lambda x: F.silu(x)}[name]
    y, (g,) = forward_backward(fn, [EXTREMES], np.ones_like(EXTREMES))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    # far tails: identity on the right (slope 1), zero on the left (slope 0)
    np.testing.assert_allclose(y[-3:], EXTREMES[-3:], rtol=1e-12)
    np.testing.assert_allclose(y[:2], 0.0, atol=1e-12)
    np.testing.assert_allclose(g[-3:], 1.0, atol=1e-12)
    np.testing.assert_allclose(g[:3], 0.0, atol=1e-12)
    np.testing.assert_allclose(g[4], 0.5, atol=1e-12)          # every one has slope 1/2 at 0


def test_swiglu_at_extreme_inputs_and_hand_derived_equals_composed():
    up = np.linspace(-2, 2, EXTREMES.size)
    assert_three_way(lambda a, u: F.swiglu(a, u), lambda a, u: F.swiglu(a, u, composed=True), [EXTREMES, up],
                     gradcheck=False)
    _, (g_gate, g_up) = forward_backward(lambda a, u: F.swiglu(a, u), [EXTREMES, up], np.ones_like(up))
    np.testing.assert_allclose(g_up[-1], 1e4)                  # d/du = silu(a) = a for large a
    np.testing.assert_allclose(g_gate[-1], up[-1], rtol=1e-12)  # d/da = u * silu'(a) = u


def test_float32_and_errors():
    x = Tensor(np.linspace(-3, 3, 7).astype(np.float32), requires_grad=True)
    for y in (F.gelu(x), F.silu(x), F.swiglu(x, x), F.gelu(x, approximate="none")):
        assert y.dtype == np.float32
    F.swiglu(x, x).sum().backward()
    assert x.grad.dtype == np.float32
    with pytest.raises(ValueError, match=r"gate \(7,\) and up \(3,\)"):
        F.swiglu(x, Tensor(np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="approximate='exact'"):
        F.gelu(x, approximate="exact")
