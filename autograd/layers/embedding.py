"""Embedding lookup: rows of a weight matrix picked by integer ids.

    y[b, t] = W[idx[b, t]]                 (B, T) ids, (V, C) weight -> (B, T, C)
    dW[v]   = sum over (b, t) with idx[b, t] = v of g[b, t]   (scatter-add)
(docs/derivations/embedding.md)
"""
from __future__ import annotations

from ..backend import get_array_module, scatter_add_rows
from ..function import Function


class EmbeddingFunction(Function):
    def forward(self, weight, idx):
        self.idx, self.weight_shape = idx, weight.shape
        return weight[idx]

    def backward(self, grad):
        xp = get_array_module(grad)
        C = self.weight_shape[1]
        dW = xp.zeros(self.weight_shape, dtype=grad.dtype)
        scatter_add_rows(dW, self.idx.reshape(-1), grad.reshape(-1, C))  # repeated ids accumulate
        return dW, None
