"""Softmax, log-softmax, cross-entropy, embedding, linear and matmul: hand-derived = composed = finite
differences on generated shapes; shift invariance; extreme logits; ignore_index and reductions."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import autograd as ag
from autograd import Tensor
from autograd import functional as F
from autograd.gradcheck import check_backward
from autograd.testing import float_arrays, matmul_shapes, shapes
from .layers_threeway import assert_close_scaled, assert_three_way, forward_backward


@st.composite
def array_and_axis(draw):
    shape = draw(shapes(1, 3, 1, 5))
    return draw(float_arrays(shape, min_value=-5, max_value=5)), draw(st.integers(-len(shape), len(shape) - 1))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(case=array_and_axis())
def test_softmax_family_three_way(name, case):
    x, axis = case
    op = getattr(F, name)
    assert_three_way(lambda x: op(x, axis=axis), lambda x: op(x, axis=axis, composed=True), [x])


@given(case=array_and_axis(), c=st.floats(-1e3, 1e3))
def test_softmax_is_shift_invariant(case, c):
    x, axis = case
    np.testing.assert_allclose(F.softmax(Tensor(x + c), axis=axis).data, F.softmax(Tensor(x), axis=axis).data,
                               rtol=1e-9, atol=1e-12)
    y = F.softmax(Tensor(x), axis=axis).data
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_at_extreme_logits(name):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1.0], [-1e4, -1e4, -1e4, -1e4]])
    op = getattr(F, name)
    y, (g,) = forward_backward(lambda x: op(x), [x], np.ones_like(x) * [[1, 2, 3, 4]])
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    assert_three_way(lambda x: op(x), lambda x: op(x, composed=True), [x], gradcheck=False)
    if name == "log_softmax":
        np.testing.assert_allclose(y[0, 1], -2e4 - np.log1p(np.exp(-1.0)), rtol=1e-12)


@st.composite
def ce_case(draw):
    N_shape = draw(shapes(1, 2, 1, 4))
    V = draw(st.integers(1, 6))
    logits = draw(float_arrays(tuple(N_shape) + (V,), min_value=-5, max_value=5))
    targets = np.array(draw(st.lists(st.sampled_from(list(range(V)) + [-100]), min_size=int(np.prod(N_shape)),
                                     max_size=int(np.prod(N_shape))))).reshape(N_shape)
    return logits, targets, draw(st.sampled_from(["mean", "sum", "none"]))


@given(case=ce_case())
def test_cross_entropy_three_way(case):
    logits, targets, reduction = case
    assert_three_way(lambda x: F.cross_entropy(x, targets, reduction=reduction),
                     lambda x: F.cross_entropy(x, targets, reduction=reduction, composed=True), [logits])


def test_cross_entropy_values_ignore_index_and_reductions():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]))
    targets = np.array([0, 2, -1])
    per_row = F.cross_entropy(Tensor(logits), targets, ignore_index=-1, reduction="none").data
    np.testing.assert_allclose(per_row, [np.log(2), -np.log(0.8), 0.0], atol=1e-14)
    total = F.cross_entropy(Tensor(logits), targets, ignore_index=-1, reduction="sum").item()
    mean = F.cross_entropy(Tensor(logits), targets, ignore_index=-1).item()
    np.testing.assert_allclose([total, mean], [np.log(2) - np.log(0.8), (np.log(2) - np.log(0.8)) / 2], atol=1e-14)
    x = Tensor(logits, requires_grad=True)
    F.cross_entropy(x, targets, ignore_index=-1).backward()
    np.testing.assert_array_equal(x.grad[2], 0)                                      # ignored row: no gradient
    np.testing.assert_allclose(x.grad[0], ([0.5, 0.25, 0.25] - np.eye(3)[0]) / 2, atol=1e-14)  # (p - onehot) / n


@pytest.mark.parametrize("composed", [False, True])
def test_cross_entropy_all_ignored_is_zero_not_nan(composed):
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    loss = F.cross_entropy(x, np.full(3, -100), composed=composed)
    loss.backward()
    assert loss.item() == 0.0
    np.testing.assert_array_equal(x.grad, 0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_at_extreme_logits(reduction):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, -1e4]])
    targets = np.array([1, 1, 0])
    y, (g,) = forward_backward(lambda x: F.cross_entropy(x, targets, reduction=reduction), [logits],
                               np.ones(() if reduction != "none" else (3,)))
    per_row = np.array([2e4, 0.0, np.log(2)])
    expected = {"none": per_row, "sum": per_row.sum(), "mean": per_row.mean()}[reduction]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(g))
    assert_three_way(lambda x: F.cross_entropy(x, targets, reduction=reduction),
                     lambda x: F.cross_entropy(x, targets, reduction=reduction, composed=True), [logits], gradcheck=False)


def test_cross_entropy_errors():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="target 3 is outside the 3 classes"):
        F.cross_entropy(x, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"need targets of shape \(2,\)"):
        F.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction 'avg'"):
        F.cross_entropy(x, np.array([0, 1]), reduction="avg")
    with pytest.raises(TypeError, match="targets must be integers"):
        F.cross_entropy(x, np.array([0.0, 1.0]))


@given(V=st.integers(1, 5), C=st.integers(1, 4), ids_shape=shapes(1, 2, 1, 6), data=st.data())
def test_embedding_three_way_with_repeated_ids(V, C, ids_shape, data):
    weight = data.draw(float_arrays((V, C)))
    ids = np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=int(np.prod(ids_shape)),
                                      max_size=int(np.prod(ids_shape))))).reshape(ids_shape)
    # composed reference: advanced indexing, whose backward scatter-adds repeated ids
    assert_three_way(lambda w: F.embedding(ids, w), lambda w: w[ids], [weight])


def test_embedding_repeated_ids_accumulate_and_bad_ids_are_named():
    w = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    F.embedding(np.array([[2, 2, 0]]), w).sum().backward()
    np.testing.assert_array_equal(w.grad, [[1, 1], [0, 0], [2, 2]])
    with pytest.raises(ValueError, match=r"id 3 is outside the vocabulary \[0, 3\)"):
        F.embedding(np.array([3]), w)
    with pytest.raises(TypeError, match="ids must be integers"):
        F.embedding(np.array([1.0]), w)


@pytest.mark.parametrize("with_bias", [True, False])
@given(lead=shapes(0, 2, 1, 4), n_in=st.integers(1, 5), n_out=st.integers(1, 5), data=st.data())
def test_linear_three_way(with_bias, lead, n_in, n_out, data):
    arrays = [data.draw(float_arrays(tuple(lead) + (n_in,))), data.draw(float_arrays((n_out, n_in)))]
    if with_bias:
        arrays.append(data.draw(float_arrays((n_out,))))
    assert_three_way(lambda *t: F.linear(*t), lambda *t: F.linear(*t, composed=True), arrays)


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_on_one_vector_is_a_matrix_vector_product(with_bias):
    """x (in,) -> W x + b (one-row decoding's path), the one-row matrix's output and gradients."""
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(4), rng.standard_normal((3, 4))] + ([rng.standard_normal(3)] if with_bias else [])
    gy = rng.standard_normal(3)
    y_vec, g_vec = forward_backward(lambda *t: F.linear(*t), arrays, gy)
    y_row, g_row = forward_backward(lambda *t: F.linear(*t), [arrays[0][None]] + arrays[1:], gy[None])
    np.testing.assert_allclose(y_vec, arrays[1] @ arrays[0] + (arrays[2] if with_bias else 0), rtol=1e-14)
    assert_close_scaled(y_vec, y_row[0], 1e-14, "output")
    assert_close_scaled(g_vec[0], g_row[0][0], 1e-14, "dx")
    for a, b in zip(g_vec[1:], g_row[1:]):
        assert_close_scaled(a, b, 1e-14, "parameter gradient")
    assert_three_way(lambda *t: F.linear(*t), lambda *t: F.linear(*t, composed=True), arrays)


def test_linear_weight_only_and_extreme_values():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 4)) * 1e6)
    w = Tensor(rng.standard_normal((5, 4)), requires_grad=True)
    F.linear(x, w).backward(np.ones((2, 3, 5)))
    np.testing.assert_allclose(w.grad, np.ones((6, 5)).T @ x.data.reshape(6, 4), rtol=1e-12)
    with pytest.raises(ValueError, match=r"input has 4 features .* expects 3"):
        F.linear(x, Tensor(np.zeros((5, 3))))


@given(pair=matmul_shapes(), data=st.data())
def test_matmul_backward_matches_finite_differences(pair, data):
    a, b = data.draw(float_arrays(pair[0])), data.draw(float_arrays(pair[1]))
    assert check_backward(ag.matmul, [a, b]).passed
    y, (ga, gb) = forward_backward(ag.matmul, [a, b], np.ones(np.matmul(a, b).shape))
    assert_close_scaled(y, np.matmul(a, b), 1e-14, "matmul output")
