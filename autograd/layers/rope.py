"""Rotary position embedding (RoPE), "rotate_half" layout, with hand-derived backward.

Layout of GPT-NeoX and Hugging Face Llama: head dimension i in [0, hs/2) is paired with
i + hs/2, and position t rotates each pair by the angle (offset + t) * theta^(-2i/hs):

    y1 = x1 cos - x2 sin            x1 = x[..., :hs/2],  x2 = x[..., hs/2:]
    y2 = x2 cos + x1 sin
    dx1 = g1 cos + g2 sin           term 1 + term 2 (the transpose of a rotation is the
    dx2 = g2 cos + (-g1 sin)        term 1 + term 2  inverse rotation; docs/derivations/rope.md)

Both run over whole rows, with the halves swapped by a strided view (faster than working on
half-rows): y = x [cos, cos] + (x2, x1) [-sin, sin], and dx = g [cos, cos] (term 1) +
(g2, g1) [sin, -sin] (term 2).
The tables are computed in float64 on the input's device, cast to its dtype and cached per
(T, hs, theta, offset, dtype, device) in a small least-recently-used cache
(KV-cache decoding asks for a new offset at every step).

Left out: the interleaved (GPT-J) layout, partial rotary dimensions, and scaled
(NTK/YaRN) frequencies.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ..backend import get_array_module
from ..function import Function


class RopeTables(NamedTuple):
    cos: object          # (T, hs/2)  cos of the angles
    sin: object          # (T, hs/2)  sin of the angles
    cos_full: object     # (T, hs)    [cos, cos]: multiplies both halves
    sin_signed: object   # (T, hs)    [-sin, sin]: multiplies the swapped halves (x2, x1)


_TABLE_CACHE: OrderedDict = OrderedDict()   # (T, hs, theta, offset, dtype, device) -> RopeTables
_TABLE_CACHE_SIZE = 64


def rope_tables(T: int, hs: int, theta: float, offset: int, dtype, xp) -> RopeTables:
    """The rotation tables for positions offset .. offset+T-1: angle[t, i] = (offset + t) theta^(-2i/hs)."""
    device = "cuda" if xp is not np else "cpu"
    key = (int(T), int(hs), float(theta), int(offset), np.dtype(dtype).str, device)
    tables = _TABLE_CACHE.get(key)
    if tables is not None:
        _TABLE_CACHE.move_to_end(key)
        return tables
    # computed where they are used, in float64: a GPU gets them without a copy from the host
    inv_freq = float(theta) ** (-xp.arange(0, hs, 2, dtype=np.float64) / hs)       # (hs/2,)
    positions = xp.arange(offset, offset + T, dtype=np.float64)                     # (T,)
    angles = xp.outer(positions, inv_freq)                                          # (T, hs/2), in float64
    cos, sin = xp.cos(angles), xp.sin(angles)
    full = (cos, sin, xp.concatenate([cos, cos], axis=-1), xp.concatenate([-sin, sin], axis=-1))
    tables = RopeTables(*(t.astype(dtype) for t in full))
    if xp is np:  # shared between calls: make accidental writes fail loudly
        for table in tables:
            table.flags.writeable = False
    _TABLE_CACHE[key] = tables
    if len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
        _TABLE_CACHE.popitem(last=False)
    return tables


def rotate_pairs(x, tables: RopeTables, inverse: bool = False):
    """Rotate x's (i, i + hs/2) pairs by the tables' angles (by minus them when inverse=True: the backward).

    forward:  y  = x * [cos, cos] + (x2, x1) * [-sin, sin]
    backward: dx = g * [cos, cos] + (g2, g1) * [sin, -sin]      (term 1 + term 2)
    """
    *lead, T, hs = x.shape
    half = hs // 2
    out = x * tables.cos_full                                          # backward: term 1, (..., T, hs)
    swapped = x.reshape(*lead, T, 2, half)[..., ::-1, :]               # (..., T, 2, hs/2): (x2, x1), a view
    cross = swapped * tables.sin_signed.reshape(T, 2, half)            # (-x2 sin, x1 sin)
    cross = cross.reshape(x.shape)
    if inverse:
        out -= cross                                                   # term 2: (g2 sin, -g1 sin)
    else:
        out += cross
    return out


class RopeFunction(Function):
    def forward(self, x, theta=10000.0, offset=0):
        xp = get_array_module(x)
        T, hs = x.shape[-2], x.shape[-1]
        self.tables = rope_tables(T, hs, theta, offset, x.dtype, xp)
        return rotate_pairs(x, self.tables)

    def backward(self, grad):
        # dx = R^T g: rotate the gradient back by the same angles.
        return rotate_pairs(grad, self.tables, inverse=True)
