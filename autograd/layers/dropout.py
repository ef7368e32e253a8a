"""Inverted dropout, and masks that are a pure function of a key: the same for any split of a batch.

    y = x * m / (1 - p),  m_i ~ Bernoulli(1 - p);    dx = g * m / (1 - p)

The mask comes from one of two sources (autograd.functional.dropout_scaled_mask):

    a seeded Generator   NumPy's or CuPy's: masks drawn in order, so a mask depends on every
                         draw before it (which layer ran first, how the batch was split)
    a DropoutKey         keep_mask(key, shape, p): element (r, i, j, ...) of an array whose
                         first row is batch row `key.row` is kept when

        h = mix(... mix(mix(base ^ coord(key.row + r, 0)) ^ coord(i, 1)) ^ coord(j, 2) ...)  >=  p 2^32
        base = the key's words (seed, step, site) folded into 32 bits by the same mix
        coord(c, axis) = mix((c + 1) * 0x9E3779B1 + axis)        (32-bit wrap-around)

    with mix = lowbias32 (a bijection of 32-bit integers with full avalanche: xor-shift,
    multiply, xor-shift, multiply, xor-shift). Counter-based: no generator state, so a row
    gets the same mask whichever process, thread or pipeline stage computes it, in any
    order, and recomputing a forward redraws it exactly. The arithmetic is uint32 through
    `xp`, the same bits on NumPy and CuPy. Each array axis is mixed in by its own coordinate,
    so an element's bit does not depend on the array's other sizes (a row trimmed to fewer
    positions keeps the masks of the positions it has).

In evaluation mode, or with p = 0, dropout is the identity and draws nothing.
Left out: masks from hardware random numbers; streams for anything other than dropout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ..blocked import blocked
from ..function import Function

WORD = 0xFFFFFFFF          # 32-bit wrap-around for the Python-integer half of the hash
_M1, _M2 = 0x7FEB352D, 0x846CA68B   # lowbias32's multipliers (C. Wellons, hash-prospector)
_GOLDEN = 0x9E3779B1


class DropoutFunction(Function):
    def forward(self, x, scaled_mask):
        self.scaled_mask = scaled_mask
        return x * scaled_mask

    def backward(self, grad):
        return grad * self.scaled_mask


@dataclass(frozen=True)
class DropoutKey:
    """Names a dropout mask: the run's seed, the training step, the layer (site) and the row.

    row: the index, within the step's whole batch, of the first row (axis 0) of the array
    the mask is for; the array's row r is batch row `row + r`.
    """

    seed: int
    step: int = 0
    site: int = 0
    row: int = 0

    def base(self) -> int:
        """The key's words folded into one 32-bit number (Python integers: no array needed)."""
        h = 0
        for word in (self.seed & WORD, self.seed >> 32, self.step & WORD, self.step >> 32, self.site):
            h = mix32(h ^ (word & WORD))
        return h


def mix32(h: int) -> int:
    """lowbias32 on a Python integer (the scalar twin of _mix_ on arrays)."""
    h ^= h >> 16
    h = (h * _M1) & WORD
    h ^= h >> 15
    h = (h * _M2) & WORD
    h ^= h >> 16
    return h


def _mix_(h, scratch) -> None:
    """lowbias32 in place on a uint32 array (`scratch`: a uint32 array of h's shape)."""
    xp = get_array_module(h)
    xp.right_shift(h, 16, out=scratch)
    h ^= scratch
    h *= np.uint32(_M1)
    xp.right_shift(h, 15, out=scratch)
    h ^= scratch
    h *= np.uint32(_M2)
    xp.right_shift(h, 16, out=scratch)
    h ^= scratch


def _coordinates(xp, start: int, n: int, axis: int):
    """coord(c, axis) for c = start .. start + n - 1, a uint32 vector (n,)."""
    c = xp.arange(start + 1, start + n + 1, dtype=np.uint64) & WORD      # c + 1, wrapped to 32 bits
    h = ((c * _GOLDEN + axis) & WORD).astype(np.uint32)
    _mix_(h, xp.empty_like(h))
    return h


def _threshold_kernel(outs, ins, threshold: int, scale):
    """mask = (mix(h) >= threshold) * scale on one block: the last axis's mix and the comparison."""
    (mask,), (h,) = outs, ins
    xp = get_array_module(h)
    scratch = xp.empty_like(h)
    _mix_(h, scratch)
    xp.greater_equal(h, np.uint32(threshold), out=mask, casting="unsafe")  # 0 or 1 in the mask's dtype
    mask *= scale


def keyed_scaled_mask(key: DropoutKey, shape: tuple, dtype, p: float, xp=np):
    """keep / (1 - p) for an array of `shape` whose first row is batch row key.row (see the module docstring)."""
    shape = tuple(int(n) for n in shape)
    if not shape:                                                        # a 0-d array: one row of one element
        return keyed_scaled_mask(key, (1,), dtype, p, xp).reshape(())
    threshold = min(int(round(p * 2.0 ** 32)), WORD)
    h = None
    for axis, n in enumerate(shape):
        coord = _coordinates(xp, key.row if axis == 0 else 0, n, axis)
        if h is None:
            h = coord ^ np.uint32(key.base())                            # (B,): the rows (no host copy)
        else:
            h = xp.bitwise_xor(h[..., None], coord)                      # (..., n): every coordinate so far
        if axis < len(shape) - 1:
            _mix_(h, xp.empty_like(h))                                   # the prefix's hash, mixed
    mask = xp.empty(shape, dtype=dtype)
    scale = np.dtype(dtype).type(1.0 / (1.0 - p))
    blocked(lambda outs, ins: _threshold_kernel(outs, ins, threshold, scale), outs=(mask,), ins=(h,))
    return mask
