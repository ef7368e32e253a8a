"""tinyllm.decode: the layers' Functions on raw arrays equal the modules' forward, layer by layer and for
the whole model (a prefix, then one position at a time; on vectors for one row); layers decode does not
know fall back to their own forward; a block it cannot feed from a cache decodes without one; errors."""
import numpy as np
import pytest

from autograd import Tensor, no_grad, ops
from tinyllm import GPT, GPTConfig, decode, nn
from tinyllm.blocks import MLP, CausalSelfAttention
from tinyllm.generate import Decoder, context_length
from tinyllm.kvcache import KVCache
from tinyllm.lora import LoRAConfig, apply_lora, lora_layers, merge_lora

GPT2_TINY = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)
LLAMA_TINY = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, mlp_hidden=12,
                       norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False)
CONFIGS = pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
_MODELS = {}


def model_for(config):
    if config not in _MODELS:
        _MODELS[config] = GPT(config, seed=5, dtype="float64")
    return _MODELS[config]


def ids(shape, vocab=13, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


def layers(dtype, rng):
    """One of each layer decode knows, with non-trivial weights and biases."""
    with nn.build(rng=rng, dtype=dtype):
        found = [nn.Linear(6, 5), nn.Linear(6, 5, bias=False), nn.LayerNorm(6), nn.LayerNorm(6, bias=False),
                 nn.RMSNorm(6), nn.GELU("tanh"), nn.GELU("none"), nn.SwiGLU()]
    for layer in found:
        for p in layer.parameters():
            p.data = rng.standard_normal(p.shape).astype(dtype)
    return found


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_run_is_each_layers_forward_on_raw_arrays(dtype):
    """decode.run on a known layer runs the Function its forward runs: bitwise the same numbers, an xp
    array in the input's dtype; on one vector (C,) the same formula to rounding (a matrix-vector product
    and scalar statistics sum in another order)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6)).astype(dtype)
    vector = (rng.standard_normal(6) * 3 + 1).astype(dtype)
    tol = 1e-6 if dtype == "float32" else 1e-14
    for layer in layers(dtype, rng):
        assert nn.array_forward_of(layer) is not None
        out = decode.run(layer, x)
        assert type(out) is np.ndarray and out.dtype == np.dtype(dtype)
        assert np.array_equal(out, layer(Tensor(x, requires_grad=True)).data), layer
        out = decode.run(layer, vector)
        expected = layer(Tensor(vector[None])).data[0]
        assert out.shape == expected.shape and out.dtype == np.dtype(dtype), layer
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    with nn.build(rng=rng, dtype=dtype):
        emb = nn.Embedding(7, 4)
    idx = np.array([[0, 6, 6], [2, 1, 0]])
    assert np.array_equal(decode.run(emb, idx), emb(idx).data)


@pytest.mark.parametrize("merged", [False, True])
def test_run_on_lora_and_mlp_is_their_forward(merged):
    model = GPT(LLAMA_TINY, seed=1, dtype="float64")
    apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=("attn", "mlp")))
    for _, layer in lora_layers(model):
        layer.lora_B.data = np.random.default_rng(2).standard_normal(layer.lora_B.shape)
    if merged:
        merge_lora(model)
    x = np.random.default_rng(4).standard_normal((2, 3, 16))
    for module in (model.blocks[0].attn.c_attn, model.blocks[0].mlp):
        np.testing.assert_allclose(decode.run(module, x), module(Tensor(x)).data, rtol=0, atol=1e-13)


@CONFIGS
def test_forward_equals_the_models_forward(config):
    """decode.forward gives model(idx)'s logits: whole sequences, the last position only, and a KV cache
    filled by a prompt then one position at a time (autograd on all along: decode records nothing)."""
    model = model_for(config)
    idx = ids((2, 7))
    full = model(idx)[0].data                                          # (B, T, V)
    logits = decode.forward(model, idx)
    assert type(logits) is np.ndarray
    np.testing.assert_allclose(logits, full, rtol=0, atol=1e-12)
    np.testing.assert_allclose(decode.forward(model, idx, last_only=True), full[:, -1:], rtol=0, atol=1e-12)
    cache = KVCache.for_model(model, 2)
    parts = [decode.forward(model, idx[:, :3], cache)]
    parts += [decode.forward(model, idx[:, t:t + 1], cache) for t in range(3, 7)]
    assert cache.length == 7
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=0, atol=1e-10)
    assert all(p.grad is None for p in model.parameters())


@CONFIGS
def test_forward_vector_equals_forward(config):
    """One-row decoding (vectors, scalar norm statistics, matrix-vector products) continues a cache
    filled by a prompt with forward's logits at every position, up to block_size."""
    model = model_for(config)
    T = config.block_size
    idx = ids((1, T))
    full = model(idx)[0].data[0]                                       # (T, V)
    cache = KVCache.for_model(model, 1)
    decode.forward(model, idx[:, :3], cache)                           # prompt of 3 positions
    for t in range(3, T):
        logits = decode.forward_vector(model, int(idx[0, t]), cache)   # position t
        assert logits.shape == (config.vocab_size,) and cache.length == t + 1
        np.testing.assert_allclose(logits, full[t], rtol=0, atol=1e-10)
    cache.reset()                                                      # from an empty cache too
    np.testing.assert_allclose(decode.forward_vector(model, int(idx[0, 0]), cache), full[0], rtol=0, atol=1e-10)


def test_forward_vector_checks_its_input():
    model = GPT(GPTConfig(**{**GPT2_TINY.to_dict(), "dropout": 0.1}), dtype="float64")
    cache = KVCache.for_model(model, 1)
    with pytest.raises(RuntimeError, match=r"training mode with dropout=0.1; call model.eval\(\) first"):
        decode.forward_vector(model, 1, cache)
    model.eval()
    with pytest.raises(ValueError, match="token id 13 is outside the vocabulary"):
        decode.forward_vector(model, 13, cache)
    with pytest.raises(ValueError, match="batch size 2, the input has 1 rows"):
        decode.forward_vector(model, 1, KVCache.for_model(model, 2))
    for t in range(GPT2_TINY.block_size):
        decode.forward_vector(model, t % 13, cache)
    with pytest.raises(ValueError, match=r"already holds block_size=8 positions; reset\(\) it"):
        decode.forward_vector(model, 1, cache)
    assert cache.length == GPT2_TINY.block_size


def test_forward_is_inference_only():
    model = GPT(GPTConfig(**{**GPT2_TINY.to_dict(), "dropout": 0.1}), dtype="float64")
    with pytest.raises(RuntimeError, match=r"training mode with dropout=0.1; call model.eval\(\) first"):
        decode.forward(model, ids((1, 3)))
    model.eval()
    with no_grad():
        np.testing.assert_allclose(decode.forward(model, ids((1, 3))), model(ids((1, 3)))[0].data, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="token id 13 is outside the vocabulary"):
        decode.forward(model, np.array([[13]]))


# ---- layers decode does not know -------------------------------------------------------------

class ScaledRMSNorm(nn.RMSNorm):
    """A subclass that changes forward: decode must not take it for an nn.RMSNorm."""

    def forward(self, x):
        return super().forward(x) * 1.5


class Tanh(nn.Module):
    def forward(self, x):
        return ops.tanh(x)


def assert_decoding_equals_recompute(model, config, B, N, keep=3):
    seq = ids((B, N), vocab=config.vocab_size, seed=B)
    decoder = Decoder(model, B, window_keep=keep)
    with no_grad():
        for n in range(1, N + 1):
            L = context_length(n, config.block_size, decoder.keep)
            np.testing.assert_allclose(decoder.logits(seq, n), model(seq[:, n - L:n])[0].data[:, -1],
                                       rtol=0, atol=1e-10)
    return decoder


@CONFIGS
def test_unknown_layers_run_their_own_forward(config):
    """A subclass of a known norm, a custom activation module and a custom final norm run through their
    own forward (on constant Tensors): cached decoding still equals a full recompute at every step, on
    vectors and in a batch, and the custom forwards really ran (the logits moved)."""
    model = GPT(config, seed=6, dtype="float64")
    before = decode.forward(model, ids((1, 5)))
    for block in model.blocks:
        with nn.build(dtype="float64"):
            block.norm2 = ScaledRMSNorm(config.n_embd)
    if config.mlp == "gelu":
        model.blocks[0].mlp.activation = Tanh()
    with nn.build(dtype="float64"):
        model.norm_f = ScaledRMSNorm(config.n_embd)
    assert decode.cacheable(model)
    assert np.abs(decode.forward(model, ids((1, 5))) - before).max() > 1e-3
    for B in (1, 2):
        decoder = assert_decoding_equals_recompute(model, config, B, 2 * config.block_size + 2)
        assert decoder.steps > config.block_size


class MyAttention(CausalSelfAttention):
    """An attention subclass: decode cannot know what it does with a cache."""


def test_a_block_decode_cannot_feed_from_a_cache_decodes_without_one():
    config = GPT2_TINY
    model = GPT(config, seed=7, dtype="float64")
    plain = model_for(config)
    with nn.build(1, "float64", masks=model.dropout_masks):
        model.set_submodule("blocks.1.attn", MyAttention(config))
    assert not decode.cacheable(model) and decode.cacheable(plain)
    idx = ids((2, 6))
    np.testing.assert_allclose(decode.forward(model, idx), model(idx)[0].data, rtol=0, atol=1e-12)
    cache = KVCache.for_model(model, 2)
    with pytest.raises(ValueError, match="blocks.1 is a Block with a MyAttention, .* cannot read a KV cache"):
        decode.forward(model, idx, cache)
    assert cache.length == 0                                           # refused before any layer appended
    assert Decoder(model, 1).cache is None                             # generate recomputes each window
    kw = dict(max_new_tokens=12, temperature=1.0, seed=3)
    assert np.array_equal(model.generate([1, 2], **kw), model.generate([1, 2], use_cache=False, **kw))


@CONFIGS
def test_lora_adapted_decoding_equals_recompute_at_every_step(config):
    """LoRA layers run lora.py's formula with LinearFunction on arrays: cached decoding of an adapted
    model (attention, MLP and, untied, the head) equals its full recompute, on vectors and in a batch."""
    model = GPT(config, seed=8, dtype="float64")
    targets = ("attn", "mlp") if config.tie_embeddings else ("attn", "mlp", "head")
    apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=targets))
    rng = np.random.default_rng(9)
    for _, layer in lora_layers(model):
        layer.lora_B.data = rng.standard_normal(layer.lora_B.shape)
    for B in (1, 2):
        assert_decoding_equals_recompute(model, config, B, 2 * config.block_size + 2)


def test_an_array_forward_is_used_only_beside_the_forward_it_mirrors():
    """A layer's array_forward counts where its class also defines forward: a subclass that changes
    forward (ScaledRMSNorm) decodes through that forward, not its parent's array formula."""
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8)
    assert nn.array_forward_of(MLP(config))
    assert nn.array_forward_of(ScaledRMSNorm(8)) is None
    assert nn.array_forward_of(Tanh()) is None
    x = np.random.default_rng(1).standard_normal((2, 8))
    with nn.build(dtype="float64"):
        assert np.array_equal(decode.run(ScaledRMSNorm(8), x), nn.RMSNorm(8).array_forward(x) * 1.5)
