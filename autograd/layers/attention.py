"""Scaled dot-product attention with grouped-query heads, masks and dropout; hand-derived backward.

Forward, per batch and head (docs/derivations/attention.md):

    S = Q K^T * scale              scores,  (T, hs) @ (hs, Tk) -> (T, Tk)
    P = softmax(S + masks)         masked entries are -inf, so their weight is exactly 0
    O = (P * M) V                  M: dropout's keep mask / (1 - p) (all ones without dropout)

Backward, with G = dO:

    dV = (P * M)^T G                                          term 1
    dP = (G V^T) * M                                          term 2
    dS = P * (dP - rowsum(dP * P)),  rowsum(dP * P) = rowsum(G * O)   term 3 (softmax backward)
    dQ = dS K * scale,   dK = dS^T Q * scale                  term 4

rowsum(dP * P) = rowsum(G * O) (as in FlashAttention) turns a (T, Tk) reduction into a
(T, hs) one and needs no second (T, Tk) temporary. Saved: P (the one (B, nh, T, Tk)
buffer), the dropout mask when there is one, Q * scale, K, V and O (references or (T, hs)
sized). Backward works in place in the single (B, nh, T, Tk) buffer dP it owns.

Grouped-query attention: the n_rep = nh / nkv query heads sharing kv head j (heads j*n_rep ..
j*n_rep + n_rep - 1) are reshaped to (B, nkv, n_rep*T, hs): one (n_rep*T, hs) block against that
head's keys; the kv heads are never copied, and dK, dV sum over the group automatically inside
the matmul. Names as in docs/derivations/: Tk is the key count (T_k), n_rep the query heads per
kv head (n_rep), G = dO the upstream gradient (g).

A query row with no allowed key (a fully masked padding row) has P = 0: output 0 and zero
gradient, never NaN.

Causal self-attention over long sequences (BlockCausalAttentionFunction) cuts the queries
into blocks and gives block [a, b) only the keys [0, b): the scores above the diagonal are
never computed, exponentiated or multiplied, which saves (n - 1) / 2n of the work for n
blocks (3/8 at n = 4). Each block is the math above with the keys truncated; dK and dV add up
over the blocks that see each key.

Left out: online-softmax (flash) tiling over keys, attention biases (ALiBi),
cross-attention-specific masks.
"""
from __future__ import annotations

import functools

import numpy as np

from ..backend import get_array_module
from ..function import Function


def masked_softmax_(scores, allowed, causal: bool = False):
    """softmax over the last axis of `scores`, in place, with -inf where `allowed` is False.

    scores: (B, nh, T, Tk) float; allowed: bool broadcastable to it, or None (all allowed).
    Rows with no allowed entry become all zeros. causal=True says `allowed` is causal_mask(T, Tk),
    whose every row allows a key: its cached complement is used and no row is checked for death.
    """
    xp = get_array_module(scores)
    if allowed is not None:
        xp.copyto(scores, -np.inf, where=_causal_masks(*scores.shape[-2:], xp)[1] if causal else ~allowed)
    row_max = scores.max(axis=-1, keepdims=True)                   # (B, nh, T, 1)
    dead_rows_possible = allowed is not None and not causal
    if dead_rows_possible:
        row_max[~xp.isfinite(row_max)] = 0                         # dead rows: exp(-inf - 0) = 0
    scores -= row_max
    xp.exp(scores, out=scores)
    row_sum = scores.sum(axis=-1, keepdims=True)                   # (B, nh, T, 1)
    if dead_rows_possible:
        row_sum[row_sum == 0] = 1                                  # dead rows stay 0, not 0/0
    scores /= row_sum
    return scores


def causal_mask(T: int, Tk: int, xp=np):
    """(T, Tk) booleans, True where query i (the last T of Tk positions) may see key j <= Tk - T + i.

    Cached per (T, Tk, xp) and read-only: the block path asks for the same masks every layer and step.
    """
    return _causal_masks(T, Tk, xp)[0]


@functools.lru_cache(maxsize=256)
def _causal_masks(T: int, Tk: int, xp) -> tuple:
    """(allowed, its complement) for causal_mask, made once."""
    allowed = xp.tril(xp.ones((T, Tk), dtype=bool), k=Tk - T)
    masks = (allowed, ~allowed)
    for mask in masks:
        if type(mask) is np.ndarray:
            mask.setflags(write=False)
    return masks


def attention_probs(q_scaled, k, allowed, causal: bool = False):
    """P = softmax(q_scaled k^T) over allowed keys: (B, nh, T, hs), (B, nkv, Tk, hs) -> (B, nh, T, Tk).

    causal=True: `allowed` is causal_mask(T, Tk) (masked_softmax_ takes its shortcut)."""
    B, nh, T, hs = q_scaled.shape
    nkv, Tk = k.shape[1], k.shape[2]
    q_groups = q_scaled.reshape(B, nkv, (nh // nkv) * T, hs)      # (B, nkv, n_rep*T, hs)
    scores = q_groups @ k.swapaxes(-1, -2)                         # (B, nkv, n_rep*T, hs) @ (B, nkv, hs, Tk)
    return masked_softmax_(scores.reshape(B, nh, T, Tk), allowed, causal)


class ScaledDotProductAttentionFunction(Function):
    def forward(self, q, k, v, allowed=None, scale=1.0, keep_scaled=None):
        B, nh, T, hs = q.shape
        nkv, Tk = k.shape[1], k.shape[2]
        n_rep = nh // nkv
        xp = get_array_module(q)
        q_scaled = xp.empty(q.shape, dtype=q.dtype)                # (B, nh, T, hs), C-contiguous even when q is a
        xp.multiply(q, q.dtype.type(scale), out=q_scaled)          # strided view, so the group reshape is free
        probs = attention_probs(q_scaled, k, allowed)              # (B, nh, T, Tk)
        weights = probs if keep_scaled is None else probs * keep_scaled
        out = weights.reshape(B, nkv, n_rep * T, Tk) @ v           # (B, nkv, n_rep*T, Tk) @ (B, nkv, Tk, hs)
        out = out.reshape(B, nh, T, hs)
        self.q_scaled, self.k, self.v, self.probs, self.keep_scaled, self.out = q_scaled, k, v, probs, keep_scaled, out
        self.scale = scale
        return out

    def backward(self, grad):
        xp = get_array_module(grad)
        probs, keep = self.probs, self.keep_scaled
        B, nh, T, Tk = probs.shape
        nkv, hs = self.k.shape[1], self.k.shape[3]
        rep_T = (nh // nkv) * T
        grad_groups = xp.ascontiguousarray(grad).reshape(B, nkv, rep_T, hs)   # (B, nkv, n_rep*T, hs)
        dq = dk = dv = None
        if self.needs_input_grad[2]:
            weights = probs if keep is None else probs * keep
            # term 1: dV = (P * M)^T dO, summed over the n_rep query heads of each kv head
            dv = weights.reshape(B, nkv, rep_T, Tk).swapaxes(-1, -2) @ grad_groups   # (B, nkv, Tk, n_rep*T) @ (B, nkv, n_rep*T, hs)
            del weights
        if self.needs_input_grad[0] or self.needs_input_grad[1]:
            dp = grad_groups @ self.v.swapaxes(-1, -2)             # term 2: dP = dO V^T, (B, nkv, n_rep*T, Tk)
            dp = dp.reshape(B, nh, T, Tk)
            if keep is not None:
                dp *= keep
            # term 3: dS = P * (dP - rowsum(dP * P)), rowsum(dP * P) = rowsum(dO * O)
            dp -= xp.einsum("bhtd,bhtd->bht", grad, self.out)[..., None]
            dp *= probs
            ds = dp.reshape(B, nkv, rep_T, Tk)
            scale = grad.dtype.type(self.scale)
            if self.needs_input_grad[0]:
                dq = ds @ self.k                                   # term 4: dQ = dS K * scale
                dq *= scale
                dq = dq.reshape(B, nh, T, hs)
            if self.needs_input_grad[1]:
                dk = ds.swapaxes(-1, -2) @ self.q_scaled.reshape(B, nkv, rep_T, hs)   # dK = dS^T (Q * scale)
        return dq, dk, dv


class BlockCausalAttentionFunction(Function):
    """Causal self-attention (T queries on the same T keys) computed in `blocks` query blocks.

    Query block [a, b) attends to keys [0, b) under the mask key j <= query i; the result
    equals ScaledDotProductAttentionFunction with the (T, T) causal mask (to rounding: the dK and dV
    sums are split at block edges). Same inputs, saved state and terms as that Function.
    """

    def forward(self, q, k, v, blocks=2, scale=1.0, keep_scaled=None):
        B, nh, T, hs = q.shape
        nkv = k.shape[1]
        n_rep = nh // nkv
        xp = get_array_module(q)
        q_scaled = xp.empty(q.shape, dtype=q.dtype)                # (B, nh, T, hs)
        xp.multiply(q, q.dtype.type(scale), out=q_scaled)
        out = xp.empty((B, nh, T, hs), dtype=q.dtype)
        self.bounds = [(T * i // blocks, T * (i + 1) // blocks) for i in range(blocks)]
        self.probs = []
        for a, b in self.bounds:
            c = b - a
            # queries [a, b) on keys [0, b) only, under key j <= a + i
            probs = attention_probs(q_scaled[:, :, a:b], k[:, :, :b], causal_mask(c, b, xp), causal=True)  # (B, nh, c, b)
            weights = probs if keep_scaled is None else probs * keep_scaled[:, :, a:b, :b]
            out[:, :, a:b] = (weights.reshape(B, nkv, n_rep * c, b) @ v[:, :, :b]).reshape(B, nh, c, hs)
            self.probs.append(probs)                               # (B, nh, c, b)
        self.q_scaled, self.k, self.v, self.keep_scaled, self.out = q_scaled, k, v, keep_scaled, out
        self.scale = scale
        return out

    def backward(self, grad):
        xp = get_array_module(grad)
        q_scaled, k, v, keep = self.q_scaled, self.k, self.v, self.keep_scaled
        B, nh, T, hs = q_scaled.shape
        nkv = k.shape[1]
        n_rep = nh // nkv
        need_q, need_k, need_v = self.needs_input_grad[:3]
        dq = xp.empty(q_scaled.shape, dtype=grad.dtype) if need_q else None
        dk = xp.zeros(k.shape, dtype=grad.dtype) if need_k else None
        dv = xp.zeros(v.shape, dtype=grad.dtype) if need_v else None
        rowdot = xp.einsum("bhtd,bhtd->bht", grad, self.out)[..., None]   # rowsum(dO * O), (B, nh, T, 1)
        scale = grad.dtype.type(self.scale)
        for (a, b), probs in zip(self.bounds, self.probs):
            c = b - a
            gb = grad[:, :, a:b].reshape(B, nkv, n_rep * c, hs)     # (B, nkv, n_rep*c, hs)
            keep_b = None if keep is None else keep[:, :, a:b, :b]
            if need_v:                                             # term 1: dV[:b] += (P * M)^T dO
                weights = probs if keep_b is None else probs * keep_b
                dv[:, :, :b] += weights.reshape(B, nkv, n_rep * c, b).swapaxes(-1, -2) @ gb
            if need_q or need_k:
                dp = (gb @ v[:, :, :b].swapaxes(-1, -2)).reshape(B, nh, c, b)   # term 2: dP = dO V^T
                if keep_b is not None:
                    dp *= keep_b
                dp -= rowdot[:, :, a:b]                            # term 3: dS = P * (dP - rowsum(dO * O))
                dp *= probs
                ds = dp.reshape(B, nkv, n_rep * c, b)
                if need_q:                                         # term 4: dQ = dS K * scale
                    dq[:, :, a:b] = (ds @ k[:, :, :b]).reshape(B, nh, c, hs) * scale
                if need_k:                                         # dK[:b] += dS^T (Q * scale)
                    dk[:, :, :b] += ds.swapaxes(-1, -2) @ q_scaled[:, :, a:b].reshape(B, nkv, n_rep * c, hs)
        return dq, dk, dv


class PackedSelfAttentionFunction(Function):
    """Self-attention from the fused QKV projection straight to the merged heads.

        qkv (B, T, (nh + 2 nkv) hs)  ->  y (B, T, nh hs)

    The same math as ScaledDotProductAttentionFunction, which it runs on views of `qkv`; what it
    saves is the graph around it: no slicing of q, k, v (whose backward would scatter three
    zero-filled (B, T, W) arrays and add them), no transposes or reshapes of the heads.
    Backward writes dq, dk, dv straight into their places in one (B, T, W) gradient.
    """

    def forward(self, qkv, n_head=1, n_kv_head=1, allowed=None, scale=1.0, keep_scaled=None, causal_blocks=None):
        B, T, W = qkv.shape
        nh, nkv = n_head, n_kv_head
        hs = W // (nh + 2 * nkv)
        heads = qkv.reshape(B, T, nh + 2 * nkv, hs).transpose(0, 2, 1, 3)    # (B, nh + 2 nkv, T, hs), a view
        q, k, v = heads[:, :nh], heads[:, nh:nh + nkv], heads[:, nh + nkv:]
        if causal_blocks:                                                    # causal, in query blocks
            self.inner = BlockCausalAttentionFunction()
            self.inner.needs_input_grad = (self.needs_input_grad[0],) * 3
            out = self.inner.forward(q, k, v, blocks=causal_blocks, scale=scale, keep_scaled=keep_scaled)
        else:
            self.inner = ScaledDotProductAttentionFunction()
            self.inner.needs_input_grad = (self.needs_input_grad[0],) * 3
            out = self.inner.forward(q, k, v, allowed=allowed, scale=scale, keep_scaled=keep_scaled)  # (B, nh, T, hs)
        self.heads_shape = (B, T, nh, nkv, hs)
        return out.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)              # (B, T, nh, hs) -> (B, T, C)

    def backward(self, grad):
        xp = get_array_module(grad)
        B, T, nh, nkv, hs = self.heads_shape
        dq, dk, dv = self.inner.backward(grad.reshape(B, T, nh, hs).transpose(0, 2, 1, 3))  # (B, nh, T, hs)
        dqkv = xp.empty((B, T, (nh + 2 * nkv) * hs), dtype=grad.dtype)
        dheads = dqkv.reshape(B, T, nh + 2 * nkv, hs).transpose(0, 2, 1, 3)   # a view into dqkv
        dheads[:, :nh] = dq
        dheads[:, nh:nh + nkv] = dk
        dheads[:, nh + nkv:] = dv
        return dqkv
