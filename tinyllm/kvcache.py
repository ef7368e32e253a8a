"""KVCache: the keys and values of the positions a model has seen, per attention layer.

    cache = KVCache.for_model(model, batch_size=B)          # (B, nkv, L, hs) buffers per layer
    logits = decode.forward(model, prompt, cache)           # prefill: cache.length == T
    logits = decode.forward(model, next_ids, cache)         # one step: cache.length == T + 1

A decoding step feeds only the newest position; each attention layer appends its keys and
values to the preallocated buffers and attends to every position cached so far
(tinyllm/decode.py). The buffers hold raw xp arrays: decoding runs no graph.

Below the model: this file reads a model only through `model.config`, `model.dtype` and
`model.device`, and imports no part of tinyllm, so decoding and sampling can use it without
an import of the model.

Left out: paged or quantised caches, sliding the window in place (dropping the oldest
position changes every later key above the first layer; generate refills instead), one
cache shared by several models.
"""
from __future__ import annotations

import numpy as np

from autograd import backend


class KVCacheLayer:
    """The cached keys and values of one attention layer: (B, nkv, max_length, hs) each."""

    def __init__(self, batch_size: int, n_kv_head: int, max_length: int, head_size: int, dtype, xp):
        self.k = xp.zeros((batch_size, n_kv_head, max_length, head_size), dtype=dtype)
        self.v = xp.zeros_like(self.k)
        self.max_length = max_length
        self.length = 0

    def append(self, k, v, start_pos: int):
        """Store k, v (B, nkv, T, hs) at positions [length, length + T); return views of the
        buffers holding every position so far, (B, nkv, length + T, hs) each."""
        L, T = self.length, k.shape[2]
        if start_pos != L:
            raise ValueError(f"KV cache holds {L} positions but the input starts at position {start_pos}; "
                             "feed tokens in order, or reset() the cache")
        if L + T > self.max_length:
            raise ValueError(f"KV cache overflow: {L} cached + {T} new positions > block_size={self.max_length}; "
                             "reset() the cache and refill it with a cropped context")
        self.k[:, :, L:L + T] = k
        self.v[:, :, L:L + T] = v
        self.length = L + T
        return self.k[:, :, :L + T], self.v[:, :, :L + T]

    def reset(self) -> None:
        self.length = 0


class KVCache:
    """Per-layer key/value buffers for incremental decoding with one model (module docstring)."""

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, max_length: int, head_size: int,
                 dtype="float32", device: str = "cpu"):
        xp = backend.module_for(device)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.device = device
        self.layers = [KVCacheLayer(batch_size, n_kv_head, max_length, head_size, self.dtype, xp)
                       for _ in range(n_layer)]

    @classmethod
    def for_model(cls, model, batch_size: int, max_length: int | None = None) -> "KVCache":
        """A cache for `model`, holding up to max_length positions (default and at most block_size)."""
        sizes = model.config.resolved()
        max_length = sizes.block_size if max_length is None else min(max_length, sizes.block_size)
        return cls(sizes.n_layer, batch_size, sizes.n_kv_head, max_length, sizes.head_size,
                   dtype=model.dtype, device=model.device)

    @property
    def length(self) -> int:
        """Positions cached (the same in every layer between forward passes)."""
        return self.layers[0].length if self.layers else 0

    @property
    def max_length(self) -> int:
        return self.layers[0].max_length

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def check_compatible(self, model, idx) -> None:
        """A ValueError naming every way this cache does not fit `model` and the ids idx (B, T)."""
        sizes = model.config.resolved()
        shape = tuple(idx.shape) if hasattr(idx, "shape") else np.shape(idx)   # device ids: no NumPy call on them
        problems = []
        if len(self.layers) != sizes.n_layer:
            problems.append(f"{len(self.layers)} layers, the model has {sizes.n_layer}")
        if len(shape) == 2 and shape[0] != self.batch_size:
            problems.append(f"batch size {self.batch_size}, the input has {shape[0]} rows")
        if self.dtype != model.dtype:
            problems.append(f"dtype {self.dtype}, the model is {model.dtype}")
        if self.layers and (self.layers[0].k.shape[1], self.layers[0].k.shape[3]) != (sizes.n_kv_head,
                                                                                     sizes.head_size):
            problems.append(f"{self.layers[0].k.shape[1]} kv heads of size {self.layers[0].k.shape[3]}, "
                            f"the model has {sizes.n_kv_head} of size {sizes.head_size}")
        if problems:
            raise ValueError("KV cache does not fit this model: " + "; ".join(problems)
                             + "; make one with KVCache.for_model(model, batch_size)")
