"""GPTConfig: the shape and family of a GPT, its named presets, and the checks of token ids against it.

    config = GPTConfig.preset("baby", vocab_size=65)          # or GPTConfig(vocab_size=..., n_layer=...)
    sizes = config.resolved()                                 # every None filled in
    sizes.n_kv_head, sizes.mlp_hidden, config.head_size

One code path covers both families; the config picks the parts:

    GPT-2:  layernorm, gelu MLP,   learned positions, biases, tied head
    Llama:  rmsnorm,   SwiGLU MLP, rotary positions,  no biases, untied head, grouped-query kv heads

One name per idea. Two fields may be None, meaning "the family's default": n_kv_head
(None = n_head: one kv head per query head) and mlp_hidden (None = 4 C for gelu, Llama's
width for swiglu). The config keeps what was asked, None included, so that
`dataclasses.replace(config, n_head=16)` still means one kv head per query head, and a
checkpoint's `model_config` (which may hold `n_kv_head: null`) loads and compares equal to
the config that wrote it. Code that needs the numbers reads them from `config.resolved()`,
the same config with every None filled in: `config.resolved().n_kv_head` is an int.

Invalid combinations raise ValueError at construction, naming the values and the fix.
Below the model: this file imports only tinyllm.fields, so the model, the KV cache,
decoding and the Hugging Face reader all build on it.

`ModelSettings` is the model section of a run's settings (`--preset` and the flags that
override it): `settings.model.config(vocab_size)` is the GPTConfig a run builds, and a
combination that makes no model is refused when the settings are made, before any data is
read, in the flags' terms ("--n-head 4 is not divisible by --n-kv-head 3").

Left out: per-layer shapes (every block is alike), rope scaling, attention variants.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from autograd import backend
from autograd.tensor import Tensor

from .fields import ConfigError, check, flag, is_number, is_positive_int, setting

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")


def llama_mlp_hidden(n_embd: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU width: 2/3 of 4 n_embd (same parameter count as a 4x GELU MLP),
    rounded up to a multiple of `multiple_of` (Meta's reference code uses 256)."""
    hidden = int(2 * 4 * n_embd / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class GPTConfig:
    """The shape and family of a GPT. Defaults are GPT-2 small (124M parameters).

    `GPTConfig.preset("baby", vocab_size=65)` gives a named shape with overrides.
    Invalid combinations raise ValueError at construction, naming the values.
    """

    vocab_size: int = 50257          # GPT-2's BPE vocabulary; 65 for character-level Shakespeare
    block_size: int = 1024           # longest context (positions) the model sees at once
    n_layer: int = 12                # transformer blocks
    n_head: int = 12                 # query heads per attention layer
    n_kv_head: int | None = None     # key/value heads (grouped-query attention); None = n_head
    n_embd: int = 768                # residual stream width C; head size hs = C / n_head
    norm: str = "layernorm"          # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    norm_eps: float = 1e-5           # epsilon inside the norms (GPT-2 and Llama 2 both use 1e-5)
    mlp: str = "gelu"                # "gelu" (GPT-2, tanh approximation) or "swiglu" (Llama)
    mlp_hidden: int | None = None    # MLP width H; None = 4 C for gelu, llama_mlp_hidden(C) for swiglu
    position: str = "learned"        # "learned" absolute embeddings (GPT-2) or "rope" (Llama)
    rope_theta: float = 10000.0      # RoPE base; Llama 3 uses 500000
    bias: bool = True                # biases in Linear layers and LayerNorm (GPT-2 yes, Llama no)
    tie_embeddings: bool = True      # the LM head reuses the token embedding matrix (GPT-2 yes, Llama no)
    dropout: float = 0.0             # dropout on embeddings, attention weights and residual branches

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_kv_head", "mlp_hidden"):
            value = getattr(self, name)
            if value is None and name in ("n_kv_head", "mlp_hidden"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"GPTConfig: {name}={value!r} must be a positive integer")
            object.__setattr__(self, name, int(value))   # NumPy integers become plain ints (JSON)
        for name, value, allowed in (("norm", self.norm, NORMS), ("mlp", self.mlp, MLPS),
                                     ("position", self.position, POSITIONS)):
            if value not in allowed:
                raise ValueError(f"GPTConfig: {name}={value!r} is not known; use one of {', '.join(allowed)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             "choose n_embd a multiple of n_head")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ValueError(f"GPTConfig: n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}; "
                             "each kv head must serve a whole group of query heads")
        if self.position == "rope" and self.head_size % 2:
            raise ValueError(f"GPTConfig: position='rope' needs an even head size, but n_embd={self.n_embd} / "
                             f"n_head={self.n_head} = {self.head_size}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"GPTConfig: dropout={self.dropout!r} must be in [0, 1)")
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            raise ValueError(f"GPTConfig: norm_eps={self.norm_eps!r} must be a positive number (e.g. 1e-5)")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            raise ValueError(f"GPTConfig: rope_theta={self.rope_theta!r} must be a positive number (e.g. 10000.0)")
        for name in ("bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GPTConfig: {name}={getattr(self, name)!r} must be True or False")

    # ---- sizes -------------------------------------------------------------------------
    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def resolved(self) -> "GPTConfig":
        """This config with every None filled in (module docstring): n_kv_head = n_head, mlp_hidden =
        4 C (gelu) or llama_mlp_hidden(C) (swiglu). Read sizes from it; derive new configs from self."""
        n_kv_head = self.n_head if self.n_kv_head is None else self.n_kv_head
        mlp_hidden = self.mlp_hidden
        if mlp_hidden is None:
            mlp_hidden = 4 * self.n_embd if self.mlp == "gelu" else llama_mlp_hidden(self.n_embd)
        return dataclasses.replace(self, n_kv_head=n_kv_head, mlp_hidden=mlp_hidden)

    # ---- presets and serialisation -----------------------------------------------------
    @staticmethod
    def presets() -> list:
        return list(_PRESETS)

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """A named shape (see `presets()`), with any field overridden."""
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(_PRESETS)}")
        return cls.from_dict({**_PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        unknown = unknown_fields(cls, values)
        if unknown:
            raise ValueError(f"GPTConfig: unknown field(s) {', '.join(unknown)}; "
                             f"known fields: {', '.join(sorted(f.name for f in dataclasses.fields(cls)))}")
        return cls(**values)


def unknown_fields(config_class, values: dict) -> list:
    """The keys of `values` that are not fields of the dataclass `config_class`, sorted
    (every config's from_dict rejects them with its own message)."""
    return sorted(set(values) - {f.name for f in dataclasses.fields(config_class)})


# name -> field values (the rest take the defaults above)
_PRESETS = {
    # nanoGPT's CPU "baby" shape for character-level Shakespeare
    "baby": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024),
    # a small Llama-style model: RMSNorm, SwiGLU, RoPE, no biases, untied head, 4 query heads per kv head
    "llama-tiny": dict(vocab_size=65, block_size=128, n_layer=4, n_head=8, n_kv_head=2, n_embd=256,
                       norm="rmsnorm", mlp="swiglu", position="rope", bias=False, tie_embeddings=False),
}


# ---- the model section of a run's settings ---------------------------------------------------

@dataclass(frozen=True)
class ModelSettings:
    """A preset, then any field overridden (None = the preset's value); see the module docstring."""

    preset: str = setting("baby", "model shape to start from; the model settings below override it")
    n_layer: int | None = setting(None, "transformer blocks")
    n_head: int | None = setting(None, "attention heads")
    n_kv_head: int | None = setting(None, "key/value heads (grouped-query attention)")
    n_embd: int | None = setting(None, "residual width")
    block_size: int | None = setting(None, "context length in tokens")
    dropout: float | None = setting(None, "dropout probability")
    norm: str | None = setting(None, "layernorm or rmsnorm")
    mlp: str | None = setting(None, "gelu or swiglu")
    position: str | None = setting(None, "learned or rope")
    rope_theta: float | None = setting(None, "RoPE base")
    bias: bool | None = setting(None, "biases in linear layers and norms (true/false)")
    tie_embeddings: bool | None = setting(None, "share the token embedding with the output head (true/false)")

    def __post_init__(self):
        check(self, "preset", lambda v: v in _PRESETS, f"must be one of {', '.join(_PRESETS)}")
        for name in ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size"):
            check(self, name, lambda v: v is None or is_positive_int(v), "must be a positive integer")
        check(self, "dropout", lambda v: v is None or (is_number(v) and 0 <= v < 1), "must be in [0, 1)")
        check(self, "rope_theta", lambda v: v is None or (is_number(v) and v > 0), "must be positive (e.g. 10000)")
        for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("position", POSITIONS)):
            check(self, name, lambda v: v is None or v in allowed, f"must be one of {', '.join(allowed)}")
        for name in ("bias", "tie_embeddings"):
            check(self, name, lambda v: v is None or isinstance(v, bool), "must be true or false")
        self.config(_PRESETS[self.preset]["vocab_size"])   # a combination that makes no model: refused now

    def overrides(self) -> dict:
        """The fields set (not None), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "preset" and getattr(self, f.name) is not None}

    def config(self, vocab_size: int) -> GPTConfig:
        """The preset with every field set here, and the tokenizer's vocab size; a ConfigError in the
        flags' terms when they make no model."""
        try:
            return GPTConfig.preset(self.preset, vocab_size=vocab_size, **self.overrides())
        except ValueError as error:
            given = " ".join([f"--preset {self.preset}"] + [f"{flag(k)} {v}" for k, v in self.overrides().items()])
            message = re.sub(r"\b([a-z_]+)=", lambda m: flag(m.group(1)) + " " if m.group(1) in MODEL_FIELDS
                             else m.group(0), str(error).removeprefix("GPTConfig: "))
            raise ConfigError(f"{given}: {message}") from None


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSettings) if f.name != "preset")   # the overrides


# ---- token ids -------------------------------------------------------------------------------

def check_token_ids(ids, vocab_size: int) -> None:
    """A ValueError naming the first id of the integer array `ids` outside [0, vocab_size).

    Free on host ids; on device ids it costs one copy of two numbers to the host (check ids
    before moving them, as as_token_ids does).
    """
    if ids.size:
        low, high = (int(v) for v in backend.read_scalars(ids.min(), ids.max()))
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token id {low if low < 0 else high} is outside the vocabulary [0, {vocab_size}) "
                             f"(vocab_size={vocab_size}); check the tokenizer matches the model")


def as_token_ids(idx, config: GPTConfig, device: str, start_pos: int = 0):
    """idx (a list, NumPy/CuPy array or Tensor of shape (B, T)) as an integer xp array on `device`,
    or an error naming the problem: its shape, dtype, an id outside the vocabulary, or positions
    start_pos .. start_pos + T - 1 past block_size.

    Host ids are checked on the host, then moved: a training step's ids (from the batch
    sampler) cost no copy back from the device.
    """
    ids = idx.data if isinstance(idx, Tensor) else idx
    ids = ids if hasattr(ids, "shape") else np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"idx must have shape (B, T), got shape {tuple(ids.shape)}; "
                         "for a single sequence use idx[None, :]")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"idx must hold integer token ids, got dtype {ids.dtype}")
    T = ids.shape[1]
    check_token_ids(ids, config.vocab_size)
    if start_pos < 0 or start_pos + T > config.block_size:
        raise ValueError(f"a sequence of {T} tokens starting at position {start_pos} exceeds "
                         f"block_size={config.block_size}; crop the input to its last "
                         f"{config.block_size} tokens (generate() does this for you)")
    return backend.to_device(ids, device)
