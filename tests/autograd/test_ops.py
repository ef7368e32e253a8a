"""Every primitive op: forward against plain NumPy, backward against float64 central differences,
on hypothesis-generated shapes (broadcasting, size-1 and 0-d cases included)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import autograd as ag
from autograd import Tensor
from autograd.gradcheck import check_backward
from autograd.testing import (broadcastable_pairs, float_arrays, matmul_shapes, separated_arrays,
                              shapes)

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
}

UNARY = {  # name -> (tensor fn, numpy fn, smallest |x| allowed, value range)
    "neg": (lambda x: -x, np.negative, 0.0, 3.0),
    "exp": (ag.exp, np.exp, 0.0, 3.0),
    "log": (lambda x: ag.log(ag.abs(x)), lambda x: np.log(np.abs(x)), 0.1, 3.0),
    "sqrt": (lambda x: ag.sqrt(ag.abs(x)), lambda x: np.sqrt(np.abs(x)), 0.1, 3.0),
    "tanh": (ag.tanh, np.tanh, 0.0, 3.0),
    "sigmoid": (ag.sigmoid, lambda x: 1 / (1 + np.exp(-x)), 0.0, 3.0),
    "relu": (ag.relu, lambda x: np.maximum(x, 0), 1e-3, 3.0),
    "abs": (ag.abs, np.abs, 1e-3, 3.0),
    "pow3": (lambda x: x ** 3, lambda x: x ** 3, 0.0, 3.0),
    "pow_half": (lambda x: ag.abs(x) ** 0.5, lambda x: np.abs(x) ** 0.5, 0.1, 3.0),
    "square": (lambda x: x ** 2, np.square, 0.0, 3.0),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(pair=broadcastable_pairs(), data=st.data())
def test_binary_ops_broadcast(name, pair, data):
    op, ref = BINARY[name]
    a = data.draw(float_arrays(pair[0]))
    b = data.draw(float_arrays(pair[1], exclude_near_zero=0.3 if name == "div" else 0.0))
    out = op(Tensor(a), Tensor(b))
    np.testing.assert_allclose(out.data, ref(a, b), rtol=1e-12, atol=0)
    assert out.shape == np.broadcast_shapes(a.shape, b.shape)
    check_backward(op, [a, b])


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=shapes(), data=st.data())
def test_unary_ops(name, shape, data):
    op, ref, gap, bound = UNARY[name]
    x = data.draw(float_arrays(shape, min_value=-bound, max_value=bound, exclude_near_zero=gap))
    np.testing.assert_allclose(op(Tensor(x)).data, ref(x), rtol=1e-12, atol=1e-300)
    check_backward(op, [x])


@pytest.mark.parametrize("op,ref", [(ag.maximum, np.maximum), (ag.minimum, np.minimum)])
@given(pair=broadcastable_pairs(max_dims=3), data=st.data())
def test_maximum_minimum(op, ref, pair, data):
    size = int(np.prod(pair[0])) + int(np.prod(pair[1]))
    both = data.draw(separated_arrays((size,), gap=2e-3))  # no ties: finite differences stay on one side
    a = both[:int(np.prod(pair[0]))].reshape(pair[0])
    b = both[int(np.prod(pair[0])):].reshape(pair[1])
    np.testing.assert_array_equal(op(Tensor(a), Tensor(b)).data, ref(a, b))
    check_backward(op, [a, b])


def test_maximum_ties_split_the_gradient():
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array([1.0, 0.0, 5.0]), requires_grad=True)
    ag.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(b.grad, [0.5, 0.0, 1.0])


axis_choices = st.one_of(st.none(), st.integers(-3, 2), st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True).map(tuple))


def _valid_axis(axis, ndim):
    if axis is None:
        return True
    axes = (axis,) if isinstance(axis, int) else axis
    return all(-ndim <= a < ndim for a in axes) and ndim > 0


@pytest.mark.parametrize("name", ["sum", "mean", "var", "max"])
@given(shape=shapes(min_dims=1, max_dims=3), axis=axis_choices, keepdims=st.booleans(), data=st.data())
def test_reductions(name, shape, axis, keepdims, data):
    if not _valid_axis(axis, len(shape)):
        return
    if name == "max":
        x = data.draw(separated_arrays(shape, gap=1e-3 if np.prod(shape) < 1000 else 1e-5))
    else:
        x = data.draw(float_arrays(shape))
    op = getattr(ag, name)
    out = op(Tensor(x), axis=axis, keepdims=keepdims)
    ref = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.data, ref, rtol=1e-12, atol=1e-14)
    if name == "var":
        axes = range(len(shape)) if axis is None else ((axis,) if isinstance(axis, int) else axis)
        if int(np.prod([shape[a] for a in axes])) < 2:
            return
    check_backward(lambda t: op(t, axis=axis, keepdims=keepdims), [x])


def test_var_ddof_and_max_ties():
    x = np.array([[1.0, 4.0, 4.0], [2.0, 3.0, 7.0]])
    np.testing.assert_allclose(ag.var(Tensor(x), axis=1, ddof=1).data, np.var(x, axis=1, ddof=1))
    check_backward(lambda t: ag.var(t, axis=1, ddof=1), [x])
    t = Tensor(x, requires_grad=True)
    ag.max(t, axis=1).sum().backward()
    np.testing.assert_array_equal(t.grad, [[0, 0.5, 0.5], [0, 0, 1]])  # ties share the gradient


@given(pair=matmul_shapes(), data=st.data())
def test_matmul(pair, data):
    a = data.draw(float_arrays(pair[0]))
    b = data.draw(float_arrays(pair[1]))
    out = Tensor(a) @ Tensor(b)
    np.testing.assert_allclose(out.data, np.matmul(a, b), rtol=1e-12, atol=1e-12)
    check_backward(lambda x, y: x @ y, [a, b])


def test_matmul_shared_weight_path_equals_batched():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 6))
    check_backward(lambda x, y: x @ y, [a, b])


@given(shape=shapes(min_dims=1, max_dims=4), data=st.data())
def test_reshape_permute_expand(shape, data):
    x = data.draw(float_arrays(shape))
    perm = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(ag.permute(Tensor(x), perm).data, x.transpose(perm))
    check_backward(lambda t: ag.permute(t, perm), [x])
    flat = (int(np.prod(shape)),)
    check_backward(lambda t: ag.reshape(t, flat), [x])
    target = data.draw(st.sampled_from([(2,) + tuple(shape), tuple(3 if n == 1 else n for n in shape)]))
    np.testing.assert_array_equal(ag.expand(Tensor(x), target).data, np.broadcast_to(x, target))
    check_backward(lambda t: ag.expand(t, target), [x])


@given(shape=shapes(min_dims=1, max_dims=3, min_side=2, max_side=5), data=st.data())
def test_getitem_basic_and_advanced(shape, data):
    x = data.draw(float_arrays(shape))
    stop = data.draw(st.integers(1, shape[0]))
    basic = (slice(0, stop), Ellipsis)
    np.testing.assert_array_equal(Tensor(x)[basic].data, x[basic])
    check_backward(lambda t: t[basic], [x])
    idx = np.asarray(data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=6)))
    np.testing.assert_array_equal(Tensor(x)[idx].data, x[idx])
    check_backward(lambda t: t[idx], [x])


def test_getitem_repeated_indices_accumulate():
    t = Tensor(np.zeros(4), requires_grad=True)
    t[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(t.grad, [0, 3, 0, 1])
    m = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    m[np.array([0, 0, 1]), np.array([2, 2, 0])].sum().backward()
    np.testing.assert_array_equal(m.grad, [[0, 0, 2], [1, 0, 0]])


@given(n=st.integers(1, 4), axis=st.integers(0, 1), data=st.data())
def test_concatenate_stack_split(n, axis, data):
    shape = (2, 3)
    arrays = [data.draw(float_arrays(shape)) for _ in range(n)]
    np.testing.assert_array_equal(ag.concatenate([Tensor(a) for a in arrays], axis=axis).data, np.concatenate(arrays, axis))
    check_backward(lambda *ts: ag.concatenate(ts, axis=axis), arrays)
    np.testing.assert_array_equal(ag.stack([Tensor(a) for a in arrays], axis=axis).data, np.stack(arrays, axis))
    check_backward(lambda *ts: ag.stack(ts, axis=axis), arrays)
    joined = np.concatenate(arrays, axis=axis)
    parts = ag.split(Tensor(joined), n, axis=axis)
    for p, a in zip(parts, arrays):
        np.testing.assert_array_equal(p.data, a)
    check_backward(lambda t: ag.concatenate([p * (i + 1) for i, p in enumerate(ag.split(t, n, axis=axis))], axis=axis),
                   [joined])


@given(pair=broadcastable_pairs(max_dims=3), data=st.data())
def test_where_and_masked_fill(pair, data):
    a = data.draw(float_arrays(pair[0]))
    b = data.draw(float_arrays(pair[1]))
    cond = data.draw(float_arrays(np.broadcast_shapes(pair[0], pair[1]))) > 0
    np.testing.assert_array_equal(ag.where(cond, Tensor(a), Tensor(b)).data, np.where(cond, a, b))
    check_backward(lambda x, y: ag.where(cond, x, y), [a, b])
    mask = data.draw(float_arrays(pair[0])) > 0
    np.testing.assert_array_equal(ag.masked_fill(Tensor(a), mask, -7.0).data, np.where(mask, -7.0, a))
    check_backward(lambda x: ag.masked_fill(x, mask, 0.0), [a])


def test_astype_round_trip_gradient():
    x = np.array([1.5, -2.0, 3.25])
    # A float32 detour rounds to ~1e-7, so difference with a wide step and a matching tolerance.
    check_backward(lambda t: ag.astype(t, np.float32).astype(np.float64) * 2, [x], eps=1e-2, atol=1e-4)
    t = Tensor(x.astype(np.float32), requires_grad=True)
    y = t.double()
    assert y.dtype == np.float64
    (y * 3).sum().backward()
    assert t.grad.dtype == np.float32
    np.testing.assert_array_equal(t.grad, [3, 3, 3])


def test_composite_expression_micrograd_style():
    # The micrograd README expression, checked against finite differences.
    def f(a, b):
        c = a + b
        d = a * b + b ** 3
        c = c + c + 1
        c = c + 1 + c + (-a)
        d = d + d * 2 + ag.relu(b + a)
        d = d + 3 * d + ag.relu(b - a)
        e = c - d
        f = e ** 2
        g = f / 2.0
        g = g + 10.0 / f
        return g
    a, b = np.array(-4.0), np.array(2.0)
    out = f(Tensor(a), Tensor(b))
    assert abs(out.item() - 24.70408163265306) < 1e-12
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    f(ta, tb).backward()
    assert abs(ta.grad - 138.83381924198252) < 1e-10
    assert abs(tb.grad - 645.5772594752186) < 1e-10
    check_backward(f, [a, b])


def test_scalar_operands_keep_dtype():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    for y in (x * 2, 2 * x, x + 1.5, 1 - x, x / 3, 3 / x, x ** 2):
        assert y.dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32          # Python floats -> default float32
    assert Tensor(np.array([1.0])).dtype == np.float64      # an explicit float64 array stays float64


@given(ids=st.lists(st.integers(0, 5), min_size=0, max_size=30), width=st.integers(1, 4), data=st.data())
def test_scatter_add_rows_equals_add_at(ids, width, data):
    from autograd.backend import scatter_add_rows
    ids = np.asarray(ids, dtype=np.int64)
    rows = data.draw(float_arrays((len(ids), width)))
    expected, actual = np.zeros((6, width)), np.zeros((6, width))
    np.add.at(expected, ids, rows)
    scatter_add_rows(actual, ids, rows)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "abs", "neg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_ops_at_extreme_inputs_stay_finite(name, dtype):
    op, ref, _, _ = UNARY[name]
    x = np.array([-1e4, -50.0, -1e-30, 1e-30, 50.0, 1e4], dtype=dtype)
    t = Tensor(x, requires_grad=True)
    y = op(t)
    with np.errstate(over="ignore"):  # the plain-NumPy reference sigmoid overflows on the way to 0
        expected = ref(x.astype(np.float64))
    np.testing.assert_allclose(y.data, expected, rtol=1e-6, atol=1e-30)
    y.sum().backward()
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(t.grad))
    if name in ("tanh", "sigmoid"):  # saturated: slope exactly 0 at the far tails
        assert t.grad[0] == 0 and t.grad[-1] == 0


def test_exp_log_sqrt_at_extremes():
    big = Tensor(np.array([1e4]), requires_grad=True)
    with np.errstate(over="ignore"):
        assert np.isinf(ag.exp(big).data[0])                   # exp overflows to inf, as in NumPy
    tiny = Tensor(np.array([1e-300]), requires_grad=True)
    ag.log(tiny).sum().backward()
    np.testing.assert_allclose(tiny.grad, [1e300])            # d log x = 1/x, still finite
    s = Tensor(np.array([1e-200]), requires_grad=True)
    ag.sqrt(s).sum().backward()
    assert np.isfinite(s.grad[0]) and s.grad[0] > 0
