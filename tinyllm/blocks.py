"""The layers of a transformer block: CausalSelfAttention, MLP, Block, and the norm a config picks.

Every block is pre-norm: `x = x + attn(norm1(x)); x = x + mlp(norm2(x))`.

    attn.c_attn   one projection to [q heads | k heads | v heads]   ((nh + 2 nkv) hs, C)
    attn.c_proj   the heads back to the residual stream              (C, C)
    mlp.c_fc      (H, C) for gelu; (2H, C) for swiglu, rows [gate | up]
    mlp.activation  nn.GELU("tanh") or nn.SwiGLU(): a module of its own, so it can be swapped
    mlp.c_proj    (C, H)

Each module is built from the config alone; the weights' generator, dtype and device and the
dropout masks are the build context's (tinyllm/nn.py `build`, which GPT opens).

One forward per module, on Tensors: what training and every full forward pass run.
Decoding with a KV cache (tinyllm/decode.py) walks these same modules and runs their layers'
autograd Functions on raw arrays (`array_forward`, tinyllm/nn.py), one new position at a
time; nothing here knows about the cache. The MLP's activation is whatever module (or function on Tensors) `mlp.activation`
holds: replacing it changes training and generation alike, because decoding runs an
activation it does not know through that activation's own forward.

Left out: attention and MLP variants beyond the GPT-2 and Llama families (ALiBi, MoE,
parallel attention and MLP, sliding windows).
"""
from __future__ import annotations

import math

from autograd import functional as F
from autograd.tensor import Tensor

from . import nn
from .config import GPTConfig


def make_norm(config: GPTConfig) -> nn.Module:
    """The norm the config names: nn.LayerNorm (with a bias when config.bias) or nn.RMSNorm."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with grouped-query kv heads and optional RoPE."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        sizes = config.resolved()
        self.n_head, self.n_kv_head, self.head_size = sizes.n_head, sizes.n_kv_head, sizes.head_size
        self.rope_theta = config.rope_theta if config.position == "rope" else None   # None: no rotation
        self.scale = 1.0 / math.sqrt(self.head_size)                          # scores = q k^T / sqrt(hs)
        self.dropout_p = config.dropout                                      # on the attention weights
        qkv_out = (self.n_head + 2 * self.n_kv_head) * self.head_size
        self.c_attn = nn.Linear(config.n_embd, qkv_out, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias, std=nn.residual_std(config.n_layer))
        self.masks = nn.current_build().masks
        self.weights_site = self.masks.new_site()                            # the attention weights' masks
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_size
        qkv = self.c_attn(x)                                                  # (B, T, (nh + 2 nkv) hs)
        p = self.dropout_p if self.training else 0.0
        generator = self.masks.source(self.weights_site) if p else None       # a DropoutKey or a Generator
        if self.rope_theta is None:
            # learned positions: attention straight from qkv to merged heads (one op)
            y = F.packed_self_attention(qkv, nh, nkv, dropout_p=p, generator=generator)   # (B, T, C)
            return self.resid_dropout(self.c_proj(y))
        heads = qkv.reshape(B, T, nh + 2 * nkv, hs).transpose(1, 2)           # (B, nh + 2 nkv, T, hs)
        q = F.rope(heads[:, :nh], theta=self.rope_theta)                      # (B, nh, T, hs)
        k = F.rope(heads[:, nh:nh + nkv], theta=self.rope_theta)              # (B, nkv, T, hs)
        v = heads[:, nh + nkv:]                                               # (B, nkv, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, causal=True, dropout_p=p, scale=self.scale,
                                           generator=generator)               # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)                                # (B, T, nh hs)
        return self.resid_dropout(self.c_proj(y))

    def extra_repr(self) -> str:
        rope = "" if self.rope_theta is None else f", rope_theta={self.rope_theta}"
        return f"n_head={self.n_head}, n_kv_head={self.n_kv_head}, head_size={self.head_size}{rope}"


class MLP(nn.Module):
    """The feed-forward layer: c_proj(activation(c_fc(x))), with activation gelu, or SwiGLU's
    silu(gate) * up on a c_fc whose rows are [gate | up]."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.resolved().mlp_hidden
        fc_out = 2 * hidden if config.mlp == "swiglu" else hidden
        self.c_fc = nn.Linear(config.n_embd, fc_out, bias=config.bias)
        self.activation = nn.SwiGLU() if config.mlp == "swiglu" else nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias, std=nn.residual_std(config.n_layer))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)                                                      # (B, T, H) or (B, T, 2H)
        return self.dropout(self.c_proj(self.activation(h)))                  # (B, T, H) -> (B, T, C)

    def array_forward(self, x):
        """On raw arrays (decoding, eval mode: no dropout): each part's own array forward."""
        return nn.run_on_array(self.c_proj, nn.run_on_array(self.activation, nn.run_on_array(self.c_fc, x)))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
