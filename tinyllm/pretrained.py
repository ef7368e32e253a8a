"""Hugging Face checkpoints: read and write `config.json` + `model.safetensors` for GPT-2 and Llama.

    model = GPT.from_pretrained("gpt2-dir/")      # load_pretrained(GPT, path)
    model.save_pretrained("out-dir/")             # save_pretrained(model, path)

A directory in the Hugging Face layout holds `config.json` and either `model.safetensors`
or shards listed in `model.safetensors.index.json` ({"weight_map": {tensor name: file}}).
No deep-learning framework is involved: the `safetensors` package's NumPy API reads and
writes the files, and bfloat16 tensors (which NumPy has no type for) are decoded here from
the raw file: a safetensors file is an 8-byte little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the tensor bytes; a bf16
number is the top 16 bits of a float32, so `(uint16 << 16).view(float32)` is exact.

Name and layout mapping (ours <- Hugging Face):

    GPT-2 (model_type "gpt2"; names with or without the "transformer." prefix;
           Conv1D weights stored (in, out), the transpose of our (out, in)):
      wte.weight <- wte.weight            wpe.weight <- wpe.weight
      blocks.N.norm1 <- h.N.ln_1          blocks.N.attn.c_attn <- h.N.attn.c_attn (transposed)
      blocks.N.attn.c_proj <- h.N.attn.c_proj (transposed)         blocks.N.norm2 <- h.N.ln_2
      blocks.N.mlp.c_fc <- h.N.mlp.c_fc (transposed)   blocks.N.mlp.c_proj <- h.N.mlp.c_proj (transposed)
      norm_f <- ln_f                      (the head is tied; h.N.attn.bias/masked_bias buffers are ignored)
    Llama (model_type "llama"):
      wte.weight <- model.embed_tokens.weight
      blocks.N.norm1.weight <- model.layers.N.input_layernorm.weight
      blocks.N.attn.c_attn.weight <- concat(self_attn.q_proj, k_proj, v_proj) along rows
      blocks.N.attn.c_proj.weight <- self_attn.o_proj.weight
      blocks.N.norm2.weight <- model.layers.N.post_attention_layernorm.weight
      blocks.N.mlp.c_fc.weight <- concat(mlp.gate_proj, mlp.up_proj) along rows
      blocks.N.mlp.c_proj.weight <- mlp.down_proj.weight
      norm_f.weight <- model.norm.weight   lm_head.weight <- lm_head.weight (untied models)
    Hugging Face's Llama q/k weights are already permuted for the rotate_half RoPE layout,
    the one F.rope uses, so they load as they are.

Left out: other architectures, rope scaling (Llama 3.1's "llama3" rope_scaling is refused,
not approximated), attention/MLP biases in Llama files, quantised weights, downloading.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors import safe_open

from . import io
from .config import GPTConfig
from .statefile import plain_file_name
from .errors import UserError
from .limits import MAX_METADATA_BYTES, check_file_size

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SUPPORTED_MODEL_TYPES = ("gpt2", "llama")
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own bound on its JSON header

# safetensors dtype name -> NumPy dtype, for the types we read with the raw reader or check
_FLOAT_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None}


class PretrainedFormatError(UserError):
    """A checkpoint directory or file that cannot be read as a supported Hugging Face model."""


# ---- safetensors files ---------------------------------------------------------------------

def read_safetensors_header(path) -> dict:
    """The JSON header of a safetensors file (without "__metadata__"), checked against the file size."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise PretrainedFormatError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise PretrainedFormatError(f"{path}: a header of {n:,} bytes is more than safetensors allows "
                                        f"({MAX_HEADER_BYTES:,}); the file is not safetensors")
        if n > size - 8:
            raise PretrainedFormatError(f"{path}: header length {n} runs past the end of the file ({size} bytes); "
                                        "the file is truncated or not safetensors")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PretrainedFormatError(f"{path}: the safetensors header is not valid JSON ({e})") from None
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= data_size:
            raise PretrainedFormatError(f"{path}: tensor {name!r} spans bytes [{begin}, {end}) but the file has "
                                        f"{data_size} data bytes; the file is truncated or corrupted")
    return {"__header_length__": n, **header}


def read_safetensors(path) -> dict:
    """name -> NumPy array for every tensor in a safetensors file; bf16 and f16 become float32."""
    path = Path(path)
    header = read_safetensors_header(path)
    n = header.pop("__header_length__")
    tensors = {}
    for name, info in header.items():
        if info.get("dtype") not in _FLOAT_DTYPES:   # a cast would turn them into other numbers (or zeros)
            raise PretrainedFormatError(f"{path}: tensor {name!r} is stored as {info.get('dtype')}; model weights "
                                        f"are floating point ({', '.join(_FLOAT_DTYPES)}): the file is not a model's "
                                        "weights, or a quantised one (not supported)")
    with safe_open(str(path), framework="numpy") as f:
        for name, info in header.items():
            if info["dtype"] == "BF16":
                tensors[name] = _read_bf16(path, 8 + n, info)
            else:
                tensors[name] = f.get_tensor(name)
            if tensors[name].dtype == np.float16:
                tensors[name] = tensors[name].astype(np.float32)
    return tensors


def _read_bf16(path: Path, data_start: int, info: dict) -> np.ndarray:
    begin, end = info["data_offsets"]
    shape = tuple(info["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != 2 * count:
        raise PretrainedFormatError(f"{path}: a BF16 tensor of shape {shape} needs {2 * count} bytes, "
                                    f"the header gives {end - begin}")
    with open(path, "rb") as f:
        f.seek(data_start + begin)
        raw = np.frombuffer(f.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)


HF_METADATA = {"format": "pt"}  # the safetensors header tag Hugging Face expects


def read_checkpoint_tensors(directory) -> dict:
    """Every tensor of a Hugging Face directory: model.safetensors, or the shards of its index."""
    directory = Path(directory)
    single, index = directory / WEIGHTS_FILE, directory / INDEX_FILE
    if single.is_file():
        return read_safetensors(single)
    if index.is_file():
        check_file_size(index, MAX_METADATA_BYTES, "safetensors index")
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PretrainedFormatError(f"{index}: not a valid safetensors index (needs a 'weight_map'): {e}") from None
        if not isinstance(weight_map, dict):
            raise PretrainedFormatError(f"{index}: 'weight_map' is a {type(weight_map).__name__}, not an object of "
                                        "tensor name -> shard file")
        tensors = {}
        for shard in sorted(set(map(str, weight_map.values()))):
            if not plain_file_name(shard):   # never a path out of the directory (../../etc/hostname)
                raise PretrainedFormatError(f"{index}: shard {shard!r} is not a file name in {directory}; "
                                            "the index is corrupted or was crafted")
            shard_path = directory / shard
            if not shard_path.is_file():
                raise FileNotFoundError(f"{index} lists shard {shard!r}, which is missing from {directory}")
            tensors.update(read_safetensors(shard_path))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise PretrainedFormatError(f"{index} maps {', '.join(missing[:5])} to shards that do not contain them")
        return tensors
    raise FileNotFoundError(f"{directory} has neither {WEIGHTS_FILE} nor {INDEX_FILE}: "
                            "expected a Hugging Face model directory")


# ---- configs -----------------------------------------------------------------------------------

def config_from_hf(hf: dict) -> GPTConfig:
    """A GPTConfig from a Hugging Face config.json (model_type "gpt2" or "llama")."""
    model_type = hf.get("model_type")
    if model_type == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise PretrainedFormatError(f"gpt2 activation_function={act!r} is not supported; "
                                        "only the tanh GELU ('gelu_new') is")
        return GPTConfig(
            vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
            n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
            norm="layernorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), mlp="gelu",
            mlp_hidden=hf.get("n_inner"), position="learned", bias=True,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)))
    if model_type == "llama":
        unsupported = {key: hf[key] for key in ("rope_scaling",) if hf.get(key)}
        unsupported.update({key: hf[key] for key in ("attention_bias", "mlp_bias") if hf.get(key)})
        if hf.get("hidden_act", "silu") != "silu":
            unsupported["hidden_act"] = hf["hidden_act"]
        n_head = hf["num_attention_heads"]
        if hf.get("head_dim") not in (None, hf["hidden_size"] // n_head):
            unsupported["head_dim"] = hf["head_dim"]
        if unsupported:
            raise PretrainedFormatError(f"llama config settings not supported: {unsupported}")
        return GPTConfig(
            vocab_size=hf.get("vocab_size", 32000), block_size=hf.get("max_position_embeddings", 2048),
            n_layer=hf["num_hidden_layers"], n_head=n_head, n_kv_head=hf.get("num_key_value_heads"),
            n_embd=hf["hidden_size"], norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            mlp="swiglu", mlp_hidden=hf["intermediate_size"], position="rope",
            rope_theta=float(hf.get("rope_theta", 10000.0)), bias=False,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    raise PretrainedFormatError(f"model_type {model_type!r} is not supported; supported: "
                                f"{', '.join(SUPPORTED_MODEL_TYPES)}")


def family_of(config: GPTConfig) -> str:
    """'gpt2' or 'llama': the Hugging Face architecture a config can be written as."""
    sizes = config.resolved()
    gpt2 = dict(norm="layernorm", mlp="gelu", position="learned", bias=True, n_kv_head=config.n_head)
    llama = dict(norm="rmsnorm", mlp="swiglu", position="rope", bias=False)
    for family, wanted in (("gpt2", gpt2), ("llama", llama)):
        if all(getattr(sizes, key) == value for key, value in wanted.items()):
            return family
    raise PretrainedFormatError(
        "this config mixes the GPT-2 and Llama families, which no Hugging Face architecture holds: "
        f"norm={config.norm}, mlp={config.mlp}, position={config.position}, bias={config.bias}, "
        f"n_kv_head={sizes.n_kv_head}/n_head={config.n_head}; GPT-2 needs layernorm/gelu/learned/bias "
        "without kv groups, Llama rmsnorm/swiglu/rope/no bias (save with tinyllm.checkpoint instead)")


def config_to_hf(config: GPTConfig, dtype) -> dict:
    family = family_of(config)
    common = {"vocab_size": config.vocab_size, "tie_word_embeddings": config.tie_embeddings,
              "torch_dtype": np.dtype(dtype).name}
    if family == "gpt2":
        return {**common, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                "n_positions": config.block_size, "n_ctx": config.block_size, "n_embd": config.n_embd,
                "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.mlp_hidden,
                "layer_norm_epsilon": config.norm_eps, "activation_function": "gelu_new",
                "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout}
    return {**common, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "hidden_size": config.n_embd, "intermediate_size": config.resolved().mlp_hidden,
            "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
            "num_key_value_heads": config.resolved().n_kv_head, "rms_norm_eps": config.norm_eps,
            "rope_theta": config.rope_theta, "max_position_embeddings": config.block_size,
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
            "attention_dropout": config.dropout}


# ---- weights -----------------------------------------------------------------------------------

def _gpt2_names(config: GPTConfig) -> dict:
    """our name -> (Hugging Face name without 'transformer.', transposed?)."""
    names = {"wte.weight": ("wte.weight", False), "wpe.weight": ("wpe.weight", False),
             "norm_f.weight": ("ln_f.weight", False), "norm_f.bias": ("ln_f.bias", False)}
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"h.{i}."
        for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
            names[f"{ours}{a}.weight"] = (f"{theirs}{b}.weight", False)
            names[f"{ours}{a}.bias"] = (f"{theirs}{b}.bias", False)
        for a, b in (("attn.c_attn", "attn.c_attn"), ("attn.c_proj", "attn.c_proj"),
                     ("mlp.c_fc", "mlp.c_fc"), ("mlp.c_proj", "mlp.c_proj")):
            names[f"{ours}{a}.weight"] = (f"{theirs}{b}.weight", True)   # Conv1D: (in, out)
            names[f"{ours}{a}.bias"] = (f"{theirs}{b}.bias", False)
    if not config.tie_embeddings:
        names["lm_head.weight"] = ("lm_head.weight", False)
    return names


def _llama_names(config: GPTConfig) -> dict:
    """our name -> list of Hugging Face names concatenated along rows (in this order)."""
    names = {"wte.weight": ["model.embed_tokens.weight"], "norm_f.weight": ["model.norm.weight"]}
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[f"{ours}norm1.weight"] = [f"{theirs}input_layernorm.weight"]
        names[f"{ours}attn.c_attn.weight"] = [f"{theirs}self_attn.{p}_proj.weight" for p in "qkv"]
        names[f"{ours}attn.c_proj.weight"] = [f"{theirs}self_attn.o_proj.weight"]
        names[f"{ours}norm2.weight"] = [f"{theirs}post_attention_layernorm.weight"]
        names[f"{ours}mlp.c_fc.weight"] = [f"{theirs}mlp.gate_proj.weight", f"{theirs}mlp.up_proj.weight"]
        names[f"{ours}mlp.c_proj.weight"] = [f"{theirs}mlp.down_proj.weight"]
    if not config.tie_embeddings:
        names["lm_head.weight"] = ["lm_head.weight"]
    return names


def _ignored(name: str) -> bool:
    """Buffers and duplicates Hugging Face files may carry that hold no weights of ours."""
    return name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))


def hf_to_state_dict(tensors: dict, config: GPTConfig, expected_shapes: dict, source: str = "checkpoint") -> dict:
    """Our state_dict from Hugging Face tensors (checking every name and shape)."""
    family = family_of(config)
    used, state = set(), {}

    def fetch(name: str):
        if name not in tensors:
            raise PretrainedFormatError(f"{source} has no tensor {name!r} (needed for a {family} model with "
                                        f"{config.n_layer} layers)")
        used.add(name)
        return tensors[name]

    if family == "gpt2":
        prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
        for ours, (theirs, transposed) in _gpt2_names(config).items():
            full = theirs if ours == "lm_head.weight" else prefix + theirs
            array = fetch(full)
            _check_shape(source, full, array.shape, expected_shapes[ours], transposed)
            state[ours] = array.T if transposed else array
        if config.tie_embeddings and "lm_head.weight" in tensors:
            used.add("lm_head.weight")   # a tied head saved anyway: the embedding is the weight
    else:
        for ours, parts in _llama_names(config).items():
            arrays = [fetch(p) for p in parts]
            rows = sum(a.shape[0] for a in arrays)
            if any(a.ndim != len(expected_shapes[ours]) for a in arrays) or \
                    (rows, *arrays[0].shape[1:]) != expected_shapes[ours]:
                described = ", ".join(f"{p} {tuple(a.shape)}" for p, a in zip(parts, arrays))
                raise PretrainedFormatError(f"{source}: shapes {described} do not fit {ours} "
                                            f"{expected_shapes[ours]} of the model described by config.json")
            state[ours] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        if config.tie_embeddings and "lm_head.weight" in tensors:
            used.add("lm_head.weight")
    unexpected = sorted(k for k in tensors if k not in used and not _ignored(k))
    if unexpected:
        raise PretrainedFormatError(f"{source} has tensors this {family} model does not use: "
                                    f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    return state


def _check_shape(source, name, shape, expected, transposed) -> None:
    stored = tuple(reversed(expected)) if transposed else tuple(expected)
    if tuple(shape) != stored:
        raise PretrainedFormatError(f"{source}: tensor {name!r} has shape {tuple(shape)}, but config.json "
                                    f"implies {stored}")


def state_dict_to_hf(state: dict, config: GPTConfig) -> dict:
    """Hugging Face tensors from our state_dict (NumPy arrays)."""
    tensors = {}
    if family_of(config) == "gpt2":
        for ours, (theirs, transposed) in _gpt2_names(config).items():
            name = theirs if ours == "lm_head.weight" else "transformer." + theirs
            tensors[name] = state[ours].T if transposed else state[ours]
        return tensors
    for ours, parts in _llama_names(config).items():
        if len(parts) == 1:
            tensors[parts[0]] = state[ours]
            continue
        sizes = _llama_split_sizes(config, ours)
        for part, piece in zip(parts, np.split(state[ours], np.cumsum(sizes)[:-1], axis=0)):
            tensors[part] = piece
    return tensors


def _llama_split_sizes(config: GPTConfig, ours: str) -> list:
    sizes = config.resolved()
    if ours.endswith("attn.c_attn.weight"):
        hs = sizes.head_size
        return [sizes.n_head * hs, sizes.n_kv_head * hs, sizes.n_kv_head * hs]
    return [sizes.mlp_hidden, sizes.mlp_hidden]   # mlp.c_fc: gate, up


# ---- entry points ------------------------------------------------------------------------------

def load_pretrained(model_cls, path, dtype="float32", device: str = "cpu"):
    """model_cls(config) with the weights of a Hugging Face directory; see the module docstring."""
    directory = Path(path)
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; from_pretrained needs a directory with "
                                f"{CONFIG_FILE} and {WEIGHTS_FILE}")
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: from_pretrained needs a Hugging Face config")
    try:
        hf = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise PretrainedFormatError(f"{config_path} is not valid JSON: {e}") from None
    try:
        config = config_from_hf(hf)
    except KeyError as e:
        raise PretrainedFormatError(f"{config_path} lacks the field {e.args[0]!r} "
                                    f"that model_type {hf.get('model_type')!r} needs") from None
    tensors = read_checkpoint_tensors(directory)
    model = model_cls(config, seed=0, dtype=dtype, device=device)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    state = hf_to_state_dict(tensors, config, expected, source=str(directory))
    model.load_state_dict(state, strict=True)
    return model


def save_pretrained(model, path, max_shard_bytes: int | None = None) -> None:
    """Write config.json and the weights (one file, or shards of at most max_shard_bytes plus an
    index) in the Hugging Face layout; every file is written atomically."""
    from autograd.backend import to_numpy
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    dtype = model.wte.weight.dtype
    hf_config = config_to_hf(config, dtype)
    tensors = state_dict_to_hf({k: to_numpy(v) for k, v in model.state_dict().items()}, config)
    if max_shard_bytes is None:
        io.write_tensors(directory / WEIGHTS_FILE, tensors, HF_METADATA)
        stale = [directory / INDEX_FILE]
    else:
        shards, current, size = [], {}, 0
        for name, array in tensors.items():
            if current and size + array.nbytes > max_shard_bytes:
                shards.append(current)
                current, size = {}, 0
            current[name] = array
            size += array.nbytes
        shards.append(current)
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            io.write_tensors(directory / filename, shard, HF_METADATA)
            weight_map.update({name: filename for name in shard})
        io.write_json(directory / INDEX_FILE, {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
                                               "weight_map": weight_map})
        stale = [directory / WEIGHTS_FILE]
    for old in stale:  # a file of the other layout would shadow (or confuse) the new one
        if old.exists():
            old.unlink()
    io.write_json(directory / CONFIG_FILE, hf_config)
