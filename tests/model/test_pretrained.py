"""GPT.from_pretrained / save_pretrained on small Hugging Face layouts written here.

The reference is an independent NumPy forward pass written in this file from the raw Hugging
Face tensors (Conv1D GPT-2, rotate_half RoPE Llama with grouped kv heads), not our model code.
"""
import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from autograd import no_grad
from tinyllm import GPT, GPTConfig
from tinyllm.pretrained import PretrainedFormatError, read_safetensors

V, T = 19, 7


# ---- an independent reference forward ------------------------------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def rms_norm(x, w, eps):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * w


def causal_attention(q, k, v):
    """q (nh, T, hs); k, v (nh, T, hs) -> (nh, T, hs)."""
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((q.shape[1], q.shape[1]), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def reference_gpt2(w, hf, ids):
    C, nh = hf["n_embd"], hf["n_head"]
    hs, eps, n = C // nh, hf["layer_norm_epsilon"], len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][:n]
    for i in range(hf["n_layer"]):
        p = lambda name: w[f"h.{i}.{name}"]                                       # noqa: E731
        h = layer_norm(x, p("ln_1.weight"), p("ln_1.bias"), eps)
        qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")                # Conv1D: x @ W(in, out)
        q, k, v = (qkv[:, j * C:(j + 1) * C].reshape(n, nh, hs).transpose(1, 0, 2) for j in range(3))
        y = causal_attention(q, k, v).transpose(1, 0, 2).reshape(n, C)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = layer_norm(x, p("ln_2.weight"), p("ln_2.bias"), eps)
        a = h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias")
        a = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))
        x = x + a @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    head = w.get("lm_head.weight", w["wte.weight"])                             # tied unless saved apart
    return layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps) @ head.T


def reference_llama(w, hf, ids):
    C, nh, nkv = hf["hidden_size"], hf["num_attention_heads"], hf["num_key_value_heads"]
    hs, eps, n = C // nh, hf["rms_norm_eps"], len(ids)
    inv_freq = hf["rope_theta"] ** (-np.arange(0, hs, 2) / hs)
    angles = np.arange(n)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))

    def rotary(t):                                                                # (heads, n, hs)
        rotated = np.concatenate([-t[..., hs // 2:], t[..., :hs // 2]], -1)
        return t * cos + rotated * sin

    x = w["model.embed_tokens.weight"][ids]
    for i in range(hf["num_hidden_layers"]):
        p = lambda name: w[f"model.layers.{i}.{name}"]                            # noqa: E731
        h = rms_norm(x, p("input_layernorm.weight"), eps)
        q = (h @ p("self_attn.q_proj.weight").T).reshape(n, nh, hs).transpose(1, 0, 2)
        k = (h @ p("self_attn.k_proj.weight").T).reshape(n, nkv, hs).transpose(1, 0, 2)
        v = (h @ p("self_attn.v_proj.weight").T).reshape(n, nkv, hs).transpose(1, 0, 2)
        q, k = rotary(q), rotary(k)
        group = nh // nkv
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)           # query head j uses kv head j // group
        y = causal_attention(q, k, v).transpose(1, 0, 2).reshape(n, C)
        x = x + y @ p("self_attn.o_proj.weight").T
        h = rms_norm(x, p("post_attention_layernorm.weight"), eps)
        gate, up = h @ p("mlp.gate_proj.weight").T, h @ p("mlp.up_proj.weight").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ p("mlp.down_proj.weight").T
    head = w["model.embed_tokens.weight"] if hf["tie_word_embeddings"] else w["lm_head.weight"]
    return rms_norm(x, w["model.norm.weight"], eps) @ head.T


# ---- small Hugging Face directories --------------------------------------------------------------

GPT2_HF = {"model_type": "gpt2", "vocab_size": V, "n_positions": 8, "n_embd": 12, "n_layer": 2, "n_head": 3,
           "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}
LLAMA_HF = {"model_type": "llama", "vocab_size": V, "hidden_size": 16, "intermediate_size": 20,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
            "rope_theta": 500.0, "max_position_embeddings": 8, "tie_word_embeddings": False, "hidden_act": "silu"}


def gpt2_tensors(rng, prefix="transformer."):
    C, H = 12, 48
    shapes = {"wte.weight": (V, C), "wpe.weight": (8, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(2):
        shapes.update({f"h.{i}.ln_1.weight": (C,), f"h.{i}.ln_1.bias": (C,), f"h.{i}.ln_2.weight": (C,),
                       f"h.{i}.ln_2.bias": (C,), f"h.{i}.attn.c_attn.weight": (C, 3 * C),
                       f"h.{i}.attn.c_attn.bias": (3 * C,), f"h.{i}.attn.c_proj.weight": (C, C),
                       f"h.{i}.attn.c_proj.bias": (C,), f"h.{i}.mlp.c_fc.weight": (C, H),
                       f"h.{i}.mlp.c_fc.bias": (H,), f"h.{i}.mlp.c_proj.weight": (H, C), f"h.{i}.mlp.c_proj.bias": (C,)})
    raw = {name: rng.standard_normal(shape) * (0.3 if len(shape) > 1 else 1.0) for name, shape in shapes.items()}
    stored = {prefix + k: v for k, v in raw.items()}
    for i in range(2):   # the causal-mask buffers older GPT-2 files carry: ignored
        stored[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 8, 8)))
        stored[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4)
    return raw, stored


def llama_tensors(rng):
    C, H, hs = 16, 20, 4
    shapes = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,), "lm_head.weight": (V, C)}
    for i in range(2):
        pre = f"model.layers.{i}."
        shapes.update({pre + "input_layernorm.weight": (C,), pre + "post_attention_layernorm.weight": (C,),
                       pre + "self_attn.q_proj.weight": (4 * hs, C), pre + "self_attn.k_proj.weight": (2 * hs, C),
                       pre + "self_attn.v_proj.weight": (2 * hs, C), pre + "self_attn.o_proj.weight": (C, C),
                       pre + "mlp.gate_proj.weight": (H, C), pre + "mlp.up_proj.weight": (H, C),
                       pre + "mlp.down_proj.weight": (C, H)})
    return {name: rng.standard_normal(shape) * (0.3 if len(shape) > 1 else 1.0) + (1.0 if len(shape) == 1 else 0)
            for name, shape in shapes.items()}


def write_dir(path, hf_config, tensors):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path / "model.safetensors"))
    return path


def logits_of(model, ids):
    with no_grad():
        return model(np.asarray(ids)[None])[0].data[0]


IDS = np.array([3, 17, 0, 5, 5, 11, 2])


@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_gpt2_logits_match_independent_reference(tmp_path, prefix):
    raw, stored = gpt2_tensors(np.random.default_rng(0), prefix)
    model = GPT.from_pretrained(write_dir(tmp_path / "gpt2", GPT2_HF, stored), dtype="float64")
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size, c.tie_embeddings) == (2, 3, 12, 8, V, True)
    np.testing.assert_allclose(logits_of(model, IDS), reference_gpt2(raw, GPT2_HF, IDS), rtol=0, atol=1e-10)


@pytest.mark.parametrize("tied", [False, True])
def test_llama_logits_match_independent_reference(tmp_path, tied):
    tensors = llama_tensors(np.random.default_rng(1))
    hf = {**LLAMA_HF, "tie_word_embeddings": tied}
    if tied:
        del tensors["lm_head.weight"]
    model = GPT.from_pretrained(write_dir(tmp_path / "llama", hf, tensors), dtype="float64")
    c = model.config
    assert (c.n_kv_head, c.mlp_hidden, c.rope_theta, c.norm_eps, c.position) == (2, 20, 500.0, 1e-6, "rope")
    np.testing.assert_allclose(logits_of(model, IDS), reference_llama(tensors, hf, IDS), rtol=0, atol=1e-10)


def test_sharded_checkpoint(tmp_path):
    tensors = llama_tensors(np.random.default_rng(2))
    d = tmp_path / "sharded"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA_HF))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for filename, part in shards.items():
        save_file({k: tensors[k] for k in part}, str(d / filename))
    weight_map = {k: f for f, part in shards.items() for k in part}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model = GPT.from_pretrained(d, dtype="float64")
    np.testing.assert_allclose(logits_of(model, IDS), reference_llama(tensors, LLAMA_HF, IDS), rtol=0, atol=1e-10)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lists shard 'model-00002-of-00002.safetensors', which is missing"):
        GPT.from_pretrained(d)


def write_raw_safetensors(path, tensors):
    """tensors: name -> (dtype name, shape, raw bytes); the file format written by hand."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_bf16_and_f16_tensors_decode(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.standard_normal((3, 5)).astype(np.float32)
    bf16_bits = (values.view(np.uint32) >> 16).astype("<u2")            # truncate to bfloat16
    exact = (bf16_bits.astype(np.uint32) << 16).view(np.float32)
    half = values.astype(np.float16)
    write_raw_safetensors(tmp_path / "x.safetensors", {"a": ("BF16", (3, 5), bf16_bits.tobytes()),
                                                       "b": ("F16", (3, 5), half.astype("<f2").tobytes())})
    out = read_safetensors(tmp_path / "x.safetensors")
    assert out["a"].dtype == np.float32 and np.array_equal(out["a"], exact)
    assert np.max(np.abs(out["a"] - values)) <= np.max(np.abs(values)) * 2 ** -7
    assert out["b"].dtype == np.float32 and np.array_equal(out["b"], half.astype(np.float32))


def test_bf16_llama_loads(tmp_path):
    tensors = llama_tensors(np.random.default_rng(4))
    d = tmp_path / "bf16"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA_HF))
    as_bf16 = {}
    exact = {}
    for name, value in tensors.items():
        bits = (value.astype(np.float32).view(np.uint32) >> 16).astype("<u2")
        as_bf16[name] = ("BF16", value.shape, bits.tobytes())
        exact[name] = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    write_raw_safetensors(d / "model.safetensors", as_bf16)
    model = GPT.from_pretrained(d, dtype="float64")
    np.testing.assert_allclose(logits_of(model, IDS), reference_llama(exact, LLAMA_HF, IDS), rtol=0, atol=1e-10)


@pytest.mark.parametrize("config", [
    GPTConfig(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=8),
    GPTConfig(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=8, tie_embeddings=False),
    GPTConfig(vocab_size=V, block_size=8, n_layer=2, n_head=4, n_kv_head=1, n_embd=16, mlp_hidden=12,
              norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False, rope_theta=100.0),
], ids=["gpt2", "gpt2-untied", "llama"])
@pytest.mark.parametrize("shard", [None, 600])
def test_save_pretrained_round_trip(tmp_path, config, shard):
    model = GPT(config, seed=7, dtype="float64")
    model.save_pretrained(tmp_path) if shard is None else \
        __import__("tinyllm.pretrained").pretrained.save_pretrained(model, tmp_path, max_shard_bytes=shard)
    files = {p.name for p in tmp_path.iterdir()}
    assert not any(name.endswith(".tmp") for name in files)
    assert ("model.safetensors" in files) == (shard is None)
    loaded = GPT.from_pretrained(tmp_path, dtype="float64")
    assert loaded.config == config
    for (a, x), (b, y) in zip(model.named_parameters(), loaded.named_parameters()):
        assert a == b and np.array_equal(x.data, y.data)
    # the files hold the Hugging Face layout: check against the independent reference
    hf = json.loads((tmp_path / "config.json").read_text())
    tensors = {}
    for f in sorted(tmp_path.glob("*.safetensors")):
        tensors.update(read_safetensors(f))
    reference = reference_gpt2 if hf["model_type"] == "gpt2" else reference_llama
    if hf["model_type"] == "gpt2":
        tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
        assert ("lm_head.weight" in tensors) == (not config.tie_embeddings)
    np.testing.assert_allclose(logits_of(model, IDS), reference(tensors, hf, IDS), rtol=0, atol=1e-10)


def test_save_pretrained_refuses_mixed_family(tmp_path):
    mixed = GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=8, position="rope")
    with pytest.raises(PretrainedFormatError, match="mixes the GPT-2 and Llama families.*position=rope"):
        GPT(mixed).save_pretrained(tmp_path)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        GPT.from_pretrained(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        GPT.from_pretrained(empty)
    (empty / "config.json").write_text(json.dumps(GPT2_HF))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        GPT.from_pretrained(empty)

    _, stored = gpt2_tensors(np.random.default_rng(0))
    bad = dict(stored)
    del bad["transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(PretrainedFormatError, match="no tensor 'transformer.h.1.mlp.c_fc.weight'"):
        GPT.from_pretrained(write_dir(tmp_path / "missing", GPT2_HF, bad))
    bad = dict(stored, **{"transformer.h.0.attn.c_proj.weight": np.zeros((12, 13))})
    with pytest.raises(PretrainedFormatError, match=r"'transformer.h.0.attn.c_proj.weight' has shape \(12, 13\).*\(12, 12\)"):
        GPT.from_pretrained(write_dir(tmp_path / "shape", GPT2_HF, bad))
    bad = dict(stored, **{"transformer.h.0.extra.weight": np.zeros(3)})
    with pytest.raises(PretrainedFormatError, match="does not use: transformer.h.0.extra.weight"):
        GPT.from_pretrained(write_dir(tmp_path / "extra", GPT2_HF, bad))
    with pytest.raises(PretrainedFormatError, match="model_type 'bert' is not supported; supported: gpt2, llama"):
        GPT.from_pretrained(write_dir(tmp_path / "bert", {"model_type": "bert"}, stored))
    with pytest.raises(PretrainedFormatError, match="lacks the field 'n_head'"):
        GPT.from_pretrained(write_dir(tmp_path / "nohead", {k: v for k, v in GPT2_HF.items() if k != "n_head"}, stored))
    with pytest.raises(PretrainedFormatError, match="rope_scaling"):
        GPT.from_pretrained(write_dir(tmp_path / "scaled", {**LLAMA_HF, "rope_scaling": {"rope_type": "llama3"}},
                                      llama_tensors(np.random.default_rng(0))))
    tensors = llama_tensors(np.random.default_rng(0))
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((4, 16))
    with pytest.raises(PretrainedFormatError, match=r"k_proj.weight \(4, 16\).*do not fit blocks.0.attn.c_attn.weight"):
        GPT.from_pretrained(write_dir(tmp_path / "gqa", LLAMA_HF, tensors))


def test_truncated_file_is_reported(tmp_path):
    _, stored = gpt2_tensors(np.random.default_rng(0))
    d = write_dir(tmp_path / "cut", GPT2_HF, stored)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(PretrainedFormatError, match="truncated"):
        GPT.from_pretrained(d)
    (d / "model.safetensors").write_bytes(b"\x03")
    with pytest.raises(PretrainedFormatError, match="not a safetensors file"):
        GPT.from_pretrained(d)
