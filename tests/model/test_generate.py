"""Sampling and the KV cache: cached logits equal a full recompute at every step (past block_size
too), sampling filters, reproducibility, eos, streaming, errors."""
import numpy as np
import pytest

from autograd import no_grad, ops
from autograd.tensor import grad_enabled
from tinyllm import GPT, GPTConfig, decode, nn
from tinyllm.generate import (Decoder, KVCache, context_length, filter_logits, generate, next_token_logits,
                              sample_next)

LEARNED = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=8)              # layernorm, gelu
ROPE_GQA = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, mlp_hidden=12,
                     norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False)
CONFIGS = pytest.mark.parametrize("config", [LEARNED, ROPE_GQA], ids=["learned", "rope-gqa"])
_MODELS = {}


def model_for(config, dtype="float64"):
    if (config, dtype) not in _MODELS:
        _MODELS[config, dtype] = GPT(config, seed=0, dtype=dtype)
    return _MODELS[config, dtype]


def test_context_length_rule():
    W = 8
    assert [context_length(n, W, 4) for n in range(1, 21)] == \
        [1, 2, 3, 4, 5, 6, 7, 8, 4, 5, 6, 7, 8, 4, 5, 6, 7, 8, 4, 5]
    assert all(context_length(n, W, W) == W for n in range(W, 30))      # nanoGPT's "last W tokens"
    assert [context_length(n, W, 7) for n in range(8, 14)] == [8, 7, 8, 7, 8, 7]


@CONFIGS
@pytest.mark.parametrize("B", [1, 2], ids=["one-row", "batched"])
@pytest.mark.parametrize("keep", [None, 1, 5, 8])
def test_cached_logits_equal_full_recompute_at_every_step(config, B, keep):
    """For n = 1 .. 3 block_size: the cached decoder's logits for token n equal a full forward of the
    same cropped window; the cache really is used (single-position steps), and refilled past block_size.
    One row steps through decode.forward_vector (vectors), several through decode.forward."""
    model = model_for(config)
    N = 3 * config.block_size + 1
    seq = np.random.default_rng(1).integers(0, config.vocab_size, (B, N))
    decoder = Decoder(model, B, window_keep=keep)
    assert decoder.one_row == (B == 1)
    with no_grad():
        for n in range(1, N + 1):
            L = context_length(n, config.block_size, decoder.keep)
            full = model(seq[:, n - L:n])[0].data[:, -1]
            np.testing.assert_allclose(decoder.logits(seq, n), full, rtol=0, atol=1e-10)
    W = config.block_size
    assert decoder.steps >= W - 1                          # positions 2 .. W each added one at a time
    if decoder.keep < W:
        assert decoder.refills == 1 + (N - W - 1) // (W - decoder.keep + 1) + 1
    else:
        assert decoder.refills == 1 + (N - W)              # keep == W: every step past W refills


def test_kv_cache_errors():
    model = model_for(LEARNED)
    cache = KVCache.for_model(model, 1)
    decode.forward(model, np.array([[1, 2, 3]]), cache)
    with pytest.raises(ValueError, match=r"6 tokens starting at position 3 exceeds block_size=8"):
        decode.forward(model, np.zeros((1, 6), dtype=np.int64), cache)
    with pytest.raises(ValueError, match="batch size 1, the input has 2 rows"):
        decode.forward(model, np.zeros((2, 1), dtype=np.int64), cache)
    with pytest.raises(ValueError, match="holds 3 positions but the input starts at position 0"):
        cache.layers[0].append(np.zeros((1, 2, 1, 4)), np.zeros((1, 2, 1, 4)), 0)
    with pytest.raises(ValueError, match="dtype float32, the model is float64"):
        decode.forward(model, np.zeros((1, 1), dtype=np.int64), KVCache.for_model(model_for(LEARNED, "float32"), 1))
    assert cache.length == 3
    cache.reset()
    assert cache.length == 0


@CONFIGS
def test_cache_does_not_change_samples(config):
    model = model_for(config)
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    kw = dict(max_new_tokens=3 * config.block_size, temperature=1.0, top_k=None, seed=5)
    cached = model.generate(prompt, use_cache=True, **kw)
    assert np.array_equal(cached, model.generate(prompt, use_cache=False, **kw))
    assert cached.shape == (2, 3 + 3 * config.block_size)
    assert np.array_equal(cached[:, :3], prompt)


def test_long_prompt_is_cropped():
    model = model_for(ROPE_GQA)
    prompt = np.arange(20) % 17
    out = model.generate(prompt, max_new_tokens=4, temperature=0)
    assert out.shape == (24,) and np.array_equal(out[:20], prompt)
    assert np.array_equal(out, model.generate(prompt, max_new_tokens=4, temperature=0, use_cache=False))


@CONFIGS
def test_greedy_is_argmax_of_the_model(config):
    model = model_for(config)
    out = model.generate([3], max_new_tokens=5, temperature=0)
    with no_grad():
        for n in range(1, 6):
            assert out[n] == int(np.argmax(model(out[None, :n])[0].data[0, -1]))


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = model_for(LEARNED)
    greedy = model.generate([1, 2], max_new_tokens=12, temperature=0)
    assert np.array_equal(model.generate([1, 2], max_new_tokens=12, temperature=1.5, top_k=1, seed=3), greedy)
    assert np.array_equal(model.generate([1, 2], max_new_tokens=12, temperature=1.5, top_k=None, top_p=1e-9,
                                         seed=4), greedy)


def test_sampling_reproducible_by_seed():
    model = model_for(ROPE_GQA, "float32")
    kw = dict(max_new_tokens=20, temperature=1.0, top_k=None)
    a, b, c = (model.generate([0], seed=s, **kw) for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_filter_logits():
    z = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda f: np.isfinite(f)[0].tolist()                          # noqa: E731
    assert kept(filter_logits(z, top_k=2)) == [True, True, False, False, False]
    assert kept(filter_logits(z, top_p=0.45)) == [True, False, False, False, False]
    assert kept(filter_logits(z, top_p=0.6)) == [True, True, False, False, False]
    assert kept(filter_logits(z, top_p=0.86)) == [True, True, True, True, False]
    assert kept(filter_logits(z, top_k=10, top_p=1.0)) == [True] * 5
    ties = np.array([[1.0, 3.0, 3.0, 0.0]])
    assert kept(filter_logits(ties, top_k=1)) == [False, True, True, False]  # ties with the k-th are kept


def test_sample_frequencies_follow_the_distribution():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.tile(np.log(p), (40000, 1))
    draws = sample_next(logits, 1.0, None, None, np.random.default_rng(0))
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / len(draws)))
    # temperature 0.5 squares the probabilities (renormalised); top_k=2 renormalises over two
    sharp = sample_next(logits, 0.5, None, None, np.random.default_rng(1))
    q = p ** 2 / np.sum(p ** 2)
    assert np.all(np.abs(np.bincount(sharp, minlength=4) / len(sharp) - q) < 4 * np.sqrt(q * (1 - q) / len(sharp)))
    top2 = sample_next(logits, 1.0, 2, None, np.random.default_rng(2))
    assert set(np.unique(top2)) == {0, 1} and abs(np.mean(top2 == 0) - 0.625) < 0.01


def test_eos_and_stream():
    model = model_for(LEARNED)
    greedy = model.generate([1], max_new_tokens=10, temperature=0)
    eos = int(greedy[3])
    first = int(np.flatnonzero(greedy[1:] == eos)[0]) + 1
    streamed = []
    out = model.generate([1], max_new_tokens=10, temperature=0, eos_id=eos, stream=streamed.append)
    assert np.array_equal(out, greedy[:first + 1]) and out[-1] == eos
    assert streamed == out[1:].tolist()
    rows = []
    out2 = model.generate(np.array([[1], [1]]), max_new_tokens=4, temperature=0, stream=rows.append)
    assert rows == [list(col) for col in out2[:, 1:].T.tolist()]


def test_generate_is_inference_only():
    model = GPT(GPTConfig(**{**LEARNED.to_dict(), "dropout": 0.5}), dtype="float64")
    model.train()
    seen = []
    model.generate([1], max_new_tokens=3, stream=lambda t: seen.append(grad_enabled()))
    assert seen == [False] * 3 and model.training and grad_enabled()
    assert all(p.grad is None for p in model.parameters())
    # eval mode inside: dropout off, so cached and uncached agree even with dropout > 0
    kw = dict(max_new_tokens=12, temperature=1.0, seed=1)
    assert np.array_equal(model.generate([1], **kw), model.generate([1], use_cache=False, **kw))


def test_next_token_logits_matches_forward():
    model = model_for(ROPE_GQA)
    idx = np.array([[1, 5, 7, 2]])
    with no_grad():
        np.testing.assert_allclose(next_token_logits(model, idx), model(idx)[0].data[:, -1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "temperature=-1"),
    (dict(top_k=0), "top_k=0"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_p=1.5), "top_p=1.5"),
    (dict(max_new_tokens=-2), "max_new_tokens=-2"),
    (dict(window_keep=0), r"window_keep=0 must be an integer in \[1, block_size=8\]"),
    (dict(eos_id=17), r"eos_id=17 is outside the vocabulary"),
])
def test_generate_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model_for(LEARNED), [1, 2], **kwargs)


def test_generate_input_errors():
    model = model_for(LEARNED)
    with pytest.raises(ValueError, match="at least one integer token id"):
        model.generate([])
    with pytest.raises(ValueError, match="at least one integer token id"):
        model.generate(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="token id 40 is outside the vocabulary"):
        model.generate([40])


def test_decoder_checks_the_ids_of_a_cached_step():
    """A decoding step skips the model's input checks (the cache is the decoder's own) but not the new ids."""
    model = model_for(LEARNED)
    decoder = Decoder(model, 1)
    seq = np.array([[1, 2, -1, 40]])
    decoder.logits(seq, 2)                                               # prompt [1, 2]: a refill
    with pytest.raises(ValueError, match=r"token id -1 is outside the vocabulary \[0, 17\)"):
        decoder.logits(seq, 3)                                           # a step with a negative id
    z = np.array([[0.0, 1.0, 2.0]])
    filter_logits(z, top_k=1, top_p=0.5)
    assert np.array_equal(z, [[0.0, 1.0, 2.0]])                          # filter_logits leaves its input alone


# ---- a swapped activation (issue 18) ---------------------------------------------------------------

class SquaredRelu(nn.Module):
    """relu(x)^2 (Primer's activation), composed from primitives: a module decode.py does not know."""

    def forward(self, x):
        r = ops.relu(x)
        return r * r


def bilinear_glu(x):
    """A plain function on Tensors as the activation: gate * up on x = [gate | up] (GLU without a nonlinearity)."""
    gate, up = ops.split(x, 2, axis=-1)
    return gate * up


@pytest.mark.parametrize("config, activation", [(LEARNED, SquaredRelu), (ROPE_GQA, lambda: bilinear_glu)],
                         ids=["gelu->module", "swiglu->function"])
def test_a_swapped_activation_changes_training_and_generate_alike(config, activation):
    """Replacing mlp.activation changes the loss and the sampled tokens, and cached decoding (which
    runs the unknown activation through its own forward) still equals a full recompute at every step,
    for one row and for a batch, across window refills."""
    base, model = GPT(config, seed=2, dtype="float64"), GPT(config, seed=2, dtype="float64")
    for base_param, param in zip(base.parameters(), model.parameters()):   # weights large enough that the
        base_param.data *= 5                                              # MLP sways the distribution
        param.data *= 5
    for block in model.blocks:
        block.mlp.activation = activation()
    idx = np.random.default_rng(3).integers(0, config.vocab_size, (2, 6))
    assert abs(model(idx, idx)[1].item() - base(idx, idx)[1].item()) > 1e-6              # training sees it
    kw = dict(max_new_tokens=2 * config.block_size, temperature=1.0, top_k=None, seed=4)
    out = model.generate([1, 2], **kw)
    assert not np.array_equal(out, base.generate([1, 2], **kw))                          # generate sees it
    assert np.array_equal(out, model.generate([1, 2], use_cache=False, **kw))
    N = 2 * config.block_size + 3
    for B in (1, 2):
        seq = np.random.default_rng(5).integers(0, config.vocab_size, (B, N))
        decoder = Decoder(model, B, window_keep=3)
        assert decoder.cache is not None
        with no_grad():
            for n in range(1, N + 1):
                L = context_length(n, config.block_size, decoder.keep)
                np.testing.assert_allclose(decoder.logits(seq, n), model(seq[:, n - L:n])[0].data[:, -1],
                                           rtol=0, atol=1e-10)
        assert decoder.steps > N // 2
