"""Rotary position embedding: hand-derived = composed = finite differences, the rotate_half layout,
norm preservation, relative positions, offsets (KV cache), the table cache, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from autograd import Tensor
from autograd import functional as F
from autograd.layers.rope import rope_tables
from autograd.testing import float_arrays
from .layers_threeway import assert_three_way


@st.composite
def rope_input(draw):
    B, nh, T = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    hs = 2 * draw(st.integers(1, 4))
    return draw(float_arrays((B, nh, T, hs)))


@given(x=rope_input(), offset=st.integers(0, 50), theta=st.sampled_from([10000.0, 500000.0, 10.0]))
def test_rope_three_way(x, offset, theta):
    assert_three_way(lambda x: F.rope(x, theta=theta, offset=offset),
                     lambda x: F.rope(x, theta=theta, offset=offset, composed=True), [x])


@given(x=rope_input(), offset=st.integers(0, 1000))
def test_rope_preserves_norms(x, offset):
    y = F.rope(Tensor(x), offset=offset).data
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12, atol=1e-12)
    half = x.shape[-1] // 2   # each (i, i + hs/2) pair is rotated on its own
    np.testing.assert_allclose(y[..., :half] ** 2 + y[..., half:] ** 2, x[..., :half] ** 2 + x[..., half:] ** 2,
                               rtol=1e-12, atol=1e-12)


@given(hs=st.sampled_from([2, 4, 8]), m=st.integers(0, 40), n=st.integers(0, 40), d=st.integers(0, 500),
       data=st.data())
def test_rotated_dot_product_depends_only_on_relative_position(hs, m, n, d, data):
    q = data.draw(float_arrays((1, 1, 1, hs)))
    k = data.draw(float_arrays((1, 1, 1, hs)))

    def score(pos_q, pos_k):
        return float((F.rope(Tensor(q), offset=pos_q).data * F.rope(Tensor(k), offset=pos_k).data).sum())

    assert score(m + d, n + d) == pytest.approx(score(m, n), abs=1e-10)


def test_rope_layout_is_rotate_half():
    """Pairs are (i, i + hs/2) with angle t * theta^(-2i/hs): checked on one hand-computed vector."""
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
    y = F.rope(Tensor(x), theta=100.0, offset=1).data.reshape(4)
    a0, a1 = 1.0, 100.0 ** (-2 / 4)               # i = 0, 1 at position 1
    expected = [1 * np.cos(a0) - 3 * np.sin(a0), 2 * np.cos(a1) - 4 * np.sin(a1),
                3 * np.cos(a0) + 1 * np.sin(a0), 4 * np.cos(a1) + 2 * np.sin(a1)]
    np.testing.assert_allclose(y, expected, atol=1e-15)


def test_position_zero_is_the_identity_and_offset_matches_a_longer_sequence():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    y = F.rope(Tensor(x)).data
    np.testing.assert_array_equal(y[:, :, 0], x[:, :, 0])
    tail = F.rope(Tensor(x[:, :, 4:]), offset=4).data      # KV-cache decoding rotates from its offset
    np.testing.assert_allclose(tail, y[:, :, 4:], atol=1e-15)


def test_backward_is_the_inverse_rotation():
    x = Tensor(np.random.default_rng(1).standard_normal((1, 2, 5, 4)), requires_grad=True)
    g = np.random.default_rng(2).standard_normal((1, 2, 5, 4))
    F.rope(x, offset=3).backward(g)
    # R is orthogonal, so rotating the gradient back forward again gives g.
    np.testing.assert_allclose(F.rope(Tensor(x.grad), offset=3).data, g, atol=1e-14)


@pytest.mark.parametrize("magnitude", [1e-8, 1e8])
def test_rope_at_extreme_magnitudes_and_positions(magnitude):
    x = np.random.default_rng(3).standard_normal((1, 1, 3, 8)) * magnitude
    assert_three_way(lambda x: F.rope(x, offset=100000), lambda x: F.rope(x, offset=100000, composed=True), [x],
                     gradcheck=False)
    y = F.rope(Tensor(x), offset=100000).data
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)


def test_tables_are_cached_per_key_and_read_only():
    a = rope_tables(5, 8, 10000.0, 2, np.float64, np)
    assert rope_tables(5, 8, 10000.0, 2, np.float64, np) is a
    assert rope_tables(5, 8, 10000.0, 3, np.float64, np) is not a
    b = rope_tables(5, 8, 10000.0, 2, np.float32, np)
    assert b.cos.dtype == np.float32 and a.cos.shape == (5, 4) and a.sin_signed.shape == (5, 8)
    np.testing.assert_allclose(a.cos ** 2 + a.sin ** 2, 1.0, atol=1e-15)
    np.testing.assert_array_equal(a.sin_signed, np.concatenate([-a.sin, a.sin], axis=-1))
    with pytest.raises(ValueError):
        a.cos[0, 0] = 1.0
    y = F.rope(Tensor(np.ones((1, 1, 5, 8), np.float32)))
    assert y.dtype == np.float32


def test_rope_errors_name_the_values():
    with pytest.raises(ValueError, match=r"hs even, got shape \(1, 1, 2, 3\)"):
        F.rope(Tensor(np.zeros((1, 1, 2, 3))))
    with pytest.raises(ValueError, match="offset=-1"):
        F.rope(Tensor(np.zeros((1, 1, 2, 4))), offset=-1)
    with pytest.raises(ValueError, match="theta=0"):
        F.rope(Tensor(np.zeros((1, 1, 2, 4))), theta=0)
