"""Decoding on a device: the KV cache gives the logits of a full recompute at every step, cached
generation gives the tokens of uncached generation and of the CPU, and sampling stays on the
device. Each test runs on [cpu] and [cuda] (real CuPy on a GPU, else the CPU stand-in)."""
import numpy as np
import pytest

from autograd import backend, no_grad
from tinyllm import GPT, GPTConfig, decode
from tinyllm.generate import filter_logits, generate, sample_next
from tinyllm.kvcache import KVCache
from tinyllm.lora import LoRAConfig, apply_lora, lora_layers

GPT2_TINY = GPTConfig(vocab_size=13, block_size=12, n_layer=2, n_head=2, n_embd=8)
LLAMA_TINY = GPTConfig(vocab_size=13, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, mlp_hidden=12,
                       norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False)
CONFIGS = pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])


def ids(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 13, shape)


@CONFIGS
def test_cached_steps_give_the_recomputed_logits(config, device):
    model = GPT(config, seed=5, dtype="float64", device=device).eval()
    seq = ids((2, 9))
    cache = KVCache.for_model(model, batch_size=2)
    with no_grad():
        logits = decode.forward(model, seq[:, :4], cache, last_only=True)          # prefill
        for n in range(4, 9):
            assert backend.device_of(logits) == device
            full = model(seq[:, :n])[0].data[:, -1:]
            np.testing.assert_allclose(backend.to_numpy(logits), backend.to_numpy(full), rtol=0, atol=1e-10)
            logits = decode.forward(model, seq[:, n:n + 1], cache, last_only=True)


@CONFIGS
def test_generation_is_the_same_with_and_without_the_cache_and_on_the_cpu(config, device):
    model = GPT(config, seed=2, dtype="float64", device=device)
    apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=("attn",)))       # adapters decode too
    for _, layer in lora_layers(model):
        layer.lora_B.data = backend.to_device(np.full(layer.lora_B.shape, 0.3), device)
    cpu = GPT(config, seed=2, dtype="float64")
    apply_lora(cpu, LoRAConfig(rank=2, alpha=4, targets=("attn",)))
    for _, layer in lora_layers(cpu):
        layer.lora_B.data = np.full(layer.lora_B.shape, 0.3)
    prompt = ids((3, 3), seed=1)
    for settings in (dict(temperature=0), dict(temperature=0.9, top_k=6, top_p=0.9, seed=4)):
        cached = generate(model, prompt, max_new_tokens=14, **settings)             # past block_size: refills
        assert isinstance(cached, np.ndarray) and cached.shape == (3, 17)
        assert np.array_equal(cached, generate(model, prompt, max_new_tokens=14, use_cache=False, **settings))
        assert np.array_equal(cached, generate(cpu, prompt, max_new_tokens=14, **settings))


def test_sampling_runs_where_the_logits_are(device):
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    on_device = backend.to_device(logits, device)
    kept = filter_logits(on_device, top_k=2, top_p=0.9)
    assert backend.device_of(kept) == device
    np.testing.assert_array_equal(backend.to_numpy(kept), filter_logits(logits, top_k=2, top_p=0.9))
    assert np.isfinite(backend.to_numpy(kept)).sum(axis=1).tolist() == [2, 3]   # ties with the 2nd kept
    draws = [sample_next(on_device, 1.0, None, None, np.random.default_rng(s)) for s in range(40)]
    assert all(backend.device_of(d) == device for d in draws)
    assert {int(backend.to_numpy(d)[1]) for d in draws} >= {0, 1}
    assert np.array_equal(backend.to_numpy(sample_next(on_device, 0, None, None, None)), [3, 0])
