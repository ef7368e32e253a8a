"""The GPT model (GPT-2 and Llama families): embeddings, a stack of blocks, the final norm and the head.

    model = GPT(GPTConfig.preset("baby", vocab_size=65), seed=0, dtype="float32")
    logits, loss = model(idx, targets)              # idx, targets: int arrays (B, T)
    out = model.generate(idx, max_new_tokens=100)   # tinyllm.generate

The config picks the family (tinyllm/config.py); the blocks are tinyllm/blocks.py. Parameter
names (the state_dict keys, stable; tinyllm/pretrained.py maps them to Hugging Face's):

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

    x = model.embed(idx)                                    # (B, T, C)
    for block in model.blocks: x = block(x)
    logits = model.head(x)                                  # (B, T, V)
    loss = model.loss(logits, targets)

One forward: `forward` and its pieces are the only forward pass in the model, on Tensors,
for training and full recomputes alike. It takes no KV cache: cached decoding is
tinyllm/decode.py, which walks these same modules and runs their layers' Functions on raw
arrays (tests hold it to this forward to 1e-10 in float64 at every step), and sampling is
tinyllm/generate.py. GPT.generate, from_pretrained and save_pretrained import those files
when called; none of them imports this one, so no two files import each other.

`from tinyllm.model import GPTConfig` (and CausalSelfAttention, MLP, Block) keep working:
they are re-exported from tinyllm/config.py and tinyllm/blocks.py.

Left out: attention and MLP variants beyond these two families (ALiBi, MoE, parallel
blocks, rope scaling), mixed precision, weight sharing beyond the tied head.
"""
from __future__ import annotations

import numpy as np

from autograd import functional as F
from autograd.tensor import Tensor

from . import nn
from .blocks import MLP, Block, CausalSelfAttention, make_norm
from .config import GPTConfig, as_token_ids, check_token_ids, llama_mlp_hidden, unknown_fields

__all__ = ["GPT", "GPTConfig", "CausalSelfAttention", "MLP", "Block", "check_token_ids", "llama_mlp_hidden",
           "unknown_fields"]


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
        self.config = config
        with nn.build(seed, dtype, device) as made:   # one generator, in this order: the weights repeat
            self.dropout_masks = made.masks            # keyed by (seed, step, layer, row, position)
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
            if config.position == "learned":
                self.wpe = nn.Embedding(config.block_size, config.n_embd)
            self.drop = nn.Dropout(config.dropout)
            self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
            self.norm_f = make_norm(config)
            if not config.tie_embeddings:
                self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    # ---- the pieces ------------------------------------------------------------------------
    def embed(self, idx) -> Tensor:
        """Token (and, for learned positions, position) embeddings: (B, T) ids -> (B, T, C)."""
        ids = as_token_ids(idx, self.config, self.wte.weight.device)        # checked on the host, then moved
        x = self.wte(ids, check_ids=False)                                    # (B, T, C)
        if self.config.position == "learned":
            x = x + self.wpe.weight[:ids.shape[1]]                            # (T, C) broadcast over B
        return self.drop(x)

    def head(self, x: Tensor) -> Tensor:
        """Final norm and LM head: (B, T, C) -> logits (B, T, V)."""
        x = self.norm_f(x)
        if self.config.tie_embeddings:
            return F.linear(x, self.wte.weight)                               # (B, T, C) @ (C, V)
        return self.lm_head(x)                                                # a module: LoRA can adapt it

    def loss(self, logits: Tensor, targets) -> Tensor:
        """Mean cross-entropy over positions whose target is not -100 (host targets are checked
        on the host, then moved: F.cross_entropy)."""
        targets = targets.data if isinstance(targets, Tensor) else targets
        targets = targets if hasattr(targets, "shape") else np.asarray(targets)
        if tuple(targets.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not match the logits' positions "
                             f"{tuple(logits.shape[:-1])}; pass one target id per input position")
        return F.cross_entropy(logits, targets, ignore_index=-100)

    @classmethod
    def count_parameters(cls, config: GPTConfig) -> int:
        """GPT(config).num_parameters(), from a model built on the "meta" device: shapes only, nothing
        allocated, so a config from a file is sized before anything is (tinyllm/limits.py)."""
        return cls(config, device="meta").num_parameters()

    def forward(self, idx, targets=None):
        """idx (B, T) ids -> (logits (B, T, V), loss or None)."""
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.head(x)
        loss = None if targets is None else self.loss(logits, targets)
        return logits, loss

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

    # ---- device ----------------------------------------------------------------------------
    def to(self, device: str) -> "GPT":
        super().to(device)
        self.dropout_masks.to(device)
        return self

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"
