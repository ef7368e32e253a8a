"""Array backends: NumPy on the CPU, CuPy on a CUDA device, behind one `xp` module.

This is the only module in the project that imports CuPy. Everything else asks
`get_array_module(array)` for the module that owns an array and writes its array
code once against that module. Moving data between devices happens explicitly,
here, at the edges; an op never mixes NumPy and CuPy arrays.

Left out: multi-GPU placement (a process uses one device; `parallel/` gives each
rank its own), streams and memory pools beyond CuPy's defaults.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
import time

import numpy as np

try:  # CuPy is optional: the `gpu` extra installs it.
    import cupy as _cupy
    import cupyx as _cupyx
except Exception:  # ImportError, or a CUDA runtime that fails to load
    _cupy = None
    _cupyx = None

DEFAULT_DTYPE = np.float32
DEVICES = ("cpu", "cuda")


def cupy_loaded() -> bool:
    """True when the CuPy module imported (a device may still be missing)."""
    return _cupy is not None


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def is_cupy_array(array) -> bool:
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def get_array_module(array):
    """The module (numpy or cupy) that owns `array`."""
    return _cupy if is_cupy_array(array) else np


def device_of(array) -> str:
    return "cuda" if is_cupy_array(array) else "cpu"


def module_for(device: str):
    """The array module for a device name: 'cpu' -> numpy, 'cuda' -> cupy."""
    check_device(device)
    if device == "cuda":
        return _cupy
    return np


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    if device == "cuda" and not cupy_available():
        raise RuntimeError(
            "device 'cuda' was asked for but CuPy with a CUDA device is not available: "
            "install the gpu extra (pip install 'tinyllm[gpu]') on a machine with an NVIDIA GPU, "
            "or use device 'cpu'")


def to_device(array, device: str):
    """Copy `array` to `device` ('cpu' or 'cuda'); returns it unchanged if already there."""
    check_device(device)
    if device == "cuda":
        return array if is_cupy_array(array) else _cupy.asarray(array)
    return _cupy.asnumpy(array) if is_cupy_array(array) else array


def to_numpy(array) -> np.ndarray:
    """A host (NumPy) view or copy of any array."""
    return _cupy.asnumpy(array) if is_cupy_array(array) else np.asarray(array)


def scatter_add(target, indices, values) -> None:
    """target[indices] += values, accumulating repeated indices (np.add.at / cupyx.scatter_add)."""
    if is_cupy_array(target):
        _cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)


def scatter_add_rows(target, ids, rows) -> None:
    """target[ids[n]] += rows[n] for every n, repeated ids accumulating: (V, C), (N,), (N, C).

    On the CPU, np.add.at walks the rows one at a time; sorting the ids and summing runs of
    equal ids with np.add.reduceat is several times faster (docs/performance.md). The sums
    are taken in a fixed order (a stable sort), so the result is the same on every run.
    """
    if is_cupy_array(target):
        _cupyx.scatter_add(target, ids, rows)
        return
    if ids.size == 0:
        return
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    target[sorted_ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)


def erf(x):
    """The error function, elementwise, to full double precision.

    NumPy has no erf: on the CPU we map `math.erf` over the array (exact, slower than a
    ufunc); on a GPU we use cupyx.scipy.special.erf.
    """
    if is_cupy_array(x):
        import cupyx.scipy.special  # noqa: PLC0415 - only on GPU
        return cupyx.scipy.special.erf(x)
    return np.asarray(_np_erf(x), dtype=x.dtype)


def _np_erf_scalar(v):
    return math.erf(v)


_np_erf = np.frompyfunc(_np_erf_scalar, 1, 1)


def synchronize(array=None) -> None:
    """Wait for queued GPU work (before handing a CuPy buffer to MPI or reading a clock)."""
    if _cupy is not None and (array is None or is_cupy_array(array)):
        _cupy.cuda.get_current_stream().synchronize()


def new_generator(seed: int | None, device: str = "cpu"):
    """A random Generator on `device`, seeded: the same seed gives the same numbers."""
    if device == "cuda":
        check_device(device)
        return _cupy.random.default_rng(seed)
    return np.random.default_rng(seed)


def generator_state(gen) -> dict:
    """A JSON-serialisable snapshot of a NumPy Generator (for exact resume)."""
    return gen.bit_generator.state


def set_generator_state(gen, state: dict) -> None:
    gen.bit_generator.state = state


# ---- host memory ------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc mallopt parameters (malloc.h)
_kept_freed_memory = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; True when it took effect.

    By default glibc gives every array above 128 KiB its own mmap and returns it with
    munmap when freed, and trims the heap as soon as its top is free: a training step
    that allocates and frees the same activations every step then page-faults each of
    them in again, thousands of faults a step, serialised on the kernel's memory lock
    when several threads allocate. With arrays up to 32 MiB served from the heap and no
    trimming below 1 GiB of free top, the memory is reused from step to step instead
    (what a framework's caching allocator does). Process-wide and idempotent; does
    nothing off glibc, or when MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ are set.
    """
    global _kept_freed_memory
    if _kept_freed_memory is not None:
        return _kept_freed_memory
    _kept_freed_memory = False
    if not sys.platform.startswith("linux") or any(
            var in os.environ for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept_freed_memory = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20) and mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _kept_freed_memory


def gemm_gflops(dtype="float32", device: str = "cpu", n: int = 512, repeats: int = 5) -> float:
    """This machine's measured (n x n) @ (n x n) matrix-product rate in GFLOP/s, in `dtype` on `device`.

    The yardstick for a training run's achieved FLOP/s. Uses BLAS as configured (its thread
    count); the first products are left out (OpenBLAS starts slow, see docs/performance.md).
    """
    xp = _cupy if device == "cuda" else np
    if device == "cuda":
        check_device(device)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype=dtype)
    b = a.T.copy()
    for _ in range(2):
        a @ b
    synchronize(a)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(a)
    return 2.0 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9
