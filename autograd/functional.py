"""autograd.functional (F): the layers a language model needs, as functions on Tensors.

Most are hand-derived Functions from `autograd.layers` (forward and backward side by
side, with a page each in docs/derivations/). Where a layer takes `composed`,
`composed=True` builds the same result from primitives instead: the reference the
hand-derived backward is tested against, and a readable statement of the math
(`composed=False`, the default, is the hand-derived Function).

    F.softmax(x, axis=-1)            F.log_softmax(x, axis=-1)
    F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    F.gelu(x, approximate="tanh")    F.silu(x)    F.relu(x)
    F.dropout(x, p, training=True, generator=None)     generator: a seeded Generator or a DropoutKey
    F.embedding(idx, weight)         F.linear(x, weight, bias=None)
    F.layer_norm(x, weight=None, bias=None, eps=1e-5)    F.rms_norm(x, weight=None, eps=1e-6)
    F.scaled_dot_product_attention(q, k, v, causal=True, mask=None, dropout_p=0.0, generator=None, scale=None)
    F.attention_weights(q, k, causal=True, mask=None)    F.rope(x, theta=10000.0, offset=0)
    F.swiglu(gate, up)

Left out: convolutions, pooling, losses other than cross-entropy.
"""
from __future__ import annotations


import numpy as np

from . import backend, ops
from .layers.activation import GELU_A, GELU_K, GeluErfFunction, GeluTanhFunction, SiluFunction
from .layers.attention import (PackedSelfAttentionFunction, ScaledDotProductAttentionFunction, attention_probs,
                               causal_mask)
from .layers.cross_entropy import (CrossEntropyFunction, check_reduction, check_target_range, check_targets,
                                   valid_count)
from .layers.dropout import DropoutFunction, DropoutKey, keyed_scaled_mask
from .layers.embedding import EmbeddingFunction
from .layers.linear import LinearFunction
from .layers.norm import LayerNormFunction, RMSNormFunction
from .layers.rope import RopeFunction, rope_tables
from .layers.softmax import LogSoftmaxFunction, SoftmaxFunction
from .layers.swiglu import SwiGLUFunction
from .tensor import Tensor

relu = ops.relu
sigmoid = ops.sigmoid
tanh = ops.tanh

_default_generators: dict = {}   # device -> the generator dropout draws from when none is passed


def default_generator(device: str = "cpu"):
    """The generator (seed 0) that dropout uses when the caller passes none; the model passes its own."""
    if device not in _default_generators:
        _default_generators[device] = backend.new_generator(0, device)
    return _default_generators[device]


# ---- softmax family --------------------------------------------------------------------

def softmax(x: Tensor, axis: int = -1, composed: bool = False) -> Tensor:
    if composed:
        e = ops.exp(x - ops.max(x, axis=axis, keepdims=True).detach())  # the max is a constant shift
        return e / ops.sum(e, axis=axis, keepdims=True)
    return SoftmaxFunction.apply(x, axis=axis)


def log_softmax(x: Tensor, axis: int = -1, composed: bool = False) -> Tensor:
    if composed:
        shifted = x - ops.max(x, axis=axis, keepdims=True).detach()
        return shifted - ops.log(ops.sum(ops.exp(shifted), axis=axis, keepdims=True))
    return LogSoftmaxFunction.apply(x, axis=axis)


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100, reduction: str = "mean",
                  composed: bool = False) -> Tensor:
    """Mean (or sum, or per-position) negative log-likelihood of integer `targets` under softmax(logits).

    logits: (..., V) floats; targets: (...) ints in [0, V) or ignore_index.
    """
    t = targets.data if isinstance(targets, Tensor) else targets
    t = t if hasattr(t, "dtype") else np.asarray(t)
    check_targets(logits.shape, t.shape)
    check_reduction(reduction)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integers, got dtype {t.dtype}")
    check_target_range(t, logits.shape[-1], ignore_index)      # where t is: free on the host
    targets = Tensor.constant(logits.xp.asarray(t))               # host targets move after their check
    if not composed:
        return CrossEntropyFunction.apply(logits, targets, ignore_index=ignore_index, reduction=reduction)
    xp = logits.xp
    V = logits.shape[-1]
    t = targets.data.reshape(-1)
    valid = t != ignore_index
    logp = log_softmax(logits.reshape(-1, V), axis=-1, composed=True)     # (N, V)
    picked = logp[xp.arange(t.shape[0]), xp.where(valid, t, 0)]           # (N,)
    losses = -ops.where(valid, picked, 0.0)
    if reduction == "none":
        return losses.reshape(targets.shape)
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / Tensor.constant(valid_count(valid, logits.dtype))


# ---- activations -----------------------------------------------------------------------

def gelu(x: Tensor, approximate: str = "tanh", composed: bool = False) -> Tensor:
    """GELU; approximate="tanh" (GPT-2's) or "none" (exact, with erf)."""
    if approximate not in ("tanh", "none"):
        raise ValueError(f"gelu: approximate={approximate!r}; use 'tanh' or 'none'")
    if approximate == "none":
        if composed:
            raise ValueError("gelu: the exact (erf) form has no composed path: erf is not a primitive")
        return GeluErfFunction.apply(x)
    if composed:
        return 0.5 * x * (1 + ops.tanh(GELU_K * (x + GELU_A * x * x * x)))
    return GeluTanhFunction.apply(x)


def silu(x: Tensor, composed: bool = False) -> Tensor:
    if composed:
        return x * ops.sigmoid(x)
    return SiluFunction.apply(x)


# ---- dropout, embedding, linear --------------------------------------------------------

def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout; the identity when not training or p == 0."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p={p} must be in [0, 1)")
    if not training or p == 0.0:
        return x
    gen = generator if generator is not None else default_generator(x.device)
    return DropoutFunction.apply(x, scaled_mask=dropout_scaled_mask(x.shape, x.dtype, p, gen, x.xp))


def embedding(idx, weight: Tensor, check_ids: bool = True) -> Tensor:
    """Rows of `weight` (V, C) picked by integer ids `idx` (any shape) -> idx.shape + (C,).

    Host ids are checked on the host, then moved to the weight's device; device ids cost one
    copy of two numbers to the host for the check. check_ids=False skips the range check, for
    a caller that checked the ids itself (the model, once, at its input).
    """
    ids = idx.data if isinstance(idx, Tensor) else idx
    ids = ids if hasattr(ids, "dtype") else np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    V = weight.shape[0]
    if check_ids and ids.size:
        low, high = (int(v) for v in backend.read_scalars(ids.min(), ids.max()))
        if low < 0 or high >= V:
            raise ValueError(f"embedding: id {low if low < 0 else high} is outside the vocabulary [0, {V})")
    return EmbeddingFunction.apply(weight, Tensor.constant(weight.xp.asarray(ids)))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, composed: bool = False) -> Tensor:
    """x @ weight.T + bias, weight stored (out, in)."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {tuple(x.shape)}) "
                         f"but the weight {tuple(weight.shape)} expects {weight.shape[1]}")
    if composed:
        y = x @ ops.transpose(weight)
        return y if bias is None else y + bias
    return LinearFunction.apply(x, weight) if bias is None else LinearFunction.apply(x, weight, bias)


# =======================================================================================
# ---- transformer layers: normalisation, attention, rotary embedding, SwiGLU ------------
# Hand-derived Functions live in autograd/layers/{norm,attention,rope,swiglu}.py, each with
# a page in docs/derivations/. `composed=True` builds the same math from primitives: the
# reference the hand-derived backward is tested against.
# =======================================================================================

def _check_last_axis_param(op: str, name: str, param, x: Tensor) -> None:
    if param is not None and tuple(param.shape) != (x.shape[-1],):
        raise ValueError(f"{op}: {name} has shape {tuple(param.shape)} but the input's last axis is "
                         f"{x.shape[-1]} (input shape {tuple(x.shape)}); pass a {name} of shape ({x.shape[-1]},)")


def _check_eps(op: str, eps: float) -> None:
    if not eps >= 0:
        raise ValueError(f"{op}: eps={eps} must be >= 0 (a small positive number such as 1e-5 keeps it finite)")


def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5,
               composed: bool = False) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (population variance).

    x: (..., C); weight, bias: (C,) or None.
    """
    _check_eps("layer_norm", eps)
    _check_last_axis_param("layer_norm", "weight", weight, x)
    _check_last_axis_param("layer_norm", "bias", bias, x)
    if composed:
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(centered * centered, axis=-1, keepdims=True)
        y = centered / ops.sqrt(variance + eps)
        if weight is not None:
            y = y * weight
        return y if bias is None else y + bias
    params = [p for p in (weight, bias) if p is not None]
    return LayerNormFunction.apply(x, *params, eps=eps, has_weight=weight is not None, has_bias=bias is not None)


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6, composed: bool = False) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis.  x: (..., C); weight: (C,) or None."""
    _check_eps("rms_norm", eps)
    _check_last_axis_param("rms_norm", "weight", weight, x)
    if composed:
        y = x / ops.sqrt(ops.mean(x * x, axis=-1, keepdims=True) + eps)
        return y if weight is None else y * weight
    params = [] if weight is None else [weight]
    return RMSNormFunction.apply(x, *params, eps=eps, has_weight=weight is not None)


def swiglu(gate: Tensor, up: Tensor, composed: bool = False) -> Tensor:
    """silu(gate) * up, elementwise (the MLP does the projections)."""
    if tuple(gate.shape) != tuple(up.shape):
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
    if composed:
        return silu(gate, composed=True) * up
    return SwiGLUFunction.apply(gate, up)


def rope(x: Tensor, theta: float = 10000.0, offset: int = 0, composed: bool = False) -> Tensor:
    """Rotary position embedding, "rotate_half" layout (GPT-NeoX / Hugging Face Llama).

    x: (B, nh, T, hs), hs even. Position t (counted from `offset`) rotates the pair
    (x_i, x_{i+hs/2}) by the angle (offset + t) * theta^(-2i/hs).
    """
    _check_rope_input(x, theta, offset)
    if composed:
        cos, sin = _rope_tables_full(x, theta, offset)                   # (T, hs) each
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]                            # (B, nh, T, hs/2)
        rotated_half = ops.concatenate([-x2, x1], axis=-1)               # (B, nh, T, hs)
        return x * cos + rotated_half * sin
    return RopeFunction.apply(x, theta=theta, offset=int(offset))


def attention_weights(q: Tensor, k: Tensor, causal: bool = True, mask=None, scale: float | None = None) -> Tensor:
    """The attention probabilities softmax(q k^T * scale) (B, nh, T, Tk), masked as in
    scaled_dot_product_attention; a row with no allowed key is all zeros. No gradient."""
    _check_attention_shapes(q, k, k)
    allowed = _attention_allowed(q, k, causal, mask)
    q_scaled = q.data * q.dtype.type(_attention_scale(q, scale))
    return Tensor.constant(attention_probs(q_scaled, k.data, allowed))


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, mask=None,
                                 dropout_p: float = 0.0, generator=None, composed: bool = False,
                                 scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale + masks) v, with grouped-query heads, padding mask and dropout.

    q: (B, nh, T, hs); k, v: (B, nkv, Tk, hs) with nh % nkv == 0: kv head j serves the
    nh/nkv consecutive query heads j*nh/nkv ... (Hugging Face Llama's repeat_kv).
    scale defaults to 1/sqrt(hs). causal: the T queries are the last T of the Tk positions,
    so query i may attend key j only if j <= Tk - T + i (KV-cache decoding has T < Tk).
    mask: boolean, broadcastable to (B, nh, T, Tk), True = may attend (padding masks).
    A query row with no key it may attend gives output 0 and zero gradient (never NaN).
    dropout_p: dropout on the attention weights, masks from `generator` (a seeded Generator or a DropoutKey).
    Returns (B, nh, T, hs).
    """
    _check_attention_shapes(q, k, v)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p={dropout_p} must be in [0, 1)")
    allowed = _attention_allowed(q, k, causal, mask)
    scale = _attention_scale(q, scale)
    keep_scaled = None
    if dropout_p > 0.0:
        B, nh, T, _ = q.shape
        gen = generator if generator is not None else default_generator(q.device)
        keep_scaled = dropout_scaled_mask((B, nh, T, k.shape[2]), q.dtype, dropout_p, gen, q.xp)
    if composed:
        probs = _composed_attention_probs(q, k, allowed, scale)        # (B, nh, T, Tk)
        if keep_scaled is not None:
            probs = probs * Tensor.constant(keep_scaled)
        return probs @ _repeat_kv(v, q.shape[1])                        # (B, nh, T, Tk) @ (B, nh, Tk, hs)
    return ScaledDotProductAttentionFunction.apply(q, k, v, allowed=allowed, scale=scale, keep_scaled=keep_scaled)


CAUSAL_BLOCK = 32  # T // 32 query blocks in packed_self_attention's causal path: 32 to 48 rows each


def packed_self_attention(qkv: Tensor, n_head: int, n_kv_head: int | None = None, causal: bool = True,
                          dropout_p: float = 0.0, generator=None, composed: bool = False,
                          scale: float | None = None) -> Tensor:
    """Causal self-attention on a fused QKV projection: (B, T, (nh + 2 nkv) hs) -> (B, T, nh hs).

    The columns of `qkv` are [q heads | k heads | v heads], hs each, as the model's c_attn
    produces them. Equal to splitting the heads, calling scaled_dot_product_attention and
    merging the heads again (which composed=True does); the hand-derived Function does it
    without the slicing and transposes.
    """
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    if qkv.ndim != 3 or n_head <= 0 or n_kv_head <= 0 or qkv.shape[-1] % (n_head + 2 * n_kv_head):
        raise ValueError(f"packed_self_attention: qkv of shape {tuple(qkv.shape)} is not (B, T, (nh + 2 nkv) hs) "
                         f"for n_head={n_head}, n_kv_head={n_kv_head}")
    B, T, W = qkv.shape
    hs = W // (n_head + 2 * n_kv_head)
    if composed:
        heads = qkv.reshape(B, T, n_head + 2 * n_kv_head, hs).transpose(1, 2)   # (B, nh + 2 nkv, T, hs)
        q, k, v = heads[:, :n_head], heads[:, n_head:n_head + n_kv_head], heads[:, n_head + n_kv_head:]
        y = scaled_dot_product_attention(q, k, v, causal=causal, dropout_p=dropout_p, generator=generator,
                                         composed=True, scale=scale)             # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, n_head * hs)
    if n_head % n_kv_head:
        raise ValueError(f"packed_self_attention: n_head={n_head} is not a multiple of n_kv_head={n_kv_head}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"packed_self_attention: dropout_p={dropout_p} must be in [0, 1)")
    # Causal over 64+ positions: query blocks of 32+ rows skip the scores above the diagonal.
    blocks = T // CAUSAL_BLOCK if causal and T >= 2 * CAUSAL_BLOCK else None
    allowed = causal_mask(T, T, qkv.xp) if causal and not blocks else None     # (T, T): key j <= query i
    keep_scaled = None
    if dropout_p > 0.0:
        gen = generator if generator is not None else default_generator(qkv.device)
        keep_scaled = dropout_scaled_mask((B, n_head, T, T), qkv.dtype, dropout_p, gen, qkv.xp)
    scale = 1.0 / float(np.sqrt(hs)) if scale is None else float(scale)
    return PackedSelfAttentionFunction.apply(qkv, n_head=n_head, n_kv_head=n_kv_head, allowed=allowed,
                                             scale=scale, keep_scaled=keep_scaled, causal_blocks=blocks)


def dropout_scaled_mask(shape, dtype, p: float, generator, xp=np):
    """keep / (1 - p) with keep ~ Bernoulli(1 - p): the array inverted dropout multiplies by.

    generator: a seeded NumPy/CuPy Generator (masks drawn in order), or a DropoutKey (the mask
    a pure function of the key and each element's coordinates: autograd/layers/dropout.py).
    """
    if isinstance(generator, DropoutKey):
        return keyed_scaled_mask(generator, shape, dtype, p, xp)
    keep = generator.random(shape) >= p
    return keep.astype(dtype) * np.dtype(dtype).type(1.0 / (1.0 - p))


# ---- helpers of the transformer layers --------------------------------------------------

def _check_attention_shapes(q: Tensor, k: Tensor, v: Tensor) -> None:
    op = "scaled_dot_product_attention"
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"{op}: q, k, v must be 4-D (B, nh, T, hs), got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, nh, T, hs = q.shape
    if tuple(k.shape) != tuple(v.shape):
        raise ValueError(f"{op}: k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    if k.shape[0] != B or k.shape[3] != hs:
        raise ValueError(f"{op}: k/v of shape {tuple(k.shape)} do not match q {tuple(q.shape)}: "
                         f"need (B={B}, nkv, Tk, hs={hs})")
    nkv = k.shape[1]
    if nkv == 0 or nh % nkv:
        raise ValueError(f"{op}: {nh} query heads are not a multiple of {nkv} kv heads; "
                         "n_head must be divisible by n_kv_head")


def _attention_scale(q: Tensor, scale: float | None) -> float:
    return 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)


def _attention_allowed(q: Tensor, k: Tensor, causal: bool, mask):
    """Boolean array broadcastable to (B, nh, T, Tk): True where query i may attend key j; None = all."""
    xp = q.xp
    B, nh, T, _ = q.shape
    Tk = k.shape[2]
    allowed = None
    if causal:
        if T > Tk:
            raise ValueError(f"scaled_dot_product_attention: causal attention with {T} queries but only "
                             f"{Tk} keys; the queries are the last T of the Tk positions, so T <= Tk")
        # query i sits at absolute position Tk - T + i and sees keys j <= Tk - T + i
        allowed = causal_mask(T, Tk, xp)                                  # (T, Tk)
    if mask is not None:
        m = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = may attend), "
                            f"got dtype {m.dtype}")
        try:
            np.broadcast_shapes(m.shape, (B, nh, T, Tk))
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: mask of shape {m.shape} does not broadcast to "
                             f"(B, nh, T, Tk) = {(B, nh, T, Tk)}") from None
        allowed = m if allowed is None else (allowed & m)
    return allowed


def _repeat_kv(kv: Tensor, nh: int) -> Tensor:
    """(B, nkv, Tk, hs) -> (B, nh, Tk, hs), each kv head repeated for its nh/nkv query heads."""
    B, nkv, Tk, hs = kv.shape
    if nkv == nh:
        return kv
    group = nh // nkv
    return kv.reshape(B, nkv, 1, Tk, hs).expand(B, nkv, group, Tk, hs).reshape(B, nh, Tk, hs)


def _composed_attention_probs(q: Tensor, k: Tensor, allowed, scale: float) -> Tensor:
    """softmax(q k^T * scale) over allowed keys, from primitives; dead rows are zero."""
    B, nh, T, _ = q.shape
    Tk = k.shape[2]
    scores = (q @ ops.transpose(_repeat_kv(k, nh))) * scale              # (B, nh, T, hs) @ (B, nh, hs, Tk)
    if allowed is None:
        return softmax(scores, axis=-1, composed=True)
    xp = q.xp
    allowed = xp.broadcast_to(allowed, (B, nh, T, Tk))
    live = allowed.any(axis=-1, keepdims=True)                           # (B, nh, T, 1): rows with a key
    # A dead row attends everything (finite softmax) and is then multiplied by 0.
    scores = ops.masked_fill(scores, ~(allowed | ~live), -np.inf)
    probs = softmax(scores, axis=-1, composed=True)
    return probs * Tensor.constant(live.astype(q.dtype))


def _check_rope_input(x: Tensor, theta: float, offset: int) -> None:
    if x.ndim != 4 or x.shape[-1] % 2:
        raise ValueError(f"rope: x must be (B, nh, T, hs) with hs even, got shape {tuple(x.shape)}")
    if not theta > 0:
        raise ValueError(f"rope: theta={theta} must be positive (10000.0 in GPT-NeoX/Llama)")
    if int(offset) != offset or offset < 0:
        raise ValueError(f"rope: offset={offset} must be a non-negative integer (the first position)")


def _rope_tables_full(x: Tensor, theta: float, offset: int):
    """cos and sin of shape (T, hs) as constant Tensors (each half-table repeated twice)."""
    tables = rope_tables(x.shape[2], x.shape[3], theta, offset, x.dtype, x.xp)
    xp = x.xp
    return (Tensor.constant(tables.cos_full),
            Tensor.constant(xp.concatenate([tables.sin, tables.sin], axis=-1)))
