"""GPTConfig validation and presets; GPT shapes, init, gradients, causality, decomposition, errors."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd import Tensor, backend, no_grad
from autograd.gradcheck import check_backward
from tinyllm import GPT, GPTConfig

GPT2_TINY = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)
LLAMA_TINY = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, mlp_hidden=12,
                       norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False)
CONFIGS = pytest.mark.parametrize("config", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])


def ids(shape, vocab=13, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


# ---- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(n_embd=10, n_head=4), r"n_embd=10 is not divisible by n_head=4"),
    (dict(n_head=4, n_kv_head=3, n_embd=16), r"n_head=4 is not divisible by n_kv_head=3"),
    (dict(n_head=2, n_embd=6, position="rope"), r"even head size.*n_embd=6 / n_head=2 = 3"),
    (dict(n_layer=0), r"n_layer=0 must be a positive integer"),
    (dict(vocab_size=-1), r"vocab_size=-1"),
    (dict(block_size=2.5), r"block_size=2.5"),
    (dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
    (dict(dropout=-0.1), r"dropout=-0.1"),
    (dict(norm="batchnorm"), r"norm='batchnorm' is not known; use one of layernorm, rmsnorm"),
    (dict(mlp="relu"), r"mlp='relu'"),
    (dict(position="alibi"), r"position='alibi'"),
    (dict(norm_eps=0.0), r"norm_eps=0.0"),
])
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**GPT2_TINY.to_dict(), **overrides})


def test_config_derived_sizes_and_presets():
    sizes = GPT2_TINY.resolved()
    assert (GPT2_TINY.n_kv_head, GPT2_TINY.mlp_hidden) == (None, None)       # what was asked stays
    assert sizes.n_kv_head == 2 and sizes.head_size == 4 and sizes.mlp_hidden == 32
    assert GPTConfig(n_embd=4096, n_head=32, mlp="swiglu").resolved().mlp_hidden == 11008   # Llama 7B's width
    assert {"baby", "gpt2", "gpt2-medium", "llama-tiny"} <= set(GPTConfig.presets())
    baby = GPTConfig.preset("baby")
    assert (baby.n_layer, baby.n_head, baby.n_embd, baby.block_size, baby.vocab_size) == (4, 4, 128, 64, 65)
    assert GPTConfig.preset("baby", vocab_size=100).vocab_size == 100
    llama = GPTConfig.preset("llama-tiny")
    assert (llama.norm, llama.mlp, llama.position, llama.bias, llama.tie_embeddings) == \
        ("rmsnorm", "swiglu", "rope", False, False)
    assert llama.resolved().n_kv_head == llama.n_kv_head == 2 < llama.n_head
    with pytest.raises(ValueError, match="unknown preset 'nope'; known presets: baby"):
        GPTConfig.preset("nope")
    with pytest.raises(ValueError, match="unknown field.*n_layers"):
        GPTConfig.preset("baby", n_layers=3)


def test_config_json_round_trip_and_frozen():
    for config in (GPT2_TINY, LLAMA_TINY, GPTConfig.preset("gpt2")):
        assert GPTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(Exception):
        GPT2_TINY.n_layer = 3


def test_none_sizes_follow_the_other_fields():
    """n_kv_head=None means one kv head per query head whatever n_head becomes: a config derived with
    dataclasses.replace keeps following it (resolving None at construction would freeze the old n_head
    and silently turn attention grouped), and a checkpoint's model_config with n_kv_head: null loads
    and compares equal to the config that wrote it."""
    import dataclasses
    wider = dataclasses.replace(GPT2_TINY, n_head=4)
    assert wider.n_kv_head is None and wider.resolved().n_kv_head == 4
    assert dataclasses.replace(GPT2_TINY, n_embd=16).resolved().mlp_hidden == 64
    saved = json.loads(json.dumps(GPT2_TINY.to_dict()))
    assert saved["n_kv_head"] is None and saved["mlp_hidden"] is None
    assert GPTConfig.from_dict(saved) == GPT2_TINY
    resolved = GPT2_TINY.resolved()
    assert resolved.resolved() == resolved and GPT(resolved, dtype="float64").num_parameters() == \
        GPT(GPT2_TINY, dtype="float64").num_parameters()


def test_gpt2_preset_parameter_count():
    # 124M GPT-2 with a 50257 vocabulary: 124,439,808 parameters (tied head counted once)
    c = GPTConfig.preset("gpt2")
    per_block = 2 * 2 * c.n_embd + 3 * c.n_embd * c.n_embd + 3 * c.n_embd + c.n_embd * c.n_embd + c.n_embd \
        + 8 * c.n_embd * c.n_embd + 4 * c.n_embd + c.n_embd
    total = c.vocab_size * c.n_embd + c.block_size * c.n_embd + c.n_layer * per_block + 2 * c.n_embd
    assert total == 124_439_808


# ---- model ------------------------------------------------------------------------------------

@CONFIGS
def test_forward_shapes_and_initial_loss(config):
    model = GPT(config, seed=1)
    idx, targets = ids((3, 7), seed=1), ids((3, 7), seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 7, config.vocab_size) and logits.dtype == np.float32
    assert abs(loss.item() - math.log(config.vocab_size)) < 0.1      # near-uniform predictions at init
    logits, loss = model(idx)
    assert loss is None


def test_initial_loss_baby():
    model = GPT(GPTConfig.preset("baby"))
    _, loss = model(ids((4, 64), 65, seed=3), ids((4, 64), 65, seed=4))
    assert abs(loss.item() - math.log(65)) < 0.1


def test_parameter_names_and_counts():
    names = [n for n, _ in GPT(GPT2_TINY).named_parameters()]
    assert names[:3] == ["wte.weight", "wpe.weight", "blocks.0.norm1.weight"]
    assert "blocks.1.attn.c_attn.weight" in names and "blocks.1.mlp.c_proj.bias" in names
    assert names[-2:] == ["norm_f.weight", "norm_f.bias"] and "lm_head.weight" not in names
    llama = dict(GPT(LLAMA_TINY).named_parameters())
    assert "wpe.weight" not in llama and llama["lm_head.weight"].shape == (13, 16)
    assert llama["blocks.0.attn.c_attn.weight"].shape == ((4 + 2 * 2) * 4, 16)   # (nh + 2 nkv) hs rows
    assert llama["blocks.0.mlp.c_fc.weight"].shape == (2 * 12, 16)               # gate | up
    assert not any(n.endswith("bias") for n in llama)
    m = GPT(GPT2_TINY)
    assert m.num_parameters() == sum(p.size for p in m.parameters())


def test_gpt2_initialisation():
    config = GPTConfig(vocab_size=64, block_size=16, n_layer=3, n_head=4, n_embd=128)
    p = dict(GPT(config, seed=0).named_parameters())
    assert abs(p["blocks.0.attn.c_attn.weight"].data.std() - 0.02) < 2e-3
    scaled = 0.02 / math.sqrt(2 * 3)
    assert abs(p["blocks.0.attn.c_proj.weight"].data.std() - scaled) < 1e-3
    assert abs(p["blocks.2.mlp.c_proj.weight"].data.std() - scaled) < 1e-3
    assert np.all(p["blocks.0.attn.c_attn.bias"].data == 0) and np.all(p["norm_f.weight"].data == 1)


def test_tied_embeddings_share_one_parameter():
    model = GPT(GPT2_TINY)
    x = model.embed(ids((1, 4)))
    logits_tied = model.head(x).data
    with no_grad():
        expected = model.norm_f(x).data @ model.wte.weight.data.T
    np.testing.assert_allclose(logits_tied, expected, rtol=1e-6)
    _, loss = model(ids((2, 5)), ids((2, 5), seed=9))
    loss.backward()
    assert model.wte.weight.grad is not None and not hasattr(model, "lm_head")


def test_deterministic_by_seed_and_dtype():
    a, b, c = GPT(LLAMA_TINY, seed=3), GPT(LLAMA_TINY, seed=3), GPT(LLAMA_TINY, seed=4)
    for (_, x), (_, y), (_, z) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert np.array_equal(x.data, y.data)
    assert not np.array_equal(a.wte.weight.data, c.wte.weight.data)
    d = GPT(LLAMA_TINY, seed=3, dtype="float64")
    assert d.wte.weight.dtype == np.float64
    np.testing.assert_array_equal(d.wte.weight.data.astype(np.float32), a.wte.weight.data)


@CONFIGS
def test_every_parameter_gets_a_gradient(config):
    model = GPT(config, dtype="float64")
    _, loss = model(ids((2, 6)), ids((2, 6), seed=5))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and np.any(p.grad != 0), name


def _swap_in(model, names):
    """fn(*tensors) that runs the model's loss with the named parameters replaced by the given tensors."""
    params = dict(model.named_parameters())
    owners = []
    for name in names:
        path, attr = name.rsplit(".", 1)
        module = model
        for part in path.split("."):
            module = getattr(module, part)
        owners.append((module, attr))
    idx, targets = ids((2, 5), seed=11), ids((2, 5), seed=12)

    def fn(*tensors):
        for (module, attr), t in zip(owners, tensors):
            object.__setattr__(module, attr, t)      # bypass the registry: only this forward sees t
        try:
            return model(idx, targets)[1]
        finally:
            for (module, attr), name in zip(owners, names):
                object.__setattr__(module, attr, params[name])
    return fn, [params[n].data for n in names]


@CONFIGS
def test_model_gradients_pass_finite_differences(config):
    model = GPT(config, seed=2, dtype="float64")
    names = [n for n, _ in model.named_parameters()]
    sample = [n for n in names if n.startswith(("wte", "wpe", "norm_f", "lm_head"))] + \
        [n for n in names if n.startswith("blocks.1.") and n.endswith("weight")]
    fn, arrays = _swap_in(model, sample)
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    fn(*tensors).backward()
    assert all(np.any(t.grad != 0) for t in tensors)      # the swap reaches the loss: no vacuous pass
    result = check_backward(fn, arrays, n_directions=2, full_limit=0)
    assert result.passed and result.max_abs_err < 1e-8


@CONFIGS
def test_forward_is_the_composition_of_the_pieces(config):
    model = GPT(config, seed=5, dtype="float64")
    idx, targets = ids((2, 6)), ids((2, 6), seed=6)
    x = model.embed(idx)
    for block in model.blocks:
        x = block(x)
    logits = model.head(x)
    ref_logits, ref_loss = model(idx, targets)
    assert np.array_equal(logits.data, ref_logits.data)
    assert model.loss(logits, targets).item() == ref_loss.item()


@settings(deadline=None)
@given(st.integers(0, 5), st.data())
def test_causality(t, data):
    """Changing the tokens after position t never changes the logits at positions <= t."""
    config = data.draw(st.sampled_from([GPT2_TINY, LLAMA_TINY]))
    model = _model_for(config)
    T = 6
    a = np.array(data.draw(st.lists(st.integers(0, 12), min_size=T, max_size=T)))[None]
    b = a.copy()
    b[0, t + 1:] = data.draw(st.lists(st.integers(0, 12), min_size=T - t - 1, max_size=T - t - 1))
    with no_grad():
        la, lb = model(a)[0].data, model(b)[0].data
    np.testing.assert_allclose(la[:, :t + 1], lb[:, :t + 1], rtol=0, atol=1e-12)


_MODELS = {}


def _model_for(config):
    if config not in _MODELS:
        _MODELS[config] = GPT(config, seed=0, dtype="float64")
    return _MODELS[config]


def test_dropout_is_seeded_and_off_in_eval():
    config = GPTConfig(**{**GPT2_TINY.to_dict(), "dropout": 0.3})
    idx = ids((2, 6))
    a, b = GPT(config, seed=1), GPT(config, seed=1)
    assert np.array_equal(a(idx)[0].data, b(idx)[0].data)          # same seed, same masks
    assert not np.array_equal(a(idx)[0].data, a(idx)[0].data)      # masks differ between steps
    state = a.dropout_masks.state()
    first = a(idx)[0].data
    a.dropout_masks.set_state(state)
    assert np.array_equal(a(idx)[0].data, first)
    a.eval()
    assert np.array_equal(a(idx)[0].data, a(idx)[0].data)


def test_input_errors_name_the_value():
    model = GPT(GPT2_TINY)
    with pytest.raises(ValueError, match=r"token id 13 is outside the vocabulary \[0, 13\)"):
        model(np.array([[1, 13]]))
    with pytest.raises(ValueError, match=r"token id -1"):
        model(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match=r"9 tokens starting at position 0 exceeds block_size=8"):
        model(ids((1, 9)))
    with pytest.raises(ValueError, match=r"9 tokens.*block_size=8"):
        GPT(LLAMA_TINY)(ids((1, 9)))
    with pytest.raises(ValueError, match=r"shape \(B, T\).*\(4,\)"):
        model(np.array([1, 2, 3, 4]))
    with pytest.raises(TypeError, match="integer token ids"):
        model(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"targets of shape \(1, 2\) do not match"):
        model(ids((1, 3)), ids((1, 2)))
    with pytest.raises(ValueError, match="dtype 'float16'"):
        GPT(GPT2_TINY, dtype="float16")


def test_ignore_index_targets():
    model = GPT(GPT2_TINY, dtype="float64")
    idx, targets = ids((1, 6)), ids((1, 6), seed=3)
    masked = targets.copy()
    masked[0, 3:] = -100
    _, loss = model(idx, masked)
    logits, _ = model(idx[:, :3])
    assert abs(loss.item() - model.loss(logits, targets[:, :3]).item()) < 1e-12


@CONFIGS
def test_device_matches_cpu(config, device):
    cpu = GPT(config, seed=4, dtype="float64")
    on_device = GPT(config, seed=4, dtype="float64", device=device)
    assert on_device.device == device and on_device.wte.weight.device == device
    idx, targets = ids((2, 6)), ids((2, 6), seed=8)
    (lc, loss_c), (ld, loss_d) = cpu(idx, targets), on_device(idx, targets)
    np.testing.assert_allclose(ld.numpy(), lc.numpy(), rtol=0, atol=1e-10)
    loss_c.backward()
    loss_d.backward()
    for (name, pc), (_, pd) in zip(cpu.named_parameters(), on_device.named_parameters()):
        np.testing.assert_allclose(backend.to_numpy(pd.grad), pc.grad, rtol=0, atol=1e-10, err_msg=name)
    assert np.array_equal(cpu.generate([1, 2], max_new_tokens=20, temperature=0),
                          on_device.generate([1, 2], max_new_tokens=20, temperature=0))
    moved = GPT(config, seed=4, dtype="float64").to(device)
    np.testing.assert_array_equal(backend.to_numpy(moved.state_dict()["wte.weight"]), cpu.state_dict()["wte.weight"])
