"""Rotary position embedding (RoPE), "rotate_half" layout, with hand-derived backward.

Layout of GPT-NeoX and Hugging Face Llama: head dimension i in [0, hs/2) is paired with
i + hs/2, and position t rotates each pair by the angle (offset + t) * theta^(-2i/hs):

    y1 = x1 cos - x2 sin            x1 = x[..., :hs/2],  x2 = x[..., hs/2:]
    y2 = x2 cos + x1 sin
    dx1 =  g1 cos + g2 sin          (the transpose of a rotation is the inverse rotation)
    dx2 = -g1 sin + g2 cos          (docs/derivations/rope.md)

The cos/sin tables, (T, hs/2) each, are computed in float64, cast to the input's dtype and
cached per (T, hs, theta, offset, dtype, device) in a small least-recently-used cache
(KV-cache decoding asks for a new offset at every step).

Left out: the interleaved (GPT-J) layout, partial rotary dimensions, and scaled
(NTK/YaRN) frequencies.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..backend import get_array_module
from ..function import Function

_TABLE_CACHE: OrderedDict = OrderedDict()   # (T, hs, theta, offset, dtype, device) -> (cos, sin)
_TABLE_CACHE_SIZE = 64


def rope_tables(T: int, hs: int, theta: float, offset: int, dtype, xp):
    """cos and sin of the rotation angles, (T, hs/2) each: angle[t, i] = (offset + t) theta^(-2i/hs)."""
    device = "cuda" if xp is not np else "cpu"
    key = (int(T), int(hs), float(theta), int(offset), np.dtype(dtype).str, device)
    tables = _TABLE_CACHE.get(key)
    if tables is not None:
        _TABLE_CACHE.move_to_end(key)
        return tables
    inv_freq = float(theta) ** (-np.arange(0, hs, 2, dtype=np.float64) / hs)       # (hs/2,)
    positions = np.arange(offset, offset + T, dtype=np.float64)                     # (T,)
    angles = np.outer(positions, inv_freq)                                          # (T, hs/2)
    tables = (xp.asarray(np.cos(angles).astype(dtype)), xp.asarray(np.sin(angles).astype(dtype)))
    for table in tables:  # shared between calls: make accidental writes fail loudly
        if xp is np:
            table.flags.writeable = False
    _TABLE_CACHE[key] = tables
    if len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
        _TABLE_CACHE.popitem(last=False)
    return tables


def rotate_pairs(x, cos, sin, out, inverse: bool = False):
    """Write the rotation of x's (i, i + hs/2) pairs by the angles into `out` (same shape as x).

    inverse=True rotates by minus the angles (sin -> -sin), which is also the transpose.
    """
    xp = get_array_module(x)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]                 # (B, nh, T, hs/2) views
    out1, out2 = out[..., :half], out[..., half:]
    scratch = x1 * sin                                     # (B, nh, T, hs/2): the one temporary
    xp.multiply(x2, cos, out=out2)
    if inverse:
        out2 -= scratch                                    # dx2 = g2 cos - g1 sin
    else:
        out2 += scratch                                    # y2  = x2 cos + x1 sin
    xp.multiply(x2, sin, out=scratch)
    xp.multiply(x1, cos, out=out1)
    if inverse:
        out1 += scratch                                    # dx1 = g1 cos + g2 sin
    else:
        out1 -= scratch                                    # y1  = x1 cos - x2 sin
    return out


class Rope(Function):
    def forward(self, x, theta=10000.0, offset=0):
        xp = get_array_module(x)
        T, hs = x.shape[-2], x.shape[-1]
        self.cos, self.sin = rope_tables(T, hs, theta, offset, x.dtype, xp)
        return rotate_pairs(x, self.cos, self.sin, xp.empty_like(x))

    def backward(self, grad):
        xp = get_array_module(grad)
        # dx = R^T g: rotate the gradient back by the same angles.
        return rotate_pairs(grad, self.cos, self.sin, xp.empty(grad.shape, dtype=grad.dtype), inverse=True)



