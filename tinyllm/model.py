"""The GPT model: GPTConfig, CausalSelfAttention, MLP, Block, GPT (GPT-2 and Llama families).

One code path covers both families; the config picks the parts:

    GPT-2:  layernorm, gelu MLP,   learned positions, biases, tied head
    Llama:  rmsnorm,   SwiGLU MLP, rotary positions,  no biases, untied head, grouped-query kv heads

Every block is pre-norm: `x = x + attn(norm1(x)); x = x + mlp(norm2(x))`.

Parameter names (the state_dict keys, stable; tinyllm/pretrained.py maps them to Hugging Face's):

    wte.weight                      (V, C)          token embedding
    wpe.weight                      (block_size, C) learned positions only
    blocks.N.norm1.weight [.bias]   (C,)
    blocks.N.attn.c_attn.weight     ((nh + 2 nkv) hs, C)   rows: [q heads | k heads | v heads]
    blocks.N.attn.c_attn.bias       biases only when config.bias
    blocks.N.attn.c_proj.weight     (C, C)
    blocks.N.norm2.weight [.bias]   (C,)
    blocks.N.mlp.c_fc.weight        (H, C) for gelu; (2H, C) for swiglu, rows: [gate | up]
    blocks.N.mlp.c_proj.weight      (C, H)
    norm_f.weight [.bias]           (C,)
    lm_head.weight                  (V, C)          absent when tie_embeddings (the head uses wte.weight)

The model is decomposable for pipeline parallelism: `forward` is exactly
`head(blocks(embed(idx)))` then `loss`, and each piece is public:

    x = model.embed(idx, start_pos=0)                       # (B, T, C)
    for block in model.blocks: x = block(x, kv_cache_layer, start_pos)
    logits = model.head(x)                                  # (B, T, V)
    loss = model.loss(logits, targets)

Inference path: `model.forward_arrays(idx, kv_cache=None, last_only=False)` returns the
logits as a raw xp array from the same layers, in eval mode, with no Tensors and no graph:
each module's `forward_arrays` calls the same autograd Functions' `forward` as its
`forward` (one source per formula) and skips the per-op bookkeeping, which dominates a
KV-cache decoding step of one position. Tests check it equals `forward` to 1e-10 in float64.

One-row decoding: `model.forward_row(token, kv_cache)` is that step for a batch of one
sequence, on vectors: x is (C,), norms use scalar statistics (`layer_norm_row`), linear
layers are matrix-vector products. A KV-cache step of one position is bound by NumPy's
per-call cost (about 1 us for an op on two (C,) vectors, 2 us when one side broadcasts, as
every (1, 1, C) op with per-row statistics does), so the same math on vectors cuts a cached
token's time by about a third (docs/model.md). Tests check it equals `forward` to 1e-10 in
float64 for both families.

Left out: attention and MLP variants beyond these two families (ALiBi, MoE, parallel
blocks, rope scaling), mixed precision, weight sharing beyond the tied head.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from autograd import backend, ops
from autograd import functional as F
from autograd.layers.activation import GeluTanhFunction
from autograd.layers.attention import ScaledDotProductAttentionFunction
from autograd.layers.linear import LinearFunction
from autograd.layers.rope import RopeFunction
from autograd.layers.swiglu import SwiGLUFunction
from autograd.tensor import Tensor

from . import nn

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
        if self.n_head % self.num_kv_heads:
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

    # ---- derived sizes -----------------------------------------------------------------
    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def num_kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def mlp_hidden_size(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return 4 * self.n_embd if self.mlp == "gelu" else llama_mlp_hidden(self.n_embd)

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


def check_token_ids(ids, vocab_size: int) -> None:
    """A ValueError naming the first id of the integer array `ids` outside [0, vocab_size)."""
    if ids.size:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token id {low if low < 0 else high} is outside the vocabulary [0, {vocab_size}) "
                             f"(vocab_size={vocab_size}); check the tokenizer matches the model")


# ---- layers ----------------------------------------------------------------------------------

def _make_norm(config: GPTConfig, dtype, device) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps, dtype=dtype, device=device)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias, dtype=dtype, device=device)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with grouped-query kv heads and optional RoPE."""

    def __init__(self, config: GPTConfig, init_rng, generator: nn.SharedGenerator, dtype, device):
        super().__init__()
        self.config = config
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.num_kv_heads, config.head_size
        self.scale = 1.0 / math.sqrt(self.head_size)                          # scores = q k^T / sqrt(hs)
        qkv_out = (self.n_head + 2 * self.n_kv_head) * self.head_size
        self.c_attn = nn.Linear(config.n_embd, qkv_out, bias=config.bias, init_rng=init_rng,
                                dtype=dtype, device=device)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias, init_rng=init_rng,
                                std=nn.residual_std(config.n_layer), dtype=dtype, device=device)
        self.resid_dropout = nn.Dropout(config.dropout, generator)
        self.generator = generator

    def forward(self, x: Tensor, kv_cache_layer=None, start_pos: int = 0) -> Tensor:
        B, T, C = x.shape
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_size
        qkv = self.c_attn(x)                                                  # (B, T, (nh + 2 nkv) hs)
        p = self.config.dropout if self.training else 0.0
        if kv_cache_layer is None and self.config.position != "rope":
            # Training and full forward: attention straight from qkv to merged heads (one op).
            y = F.packed_self_attention(qkv, nh, nkv, dropout_p=p,
                                        generator=self.generator.generator if p else None)  # (B, T, C)
            return self.resid_dropout(self.c_proj(y))
        heads = qkv.reshape(B, T, nh + 2 * nkv, hs).transpose(1, 2)           # (B, nh + 2 nkv, T, hs)
        q = heads[:, :nh]                                                     # (B, nh, T, hs)
        k = heads[:, nh:nh + nkv]                                             # (B, nkv, T, hs)
        v = heads[:, nh + nkv:]                                               # (B, nkv, T, hs)
        if self.config.position == "rope":
            q = F.rope(q, theta=self.config.rope_theta, offset=start_pos)
            k = F.rope(k, theta=self.config.rope_theta, offset=start_pos)
        if kv_cache_layer is not None:
            # keys and values of earlier positions come from the cache: (B, nkv, start_pos + T, hs)
            k, v = kv_cache_layer.append(k, v, start_pos)
        # one query (a decoding step) may attend every cached key: no causal mask to build
        y = F.scaled_dot_product_attention(q, k, v, causal=T > 1, dropout_p=p, scale=self.scale,
                                           generator=self.generator.generator if p else None)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)                                # (B, T, nh hs)
        return self.resid_dropout(self.c_proj(y))

    def forward_arrays(self, x, kv_cache_layer=None, start_pos: int = 0):
        """forward on a raw array (B, T, C), eval mode (module docstring: inference path)."""
        B, T, C = x.shape
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_size
        qkv = self.c_attn.forward_arrays(x)                                   # (B, T, (nh + 2 nkv) hs)
        heads = qkv.reshape(B, T, nh + 2 * nkv, hs).transpose(0, 2, 1, 3)    # (B, nh + 2 nkv, T, hs)
        q, k, v = heads[:, :nh], heads[:, nh:nh + nkv], heads[:, nh + nkv:]
        if self.config.position == "rope":
            q = RopeFunction.forward_only(q, theta=self.config.rope_theta, offset=start_pos)
            k = RopeFunction.forward_only(k, theta=self.config.rope_theta, offset=start_pos)
        if kv_cache_layer is not None:
            k, v = kv_cache_layer.append_arrays(k, v, start_pos)              # (B, nkv, start_pos + T, hs)
        if T == 1:
            # a decoding step: the one query may attend every cached key, so there is no mask
            y = ScaledDotProductAttentionFunction.forward_only(q, k, v, scale=self.scale)
        else:
            # several positions (a prompt, a window refill): F builds the causal mask as forward's does
            y = F.scaled_dot_product_attention(Tensor.constant(q), Tensor.constant(k),
                                               Tensor.constant(v), causal=True, scale=self.scale).data
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)                          # (B, T, nh hs)
        return self.c_proj.forward_arrays(y)

    def forward_row(self, x, kv_cache_layer, pos: int):
        """One new position of one sequence, x (C,), attending to the cached keys (module docstring)."""
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_size
        heads = self.c_attn.forward_row(x).reshape(nh + 2 * nkv, 1, hs)      # (nh + 2 nkv, 1, hs)
        q, k, v = heads[:nh], heads[nh:nh + nkv], heads[nh + nkv:]
        if self.config.position == "rope":
            q = RopeFunction.forward_only(q, theta=self.config.rope_theta, offset=pos)
            k = RopeFunction.forward_only(k, theta=self.config.rope_theta, offset=pos)
        keys, values = kv_cache_layer.append_arrays(k[None], v[None], pos)    # (1, nkv, pos + 1, hs) each
        y = ScaledDotProductAttentionFunction.forward_only(q[None], keys, values, scale=self.scale)  # (1, nh, 1, hs)
        return self.c_proj.forward_row(y.reshape(-1))                         # (nh hs,) -> (C,)


class MLP(nn.Module):
    """The feed-forward layer: c_proj(gelu(c_fc(x))), or SwiGLU: c_proj(silu(gate) * up)
    with gate and up computed by one fused c_fc (rows [gate | up])."""

    def __init__(self, config: GPTConfig, init_rng, generator: nn.SharedGenerator, dtype, device):
        super().__init__()
        self.kind = config.mlp
        self.hidden = config.mlp_hidden_size
        fc_out = 2 * self.hidden if self.kind == "swiglu" else self.hidden
        self.c_fc = nn.Linear(config.n_embd, fc_out, bias=config.bias, init_rng=init_rng,
                              dtype=dtype, device=device)
        self.c_proj = nn.Linear(self.hidden, config.n_embd, bias=config.bias, init_rng=init_rng,
                                std=nn.residual_std(config.n_layer), dtype=dtype, device=device)
        self.dropout = nn.Dropout(config.dropout, generator)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)                                                      # (B, T, H) or (B, T, 2H)
        if self.kind == "swiglu":
            gate, up = ops.split(h, 2, axis=-1)                               # (B, T, H) each
            h = F.swiglu(gate, up)
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))

    def forward_arrays(self, x):
        """forward on a raw array (B, T, C), eval mode (module docstring: inference path)."""
        h = self.c_fc.forward_arrays(x)                                       # (B, T, H) or (B, T, 2H)
        if self.kind == "swiglu":
            h = SwiGLUFunction.forward_only(h[..., :self.hidden], h[..., self.hidden:])   # silu(gate) * up
        else:
            h = GeluTanhFunction.forward_only(h)                                   # F.gelu(approximate="tanh")
        return self.c_proj.forward_arrays(h)

    def forward_row(self, x):
        """forward on one vector x (C,) (one-row decoding)."""
        h = self.c_fc.forward_row(x)                                          # (H,) or (2H,)
        if self.kind == "swiglu":
            h = SwiGLUFunction.forward_only(h[:self.hidden], h[self.hidden:])
        else:
            h = GeluTanhFunction.forward_only(h)
        return self.c_proj.forward_row(h)


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, config: GPTConfig, init_rng, generator: nn.SharedGenerator, dtype, device):
        super().__init__()
        self.norm1 = _make_norm(config, dtype, device)
        self.attn = CausalSelfAttention(config, init_rng, generator, dtype, device)
        self.norm2 = _make_norm(config, dtype, device)
        self.mlp = MLP(config, init_rng, generator, dtype, device)

    def forward(self, x: Tensor, kv_cache_layer=None, start_pos: int = 0) -> Tensor:
        x = x + self.attn(self.norm1(x), kv_cache_layer, start_pos)
        return x + self.mlp(self.norm2(x))

    def forward_arrays(self, x, kv_cache_layer=None, start_pos: int = 0):
        x = x + self.attn.forward_arrays(self.norm1.forward_arrays(x), kv_cache_layer, start_pos)
        return x + self.mlp.forward_arrays(self.norm2.forward_arrays(x))

    def forward_row(self, x, kv_cache_layer, pos: int):
        x = x + self.attn.forward_row(self.norm1.forward_row(x), kv_cache_layer, pos)
        return x + self.mlp.forward_row(self.norm2.forward_row(x))


# ---- the model -------------------------------------------------------------------------------

class GPT(nn.Module):
    """A decoder-only transformer language model; see the module docstring for the layout.

    GPT(config, seed=0, dtype="float32", device="cpu"): the same seed gives the same weights
    (GPT-2 initialisation: N(0, 0.02) weights, residual projections N(0, 0.02 / sqrt(2 n_layer)),
    zero biases, unit norms) and the same dropout masks.
    """

    def __init__(self, config: GPTConfig, seed: int = 0, dtype="float32", device: str = "cpu"):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        dtype = nn.check_dtype(dtype)
        backend.check_device(device)
        self.config = config
        init_rng = np.random.default_rng(seed)
        self.generator = nn.SharedGenerator(seed, device)   # dropout masks
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, init_rng=init_rng, dtype=dtype, device=device)
        if config.position == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd, init_rng=init_rng, dtype=dtype, device=device)
        self.drop = nn.Dropout(config.dropout, self.generator)
        self.blocks = nn.ModuleList(Block(config, init_rng, self.generator, dtype, device)
                                    for _ in range(config.n_layer))
        self.norm_f = _make_norm(config, dtype, device)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, init_rng=init_rng,
                                     dtype=dtype, device=device)

    # ---- the pieces ------------------------------------------------------------------------
    def embed(self, idx, start_pos: int = 0) -> Tensor:
        """Token (and, for learned positions, position) embeddings: (B, T) ids -> (B, T, C).

        start_pos: the position of idx[:, 0] (non-zero when decoding with a KV cache).
        """
        ids = self._check_idx(idx, start_pos)
        x = self.wte(ids)                                                     # (B, T, C)
        if self.config.position == "learned":
            T = ids.shape[1]
            x = x + self.wpe.weight[start_pos:start_pos + T]                  # (T, C) broadcast over B
        return self.drop(x)

    def head(self, x: Tensor) -> Tensor:
        """Final norm and LM head: (B, T, C) -> logits (B, T, V)."""
        x = self.norm_f(x)
        weight = self.wte.weight if self.config.tie_embeddings else self.lm_head.weight
        return F.linear(x, weight)                                            # (B, T, C) @ (C, V)

    def loss(self, logits: Tensor, targets) -> Tensor:
        """Mean cross-entropy over positions whose target is not -100."""
        targets = targets.data if isinstance(targets, Tensor) else targets
        targets = logits.xp.asarray(targets)
        if tuple(targets.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not match the logits' positions "
                             f"{tuple(logits.shape[:-1])}; pass one target id per input position")
        return F.cross_entropy(logits, targets, ignore_index=-100)

    def forward(self, idx, targets=None, kv_cache=None):
        """idx (B, T) ids -> (logits (B, T, V), loss or None).

        kv_cache: a tinyllm.generate.KVCache; idx then continues the cached sequence (its first
        position is kv_cache.length) and the cache grows by T. Inference only: no gradient flows
        into cached keys and values.
        """
        start_pos = 0 if kv_cache is None else kv_cache.length
        if kv_cache is not None:
            kv_cache.check_compatible(self, idx)
        x = self.embed(idx, start_pos)
        for i, block in enumerate(self.blocks):
            x = block(x, None if kv_cache is None else kv_cache.layers[i], start_pos)
        logits = self.head(x)
        loss = None if targets is None else self.loss(logits, targets)
        return logits, loss

    def forward_arrays(self, idx, kv_cache=None, last_only: bool = False, validate: bool = True):
        """Logits as a raw xp array (B, T, V), or (B, 1, V) for the last position only, from the
        same layers as forward without Tensors or a graph (module docstring: inference path).

        Eval mode: with dropout > 0 the model must be in eval mode. kv_cache as in forward.
        validate=False skips the input checks, for a decoding loop that made the cache for this
        model and checked its ids once: idx must then be an integer xp array (B, T) on the
        model's device, with ids in [0, vocab_size).
        """
        self._check_inference_mode("forward_arrays")
        start_pos = 0 if kv_cache is None else kv_cache.length
        ids = idx
        if validate:
            if kv_cache is not None:
                kv_cache.check_compatible(self, idx)
            ids = self._check_idx(idx, start_pos)
        x = self.wte.forward_arrays(ids)                                      # (B, T, C)
        if self.config.position == "learned":
            x = x + self.wpe.weight.data[start_pos:start_pos + ids.shape[1]]  # (T, C) broadcast over B
        for i, block in enumerate(self.blocks):
            x = block.forward_arrays(x, None if kv_cache is None else kv_cache.layers[i], start_pos)
        if last_only:
            x = x[:, -1:]                                                     # (B, 1, C)
        x = self.norm_f.forward_arrays(x)
        weight = self.wte.weight if self.config.tie_embeddings else self.lm_head.weight
        return LinearFunction.forward_only(x, weight.data)              # (B, T, C) @ (C, V)

    def forward_row(self, token: int, kv_cache, validate: bool = True):
        """Logits (V,) for the next token after `token`, which continues the one-row sequence
        held by kv_cache (batch size 1) at position kv_cache.length; the cache grows by one.

        One-row decoding (module docstring): the layers' forwards on vectors (C,). Eval mode,
        as forward_arrays. validate=False skips the checks, for a loop that made the cache for
        this model and checks its ids itself.
        """
        c = self.config
        pos = kv_cache.length
        if validate:
            self._check_inference_mode("forward_row")
            kv_cache.check_compatible(self, np.zeros((1, 1), dtype=np.int64))
            check_token_ids(np.array([token]), c.vocab_size)
            if pos >= c.block_size:
                raise ValueError(f"the KV cache already holds block_size={c.block_size} positions; "
                                 "reset() it and refill it with a cropped context")
        x = self.wte.weight.data[token]                                       # (C,) a view: layers never write x
        if c.position == "learned":
            x = x + self.wpe.weight.data[pos]
        for block, layer in zip(self.blocks, kv_cache.layers):
            x = block.forward_row(x, layer, pos)
        x = self.norm_f.forward_row(x)
        weight = self.wte.weight if c.tie_embeddings else self.lm_head.weight
        return weight.data @ x                                                # (V, C) @ (C,)

    # ---- sampling and files ----------------------------------------------------------------
    def generate(self, idx, max_new_tokens: int = 100, temperature: float = 0.8, top_k: int | None = 50,
                 top_p: float | None = None, seed: int = 0, eos_id: int | None = None, use_cache: bool = True,
                 stream=None, window_keep: int | None = None):
        """Sample continuations of idx; see tinyllm.generate.generate for every argument."""
        from .generate import generate
        return generate(self, idx, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=seed, eos_id=eos_id, use_cache=use_cache, stream=stream,
                        window_keep=window_keep)

    @classmethod
    def from_pretrained(cls, path, dtype="float32", device: str = "cpu") -> "GPT":
        """A GPT from a Hugging Face directory (config.json + model.safetensors, GPT-2 or Llama)."""
        from .pretrained import load_pretrained
        return load_pretrained(cls, path, dtype=dtype, device=device)

    def save_pretrained(self, path) -> None:
        """Write config.json + model.safetensors in the Hugging Face layout (atomically)."""
        from .pretrained import save_pretrained
        save_pretrained(self, path)

    # ---- device, dtype, checks -------------------------------------------------------------
    def to(self, device: str) -> "GPT":
        super().to(device)
        self.generator.to(device)
        return self

    def _check_inference_mode(self, who: str) -> None:
        """The inference paths draw no dropout masks: with dropout > 0 the model must be in eval mode."""
        if self.training and self.config.dropout > 0:
            raise RuntimeError(f"{who} is inference only (no dropout), but the model is in training "
                               f"mode with dropout={self.config.dropout}; call model.eval() first")

    def _check_idx(self, idx, start_pos: int):
        """idx as an integer xp array (B, T) on the model's device, or a clear ValueError."""
        ids = idx.data if isinstance(idx, Tensor) else idx
        ids = backend.to_device(ids if hasattr(ids, "shape") else np.asarray(ids), self.wte.weight.device)
        if ids.ndim != 2:
            raise ValueError(f"idx must have shape (B, T), got shape {tuple(ids.shape)}; "
                             "for a single sequence use idx[None, :]")
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"idx must hold integer token ids, got dtype {ids.dtype}")
        T = ids.shape[1]
        check_token_ids(ids, self.config.vocab_size)
        if start_pos < 0 or start_pos + T > self.config.block_size:
            raise ValueError(f"a sequence of {T} tokens starting at position {start_pos} exceeds "
                             f"block_size={self.config.block_size}; crop the input to its last "
                             f"{self.config.block_size} tokens (generate() does this for you)")
        return ids

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"
