"""Cache-blocked elementwise kernels: run a chain of ufuncs one cache-sized block at a time.

A chain of NumPy ufuncs over an array larger than the CPU caches makes one trip to main
memory per op: a ten-op backward over a (B, T, 4C) activation reads and writes it ten
times and is bound by memory bandwidth, not arithmetic. `blocked` runs the whole chain on
one block of BLOCK elements, then the next block, so each element travels from memory
once. The kernel is ordinary ufunc code with `out=` arguments, written once; `blocked`
only slices. BLOCK is 64K elements (256 KiB in float32): smaller blocks fit the caches
better but cost more NumPy calls, and every call is a Python round trip (and, with
tinyllm/threads.py, a GIL hand-off); 64K measured fastest on one thread and on two
(docs/performance.md).

On a GPU (CuPy arrays) the chain runs on the whole arrays at once: there the cost is
kernel launches, which blocking would multiply.

    def kernel(outs, ins):            # outs, ins: tuples of equally shaped arrays (1-D blocks,
                                      # or the operands themselves when they fit in one block)
        y, = outs; x, = ins
        np.multiply(x, x, out=y)
    blocked(kernel, outs=(y,), ins=(x,))

Left out: broadcasting between operands (all operands have one shape), strided operands
above one block (inputs are made contiguous first; outputs must be contiguous).
"""
from __future__ import annotations

import numpy as np

from .backend import is_cupy_array

BLOCK = 65536  # elements per block: 256 KiB in float32


def blocked(kernel, outs: tuple, ins: tuple, block: int = BLOCK) -> None:
    """Call kernel(outs_block, ins_block) on consecutive blocks of the flattened operands."""
    if is_cupy_array(outs[0]):
        kernel(tuple(o.reshape(-1) for o in outs), tuple(i.reshape(-1) for i in ins))
        return
    if outs[0].size <= block:         # one block: the kernel is elementwise, so any one shape will do
        with np.errstate(over="ignore"):
            kernel(outs, ins)
        return
    flat_outs = tuple(o.reshape(-1) for o in outs)
    for o in outs:
        if not o.flags.c_contiguous:
            raise ValueError("blocked: outputs must be C-contiguous")
    flat_ins = tuple(np.ascontiguousarray(i).reshape(-1) for i in ins)
    n = flat_outs[0].size
    with np.errstate(over="ignore"):  # kernels may rely on exp overflowing to inf
        for start in range(0, n, block):
            stop = min(start + block, n)
            kernel(tuple(o[start:stop] for o in flat_outs), tuple(i[start:stop] for i in flat_ins))
