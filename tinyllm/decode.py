"""Decoding without a graph: a GPT's forward on raw arrays, with a KV cache, from the same layers.

    cache = KVCache.for_model(model, batch_size=B)
    logits = decode.forward(model, prompt, cache, last_only=True)   # (B, 1, V) xp array; cache filled
    logits = decode.forward(model, next_ids, cache, last_only=True) # one new position per row
    logits = decode.forward_vector(model, token, cache)             # (V,): one row, one token, vectors

Why a second walk at all. A KV-cache step runs one position through the model, and there the
Tensor wrappers, the graph and the argument checks around every op cost more than the
arithmetic (docs/model.md, "Speed"). So decoding runs each module on raw xp arrays with
`nn.run_on_array`: a module's own `array_forward`, which calls its autograd Function's
`forward` with nothing recorded (`nn.graph_free`), the very forward its `forward` reaches
through autograd.functional, without the bookkeeping. No formula is written here, and this
file knows no layer type but the ones the cache is about.

What it walks. Token (and learned position) embeddings, each Block (norm1, attention with
the cache, norm2, MLP), the final norm and the head. The attention of a Block is the part
that reads the cache, so it is walked here (c_attn, RopeFunction, the cache,
ScaledDotProductAttentionFunction, c_proj); every other part runs its `array_forward`
(nn.Linear, Embedding, LayerNorm, RMSNorm, GELU, SwiGLU, blocks.MLP, lora.LoRALinear each
have one, beside their forward).

What it does not know. A module without an `array_forward` beside its `forward` -- a user's
activation, norm or projection, or a subclass that changed forward -- runs its own `forward`
on `Tensor.constant(x)` under no_grad: correct, only slower, for every layer that treats each
position on its own. Attention does not: a block or attention module of another type runs
the same way on a whole sequence without a cache, but cannot be fed one position at a time
from one, so `cacheable(model)` is False and generate() recomputes each window through the
model's own forward instead. A new layer therefore needs nothing here to train and sample
correctly; for speed, give it an `array_forward` that calls its Function.

One vector. With one sequence on the CPU (`forward_vector`), the residual stream is a
vector x (C,): every Linear is a matrix-vector product and the norms take scalar
statistics, inside the same Functions (autograd/layers/linear.py, norm.py); a NumPy op on
a vector costs about half one that broadcasts a (1, 1, C) row against (1, 1, 1) statistics,
and a step of one position is nothing but such calls.

Left out: CUDA-specific kernels (CuPy arrays take the batch walk), prompts of different
lengths in one batch, speculative decoding.
"""
from __future__ import annotations

import numpy as np

from autograd import backend
from autograd.layers.attention import ScaledDotProductAttentionFunction, causal_mask
from autograd.layers.rope import RopeFunction

from .blocks import Block, CausalSelfAttention
from .config import as_token_ids, check_token_ids
from .nn import graph_free, linear_on_array, run_on_array as run


# ---- attention with the cache, blocks, the model ---------------------------------------------

def _knows(block) -> bool:
    return type(block) is Block and type(block.attn) is CausalSelfAttention


def cacheable(model) -> bool:
    """Whether decoding can feed `model` one position at a time from a KV cache: every block a
    Block whose attention is a CausalSelfAttention (module docstring)."""
    return all(_knows(block) for block in model.blocks)


def _check_cacheable(model) -> None:
    for i, block in enumerate(model.blocks):
        if not _knows(block):
            kind = type(block).__name__ if type(block) is not Block else f"Block with a {type(block.attn).__name__}"
            raise ValueError(f"decode: blocks.{i} is a {kind}, not a Block with a CausalSelfAttention, so it "
                             "cannot read a KV cache; decode without a cache (generate does so by itself)")


def attention(attn: CausalSelfAttention, x, cache_layer, start_pos: int):
    """attn on the raw array x (B, T, C), or one vector (C,), at positions start_pos ..;
    with cache_layer, the new keys and values are appended and every cached position is attended."""
    nh, nkv, hs = attn.n_head, attn.n_kv_head, attn.head_size
    qkv = run(attn.c_attn, x)                                                 # (B, T, (nh + 2 nkv) hs)
    if x.ndim == 1:
        heads = qkv.reshape(1, nh + 2 * nkv, 1, hs)                           # (B=1, nh + 2 nkv, T=1, hs)
    else:
        B, T, _ = x.shape
        heads = qkv.reshape(B, T, nh + 2 * nkv, hs).transpose(0, 2, 1, 3)    # (B, nh + 2 nkv, T, hs)
    q, k, v = heads[:, :nh], heads[:, nh:nh + nkv], heads[:, nh + nkv:]
    if attn.rope_theta is not None:
        q = graph_free(RopeFunction).forward(q, theta=attn.rope_theta, offset=start_pos)
        k = graph_free(RopeFunction).forward(k, theta=attn.rope_theta, offset=start_pos)
    if cache_layer is not None:
        k, v = cache_layer.append(k, v, start_pos)                            # (B, nkv, start_pos + T, hs)
    T, S = q.shape[2], k.shape[2]
    # one query (a decoding step) may attend every cached key: no mask to build
    allowed = None if T == 1 else causal_mask(T, S, backend.get_array_module(q))    # (T, S)
    y = graph_free(ScaledDotProductAttentionFunction).forward(q, k, v, allowed=allowed, scale=attn.scale)
    # y: (B, nh, T, hs)
    if x.ndim == 1:
        y = y.reshape(-1)                                                     # (nh hs,)
    else:
        y = y.transpose(0, 2, 1, 3).reshape(x.shape)                          # (B, T, nh hs)
    return run(attn.c_proj, y)


def block_forward(block: Block, x, cache_layer, start_pos: int):
    """block on the raw array x (B, T, C) or (C,): x + attn(norm1(x)), then + mlp(norm2(x)).

    A block this file does not know (module docstring) runs its own forward: on a whole
    sequence, without a cache (forward checks that first).
    """
    if not _knows(block):
        return run(block, x)
    x = x + attention(block.attn, run(block.norm1, x), cache_layer, start_pos)
    return x + run(block.mlp, run(block.norm2, x))


def head(model, x):
    """Final norm and LM head on raw arrays: (..., C) -> logits (..., V)."""
    x = run(model.norm_f, x)
    if model.config.tie_embeddings:
        return linear_on_array(x, model.wte.weight.data)                      # (..., C) @ (C, V)
    return run(model.lm_head, x)


def check_eval_mode(model, who: str) -> None:
    """Decoding draws no dropout masks: with dropout > 0 the model must be in eval mode."""
    if model.training and model.config.dropout > 0:
        raise RuntimeError(f"{who} is inference only (no dropout), but the model is in training "
                           f"mode with dropout={model.config.dropout}; call model.eval() first")


def forward(model, idx, cache=None, last_only: bool = False, check: bool = True):
    """Logits as a raw xp array (B, T, V), or (B, 1, V) with last_only, for ids idx (B, T) that
    continue the positions held by `cache` (cache.length; 0 without a cache); the cache grows by T.

    Equal to model(idx) (a full recompute with cache=None), in eval mode. check=False skips the
    checks, for a decoding loop that made the cache for this model and checks its ids itself:
    idx must then be an integer xp array (B, T) on the model's device with ids in [0, vocab_size).
    """
    start_pos = 0 if cache is None else cache.length
    if check:
        check_eval_mode(model, "decode.forward")
        if cache is not None:
            _check_cacheable(model)
            cache.check_compatible(model, idx)
        idx = as_token_ids(idx, model.config, model.device, start_pos)
    x = run(model.wte, idx)                                                   # (B, T, C)
    if model.config.position == "learned":
        x = x + model.wpe.weight.data[start_pos:start_pos + idx.shape[1]]     # (T, C) broadcast over B
    for i, block in enumerate(model.blocks):
        x = block_forward(block, x, None if cache is None else cache.layers[i], start_pos)
    if last_only:
        x = x[:, -1:]                                                         # (B, 1, C)
    return head(model, x)


def forward_vector(model, token: int, cache, check: bool = True):
    """Logits (V,) for the token after `token`, which continues the one-row sequence held by
    `cache` (batch size 1) at position cache.length; the cache grows by one.

    The layers on vectors (module docstring, "One vector"). Eval mode, as forward. check=False
    skips the checks, for a loop that made the cache for this model and checks its ids itself.
    """
    c = model.config
    pos = cache.length
    if check:
        check_eval_mode(model, "decode.forward_vector")
        _check_cacheable(model)
        cache.check_compatible(model, np.zeros((1, 1), dtype=np.int64))
        check_token_ids(np.array([token]), c.vocab_size)
        if pos >= c.block_size:
            raise ValueError(f"the KV cache already holds block_size={c.block_size} positions; "
                             "reset() it and refill it with a cropped context")
    x = run(model.wte, np.intp(token))                                        # (C,); layers never write x
    if c.position == "learned":
        x = x + model.wpe.weight.data[pos]
    for block, layer in zip(model.blocks, cache.layers):
        x = block_forward(block, x, layer, pos)
    return head(model, x)                                                     # (V,)
