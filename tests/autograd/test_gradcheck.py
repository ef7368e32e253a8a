"""The gradient checker itself: it passes correct backwards, and fails loudly on wrong ones."""
import numpy as np
import pytest
from hypothesis import given

from autograd import Function, Tensor
from autograd import functional as F
from autograd.gradcheck import GradcheckError, check_backward
from autograd.testing import broadcastable_pairs, matmul_shapes, separated_arrays, shapes


class WrongScale(Function):
    """x^2 with a backward that is off by a factor: the checker must catch it."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return grad * 2.1 * self.x


def test_full_mode_reports_worst_element_and_arrays():
    x = np.array([[1.0, -2.0], [3.0, 0.5]])
    with pytest.raises(GradcheckError) as info:
        check_backward(lambda t: WrongScale.apply(t), [x])
    message = str(info.value)
    assert "worst element (1, 0)" in message
    for part in ("inputs:", "grad_output", "analytic grad of input 0", "numeric grad of input 0"):
        assert part in message


def test_directional_mode_catches_errors_on_large_inputs():
    x = np.random.default_rng(1).standard_normal((40, 40))
    result = check_backward(lambda t: t * t, [x])
    assert result.passed and result.mode == "directional"
    with pytest.raises(GradcheckError, match="directional derivative 0"):
        check_backward(lambda t: WrongScale.apply(t), [x])


def test_result_without_raising_and_constants_pass_through():
    x = np.array([1.0, 2.0])
    res = check_backward(lambda t: WrongScale.apply(t), [x], raise_on_failure=False)
    assert not res.passed
    ids = np.array([1, 0, 1])
    res = check_backward(lambda w, i: F.embedding(i, w), [np.ones((2, 3)), ids])
    assert res.passed and res.n_checked == 6
    const = Tensor(np.array([2.0, 3.0]))  # requires_grad=False: a constant
    res = check_backward(lambda a, c: a * c, [np.array([1.0, 1.0]), const])
    assert res.n_checked == 2


def test_float32_tolerances_are_looser():
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert check_backward(lambda t: F.softmax(t), [x], dtype=np.float32).passed


def test_rejects_unsupported_dtype_and_no_float_input():
    with pytest.raises(ValueError, match="float16"):
        check_backward(lambda t: t, [np.ones(2)], dtype=np.float16)
    with pytest.raises(ValueError, match="no floating-point input"):
        check_backward(lambda t: t, [np.arange(3)])


@given(shapes(max_dims=3))
def test_strategy_shapes_are_valid(shape):
    assert all(n >= 1 for n in shape) and len(shape) <= 3


@given(broadcastable_pairs())
def test_strategy_pairs_broadcast(pair):
    np.broadcast_shapes(*pair)


@given(matmul_shapes())
def test_strategy_matmul_shapes_multiply(pair):
    np.matmul(np.ones(pair[0]), np.ones(pair[1]))


@given(separated_arrays((3, 4), gap=0.01))
def test_strategy_separated_arrays_have_no_ties(x):
    flat = np.sort(x.reshape(-1))
    assert np.all(np.diff(flat) >= 0.01 - 1e-12)
