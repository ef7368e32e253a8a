"""Scaled dot-product attention: hand-derived = composed = finite differences on generated shapes, masks,
grouped-query heads and dropout; causality, probability rows, dead rows, KV-cache offsets, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from autograd import Tensor
from autograd import functional as F
from autograd.testing import float_arrays
from .layers_threeway import assert_close_scaled, assert_three_way, forward_backward


@st.composite
def attention_case(draw, allow_dropout=True):
    """Shapes B<=2, nh<=4 (nkv dividing nh), T<=6, S in [T, T+2], hs<=8; values; mask; dropout."""
    B = draw(st.integers(1, 2))
    nkv = draw(st.integers(1, 2))
    nh = nkv * draw(st.integers(1, 4 // nkv))
    T = draw(st.integers(1, 6))
    S = T + draw(st.integers(0, 2))
    hs = draw(st.integers(1, 8))
    q = draw(float_arrays((B, nh, T, hs), min_value=-2, max_value=2))
    k = draw(float_arrays((B, nkv, S, hs), min_value=-2, max_value=2))
    v = draw(float_arrays((B, nkv, S, hs), min_value=-2, max_value=2))
    causal = draw(st.booleans())
    mask = None
    if draw(st.booleans()):
        mask_shape = draw(st.sampled_from([(B, 1, 1, S), (B, nh, T, S), (1, 1, T, S)]))
        mask = draw(st.lists(st.booleans(), min_size=int(np.prod(mask_shape)), max_size=int(np.prod(mask_shape))))
        mask = np.array(mask, dtype=bool).reshape(mask_shape)
    dropout_p = draw(st.sampled_from([0.0, 0.0, 0.3])) if allow_dropout else 0.0
    return q, k, v, causal, mask, dropout_p


def _sdpa(composed, causal, mask, dropout_p=0.0, seed=0, scale=None):
    def fn(q, k, v):
        gen = np.random.default_rng(seed)  # a fresh, seeded generator: the same dropout mask on every call
        return F.scaled_dot_product_attention(q, k, v, causal=causal, mask=mask, dropout_p=dropout_p,
                                              generator=gen, composed=composed, scale=scale)
    return fn


@given(case=attention_case())
def test_attention_three_way(case):
    q, k, v, causal, mask, dropout_p = case
    # full element-by-element differences up to 128 inputs, random directions beyond (hand-derived = composed
    # is compared element by element anyway)
    assert_three_way(_sdpa(False, causal, mask, dropout_p), _sdpa(True, causal, mask, dropout_p), [q, k, v],
                     full_limit=128)


@pytest.mark.parametrize("scale", [None, 0.05, 1.0])
def test_attention_explicit_scale(scale):
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 2, 4, 3)), rng.standard_normal((1, 2, 4, 3)), rng.standard_normal((1, 2, 4, 3))
    assert_three_way(_sdpa(False, True, None, scale=scale), _sdpa(True, True, None, scale=scale), [q, k, v])
    probs = F.attention_weights(Tensor(q), Tensor(k), causal=False, scale=scale).data
    s = (q @ k.swapaxes(-1, -2)) * (1 / np.sqrt(3) if scale is None else scale)
    expected = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(-1, keepdims=True), atol=1e-14)


@settings(max_examples=min(50, settings.default.max_examples))
@given(case=attention_case(allow_dropout=False), t=st.integers(0, 5), data=st.data())
def test_causality_later_positions_never_change_earlier_outputs(case, t, data):
    q, k, v = (np.ascontiguousarray(a) for a in case[:3])   # one layout for both runs: bitwise comparable
    T, S = q.shape[2], k.shape[2]
    t = min(t, T - 1)
    first_changed_key = S - T + t + 1      # query t (absolute S - T + t) sees keys <= S - T + t
    q2, k2, v2 = q.copy(), k.copy(), v.copy()
    q2[:, :, t + 1:] = data.draw(float_arrays(q2[:, :, t + 1:].shape))
    k2[:, :, first_changed_key:] = data.draw(float_arrays(k2[:, :, first_changed_key:].shape))
    v2[:, :, first_changed_key:] = data.draw(float_arrays(v2[:, :, first_changed_key:].shape))
    for composed in (False, True):
        a = _sdpa(composed, True, None)(Tensor(q), Tensor(k), Tensor(v)).data
        b = _sdpa(composed, True, None)(Tensor(q2), Tensor(k2), Tensor(v2)).data
        np.testing.assert_array_equal(a[:, :, :t + 1], b[:, :, :t + 1])


@given(case=attention_case(allow_dropout=False))
def test_attention_weights_are_probabilities_and_dead_rows_are_zero(case):
    q, k, _, causal, mask, _ = case
    probs = F.attention_weights(Tensor(q), Tensor(k), causal=causal, mask=mask).data
    B, nh, T, _ = q.shape
    S = k.shape[2]
    assert probs.shape == (B, nh, T, S)
    assert np.all(probs >= 0) and not np.any(np.isnan(probs))
    allowed = np.ones((B, nh, T, S), bool)
    if causal:
        allowed &= np.tril(np.ones((T, S), bool), k=S - T)
    if mask is not None:
        allowed &= mask
    assert np.all(probs[~allowed] == 0)
    live = allowed.any(-1)
    np.testing.assert_allclose(probs.sum(-1)[live], 1.0, atol=1e-12)
    np.testing.assert_array_equal(probs.sum(-1)[~live], 0.0)


@pytest.mark.parametrize("composed", [False, True])
def test_fully_masked_padding_row_gives_zero_output_and_gradient(composed):
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((2, 2, 3, 4))
    mask = np.ones((2, 1, 3, 3), bool)
    mask[1, 0, 2, :] = False               # batch 1, query 2 may attend nothing
    mask[0] = False                        # batch 0 is padding only
    y, (gq, gk, gv) = forward_backward(_sdpa(composed, True, mask), [q, k, v], np.ones((2, 2, 3, 4)))
    for g in (y, gq, gk, gv):
        assert not np.any(np.isnan(g))
    np.testing.assert_array_equal(y[0], 0)
    np.testing.assert_array_equal(y[1, :, 2], 0)
    np.testing.assert_array_equal(gq[0], 0)
    np.testing.assert_array_equal(gq[1, :, 2], 0)
    np.testing.assert_array_equal(gk[0], 0)
    np.testing.assert_array_equal(gv[0], 0)
    assert_three_way(_sdpa(False, True, mask), _sdpa(True, True, mask), [q, k, v])


@given(case=attention_case())
def test_grouped_query_attention_equals_mha_with_repeated_kv_heads(case):
    q, k, v, causal, mask, dropout_p = case
    group = q.shape[1] // k.shape[1]
    k_rep, v_rep = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)   # head j -> heads j*g .. j*g+g-1
    gy = np.random.default_rng(0).standard_normal(q.shape)
    y_gqa, (gq1, gk1, gv1) = forward_backward(_sdpa(False, causal, mask, dropout_p), [q, k, v], gy)
    y_mha, (gq2, gk2, gv2) = forward_backward(_sdpa(False, causal, mask, dropout_p), [q, k_rep, v_rep], gy)
    assert_close_scaled(y_gqa, y_mha, 1e-12, "output")
    assert_close_scaled(gq1, gq2, 1e-12, "dq")
    B, nkv, S, hs = k.shape
    assert_close_scaled(gk1, gk2.reshape(B, nkv, group, S, hs).sum(2), 1e-12, "dk summed over the group")
    assert_close_scaled(gv1, gv2.reshape(B, nkv, group, S, hs).sum(2), 1e-12, "dv summed over the group")


@pytest.mark.parametrize("composed", [False, True])
def test_kv_cache_queries_are_the_last_positions(composed):
    """Attention of the last T queries against all S keys equals the last T rows of full causal attention."""
    rng = np.random.default_rng(5)
    S, T = 6, 2
    q, k, v = rng.standard_normal((1, 2, S, 4)), rng.standard_normal((1, 1, S, 4)), rng.standard_normal((1, 1, S, 4))
    full = _sdpa(composed, True, None)(Tensor(q), Tensor(k), Tensor(v)).data
    tail = _sdpa(composed, True, None)(Tensor(q[:, :, S - T:]), Tensor(k), Tensor(v)).data
    np.testing.assert_allclose(tail, full[:, :, S - T:], atol=1e-14)


@pytest.mark.parametrize("magnitude", [30.0, 1e3])
def test_attention_at_extreme_scores(magnitude):
    """Huge scores saturate the softmax to one-hot rows; stable: finite, and hand-derived = composed."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((1, 2, 4, 3)) * magnitude, rng.standard_normal((1, 2, 5, 3)) * magnitude,
               rng.standard_normal((1, 2, 5, 3)))
    gy = rng.standard_normal((1, 2, 4, 3))
    y1, g1 = forward_backward(_sdpa(False, True, None), [q, k, v], gy)
    y2, g2 = forward_backward(_sdpa(True, True, None), [q, k, v], gy)
    assert_close_scaled(y1, y2, 1e-10, "output")
    for a, b in zip(g1, g2):
        assert_close_scaled(a, b, 1e-9, "gradient")
    probs = F.attention_weights(Tensor(q), Tensor(k)).data
    assert np.all(np.isfinite(probs))
    if magnitude >= 1e3:
        np.testing.assert_allclose(probs.max(-1), 1.0, atol=1e-12)


def test_dropout_is_seeded_and_scales_the_kept_weights():
    rng = np.random.default_rng(7)
    q, k, v = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((2, 2, 5, 4))
    p = 0.4
    a = _sdpa(False, True, None, p, seed=3)(Tensor(q), Tensor(k), Tensor(v)).data
    b = _sdpa(False, True, None, p, seed=3)(Tensor(q), Tensor(k), Tensor(v)).data
    c = _sdpa(False, True, None, p, seed=4)(Tensor(q), Tensor(k), Tensor(v)).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    keep = np.random.default_rng(3).random((2, 2, 5, 5)) >= p
    probs = F.attention_weights(Tensor(q), Tensor(k)).data
    np.testing.assert_allclose(a, (probs * keep / (1 - p)) @ v, atol=1e-14)


def test_float32_stays_float32():
    rng = np.random.default_rng(8)
    q, k, v = (Tensor(rng.standard_normal((1, 2, 3, 4)).astype(np.float32), requires_grad=True) for _ in range(3))
    y = F.scaled_dot_product_attention(q, k, v)
    y.sum().backward()
    assert y.dtype == np.float32 and q.grad.dtype == np.float32 and k.grad.dtype == np.float32


def test_attention_errors_name_the_values():
    z = Tensor(np.zeros((1, 3, 2, 4)))
    kv2 = Tensor(np.zeros((1, 2, 2, 4)))
    with pytest.raises(ValueError, match="3 query heads are not a multiple of 2 kv heads"):
        F.scaled_dot_product_attention(z, kv2, kv2)
    with pytest.raises(ValueError, match="must be 4-D"):
        F.scaled_dot_product_attention(Tensor(np.zeros((3, 2, 4))), z, z)
    with pytest.raises(ValueError, match="do not match q"):
        F.scaled_dot_product_attention(z, Tensor(np.zeros((1, 3, 2, 5))), Tensor(np.zeros((1, 3, 2, 5))))
    with pytest.raises(TypeError, match="mask must be boolean"):
        F.scaled_dot_product_attention(z, z, z, mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast"):
        F.scaled_dot_product_attention(z, z, z, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="dropout_p=1.0"):
        F.scaled_dot_product_attention(z, z, z, dropout_p=1.0)
    with pytest.raises(ValueError, match="T <= Tk"):
        F.scaled_dot_product_attention(Tensor(np.zeros((1, 3, 4, 4))), z, z)


@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (4, 1)])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_packed_self_attention_three_way_and_equals_split_heads(heads, dropout_p):
    nh, nkv = heads
    B, T, hs = 2, 5, 4
    qkv = np.random.default_rng(nh * 10 + nkv).standard_normal((B, T, (nh + 2 * nkv) * hs))

    def packed(composed):
        return lambda t: F.packed_self_attention(t, nh, nkv, dropout_p=dropout_p, composed=composed,
                                                 generator=np.random.default_rng(7))
    assert_three_way(packed(False), packed(True), [qkv])
    # The same numbers as splitting the heads by hand and calling the 4-D attention.
    heads_ = qkv.reshape(B, T, nh + 2 * nkv, hs).transpose(0, 2, 1, 3)
    q, k, v = (Tensor(np.ascontiguousarray(a)) for a in (heads_[:, :nh], heads_[:, nh:nh + nkv], heads_[:, nh + nkv:]))
    split = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, generator=np.random.default_rng(7))
    np.testing.assert_allclose(packed(False)(Tensor(qkv)).data, split.data.transpose(0, 2, 1, 3).reshape(B, T, nh * hs),
                               rtol=1e-13, atol=1e-13)


def test_packed_self_attention_rejects_bad_widths():
    with pytest.raises(ValueError, match=r"not \(B, T, \(nh \+ 2 nkv\) hs\) for n_head=4, n_kv_head=2"):
        F.packed_self_attention(Tensor(np.zeros((1, 3, 10))), 4, 2)


@pytest.mark.parametrize("heads, T", [((2, 2), 13), ((4, 2), 11), ((3, 1), 16)])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_block_causal_path_three_way(monkeypatch, heads, T, dropout_p):
    """Causal attention in query blocks (keys above the diagonal skipped) = the composed full attention."""
    from autograd import functional
    from autograd.layers.attention import BlockCausalAttentionFunction
    monkeypatch.setattr(functional, "CAUSAL_BLOCK", 4)       # T // 4 blocks, uneven ones included
    nh, nkv = heads
    hs = 3
    qkv = np.random.default_rng(T).standard_normal((2, T, (nh + 2 * nkv) * hs))

    def packed(composed):
        return lambda t: F.packed_self_attention(t, nh, nkv, dropout_p=dropout_p, composed=composed,
                                                 generator=np.random.default_rng(7))
    y = packed(False)(Tensor(qkv, requires_grad=True))
    assert isinstance(y.grad_fn.inner, BlockCausalAttentionFunction) and len(y.grad_fn.inner.bounds) == T // 4
    assert_three_way(packed(False), packed(True), [qkv])


def test_block_causal_path_is_taken_from_64_positions():
    from autograd.layers.attention import BlockCausalAttentionFunction, ScaledDotProductAttentionFunction
    for T, kind in [(63, ScaledDotProductAttentionFunction), (64, BlockCausalAttentionFunction),
                    (300, BlockCausalAttentionFunction)]:
        y = F.packed_self_attention(Tensor(np.zeros((1, T, 6)), requires_grad=True), 1)
        assert type(y.grad_fn.inner) is kind, T


@given(st.integers(2, 24), st.integers(2, 6), st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2)]), st.integers(0, 10**6))
def test_block_causal_equals_full_causal_attention_for_any_blocking(T, blocks, heads, seed):
    """Property: any number of query blocks gives the full causal attention's output and gradients."""
    from autograd.layers.attention import BlockCausalAttentionFunction, ScaledDotProductAttentionFunction, causal_mask
    nh, nkv = heads
    blocks = min(blocks, T)
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((2, n, T, 3)) for n in (nh, nkv, nkv))
    g = rng.standard_normal((2, nh, T, 3))
    full, blocked = ScaledDotProductAttentionFunction(), BlockCausalAttentionFunction()
    full.needs_input_grad = blocked.needs_input_grad = (True, True, True)
    y_full = full.forward(q, k, v, allowed=causal_mask(T, T), scale=0.4)
    y_blocked = blocked.forward(q, k, v, blocks=blocks, scale=0.4)
    np.testing.assert_allclose(y_blocked, y_full, rtol=0, atol=1e-12)
    for a, b in zip(blocked.backward(g), full.backward(g)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
