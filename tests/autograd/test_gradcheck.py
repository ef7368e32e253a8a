"""The gradient checker itself: it passes correct backwards, and fails loudly on wrong ones."""
import numpy as np
import pytest
from hypothesis import given

from autograd import Function, Tensor
from autograd import functional as F
from autograd.gradcheck import TOLERANCES, GradcheckError, check_backward
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


# ---- the checker as a tool: contract violations, grad_output, worst elements, tolerances, tracebacks ----


class SoftplusInPlace(Function):
    """Planted bug: backward multiplies its grad in place (the numbers it returns are right)."""

    def forward(self, x):
        self.x = x
        return np.logaddexp(0, x)

    def backward(self, grad):
        grad *= 1 / (1 + np.exp(-self.x))
        return grad


class SoftplusFloat32(SoftplusInPlace):
    """Planted bug: a float32 gradient for float64 inputs."""

    def backward(self, grad):
        return (grad / (1 + np.exp(-self.x))).astype(np.float32)


def test_in_place_backward_is_reported_as_such_not_as_a_numeric_mismatch():
    x = np.array([0.5, -1.0, 2.0])
    gy = np.array([1.0, 2.0, 3.0])
    with pytest.raises(GradcheckError, match=r"backward modified its grad in place: SoftplusInPlace\.backward") as info:
        check_backward(lambda t: SoftplusInPlace.apply(t), [x], grad_output=gy)
    assert "grad_output (shape (3,)) = [1. 2. 3.]" in str(info.value)   # the report shows the real grad_output
    np.testing.assert_array_equal(gy, [1.0, 2.0, 3.0])


def test_float32_gradient_is_flagged_with_the_op_and_input():
    with pytest.raises(GradcheckError, match=r"wrong dtype: SoftplusFloat32\.backward returned a float32 "
                                             r"gradient for input 0, a float64 tensor"):
        check_backward(lambda t: SoftplusFloat32.apply(t), [np.array([0.5, -1.0])])


def test_a_forward_that_loses_precision_is_flagged():
    with pytest.raises(GradcheckError, match="fn's output is float32 but the check runs in float64"):
        check_backward(lambda t: t.float() * 2, [np.array([0.5, -1.0])])


def test_grad_output_of_the_wrong_shape_is_named():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"grad_output has shape \(6,\), but fn's output has shape \(2, 3\)"):
        check_backward(lambda t: t * 2, [x], grad_output=np.ones(6))      # once reshaped silently
    with pytest.raises(ValueError, match=r"grad_output has shape \(5,\)"):
        check_backward(lambda t: t * 2, [x], grad_output=np.ones(5))      # once a bare reshape error
    assert check_backward(lambda t: t.sum(), [x], grad_output=2.0).passed  # a number for a 0-d output


class WrongAtOneElement(Function):
    """x^2 with a backward wrong at element (17, 5) only: directional mode must point there."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        dx = grad * 2 * self.x
        dx[17, 5] *= 1.5
        return dx


def test_directional_mode_locates_the_worst_elements():
    x = np.random.default_rng(2).standard_normal((40, 40)) + 3.0
    with pytest.raises(GradcheckError, match="directional derivative") as info:
        check_backward(lambda t: WrongAtOneElement.apply(t), [x])
    message = str(info.value)
    assert "worst elements (located by bisecting the direction):\n  input 0 (17, 5): analytic" in message


def test_docstring_documents_the_tolerances_it_uses():
    import re
    rows = re.findall(r"^\s*(float\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", check_backward.__doc__, re.MULTILINE)
    documented = {np.dtype(name): tuple(float(v) for v in values) for name, *values in rows}
    assert documented == TOLERANCES


def test_pytest_shows_the_test_line_not_the_checker(pytester):
    """A failing check in a user's test file: no frame of autograd's source before the report."""
    pytester.makepyfile(test_user_op='''
        import numpy as np
        from autograd import Function
        from autograd.gradcheck import check_backward

        class Cube(Function):
            def forward(self, x):
                self.x = x
                return x ** 3

            def backward(self, grad):
                return grad * 2 * self.x ** 2

        def test_cube():
            check_backward(Cube.apply, [np.array([0.5, -1.5, 2.0])])
    ''')
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "check_backward(Cube.apply" in output and "check_backward failed: input 0" in output
    assert "gradcheck.py" not in output and "autograd/tensor.py" not in output


# ---- what makes a check meaningless, named as such; the hints; layouts; float32 beside float64 ----


class RandomMask(Function):
    """An unseeded dropout-like mask: its backward is right for its own forward, the check cannot be."""

    def forward(self, x):
        self.mask = np.random.default_rng().random(x.shape) < 0.5
        return x * self.mask

    def backward(self, grad):
        return grad * self.mask


def test_a_non_deterministic_fn_is_named_not_reported_as_a_wrong_backward():
    with pytest.raises(GradcheckError, match=r"check_backward failed: fn is not deterministic: two evaluations at "
                                             r"the same inputs differ"):
        check_backward(RandomMask.apply, [np.arange(1.0, 41.0)])   # once: "analytic 0, numeric -1833801"


class ReluInPlace(Function):
    """Planted bug: forward clamps its input in place (the gradient it returns is right)."""

    def forward(self, x):
        self.mask = x > 0
        x *= self.mask
        return x.copy()

    def backward(self, grad):
        return grad * self.mask


def test_a_forward_that_changes_its_input_is_named_and_the_report_shows_the_input_before():
    x = np.array([-1.0, 2.0, -3.0])
    with pytest.raises(GradcheckError, match=r"check_backward failed: forward changed input 0 in place \(2 of 3 "
                                             r"elements differ") as info:
        check_backward(ReluInPlace.apply, [x])               # once: passed, with x.data now [0, 2, 0]
    assert "x0 (differentiated, shape (3,), float64) = [-1.  2. -3.]" in str(info.value)
    np.testing.assert_array_equal(x, [-1.0, 2.0, -3.0])     # the caller's array is the checker's copy's source


class DoublesItsInput(Function):
    """Planted bug: backward doubles the input it saved."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        self.x *= 2
        return grad * self.x


def test_a_backward_that_changes_its_input_is_named():
    with pytest.raises(GradcheckError, match=r"check_backward failed: backward changed input 0 in place: "
                                             r"DoublesItsInput\.backward changed its input 0"):
        check_backward(DoublesItsInput.apply, [np.array([0.5, -1.5])])   # once: only a mismatch


class SignError(Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return -2 * grad * self.x


def test_a_sign_error_and_a_constant_factor_are_said():
    with pytest.raises(GradcheckError, match=r"analytic = -numeric at every element: the sign of the gradient is wrong"):
        check_backward(SignError.apply, [np.array([0.5, -1.5, 2.0])])
    with pytest.raises(GradcheckError, match=r"analytic = 1\.05 x numeric at every element"):
        check_backward(WrongScale.apply, [np.array([0.5, -1.5, 2.0])])
    with pytest.raises(GradcheckError, match=r"analytic is close to -numeric along this direction"):
        check_backward(SignError.apply, [np.random.default_rng(0).standard_normal((30, 30))])


class SquareContiguousOnly(Function):
    """Planted bug: backward fills its result through `reshape(-1)`, a copy (writes lost) for a non-C input."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        dx = np.zeros_like(self.x)                            # keeps x's layout
        dx.reshape(-1)[:] = (2 * grad * self.x).reshape(-1)   # a view only when dx is C-contiguous
        return dx


def test_a_backward_right_only_for_contiguous_inputs_fails_in_the_other_layout():
    x = np.random.default_rng(0).standard_normal((3, 4))
    with pytest.raises(GradcheckError, match=r"the gradient of input 0 changes with input 0 transposed in memory "
                                             r"\(given C-contiguous; same values\)"):
        check_backward(SquareContiguousOnly.apply, [x])       # once: passed unless the author thought of x.T
    assert check_backward(SquareContiguousOnly.apply, [x], layouts=False).passed   # the switch that skips it
    with pytest.raises(GradcheckError, match=r"check_backward failed: input 0"):
        check_backward(SquareContiguousOnly.apply, [np.asfortranarray(x)], layouts=False)   # given transposed


class ExpCompound(Function):
    """exp with a backward computing e^x as (1 + x/n)^n: fine in float64, far off in float32 (1 + x/n rounds)."""

    def forward(self, x):
        self.x = x
        return np.exp(x)

    def backward(self, grad):
        n = 10 ** 6
        return grad * (1 + self.x / self.x.dtype.type(n)) ** n


def test_float32_beside_float64_says_which_dtype_failed():
    x = np.array([0.5, 1.0, 2.0])
    assert check_backward(ExpCompound.apply, [x]).passed                          # float64 alone: fine
    with pytest.raises(GradcheckError, match=r"check_backward failed in float32 \(float64 passes\): the float32 "
                                             r"gradient of input 0 differs from float64's"):
        check_backward(ExpCompound.apply, [x], dtype=(np.float64, np.float32))
    results = check_backward(lambda t: F.softmax(t), [x], dtype=(np.float64, np.float32))
    assert [r.dtype for r in results] == ["float64", "float32"] and all(r.passed for r in results)
    failed, = check_backward(SignError.apply, [x], dtype=(np.float64, np.float32), raise_on_failure=False)
    assert not failed.passed and failed.report.startswith("check_backward failed in float64: input 0")


def test_inputs_keep_their_layout_and_each_is_tried_in_another():
    seen = []

    def record(t):
        seen.append((t.data.flags.c_contiguous, t.data.flags.f_contiguous, 0 in t.data.strides))
        return t * t

    base = np.random.default_rng(0).standard_normal((3, 4))
    check_backward(record, [np.asfortranarray(base)])
    assert seen[0] == (False, True, False) and (True, False, False) in seen       # given F: also tried C
    seen.clear()
    check_backward(record, [np.broadcast_to(base[:1], (3, 4))])
    assert seen[0][2]                                                             # a broadcast input stays one
