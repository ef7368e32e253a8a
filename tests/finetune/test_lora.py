"""LoRA: exact at initialisation, gradients only into adapters, merge == unmerged, check_backward."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd import Tensor
from autograd.gradcheck import check_backward
from tinyllm import GPT, GPTConfig
from tinyllm.lora import (LoRAConfig, LoRAError, LoRALinear, apply_lora, load_lora, lora_layers, lora_linear,
                          lora_state_dict, merge_lora, read_lora, remove_lora, save_lora, target_names,
                          trainable_parameters, unmerge_lora)

GPT2_TINY = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16)
LLAMA_TINY = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, norm="rmsnorm",
                       mlp="swiglu", mlp_hidden=24, position="rope", bias=False, tie_embeddings=False)


def ids(B=2, T=7, V=37, seed=0):
    return np.random.default_rng(seed).integers(0, V, (B, T))


def randomise_adapters(model, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):
        layer.lora_B.data = (rng.standard_normal(layer.lora_B.shape) * scale).astype(layer.lora_B.dtype)


@pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adapted_model_at_init_is_exactly_the_base(config, dtype):
    model = GPT(config, seed=3, dtype=dtype)
    x = ids()
    base_logits, _ = model(x)
    apply_lora(model, LoRAConfig(rank=4, alpha=8, targets=("attn", "mlp")))
    logits, _ = model(x)
    assert np.array_equal(logits.data, base_logits.data)


@pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
def test_gradients_reach_only_adapters(config):
    model = GPT(config, seed=0, dtype="float64")
    apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=("attn", "mlp")))
    randomise_adapters(model)  # B != 0, so A gets a gradient too
    x = ids()
    _, loss = model(x, np.roll(x, -1, axis=1))
    loss.backward()
    for name, p in model.named_parameters():
        is_adapter = name.endswith((".lora_A", ".lora_B"))
        if is_adapter:
            assert p.grad is not None and np.abs(p.grad).sum() > 0, name
        else:
            assert p.grad is None, name
    assert [n for n, _ in trainable_parameters(model)] == sorted(lora_state_dict(model), key=[
        n for n, _ in model.named_parameters()].index)


@pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
def test_merged_weights_give_the_unmerged_logits(config):
    model = GPT(config, seed=5, dtype="float64")
    original = {n: p.data.copy() for n, p in model.named_parameters()}
    apply_lora(model, LoRAConfig(rank=3, alpha=6, targets=("attn", "mlp")))
    randomise_adapters(model)
    x = ids(T=9)
    unmerged, _ = model(x)
    merge_lora(model)
    assert all(layer.merged for _, layer in lora_layers(model))
    merged, _ = model(x)
    np.testing.assert_allclose(merged.data, unmerged.data, rtol=0, atol=1e-12)
    assert np.abs(unmerged.data - GPT(config, seed=5, dtype="float64")(x)[0].data).max() > 1e-3  # adapters matter
    unmerge_lora(model)
    back, _ = model(x)
    np.testing.assert_allclose(back.data, unmerged.data, rtol=0, atol=1e-12)
    for name, p in model.named_parameters():
        if name in original:
            np.testing.assert_allclose(p.data, original[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
def test_sampling_with_adapters_uses_them(config):
    """generate (one row: decode.forward_vector through the adapted layers) samples the tokens a full
    recompute of the adapted model samples, and they differ from the base model's."""
    model = GPT(config, seed=5, dtype="float64")
    base = model.generate([1, 2], max_new_tokens=20, temperature=0)
    apply_lora(model, LoRAConfig(rank=4, alpha=8, targets=("attn", "mlp")))
    randomise_adapters(model, scale=1.0)
    cached = model.generate([1, 2], max_new_tokens=20, temperature=0)
    assert np.array_equal(cached, model.generate([1, 2], max_new_tokens=20, temperature=0, use_cache=False))
    assert not np.array_equal(cached, base)


def test_an_adapter_on_the_untied_head_is_used():
    """target "head" adapts lm_head: the forward runs the adapted layer (it used to read lm_head.weight
    and skip the adapter, whose parameters then got no gradient), and merging keeps the logits."""
    model = GPT(LLAMA_TINY, seed=2, dtype="float64")
    x = ids()
    base, _ = model(x)
    assert target_names(model, ("head",)) == ["lm_head"]
    apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=("head",)))
    randomise_adapters(model, scale=1.0)
    adapted, loss = model(x, np.roll(x, -1, axis=1))
    assert np.abs(adapted.data - base.data).max() > 1e-3
    loss.backward()
    assert np.abs(model.lm_head.lora_B.grad).sum() > 0 and np.abs(model.lm_head.lora_A.grad).sum() > 0
    merge_lora(model)
    np.testing.assert_allclose(model(x)[0].data, adapted.data, rtol=0, atol=1e-12)


def test_remove_after_merge_leaves_a_plain_model_with_the_same_names():
    model = GPT(GPT2_TINY, seed=1, dtype="float64")
    names = [n for n, _ in model.named_parameters()]
    apply_lora(model, LoRAConfig(rank=2, targets=("attn",)))
    randomise_adapters(model)
    x = ids()
    adapted, _ = model(x)
    merge_lora(model)
    remove_lora(model)
    assert lora_layers(model) == []
    assert [n for n, _ in model.named_parameters()] == names  # order kept too
    plain, _ = model(x)
    np.testing.assert_allclose(plain.data, adapted.data, rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), d_in=st.integers(1, 6), d_out=st.integers(1, 6), rank=st.integers(1, 3),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_lora_linear_check_backward(n, d_in, d_out, rank, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, 2, d_in)), rng.standard_normal((d_out, d_in))
    a, b = rng.standard_normal((rank, d_in)), rng.standard_normal((d_out, rank))
    scale = 2.0 / rank
    if bias:
        check_backward(lambda x, w, bb, a, b: lora_linear(x, w, bb, a, b, scale), [x, w, rng.standard_normal(d_out), a, b])
    else:
        check_backward(lambda x, w, a, b: lora_linear(x, w, None, a, b, scale), [x, w, a, b])


def test_lora_linear_is_the_formula():
    rng = np.random.default_rng(0)
    x, w, bias = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    a, b = rng.standard_normal((2, 5)), rng.standard_normal((4, 2))
    y = lora_linear(Tensor(x), Tensor(w), Tensor(bias), Tensor(a), Tensor(b), 1.5)
    np.testing.assert_allclose(y.data, x @ w.T + bias + (x @ a.T) @ b.T * 1.5, rtol=1e-13, atol=1e-13)


def test_targets_pick_the_named_layers():
    model = GPT(LLAMA_TINY, seed=0)
    assert target_names(model, ("attn",)) == ["blocks.0.attn.c_attn", "blocks.0.attn.c_proj",
                                              "blocks.1.attn.c_attn", "blocks.1.attn.c_proj"]
    assert target_names(model, ("mlp",)) == ["blocks.0.mlp.c_fc", "blocks.0.mlp.c_proj",
                                             "blocks.1.mlp.c_fc", "blocks.1.mlp.c_proj"]
    assert target_names(model, ("c_attn", "head")) == ["blocks.0.attn.c_attn", "blocks.1.attn.c_attn", "lm_head"]
    with pytest.raises(LoRAError, match="'head' matches no Linear"):
        target_names(GPT(GPT2_TINY), ("head",))  # tied head: there is no lm_head Linear
    with pytest.raises(LoRAError, match="rank=0"):
        LoRAConfig(rank=0)


def test_scale_and_shapes():
    model = GPT(GPT2_TINY, seed=0)
    apply_lora(model, LoRAConfig(rank=4, alpha=2, targets=("mlp",)))
    layer = dict(lora_layers(model))["blocks.0.mlp.c_fc"]
    assert isinstance(layer, LoRALinear) and layer.scale == 0.5
    assert layer.lora_A.shape == (4, 16) and layer.lora_B.shape == (64, 4)
    assert not np.any(layer.lora_B.data) and np.any(layer.lora_A.data)
    assert layer.lora_A.dtype == np.float32


def test_adapters_are_seeded():
    first, second = GPT(GPT2_TINY, seed=0), GPT(GPT2_TINY, seed=0)
    apply_lora(first, LoRAConfig(rank=2, seed=7))
    apply_lora(second, LoRAConfig(rank=2, seed=7))
    for (_, a), (_, b) in zip(lora_layers(first), lora_layers(second)):
        assert np.array_equal(a.lora_A.data, b.lora_A.data)


def test_save_and_load_round_trip_is_small_and_exact(tmp_path):
    model = GPT(GPT2_TINY, seed=2, dtype="float64")
    apply_lora(model, LoRAConfig(rank=2, alpha=4, targets=("attn", "mlp"), seed=3))
    randomise_adapters(model)
    x = ids()
    expected, _ = model(x)
    save_lora(model, tmp_path / "adapter", extra={"note": "test"})
    adapter_bytes = (tmp_path / "adapter" / "adapter.safetensors").stat().st_size
    model_bytes = sum(p.data.nbytes for p in model.parameters())
    assert adapter_bytes < 0.5 * model_bytes
    assert read_lora(tmp_path / "adapter").extra == {"note": "test"}

    fresh = GPT(GPT2_TINY, seed=2, dtype="float64")
    config = load_lora(fresh, tmp_path / "adapter")
    assert config == LoRAConfig(rank=2, alpha=4, targets=("attn", "mlp"), seed=3)
    got, _ = fresh(x)
    assert np.array_equal(got.data, expected.data)


def test_bad_adapter_files_name_the_file(tmp_path):
    with pytest.raises(LoRAError, match="adapter_config.json: missing"):
        read_lora(tmp_path)
    model = GPT(GPT2_TINY, seed=0)
    apply_lora(model, LoRAConfig(rank=2))
    save_lora(model, tmp_path / "a")
    (tmp_path / "a" / "adapter.safetensors").write_bytes(b"garbage")
    with pytest.raises(LoRAError, match="adapter.safetensors: cannot be read"):
        read_lora(tmp_path / "a")
    other = GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=1, n_head=2, n_embd=16), seed=0)
    save_lora(model, tmp_path / "b")
    with pytest.raises(LoRAError, match="base model differs"):
        load_lora(other, tmp_path / "b")
    merge_lora(model)
    with pytest.raises(LoRAError, match="unmerge_lora"):
        save_lora(model, tmp_path / "c")
